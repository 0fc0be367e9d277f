package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/deployer/deployer/sockets"
)

// FuzzLoadConfig feeds arbitrary bytes to LoadConfig as a deploy.toml and
// checks what its doc comment promises, not only that it does not panic:
//
//   - an error is errors.Join of *ConfigError values, each matching
//     ErrConfig, naming the file as given and a line within the input;
//   - a Config it returns holds its invariants (checkLoadedConfig), and its
//     routes are ones the proxy accepts (routesOf), so `deployer check`
//     never passes a file the daemon then refuses;
//   - PeekConfig reads any file LoadConfig accepts, with the same state
//     directory and apps;
//   - loading the same bytes again gives the same result.
//
// Seeds: testdata/fuzz/FuzzLoadConfig (the repository's deploy.toml files
// and tricky inputs) and the f.Add calls below. CI runs it for 30s:
// .ci/fuzz.
func FuzzLoadConfig(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("[apps.web]\ncommand = [\"./web\", \"{socket}\"]\nversion = \"v1\"\n"))
	f.Add([]byte("[deployer]\ndrain_timeout = 5\n[apps.web]\ncommand = [\"w\"]\nversion = \"v1\"\n"))
	f.Add([]byte("[apps.a]\ncommand=[\"a\"]\nversion=\"1\"\nhosts=[\"x.com\"]\npath=\"/api/\"\n" +
		"[apps.b]\ncommand=[\"b\"]\nversion=\"1\"\nhosts=[\"X.com\"]\npath=\"/api\"\n"))
	f.Add([]byte("[apps.web]\nCommand = [\"w\"]\nversion = \"v1\"\n[[apps.web.x]]\ny = 1\n"))

	// One file per process, rewritten by each input: a fuzzing worker runs
	// its inputs one at a time, and a fresh directory per input would cost
	// more than the load.
	file := filepath.Join(f.TempDir(), "deploy.toml")
	f.Fuzz(func(t *testing.T, src []byte) {
		if err := os.WriteFile(file, src, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(file)
		if err != nil {
			checkConfigError(t, file, src, err)
		} else {
			checkLoadedConfig(t, file, cfg)
			peek, err := PeekConfig(file)
			if err != nil {
				t.Fatalf("LoadConfig accepts the file, PeekConfig fails: %v", err)
			}
			if peek.Deployer.StateDir != cfg.Deployer.StateDir {
				t.Errorf("PeekConfig state dir %q, LoadConfig %q", peek.Deployer.StateDir, cfg.Deployer.StateDir)
			}
			if !slices.Equal(peek.AppNames(), cfg.AppNames()) {
				t.Errorf("PeekConfig apps %q, LoadConfig %q", peek.AppNames(), cfg.AppNames())
			}
		}

		cfg2, err2 := LoadConfig(file)
		if fmt.Sprint(err) != fmt.Sprint(err2) {
			t.Fatalf("not deterministic: first error\n%v\nsecond error\n%v", err, err2)
		}
		if !reflect.DeepEqual(cfg, cfg2) {
			t.Fatalf("not deterministic: first config\n%+v\nsecond config\n%+v", cfg, cfg2)
		}
	})
}

// checkConfigError checks an error LoadConfig returned for src, written to file.
func checkConfigError(t *testing.T, file string, src []byte, err error) {
	t.Helper()
	var pe *fs.PathError
	if errors.As(err, &pe) && !errors.Is(err, ErrConfig) {
		return // I/O, not the contents: nothing more to check
	}
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("error does not match ErrConfig: %v", err)
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("got %T (%v), want ConfigErrors joined with errors.Join", err, err)
	}
	// The lexer may stand just past a final newline: allow one line more
	// than the newlines count.
	lines := 1 + strings.Count(string(src), "\n")
	prev := 0
	for _, e := range joined.Unwrap() {
		ce, ok := e.(*ConfigError)
		if !ok {
			t.Fatalf("got %T (%v) in the joined error, want *ConfigError", e, e)
		}
		if ce.File != file {
			t.Errorf("ConfigError.File = %q, want %q: %v", ce.File, file, ce)
		}
		if ce.Line < 0 || ce.Line > lines {
			t.Errorf("ConfigError.Line = %d, input has %d lines: %v", ce.Line, lines, ce)
		}
		if ce.Msg == "" {
			t.Errorf("ConfigError with no message at line %d", ce.Line)
		}
		// Sorted by line, those without one last.
		if sortLine(ce.Line) < prev {
			t.Errorf("ConfigErrors not sorted by line: %v", err)
		}
		prev = sortLine(ce.Line)
	}
}

