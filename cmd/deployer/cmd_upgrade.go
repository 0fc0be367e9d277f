package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// upgradeWait bounds how long upgrade waits for the daemon's answer. The
// daemon answers once the new binary is ready or has failed, which its
// upgrade timeout bounds (tableflip's default is a minute); this bound only
// keeps a wedged daemon from hanging a CI step for ever.
const upgradeWait = 3 * time.Minute

func upgradeCommand() *command {
	return &command{
		name:    "upgrade",
		json:    true,
		summary: "replace the running daemon with the deployer binary on disk; apps keep running",
		about: `Replace the running daemon with the deployer binary now on disk (the path
the daemon was started as), with no connection refused or dropped. The new
daemon takes over the public listener and the control socket, adopts the
running apps (same processes, same sockets) and reports ready; then the old
daemon stops accepting, finishes its in-flight requests and websockets (at
most the longest drain_timeout) and exits. The apps are never restarted.

Put the new binary in place by rename ('mv'), or with 'go build -o PATH'
or 'install', which replace the file; never by writing into the running
file ('cp' fails with ETXTBSY, and a half-written binary would be started).

If the new binary fails to start or to become ready, it is killed and the
old daemon serves on. An upgrade is refused while a swap runs, and until
the old daemon of the previous upgrade has exited.

SIGHUP to the daemon (systemctl reload) does the same.`,
		exits: `0  the new daemon serves; the old one drains and exits
1  the new binary failed (the old daemon serves on), the upgrade was
   refused, or no daemon is running
2  bad usage, or deploy.toml missing or not TOML (other problems are a
   warning: the daemon keeps its last valid config)
4  the connection to the old daemon was lost before its answer, or no
   answer came: which daemon serves is unknown; 'deployer status' tells`,
		example: "deployer -c /srv/app/deploy.toml upgrade",
		run:     runUpgrade,
	}
}

func runUpgrade(ctx context.Context, inv *invocation) error {
	cfg, err := inv.loadConfigForDaemon()
	if err != nil {
		return err
	}
	res, raw, err := inv.client(cfg).upgrade(ctx)
	if inv.asJSON && (errors.Is(err, errConnectionLost) || errors.Is(err, errNoAnswer)) {
		// One JSON object on stdout whatever happens, as swap's
		// unknownResult: nothing is claimed about which daemon serves.
		out, jerr := json.MarshalIndent(struct {
			OK      bool   `json:"ok"`
			Outcome string `json:"outcome"`
			Error   string `json:"error"`
		}{Outcome: supervisor.OutcomeUnknown, Error: err.Error()}, "", "  ")
		if jerr != nil {
			return jerr
		}
		fmt.Fprintf(inv.stdout, "%s\n", out)
	}
	if err != nil {
		return err
	}
	if inv.asJSON {
		if err := writeIndented(inv.stdout, raw); err != nil {
			return err
		}
	} else {
		writeUpgradeResult(inv.stdout, res)
	}
	if !res.OK {
		return errReported
	}
	return nil
}

// upgrade asks the daemon to replace itself and returns its answer, decoded
// and as received. A refused upgrade is an *apiError.
func (c *client) upgrade(ctx context.Context) (*supervisor.UpgradeResult, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, upgradeWait)
	defer cancel()
	resp, err := c.do(ctx, http.MethodPost, "/v1/upgrade", nil, nil)
	var (
		noDaemon *noDaemonError
		api      *apiError
	)
	if errors.As(err, &noDaemon) || errors.As(err, &api) {
		return nil, nil, err
	}
	var raw []byte
	if err == nil {
		defer resp.Body.Close()
		raw, err = io.ReadAll(resp.Body)
	}
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, nil, fmt.Errorf("%w within %s; 'deployer status' shows which daemon serves", errNoAnswer, upgradeWait)
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		// The old daemon went away before its answer arrived: whether the
		// new one took over is unknown, and status tells.
		return nil, nil, fmt.Errorf("%w during the upgrade; 'deployer status' shows which daemon serves", errConnectionLost)
	}
	var res supervisor.UpgradeResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return nil, nil, fmt.Errorf("bad answer from daemon: %w", err)
	}
	if !res.OK && res.Error == "" {
		return nil, nil, errors.New("bad answer from daemon: upgrade failed without a reason")
	}
	return &res, raw, nil
}

// writeUpgradeResult prints the outcome of an upgrade in one line.
func writeUpgradeResult(w io.Writer, r *supervisor.UpgradeResult) {
	if r.OK {
		fmt.Fprintf(w, "upgraded: daemon pid %d → %d\n", r.OldPID, r.NewPID)
		switch nb := r.NewBuild; {
		case nb == nil:
		case nb.Differs(r.OldBuild):
			fmt.Fprintf(w, "build: deployer %s → %s\n", r.OldBuild, nb)
		case nb.Identified():
			fmt.Fprintf(w, "build unchanged: deployer %s\n", nb)
		default:
			// Two builds without a commit, or with uncommitted changes,
			// can differ in code though they record the same.
			fmt.Fprintf(w, "build: deployer %s, recorded the same as before\n", nb)
		}
		return
	}
	daemon := "the running daemon"
	if r.OldPID != 0 {
		daemon = fmt.Sprintf("the running daemon (pid %d)", r.OldPID)
	}
	fmt.Fprintf(w, "upgrade failed: %s; %s serves on\n", r.Error, daemon)
}
