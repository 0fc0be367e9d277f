package supervisor

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/fsnotify/fsnotify"

	"github.com/deployer/deployer/proxy"
)

// reloadDebounce lets an editor finish writing (several events per save)
// before deploy.toml is read again.
const reloadDebounce = 150 * time.Millisecond

// watchConfig reloads deploy.toml whenever it changes. It watches the
// directory, not the file: editors and `mv` replace the file, and a watch
// on the old inode would go quiet (PITFALLS: fsnotify). When deploy.toml is
// a symbolic link, the directory of its target is watched too (edits made
// there), and any change in either directory leads to a look at the file:
// a Kubernetes ConfigMap changes by renaming a "..data" link, never
// deploy.toml itself. The file is read again only when its bytes changed
// since the last look, so other files there cost a read, not a reload.
func (d *Daemon) watchConfig(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	path := d.config().Path
	if err := w.Add(filepath.Dir(path)); err != nil {
		w.Close()
		return err
	}
	watchFileDirs(w, d.log, path)
	last := d.config().src
	go func() {
		defer w.Close()
		var debounce <-chan time.Time
		// pending is an edit that takes something away, seen first at
		// pendingAt: it waits until it has stayed the same for
		// removeSettle.
		var pending []byte
		var pendingAt time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if !ev.Has(fsnotify.Chmod) {
					debounce = time.After(reloadDebounce)
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				if errors.Is(err, fsnotify.ErrEventOverflow) {
					debounce = time.After(reloadDebounce) // events lost: re-read
				} else {
					d.log.Warn("watching deploy.toml", "error", err)
				}
			case <-debounce:
				debounce = nil
				watchFileDirs(w, d.log, path)
				src, err := os.ReadFile(path)
				if err != nil || bytes.Equal(src, last) {
					pending = nil
					continue // gone for a moment (a rename), or the same bytes
				}
				if lost := d.takenAway(src); len(lost) > 0 {
					if !bytes.Equal(src, pending) {
						pending, pendingAt = src, time.Now()
						d.log.Info("deploy.toml changed and takes away what serves: applied once the file has stayed the same for "+removeSettle.String(), "removed", strings.Join(lost, ", "))
					}
					if wait := removeSettle - time.Since(pendingAt); wait > 0 {
						debounce = time.After(wait)
						continue
					}
				}
				pending = nil
				if errors.Is(d.reload(src), errReloadDeferred) {
					// An upgrade, or a start's own look at the file, holds
					// the lock: look again in a moment.
					debounce = time.After(reloadRetry)
					continue
				}
				last = src
			}
		}
	}()
	return nil
}

// removeSettle is how long an edit of deploy.toml that takes an app or a
// route away must leave the file unchanged before it is applied. A write
// that stalls halfway (a slow copy, a tool writing in pieces) leaves a
// file that may parse with the apps after the cut missing: applied, it
// would drain them until the rest arrived. Additions and changed settings
// apply after reloadDebounce, as before.
const removeSettle = time.Second

// takenAway lists what src, the new contents of deploy.toml, takes away
// from the config in force: its apps, and the routes of the apps it keeps.
// An invalid src takes nothing away (a reload refuses it).
func (d *Daemon) takenAway(src []byte) []string {
	old := d.config()
	cfg, err := loadConfigSource(old.Path, src, false)
	if err != nil {
		return nil
	}
	var lost []string
	for _, name := range old.AppNames() {
		if cfg.Apps[name] == nil {
			lost = append(lost, "app "+name)
		}
	}
	was, _ := routesOf(old)
	now, _ := routesOf(cfg)
	for _, r := range was {
		kept := slices.ContainsFunc(now, func(n proxy.Route) bool { return n.Host == r.Host && n.Path == r.Path })
		if cfg.Apps[r.App] != nil && !kept {
			lost = append(lost, fmt.Sprintf("route %s%s to %s", r.Host, r.Path, r.App))
		}
	}
	return lost
}