// checkLoadedConfig checks the invariants of a Config LoadConfig returned
// for file.
func checkLoadedConfig(t *testing.T, file string, cfg *Config) {
	t.Helper()
	if cfg.Path != file || cfg.Dir != filepath.Dir(file) {
		t.Errorf("Path, Dir = %q, %q; want %q, %q", cfg.Path, cfg.Dir, file, filepath.Dir(file))
	}
	d := cfg.Deployer
	if !filepath.IsAbs(d.StateDir) || filepath.Clean(d.StateDir) != d.StateDir {
		t.Errorf("state dir %q is not absolute and clean", d.StateDir)
	}
	if d.PIDFile != "" && !filepath.IsAbs(d.PIDFile) {
		t.Errorf("pid file %q is not absolute", d.PIDFile)
	}
	if d.Listen != "" {
		if _, _, err := net.SplitHostPort(d.Listen); err != nil {
			t.Errorf("listen %q: %v", d.Listen, err)
		}
	}
	if d.QueueTimeout <= 0 || d.DrainTimeout <= 0 || d.MaxQueued < 1 {
		t.Errorf("deployer queue_timeout %v, drain_timeout %v, max_queued %d: want all positive", d.QueueTimeout, d.DrainTimeout, d.MaxQueued)
	}
	layout := sockets.Layout{StateDir: d.StateDir}
	if err := sockets.CheckPath(layout.ControlSocket()); err != nil {
		t.Error(err)
	}
	if r := cfg.Routes; r.Resync < 0 || r.HealthInterval < 0 || r.Redis != "" && (r.Resync == 0 || r.HealthInterval == 0) {
		t.Errorf("routes resync %v, health_interval %v (redis %q)", r.Resync, r.HealthInterval, r.Redis)
	}
	if len(cfg.Apps) == 0 && cfg.Routes.Redis == "" {
		t.Error("no apps and no Redis routes")
	}

	type route struct{ host, path string }
	routes := make(map[route]string)
	for _, name := range cfg.AppNames() {
		a := cfg.Apps[name]
		if a.Name != name || !appNameRE.MatchString(name) {
			t.Errorf("app %q has name %q", name, a.Name)
		}
		if len(a.Command) == 0 || a.Command[0] == "" {
			t.Errorf("app %q: command %q", name, a.Command)
		}
		if err := ValidVersion(a.Version); err != nil {
			t.Errorf("app %q: %v", name, err)
		}
		if a.Dir == "" {
			t.Errorf("app %q: empty dir", name)
		}
		if a.Instances < 1 || a.Instances > MaxInstances {
			t.Errorf("app %q: %d instances", name, a.Instances)
		}
		if a.Rise < 1 || a.Fall < 1 {
			t.Errorf("app %q: rise %d, fall %d", name, a.Rise, a.Fall)
		}
		if a.StopSignal == 0 {
			t.Errorf("app %q: no stop signal", name)
		}
		if !strings.HasPrefix(a.Path, "/") {
			t.Errorf("app %q: path %q", name, a.Path)
		}
		if a.Health != "" && !strings.HasPrefix(a.Health, "/") {
			t.Errorf("app %q: health %q", name, a.Health)
		}
		// Settle alone may be 0 ("0s": move traffic at the first pass).
		for _, dur := range []struct {
			key string
			v   time.Duration
			ok  bool
		}{
			{"ready_timeout", a.ReadyTimeout, a.ReadyTimeout > 0},
			{"settle", a.Settle, a.Settle >= 0 && a.Settle < a.ReadyTimeout},
			{"health_interval", a.HealthInterval, a.HealthInterval > 0},
			{"health_timeout", a.HealthTimeout, a.HealthTimeout > 0},
			{"drain_timeout", a.DrainTimeout, a.DrainTimeout > 0},
			{"stop_timeout", a.StopTimeout, a.StopTimeout > 0},
		} {
			if !dur.ok {
				t.Errorf("app %q: %s = %v", name, dur.key, dur.v)
			}
		}
		if a.UsesPort() && d.Listen == "" && d.Public.TLSListen == "" {
			t.Errorf("app %q listens on {port} with no built-in proxy", name)
		}
		if a.UsesPort() && slices.ContainsFunc(a.placeholderFields(), func(s string) bool { return strings.Contains(s, "{socket}") }) {
			t.Errorf("app %q uses both {port} and {socket}", name)
		}
		// Every path the app's sockets get, by the sockets package itself.
		for i := range a.Instances {
			if err := sockets.CheckPath(layout.Stable(name, i)); err != nil {
				t.Errorf("app %q: %v", name, err)
			}
			if n := layout.UniqueLen(name, a.Version, i); n > sockets.MaxPathLen {
				t.Errorf("app %q: unique socket path of instance %d is %d bytes", name, i, n)
			}
		}
		if len(a.Hosts) == 0 {
			t.Errorf("app %q: no hosts", name)
		}
		// The proxy compares hosts case-insensitively and paths cleaned.
		for _, h := range a.Hosts {
			r := route{strings.ToLower(h), path.Clean(a.Path)}
			if other, dup := routes[r]; dup {
				t.Errorf("apps %q and %q both serve host %q path %q", other, name, r.host, r.path)
			}
			routes[r] = name
		}
	}
	if _, err := routesOf(cfg); err != nil {
		t.Errorf("LoadConfig accepts routes the proxy refuses: %v", err)
	}
}

