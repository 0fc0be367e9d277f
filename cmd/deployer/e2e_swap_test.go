package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// TestSwapUnderLoad is the core claim: 16 keep-alive clients for the whole
// run, 20 swaps back and forth, every response 200, and after each swap
// returns new requests see the new version.
func TestSwapUnderLoad(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()

	l := startLoad(t, e.url("/"), 16)
	const swaps = 20
	for i := 0; i < swaps; i++ {
		v := []string{"v2", "v1"}[i%2]
		out := e.mustCLI("swap", "web", v)
		if !strings.Contains(out, "swapped web") {
			t.Fatalf("swap %d output:\n%s", i, out)
		}
		// Every request started after the swap returned reaches v.
		for j := 0; j < 5; j++ {
			if code, _, h := e.get("/"); code != 200 || h.Get("X-Version") != v {
				t.Fatalf("after swap %d to %s: got %d from %q", i, v, code, h.Get("X-Version"))
			}
		}
	}
	time.Sleep(200 * time.Millisecond)
	got := l.finish()
	t.Logf("swap under load: %d swaps, %d requests: %s", swaps, got.total(), got)
	if got.failures() != 0 {
		t.Fatalf("failed requests across %d swaps: %s", swaps, got)
	}
	if got.total() < 1000 {
		t.Fatalf("only %d requests made: the load did not run", got.total())
	}
}

// SIGTERM to the daemon: it stops accepting, lets an in-flight request
// finish, stops the apps and exits 0.
func TestGracefulShutdownOnSIGTERM(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()
	pid := e.appStatus("web").Instances[0].PID

	done := make(chan int, 1)
	go func() {
		code, _, _ := tryGet(e.url("/slow?d=2s"))
		done <- code
	}()
	waitFor(t, "the slow request in flight", 5*time.Second, func() bool { return e.appStatus("web").InFlight == 1 })
	e.daemon.Process.Signal(syscall.SIGTERM)
	if code := <-done; code != 200 {
		t.Fatalf("in-flight request during shutdown answered %d, want 200", code)
	}
	select {
	case <-e.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("daemon still running 20s after SIGTERM")
	}
	if code := e.daemon.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("daemon exit %d after SIGTERM, want 0", code)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Fatalf("app pid %d outlived the daemon's shutdown", pid)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "run", "web", "current.sock")); !os.IsNotExist(err) {
		t.Fatalf("current.sock left after shutdown: %v", err)
	}
}

// An app that can only listen on TCP ({port}) swaps under load with no
// failed request: the swap moves traffic in the proxy instead of by rename.
func TestPortAppSwapUnderLoad(t *testing.T) {
	e := newEnv(t)
	e.writeConfig(`[deployer]
listen = "%ADDR%"
state_dir = "run"
drain_timeout = "5s"

[apps.web]
command = ["` + helloBin + `", "-addr", "127.0.0.1:{port}", "-version", "{version}"]
version = "v1"
settle = "100ms"
`)
	e.start()
	if a := e.appStatus("web").Instances[0].Socket; !strings.HasPrefix(a, "127.0.0.1:") {
		t.Fatalf("instance address %q, want a loopback port", a)
	}
	l := startLoad(t, e.url("/"), 16)
	for i := 0; i < 6; i++ {
		v := []string{"v2", "v1"}[i%2]
		e.mustCLI("swap", v)
		if code, _, h := e.get("/"); code != 200 || h.Get("X-Version") != v {
			t.Fatalf("after swap to %s: %d from %q", v, code, h.Get("X-Version"))
		}
	}
	got := l.finish()
	t.Logf("{port} app, 6 swaps: %s", got)
	if got.failures() != 0 {
		t.Fatalf("failed requests: %s", got)
	}
}

