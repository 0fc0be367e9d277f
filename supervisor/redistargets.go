package supervisor

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deployer/deployer/proxy"
)

// Connect checks of address targets: fall failures in a row take a target
// out of rotation (never the last one), rise passes bring it back.
const (
	routeTargetFall = 3
	routeTargetRise = 2
)

// routeEntry is one Redis route in force.
type routeEntry struct {
	spec RouteSpec
	// For address routes: the proxy app made for them ("redis:" + host)
	// and its version key, new for every change of the address list.
	app  string
	key  string
	stop context.CancelFunc // ends its connect checks
	// ready[i]: target i is in rotation. Guarded by redisRoutes.mu.
	ready []bool
}

// badRoute is a value that could not be used.
type badRoute struct {
	value, reason string
}

// apply makes raw (field → value, as read from Redis) the Redis routes in
// force. Address routes get a proxy app of their own before the routing
// table names them; replaced ones are drained in the background. A value
// that does not parse is logged (once per field and value) and ignored:
// the host keeps the route it had, if any, and every other host is
// unaffected. Only one goroutine applies at a time (start, then run).
func (r *redisRoutes) apply(raw map[string]string) {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.mu.Lock()
	cur := r.current
	r.mu.Unlock()

	next := make(map[string]*routeEntry, len(raw))
	bad := make(map[string]badRoute)
	var invalid []string
	// Sorted, so that of two fields naming the same host ("A.test" and
	// "a.test") the same one wins on every proxy.
	for _, field := range sortedKeys(raw) {
		spec, err := ParseRoute(field, raw[field])
		if err == nil {
			err = r.loopProblem(spec)
		}
		if err != nil {
			bad[field] = badRoute{raw[field], strings.TrimPrefix(err.Error(), ErrBadRoute.Error()+": ")}
			invalid = append(invalid, field)
			continue
		}
		if next[spec.Host] != nil {
			bad[field] = badRoute{raw[field], fmt.Sprintf("host %q is set by another field too", spec.Host)}
			continue
		}
		if old := cur[spec.Host]; old != nil && sameSpec(old.spec, spec) {
			next[spec.Host] = old
			continue
		}
		next[spec.Host] = &routeEntry{spec: spec}
	}
	for _, field := range invalid {
		h := normalizeRouteHost(field)
		b := bad[field]
		if old := cur[h]; old != nil && next[h] == nil {
			next[h] = old
			b.reason += "; serving its previous target " + old.spec.Value()
			bad[field] = b
		}
	}
	logged := make(map[string]bool, len(bad))
	for _, field := range sortedKeys(bad) {
		key := field + "\x00" + bad[field].value
		logged[key] = true
		if !r.loggedBad[key] {
			r.log.Warn("redis route ignored: bad value", "host", field, "value", bad[field].value, "reason", bad[field].reason)
		}
	}
	r.loggedBad = logged

	for h, e := range next {
		if cur[h] != e && len(e.spec.Targets) > 0 {
			r.serve(e)
		}
	}
	routes := make([]redisRoute, 0, len(next))
	for _, h := range sortedKeys(next) {
		e := next[h]
		if e.app != "" {
			routes = append(routes, redisRoute{Host: h, App: e.app, Pseudo: true})
		} else {
			routes = append(routes, redisRoute{Host: h, App: e.spec.App})
		}
	}
	r.opts.Publish(routes)
	for h, old := range cur {
		if next[h] != old && old.app != "" {
			r.retire(old, next[h] == nil || next[h].app == "")
		}
	}

	r.mu.Lock()
	r.current, r.bad = next, bad
	r.mu.Unlock()

	inForce := make(map[string]string, len(next))
	for h, e := range next {
		inForce[h] = e.spec.Value()
	}
	r.saveCache(inForce)
}

// loopProblem refuses a route to this proxy's own listener (each request
// would come back to it, again and again, until connections run out) and
// one to a socket in state_dir: the control socket there would take the
// public's requests as the daemon's own (its peer is this process), and an
// app's sockets are routed to by the app's name.
func (r *redisRoutes) loopProblem(spec RouteSpec) error {
	for _, t := range spec.Targets {
		if isListenAddr(r.opts.Listen, t) {
			return fmt.Errorf("%w: host %q: %s is this proxy's own listen address: requests would loop", ErrBadRoute, spec.Host, t.Addr)
		}
		if t.Network == "unix" && r.opts.StateDir != "" && inDir(r.opts.StateDir, t.Addr) {
			return fmt.Errorf("%w: host %q: %s is in state_dir %s, which holds the control socket and the apps' sockets: route to an app by its name", ErrBadRoute, spec.Host, t.Addr, r.opts.StateDir)
		}
	}
	return nil
}

// inDir reports whether path, or the file it leads to through symbolic
// links, is in dir, or is the same file as one there.
func inDir(dir, path string) bool {
	dirs := []string{filepath.Clean(dir)}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dirs = append(dirs, real)
	}
	paths := []string{filepath.Clean(path)}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		paths = append(paths, real)
	}
	for _, d := range dirs {
		for _, p := range paths {
			if rel, err := filepath.Rel(d, p); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
				return true
			}
		}
	}
	// A hard link elsewhere to the control socket.
	ctl, err1 := os.Stat(controlSocket(dir))
	fi, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(fi, ctl)
}

