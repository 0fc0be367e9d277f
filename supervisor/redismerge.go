package supervisor

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/deployer/deployer/proxy"
)

// redisRoute is one Redis route as the routing table sees it: a host and
// the proxy app its requests go to.
type redisRoute struct {
	Host string // normalized
	App  string
	// Pseudo: App is the proxy app made for the route's addresses
	// (redistargets.go); else App names an app of deploy.toml, which must
	// exist.
	Pseudo bool
}

// routeMerger owns the proxy's routing table, which two sources feed:
// deploy.toml (at start and on every reload) and Redis (on every change).
// Each hands in its own routes; the table is rebuilt from both under one
// lock, so neither overwrites the other.
type routeMerger struct {
	mu       sync.Mutex
	toml     []proxy.Route
	redis    []redisRoute
	problems map[string]string // Redis host → why its route is not in the table
	logged   map[string]bool   // host+problem already logged
}

// setTOMLRoutes replaces the deploy.toml routes and rebuilds the table. It
// fails only when the deploy.toml routes alone are invalid.
func (d *Daemon) setTOMLRoutes(routes []proxy.Route) error {
	m := &d.routes
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := proxy.ValidateRoutes(routes); err != nil {
		return err
	}
	m.toml = routes
	d.rebuildRoutesLocked()
	return nil
}

// setRedisRoutes replaces the Redis routes and rebuilds the table.
func (d *Daemon) setRedisRoutes(routes []redisRoute) {
	m := &d.routes
	m.mu.Lock()
	defer m.mu.Unlock()
	m.redis = routes
	d.rebuildRoutesLocked()
}

// routeProblems returns why some Redis hosts are not routed (host → reason).
func (d *Daemon) routeProblems() map[string]string {
	m := &d.routes
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.problems)
}

// rebuildRoutesLocked merges both sources into the proxy's table. Each new
// conflict is logged once.
func (d *Daemon) rebuildRoutesLocked() {
	m := &d.routes
	apps := d.config().Apps
	merged, problems := mergeRoutes(m.toml, m.redis, func(app string) bool { return apps[app] != nil })
	if err := d.proxy.SetRoutes(merged); err != nil {
		// mergeRoutes leaves out every Redis route that could clash, so
		// this is a bug; deploy.toml's routes alone were validated.
		d.log.Error("routes from Redis rejected by the proxy; routing by deploy.toml alone", "error", err)
		d.proxy.SetRoutes(m.toml)
	}
	if m.logged == nil {
		m.logged = make(map[string]bool)
	}
	seen := make(map[string]bool, len(problems))
	for _, h := range slices.Sorted(maps.Keys(problems)) {
		key := h + "\x00" + problems[h]
		seen[key] = true
		if !m.logged[key] {
			d.log.Warn("redis route ignored", "host", h, "reason", problems[h])
		}
	}
	m.logged, m.problems = seen, problems // a problem that goes and comes back is logged again
}

// mergeRoutes returns the deploy.toml routes followed by the Redis routes
// that do not clash with them, and why each other Redis route was left out.
//
// Precedence: deploy.toml wins. A Redis route (host, path "/") is left out
// when deploy.toml routes the same host pattern with path "/": a shared
// store cannot take over a host that this machine's config serves. Redis
// routes only add: for a host that deploy.toml routes under /api only, the
// Redis route takes the rest; for a host that only a deploy.toml wildcard
// or "*" matches, the Redis route is the more specific one and wins, as
// exact beats wildcard everywhere. An app-name route whose app is not in
// deploy.toml is left out too.
func mergeRoutes(toml []proxy.Route, redis []redisRoute, appExists func(string) bool) ([]proxy.Route, map[string]string) {
	taken := make(map[[2]string]string, len(toml))
	for _, r := range toml {
		taken[[2]string{normalizeRouteHost(r.Host), cleanRoutePath(r.Path)}] = r.App
	}
	merged := slices.Clip(toml)
	problems := map[string]string{}
	sorted := slices.SortedFunc(slices.Values(redis), func(a, b redisRoute) int { return cmp.Compare(a.Host, b.Host) })
	for _, r := range sorted {
		key := [2]string{r.Host, "/"}
		if app, ok := taken[key]; ok {
			problems[r.Host] = fmt.Sprintf("deploy.toml routes this host to app %q, and deploy.toml wins", app)
			continue
		}
		if !r.Pseudo && !appExists(r.App) {
			problems[r.Host] = fmt.Sprintf("app %q is not in deploy.toml", r.App)
			continue
		}
		taken[key] = r.App
		merged = append(merged, proxy.Route{Host: r.Host, Path: "/", App: r.App})
	}
	return merged, problems
}

// cleanRoutePath is the form the proxy compares path prefixes in.
func cleanRoutePath(p string) string {
	if p == "" {
		return "/"
	}
	return path.Clean(p)
}

// newRedisRoutes makes the daemon's Redis route source. Its address routes
// take the queue settings and drain_timeout of the config in force.
func (d *Daemon) newRedisRoutes(rc RoutesConfig) (*redisRoutes, error) {
	return newRedisRoutes(redisRoutesOptions{
		Config:     rc,
		CacheFile:  filepath.Join(d.layout.StateDir, "redis-routes.json"),
		Listen:     d.config().Deployer.Listen,
		StateDir:   d.layout.StateDir,
		Proxy:      d.proxy,
		Logger:     d.log,
		AppOptions: func() proxy.AppOptions { return appOptions(d.config(), nil) },
		Drain:      func() time.Duration { return d.config().Deployer.DrainTimeout },
		Publish:    d.setRedisRoutes,
	})
}

// routesStatus is the "routes" object of the status, nil without Redis.
func (d *Daemon) routesStatus() *RoutesStatus {
	if d.redis == nil {
		return nil
	}
	return d.redis.status(d.routeProblems())
}

// ErrNoRedisRoutes is returned for route questions to a daemon whose
// deploy.toml has no [routes] redis.
var ErrNoRedisRoutes = errors.New("supervisor: no routes from redis")
