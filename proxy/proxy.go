package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Options and AppOptions fields left zero.
const (
	DefaultQueueTimeout = 30 * time.Second
	DefaultMaxQueued    = 10000
)

// Options configure a Proxy. The zero value works.
type Options struct {
	Logger *slog.Logger // nil: slog.Default()
	// OnRequest, if set, is called once per request when its answer (or
	// its upgraded connection) is over, on the request's goroutine: for
	// metrics and access logs. It must not keep info.
	OnRequest func(info *RequestInfo)
	// TrustedProxies are the client addresses (r.RemoteAddr) whose
	// forwarding headers are believed: their X-Forwarded-For is passed on
	// with the client's address appended, their X-Forwarded-Host and
	// X-Forwarded-Proto are kept when present, and Forwarded, X-Real-Ip and
	// other X-Forwarded-* headers are passed on unchanged. From anyone else
	// all of these are dropped and X-Forwarded-For, -Host and -Proto set
	// from the connection. A client on a unix socket has no address and is
	// never trusted. IPv4-mapped IPv6 addresses match IPv4 prefixes.
	TrustedProxies []netip.Prefix
}

// Proxy is deployer's HTTP reverse proxy: an http.Handler that routes each
// request to an app, holds it while the app has nothing ready, and forwards
// it to an instance of the app's serving version. It knows requests, not
// processes: the supervisor tells it which versions and instances exist.
//
// All methods are safe for concurrent use. The zero Proxy is not usable:
// call New.
type Proxy struct {
	log       *slog.Logger
	onRequest func(*RequestInfo)
	trusted   []netip.Prefix
	routes    atomic.Pointer[routeTable]

	mu   sync.Mutex                          // serializes writers of apps
	apps atomic.Pointer[map[string]*backend] // copy on write; read without locks
}

// New returns a Proxy with no routes and no apps: every request gets 404
// until SetRoutes.
func New(opts Options) *Proxy {
	p := &Proxy{log: logger(opts.Logger), onRequest: opts.OnRequest, trusted: slices.Clone(opts.TrustedProxies)}
	p.routes.Store(&routeTable{})
	p.apps.Store(&map[string]*backend{})
	return p
}

// ServeHTTP routes r, then forwards it to the app's serving version, holding
// it first if needed (see Hold). No route: 404. An app the proxy does not
// know or that was removed: 503. Held too long or too many held: 503 with
// Retry-After. The app failed before answering a request that cannot be
// replayed: 502.
//
// Like httputil.ReverseProxy, ServeHTTP panics with http.ErrAbortHandler
// when copying a response fails midway; http.Server recovers it, and
// middleware that recovers panics must re-panic that value.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == "PRI" {
		// The HTTP/2 connection preface ("PRI * HTTP/2.0"), which
		// net/http hands to handlers so they can take over the
		// connection: never an HTTP/1.1 request for an app.
		p.writeError(w, r, nil, fmt.Errorf("%w: method PRI (an HTTP/2 preface)", ErrBadRequest))
		p.observe(r, nil, "", http.StatusBadRequest)
		return
	}
	host := normalizeHost(r.Host)
	rt := p.routes.Load().lookup(host, r.URL.Path)
	if rt == nil {
		p.writeError(w, r, nil, &routeError{host: host})
		p.observe(r, nil, "", http.StatusNotFound)
		return
	}
	b := (*p.apps.Load())[rt.app]
	if b == nil {
		p.writeError(w, r, nil, &appError{err: ErrUnknownApp, app: rt.app})
		p.observe(r, nil, rt.app, http.StatusServiceUnavailable)
		return
	}
	now := time.Now()
	c := &call{
		b:       b,
		route:   rt,
		client:  r.Context(),
		arrival: now,
		seq:     arrivalSeq(now),
	}
	// Takes c out of its registry however forward ends, a panic included.
	defer func() {
		b.finish(c)
		p.observe(r, c, rt.app, 0)
	}()
	p.forward(w, r, c)
}

// seqEpoch is the zero of arrivalSeq.
var seqEpoch = time.Now()

// arrivalSeq orders requests by arrival for the wait queue: nanoseconds
// since seqEpoch on the monotonic clock. A counter shared by every request
// would be one more cache line the cores pass back and forth per request.
func arrivalSeq(now time.Time) uint64 { return uint64(now.Sub(seqEpoch)) }

// stripURLPath removes prefix from u's path, keeping a leading "/". The
// escaped form is stripped the same way when it starts with the prefix, and
// dropped (so it is rebuilt from the path) when it does not.
func stripURLPath(u *url.URL, prefix string) {
	u.Path = stripPrefix(u.Path, prefix)
	if u.RawPath != "" {
		if hasPathPrefix(u.RawPath, prefix) {
			u.RawPath = stripPrefix(u.RawPath, prefix)
		} else {
			u.RawPath = ""
		}
	}
}

// routeError is ErrNoRoute with the host that had none.
type routeError struct{ host string }

func (e *routeError) Error() string { return ErrNoRoute.Error() + " for host " + quoteHost(e.host) }
func (e *routeError) Unwrap() error { return ErrNoRoute }

// appError is err about an app.
type appError struct {
	err error
	app string
}

func (e *appError) Error() string { return e.err.Error() + " " + e.app }
func (e *appError) Unwrap() error { return e.err }

// quoteHost quotes a client-supplied host for a message.
func quoteHost(h string) string {
	if h == "" {
		return `""`
	}
	return strings.ToValidUTF8(`"`+h+`"`, "?")
}

