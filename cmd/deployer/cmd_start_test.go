package main

import (
	"strings"
	"testing"

	"github.com/deployer/deployer/supervisor"
)

// TestStartWithDaemon checks that start asks a running daemon to start APP
// instead of becoming a second daemon.
func TestStartWithDaemon(t *testing.T) {
	dir, cfg := writeConfig(t, "web", "api")
	d := newFakeDaemon(t, dir)
	d.handle("POST /v1/apps/api/start", stream(
		progress(at(8, 0, 0), "launching v1"),
		resultEvent(supervisor.Result{OK: true, App: "api", Op: "start", NewVersion: "v1", DurationMS: 450}),
	))

	got := run(t, "start", "api", "-c", cfg)
	wantCode(t, got, exitOK)
	if want := "08:00:00 launching v1\nstarted api v1 in 450ms\n"; got.stdout != want {
		t.Errorf("stdout = %q, want %q", got.stdout, want)
	}

	// With several apps, a running daemon needs to be told which.
	got = run(t, "start", "-c", cfg)
	wantCode(t, got, exitUsage)
	if n := d.count(); n != 1 {
		t.Errorf("daemon got %d requests, want 1", n)
	}
}

func TestStartFails(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("POST /v1/apps/web/start", stream(
		resultEvent(supervisor.Result{App: "web", Op: "start", NewVersion: "v1", Error: "exited with status 1", Output: []string{"no such file"}}),
	))
	got := run(t, "start", "-c", cfg, "--json")
	wantCode(t, got, exitFailed)
	if !strings.Contains(got.stdout, `"error": "exited with status 1"`) {
		t.Errorf("stdout lacks the result's error:\n%s", got.stdout)
	}
}
