package main

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/deployer/deployer/supervisor"
)

// version needs no deploy.toml and no daemon.
func TestVersion(t *testing.T) {
	got := run(t, "version", "-c", "/nonexistent/deploy.toml")
	wantCode(t, got, exitOK)
	if want := "deployer " + supervisor.CurrentBuild().String() + "\n"; got.stdout != want || !strings.Contains(got.stdout, runtime.Version()) {
		t.Errorf("stdout %q, want %q", got.stdout, want)
	}
	got = run(t, "version", "--json")
	wantCode(t, got, exitOK)
	var b supervisor.Build
	if err := json.Unmarshal([]byte(got.stdout), &b); err != nil || b != supervisor.CurrentBuild() {
		t.Errorf("--json: %v, %+v; want %+v", err, b, supervisor.CurrentBuild())
	}
}
