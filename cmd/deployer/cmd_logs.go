package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/signal"
)

// defaultLogLines is how many recent lines logs prints without -n.
const defaultLogLines = 200

func logsCommand() *command {
	return &command{
		name:       "logs",
		args:       []string{"[APP]"},
		flagsUsage: "[-f] [-n N]",
		summary:    "print APP's recent output; follow it with -f",
		about: `Print APP's recent output, each line tagged with its version and
instance. With -f, go on printing new output until interrupted (Ctrl-C)
or the daemon stops; across a deployer upgrade it follows the new daemon
(a note on stderr says so), from the first line the old one had not shown.`,
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
				err = inv.client(cfg).logs(ctx, app, *n, *follow, inv.stdout, inv.stderr)
				if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
					return nil
				}
				return err
			}
		},
	}
}
