package supervisor

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/deployer/deployer/sockets"
)

// deployer validates [deployer] and fills in its defaults. A relative
// state_dir is made absolute against dir, the directory of deploy.toml.
func (l *loader) deployer(raw rawDeployer, dir string) DeployerConfig {
	d := defaultDeployer()
	key := func(k string) toml.Key { return toml.Key{"deployer", k} }
	if l.defined(key("listen")) {
		d.Listen = raw.Listen
		if d.Listen != "" && !validHostPort(d.Listen) {
			l.addf(key("listen"), `deployer.listen %q: want host:port such as "127.0.0.1:8080" (a port from 0 to 65535), or "" for no proxy`, d.Listen)
		}
	}
	if l.defined(key("state_dir")) {
		d.StateDir = raw.StateDir
		if d.StateDir == "" {
			l.addf(key("state_dir"), "deployer.state_dir must not be empty")
		}
	}
	if !filepath.IsAbs(d.StateDir) {
		d.StateDir = filepath.Join(dir, d.StateDir)
	}
	d.StateDir = filepath.Clean(d.StateDir)
	if l.defined(key("pid_file")) && raw.PIDFile != "" {
		d.PIDFile = raw.PIDFile
		if !filepath.IsAbs(d.PIDFile) {
			d.PIDFile = filepath.Join(dir, d.PIDFile)
		}
		// check looks for the directory, which the daemon does not create:
		// a start would fail once ready, writing the file.
		if l.readFiles {
			if fi, err := os.Stat(filepath.Dir(d.PIDFile)); err != nil {
				l.addf(key("pid_file"), "deployer.pid_file %q: %v", raw.PIDFile, err)
			} else if !fi.IsDir() {
				l.addf(key("pid_file"), "deployer.pid_file %q: %s is not a directory", raw.PIDFile, filepath.Dir(d.PIDFile))
			}
		}
	}
	d.QueueTimeout = l.duration(key("queue_timeout"), raw.QueueTimeout, d.QueueTimeout)
	d.DrainTimeout = l.duration(key("drain_timeout"), raw.DrainTimeout, d.DrainTimeout)
	if l.defined(key("max_queued")) {
		d.MaxQueued = raw.MaxQueued
		if d.MaxQueued < 1 {
			l.addf(key("max_queued"), "deployer.max_queued must be at least 1, not %d", d.MaxQueued)
		}
	}
	if l.defined(key("procs")) {
		bad := func(v string) {
			l.addf(key("procs"), `deployer.procs must be "auto" or a number of threads from 0 (every CPU) to %d, not %s`, maxProcs, v)
		}
		switch v := raw.Procs.val.(type) {
		case string:
			if v != "auto" {
				bad(tomlValue(v))
			}
		case int64:
			if v < 0 || v > maxProcs {
				bad(tomlValue(v))
			} else {
				d.Procs = int(v)
			}
		}
	}
	d.Public = l.public(raw, dir)
	l.distinctAddrs(d)
	if n := len(controlSocket(d.StateDir)); n > sockets.MaxPathLen {
		l.addf(key("state_dir"), "control socket path %q is %d bytes, more than the %d a unix socket allows: use a shorter state_dir",
			controlSocket(d.StateDir), n, sockets.MaxPathLen)
	}
	return d
}

var appNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// apps validates every [apps.NAME] and adds it to cfg with defaults filled in.
func (l *loader) apps(cfg *Config, raws map[string]rawApp) {
	if len(raws) == 0 {
		// A proxy that only routes to other hosts by Redis routes needs no
		// app of its own.
		if cfg.Routes.Redis == "" {
			l.addf(toml.Key{"apps"}, "no apps defined: add an [apps.NAME] table")
		}
		return
	}
	order := l.appOrder(raws)
	for _, name := range order {
		cfg.Apps[name] = l.app(name, raws[name], cfg.Deployer)
		if l.readFiles {
			l.envFiles(cfg.Apps[name], cfg.Dir)
		}
	}
	l.routes(cfg, order)
}

// appOrder returns the app names in the order the file defines them, so
// that a conflict is reported at the later app.
func (l *loader) appOrder(raws map[string]rawApp) []string {
	var names []string
	for _, key := range l.md.Keys() {
		if len(key) >= 2 && key[0] == "apps" && !slices.Contains(names, key[1]) {
			if _, ok := raws[key[1]]; ok {
				names = append(names, key[1])
			}
		}
	}
	return names
}

