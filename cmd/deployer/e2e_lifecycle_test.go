package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// An old version is stopped only once no connection to its socket is left
// (what an outer proxy's keep-alive pool holds), or at its drain_timeout:
// a keep-alive connection opened to current.sock before a swap keeps being
// answered by the old version after it, the old version stops soon after
// it closes; one left open is cut at drain_timeout, logged with
// outer_connections.
func TestDrainWaitsForOuterConnections(t *testing.T) {
	e := supervisorOnlyEnv(t, "3s")
	current := filepath.Join(e.dir, "run", "web", "current.sock")

	// keepAlive opens a connection to current.sock and sends one request on
	// it; ask sends another and returns the version that answered.
	type keepAlive struct {
		net.Conn
		r *bufio.Reader
	}
	open := func() *keepAlive {
		t.Helper()
		c, err := net.Dial("unix", current)
		if err != nil {
			t.Fatal(err)
		}
		return &keepAlive{c, bufio.NewReader(c)}
	}
	ask := func(c *keepAlive) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: web\r\n\r\n"); err != nil {
			t.Fatalf("request on the kept connection: %v", err)
		}
		res, err := http.ReadResponse(c.r, nil)
		if err != nil {
			t.Fatalf("answer on the kept connection: %v", err)
		}
		res.Body.Close()
		return res.Header.Get("X-Version")
	}

	c := open()
	if v := ask(c); v != "v1" {
		t.Fatalf("first answer from %q, want v1", v)
	}
	v1 := e.instance("web", 0).PID
	e.mustCLI("swap", "web", "v2")
	time.Sleep(time.Second)
	if syscall.Kill(v1, 0) != nil {
		t.Fatal("v1 was stopped while a connection to it was open")
	}
	if v := ask(c); v != "v1" {
		t.Fatalf("the connection opened before the swap was answered by %q, want v1", v)
	}
	start := time.Now()
	c.Close()
	waitFor(t, "v1 to stop once its last connection closed", 2*time.Second, func() bool {
		return syscall.Kill(v1, 0) == syscall.ESRCH
	})
	t.Logf("v1 stopped %s after its last connection closed", time.Since(start).Round(time.Millisecond))
	if strings.Contains(e.logs.String(), "drain deadline") {
		t.Fatal("the drain reached its deadline although the connection closed before it")
	}

	// A connection left open is cut at drain_timeout.
	c = open()
	if v := ask(c); v != "v2" {
		t.Fatalf("answer from %q, want v2", v)
	}
	defer c.Close()
	v2 := e.instance("web", 0).PID
	e.mustCLI("swap", "web", "v1")
	start = time.Now()
	waitFor(t, "v2 to stop at its drain_timeout", 10*time.Second, func() bool {
		return syscall.Kill(v2, 0) == syscall.ESRCH
	})
	if took := time.Since(start); took < 2500*time.Millisecond {
		t.Fatalf("v2 stopped %s after the swap with a connection open, before its drain_timeout (3s)", took)
	}
	if !strings.Contains(e.logs.String(), "outer_connections=1") {
		t.Errorf("the cut at drain_timeout is not logged with outer_connections=1:\n%s", e.logs.String())
	}
}

// swap --wait-drain returns only once the old version is gone: its slow
// request answered, its process stopped, its socket removed.
func TestSwapWaitDrain(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()
	v1 := e.instance("web", 0)
	slow := getInBackground(e.url("/slow?d=2s"))
	waitFor(t, "the slow request in flight", 5*time.Second, func() bool { return e.appStatus("web").InFlight == 1 })

	start := time.Now()
	res, code, all := e.swapJSON("swap", "web", "v2", "--wait-drain")
	took := time.Since(start)
	if code != 0 || !res.OK || res.DrainMS < 1000 {
		t.Fatalf("swap --wait-drain: exit %d, %+v\n%s", code, res, all)
	}
	select {
	case r := <-slow:
		if r.code != 200 {
			t.Fatalf("the slow request on v1 answered %d, %v", r.code, r.err)
		}
	default:
		t.Fatalf("swap --wait-drain returned after %s, before v1's slow request was answered", took)
	}
	if syscall.Kill(v1.PID, 0) != syscall.ESRCH {
		t.Fatalf("swap --wait-drain returned with v1 (pid %d) still running", v1.PID)
	}
	if _, err := os.Stat(v1.Socket); !os.IsNotExist(err) {
		t.Fatalf("swap --wait-drain returned with v1's socket still there: %v", err)
	}
	for _, v := range e.appStatus("web").Versions {
		if v.State == supervisor.StateDraining {
			t.Fatalf("swap --wait-drain returned with %s still draining", v.Version)
		}
	}
	t.Logf("swap --wait-drain took %s (drain_ms %d)", took.Round(time.Millisecond), res.DrainMS)
}