// reloadRetry is how soon the watch looks again at an edit whose reload
// had to wait (errReloadDeferred).
const reloadRetry = time.Second

// errReloadDeferred: an upgrade (or a start's look at deploy.toml) holds
// the lock a reload takes; the edit is applied once it is over.
var errReloadDeferred = errors.New("supervisor: reload deferred: an upgrade is under way")

// Reload reads deploy.toml again and applies it without dropping a request.
// An invalid file changes nothing: the error is logged and shown by status
// until a valid file replaces it. While an upgrade (or a start's own look at
// the file) holds the lock, it does nothing and returns errReloadDeferred.
func (d *Daemon) Reload() error { return d.reload(nil) }

// reload is Reload of src, deploy.toml's contents as the watch read them
// (nil: read the file).
func (d *Daemon) reload(src []byte) error {
	// Not during an upgrade: an app this one started now would be no one's
	// after it. The new daemon reads deploy.toml again once it runs, this
	// one if the upgrade fails (reloadIfChanged, both).
	if !d.upgradeMu.TryLock() {
		d.log.Info("deploy.toml changed during an upgrade: it is applied once the upgrade is over")
		return errReloadDeferred
	}
	defer d.upgradeMu.Unlock()
	return d.reloadLocked(src)
}

// reloadIfChanged reloads deploy.toml if it changed since the config in
// force was read, an edit no watch applied: made before this daemon
// watched the file, or during an upgrade. It waits for an upgrade under
// way to end.
func (d *Daemon) reloadIfChanged() {
	// Looked at before the lock too: an unchanged file (the usual case)
	// takes nothing an upgrade asked for just then would find taken.
	if !d.configChanged() {
		return
	}
	d.upgradeMu.Lock()
	defer d.upgradeMu.Unlock()
	if d.configChanged() {
		d.log.Info("deploy.toml changed since this daemon read it: reloading")
		d.reloadLocked(nil)
	}
}

// configChanged reports whether deploy.toml differs from what the config in
// force was read from.
func (d *Daemon) configChanged() bool {
	cfg := d.config()
	src, err := os.ReadFile(cfg.Path)
	return err == nil && !bytes.Equal(src, cfg.src)
}

// reloadLocked is reload with d.upgradeMu held.
func (d *Daemon) reloadLocked(src []byte) error {
	if d.handedOver.Load() {
		return nil
	}
	old := d.config()
	var cfg *Config
	var err error
	if src == nil {
		cfg, err = LoadConfig(old.Path)
	} else {
		cfg, err = loadConfigSource(old.Path, src, false)
	}
	if err == nil {
		err = d.checkReload(old, cfg)
	}
	if err != nil {
		d.mu.Lock()
		d.reloadErr = err.Error()
		d.mu.Unlock()
		d.log.Error("deploy.toml changed but is invalid; the running config stays", "error", strings.ReplaceAll(err.Error(), "\n", "; "))
		return err
	}
	d.apply(old, cfg)
	return nil
}

// checkReload refuses what cannot change on a running daemon: one
// ConfigError per key changed, with its line in the new file.
func (d *Daemon) checkReload(old, cfg *Config) error {
	var problems, derived []error
	var lines, oldLines *keyLocator
	for _, f := range frozenKeys {
		if reflect.DeepEqual(f.get(old), f.get(cfg)) {
			continue
		}
		if lines == nil {
			lines, oldLines = cfg.keyLines(), old.keyLines()
		}
		line := lines.line(f.key)
		p := &ConfigError{File: cfg.Path, Line: line,
			Msg: fmt.Sprintf("%s cannot change while the daemon runs (%s)", f.key, f.how)}
		if line == 0 && oldLines.line(f.key) == 0 {
			// In neither file: a default that follows another key (resync
			// once routes.redis is set), reported only if nothing else is.
			derived = append(derived, p)
			continue
		}
		problems = append(problems, p)
	}
	if len(problems) == 0 {
		problems = derived
	}
	if len(problems) > 0 {
		slices.SortStableFunc(problems, func(a, b error) int {
			return cmp.Compare(sortLine(a.(*ConfigError).Line), sortLine(b.(*ConfigError).Line))
		})
		return errors.Join(problems...)
	}
	if _, err := routesOf(cfg); err != nil {
		return err
	}
	return nil
}

