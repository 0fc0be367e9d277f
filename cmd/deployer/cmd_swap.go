package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// The streamed operations: swap, rollback, restart and stop. Each POSTs to
// the daemon and prints the progress it streams back, then the result.

const swapExits = `0  VERSION serves all new traffic (with --wait-drain: and the old version
   is gone)
1  VERSION failed (did not start, crashed, failed health, not healthy
   within ready_timeout): the old version keeps serving untouched; the
   reason and VERSION's last lines of output are printed. Also: no daemon,
   or another operation on APP is running
2  bad usage, unknown app, or deploy.toml missing or invalid: refused,
   its problems printed with file:line (the daemon would launch VERSION
   with its last valid config, not with the file's settings)
3  --timeout passed. Before traffic moved (the usual case): VERSION was
   stopped and the old version keeps serving untouched, as with 1. After
   (only with --wait-drain): VERSION serves all new traffic and the old
   version drains on. The output says which; with --json see
   "traffic_moved"
4  the outcome is unknown: the connection to the daemon was lost before
   its result (the daemon died or was killed), no result came 10s past
   --timeout, or the daemon's answer could not be read. 'deployer status
   APP' shows what serves`

const (
	waitDrainUsage = "return only once the old version has drained and stopped too"
	timeoutUsage   = "give up after `DURATION` (such as 90s): a version not serving yet is stopped; exit 3"
	opFlagsUsage   = "[--wait-drain] [--timeout DURATION]"
)

// timeoutGrace is how long past --timeout the CLI waits for the daemon's
// result before giving up on it. The daemon answers at the timeout itself;
// the grace covers killing the new version and collecting its output, and
// keeps a CI step bounded when the daemon is wedged (or is an older one that
// does not know the timeout field). A variable for tests.
var timeoutGrace = 10 * time.Second

// errNoResult is the cause of an operation's context when timeoutGrace
// passed after --timeout without a result.
var errNoResult = errors.New("no result from the daemon")

func swapCommand() *command {
	return &command{
		name:        "swap",
		args:        []string{"[APP]", "VERSION"},
		flagsUsage:  opFlagsUsage,
		json:        true,
		jsonFailure: opFailure,
		operation:   true,
		summary:     "launch VERSION beside the running one and move new traffic to it",
		about: `Launch VERSION of APP beside the running version and wait until it is
healthy, then move new traffic to it with one atomic rename of its socket
over the stable path, then drain the old version and stop it. Progress is
printed as it happens, one timestamped line each.

The command returns once VERSION serves all new traffic; the old version
drains on in the daemon. With --wait-drain it returns once the old version
is gone too.

--timeout bounds the whole command, for a CI step: the daemon gets the
timeout with the request and, if VERSION is not serving by then, stops it
and leaves the old version serving untouched (exit 3). The last line of
the output is a one-line summary; progress lines carry the time of day.
With --json only the result is printed, one JSON object: ok, outcome
("ok", "failed" or "timeout"), app, op, old_version, new_version, error,
output (VERSION's last lines on failure), traffic_moved, and durations in
milliseconds: duration_ms (total), ready_ms (until healthy), switch_ms
(until traffic moved), drain_ms (with --wait-drain), timeout_ms.
Refused before it began (bad usage, an invalid deploy.toml, no daemon,
another operation running), it is {"ok": false, "outcome": "refused",
"app", "op", "error", "code"}, code being the daemon's ("swap_running",
"unknown_app") or the CLI's ("usage", "invalid_config", "no_config",
"no_daemon", "permission_denied"); with the answer lost, "outcome" is
"unknown"; both are also said on stderr.`,
		exits:   swapExits,
		example: "deployer swap web v42",
		setup: func(fs *flag.FlagSet) runFunc {
			flags := defineOpFlags(fs)
			return func(ctx context.Context, inv *invocation) error {
				b := flags.budget()
				cfg, app, rest, err := inv.launchApp()
				if err != nil {
					return err
				}
				version := rest[0]
				if err := supervisor.ValidVersion(version); err != nil {
					return usageErrorf("%v", err)
				}
				req := supervisor.SwapRequest{Version: version, WaitDrain: flags.waitDrain}
				return inv.operateBy(ctx, b, inv.client(cfg), app, "swap", req)
			}
		},
	}
}

func rollbackCommand() *command {
	return &command{
		name:        "rollback",
		args:        []string{"[APP]"},
		flagsUsage:  opFlagsUsage,
		json:        true,
		jsonFailure: opFailure,
		operation:   true,
		summary:     "swap back to the version that served before the last swap",
		about: `Swap APP back to the version that served before the last swap, exactly
as 'deployer swap' would: launch it, wait until it is healthy, move new
traffic to it, drain the current version.`,
		exits:   swapExits,
		example: "deployer rollback web",
		setup:   streamed("rollback"),
	}
}