// app returns the backend of app, removed or not, or nil.
func (p *Proxy) app(app string) *backend {
	return (*p.apps.Load())[app]
}

// ensureApp returns the backend of app, creating it with o when missing.
func (p *Proxy) ensureApp(app string, o AppOptions) *backend {
	if b := p.app(app); b != nil {
		return b
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ensureAppLocked(app, o)
}

// ensureAppLocked is ensureApp with p.mu held.
func (p *Proxy) ensureAppLocked(app string, o AppOptions) *backend {
	old := *p.apps.Load()
	if b := old[app]; b != nil {
		return b
	}
	b := newBackend(app, o)
	apps := make(map[string]*backend, len(old)+1)
	for k, v := range old {
		apps[k] = v
	}
	apps[app] = b
	p.apps.Store(&apps)
	return b
}

// dropApp deletes b from the apps if it is still there, removed, with no
// version left.
func (p *Proxy) dropApp(b *backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.apps.Load()
	if old[b.name] != b || !b.gone() {
		return
	}
	apps := make(map[string]*backend, len(old))
	for k, v := range old {
		if k != b.name {
			apps[k] = v
		}
	}
	p.apps.Store(&apps)
}

// SetApp configures app (zero fields: the defaults), creating it if needed;
// calling it again updates the options for requests arriving from then on.
// It also undoes RemoveApp.
func (p *Proxy) SetApp(app string, o AppOptions) {
	// Under p.mu, as in Serve: a removed app's drop (dropApp) must not come
	// between the lookup and the change, which would be lost.
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ensureAppLocked(app, o).setOptions(o)
}

// RemoveApp forgets app: new requests and held ones get 503; requests in
// flight go on. Its versions stay known until retired, so Retire them (before
// or after) to drain them and close their connections; once none is left the
// app is gone. SetApp or Serve bring it back.
func (p *Proxy) RemoveApp(app string) {
	b := p.app(app)
	if b == nil {
		return
	}
	b.remove()
	p.dropApp(b)
}

// Serve makes version, listening on targets (one per instance, all ready),
// the one app's new requests go to, round robin over the targets; held
// requests are released at once, in arrival order (unless the app is
// paused). Requests already assigned to another version stay there.
//
// Versions are named by the caller. Serving a name again with the same
// targets reuses that version (swapping back to one still draining);
// serving it with other targets (a restart of the same version on new
// sockets) makes a new one, and the earlier one is left for Retire: Retire
// takes the versions of one name in the order they were served. An app
// unknown so far is created with default options.
func (p *Proxy) Serve(app, version string, targets []Target) {
	// Under p.mu: a removed app whose last version's Retire ends now is
	// dropped (dropApp) either before the lookup, and made anew, or after
	// serve brought it back, and then kept.
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ensureAppLocked(app, AppOptions{}).serve(version, targets)
}

// SetInstance updates instance i of version: ready=false takes it out of
// rotation (when no instance is ready, requests are held); ready=true with a
// target puts it (back) in, releasing held requests. A new target (the
// instance restarted on a new socket) gets fresh connections. Unknown apps
// and versions, retiring versions and i < 0 are ignored.
func (p *Proxy) SetInstance(app, version string, i int, t Target, ready bool) {
	if b := p.app(app); b != nil {
		b.setInstance(version, i, t, ready)
	}
}

// Retire stops sending new requests to version (if it was serving, app has
// nothing to serve and new requests are held until a later Serve), closes its
// idle connections at once (PITFALLS: a keep-alive pool must not keep
// feeding an old version), and waits until its requests in flight, streaming
// responses and upgraded connections are over. When ctx is done first it
// cancels every one left (an upgraded connection is then closed) and returns
// how many it cut. When Retire returns, the version is forgotten and every
// connection to it closed.
//
// With several versions of the same name (see Serve), Retire takes the
// oldest not yet retiring. Nothing to retire: 0 at once.
func (p *Proxy) Retire(ctx context.Context, app, version string) (cut int) {
	b := p.app(app)
	if b == nil {
		return 0
	}
	v, drained := b.beginRetire(version)
	if v == nil {
		return 0
	}
	v.closeIdle()
	select {
	case <-drained:
	case <-ctx.Done():
		if cut = b.cut(v); cut > 0 {
			p.log.Warn("drain deadline: requests cut", "app", app, "version", version, "cut", cut, "error", context.Cause(ctx))
		}
	}
	b.forget(v)
	v.close()
	p.dropApp(b)
	return cut
}

// Hold pauses app: new requests wait in its queue even while instances are
// ready, until Release (or their queue_timeout). An app unknown so far is
// created with default options, so a pause can be set before the app
// serves.
func (p *Proxy) Hold(app string) {
	p.ensureApp(app, AppOptions{}).hold()
}

// Release resumes app: held requests go on, in arrival order, as soon as an
// instance is ready.
func (p *Proxy) Release(app string) {
	if b := p.app(app); b != nil {
		b.release()
	}
}

// Stats returns a snapshot of app; the zero AppStats (with empty maps) for
// an app the proxy does not know.
func (p *Proxy) Stats(app string) AppStats {
	if b := p.app(app); b != nil {
		return b.stats()
	}
	return AppStats{InFlight: map[string]int{}, Upgraded: map[string]int{}}
}

// Apps returns the names of the apps the proxy knows (not removed), sorted.
func (p *Proxy) Apps() []string {
	var names []string
	for name, b := range *p.apps.Load() {
		if !b.isRemoved() {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}
