package supervisor

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeConfig writes src as deploy.toml in a fresh directory and returns its path.
func writeConfig(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "deploy.toml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// loadString writes src and loads it, failing the test on an error.
func loadString(t *testing.T, src string) *Config {
	t.Helper()
	cfg, err := LoadConfig(writeConfig(t, src))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	return cfg
}

// configErrors returns the ConfigErrors joined in err, checking that err
// matches ErrConfig and holds nothing else.
func configErrors(t *testing.T, err error) []*ConfigError {
	t.Helper()
	if err == nil {
		t.Fatal("LoadConfig: got no error, want one")
	}
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("errors.Is(%v, ErrConfig) = false, want true", err)
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("got %T, want errors joined with errors.Join", err)
	}
	var ces []*ConfigError
	for _, e := range joined.Unwrap() {
		var ce *ConfigError
		if !errors.As(e, &ce) {
			t.Fatalf("got %T (%v), want *ConfigError", e, e)
		}
		ces = append(ces, ce)
	}
	return ces
}

const app = `
[apps.web]
command = ["./web", "{socket}"]
version = "v1"
`

func TestLoadConfigFull(t *testing.T) {
	path := filepath.Join("testdata", "config", "full.toml")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		src:  src,
		Path: abs,
		Dir:  filepath.Dir(abs),
		Deployer: DeployerConfig{
			Listen:       "0.0.0.0:9090",
			StateDir:     "/var/run/deployer",
			QueueTimeout: 45 * time.Second,
			MaxQueued:    500,
			DrainTimeout: time.Minute,
			Procs:        ProcsAuto,
			Public: PublicConfig{
				ReadHeaderTimeout: DefaultReadHeaderTimeout,
				IdleTimeout:       DefaultIdleTimeout,
				MaxHeaderBytes:    DefaultMaxHeaderBytes,
			},
		},
		Apps: map[string]*AppConfig{
			"web": {
				Name:           "web",
				Command:        []string{"./bin/web", "-socket", "{socket}", "-version", "{version}"},
				Version:        "v42",
				Dir:            "releases/{version}",
				Env:            map[string]string{"GREETING": "hi", "INSTANCE": "{instance}"},
				Hosts:          []string{"example.com", "*.example.com"},
				Path:           "/",
				Health:         "/up",
				Instances:      3,
				ReadyTimeout:   20 * time.Second,
				Settle:         DefaultSettle,
				HealthInterval: 5 * time.Second,
				HealthTimeout:  time.Second,
				Rise:           4,
				Fall:           6,
				DrainTimeout:   2 * time.Minute,
				StopSignal:     syscall.SIGQUIT,
				StopTimeout:    5 * time.Second,
			},
			"api": {
				Name:           "api",
				Command:        []string{"python3", "-m", "http.server", "{port}"},
				Version:        "2024.06.01+build.7",
				Dir:            ".",
				Env:            map[string]string{},
				Hosts:          []string{"API.example.com"},
				Path:           "/api/",
				StripPath:      true,
				Health:         "",
				Instances:      1,
				ReadyTimeout:   DefaultReadyTimeout,
				Settle:         DefaultSettle,
				HealthInterval: DefaultHealthInterval,
				HealthTimeout:  DefaultHealthTimeout,
				Rise:           DefaultRise,
				Fall:           DefaultFall,
				DrainTimeout:   time.Minute,
				StopSignal:     syscall.SIGINT,
				StopTimeout:    DefaultStopTimeout,
			},
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got\n%+v\nwant\n%+v", cfg, want)
		for name := range want.Apps {
			t.Errorf("app %s: got %+v, want %+v", name, cfg.Apps[name], want.Apps[name])
		}
	}
	if got, want := cfg.AppNames(), []string{"api", "web"}; !slices.Equal(got, want) {
		t.Errorf("AppNames: got %q, want %q", got, want)
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	path := filepath.Join("testdata", "config", "minimal.toml")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	wantDeployer := DeployerConfig{
		Listen:       DefaultListen,
		StateDir:     filepath.Join(dir, DefaultStateDir),
		QueueTimeout: DefaultQueueTimeout,
		MaxQueued:    DefaultMaxQueued,
		DrainTimeout: DefaultDrainTimeout,
		Procs:        ProcsAuto,
		Public: PublicConfig{
			ReadHeaderTimeout: DefaultReadHeaderTimeout,
			IdleTimeout:       DefaultIdleTimeout,
			MaxHeaderBytes:    DefaultMaxHeaderBytes,
		},
	}
	if !reflect.DeepEqual(cfg.Deployer, wantDeployer) {
		t.Errorf("deployer: got %+v, want %+v", cfg.Deployer, wantDeployer)
	}
	wantApp := &AppConfig{
		Name:           "hello",
		Command:        []string{"./hello", "-socket", "{socket}"},
		Version:        "v1",
		Dir:            ".",
		Env:            map[string]string{},
		Hosts:          []string{"*"},
		Path:           "/",
		Health:         DefaultHealth,
		Instances:      1,
		ReadyTimeout:   DefaultReadyTimeout,
		Settle:         DefaultSettle,
		HealthInterval: DefaultHealthInterval,
		HealthTimeout:  DefaultHealthTimeout,
		Rise:           DefaultRise,
		Fall:           DefaultFall,
		DrainTimeout:   DefaultDrainTimeout,
		StopSignal:     syscall.SIGTERM,
		StopTimeout:    DefaultStopTimeout,
	}
	if got := cfg.Apps["hello"]; !reflect.DeepEqual(got, wantApp) {
		t.Errorf("app: got %+v, want %+v", got, wantApp)
	}
}

func TestLoadConfigExplicitEmpty(t *testing.T) {
	cfg := loadString(t, `
[deployer]
listen = ""
drain_timeout = "7s"
[apps.web]
command = ["./web"]
version = "v1"
health = ""
`)
	if cfg.Deployer.Listen != "" {
		t.Errorf("listen: got %q, want %q", cfg.Deployer.Listen, "")
	}
	if got := cfg.Apps["web"].Health; got != "" {
		t.Errorf("health: got %q, want %q", got, "")
	}
	if got := cfg.Apps["web"].DrainTimeout; got != 7*time.Second {
		t.Errorf("app drain_timeout: got %v, want %v (the [deployer] default)", got, 7*time.Second)
	}
}

func TestLoadConfigStateDir(t *testing.T) {
	tests := []struct {
		stateDir string
		want     func(dir string) string
	}{
		{`"run"`, func(dir string) string { return filepath.Join(dir, "run") }},
		{`"./state/../run/"`, func(dir string) string { return filepath.Join(dir, "run") }},
		{`"../run"`, func(dir string) string { return filepath.Join(filepath.Dir(dir), "run") }},
		{`"/srv/run/"`, func(string) string { return "/srv/run" }},
	}
	for _, tt := range tests {
		t.Run(tt.stateDir, func(t *testing.T) {
			path := writeConfig(t, "[deployer]\nstate_dir = "+tt.stateDir+"\n"+app)
			cfg, err := LoadConfig(path)
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			dir := filepath.Dir(path)
			if cfg.Dir != dir {
				t.Errorf("Dir: got %q, want %q", cfg.Dir, dir)
			}
			if want := tt.want(dir); cfg.Deployer.StateDir != want {
				t.Errorf("StateDir: got %q, want %q", cfg.Deployer.StateDir, want)
			}
		})
	}
}

// TestLoadConfigRelativePath checks that errors name the file as given and
// that Config.Path is absolute anyway.
func TestLoadConfigRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("deploy.toml", []byte(app+"bogus = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig("deploy.toml")
	if want := `deploy.toml:5: unknown key "apps.web.bogus"`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	if err := os.WriteFile("deploy.toml", []byte(app), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig("deploy.toml")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if want := filepath.Join(dir, "deploy.toml"); cfg.Path != want {
		t.Errorf("Path: got %q, want %q", cfg.Path, want)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deploy.toml")
	_, err := LoadConfig(path)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want an error matching fs.ErrNotExist", err)
	}
	if errors.Is(err, ErrConfig) {
		t.Errorf("got %v matching ErrConfig, want it not to", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("got %q, want it to name %q", err, path)
	}
}

func TestConfigErrorFormat(t *testing.T) {
	tests := []struct {
		err  *ConfigError
		want string
	}{
		{&ConfigError{File: "deploy.toml", Line: 12, Msg: "bad"}, "deploy.toml:12: bad"},
		{&ConfigError{File: "/etc/deploy.toml", Msg: "no apps defined"}, "/etc/deploy.toml: no apps defined"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
		if !errors.Is(tt.err, ErrConfig) {
			t.Errorf("errors.Is(%q, ErrConfig) = false, want true", tt.err)
		}
	}
}

func TestExpand(t *testing.T) {
	v := Vars{App: "web", Version: "v2", Socket: "/run/web/v2-1-abcdefgh.sock", Port: 41234, Instance: 1}
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"plain", "plain"},
		{"{app}/{version}", "web/v2"},
		{"-socket={socket}", "-socket=/run/web/v2-1-abcdefgh.sock"},
		{":{port}", ":41234"},
		{"{instance}{instance}", "11"},
		{"{other} {APP} ${HOME} {", "{other} {APP} ${HOME} {"},
	}
	for _, tt := range tests {
		if got := Expand(tt.in, v); got != tt.want {
			t.Errorf("Expand(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
	// One pass: a value holding a placeholder is not expanded again.
	if got, want := Expand("{app}", Vars{App: "{version}", Version: "v1"}), "{version}"; got != want {
		t.Errorf("Expand twice: got %q, want %q", got, want)
	}
}

func TestValidVersion(t *testing.T) {
	tests := []struct {
		v  string
		ok bool
	}{
		{"v1", true},
		{"1.2.3-rc.1+build_7", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{".", false},
		{"..", false},
		{"-v1", false},
		{"_v1", false},
		{"v/1", false},
		{"v 1", false},
		{"v1\n", false},
		{"vé", false},
	}
	for _, tt := range tests {
		err := ValidVersion(tt.v)
		if (err == nil) != tt.ok {
			t.Errorf("ValidVersion(%q): got %v, want ok=%v", tt.v, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidVersion) {
			t.Errorf("ValidVersion(%q): got %v, want it to match ErrInvalidVersion", tt.v, err)
		}
	}
}

func TestUsesPort(t *testing.T) {
	tests := []struct {
		name string
		app  AppConfig
		want bool
	}{
		{"socket", AppConfig{Command: []string{"./web", "{socket}"}, Dir: "."}, false},
		{"command", AppConfig{Command: []string{"./web", "-addr=:{port}"}, Dir: "."}, true},
		{"dir", AppConfig{Command: []string{"./web"}, Dir: "tmp/{port}"}, true},
		{"env", AppConfig{Command: []string{"./web"}, Dir: ".", Env: map[string]string{"ADDR": ":{port}"}}, true},
		{"env key only", AppConfig{Command: []string{"./web"}, Dir: ".", Env: map[string]string{"{port}": "x"}}, false},
	}
	for _, tt := range tests {
		if got := tt.app.UsesPort(); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}