// frozenKeys are the keys a running daemon keeps as it started with them:
// the listeners and files it opened, the control socket's access, the Redis
// connection. A reload that changes one is refused whole; how says what
// applies it.
var frozenKeys = []frozenKey{
	// An upgrade refuses it too (cmd/deployer: handOnStateDir).
	{toml.Key{"deployer", "state_dir"}, func(c *Config) any { return c.Deployer.StateDir }, restartIt},
	{toml.Key{"deployer", "listen"}, func(c *Config) any { return c.Deployer.Listen }, upgradeIt},
	{toml.Key{"deployer", "pid_file"}, func(c *Config) any { return c.Deployer.PIDFile }, upgradeIt},
	{toml.Key{"deployer", "metrics"}, func(c *Config) any { return c.Deployer.Public.Metrics }, upgradeIt},
	{toml.Key{"deployer", "access_log"}, func(c *Config) any { return c.Deployer.Public.AccessLog }, upgradeIt},
	{toml.Key{"deployer", "tls_listen"}, func(c *Config) any { return c.Deployer.Public.TLSListen }, upgradeIt},
	{toml.Key{"deployer", "tls_cert"}, func(c *Config) any { return c.Deployer.Public.TLSCert }, upgradeIt},
	{toml.Key{"deployer", "tls_key"}, func(c *Config) any { return c.Deployer.Public.TLSKey }, upgradeIt},
	{toml.Key{"deployer", "trusted_proxies"}, func(c *Config) any { return c.Deployer.Public.TrustedProxies }, upgradeIt},
	{toml.Key{"deployer", "read_header_timeout"}, func(c *Config) any { return c.Deployer.Public.ReadHeaderTimeout }, upgradeIt},
	{toml.Key{"deployer", "idle_timeout"}, func(c *Config) any { return c.Deployer.Public.IdleTimeout }, upgradeIt},
	{toml.Key{"deployer", "max_header_bytes"}, func(c *Config) any { return c.Deployer.Public.MaxHeaderBytes }, upgradeIt},
	{toml.Key{"deployer", "control_users"}, func(c *Config) any { return c.Deployer.Public.ControlUIDs }, upgradeIt},
	{toml.Key{"deployer", "control_groups"}, func(c *Config) any { return c.Deployer.Public.ControlGIDs }, upgradeIt},
	{toml.Key{"routes", "redis"}, func(c *Config) any { return c.Routes.Redis }, upgradeIt},
	{toml.Key{"routes", "keyspace_events"}, func(c *Config) any { return c.Routes.KeyspaceEvents }, upgradeIt},
	{toml.Key{"routes", "resync"}, func(c *Config) any { return c.Routes.Resync }, upgradeIt},
	{toml.Key{"routes", "health_interval"}, func(c *Config) any { return c.Routes.HealthInterval }, upgradeIt},
}

// frozenKey is a key a reload may not change: get reads its value from a
// Config, how says what applies a change.
type frozenKey struct {
	key toml.Key
	get func(*Config) any
	how string
}

const (
	restartIt = "deployer shutdown, then start, applies it"
	upgradeIt = "deployer upgrade applies it"
)

