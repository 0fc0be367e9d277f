package supervisor

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/deployer/deployer/sockets"
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
	want := &Config{
		Path: abs,
		Dir:  filepath.Dir(abs),
		Deployer: DeployerConfig{
			Listen:       "0.0.0.0:9090",
			StateDir:     "/var/run/deployer",
			QueueTimeout: 45 * time.Second,
			MaxQueued:    500,
			DrainTimeout: time.Minute,
		},
		Apps: map[string]*AppConfig{
			"web": {
				Name:         "web",
				Command:      []string{"./bin/web", "-socket", "{socket}", "-version", "{version}"},
				Version:      "v42",
				Dir:          "releases/{version}",
				Env:          map[string]string{"GREETING": "hi", "INSTANCE": "{instance}"},
				Hosts:        []string{"example.com", "*.example.com"},
				Path:         "/",
				Health:       "/up",
				Instances:    3,
				ReadyTimeout: 20 * time.Second,
				Settle:       DefaultSettle,
				DrainTimeout: 2 * time.Minute,
				StopSignal:   syscall.SIGQUIT,
				StopTimeout:  5 * time.Second,
			},
			"api": {
				Name:         "api",
				Command:      []string{"python3", "-m", "http.server", "{port}"},
				Version:      "2024.06.01+build.7",
				Dir:          ".",
				Env:          map[string]string{},
				Hosts:        []string{"API.example.com"},
				Path:         "/api/",
				StripPath:    true,
				Health:       "",
				Instances:    1,
				ReadyTimeout: DefaultReadyTimeout,
				Settle:       DefaultSettle,
				DrainTimeout: time.Minute,
				StopSignal:   syscall.SIGINT,
				StopTimeout:  DefaultStopTimeout,
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
	}
	if cfg.Deployer != wantDeployer {
		t.Errorf("deployer: got %+v, want %+v", cfg.Deployer, wantDeployer)
	}
	wantApp := &AppConfig{
		Name:         "hello",
		Command:      []string{"./hello", "-socket", "{socket}"},
		Version:      "v1",
		Dir:          ".",
		Env:          map[string]string{},
		Hosts:        []string{"*"},
		Path:         "/",
		Health:       DefaultHealth,
		Instances:    1,
		ReadyTimeout: DefaultReadyTimeout,
		Settle:       DefaultSettle,
		DrainTimeout: DefaultDrainTimeout,
		StopSignal:   syscall.SIGTERM,
		StopTimeout:  DefaultStopTimeout,
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

// problem is one expected ConfigError: its line and a part of its message.
type problem struct {
	line int
	msg  string
}

func TestLoadConfigErrors(t *testing.T) {
	long := "/tmp/" + strings.Repeat("x", 100)
	tests := []struct {
		name string
		src  string
		want []problem
	}{
		{"syntax", "[deployer]\nlisten = \n" + app, []problem{
			{2, "expected value"},
		}},
		{"unknown key", "[deployer]\nlisten = \"\"\nbogus = 1\n" + app, []problem{
			{3, `unknown key "deployer.bogus"`},
		}},
		{"unknown table", "[extra]\na = 1\nb = 2\n" + app, []problem{
			{1, `unknown key "extra"`},
		}},
		{"unknown app key", app + "comand = [\"x\"]\n", []problem{
			{5, `unknown key "apps.web.comand"`},
		}},
		{"case mismatch", "[apps.web]\ncommand = [\"./web\"]\nVersion = \"v1\"\n", []problem{
			{1, `app "web" has no version`},
			{3, `unknown key "apps.web.Version": did you mean "version"? Keys are case-sensitive`},
		}},
		{"case mismatch beside the right key", app + "VERSION = \"v2\"\n", []problem{
			{5, `unknown key "apps.web.VERSION": did you mean "version"?`},
		}},
		{"case mismatch table", "[Deployer]\nlisten = \"\"\n" + app, []problem{
			{1, `unknown key "Deployer": did you mean "deployer"?`},
		}},
		{"bare number duration", "[deployer]\ndrain_timeout = 5\n" + app, []problem{
			{2, `deployer.drain_timeout = 5: a duration is a string with a unit, write "5s"`},
		}},
		{"float duration", app + "stop_timeout = 1.5\n", []problem{
			{5, `apps.web.stop_timeout = 1.5: a duration is a string with a unit, write "1.5s"`},
		}},
		{"duration without unit", app + "ready_timeout = \"30\"\n", []problem{
			{5, `apps.web.ready_timeout = "30" is not a duration`},
		}},
		{"zero duration", "[deployer]\nqueue_timeout = \"0s\"\n" + app, []problem{
			{2, `deployer.queue_timeout = "0s" must be more than zero`},
		}},
		{"negative duration", app + "stop_timeout = \"-1s\"\n", []problem{
			{5, `apps.web.stop_timeout = "-1s" must be more than zero`},
		}},
		{"wrong type", app + "instances = \"2\"\n", []problem{
			{5, "apps.web.instances must be an integer, not a string"},
		}},
		{"wrong element type", "[apps.web]\ncommand = [\"./web\", 1]\nversion = \"v1\"\n", []problem{
			{2, "apps.web.command must be an array of strings, but element 1 is an integer"},
		}},
		{"env value not a string", app + "env = { N = 1 }\n", []problem{
			{5, "apps.web.env.N must be a string, not an integer"},
		}},
		{"array of tables", "[[apps.web]]\ncommand = [\"x\"]\nversion = \"v1\"\n", []problem{
			{1, "apps.web must be a table, not an array of tables"},
		}},
		{"missing command", "[apps.web]\nversion = \"v1\"\n", []problem{
			{1, `app "web" has no command`},
		}},
		{"empty command", "[apps.web]\nversion = \"v1\"\ncommand = []\n", []problem{
			{3, "apps.web.command must name a program"},
		}},
		{"missing version", "\n[apps.web]\ncommand = [\"./web\"]\n", []problem{
			{2, `app "web" has no version`},
		}},
		{"invalid version", "[apps.web]\ncommand = [\"./web\"]\nversion = \"../v1\"\n", []problem{
			{3, `apps.web.version "../v1": want 1 to 64 characters`},
		}},
		{"invalid app name", "[apps.Web]\ncommand = [\"./web\"]\nversion = \"v1\"\n", []problem{
			{1, `app name "Web": want 1 to 32 characters of a-z 0-9 _ -`},
		}},
		{"no apps", "[deployer]\nlisten = \"\"\n", []problem{
			{0, "no apps defined"},
		}},
		{"empty apps", "[apps]\n", []problem{
			{1, "no apps defined"},
		}},
		{"health without slash", app + "health = \"healthz\"\n", []problem{
			{5, `apps.web.health "healthz" must start with /`},
		}},
		{"path without slash", app + "path = \"api\"\n", []problem{
			{5, `apps.web.path "api" must start with /`},
		}},
		{"hosts", app + `hosts = ["", "a.*.com", "example.com:80", "*.", "*x.com", "a b"]` + "\n", []problem{
			{5, `hosts entry "": must not be empty`},
			{5, `hosts entry "a.*.com": the only wildcards are`},
			{5, `hosts entry "example.com:80": no port allowed`},
			{5, `hosts entry "*.": not a host name`},
			{5, `hosts entry "*x.com": the only wildcards are`},
			{5, `hosts entry "a b": not a host name: ' ' is not allowed`},
		}},
		{"no hosts", app + "hosts = []\n", []problem{
			{5, "apps.web.hosts must not be empty"},
		}},
		{"no instances", app + "instances = 0\n", []problem{
			{5, "apps.web.instances must be 1 to 64, not 0"},
		}},
		{"too many instances", app + "instances = 65\n", []problem{
			{5, "apps.web.instances must be 1 to 64, not 65"},
		}},
		{"max_queued", "[deployer]\nmax_queued = 0\n" + app, []problem{
			{2, "deployer.max_queued must be at least 1, not 0"},
		}},
		{"stop_signal", app + "stop_signal = \"SIGSTOP\"\n", []problem{
			{5, `apps.web.stop_signal "SIGSTOP": want one of SIGTERM`},
		}},
		{"unknown placeholder", app + "dir = \"releases/{ver}\"\nenv = { A = \"{app}-{nope}\", HOME = \"${HOME}\" }\n", []problem{
			{5, `apps.web.dir: unknown placeholder {ver}`},
			{6, `apps.web.env.A: unknown placeholder {nope}`},
		}},
		{"port and socket", "[apps.web]\ncommand = [\"./web\", \"{socket}\"]\nversion = \"v1\"\nenv = { PORT = \"{port}\" }\n", []problem{
			{1, `app "web" uses both {port} and {socket}`},
		}},
		{"bad listen", "[deployer]\nlisten = \"8080\"\n" + app, []problem{
			{2, `deployer.listen "8080": want host:port`},
		}},
		{"listen without port", "[deployer]\nlisten = \"localhost:\"\n" + app, []problem{
			{2, `deployer.listen "localhost:": want host:port`},
		}},
		{"empty state_dir", "[deployer]\nstate_dir = \"\"\n" + app, []problem{
			{2, "deployer.state_dir must not be empty"},
		}},
		{"long state_dir", "[deployer]\nstate_dir = \"" + long + "\"\n" + app, []problem{
			{2, `control socket path "` + long + `/deployer.sock" is 119 bytes, more than the 107 a unix socket allows: use a shorter state_dir`},
			{4, `socket path "` + long + `/web/v1-0-XXXXXXXX.sock" of app "web" is 128 bytes`},
		}},
		{"duplicate route", app + "\n[apps.www]\ncommand = [\"./www\"]\nversion = \"v1\"\nhosts = [\"a.com\", \"*\"]\n", []problem{
			{6, `apps "web" and "www" both serve host "*" path "/"`},
		}},
		{"duplicate route, case and slash", app + "hosts = [\"A.example.com\"]\npath = \"/api\"\n" +
			"[apps.api]\ncommand = [\"./api\"]\nversion = \"v1\"\nhosts = [\"a.EXAMPLE.com\"]\npath = \"/api/\"\n", []problem{
			{7, `apps "web" and "api" both serve host "a.EXAMPLE.com" path "/api/"`},
		}},
		{"multiple", `[deployer]
listen = "nope"
drain_timeout = 5

[apps.web]
command = []
version = "v 1"
Health = "/x"

[apps.api]
version = "v1"
path = "/api"
`, []problem{
			{2, `deployer.listen "nope"`},
			{3, `write "5s"`},
			{6, "apps.web.command must name a program"},
			{7, `apps.web.version "v 1"`},
			{8, `unknown key "apps.web.Health"`},
			{10, `app "api" has no command`},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.src)
			_, err := LoadConfig(path)
			got := configErrors(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(got), len(tt.want), err)
			}
			for i, w := range tt.want {
				if got[i].File != path {
					t.Errorf("problem %d: File: got %q, want %q", i, got[i].File, path)
				}
				if got[i].Line != w.line {
					t.Errorf("problem %d: got line %d, want %d: %s", i, got[i].Line, w.line, got[i].Msg)
				}
				if !strings.Contains(got[i].Msg, w.msg) {
					t.Errorf("problem %d: got %q, want it to contain %q", i, got[i].Msg, w.msg)
				}
			}
		})
	}
}

// TestSocketPathLimit checks the exact boundary: a unique path of 107 bytes
// fits, 108 does not.
func TestSocketPathLimit(t *testing.T) {
	// <state>/web/v1-0-XXXXXXXX.sock is the longest path: len(state) + 23.
	for _, n := range []int{sockets.MaxPathLen, sockets.MaxPathLen + 1} {
		state := "/" + strings.Repeat("s", n-23-1)
		src := "[deployer]\nstate_dir = \"" + state + "\"\n" + app
		_, err := LoadConfig(writeConfig(t, src))
		if n <= sockets.MaxPathLen && err != nil {
			t.Errorf("unique path of %d bytes: got %v, want no error", n, err)
		}
		if n > sockets.MaxPathLen && err == nil {
			t.Errorf("unique path of %d bytes: got no error, want one", n)
		}
	}
}

func TestSocketPathsMirrorLayout(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{controlSocket("/s"), "/s/deployer.sock"},
		{stableSocket("/s", "web", 0), "/s/web/current.sock"},
		{stableSocket("/s", "web", 12), "/s/web/current-12.sock"},
		{uniqueSocket("/s", "web", "v2", 3), "/s/web/v2-3-XXXXXXXX.sock"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
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

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal
		ok   bool
	}{
		{"SIGTERM", syscall.SIGTERM, true},
		{"term", syscall.SIGTERM, true},
		{"SigInt", syscall.SIGINT, true},
		{"QUIT", syscall.SIGQUIT, true},
		{"sighup", syscall.SIGHUP, true},
		{"USR1", syscall.SIGUSR1, true},
		{"SIGUSR2", syscall.SIGUSR2, true},
		{"KILL", syscall.SIGKILL, true},
		{"SIGWINCH", syscall.SIGWINCH, true},
		{"SIGSTOP", 0, false},
		{"15", 0, false},
		{"", 0, false},
		{"SIG", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseSignal(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseSignal(%q): got %v, %v, want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestSchemaMatchesRaw keeps the key lists that checkKeys enforces in step
// with the fields rawConfig decodes.
func TestSchemaMatchesRaw(t *testing.T) {
	tests := []struct {
		raw  any
		keys map[string]kind
	}{
		{rawDeployer{}, deployerKeys},
		{rawApp{}, appKeys},
	}
	for _, tt := range tests {
		typ := reflect.TypeOf(tt.raw)
		var tags []string
		for f := range typ.Fields() {
			tags = append(tags, f.Tag.Get("toml"))
		}
		slices.Sort(tags)
		keys := slices.Sorted(maps.Keys(tt.keys))
		if !slices.Equal(tags, keys) {
			t.Errorf("%s: got fields %q, want the schema's %q", typ, tags, keys)
		}
	}
}

func TestKeyLocator(t *testing.T) {
	src := `# comment
[deployer]
listen = ""

[apps.web]
command = [
  "a",
  "b",
]
notes = """
x = 1
"""
env = { A = "x" }
env.B = "y"
"quoted key" = 1
Version = "v0"
version = "v1"
VERSION = "v2"

[[arr]]
k = 1
`
	var tree map[string]any
	md, err := toml.Decode(src, &tree)
	if err != nil {
		t.Fatal(err)
	}
	l := keyLocator{src: src, keys: md.Keys()}
	tests := []struct {
		key  toml.Key
		want int
	}{
		{toml.Key{"deployer"}, 2},
		{toml.Key{"deployer", "listen"}, 3},
		{toml.Key{"apps"}, 0}, // implicit
		{toml.Key{"apps", "web"}, 5},
		{toml.Key{"apps", "web", "command"}, 6},
		{toml.Key{"apps", "web", "notes"}, 10},
		{toml.Key{"apps", "web", "env"}, 13},
		{toml.Key{"apps", "web", "env", "A"}, 13},
		{toml.Key{"apps", "web", "env", "B"}, 14},
		{toml.Key{"apps", "web", "quoted key"}, 15},
		{toml.Key{"apps", "web", "Version"}, 16},
		{toml.Key{"apps", "web", "version"}, 17},
		{toml.Key{"apps", "web", "VERSION"}, 18},
		{toml.Key{"apps", "web", "missing"}, 0},
		{toml.Key{"arr", "k"}, 0}, // inside an array of tables: ambiguous
	}
	for _, tt := range tests {
		// Twice: the second answer comes from the cache.
		for range 2 {
			if got := l.line(tt.key); got != tt.want {
				t.Errorf("line(%s): got %d, want %d", tt.key, got, tt.want)
			}
		}
	}
}
