package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/deployer/deployer/supervisor"
)

func TestPauseResume(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("POST /v1/apps/web/pause", answer(http.StatusOK, supervisor.AppStatus{Name: "web", State: "paused", Held: 3}))
	d.handle("POST /v1/apps/web/resume", answer(http.StatusOK, supervisor.AppStatus{Name: "web", State: "serving"}))

	got := run(t, "pause", "-c", cfg)
	wantCode(t, got, exitOK)
	if want := "web paused: new requests are held (3 waiting)\n"; got.stdout != want {
		t.Errorf("pause: stdout = %q, want %q", got.stdout, want)
	}

	got = run(t, "resume", "web", "-c", cfg)
	wantCode(t, got, exitOK)
	if want := "web resumed\n"; got.stdout != want {
		t.Errorf("resume: stdout = %q, want %q", got.stdout, want)
	}

	got = run(t, "pause", "--json", "-c", cfg)
	wantCode(t, got, exitOK)
	var st supervisor.AppStatus
	if err := json.Unmarshal([]byte(got.stdout), &st); err != nil || st.State != "paused" || st.Held != 3 {
		t.Errorf("pause --json: %+v, %v", st, err)
	}
}

// goingDaemon is a fake daemon that answers POST /v1/shutdown as the daemon
// does: it answers, then goes. Shutdown lets the answer out first; closing
// the listener removes the socket file.
func goingDaemon(t *testing.T, dir string) {
	t.Helper()
	d := newFakeDaemon(t, dir)
	d.handle("POST /v1/shutdown", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("{}\n"))
		go d.srv.Shutdown(context.Background())
	})
}

func TestShutdown(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	goingDaemon(t, dir)

	got := run(t, "shutdown", "-c", cfg)
	wantCode(t, got, exitOK)
	if got.stdout != "daemon stopped\n" {
		t.Errorf("stdout = %q", got.stdout)
	}
}

// shutdown --json prints {"ok": true}, or the error with its code; --json
// was refused ("flag provided but not defined").
func TestShutdownJSON(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	goingDaemon(t, dir)
	got := run(t, "shutdown", "--json", "-c", cfg)
	wantCode(t, got, exitOK)
	if want := "{\n  \"ok\": true\n}\n"; got.stdout != want || got.stderr != "" {
		t.Errorf("stdout = %q, stderr = %q; want %q and nothing", got.stdout, got.stderr, want)
	}

	// The daemon is gone now.
	got = run(t, "shutdown", "--json", "-c", cfg)
	wantCode(t, got, exitFailed)
	var res map[string]any
	if err := json.Unmarshal([]byte(got.stdout), &res); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, got.stdout)
	}
	if res["ok"] != false || res["code"] != "no_daemon" || !strings.HasPrefix(res["error"].(string), "no daemon is running") ||
		!strings.Contains(got.stderr, "no daemon is running") {
		t.Errorf("result = %v, stderr %q; want no_daemon, the error on stderr too", res, got.stderr)
	}
}

func TestNoDaemon(t *testing.T) {
	for _, args := range [][]string{
		{"status"}, {"swap", "v2"}, {"rollback"}, {"restart"}, {"stop"},
		{"pause"}, {"resume"}, {"logs"}, {"shutdown"},
	} {
		dir, cfg := writeConfig(t, "web")
		got := run(t, append(args, "-c", cfg)...)
		wantCode(t, got, exitFailed)
		want := "deployer: no daemon is running (nothing answers on " + dir + "/deployer.sock); start one with 'deployer start'\n"
		if got.stderr != want {
			t.Errorf("%q: stderr = %q, want %q", args, got.stderr, want)
		}
	}
}