// app validates one app and fills in its defaults. Problems are recorded;
// the result is then only good for further checks.
func (l *loader) app(name string, raw rawApp, d DeployerConfig) *AppConfig {
	a := defaultApp(name, d)
	table := toml.Key{"apps", name}
	key := func(k string) toml.Key { return toml.Key{"apps", name, k} }
	prefix := table.String() + "."

	if !appNameRE.MatchString(name) {
		l.addf(table, "app name %q: want 1 to 32 characters of a-z 0-9 _ -, starting with a letter or digit (it names a directory)", name)
	}
	switch {
	case !l.defined(key("command")):
		l.addf(table, "app %q has no command", name)
	case len(raw.Command) == 0 || raw.Command[0] == "":
		l.addf(key("command"), "%scommand must name a program", prefix)
	}
	a.Command = raw.Command
	if !l.defined(key("version")) {
		l.addf(table, "app %q has no version: set the version `deployer start` launches", name)
	} else if problem := versionProblem(raw.Version); problem != "" {
		l.addf(key("version"), "%sversion %q: %s", prefix, raw.Version, problem)
	}
	a.Version = raw.Version
	if l.defined(key("dir")) {
		a.Dir = raw.Dir
		if a.Dir == "" {
			l.addf(key("dir"), `%sdir must not be empty: "." is the directory of deploy.toml`, prefix)
		}
	}
	maps.Copy(a.Env, raw.Env)
	for _, k := range slices.Sorted(maps.Keys(raw.Env)) {
		switch {
		case k == "":
			l.addf(key("env"), "%senv: \"\" is not a variable name", prefix)
		case strings.ContainsAny(k, "=\x00"):
			l.addf(toml.Key{"apps", a.Name, "env", k}, "%senv: %q is not a variable name (it holds = or NUL)", prefix, k)
		case strings.ContainsRune(raw.Env[k], 0):
			l.addf(toml.Key{"apps", a.Name, "env", k}, "%senv.%s: the value holds a NUL byte, which no environment can", prefix, k)
		}
	}
	if l.defined(key("env_file")) {
		switch v := raw.EnvFile.val.(type) {
		case string:
			a.EnvFiles = []string{v}
		case []any:
			for _, e := range v {
				if s, ok := e.(string); ok {
					a.EnvFiles = append(a.EnvFiles, s)
				}
			}
		}
		for _, f := range a.EnvFiles {
			if f == "" {
				l.addf(key("env_file"), "%senv_file must not name an empty path", prefix)
			}
		}
	}
	if l.defined(key("hosts")) {
		a.Hosts = raw.Hosts
		if len(a.Hosts) == 0 {
			l.addf(key("hosts"), `%shosts must not be empty: "*" matches any host`, prefix)
		}
		for _, h := range a.Hosts {
			if problem := hostProblem(h); problem != "" {
				l.addf(key("hosts"), "%shosts entry %q: %s", prefix, h, problem)
			}
		}
	}
	if l.defined(key("path")) {
		a.Path = raw.Path
		if !strings.HasPrefix(a.Path, "/") {
			l.addf(key("path"), "%spath %q must start with /", prefix, a.Path)
		} else if strings.ContainsAny(a.Path, "?#") {
			// As the proxy's routes: a prefix of paths, never a query.
			l.addf(key("path"), "%spath %q has a query or fragment: a route matches paths only", prefix, a.Path)
		}
	}
	a.StripPath = raw.StripPath
	if l.defined(key("health")) {
		a.Health = raw.Health
		if a.Health != "" && !strings.HasPrefix(a.Health, "/") {
			l.addf(key("health"), `%shealth %q must start with /, or be "" to only check that the socket accepts`, prefix, a.Health)
		}
	}
	if l.defined(key("instances")) {
		a.Instances = raw.Instances
		if a.Instances < 1 || a.Instances > MaxInstances {
			l.addf(key("instances"), "%sinstances must be 1 to %d, not %d", prefix, MaxInstances, a.Instances)
		}
	}
	a.ReadyTimeout = l.duration(key("ready_timeout"), raw.ReadyTimeout, a.ReadyTimeout)
	switch d, err := time.ParseDuration(raw.Settle.text); {
	case !l.defined(key("settle")) || err != nil || d > 0:
		a.Settle = l.duration(key("settle"), raw.Settle, a.Settle)
	case d == 0:
		a.Settle = 0 // "0s": no settle time, unlike other durations
	default:
		l.addf(key("settle"), `%ssettle = %q must not be negative: "0s" moves traffic at the first passing health check`, prefix, raw.Settle.text)
	}
	switch {
	case a.Settle < a.ReadyTimeout:
	case l.defined(key("settle")):
		l.addf(key("settle"), "%ssettle (%s) must be shorter than ready_timeout (%s)", prefix, a.Settle, a.ReadyTimeout)
	default:
		// Left out, settle has no line of its own: report the problem where
		// the file sets ready_timeout, so it too comes with file:line.
		l.addf(key("ready_timeout"), "%ssettle (%s, the default) must be shorter than ready_timeout (%s): set settle too", prefix, a.Settle, a.ReadyTimeout)
	}
	a.HealthInterval = l.duration(key("health_interval"), raw.HealthInt, a.HealthInterval)
	a.HealthTimeout = l.duration(key("health_timeout"), raw.HealthTO, a.HealthTimeout)
	for _, k := range []struct {
		name string
		raw  int
		dst  *int
	}{{"rise", raw.Rise, &a.Rise}, {"fall", raw.Fall, &a.Fall}} {
		if !l.defined(key(k.name)) {
			continue
		}
		*k.dst = k.raw
		if k.raw < 1 || k.raw > 100 {
			l.addf(key(k.name), "%s%s must be 1 to 100 (health checks in a row), not %d", prefix, k.name, k.raw)
		}
	}
	a.DrainTimeout = l.duration(key("drain_timeout"), raw.DrainTimeout, a.DrainTimeout)
	a.MaxBody = l.size(key("max_body"), raw.MaxBody, a.MaxBody)
	a.StopTimeout = l.duration(key("stop_timeout"), raw.StopTimeout, a.StopTimeout)
	if l.defined(key("stop_signal")) {
		sig, ok := parseSignal(raw.StopSignal)
		if !ok {
			l.addf(key("stop_signal"), "%sstop_signal %q: want one of %s", prefix, raw.StopSignal, signalNames)
		}
		a.StopSignal = sig
	}
	l.placeholders(a)
	if a.UsesPort() && d.Listen == "" && d.Public.TLSListen == "" {
		// An outer proxy follows a swap through <app>/current.sock, which
		// a TCP app has none of: only deployer's own proxy moves its traffic.
		l.addf(table, `app %q listens on {port}, which only deployer's own proxy follows across swaps, and listen = "" turns that proxy off (nginx or HAProxy in front follow %s/current.sock in state_dir, which a TCP app does not have): use {socket}, or set listen and put the outer proxy in front of it`, name, name)
	}
	l.socketPaths(a, d.StateDir)
	return a
}

