package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// replaceConfig writes deploy.toml the way most editors save: a temp file
// in the same directory renamed over it.
func (e *env) replaceConfig(text string) {
	e.t.Helper()
	text = strings.ReplaceAll(text, "%ADDR%", e.addr)
	tmp := filepath.Join(e.dir, ".deploy.toml.swp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.config); err != nil {
		e.t.Fatal(err)
	}
}

// mustStatus is status --json that fails the test when the CLI does: while
// deploy.toml is invalid, status must still reach the daemon to report
// config_error.
func (e *env) mustStatus() supervisor.Status {
	e.t.Helper()
	out, errOut, code := e.cli("status", "--json")
	if code != 0 {
		e.t.Fatalf("status --json: exit %d\n%s%s", code, out, errOut)
	}
	var st supervisor.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

// reloadConfig is deploy.toml for the reload tests: [deployer] plus apps,
// each app running hello from the command line with GREETING = "app <name>".
func reloadConfig(listen string, apps ...string) string {
	return fmt.Sprintf(`[deployer]
listen = "%s"
state_dir = "run"
queue_timeout = "10s"
drain_timeout = "2s"
`, listen) + strings.Join(apps, "")
}

// reloadApp is one [apps.NAME] table; extra lines go at its end.
func reloadApp(name, hosts string, extra ...string) string {
	return fmt.Sprintf(`
[apps.%s]
command = ["%s", "-socket", "{socket}", "-version", "{version}"]
version = "v1"
env = { GREETING = "app {app}" }
hosts = %s
settle = "100ms"
stop_timeout = "2s"
`, name, helloBin, hosts) + strings.Join(extra, "\n")
}

// servedBy reports whether a request for host reaches app (its GREETING).
func servedBy(t *testing.T, e *env, host, app string) bool {
	code, body, _ := hostGet(t, http.DefaultClient, e.url("/"), host)
	return code == 200 && strings.HasPrefix(body, "app "+app+"\n")
}

// Under load on the first app, deploy.toml is edited three times: a host
// added to a running app (written in place), an app added and an app removed
// (written by rename). Each edit applies within seconds, and no request to
// the first app fails.
func TestReloadAppsUnderLoad(t *testing.T) {
	e := newEnv(t)
	// The load goes to http://127.0.0.1:port/: its Host is "127.0.0.1".
	web := reloadApp("web", `["127.0.0.1", "web.test"]`)
	gone := reloadApp("gone", `["gone.test"]`)
	e.writeConfig(reloadConfig("%ADDR%", web, gone))
	e.start("web", "gone")
	webPID := e.instance("web", 0).PID
	gonePID := e.instance("gone", 0).PID
	if !servedBy(t, e, "gone.test", "gone") {
		t.Fatal("gone.test not served by app gone at start")
	}
	l := startLoad(t, e.url("/"), 8)
	waitFor(t, "load running", 5*time.Second, func() bool { return l.out.total() > 100 })

	// A host added, written in place (truncate + write: the daemon may see
	// the empty file first).
	if code, _, _ := hostGet(t, http.DefaultClient, e.url("/"), "www.test"); code != 404 {
		t.Fatalf("www.test before the edit: %d, want 404", code)
	}
	web = reloadApp("web", `["127.0.0.1", "web.test", "www.test"]`)
	start := time.Now()
	e.writeConfig(reloadConfig("%ADDR%", web, gone))
	waitFor(t, "www.test routed to web", 3*time.Second, func() bool { return servedBy(t, e, "www.test", "web") })
	t.Logf("host added: live after %s", time.Since(start).Round(time.Millisecond))
	if st := e.appStatus("web"); st.Instances[0].PID != webPID || len(st.Pending) != 0 {
		t.Fatalf("web after a host edit: pid %d (was %d), pending %v; want the same process, nothing pending",
			st.Instances[0].PID, webPID, st.Pending)
	}

	// An app added.
	start = time.Now()
	e.replaceConfig(reloadConfig("%ADDR%", web, gone, reloadApp("blog", `["blog.test", "*.blog.test"]`)))
	e.waitState("blog", supervisor.StateServing, 10*time.Second)
	waitFor(t, "blog.test routed to blog", 3*time.Second, func() bool {
		return servedBy(t, e, "blog.test", "blog") && servedBy(t, e, "x.blog.test", "blog")
	})
	t.Logf("app added: serving after %s", time.Since(start).Round(time.Millisecond))

	// An app removed: its host gets the proxy's 404, its process is stopped.
	start = time.Now()
	e.replaceConfig(reloadConfig("%ADDR%", web, reloadApp("blog", `["blog.test", "*.blog.test"]`)))
	waitFor(t, "gone.test answered 404 by the proxy", 5*time.Second, func() bool {
		code, _, h := hostGet(t, http.DefaultClient, e.url("/"), "gone.test")
		return code == 404 && h.Get("X-Pid") == ""
	})
	waitFor(t, "app gone's process stopped", 10*time.Second, func() bool {
		return syscall.Kill(gonePID, 0) == syscall.ESRCH
	})
	t.Logf("app removed: process %d stopped after %s", gonePID, time.Since(start).Round(time.Millisecond))
	for _, a := range e.status().Apps {
		if a.Name == "gone" {
			t.Logf("status still lists the removed app: %+v", a)
		}
	}
	if !servedBy(t, e, "blog.test", "blog") || !servedBy(t, e, "web.test", "web") {
		t.Fatal("web or blog not served after app gone was removed")
	}
	if pid := e.instance("web", 0).PID; pid != webPID {
		t.Fatalf("web's pid %d after the edits, was %d: routing edits must not restart it", pid, webPID)
	}

	got := l.finish()
	t.Logf("three live edits under load: %s", got)
	if got.failures() != 0 {
		t.Fatalf("failed requests to web across the edits: %s", got)
	}
}

// Under load: a changed command is pending until the next restart; an
// invalid file (unknown key) and a changed listen address are rejected with
// config_error, the running config stays, and a valid file clears it.
func TestReloadPendingAndInvalidUnderLoad(t *testing.T) {
	e := newEnv(t)
	web := reloadApp("web", `["127.0.0.1", "web.test"]`)
	e.writeConfig(reloadConfig("%ADDR%", web))
	e.start("web")
	pid := e.instance("web", 0).PID
	l := startLoad(t, e.url("/"), 8)
	waitFor(t, "load running", 5*time.Second, func() bool { return l.out.total() > 100 })

	// A process setting: pending until restart.
	changed := strings.Replace(web, `"{version}"]`, `"{version}", "-log-every", "1h"]`, 1)
	if changed == web {
		t.Fatal("test bug: command not changed")
	}
	e.replaceConfig(reloadConfig("%ADDR%", changed))
	waitFor(t, `pending ["command"]`, 3*time.Second, func() bool {
		return slices.Equal(e.appStatus("web").Pending, []string{"command"})
	})
	if got := e.instance("web", 0).PID; got != pid {
		t.Fatalf("web's pid %d after a command edit, was %d: process settings wait for the next swap", got, pid)
	}
	e.mustCLI("restart", "web")
	st := e.appStatus("web")
	if len(st.Pending) != 0 || st.Instances[0].PID == pid {
		t.Fatalf("after restart: pending %v, pid %d (was %d); want nothing pending, a new process", st.Pending, st.Instances[0].PID, pid)
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(st.Instances[0].PID) + "/cmdline")
	if err != nil || !bytes.Contains(cmdline, []byte("\x00-log-every\x001h")) {
		t.Fatalf("the restarted process's command line %q (%v): want the new command", cmdline, err)
	}
	pid = st.Instances[0].PID

	// An unknown key: rejected with file:line, everything keeps serving.
	invalid := reloadConfig("%ADDR%", changed, "bogus_key = true\n")
	line := 1 + strings.Count(invalid[:strings.Index(invalid, "bogus_key")], "\n")
	e.replaceConfig(invalid)
	var cfgErr string
	waitFor(t, "config_error in status", 3*time.Second, func() bool {
		cfgErr = e.mustStatus().ConfigError
		return cfgErr != ""
	})
	t.Logf("config_error: %s", cfgErr)
	if want := "deploy.toml:" + strconv.Itoa(line); !strings.Contains(cfgErr, want) {
		t.Errorf("config_error %q, want it to name %s", cfgErr, want)
	}
	if want := "deploy.toml:" + strconv.Itoa(line); !strings.Contains(e.logs.String(), want) {
		t.Errorf("daemon log does not name %s:\n%s", want, e.logs.String())
	}
	if !servedBy(t, e, "web.test", "web") || e.instance("web", 0).PID != pid {
		t.Fatal("web not serving on its process while deploy.toml is invalid")
	}

	// A valid file clears it, and applies.
	web = strings.Replace(changed, `"web.test"]`, `"web.test", "new.test"]`, 1)
	e.replaceConfig(reloadConfig("%ADDR%", web))
	waitFor(t, "config_error cleared", 3*time.Second, func() bool { return e.mustStatus().ConfigError == "" })
	waitFor(t, "new.test routed to web", 3*time.Second, func() bool { return servedBy(t, e, "new.test", "web") })
	if p := e.appStatus("web").Pending; len(p) != 0 {
		t.Fatalf("pending %v after rewriting the same command, want none", p)
	}

	// listen cannot change live: rejected like an invalid file, the proxy
	// stays where it is.
	e.replaceConfig(reloadConfig(freeAddr(t), web))
	waitFor(t, "config_error for a changed listen", 3*time.Second, func() bool {
		cfgErr = e.mustStatus().ConfigError
		return cfgErr != ""
	})
	t.Logf("config_error: %s", cfgErr)
	if !strings.Contains(cfgErr, "listen") {
		t.Errorf("config_error %q, want it to name listen", cfgErr)
	}
	e.replaceConfig(reloadConfig("%ADDR%", web))
	waitFor(t, "config_error cleared", 3*time.Second, func() bool { return e.mustStatus().ConfigError == "" })

	got := l.finish()
	t.Logf("pending, restart, invalid and rejected edits under load: %s", got)
	if got.failures() != 0 {
		t.Fatalf("failed requests to web: %s", got)
	}
}

// An app removed from deploy.toml and added back while its old processes
// still drain (a slow request keeps them) is served by its new processes
// once the old ones stop: the end of the old drain must not take the app
// out of the proxy or stop watching its hold file.
func TestReloadRemoveThenAddBack(t *testing.T) {
	e := newEnv(t)
	web := reloadApp("web", `["127.0.0.1", "web.test"]`)
	api := reloadApp("api", `["api.test"]`, `drain_timeout = "10s"`)
	e.writeConfig(reloadConfig("%ADDR%", web, api))
	e.start("web", "api")
	oldPID := e.instance("api", 0).PID

	slow := make(chan int, 1)
	go func() {
		code, _, _ := hostGet(t, &http.Client{Timeout: 20 * time.Second}, e.url("/slow?d=3s"), "api.test")
		slow <- code
	}()
	waitFor(t, "the slow request in flight", 5*time.Second, func() bool { return e.appStatus("api").InFlight == 1 })

	e.replaceConfig(reloadConfig("%ADDR%", web))
	waitFor(t, "api.test answered 404 once api is removed", 5*time.Second, func() bool {
		code, _, _ := hostGet(t, http.DefaultClient, e.url("/"), "api.test")
		return code == 404
	})
	if syscall.Kill(oldPID, 0) != nil {
		t.Fatal("api's old process stopped while its slow request was in flight")
	}
	e.replaceConfig(reloadConfig("%ADDR%", web, api))
	waitFor(t, "api served again", 10*time.Second, func() bool { return servedBy(t, e, "api.test", "api") })

	if code := <-slow; code != 200 {
		t.Fatalf("the slow request to the removed api answered %d, want 200", code)
	}
	waitFor(t, "api's old process stopped", 10*time.Second, func() bool {
		return syscall.Kill(oldPID, 0) == syscall.ESRCH
	})
	time.Sleep(200 * time.Millisecond) // what follows the old drain has run
	for i := range 20 {
		if !servedBy(t, e, "api.test", "api") {
			t.Fatalf("request %d to api.test after the old api stopped: not served by api (status %+v)", i, e.appStatus("api"))
		}
	}

	// The hold file of the app added back is still watched.
	if err := os.WriteFile(filepath.Join(e.dir, "run", "api", "hold"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e.waitState("api", supervisor.StatePaused, 5*time.Second)
	os.Remove(filepath.Join(e.dir, "run", "api", "hold"))
	e.waitState("api", supervisor.StateServing, 5*time.Second)
}

// An app removed from deploy.toml while its start keeps failing is not
// started again by the retries; one removed while a slow request keeps it
// draining is waited for by a shutdown: no process outlives the daemon.
func TestReloadRemovedAppsLeaveNothing(t *testing.T) {
	e := newEnv(t)
	web := reloadApp("web", `["127.0.0.1", "web.test"]`)
	bad := strings.Replace(reloadApp("bad", `["bad.test"]`), `"{version}"]`, `"{version}", "-fail-at-boot"]`, 1)
	api := reloadApp("api", `["api.test"]`, `drain_timeout = "20s"`)
	e.writeConfig(reloadConfig("%ADDR%", web, bad, api))
	e.launch()
	e.waitState("web", supervisor.StateServing, 10*time.Second)
	e.waitState("api", supervisor.StateServing, 10*time.Second)
	waitFor(t, "bad's start to fail", 10*time.Second, func() bool {
		return strings.Contains(e.logs.String(), `msg="start failed" app=bad`)
	})
	apiPID := e.instance("api", 0).PID
	slow := make(chan int, 1)
	go func() {
		code, _, _ := hostGet(t, &http.Client{Timeout: 30 * time.Second}, e.url("/slow?d=10s"), "api.test")
		slow <- code
	}()
	waitFor(t, "the slow request in flight", 5*time.Second, func() bool { return e.appStatus("api").InFlight == 1 })

	e.replaceConfig(reloadConfig("%ADDR%", web))
	waitFor(t, "bad and api removed", 5*time.Second, func() bool {
		code, _, _ := hostGet(t, http.DefaultClient, e.url("/"), "bad.test")
		return code == 404
	})
	failures := strings.Count(e.logs.String(), `msg="start failed" app=bad`)
	time.Sleep(2500 * time.Millisecond) // past bad's next retries (1s, 2s)
	if n := strings.Count(e.logs.String(), `msg="start failed" app=bad`); n != failures {
		t.Errorf("bad was started again after its removal: %d failed starts, %d at the removal", n, failures)
	}
	if syscall.Kill(apiPID, 0) != nil {
		t.Fatal("api stopped while its slow request was in flight")
	}

	// A shutdown now waits for api's drain (the slow request), then stops it.
	e.stopDaemon()
	if code := <-slow; code != 200 {
		t.Errorf("the slow request to the removed api answered %d, want 200", code)
	}
	if syscall.Kill(apiPID, 0) != syscall.ESRCH {
		syscall.Kill(apiPID, syscall.SIGKILL)
		t.Fatalf("api's process %d outlived the daemon", apiPID)
	}
}

// An app taken out of deploy.toml while no daemon ran (the last one was
// killed) is not left running: the next daemon finds its processes in the
// state file, drains and stops them, and removes its sockets, while the
// apps still defined are adopted as they were.
func TestRemovedWhileDownStopped(t *testing.T) {
	e := newEnv(t)
	web := reloadApp("web", `["127.0.0.1", "web.test"]`)
	api := reloadApp("api", `["api.test"]`)
	e.writeConfig(reloadConfig("%ADDR%", web, api))
	e.start("web", "api")
	webPID, apiPID := e.instance("web", 0).PID, e.instance("api", 0).PID
	e.killDaemon()

	e.writeConfig(reloadConfig("%ADDR%", web))
	e.launch()
	e.waitState("web", supervisor.StateServing, 10*time.Second)
	if got := e.instance("web", 0).PID; got != webPID {
		t.Errorf("web runs pid %d after the restart, want %d adopted", got, webPID)
	}
	waitFor(t, "api's process, no longer in deploy.toml, to be stopped", 10*time.Second, func() bool {
		return syscall.Kill(apiPID, 0) == syscall.ESRCH
	})
	if !strings.Contains(e.logs.String(), "app no longer in deploy.toml: draining and stopping the processes it left") {
		t.Errorf("the daemon did not say why it stopped api:\n%s", e.logs.String())
	}
	waitFor(t, "api's sockets removed", 5*time.Second, func() bool {
		left, _ := filepath.Glob(filepath.Join(e.dir, "run", "api", "*.sock"))
		return len(left) == 0
	})
}