func restartCommand() *command {
	return &command{
		name:        "restart",
		args:        []string{"[APP]"},
		flagsUsage:  opFlagsUsage,
		json:        true,
		jsonFailure: opFailure,
		operation:   true,
		summary:     "swap to the version already serving: fresh processes, no downtime",
		about: `Swap APP to the version already serving: fresh processes, which pick up
a changed environment or command from deploy.toml, with no request
refused or dropped.`,
		exits:   swapExits,
		example: "deployer restart web",
		setup:   streamed("restart"),
	}
}

func stopCommand() *command {
	return &command{
		name:        "stop",
		args:        []string{"[APP]"},
		json:        true,
		jsonFailure: opFailure,
		operation:   true,
		summary:     "drain APP and stop its processes; its requests are held until it starts again",
		about: `Drain APP and stop its processes. New requests to APP are then held, up to
queue_timeout, until 'deployer start APP' starts it again.`,
		exits: `0  APP is stopped
1  APP could not be stopped, or no daemon is running
` + configWarnExit + `
4  the outcome is unknown: the connection to the daemon was lost before
   its result, or its answer could not be read: see 'deployer status APP'`,
		example: "deployer stop web",
		run: func(ctx context.Context, inv *invocation) error {
			return inv.operateOnApp(ctx, "stop", supervisor.SwapRequest{})
		},
	}
}

// streamed returns the setup of a command that takes [APP], --wait-drain
// and --timeout and runs operation op.
func streamed(op string) func(fs *flag.FlagSet) runFunc {
	return func(fs *flag.FlagSet) runFunc {
		flags := defineOpFlags(fs)
		return func(ctx context.Context, inv *invocation) error {
			b := flags.budget()
			cfg, app, _, err := inv.launchApp()
			if err != nil {
				return err
			}
			req := supervisor.SwapRequest{WaitDrain: flags.waitDrain}
			return inv.operateBy(ctx, b, inv.client(cfg), app, op, req)
		}
	}
}

// opFlags are the flags of swap, rollback and restart.
type opFlags struct {
	waitDrain bool
	timeout   durationFlag
}

func defineOpFlags(fs *flag.FlagSet) *opFlags {
	f := new(opFlags)
	fs.BoolVar(&f.waitDrain, "wait-drain", false, waitDrainUsage)
	fs.Var(&f.timeout, "timeout", timeoutUsage)
	return f
}

// budget starts the clock of --timeout: the command's start.
func (f *opFlags) budget() budget {
	return budget{start: time.Now(), timeout: time.Duration(f.timeout)}
}

// budget is the time a command may take: timeout from start. A zero
// timeout bounds nothing.
type budget struct {
	start   time.Time
	timeout time.Duration
}

func (b budget) deadline() time.Time { return b.start.Add(b.timeout) }

// durationFlag is a flag holding a positive duration such as 90s.
type durationFlag time.Duration

func (f *durationFlag) String() string {
	if f == nil || *f == 0 {
		return ""
	}
	return time.Duration(*f).String()
}

func (f *durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (write it like 90s or 5m)", s)
	}
	if d <= 0 {
		return fmt.Errorf("%s is not positive", s)
	}
	*f = durationFlag(d)
	return nil
}

// operateOnApp resolves [APP] and runs operation op on it.
func (inv *invocation) operateOnApp(ctx context.Context, op string, req supervisor.SwapRequest) error {
	cfg, app, _, err := inv.daemonApp()
	if err != nil {
		return err
	}
	return inv.operate(ctx, inv.client(cfg), app, op, req)
}

// operate runs a streamed operation with no deadline of its own.
func (inv *invocation) operate(ctx context.Context, cl *client, app, op string, req supervisor.SwapRequest) error {
	return inv.operateBy(ctx, budget{start: time.Now()}, cl, app, op, req)
}

