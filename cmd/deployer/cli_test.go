package main

import (
	"flag"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/deployer/deployer/supervisor"
)

func TestPermute(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{nil, []string{"--"}},
		{[]string{"web", "v2"}, []string{"--", "web", "v2"}},
		{[]string{"web", "v2", "--json"}, []string{"--json", "--", "web", "v2"}},
		{[]string{"--json", "web", "v2"}, []string{"--json", "--", "web", "v2"}},
		{[]string{"web", "-n", "5", "-f"}, []string{"-n", "5", "-f", "--", "web"}},
		{[]string{"web", "-n=5"}, []string{"-n=5", "--", "web"}},
		{[]string{"-c", "x.toml", "web"}, []string{"-c", "x.toml", "--", "web"}},
		{[]string{"web", "--config", "x.toml"}, []string{"--config", "x.toml", "--", "web"}},
		{[]string{"web", "--", "-v2"}, []string{"--", "web", "-v2"}},
		{[]string{"-", "web"}, []string{"--", "-", "web"}},
		{[]string{"web", "--bogus", "v2"}, []string{"--bogus", "--", "web", "v2"}},
		{[]string{"web", "-n"}, []string{"-n"}},
		{[]string{"-n"}, []string{"-n"}},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.Bool("json", false, "")
		fs.Bool("f", false, "")
		fs.Int("n", 0, "")
		configFlags(fs, new(string))
		if got := permute(fs, tt.args); !slices.Equal(got, tt.want) {
			t.Errorf("permute(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}

// TestUsageErrors checks that bad usage, found by parsing or against
// deploy.toml, prints one line naming the problem and the usage, and exits
// 2 without asking any daemon.
func TestUsageErrors(t *testing.T) {
	_, one := writeConfig(t, "web")
	_, two := writeConfig(t, "web", "api")
	tests := []struct {
		name      string
		args      []string
		wantMsg   string
		wantUsage string
	}{
		{"no command", nil, "deployer: no command given", "usage: deployer [-c PATH] COMMAND"},
		{"unknown command", []string{"deploy"}, `deployer: unknown command "deploy"`, "usage: deployer [-c PATH] COMMAND"},
		{"unknown global flag", []string{"--verbose", "status"}, "deployer: flag provided but not defined: -verbose", "usage: deployer [-c PATH] COMMAND"},
		{"upgrade takes no argument", []string{"upgrade", "-c", one, "now"}, `deployer upgrade: unexpected argument "now"`, "usage: deployer upgrade"},
		{"unknown flag", []string{"swap", "-c", one, "v2", "--now"}, "deployer swap: flag provided but not defined: -now", "usage: deployer swap [APP] VERSION [--wait-drain] [--timeout DURATION] [--json]"},
		{"missing version", []string{"swap", "-c", one}, "deployer swap: missing VERSION", "usage: deployer swap [APP] VERSION"},
		{"too many", []string{"swap", "-c", one, "web", "v2", "v3"}, `deployer swap: unexpected argument "v3"`, "usage: deployer swap [APP] VERSION"},
		{"too many for status", []string{"status", "web", "api"}, `deployer status: unexpected argument "api"`, "usage: deployer status [APP] [--json]"},
		{"shutdown takes none", []string{"shutdown", "web"}, `deployer shutdown: unexpected argument "web"`, "usage: deployer shutdown"},
		{"flag value missing", []string{"logs", "web", "-n"}, "deployer logs: flag needs an argument: -n", "usage: deployer logs [APP] [-f] [-n N]"},
		{"flag value bad", []string{"logs", "-n", "many"}, `deployer logs: invalid value "many" for flag -n`, "usage: deployer logs"},
		{"negative lines", []string{"logs", "-c", one, "-n", "-3"}, "deployer logs: -n must be 0 or more, not -3", "usage: deployer logs"},
		{"json where none", []string{"help", "--json"}, "deployer help: flag provided but not defined: -json", "usage: deployer help [COMMAND]"},
		{"APP left out of two", []string{"swap", "-c", two, "v2"}, "deployer swap: APP is required: " + two + " defines several apps: api, web", "usage: deployer swap"},
		{"APP left out of two, pause", []string{"pause", "-c", two}, "deployer pause: APP is required: " + two + " defines several apps: api, web", "usage: deployer pause [APP] [--json]"},
		{"unknown app", []string{"rollback", "-c", two, "wbe"}, `deployer rollback: unknown app "wbe": ` + two + " defines api, web", "usage: deployer rollback [APP] [--wait-drain] [--timeout DURATION] [--json]"},
		{"unknown app of one", []string{"status", "-c", one, "api"}, `deployer status: unknown app "api": ` + one + " defines only web", "usage: deployer status"},
		{"unknown app, start", []string{"start", "-c", two, "db"}, `deployer start: unknown app "db"`, "usage: deployer start [APP] [--json]"},
		{"bad version", []string{"swap", "-c", one, "../v2"}, `deployer swap: supervisor: invalid version "../v2"`, "usage: deployer swap"},
		{"help of nothing", []string{"help", "deploy"}, `deployer help: unknown command "deploy"`, "usage: deployer help [COMMAND]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := run(t, tt.args...)
			wantCode(t, got, exitUsage)
			lines := strings.Split(strings.TrimSuffix(got.stderr, "\n"), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], tt.wantMsg) || !strings.HasPrefix(lines[1], tt.wantUsage) {
				t.Errorf("stderr:\n%s\nwant two lines starting\n%s\n%s", got.stderr, tt.wantMsg, tt.wantUsage)
			}
			if got.stdout != "" {
				t.Errorf("stdout = %q, want nothing", got.stdout)
			}
		})
	}
}

// TestConfigPath checks where the config comes from: -c or --config before
// the command or among its flags, else $DEPLOYER_CONFIG, else ./deploy.toml.
func TestConfigPath(t *testing.T) {
	_, web := writeConfig(t, "web")
	_, api := writeConfig(t, "api")
	env := map[string]string{configEnv: api}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string // the app check reports
	}{
		{"-c before", nil, []string{"-c", web, "check"}, "(web)"},
		{"--config= before", nil, []string{"--config=" + web, "check"}, "(web)"},
		{"-c after", nil, []string{"check", "-c", web}, "(web)"},
		{"--config after", nil, []string{"check", "--config", web}, "(web)"},
		{"env", env, []string{"check"}, "(api)"},
		{"-c beats env", env, []string{"check", "-c", web}, "(web)"},
		{"command's -c beats global", nil, []string{"-c", api, "check", "-c", web}, "(web)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runCtx(t, t.Context(), tt.env, tt.args...)
			wantCode(t, got, exitOK)
			if !strings.Contains(got.stdout, tt.want) {
				t.Errorf("stdout = %q, want it to contain %q", got.stdout, tt.want)
			}
		})
	}

	t.Run("default", func(t *testing.T) {
		dir, _ := writeConfig(t, "web")
		t.Chdir(dir)
		got := run(t, "check")
		wantCode(t, got, exitOK)
		if want := "deploy.toml OK: 1 app (web)"; !strings.HasPrefix(got.stdout, want) {
			t.Errorf("stdout = %q, want it to start with %q", got.stdout, want)
		}
	})
}

