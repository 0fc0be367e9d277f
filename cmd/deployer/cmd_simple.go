package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// shutdownWait bounds how long shutdown waits for the daemon to go: it
// drains every app first, up to their drain and stop timeouts.
const shutdownWait = 2 * time.Minute

// shutdownPoll is how often shutdown checks whether the daemon is gone.
const shutdownPoll = 100 * time.Millisecond

const noDaemonExits = `0  done
1  no daemon is running
` + configWarnExit

// configWarnExit is exit status 2 of the commands that only read from or
// pause a running daemon: an invalid deploy.toml is only a warning for them
// (loadConfigForDaemon), so that the daemon stays within reach.
const configWarnExit = `2  bad usage, unknown app, or deploy.toml missing or not TOML (other
   problems are a warning: the daemon keeps its last valid config)`

func pauseCommand() *command {
	return &command{
		name:    "pause",
		args:    []string{"[APP]"},
		json:    true,
		summary: "hold every new request to APP in its queue",
		about: `Hold every new request to APP in its queue, for a migration say, until
'deployer resume'. Requests in flight carry on. Held requests wait up to
queue_timeout, then get 503 with Retry-After.

Creating <state_dir>/APP/hold by hand does the same.`,
		exits:   noDaemonExits,
		example: "deployer pause web && ./migrate && deployer resume web",
		run: func(ctx context.Context, inv *invocation) error {
			return inv.pauseResume(ctx, "pause")
		},
	}
}

func resumeCommand() *command {
	return &command{
		name:    "resume",
		args:    []string{"[APP]"},
		json:    true,
		summary: "release APP's held requests in arrival order",
		about: `Release the requests held since 'deployer pause', in arrival order, and
let new ones through again.

Removing <state_dir>/APP/hold by hand does the same.`,
		exits:   noDaemonExits,
		example: "deployer resume web",
		run: func(ctx context.Context, inv *invocation) error {
			return inv.pauseResume(ctx, "resume")
		},
	}
}

// pauseResume runs pause or resume, which answer with the app's status.
func (inv *invocation) pauseResume(ctx context.Context, op string) error {
	cfg, app, _, err := inv.daemonApp()
	if err != nil {
		return err
	}
	raw, err := inv.client(cfg).call(ctx, http.MethodPost, appPath(app, op), nil)
	if err != nil {
		return err
	}
	if inv.asJSON {
		return writeIndented(inv.stdout, raw)
	}
	var st supervisor.AppStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("bad answer from daemon: %w", err)
	}
	if op == "pause" {
		fmt.Fprintf(inv.stdout, "%s paused: new requests are held (%d waiting)\n", app, st.Held)
	} else {
		fmt.Fprintf(inv.stdout, "%s resumed\n", app)
	}
	return nil
}

func shutdownCommand() *command {
	return &command{
		name:        "shutdown",
		json:        true,
		jsonFailure: shutdownFailure,
		summary:     "stop the daemon gracefully: drain, stop the apps, exit",
		about: `Ask the daemon to stop gracefully: drain every app, stop its processes,
exit. Waits until the daemon is gone (at most ` + shutdownWait.String() + `).

With --json it prints {"ok": true} once the daemon is gone, else
{"ok": false, "error", "code"}, code as for swap --json ("no_daemon"...).`,
		exits: `0  the daemon stopped
1  no daemon is running, or it still answers after ` + shutdownWait.String() + `
2  bad usage, or deploy.toml missing or not TOML (other problems are a
   warning: the daemon keeps its last valid config)`,
		example: "deployer shutdown",
		run:     runShutdown,
	}
}

func runShutdown(ctx context.Context, inv *invocation) error {
	cfg, err := inv.loadConfigForDaemon()
	if err != nil {
		return err
	}
	cl := inv.client(cfg)
	_, sendErr := cl.call(ctx, http.MethodPost, "/v1/shutdown", nil)
	var (
		noDaemon *noDaemonError
		api      *apiError
	)
	if errors.As(sendErr, &noDaemon) || errors.As(sendErr, &api) {
		return sendErr
	}
	// Any other error may just be the daemon closing the connection on its
	// way out before its answer arrived: whether it goes is what counts.
	ctx, cancel := context.WithTimeout(ctx, shutdownWait)
	defer cancel()
	if err := cl.waitGone(ctx, shutdownPoll); err != nil {
		if sendErr != nil {
			return sendErr
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("the daemon still answers on %s after %s", cl.socket, shutdownWait)
		}
		return err
	}
	if inv.asJSON {
		return writeJSONValue(inv.stdout, map[string]bool{"ok": true})
	}
	fmt.Fprintln(inv.stdout, "daemon stopped")
	return nil
}

// shutdownFailure is what shutdown --json prints when it fails.
func shutdownFailure(_ *invocation, err error) any {
	code, _ := errorCode(err)
	return struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
		Code  string `json:"code"`
	}{Error: err.Error(), Code: code}
}