// operateBy runs a streamed operation and prints it: each progress event as
// it arrives, then the result; with --json only the result, as received.
// A budget's timeout is sent to the daemon with the request, which the
// daemon enforces (a client going away does not stop an operation, on
// purpose); the CLI gives up on its own only timeoutGrace later. The daemon
// counts from the request's arrival, milliseconds after the command's
// start: sending the timeout as given keeps every message saying "1s" for
// --timeout 1s.
func (inv *invocation) operateBy(ctx context.Context, b budget, cl *client, app, op string, req supervisor.SwapRequest) error {
	if b.timeout > 0 {
		req.Timeout = b.timeout.String()
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadlineCause(ctx, b.deadline().Add(timeoutGrace), errNoResult)
		defer cancel()
	}
	clean := func(s string) string { return s }
	if !isTerminal(inv.stdout) {
		clean = plainText
	}
	var progress func(supervisor.Event)
	if !inv.asJSON {
		progress = func(ev supervisor.Event) {
			fmt.Fprintf(inv.stdout, "%s %s\n", clock(ev.Time), clean(ev.Message))
		}
	}
	res, raw, err := cl.operate(ctx, app, op, req, progress)
	if err != nil {
		switch {
		case errors.Is(context.Cause(ctx), errNoResult):
			return inv.unknownResult(app, op, req.Version, b, "no_answer",
				fmt.Sprintf("no result from the daemon within %s after --timeout", timeoutGrace))
		case errors.Is(err, errConnectionLost):
			return inv.unknownResult(app, op, req.Version, b, "connection_lost",
				"the connection to the daemon was lost before its result")
		}
		return err
	}
	if inv.asJSON {
		if err := writeIndented(inv.stdout, raw); err != nil {
			return err
		}
	} else {
		shown := *res
		shown.Error = clean(shown.Error)
		shown.Output = make([]string, len(res.Output))
		for i, l := range res.Output {
			shown.Output[i] = clean(l)
		}
		writeResult(inv.stdout, &shown)
	}
	switch {
	case res.OK:
		return nil
	case res.Outcome == supervisor.OutcomeTimeout:
		return errTimeoutReported
	}
	return errReported
}

// opEnd is the JSON an operation prints when it ends without the daemon's
// result (opFailure, unknownResult): a CI step always has one object with
// ok, outcome, app, op, error and code.
type opEnd struct {
	OK         bool   `json:"ok"`
	Outcome    string `json:"outcome"`
	App        string `json:"app"`
	Op         string `json:"op"`
	NewVersion string `json:"new_version,omitempty"`
	Error      string `json:"error"`
	Code       string `json:"code"`
}

// unknownResult reports an operation whose result never arrived (why
// says why, code names it as errorCode would): on stderr, and with --json
// as a result on stdout too, so that a CI step always has one JSON object
// to read. Nothing is claimed about what serves, the daemon may have
// swapped or not: the result has no "traffic_moved".
func (inv *invocation) unknownResult(app, op, version string, b budget, code, why string) error {
	msg := fmt.Sprintf("%s; the outcome is unknown: see 'deployer status %s'", why, app)
	if inv.asJSON {
		res := struct {
			opEnd
			DurationMS int64 `json:"duration_ms"`
			TimeoutMS  int64 `json:"timeout_ms,omitempty"`
		}{
			opEnd:      opEnd{Outcome: supervisor.OutcomeUnknown, App: app, Op: op, NewVersion: version, Error: msg, Code: code},
			DurationMS: time.Since(b.start).Milliseconds(), TimeoutMS: b.timeout.Milliseconds(),
		}
		out, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(inv.stdout, "%s\n", out)
	}
	fmt.Fprintf(inv.stderr, "%s: %s\n", inv.prefix(), msg)
	return errUnknownReported
}

// outcomeRefused is the outcome of an operation the CLI or the daemon
// refused before it began (opFailure): nothing was launched or stopped.
const outcomeRefused = "refused"

// opFailure is what swap, rollback, restart and stop print with --json when
// they end without a result: "refused" when they surely started nothing (bad
// usage found after the flags, an invalid deploy.toml, no daemon, another
// operation running), with code naming why (errorCode); "unknown" when the
// daemon may have begun, as in unknownResult.
func opFailure(inv *invocation, err error) any {
	code, refused := errorCode(err)
	outcome := outcomeRefused
	if !refused {
		outcome = supervisor.OutcomeUnknown
	}
	app := firstOf(inv.app, inv.appArg())
	var version string
	if n := len(inv.args); inv.cmd.name == "swap" && n >= 1 && n <= 2 {
		version = inv.args[n-1]
	}
	return opEnd{Outcome: outcome, App: app, Op: inv.cmd.name, NewVersion: version, Error: err.Error(), Code: code}
}

// clock formats an event's time for a progress line; local time of day is
// what reads well in a terminal and in CI logs next to other timestamps.
func clock(t time.Time) string {
	if t.IsZero() {
		t = time.Now()
	}
	return t.Local().Format("15:04:05")
}

