package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An app's env_file is read at every launch: a changed file reaches the app
// at the next restart, a broken one fails the swap with its file:line while
// the old version serves on, and `deployer check` reports it at env_file's
// line. All under load, with no failed request.
func TestEnvFile(t *testing.T) {
	e := newEnv(t)
	secrets := filepath.Join(e.dir, "secrets", "web.env")
	if err := os.MkdirAll(filepath.Dir(secrets), 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(secrets, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("# web's secrets\nGREETING=\"hi from the env file\"\n")
	e.basicConfig(`env_file = "secrets/{app}.env"` + "\n") // line 14 of deploy.toml
	e.start()
	greeting := func() string {
		t.Helper()
		code, body, h := e.get("/")
		if code != 200 {
			t.Fatalf("GET /: %d", code)
		}
		return h.Get("X-Version") + ": " + strings.SplitN(body, "\n", 2)[0]
	}
	if got := greeting(); got != "v1: hi from the env file" {
		t.Fatalf("got %q, want v1's greeting from the env file", got)
	}
	l := startLoad(t, e.url("/"), 8)

	write("export GREETING=hi again\n")
	if out := e.mustCLI("restart"); !strings.Contains(out, "restarted web v1") {
		t.Fatalf("restart:\n%s", out)
	}
	if got := greeting(); got != "v1: hi again" {
		t.Fatalf("after the restart: got %q, want the changed file's greeting", got)
	}

	write("GREETING=hi again\noops\n")
	out, errOut, code := e.cli("swap", "v2")
	t.Logf("swap with a broken env file: exit %d\n%s%s", code, out, errOut)
	if code != 1 || !strings.Contains(out+errOut, "secrets/web.env:2: want KEY=VALUE, found no =") {
		t.Fatalf("swap with a broken env file: exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit 1 naming secrets/web.env:2", code, out, errOut)
	}
	if got := greeting(); got != "v1: hi again" {
		t.Fatalf("after the failed swap: got %q, want v1 serving on", got)
	}
	out, errOut, code = e.cli("check")
	if code != 2 || !strings.Contains(errOut, "deploy.toml:14: apps.web.env_file: secrets/web.env:2: want KEY=VALUE, found no =") {
		t.Fatalf("check with a broken env file: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}

	got := l.finish()
	t.Logf("a restart and a failed swap under load: %s", got)
	if got.failures() != 0 {
		t.Errorf("failed requests: %s", got)
	}
}