// Found by FuzzLoadConfig (testdata/fuzz/FuzzLoadConfig/714d080a6735bfe3):
// the implicit table "apps" is no key of MetaData.Keys, so locating its case
// variant "appS" used to give line 1 or 0 depending on map order.
func TestKeyLocatorImplicitCaseVariant(t *testing.T) {
	src := "[appS]\n[apps.web]\nA = \"B\"\n"
	var tree map[string]any
	md, err := toml.Decode(src, &tree)
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		l := keyLocator{src: src, keys: md.Keys()}
		if got := l.line(toml.Key{"appS"}); got != 1 {
			t.Fatalf(`line of "appS" = %d, want 1`, got)
		}
	}
}

// Found by FuzzLoadConfig's routesOf check (seed route-conflicts): routes
// the proxy counts as duplicates must fail LoadConfig, not daemon start.
func TestConfigRoutesDuplicatesAsProxy(t *testing.T) {
	for _, tt := range []struct{ apps, msg string }{
		{"[apps.a]\ncommand = [\"a\"]\nversion = \"v1\"\nhosts = [\"x.com\", \"X.com\"]\n", `apps.a.hosts lists host "X.com" twice`},
		{"[apps.a]\ncommand = [\"a\"]\nversion = \"v1\"\npath = \"/api/\"\n" +
			"[apps.b]\ncommand = [\"b\"]\nversion = \"v1\"\npath = \"/x/../api//\"\n", `apps "a" and "b" both serve host "*" path "/x/../api//"`},
	} {
		_, err := LoadConfig(writeConfig(t, tt.apps))
		if ces := configErrors(t, err); len(ces) != 1 || !strings.Contains(ces[0].Msg, tt.msg) {
			t.Errorf("got %v, want %s", err, tt.msg)
		}
	}
}
