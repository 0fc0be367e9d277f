package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testredis"
)

// routeConfig writes a deploy.toml with app web and, unless redisURL is "",
// [routes] redis = redisURL; it returns its path.
func routeConfig(t *testing.T, redisURL string) string {
	t.Helper()
	dir := stateDir(t)
	text := fmt.Sprintf("[deployer]\nstate_dir = %q\n[apps.web]\ncommand = [\"true\"]\nversion = \"v1\"\n", dir)
	if redisURL != "" {
		text += fmt.Sprintf("[routes]\nredis = %q\n", redisURL)
	}
	path := filepath.Join(dir, "deploy.toml")
	writeFile(t, path, text)
	return path
}

// Bad usage is exit 2 before Redis is asked; Redis not answering is exit 1.
func TestRouteUsage(t *testing.T) {
	cfg := routeConfig(t, "redis://127.0.0.1:1/0") // nothing listens on port 1
	noRedis := routeConfig(t, "")
	tests := []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"route"}, exitFailed, "connection refused"}, // ls
		{[]string{"route", "add", "a.test", "web"}, exitUsage, `unknown action "add"`},
		{[]string{"route", "set", "a.test"}, exitUsage, "route set: missing TARGET"},
		{[]string{"route", "rm"}, exitUsage, "route rm: missing HOST"},
		{[]string{"route", "ls", "a.test"}, exitUsage, `route ls: unexpected argument "a.test"`},
		{[]string{"route", "set", "a.test", "unix:relative.sock"}, exitUsage, "a socket path must be absolute"},
		{[]string{"route", "set", "*", "web"}, exitUsage, `host "*"`},
		{[]string{"route", "rm", "bad host:80"}, exitUsage, `host "bad host:80": no port allowed`},
		{[]string{"route", "rm", "*"}, exitUsage, `host "*"`},
		{[]string{"route", "rm", "www.*.test"}, exitUsage, `the only wildcards are`},
		{[]string{"route", "rm", "WWW.test."}, exitFailed, "redis at redis://127.0.0.1:1/0"},
		{[]string{"route", "rm", "*.test"}, exitFailed, "redis at redis://127.0.0.1:1/0"},
		{[]string{"route", "set", "a.test", "api"}, exitUsage, `app "api" is not in`},
		{[]string{"route", "set", "a.test", "web", "-c", noRedis}, exitUsage, "has no [routes] redis"},
		{[]string{"route", "set", "a.test", "web"}, exitFailed, "redis at redis://127.0.0.1:1/0"},
		{[]string{"route", "ls"}, exitFailed, "connection refused"},
	}
	for _, tt := range tests {
		args := append([]string{"-c", cfg}, tt.args...)
		got := run(t, args...)
		if got.code != tt.code || !strings.Contains(got.stderr, tt.stderr) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tt.args, got.code, got.stderr, tt.code, tt.stderr)
		}
	}
}

// set, ls and rm against a real Redis: canonical values, one PUBLISH per
// change, the JSON shapes.
func TestRouteSetLsRm(t *testing.T) {
	srv := testredis.Start(t)
	cfg := routeConfig(t, srv.URL())
	c := srv.Client()
	ctx := context.Background()
	sub := c.Subscribe(ctx, "deployer:routes")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	published := func(want string) {
		t.Helper()
		msg, err := sub.ReceiveTimeout(ctx, 2*time.Second)
		if err != nil || !strings.Contains(fmt.Sprint(msg), want) {
			t.Errorf("published %v (%v), want %q", msg, err, want)
		}
	}

	got := run(t, "-c", cfg, "route", "set", "WWW.Test", "web")
	wantCode(t, got, exitOK)
	if got.stdout != "www.test → web\n" {
		t.Errorf("set: %q", got.stdout)
	}
	published("set www.test")
	got = run(t, "-c", cfg, "route", "set", "*.lb.test", "10.0.0.5:80, unix:/srv/b.sock", "--json")
	wantCode(t, got, exitOK)
	published("set *.lb.test")
	var res map[string]any
	if err := json.Unmarshal([]byte(got.stdout), &res); err != nil || res["target"] != "10.0.0.5:80,unix:/srv/b.sock" || res["ok"] != true {
		t.Errorf("set --json: %s (%v)", got.stdout, err)
	}
	wantCode(t, run(t, "-c", cfg, "route", "set", "other.test", "api", "--force"), exitOK)
	published("set other.test")
	c.HSet(ctx, "routes", "bad.test", "nonsense:value:x")

	got = run(t, "-c", cfg, "route", "ls")
	wantCode(t, got, exitOK)
	for _, want := range []string{
		"HOST", "*.lb.test   10.0.0.5:80, unix:/srv/b.sock",
		`bad.test    "nonsense:value:x"  (ignored:`,
		`other.test  "api"  (ignored: app "api" is not in this deploy.toml)`,
		"www.test    web (app)",
	} {
		if !strings.Contains(got.stdout, want) {
			t.Errorf("ls lacks %q:\n%s", want, got.stdout)
		}
	}
	got = run(t, "-c", cfg, "route", "ls", "--json")
	wantCode(t, got, exitOK)
	var ls struct {
		Redis  string
		Routes map[string]listedRoute
	}
	if err := json.Unmarshal([]byte(got.stdout), &ls); err != nil {
		t.Fatal(err)
	}
	if ls.Redis != srv.URL() || len(ls.Routes) != 4 || ls.Routes["www.test"].App != "web" ||
		len(ls.Routes["*.lb.test"].Targets) != 2 || ls.Routes["bad.test"].Error == "" {
		t.Errorf("ls --json: %s", got.stdout)
	}

	got = run(t, "-c", cfg, "route", "rm", "WWW.TEST")
	wantCode(t, got, exitOK)
	published("rm www.test")
	if got.stdout != "removed the route of WWW.TEST\n" {
		t.Errorf("rm: %q", got.stdout)
	}
	got = run(t, "-c", cfg, "route", "rm", "www.test", "--json")
	wantCode(t, got, exitOK)
	if !strings.Contains(got.stdout, `"removed": false`) {
		t.Errorf("rm of a missing host: %s", got.stdout)
	}
	published("rm www.test") // the rm of a missing host publishes too

	// A field set would refuse, written by another tool: rm refuses it the
	// same way, and --force removes it.
	c.HSet(ctx, "routes", "bad host:80", "web")
	got = run(t, "-c", cfg, "route", "rm", "bad host:80")
	wantCode(t, got, exitUsage)
	if !strings.Contains(got.stderr, `host "bad host:80": no port allowed`) || !strings.Contains(got.stderr, "; --force removes it anyway\n") {
		t.Errorf("rm of an invalid host: stderr %q", got.stderr)
	}
	got = run(t, "-c", cfg, "route", "rm", "bad host:80", "--force")
	wantCode(t, got, exitOK)
	published("rm bad host:80")
	if got.stdout != "removed the route of bad host:80\n" {
		t.Errorf("rm --force: %q", got.stdout)
	}
	if n, _ := c.HLen(ctx, "routes").Result(); n != 3 {
		t.Errorf("%d routes left, want 3", n)
	}
}

func TestRouteHelp(t *testing.T) {
	got := run(t, "help", "route")
	wantCode(t, got, exitOK)
	for _, want := range []string{"usage: deployer route [set|rm|ls] [HOST] [TARGET] [--force] [--json]", "deployer route set HOST TARGET", "--force",
		"rm checks HOST as set does"} {
		if !strings.Contains(got.stdout, want) {
			t.Errorf("help route lacks %q", want)
		}
	}
}
