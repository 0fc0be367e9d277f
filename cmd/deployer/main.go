// Command deployer is a zero-downtime deploy supervisor: run as `deployer
// start` it is the daemon; every other command is a client of a running
// daemon's control socket. See CONTRACT.md for the user-facing contract.
package main

import (
	"context"
	"log/slog"
	"os"
)

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	os.Exit(new(CLI).Run(context.Background(), os.Args[1:]))
}