// defined reports whether key is set in the file.
func (l *loader) defined(key toml.Key) bool { return l.md.IsDefined(key...) }

// duration parses a duration key, or returns def when the key is absent.
// A value that is not a string was already reported by checkKeys.
func (l *loader) duration(key toml.Key, d duration, def time.Duration) time.Duration {
	if !l.defined(key) || l.md.Type(key...) != "String" {
		return def
	}
	got, err := time.ParseDuration(d.text)
	switch {
	case err != nil:
		l.addf(key, `%s = %q is not a duration: write e.g. "30s", "1m30s" or "500ms"`, key.String(), d.text)
		return def
	case got <= 0:
		l.addf(key, "%s = %q must be more than zero", key.String(), d.text)
		return def
	}
	return got
}

// hostProblem says what is wrong with a hosts entry, or "".
func hostProblem(h string) string {
	name := h
	switch {
	case h == "":
		return `must not be empty ("*" matches any host)`
	case h == "*":
		return ""
	case strings.HasPrefix(h, "*."):
		name = h[2:]
	}
	if strings.Contains(name, "*") {
		return `the only wildcards are "*" alone and a leading "*." as in "*.example.com"`
	}
	if strings.HasPrefix(name, "[") && strings.HasSuffix(name, "]") && net.ParseIP(name[1:len(name)-1]) != nil {
		return "" // an IPv6 literal, as it appears in a Host header
	}
	if strings.Contains(name, ":") {
		return "no port allowed: hosts match the Host header without its port"
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return "not a host name: empty label"
		}
		for _, r := range label {
			if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_') {
				return fmt.Sprintf("not a host name: %q is not allowed", r)
			}
		}
	}
	return ""
}