// An app that fails to start with the daemon is retried with backoff while
// its requests are held; once the release is fixed, the next attempt
// serves them.
func TestBootRetry(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.release("v1", "-fail-at-boot")
	e.launch()
	waitFor(t, "the first start to fail", 10*time.Second, func() bool {
		return strings.Contains(e.logs.String(), `msg="start failed"`)
	})
	held := getInBackground(e.url("/"))
	waitFor(t, "a held request", 5*time.Second, func() bool { return e.appStatus("web").Held == 1 })
	waitFor(t, "a retry to fail too", 10*time.Second, func() bool {
		return strings.Count(e.logs.String(), `msg="start failed"`) >= 2
	})
	e.release("v1")
	waitHeld(t, held, "v1 was fixed, but no retry served the held request")
	if st := e.appStatus("web"); st.State != supervisor.StateServing || st.Version != "v1" {
		t.Fatalf("after the retry: %s %s", st.State, st.Version)
	}
}

// An instance that crashes and then cannot start (its release broke) is
// restarted with backoff, its requests held meanwhile; the release fixed,
// it serves again and the held request is answered.
func TestCrashRestartRetries(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()
	pid := e.instance("web", 0).PID
	e.release("v1", "-fail-at-boot")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	held := getInBackground(e.url("/"))
	waitFor(t, "a held request", 5*time.Second, func() bool { return e.appStatus("web").Held == 1 })
	waitFor(t, "a restart to fail", 10*time.Second, func() bool {
		return strings.Contains(e.logs.String(), `msg="restart failed"`)
	})
	if st := e.instance("web", 0); st.Healthy {
		t.Fatalf("instance 0 healthy with a release that cannot start: %+v", st)
	}
	e.release("v1")
	waitHeld(t, held, "v1 was fixed, but no restart served the held request")
	if in := e.instance("web", 0); in.PID == pid || in.Restarts < 1 {
		t.Fatalf("after the restarts: pid %d (was %d), restarts %d", in.PID, pid, in.Restarts)
	}
}

// A pause outlives the daemon: killed and started again, it adopts the app
// still paused, holds its requests, and resume releases them. The hold file
// is what decides: removed while no daemon ran, the app is not paused.
func TestPauseSurvivesDaemonCrash(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()
	pid := e.instance("web", 0).PID
	e.mustCLI("pause", "web")
	e.killDaemon()
	e.launch()
	e.waitState("web", supervisor.StatePaused, 10*time.Second)
	if got := e.instance("web", 0).PID; got != pid {
		t.Fatalf("after the crash web runs pid %d, want %d adopted", got, pid)
	}
	held := getInBackground(e.url("/"))
	waitFor(t, "a held request", 5*time.Second, func() bool { return e.appStatus("web").Held == 1 })
	e.mustCLI("resume", "web")
	waitHeld(t, held, "resume did not release the held request")

	// Paused again, the daemon killed, and the hold file removed while no
	// daemon runs (a resume by hand): the next daemon does not pause it
	// from its state file.
	e.mustCLI("pause", "web")
	e.killDaemon()
	if err := os.Remove(filepath.Join(e.dir, "run", "web", "hold")); err != nil {
		t.Fatal(err)
	}
	e.launch()
	e.waitState("web", supervisor.StateServing, 10*time.Second)
	if code, _, _ := e.get("/"); code != 200 {
		t.Fatalf("after the hold file was removed with no daemon running: %d", code)
	}
	// The adopted app was started by the killed daemon: stop it here.
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
}

