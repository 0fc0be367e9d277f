package main

import (
	"context"

	"github.com/deployer/deployer/supervisor"
)

func startCommand() *command {
	return &command{
		name:    "start",
		args:    []string{"[APP]"},
		json:    true,
		summary: "run the daemon in the foreground, or start APP in the running one",
		about: `With no daemon answering on the control socket, become the daemon, in the
foreground: start every app (or only APP), serve the built-in proxy, log
to stderr (as JSON with --json), and stop gracefully, draining every app,
on SIGINT or SIGTERM.

An app starts at the version that served last (kept in
<state_dir>/state.json), so that a restart never undoes a deploy; at
'version' in deploy.toml when none has served yet, or when 'version' was
edited since that one served (the edit is the newer decision).

With a daemon running, ask it to start APP (stopped earlier with
'deployer stop'), by the same rule, and wait until APP serves; progress is
printed as with 'deployer swap'.`,
		exits: `0  the daemon stopped cleanly; or APP serves
1  the daemon failed; or APP could not be started
2  bad usage, unknown app or invalid deploy.toml`,
		example: "deployer -c /srv/deploy.toml start",
		run:     runStart,
	}
}

func runStart(ctx context.Context, inv *invocation) error {
	cfg, err := inv.loadConfig()
	if err != nil {
		return err
	}
	// An APP given must exist whichever way this goes; left out, it means
	// "every app" to a new daemon but must be resolved for a running one.
	app, err := inv.optionalApp(cfg)
	if err != nil {
		return err
	}
	if isUpgradeChild() {
		return inv.becomeDaemon(ctx, cfg, app)
	}
	cl := inv.client(cfg)
	up, err := cl.alive(ctx)
	if err != nil {
		return err
	}
	if !up {
		return inv.becomeDaemon(ctx, cfg, app)
	}
	if app == "" {
		if app, _, err = inv.resolveApp(cfg); err != nil {
			return err
		}
	}
	return inv.operate(ctx, cl, app, "start", supervisor.SwapRequest{})
}
