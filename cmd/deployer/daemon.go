package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/deployer/deployer/sockets"
	"github.com/deployer/deployer/supervisor"
)

// becomeDaemon runs the daemon in the foreground until SIGINT or SIGTERM,
// or a shutdown request, and returns once it has drained and stopped the
// apps. app, if set, is the only app started.
// upgradeTimeout bounds how long a new daemon may take to become ready.
const upgradeTimeout = 10 * time.Second

// isUpgradeChild reports whether this process is the new daemon of an
// upgrade: tableflip marks it in the environment. It must become the daemon
// even though the old one still answers on the control socket.
func isUpgradeChild() bool { return os.Getenv(sockets.HasParentEnv) != "" }

func (inv *invocation) becomeDaemon(ctx context.Context, cfg *supervisor.Config, app string) error {
	var handler slog.Handler = slog.NewTextHandler(inv.stderr, nil)
	if inv.asJSON {
		handler = slog.NewJSONHandler(inv.stderr, nil)
	}
	logger := slog.New(handler)

	// Every listener comes from the upgrader, the control socket too: one
	// bound directly would race a future upgrade's new process for it
	// (tableflip, see PITFALLS.md).
	upg, err := sockets.NewUpgrader(sockets.UpgraderOptions{
		PIDFile: cfg.Deployer.PIDFile,
		// A new daemon is ready once it has adopted the apps: seconds at most.
		UpgradeTimeout: upgradeTimeout,
	})
	if err != nil {
		return fmt.Errorf("listeners: %w", err)
	}
	defer upg.Stop()
	if err := handOnStateDir(upg, cfg.Deployer.StateDir); err != nil {
		return err
	}

	d, err := supervisor.NewDaemon(cfg, supervisor.DaemonOptions{
		Logger:  logger,
		Listen:  upg.Listen,
		Ready:   upg.Ready,
		OnlyApp: app,
		Upgrade: upg.Upgrade,
		// The daemon is this process: deploy.toml's procs sets its
		// GOMAXPROCS.
		ManageProcs: true,
	})
	if err != nil {
		// NewDaemon only checks what it was given; its refusal is a config
		// the daemon cannot run, which is exit status 2 like any invalid
		// deploy.toml.
		return &configError{err: err}
	}

	// Signals stay caught until Run returns, a second Ctrl-C included:
	// dying halfway through the drain would leave the apps running, each
	// in its own process group, with nobody to stop them.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP upgrades, as `deployer upgrade` does (CONTRACT.md; systemd's
	// ExecReload). Its default action would kill the daemon.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			logger.Info("SIGHUP: upgrading")
			res, err := d.Upgrade()
			switch {
			case err != nil:
				logger.Error("SIGHUP: upgrade refused", "error", err)
			case !res.OK:
				logger.Error("SIGHUP: upgrade failed; serving on", "error", res.Error)
			}
		}
	}()
	if err := d.Run(ctx); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	return nil
}

// stateDirFile names the state directory an old daemon passes to the new
// one of an upgrade.
const stateDirFile = "deployer-state-dir"

// handOnStateDir refuses to take over from a daemon whose state directory
// is another one (deploy.toml's state_dir edited before the upgrade): this
// daemon would find none of that one's apps in its state.json and start
// them anew, while the old daemon leaves its processes running when it
// hands over, to nobody. The upgrade then fails and the old daemon serves
// on. Then it passes its own directory on to the next upgrade.
func handOnStateDir(upg *sockets.Upgrader, dir string) error {
	if upg.HasParent() {
		f, err := upg.File(stateDirFile)
		if err != nil {
			return err
		}
		if f != nil {
			defer f.Close()
			old, err := f.Stat()
			if err != nil {
				return fmt.Errorf("the old daemon's state directory: %w", err)
			}
			if now, err := os.Stat(dir); err != nil || !os.SameFile(old, now) {
				oldPath, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
				return &configError{err: fmt.Errorf("state_dir %s is not the running daemon's (%s): an upgrade cannot move the state directory, whose apps would be left to nobody; run `deployer shutdown` with the deploy.toml that names %s, then `deployer start`", dir, oldPath, oldPath)}
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	defer f.Close()
	return upg.AddFile(stateDirFile, f)
}
