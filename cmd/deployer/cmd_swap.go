package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// The streamed operations: swap, rollback, restart and stop. Each POSTs to
// the daemon and prints the progress it streams back, then the result.

const swapExits = `0  VERSION serves all new traffic (with --wait-drain: and the old version
   is gone)
1  VERSION failed (did not start, crashed, failed health, timed out): the
   old version keeps serving untouched; the reason and VERSION's last lines
   of output are printed
2  bad usage, unknown app or invalid deploy.toml`

const waitDrainUsage = "return only once the old version has drained and stopped too"

func swapCommand() *command {
	return &command{
		name:       "swap",
		args:       []string{"[APP]", "VERSION"},
		flagsUsage: "[--wait-drain]",
		json:       true,
		summary:    "launch VERSION beside the running one and move new traffic to it",
		about: `Launch VERSION of APP beside the running version and wait until it is
healthy, then move new traffic to it with one atomic rename of its socket
over the stable path, then drain the old version and stop it. Progress is
printed as it happens, one timestamped line each.

The command returns once VERSION serves all new traffic; the old version
drains on in the daemon. With --wait-drain it returns once the old version
is gone too.`,
		exits:   swapExits,
		example: "deployer swap web v42",
		setup: func(fs *flag.FlagSet) runFunc {
			waitDrain := fs.Bool("wait-drain", false, waitDrainUsage)
			return func(ctx context.Context, inv *invocation) error {
				cfg, app, rest, err := inv.daemonApp()
				if err != nil {
					return err
				}
				version := rest[0]
				if err := supervisor.ValidVersion(version); err != nil {
					return usageErrorf("%v", err)
				}
				return inv.operate(ctx, inv.client(cfg), app, "swap", supervisor.SwapRequest{Version: version, WaitDrain: *waitDrain})
			}
		},
	}
}

func rollbackCommand() *command {
	return &command{
		name:       "rollback",
		args:       []string{"[APP]"},
		flagsUsage: "[--wait-drain]",
		json:       true,
		summary:    "swap back to the version that served before the last swap",
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
		name:       "restart",
		args:       []string{"[APP]"},
		flagsUsage: "[--wait-drain]",
		json:       true,
		summary:    "swap to the version already serving: fresh processes, no downtime",
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
		name:    "stop",
		args:    []string{"[APP]"},
		json:    true,
		summary: "drain APP and stop its processes; its requests are held until it starts again",
		about: `Drain APP and stop its processes. New requests to APP are then held, up to
queue_timeout, until 'deployer start APP' starts it again.`,
		exits: `0  APP is stopped
1  APP could not be stopped, or no daemon is running
2  bad usage, unknown app or invalid deploy.toml`,
		example: "deployer stop web",
		run: func(ctx context.Context, inv *invocation) error {
			return inv.operateOnApp(ctx, "stop", supervisor.SwapRequest{})
		},
	}
}

// streamed returns the setup of a command that takes [APP] and
// --wait-drain and runs operation op.
func streamed(op string) func(fs *flag.FlagSet) runFunc {
	return func(fs *flag.FlagSet) runFunc {
		waitDrain := fs.Bool("wait-drain", false, waitDrainUsage)
		return func(ctx context.Context, inv *invocation) error {
			return inv.operateOnApp(ctx, op, supervisor.SwapRequest{WaitDrain: *waitDrain})
		}
	}
}

// operateOnApp resolves [APP] and runs operation op on it.
func (inv *invocation) operateOnApp(ctx context.Context, op string, req supervisor.SwapRequest) error {
	cfg, app, _, err := inv.daemonApp()
	if err != nil {
		return err
	}
	return inv.operate(ctx, inv.client(cfg), app, op, req)
}

// operate runs a streamed operation and prints it: each progress event as
// it arrives, then the result; with --json only the result, as received.
func (inv *invocation) operate(ctx context.Context, cl *client, app, op string, req supervisor.SwapRequest) error {
	var progress func(supervisor.Event)
	if !inv.asJSON {
		progress = func(ev supervisor.Event) {
			fmt.Fprintf(inv.stdout, "%s %s\n", clock(ev.Time), ev.Message)
		}
	}
	res, raw, err := cl.operate(ctx, app, op, req, progress)
	if err != nil {
		return err
	}
	if inv.asJSON {
		if err := writeIndented(inv.stdout, raw); err != nil {
			return err
		}
	} else {
		writeResult(inv.stdout, res)
	}
	if !res.OK {
		return errReported
	}
	return nil
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
// two. On failure the output ends with the reason and the new version's
// last lines of output, as CONTRACT.md promises: CI shows the end of a log.
func writeResult(w io.Writer, r *supervisor.Result) {
	took := ms(r.DurationMS)
	if !r.OK {
		target := ""
		if r.NewVersion != "" {
			target = " to " + r.NewVersion
		}
		fmt.Fprintf(w, "%s of %s%s failed: %s\n", r.Op, r.App, target, r.Error)
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