// TestAPPResolution checks which app a command acts on, through the request
// the daemon gets.
func TestAPPResolution(t *testing.T) {
	tests := []struct {
		apps     []string
		args     []string
		wantPath string
	}{
		{[]string{"web"}, []string{"pause"}, "/v1/apps/web/pause"},
		{[]string{"web"}, []string{"pause", "web"}, "/v1/apps/web/pause"},
		{[]string{"web", "api"}, []string{"resume", "api"}, "/v1/apps/api/resume"},
		{[]string{"web", "api"}, []string{"resume"}, ""}, // APP left out of two: refused
	}
	for _, tt := range tests {
		dir, cfg := writeConfig(t, tt.apps...)
		d := newFakeDaemon(t, dir)
		d.handle("/", answer(http.StatusOK, supervisor.AppStatus{}))
		got := run(t, append(tt.args, "-c", cfg)...)
		if tt.wantPath == "" {
			wantCode(t, got, exitUsage)
			if n := d.count(); n != 0 {
				t.Errorf("%q: daemon got %d requests, want none", tt.args, n)
			}
			continue
		}
		wantCode(t, got, exitOK)
		if r := d.only(t); r.Path != tt.wantPath {
			t.Errorf("%q: daemon got %s, want %s", tt.args, r.Path, tt.wantPath)
		}
	}
}
