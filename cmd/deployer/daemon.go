package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/deployer/deployer/sockets"
	"github.com/deployer/deployer/supervisor"
)

// becomeDaemon runs the daemon in the foreground until SIGINT or SIGTERM,
// or a shutdown request, and returns once it has drained and stopped the
// apps. app, if set, is the only app started.
func (inv *invocation) becomeDaemon(ctx context.Context, cfg *supervisor.Config, app string) error {
	var handler slog.Handler = slog.NewTextHandler(inv.stderr, nil)
	if inv.asJSON {
		handler = slog.NewJSONHandler(inv.stderr, nil)
	}
	logger := slog.New(handler)

	// Every listener comes from the upgrader, the control socket too: one
	// bound directly would race a future upgrade's new process for it
	// (tableflip, see PITFALLS.md).
	upg, err := sockets.NewUpgrader(sockets.UpgraderOptions{})
	if err != nil {
		return fmt.Errorf("listeners: %w", err)
	}
	defer upg.Stop()

	d, err := supervisor.NewDaemon(cfg, supervisor.DaemonOptions{
		Logger:  logger,
		Listen:  upg.Listen,
		Ready:   upg.Ready,
		OnlyApp: app,
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
	// SIGHUP is reserved for the self-upgrade (CONTRACT.md), which this
	// build does not do yet. Its default action would kill the daemon and
	// leave the apps orphaned, so it is caught and refused instead.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			logger.Warn("SIGHUP ignored: self-upgrade is not available in this version; the daemon keeps running")
		}
	}()
	if err := d.Run(ctx); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	return nil
}