// An app's output file is truncated once the daemon has read past 8 MiB of
// it: an app that writes 24 MB keeps a bounded file, and `deployer logs`
// still shows what it wrote last.
func TestOutputFileBounded(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	d := filepath.Join(e.dir, "releases", "v1")
	// 24 MB of numbered lines on stderr, beside hello serving; "done" last.
	script := fmt.Sprintf("#!/bin/sh\n(seq -f 'output line %%09g padding padding padding padding padding padding' 1 300000 >&2; echo done >&2) &\nexec %s -socket \"$DEPLOYER_SOCKET\" -version \"$DEPLOYER_VERSION\"\n", helloBin)
	if err := os.WriteFile(filepath.Join(d, "run"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	e.start()
	waitFor(t, "the last line in deployer logs", 60*time.Second, func() bool {
		out, _, _ := e.cli("logs", "web", "-n", "5")
		return strings.Contains(out, "done")
	})
	logs, err := filepath.Glob(filepath.Join(e.dir, "run", "web", "log", "*.log"))
	if err != nil || len(logs) != 1 {
		t.Fatalf("output files %v, %v; want one", logs, err)
	}
	fi, err := os.Stat(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	// Truncated once read past 8 MiB; what was written meanwhile stays.
	if fi.Size() > 12<<20 {
		t.Fatalf("output file %s is %d bytes after 24 MB of output: not truncated", logs[0], fi.Size())
	}
	out, _, _ := e.cli("logs", "web", "-n", "3")
	if !strings.Contains(out, "output line 000300000") {
		t.Errorf("deployer logs lacks the last numbered line:\n%s", out)
	}
	t.Logf("output file %d bytes after 24 MB written", fi.Size())
}

// waitHeld waits for a held request to be answered 200 (within 15s);
// failing says why it matters.
func waitHeld(t *testing.T, held <-chan slowResult, notAnswered string) {
	t.Helper()
	select {
	case r := <-held:
		if r.code != 200 {
			t.Fatalf("the held request answered %d, %v", r.code, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal(notAnswered)
	}
}

// A daemon killed while a swap launches the new version (v2 is up, not
// healthy yet) left v2's process running, no one's: the state file did not
// list it. The next daemon stops it, and v1, adopted, serves on, as after a
// failed swap. The swap's client, cut off, says the outcome is unknown.
// Clients on current.sock, as nginx is, see no failure throughout.
func TestCrashDuringSwapStopsNewVersion(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	unhealthy := filepath.Join(e.dir, "v2-unhealthy")
	writeFile(t, unhealthy, "")
	e.release("v2", "-unhealthy-file", unhealthy)
	e.start()
	v1 := e.instance("web", 0).PID
	t.Cleanup(func() { syscall.Kill(v1, syscall.SIGKILL) }) // adopted: not the last daemon's child
	l := startLoadVia(t, "http://web/", 8, filepath.Join(e.dir, "run", "web", "current.sock"))

	swap := exec.Command(deployerBin, "-c", e.config, "swap", "web", "v2", "--json")
	var out bytes.Buffer
	swap.Stdout = &out
	if err := swap.Start(); err != nil {
		t.Fatal(err)
	}
	var v2 int
	waitFor(t, "v2's process in the state file", 10*time.Second, func() bool {
		var st struct {
			Apps map[string]struct {
				Starting *struct {
					Version   string
					Instances []struct{ PID int }
				}
			}
		}
		b, err := os.ReadFile(filepath.Join(e.dir, "run", "state.json"))
		if err != nil || json.Unmarshal(b, &st) != nil {
			return false
		}
		s := st.Apps["web"].Starting
		if s == nil || s.Version != "v2" || len(s.Instances) != 1 || s.Instances[0].PID == 0 {
			return false
		}
		v2 = s.Instances[0].PID
		return true
	})
	t.Cleanup(func() { syscall.Kill(v2, syscall.SIGKILL) })
	e.killDaemon()
	err := swap.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUnknown || !strings.Contains(out.String(), `"outcome": "unknown"`) {
		t.Errorf("swap cut off by the crash: %v, stdout %s; want exit %d and outcome unknown", err, out.String(), exitUnknown)
	}
	if gone(v2) {
		t.Fatal("v2's process ended with the daemon: nothing left to stop")
	}

	e.launch()
	e.waitState("web", supervisor.StateServing, 10*time.Second)
	waitFor(t, "v2's process to stop", 15*time.Second, func() bool { return gone(v2) })
	if got := e.instance("web", 0).PID; got != v1 {
		t.Errorf("web runs pid %d after the crash, want v1's %d adopted", got, v1)
	}
	if code, body, _ := e.get("/"); code != 200 || !strings.Contains(body, "v1") {
		t.Errorf("GET / after the takeover: %d %q, want v1", code, body)
	}
	if !strings.Contains(e.logs.String(), "did not finish") {
		t.Errorf("the takeover did not say it stopped an unfinished launch:\n%s", e.logs.String())
	}
	out2 := l.finish()
	t.Logf("on current.sock across the crash and the takeover: %s", out2)
	if out2.failures() != 0 || out2.counts["2xx"] == 0 {
		t.Errorf("clients on current.sock: %s; want 2xx only", out2)
	}
	l.versions.Range(func(v, _ any) bool {
		if v != "v1" {
			t.Errorf("version %s answered on current.sock; only v1 serves", v)
		}
		return true
	})
}

// gone reports whether pid has exited: no such process, or a zombie whose
// parent has not reaped it yet.
func gone(pid int) bool {
	if syscall.Kill(pid, 0) == syscall.ESRCH {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	return ok && strings.HasPrefix(rest, "Z")
}