// writeResult prints the outcome of a streamed operation in a sentence or
// two. On failure the output ends with the reason, what serves now, and the
// new version's last lines of output, as CONTRACT.md promises: CI shows the
// end of a log.
func writeResult(w io.Writer, r *supervisor.Result) {
	took := ms(r.DurationMS)
	if !r.OK {
		target := ""
		if r.NewVersion != "" {
			target = " to " + r.NewVersion
		}
		verb := "failed"
		if r.Outcome == supervisor.OutcomeTimeout {
			verb = "timed out"
		}
		fmt.Fprintf(w, "%s of %s%s %s: %s\n", r.Op, r.App, target, verb, r.Error)
		switch {
		case r.TrafficMoved:
			fmt.Fprintf(w, "%s serves %s: traffic moved before the timeout\n", r.App, r.NewVersion)
		case r.OldVersion != "" && (r.Op == "swap" || r.Op == "rollback" || r.Op == "restart"):
			fmt.Fprintf(w, "%s still serves %s, untouched\n", r.App, r.OldVersion)
		}
		if len(r.Output) > 0 {
			name := r.NewVersion
			if name == "" {
				name = r.App
			}
			fmt.Fprintf(w, "last output of %s:\n", name)
			for _, line := range r.Output {
				fmt.Fprintf(w, "    %s\n", line)
			}
		}
		return
	}
	switch r.Op {
	case "swap":
		fmt.Fprintf(w, "swapped %s %s in %s\n", r.App, versions(r.OldVersion, r.NewVersion), took)
	case "rollback":
		fmt.Fprintf(w, "rolled back %s %s in %s\n", r.App, versions(r.OldVersion, r.NewVersion), took)
	case "restart":
		fmt.Fprintf(w, "restarted %s %s in %s\n", r.App, r.NewVersion, took)
	case "start":
		fmt.Fprintf(w, "started %s %s in %s\n", r.App, r.NewVersion, took)
	case "stop":
		fmt.Fprintf(w, "stopped %s %s in %s\n", r.App, firstOf(r.OldVersion, r.NewVersion), took)
	default:
		fmt.Fprintf(w, "%s of %s done in %s\n", r.Op, r.App, took)
	}
	if r.DrainMS > 0 {
		fmt.Fprintf(w, "%s drained and stopped in %s", firstOf(r.OldVersion, "old version"), ms(r.DrainMS))
		if r.CutRequests > 0 {
			fmt.Fprintf(w, ", %d requests cut at drain_timeout", r.CutRequests)
		}
		fmt.Fprintln(w)
	}
}

// versions reads "v1 → v2", or "to v2" when nothing served before.
func versions(old, new string) string {
	if old == "" {
		return "to " + new
	}
	return old + " → " + new
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// ms formats milliseconds for people: "850ms", "1.2s", "1m3.5s".
func ms(n int64) string {
	d := time.Duration(n) * time.Millisecond
	if d < time.Second {
		return d.String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// writeIndented prints a JSON value as received (fields this CLI does not
// know included), indented.
func writeIndented(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		return fmt.Errorf("bad answer from daemon: %w", err)
	}
	buf.WriteByte('\n')
	_, err := buf.WriteTo(w)
	return err
}

// isTerminal reports whether w is a terminal. Anything else (a CI log, a
// pipe, a file) gets plain text.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// plainText removes what garbles a log file: ANSI escape sequences (colours,
// cursor moves) and control characters, such as the carriage returns of a
// progress bar that a log viewer shows as junk or lets overwrite the line.
// They come from the app's own output, which a failure report quotes.
func plainText(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == 0x1b:
			i = skipEscape(s, i)
		case c == '\t' || c >= 0x20 && c != 0x7f:
			b.WriteByte(c) // bytes of multi-byte UTF-8 are all ≥ 0x80
		}
	}
	return b.String()
}

// skipEscape returns the index of the last byte of the escape sequence that
// starts with the ESC at s[i] (ECMA-48): CSI "ESC [ params final", OSC
// "ESC ] text BEL" (or ended by "ESC \\"), else ESC and one byte.
func skipEscape(s string, i int) int {
	if i+1 >= len(s) {
		return i
	}
	switch s[i+1] {
	case '[':
		for j := i + 2; j < len(s); j++ {
			if s[j] >= 0x40 && s[j] <= 0x7e {
				return j
			}
		}
		return len(s) - 1
	case ']':
		for j := i + 2; j < len(s); j++ {
			if s[j] == 0x07 {
				return j
			}
			if s[j] == 0x1b && j+1 < len(s) && s[j+1] == '\\' {
				return j + 1
			}
		}
		return len(s) - 1
	}
	return i + 1
}