// stopSignals are the signals stop_signal may name, without "SIG".
var stopSignals = map[string]syscall.Signal{
	"TERM":  syscall.SIGTERM,
	"INT":   syscall.SIGINT,
	"QUIT":  syscall.SIGQUIT,
	"HUP":   syscall.SIGHUP,
	"USR1":  syscall.SIGUSR1,
	"USR2":  syscall.SIGUSR2,
	"KILL":  syscall.SIGKILL,
	"WINCH": syscall.SIGWINCH,
}

const signalNames = "SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL, SIGWINCH"

// parseSignal accepts "SIGTERM", "TERM", "sigterm", ... for the stopSignals.
func parseSignal(s string) (syscall.Signal, bool) {
	sig, ok := stopSignals[strings.TrimPrefix(strings.ToUpper(s), "SIG")]
	return sig, ok
}

// placeholderRE finds what looks like a placeholder: a lowercase name in
// braces. Upper-case names are not matched, so a shell's ${HOME} passes.
var placeholderRE = regexp.MustCompile(`\{[a-z][a-z0-9_]*\}`)

var knownPlaceholders = []string{"{app}", "{version}", "{socket}", "{port}", "{instance}"}

// placeholders reports unknown placeholders in command, dir and env, and an
// app that uses both {port} and {socket}.
func (l *loader) placeholders(a *AppConfig) {
	check := func(key toml.Key, s string) {
		for _, p := range placeholderRE.FindAllString(s, -1) {
			if !slices.Contains(knownPlaceholders, p) {
				l.addf(key, "%s: unknown placeholder %s in %q: want one of %s", key.String(), p, s, strings.Join(knownPlaceholders, " "))
			}
		}
	}
	for _, s := range a.Command {
		check(toml.Key{"apps", a.Name, "command"}, s)
	}
	check(toml.Key{"apps", a.Name, "dir"}, a.Dir)
	for _, k := range slices.Sorted(maps.Keys(a.Env)) {
		check(toml.Key{"apps", a.Name, "env", k}, a.Env[k])
	}
	for _, f := range a.EnvFiles {
		for _, p := range unknownEnvFilePlaceholders(f) {
			l.addf(toml.Key{"apps", a.Name, "env_file"}, "apps.%s.env_file: placeholder %s in %q: an env file's path may hold %s", a.Name, p, f, strings.Join(envFilePlaceholders, " "))
		}
	}
	usesSocket := slices.ContainsFunc(a.placeholderFields(), func(s string) bool {
		return strings.Contains(s, "{socket}")
	})
	if usesSocket && a.UsesPort() {
		l.addf(toml.Key{"apps", a.Name}, "app %q uses both {port} and {socket}: an app listens either on a TCP port or on a socket", a.Name)
	}
}

// socketPaths checks that every socket path of the app fits in sun_path
// (PITFALLS: 108 bytes with the NUL): the unique bind path of its configured
// version at its largest instance index, and its stable paths.
func (l *loader) socketPaths(a *AppConfig, stateDir string) {
	last := max(a.Instances, 1) - 1
	paths := []string{stableSocket(stateDir, a.Name, last)}
	if versionProblem(a.Version) == "" {
		paths = append(paths, uniqueSocket(stateDir, a.Name, a.Version, last))
	}
	longest := slices.MaxFunc(paths, func(x, y string) int { return cmp.Compare(len(x), len(y)) })
	if len(longest) > sockets.MaxPathLen {
		l.addf(toml.Key{"apps", a.Name}, "socket path %q of app %q is %d bytes (X stands for the random part), more than the %d a unix socket allows: use a shorter state_dir, app name or version",
			longest, a.Name, len(longest), sockets.MaxPathLen)
	}
}

// The socket layout, mirroring sockets.Layout (ControlSocket, Stable,
// UniqueLen) so that validation does not depend on it; keep them in step.
// The random part of a unique name is shown as X's.

func controlSocket(stateDir string) string { return filepath.Join(stateDir, "deployer.sock") }

func stableSocket(stateDir, app string, instance int) string {
	if instance == 0 {
		return filepath.Join(stateDir, app, "current.sock")
	}
	return filepath.Join(stateDir, app, fmt.Sprintf("current-%d.sock", instance))
}

