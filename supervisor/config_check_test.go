package supervisor

import (
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

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
		{"case twin with other values", "[deployer]\nlisten = \"91B\"\nListen = \"0\"\n" + app, []problem{
			// The one problem, not one about listen's value, which toml
			// may have taken from either key.
			{3, `unknown key "deployer.Listen": did you mean "listen"?`},
		}},
		{"case mismatch table", "[Deployer]\nlisten = \"\"\n" + app, []problem{
			{1, `unknown key "Deployer": did you mean "deployer"?`},
		}},
		{"env_file of the wrong type", app + "env_file = 3\n", []problem{
			{5, `apps.web.env_file must be a path or an array of paths, not an integer`},
		}},
		{"env_file array with a number", app + "env_file = [\"a.env\", 3]\n", []problem{
			{5, `apps.web.env_file must be a path or an array of paths, but element 1 is an integer`},
		}},
		{"env_file empty path", app + "env_file = [\"a.env\", \"\"]\n", []problem{
			{5, `apps.web.env_file must not name an empty path`},
		}},
		{"env_file with a per-process placeholder", app + "env_file = \"{socket}.env\"\n", []problem{
			{5, `apps.web.env_file: placeholder {socket} in "{socket}.env": an env file's path may hold {app} {version} {instance}`},
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
		{"path with a fragment", app + "path = \"/api#x\"\n", []problem{
			{5, `apps.web.path "/api#x" has a query or fragment`},
		}},
		{"path with a query", app + "path = \"/api?v=1\"\n", []problem{
			{5, `apps.web.path "/api?v=1" has a query or fragment`},
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
		{"rise and fall", app + "rise = 0\nfall = 101\n", []problem{
			{5, "apps.web.rise must be 1 to 100 (health checks in a row), not 0"},
			{6, "apps.web.fall must be 1 to 100 (health checks in a row), not 101"},
		}},
		{"bare health_interval", app + "health_interval = 2\n", []problem{
			{5, `write "2s"`},
		}},
		{"max_queued", "[deployer]\nmax_queued = 0\n" + app, []problem{
			{2, "deployer.max_queued must be at least 1, not 0"},
		}},
		{"procs", "[deployer]\nprocs = -1\n" + app, []problem{
			{2, `deployer.procs must be "auto" or a number of threads from 0 (every CPU) to 1024, not -1`},
		}},
		{"procs too many", "[deployer]\nprocs = 4096\n" + app, []problem{
			{2, `deployer.procs must be "auto" or a number of threads from 0 (every CPU) to 1024, not 4096`},
		}},
		{"procs word", "[deployer]\nprocs = \"half\"\n" + app, []problem{
			{2, `deployer.procs must be "auto" or a number of threads from 0 (every CPU) to 1024, not "half"`},
		}},
		{"procs type", "[deployer]\nprocs = 1.5\n" + app, []problem{
			{2, `deployer.procs must be "auto" or a number of threads, not`},
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
		{"port without a proxy", "[deployer]\nlisten = \"\"\n\n[apps.web]\ncommand = [\"./web\", \"--port={port}\"]\nversion = \"v1\"\n", []problem{
			{4, `app "web" listens on {port}, which only deployer's own proxy follows across swaps, and listen = "" turns that proxy off`},
		}},
		{"bad listen", "[deployer]\nlisten = \"8080\"\n" + app, []problem{
			{2, `deployer.listen "8080": want host:port`},
		}},
		{"listen without port", "[deployer]\nlisten = \"localhost:\"\n" + app, []problem{
			{2, `deployer.listen "localhost:": want host:port`},
		}},
		{"env names", app + "env = { \"A=B\" = \"1\", \"\" = \"2\", OK = \"x\\u0000y\" }\n", []problem{
			{5, `apps.web.env: "" is not a variable name`},
			{5, `apps.web.env: "A=B" is not a variable name`},
			{5, `apps.web.env.OK: the value holds a NUL byte`},
		}},
		{"listen port out of range", "[deployer]\nlisten = \"127.0.0.1:99999\"\n" + app, []problem{
			{2, `deployer.listen "127.0.0.1:99999": want host:port`},
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

// PeekConfig reads keys as LoadConfig does, by exact spelling: beside a
// misspelled twin, state_dir is the one used, every time.
func TestPeekConfigExactKeys(t *testing.T) {
	path := writeConfig(t, "[deployer]\nState_dir = \"/tmp/other\"\nstate_dir = \"/tmp/right\"\n[apps.web]\ncommand = [\"w\"]\n[apps.api]\nVersion = 1\n")
	for range 20 {
		cfg, err := PeekConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Deployer.StateDir != "/tmp/right" || !slices.Equal(cfg.AppNames(), []string{"api", "web"}) {
			t.Fatalf("state dir %q, apps %v; want /tmp/right and [api web]", cfg.Deployer.StateDir, cfg.AppNames())
		}
	}
	only := writeConfig(t, "[deployer]\nState_dir = \"/tmp/other\"\n[apps.web]\n")
	want := filepath.Join(filepath.Dir(only), DefaultStateDir)
	if cfg, err := PeekConfig(only); err != nil || cfg.Deployer.StateDir != want {
		t.Fatalf("a misspelled state_dir alone: %v, state dir %q, want the default %q", err, cfg.Deployer.StateDir, want)
	}
}
