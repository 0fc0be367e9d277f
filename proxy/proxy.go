// Package proxy is deployer's HTTP reverse proxy.
package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"time"
)

// Defaults for Options and AppOptions fields left zero.
const (
	DefaultQueueTimeout = 30 * time.Second
	DefaultMaxQueued    = 10000
)

type Options struct {
	Logger *slog.Logger // nil: slog.Default()
}

type Proxy struct{}

func New(opts Options) *Proxy { panic("todo") }

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) { panic("todo") }

// Route sends requests whose Host matches Host and whose path has the prefix
// Path to App.
type Route struct {
	Host      string // exact, "*.example.com", or "*"
	Path      string // prefix on a segment boundary; "" or "/" = everything
	App       string
	StripPath bool
}

func (p *Proxy) SetRoutes(routes []Route) error { panic("todo") }

type AppOptions struct {
	QueueTimeout time.Duration
	MaxQueued    int
}

func (p *Proxy) SetApp(app string, o AppOptions) { panic("todo") }
func (p *Proxy) RemoveApp(app string)             { panic("todo") }

// Target is where one instance listens.
type Target struct {
	Network string // "unix" or "tcp"
	Addr    string
}

func (p *Proxy) Serve(app, version string, targets []Target)                  { panic("todo") }
func (p *Proxy) SetInstance(app, version string, i int, t Target, ready bool) { panic("todo") }
func (p *Proxy) Retire(ctx context.Context, app, version string) (cut int)     { panic("todo") }
func (p *Proxy) Hold(app string)                                              { panic("todo") }
func (p *Proxy) Release(app string)                                           { panic("todo") }

type AppStats struct {
	InFlight map[string]int
	Held     int
	Paused   bool
}

func (p *Proxy) Stats(app string) AppStats { panic("todo") }