func uniqueSocket(stateDir, app, version string, instance int) string {
	name := fmt.Sprintf("%s-%d-%s.sock", version, instance, strings.Repeat("X", sockets.UniqueSuffixLen))
	return filepath.Join(stateDir, app, name)
}

// routes reports two routes with the same host pattern and path prefix,
// which the proxy refuses (proxy.ErrDuplicateRoute): between two apps it
// could not tell which one a request is for, and one app listing a host
// twice is a slip. Hosts compare case-insensitively and paths cleaned, as
// the proxy compares them ("/api/" and "/api//" are both "/api"). order is
// the apps in file order, so the conflict is reported at the later one.
func (l *loader) routes(cfg *Config, order []string) {
	type route struct{ host, path string }
	owner := make(map[route]string)
	for _, name := range order {
		a := cfg.Apps[name]
		for _, h := range a.Hosts {
			r := route{strings.ToLower(h), path.Clean(a.Path)}
			switch first, ok := owner[r]; {
			case ok && first == name:
				key := toml.Key{"apps", name, "hosts"}
				l.addf(key, "%s lists host %q twice", key.String(), h)
				continue
			case ok:
				l.addf(toml.Key{"apps", name}, "apps %q and %q both serve host %q path %q", first, name, h, a.Path)
				continue
			}
			owner[r] = name
		}
	}
}

// routesTable validates [routes] (routes from Redis, redisroutes.go) and
// fills in its defaults.
func (l *loader) routesTable(raw rawRoutes) RoutesConfig {
	var r RoutesConfig // zero without Redis
	key := func(k string) toml.Key { return toml.Key{"routes", k} }
	if l.defined(key("redis")) && raw.Redis != "" {
		r = RoutesConfig{Redis: raw.Redis, Resync: DefaultRoutesResync, HealthInterval: DefaultRoutesHealthInterval}
		if problem := redisURLProblem(r.Redis); problem != "" {
			l.addf(key("redis"), "routes.redis %q: %s", r.Redis, problem)
		}
	}
	r.KeyspaceEvents = raw.KeyspaceEvents
	r.Resync = l.duration(key("resync"), raw.Resync, r.Resync)
	r.HealthInterval = l.duration(key("health_interval"), raw.HealthInterval, r.HealthInterval)
	return r
}

// envFiles reads the app's env files as its first process of the configured
// version would (CheckConfig): a missing file or a bad line is reported at
// env_file's line, with the env file's own line.
func (l *loader) envFiles(a *AppConfig, dir string) {
	for _, f := range a.EnvFiles {
		if f == "" || len(unknownEnvFilePlaceholders(f)) > 0 {
			continue // reported by app and placeholders
		}
		v := Vars{App: a.Name, Version: a.Version}
		if _, err := envFromFiles([]string{f}, v, dir); err != nil {
			l.addf(toml.Key{"apps", a.Name, "env_file"}, "apps.%s.env_file: %v", a.Name, err)
		}
	}
}

// validHostPort reports whether addr is host:port with a port that a
// listener can take: a number from 0 to 65535, or a service name.
func validHostPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return false
	}
	if _, err := strconv.ParseUint(port, 10, 16); err == nil {
		return true
	} else if port[0] >= '0' && port[0] <= '9' {
		return false // a number out of range
	}
	_, err = net.LookupPort("tcp", port)
	return err == nil
}

// distinctAddrs refuses two of listen, tls_listen and metrics on the same
// port of overlapping hosts: the daemon could not listen on both, and would
// fail at start where check said the file was fine.
func (l *loader) distinctAddrs(d DeployerConfig) {
	addrs := []struct{ key, addr string }{
		{"listen", d.Listen}, {"tls_listen", d.Public.TLSListen}, {"metrics", d.Public.Metrics},
	}
	for i, a := range addrs {
		for _, b := range addrs[:i] {
			if sameListenAddr(a.addr, b.addr) {
				l.addf(toml.Key{"deployer", a.key}, "deployer.%s %q: the same port as deployer.%s %q; each needs an address of its own",
					a.key, a.addr, b.key, b.addr)
				break
			}
		}
	}
}

// sameListenAddr reports whether listeners on a and b would conflict: the
// same port (not 0: any free one) on the same host, or on every address
// ("", 0.0.0.0, ::) and any host.
func sameListenAddr(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || ap != bp || ap == "0" {
		return false
	}
	everywhere := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return everywhere(ah) || everywhere(bh) || normalHost(ah) == normalHost(bh)
}