// isListenAddr reports whether t is the listen address, as far as can be
// told without resolving names.
func isListenAddr(listen string, t proxy.Target) bool {
	if t.Network != "tcp" || listen == "" {
		return false
	}
	lh, lp, err1 := net.SplitHostPort(listen)
	th, tp, err2 := net.SplitHostPort(t.Addr)
	if err1 != nil || err2 != nil || lp != tp {
		return false
	}
	lh, th = normalHost(lh), normalHost(th)
	local := th == "localhost"
	if ip := net.ParseIP(th); ip != nil {
		local = ip.IsLoopback() || ip.IsUnspecified()
	}
	lip := net.ParseIP(lh)
	switch {
	case lh == th:
		return true
	case lh == "" || lip != nil && lip.IsUnspecified():
		return local
	case lh == "localhost" || lip != nil && lip.IsLoopback():
		return th == "localhost" || lh == "localhost" && local
	}
	return false
}

// normalHost is host as compared for loops: names in lower case without a
// trailing dot, addresses in their canonical form (an IPv4-mapped IPv6
// address as IPv4).
func normalHost(host string) string {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap().WithZone("").String()
	}
	return normalizeRouteHost(host)
}

func sameSpec(a, b RouteSpec) bool {
	return a.Host == b.Host && a.App == b.App && slices.Equal(a.Targets, b.Targets)
}

// setAppOptions gives the proxy apps of the address routes in force the
// settings of deploy.toml in force (a reload changed queue_timeout,
// max_queued or max_body); routes made later get them anyway.
func (r *redisRoutes) setAppOptions() {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.mu.Lock()
	cur := r.current
	r.mu.Unlock()
	for _, e := range cur {
		if e.app != "" {
			r.opts.Proxy.SetApp(e.app, r.opts.AppOptions())
		}
	}
}

// serve makes the proxy app of an address route, every target ready, and
// starts its connect checks. A route whose addresses changed gets a new
// version of the same app; the old one is retired by the caller.
func (r *redisRoutes) serve(e *routeEntry) {
	r.seq++
	e.app = "redis:" + e.spec.Host
	e.key = fmt.Sprintf("r%d", r.seq)
	e.ready = make([]bool, len(e.spec.Targets))
	for i := range e.ready {
		e.ready[i] = true
	}
	r.opts.Proxy.SetApp(e.app, r.opts.AppOptions())
	r.opts.Proxy.Serve(e.app, e.key, e.spec.Targets)
	ctx, cancel := context.WithCancel(r.ctx)
	e.stop = cancel
	go r.watch(ctx, e)
}

// retire drains an address route that no longer serves; remove also drops
// its proxy app (no new version of it serves). Requests on it get the
// daemon's drain_timeout to finish.
func (r *redisRoutes) retire(e *routeEntry, remove bool) {
	e.stop()
	if remove {
		r.opts.Proxy.RemoveApp(e.app)
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), r.opts.Drain())
		defer cancel()
		r.opts.Proxy.Retire(ctx, e.app, e.key)
	}()
}

// watch checks every target of an address route every health_interval by
// connecting to it, as an app's instances are checked (healthcheck.go).
func (r *redisRoutes) watch(ctx context.Context, e *routeEntry) {
	n := len(e.spec.Targets)
	fails, passes := make([]int, n), make([]int, n)
	interval := r.opts.Config.HealthInterval
	warnedLast := false
	for {
		select {
		case <-time.After(interval):
		case <-ctx.Done():
			return
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, t := range e.spec.Targets {
			wg.Go(func() {
				errs[i] = checkHealth(ctx, endpoint{network: t.Network, addr: t.Addr}, "", min(interval, healthTimeout))
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
		for i, err := range errs {
			t := e.spec.Targets[i]
			if err == nil {
				fails[i], passes[i] = 0, passes[i]+1
				if passes[i] >= routeTargetRise && r.setReady(e, i, true) {
					r.log.Info("redis route target back in rotation", "host", e.spec.Host, "target", targetString(t))
				}
				continue
			}
			fails[i], passes[i] = fails[i]+1, 0
			if fails[i] < routeTargetFall {
				continue
			}
			if r.setReady(e, i, false) {
				warnedLast = false
				r.log.Warn("redis route target out of rotation: connect failing", "host", e.spec.Host, "target", targetString(t), "error", err)
			} else if r.isLastReady(e, i) && !warnedLast {
				warnedLast = true
				r.log.Warn("connect failing on the last target in rotation; keeping it", "host", e.spec.Host, "target", targetString(t), "error", err)
			}
		}
	}
}

// setReady puts target i of e in or out of rotation and reports whether
// that changed anything. The last target in rotation is never taken out.
func (r *redisRoutes) setReady(e *routeEntry, i int, on bool) bool {
	r.mu.Lock()
	if e.ready[i] == on || (!on && r.readyCountLocked(e) <= 1) {
		r.mu.Unlock()
		return false
	}
	e.ready[i] = on
	r.mu.Unlock()
	r.opts.Proxy.SetInstance(e.app, e.key, i, e.spec.Targets[i], on)
	return true
}

func (r *redisRoutes) isLastReady(e *routeEntry, i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return e.ready[i] && r.readyCountLocked(e) <= 1
}

func (r *redisRoutes) readyCountLocked(e *routeEntry) int {
	n := 0
	for _, on := range e.ready {
		if on {
			n++
		}
	}
	return n
}

// shutdown ends the source (its context is done) and drains every address
// route within deadline.
func (r *redisRoutes) shutdown(deadline time.Duration) {
	if !r.started {
		return
	}
	<-r.done
	<-r.cacheDone
	r.mu.Lock()
	entries := slices.Collect(maps.Values(r.current))
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var wg sync.WaitGroup
	for _, e := range entries {
		if e.app == "" {
			continue
		}
		e.stop()
		wg.Go(func() { r.opts.Proxy.Retire(ctx, e.app, e.key) })
	}
	wg.Wait()
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
