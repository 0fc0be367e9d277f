package supervisor

import (
	"context"
	"log/slog"
	"net"
)

// DaemonOptions configure a Daemon. The zero value works: plain net.Listen,
// slog.Default, every app started.
type DaemonOptions struct {
	Logger *slog.Logger
	// Listen creates every listener the daemon opens (public and control);
	// cmd/deployer passes the tableflip-backed sockets.Upgrader's Listen.
	Listen func(network, addr string) (net.Listener, error)
	// Ready is called once the daemon serves (tableflip's Ready).
	Ready func() error
	// OnlyApp, if set, starts only that app; the others stay stopped.
	OnlyApp string
}

// Daemon is the running deployer: supervisor, control API and proxy.
type Daemon struct{}

func NewDaemon(cfg *Config, opts DaemonOptions) (*Daemon, error) { panic("todo") }

// Run serves until ctx is done or a shutdown is requested, then drains,
// stops the apps and returns.
func (d *Daemon) Run(ctx context.Context) error { panic("todo") }
