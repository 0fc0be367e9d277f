package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPendingChanges(t *testing.T) {
	base := &AppConfig{Command: []string{"./web"}, Env: map[string]string{"A": "1"}, Dir: ".", Instances: 1,
		StopSignal: 15, StopTimeout: time.Second, DrainTimeout: time.Second, Health: "/h", HealthInterval: time.Second}
	tests := []struct {
		name   string
		change func(a *AppConfig)
		want   []string
	}{
		{"nothing", func(a *AppConfig) {}, nil},
		{"health settings apply at once", func(a *AppConfig) { a.Health, a.HealthInterval, a.Rise = "/x", time.Minute, 5 }, nil},
		{"routes apply at once", func(a *AppConfig) { a.Hosts, a.Path = []string{"x.test"}, "/x" }, nil},
		{"command", func(a *AppConfig) { a.Command = []string{"./web", "-v"} }, []string{"command"}},
		{"env", func(a *AppConfig) { a.Env = map[string]string{"A": "2"} }, []string{"env"}},
		{"env_file", func(a *AppConfig) { a.EnvFiles = []string{"secrets.env"} }, []string{"env_file"}},
		{"dir and instances", func(a *AppConfig) { a.Dir, a.Instances = "releases", 3 }, []string{"dir", "instances"}},
		{"stop settings", func(a *AppConfig) { a.StopTimeout = time.Minute }, []string{"stop settings"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := *base
			now.Env = map[string]string{"A": "1"}
			tt.change(&now)
			if got := pendingChanges(base, &now); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRoutesOf(t *testing.T) {
	cfg := &Config{Path: "deploy.toml", Apps: map[string]*AppConfig{
		"web": {Name: "web", Hosts: []string{"a.test", "*.a.test"}, Path: "/"},
		"api": {Name: "api", Hosts: []string{"a.test"}, Path: "/api", StripPath: true},
	}}
	routes, err := routesOf(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 3 || routes[0].App != "api" || !routes[0].StripPath {
		t.Fatalf("routes = %+v", routes)
	}
	cfg.Apps["dup"] = &AppConfig{Name: "dup", Hosts: []string{"A.test"}, Path: "/api/"}
	if _, err := routesOf(cfg); !errors.Is(err, ErrConfig) {
		t.Fatalf("duplicate route: got %v, want an ErrConfig", err)
	}
}

// Reload keeps the running config when the file is invalid or changes what
// cannot change live, and says why in the status.
func TestReloadRejects(t *testing.T) {
	d := newTestDaemon(t)
	path := d.config().Path
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, text, want string }{
		{"unknown key", string(orig) + "colour = \"blue\"\n", filepath.Base(path) + ":"},
	}
	// What the daemon opened or connected to stays as it started with it:
	// each of these edits is refused, naming the key at its line (the one
	// after [deployer], or after [routes]).
	deployerLine := 1 + strings.Count(string(orig[:strings.Index(string(orig), "[deployer]")]), "\n")
	for _, tc := range []struct{ line, key, how string }{
		{`listen = "127.0.0.1:1"`, "deployer.listen", "deployer upgrade applies it"},
		{`pid_file = "deployer.pid"`, "deployer.pid_file", "deployer upgrade applies it"},
		{`trusted_proxies = ["10.0.0.0/8"]`, "deployer.trusted_proxies", "deployer upgrade applies it"},
		{`read_header_timeout = "3s"`, "deployer.read_header_timeout", "deployer upgrade applies it"},
		{`idle_timeout = "5s"`, "deployer.idle_timeout", "deployer upgrade applies it"},
		{`max_header_bytes = 4096`, "deployer.max_header_bytes", "deployer upgrade applies it"},
		{`metrics = "127.0.0.1:19180"`, "deployer.metrics", "deployer upgrade applies it"},
		{`control_users = ["root"]`, "deployer.control_users", "deployer upgrade applies it"},
		{`access_log = "stdout"`, "deployer.access_log", "deployer upgrade applies it"},
	} {
		tests = append(tests, struct{ name, text, want string }{tc.line,
			strings.Replace(string(orig), "[deployer]", "[deployer]\n"+tc.line, 1),
			fmt.Sprintf("%s:%d: %s cannot change while the daemon runs (%s)", filepath.Base(path), deployerLine+1, tc.key, tc.how)})
	}
	withRoutes := string(orig) + "\n[routes]\nredis = \"redis://127.0.0.1:1/0\"\n"
	tests = append(tests, struct{ name, text, want string }{"routes", withRoutes,
		fmt.Sprintf("%s:%d: routes.redis cannot change while the daemon runs (deployer upgrade applies it)",
			filepath.Base(path), strings.Count(withRoutes, "\n"))}) // its last line
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
				t.Fatal(err)
			}
			before := d.config()
			err := d.Reload()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Reload: got %v, want an error containing %q", err, tt.want)
			}
			if d.config() != before {
				t.Fatal("the running config changed")
			}
			d.mu.RLock()
			shown := d.reloadErr
			d.mu.RUnlock()
			if !strings.Contains(shown, tt.want) {
				t.Fatalf("status config error %q lacks %q", shown, tt.want)
			}
		})
	}
}

// Every setting of [deployer] and [routes] is either applied by a reload
// or refused by one (frozenKeys): a field added to DeployerConfig,
// PublicConfig or RoutesConfig must be put on one side.
func TestFrozenKeysCoverConfig(t *testing.T) {
	live := map[string]bool{ // applied by a reload
		"QueueTimeout": true, "MaxQueued": true, "DrainTimeout": true, "Procs": true, "MaxBody": true,
	}
	check := func(name string, set func(c *Config) reflect.Value) {
		var a, b Config
		v := set(&b)
		switch v.Kind() {
		case reflect.String:
			v.SetString("x")
		case reflect.Bool:
			v.SetBool(true)
		case reflect.Int, reflect.Int64:
			v.SetInt(1)
		case reflect.Slice:
			v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		default:
			t.Fatalf("%s: a field of kind %s: teach this test to set it", name, v.Kind())
		}
		frozen := slices.ContainsFunc(frozenKeys, func(f frozenKey) bool {
			return !reflect.DeepEqual(f.get(&a), f.get(&b))
		})
		if frozen == live[name] {
			t.Errorf("%s: refused by a reload %v, applied by it %v: it must be one of the two", name, frozen, live[name])
		}
	}
	for _, s := range []struct {
		typ reflect.Type
		get func(c *Config) reflect.Value
	}{
		{reflect.TypeFor[DeployerConfig](), func(c *Config) reflect.Value { return reflect.ValueOf(&c.Deployer).Elem() }},
		{reflect.TypeFor[PublicConfig](), func(c *Config) reflect.Value { return reflect.ValueOf(&c.Deployer.Public).Elem() }},
		{reflect.TypeFor[RoutesConfig](), func(c *Config) reflect.Value { return reflect.ValueOf(&c.Routes).Elem() }},
	} {
		for i := range s.typ.NumField() {
			f := s.typ.Field(i)
			if f.Name == "Public" {
				continue // its own fields, below
			}
			check(f.Name, func(c *Config) reflect.Value { return s.get(c).Field(i) })
		}
	}
}
