package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"github.com/deployer/deployer/supervisor"
)

// defaultLogLines is how many recent lines logs prints without -n.
const defaultLogLines = 200

func logsCommand() *command {
	return &command{
		name:       "logs",
		args:       []string{"[APP]"},
		flagsUsage: "[-f] [-n N]",
		json:       true,
		summary:    "print APP's recent output; follow it with -f",
		about: `Print APP's recent output, each line tagged with its version and
instance. With -f, go on printing new output until interrupted (Ctrl-C)
or the daemon stops; across a deployer upgrade it follows the new daemon
(a note on stderr says so), from the first line the old one had not shown.

With --json each line is one JSON object on a line of its own, as it
arrives: {"time", "version", "instance", "text"}, time being the time of
day the daemon read it, "15:04:05.000" (no date). A line the daemon sent in
another form is {"time": "", "version": "", "instance": null, "text"}.`,
		exits: `0  done, or interrupted while following
1  no daemon is running
` + configWarnExit,
		example: "deployer logs web -f -n 50",
		setup: func(fs *flag.FlagSet) runFunc {
			const followUsage = "keep printing new output until interrupted"
			follow := fs.Bool("follow", false, followUsage)
			fs.BoolVar(follow, "f", false, followUsage)
			n := fs.Int("n", defaultLogLines, "print the last `N` lines (0: none, only new ones with -f)")
			return func(ctx context.Context, inv *invocation) error {
				if *n < 0 {
					return usageErrorf("-n must be 0 or more, not %d", *n)
				}
				cfg, app, _, err := inv.daemonApp()
				if err != nil {
					return err
				}
				if *follow {
					// Ctrl-C is how following ends: not a failure.
					var stop context.CancelFunc
					ctx, stop = signal.NotifyContext(ctx, os.Interrupt)
					defer stop()
				}
				out := inv.stdout
				if inv.asJSON {
					j := newLogsJSON(inv.stdout)
					defer j.Flush()
					out = j
				}
				err = inv.client(cfg).logs(ctx, app, *n, *follow, out, inv.stderr)
				if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
					return nil
				}
				return err
			}
		},
	}
}

// jsonLogLine is one line of logs --json.
type jsonLogLine struct {
	Time     string `json:"time"` // "15:04:05.000": the API gives no date
	Version  string `json:"version"`
	Instance *int   `json:"instance"` // null when the line is not in the API's form
	Text     string `json:"text"`
}

// parseLogLine splits a line of the logs API, "15:04:05.000 VERSION[INSTANCE]
// TEXT" (supervisor.LogLine's String). The split is unambiguous: the time has
// a fixed width, and a version holds no space or "[" (ValidVersion), so
// the first space after the time ends the tag, and TEXT is the rest as the
// app wrote it, spaces and brackets included (the daemon cuts lines at
// newlines, so there is none in it). A line in another form, from an older
// or newer daemon, is all text rather than an error.
func parseLogLine(s string) jsonLogLine {
	const clock = "15:04:05.000"
	whole := jsonLogLine{Text: s}
	if len(s) < len(clock)+1 || s[len(clock)] != ' ' || !isClock(s[:len(clock)]) {
		return whole
	}
	tag, text, ok := strings.Cut(s[len(clock)+1:], " ")
	if !ok || !strings.HasSuffix(tag, "]") {
		return whole
	}
	version, instance, ok := strings.Cut(strings.TrimSuffix(tag, "]"), "[")
	i, err := strconv.Atoi(instance)
	if !ok || err != nil || i < 0 || supervisor.ValidVersion(version) != nil {
		return whole
	}
	return jsonLogLine{Time: s[:len(clock)], Version: version, Instance: &i, Text: text}
}

// isClock reports whether s reads like "15:04:05.000".
func isClock(s string) bool {
	for i := 0; i < len(s); i++ {
		switch i {
		case 2, 5:
			if s[i] != ':' {
				return false
			}
		case 8:
			if s[i] != '.' {
				return false
			}
		default:
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		}
	}
	return true
}

// logsJSON is the writer logs --json hands to client.logs: it turns each
// text line of the responses into a JSON line as soon as its newline
// arrives, so that -f prints as it follows, across a daemon upgrade too.
type logsJSON struct {
	enc     *json.Encoder
	partial []byte // a line whose newline has not come yet
}

func newLogsJSON(w io.Writer) *logsJSON {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // an app's "<" and "&" stay readable
	return &logsJSON{enc: enc}
}

func (j *logsJSON) Write(p []byte) (int, error) {
	j.partial = append(j.partial, p...)
	for {
		i := bytes.IndexByte(j.partial, '\n')
		if i < 0 {
			break
		}
		if err := j.enc.Encode(parseLogLine(string(j.partial[:i]))); err != nil {
			return 0, err
		}
		j.partial = j.partial[i+1:]
	}
	return len(p), nil
}

// Flush prints a last line that never got its newline (a response cut
// short).
func (j *logsJSON) Flush() error {
	if len(j.partial) == 0 {
		return nil
	}
	defer func() { j.partial = nil }()
	return j.enc.Encode(parseLogLine(string(j.partial)))
}
