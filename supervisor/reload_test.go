package supervisor

import (
	"errors"
	"os"
	"path/filepath"
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
		{"listen", strings.Replace(string(orig), "[deployer]", "[deployer]\nlisten = \"127.0.0.1:1\"", 1), "listen cannot change"},
	}
	// The public side of [deployer] stays as the daemon started with it:
	// each of these edits is refused (deployer upgrade applies them).
	for _, line := range []string{
		`trusted_proxies = ["10.0.0.0/8"]`,
		`read_header_timeout = "3s"`,
		`idle_timeout = "5s"`,
		`max_header_bytes = 4096`,
		`metrics = "127.0.0.1:19180"`,
		`control_users = ["root"]`,
	} {
		tests = append(tests, struct{ name, text, want string }{line,
			strings.Replace(string(orig), "[deployer]", "[deployer]\n"+line, 1), "control settings cannot change while the daemon runs"})
	}
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