// apply moves the daemon from config old to cfg: routes, queue and health
// settings at once; new apps start, removed apps drain and stop; process
// settings of running apps wait for their next swap.
func (d *Daemon) apply(old, cfg *Config) {
	if cfg.Deployer.Procs != old.Deployer.Procs {
		d.threads.configure(d.ctx, cfg.Deployer.Procs, true)
	}
	routes, _ := routesOf(cfg)
	var added, removed []*App
	d.mu.Lock()
	d.cfg, d.reloadErr = cfg, ""
	for _, name := range cfg.AppNames() {
		ac := cfg.Apps[name]
		if a := d.apps[name]; a != nil {
			a.setConfig(ac)
			continue
		}
		a := newApp(d, ac)
		d.apps[name] = a
		added = append(added, a)
	}
	for name, a := range d.apps {
		if cfg.Apps[name] == nil {
			delete(d.apps, name)
			a.removed.Store(true)
			d.removing[a] = struct{}{}
			removed = append(removed, a)
		}
	}
	d.mu.Unlock()

	// New apps get their queue before any route can send them requests, so
	// their first requests are held while they start, not answered 503.
	for _, name := range cfg.AppNames() {
		d.proxy.SetApp(name, appOptions(cfg, cfg.Apps[name]))
	}
	if d.redis != nil {
		d.redis.setAppOptions() // its address routes' apps
	}
	for _, a := range added {
		if err := d.holds.Add(a.name); err != nil {
			d.log.Error("watching the hold file", "app", a.name, "error", err)
		}
	}
	// Merged with the Redis routes (redismerge.go).
	if err := d.setTOMLRoutes(routes); err != nil {
		d.log.Error("applying routes", "error", err) // checked in checkReload
	}
	for _, a := range added {
		d.log.Info("app added", "app", a.name)
		go d.boot(a)
	}
	for _, a := range removed {
		d.log.Info("app removed: draining", "app", a.name)
		go func() {
			a.shutdown()
			d.forgetApp(a)
			d.saveState()
		}()
	}
	d.log.Info("deploy.toml reloaded", "apps", len(cfg.Apps), "added", len(added), "removed", len(removed))
	d.saveState()
}

// forgetApp takes removed app a, whose processes have stopped, out of the
// proxy and the hold watcher, unless deploy.toml added an app of the same
// name back meanwhile: that one has the proxy's entry and the hold watch of
// that name now. d.mu makes the check and the removal one step against
// apply, which adds apps under it.
func (d *Daemon) forgetApp(a *App) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.removing, a)
	if d.apps[a.name] != nil {
		return
	}
	d.proxy.RemoveApp(a.name)
	d.holds.Remove(a.name)
}

// removingApps lists the apps removed from deploy.toml whose processes are
// still draining.
func (d *Daemon) removingApps() []*App {
	d.mu.RLock()
	defer d.mu.RUnlock()
	var list []*App
	for a := range d.removing {
		list = append(list, a)
	}
	slices.SortFunc(list, func(x, y *App) int { return strings.Compare(x.name, y.name) })
	return list
}

// routesOf lists cfg's routes in the proxy's terms and checks them.
func routesOf(cfg *Config) ([]proxy.Route, error) {
	var routes []proxy.Route
	for _, name := range cfg.AppNames() {
		ac := cfg.Apps[name]
		for _, h := range ac.Hosts {
			routes = append(routes, proxy.Route{Host: h, Path: ac.Path, App: name, StripPath: ac.StripPath})
		}
	}
	if err := proxy.ValidateRoutes(routes); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, cfg.Path, err)
	}
	return routes, nil
}

// pendingChanges names the process settings in which the app's current
// config differs from what its serving version was launched with: they take
// effect at the next swap (or restart).
func pendingChanges(launched, now *AppConfig) []string {
	var diff []string
	if !slices.Equal(launched.Command, now.Command) {
		diff = append(diff, "command")
	}
	if launched.envChanged || !reflect.DeepEqual(launched.Env, now.Env) {
		diff = append(diff, "env")
	}
	if !slices.Equal(launched.EnvFiles, now.EnvFiles) {
		diff = append(diff, "env_file")
	}
	if launched.Dir != now.Dir {
		diff = append(diff, "dir")
	}
	if launched.Instances != now.Instances {
		diff = append(diff, "instances")
	}
	if launched.StopSignal != now.StopSignal || launched.StopTimeout != now.StopTimeout || launched.DrainTimeout != now.DrainTimeout {
		diff = append(diff, "stop settings")
	}
	return diff
}