// swap, rollback and restart refuse an invalid deploy.toml (exit 2, its
// problems with file:line on stderr) instead of having the daemon launch
// processes with its last valid config: restart said "restarted web v1",
// exit 0, with the old environment. Commands that only read or pause still
// reach the daemon, with a warning.
func TestOpsRefuseInvalidConfig(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()
	pid := e.instance("web", 0).PID

	// An edit of the environment with a typo on the line after it.
	invalid := basicConfigText("", "env = { GREETING = \"edited\" }\ndrain_timout = \"5s\"\n")
	line := 1 + strings.Count(invalid[:strings.Index(invalid, "drain_timout")], "\n")
	e.replaceConfig(invalid)
	waitFor(t, "config_error in status", 5*time.Second, func() bool { return e.mustStatus().ConfigError != "" })
	where := e.config + ":" + strconv.Itoa(line) + ": "

	for _, args := range [][]string{{"restart"}, {"rollback", "web"}, {"swap", "v2"}, {"swap", "web", "v2", "--wait-drain"}, {"start", "web"}} {
		out, errOut, code := e.cli(args...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, where) || strings.Contains(errOut, "warning") {
			t.Errorf("deployer %s with an invalid deploy.toml: exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit 2, nothing on stdout, %q on stderr",
				strings.Join(args, " "), code, out, errOut, where)
		}
	}
	// With --json, one object for a CI step, the problems in its error.
	for _, args := range [][]string{{"restart", "web"}, {"rollback", "web", "--timeout", "1m"}} {
		r := e.wantRefusal(exitUsage, refusal{App: "web", Op: args[0], Code: "invalid_config"}, args...)
		if !strings.Contains(r.Error, where) {
			t.Errorf("%s --json: error %q does not name %s", args[0], r.Error, where)
		}
	}
	e.wantRefusal(exitUsage, refusal{App: "web", Op: "swap", NewVersion: "v2", Code: "invalid_config"}, "swap", "web", "v2")
	if in := e.instance("web", 0); in.PID != pid || in.Version != "v1" {
		t.Fatalf("web runs %s pid %d after the refused operations, want v1 pid %d untouched", in.Version, in.PID, pid)
	}

	// Reading and pausing still reach the daemon, after a warning.
	for _, args := range [][]string{{"status"}, {"logs", "-n", "1"}, {"pause"}, {"resume"}} {
		out, errOut, code := e.cli(args...)
		if code != exitOK || !strings.Contains(errOut, "warning: "+e.config+" is invalid") || !strings.Contains(errOut, where) {
			t.Errorf("deployer %s with an invalid deploy.toml: exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit 0 after a warning",
				strings.Join(args, " "), code, out, errOut)
		}
	}

	// Fixed, the same restart runs with the edited environment.
	e.replaceConfig(strings.Replace(invalid, "drain_timout", "drain_timeout", 1))
	waitFor(t, "config_error cleared", 5*time.Second, func() bool { return e.mustStatus().ConfigError == "" })
	e.mustCLI("restart")
	if code, body, _ := e.get("/"); code != 200 || !strings.HasPrefix(body, "edited\n") {
		t.Fatalf("after restart with the fixed deploy.toml: %d %q, want the edited GREETING", code, body)
	}
}

// refusal is the object swap, rollback, restart and stop print with --json
// when they are refused before the operation begins.
type refusal struct {
	OK         bool   `json:"ok"`
	Outcome    string `json:"outcome"`
	App        string `json:"app"`
	Op         string `json:"op"`
	NewVersion string `json:"new_version"`
	Error      string `json:"error"`
	Code       string `json:"code"`
}

// wantRefusal runs the CLI with args and --json, and fails the test unless
// it exits with code and prints one refusal with want's app, op, version
// and code on stdout, and its error on stderr too.
func (e *env) wantRefusal(code int, want refusal, args ...string) refusal {
	e.t.Helper()
	out, errOut, got := e.cli(append(args, "--json")...)
	var r refusal
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(&r); err != nil || dec.More() {
		e.t.Fatalf("deployer %s --json: stdout is not one JSON object (%v):\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	want.Outcome, want.Error = "refused", r.Error
	if got != code || r != want || r.Error == "" || !strings.Contains(errOut, strings.SplitN(r.Error, "\n", 2)[0]) {
		e.t.Fatalf("deployer %s --json: exit %d, %+v\nstderr:\n%s\nwant exit %d, %+v, the error on stderr too",
			strings.Join(args, " "), got, r, errOut, code, want)
	}
	return r
}

// swap --json (rollback, restart) prints one JSON object even when refused
// before the operation begins, as a CI step reads it: another operation
// running (the daemon's code), an unknown app, no daemon. It printed
// nothing on stdout.
func TestSwapJSONRefused(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.release("v3", "-boot-delay", "2s")
	e.start()
	pid := e.instance("web", 0).PID

	// A swap in this process holds the app's operation lock: its first
	// progress event says it has begun; v3 takes 2s to listen.
	cl := newClient(filepath.Join(e.dir, "run", "deployer.sock"))
	launched := make(chan struct{})
	swapped := make(chan error, 1)
	go func() {
		var once sync.Once
		res, _, err := cl.operate(context.Background(), "web", "swap", supervisor.SwapRequest{Version: "v3"}, func(supervisor.Event) {
			once.Do(func() { close(launched) })
		})
		if err == nil && !res.OK {
			err = errors.New(res.Error)
		}
		swapped <- err
	}()
	select {
	case <-launched:
	case err := <-swapped:
		t.Fatalf("swap to v3 ended before it began: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("swap to v3 sent no progress within 10s")
	}
	e.wantRefusal(exitFailed, refusal{App: "web", Op: "swap", NewVersion: "v2", Code: "swap_running"}, "swap", "web", "v2")
	e.wantRefusal(exitFailed, refusal{App: "web", Op: "restart", Code: "swap_running"}, "restart", "--timeout", "5s")
	if err := <-swapped; err != nil {
		t.Fatalf("swap to v3: %v", err)
	}
	if in := e.instance("web", 0); in.Version != "v3" || in.PID == pid {
		t.Fatalf("web runs %s pid %d, want v3 in a new process: only the refused swaps may have been refused", in.Version, in.PID)
	}

	e.wantRefusal(exitUsage, refusal{App: "api", Op: "rollback", Code: "unknown_app"}, "rollback", "api")
	e.wantRefusal(exitUsage, refusal{App: "web", Op: "swap", NewVersion: "../v4", Code: "usage"}, "swap", "web", "../v4")
	e.mustCLI("shutdown")
	e.wantRefusal(exitFailed, refusal{App: "web", Op: "swap", NewVersion: "v2", Code: "no_daemon"}, "swap", "v2", "--timeout", "1m")
}
