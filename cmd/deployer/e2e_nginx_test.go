package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/deployer/deployer/internal/testlog"
	"github.com/deployer/deployer/supervisor"
)

// requireBinary skips a test when a server binary it talks to is missing,
// unless DEPLOYER_REQUIRE_INTEGRATION=1 (set by .ci/run), where the skip
// becomes a failure.
func requireBinary(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	msg := name + " is not installed (apt-get install -y " + name + "); this test runs it for real"
	if os.Getenv("DEPLOYER_REQUIRE_INTEGRATION") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&0o111 != 0
}

// Supervisor-only mode behind real nginx (examples/nginx/nginx.conf.tmpl):
// swaps under concurrent keep-alive load give zero 502s or other failures.
func TestNginxSwapsUnderLoad(t *testing.T) {
	nginx := requireBinary(t, "nginx")
	e := supervisorOnlyEnv(t, "15s")
	startNginx(t, e, nginx, filepath.Join(e.dir, "run", "web", "current.sock"))

	l := startLoad(t, e.url("/"), 16)
	const swaps = 10
	for i := 0; i < swaps; i++ {
		v := []string{"v2", "v1"}[i%2]
		e.mustCLI("swap", "web", v)
		waitFor(t, "nginx to reach "+v, 5*time.Second, func() bool {
			_, _, h := tryGet(e.url("/"))
			return h.Get("X-Version") == v
		})
		time.Sleep(300 * time.Millisecond)
	}
	// keepalive_time (5s) ends nginx's pooled connections to an old
	// version even while they stay busy.
	waitNoDraining(t, e, "every old version to drain while the load runs", 10*time.Second)
	got := l.finish()
	t.Logf("nginx in front, %d swaps: %s", swaps, got)
	if got.failures() != 0 {
		t.Fatalf("failed requests through nginx: %s", got)
	}
	if !strings.Contains(got.String(), "2xx=") {
		t.Fatal("no requests counted")
	}
	checkDrainsEnded(t, e, swaps)
}

// waitNoDraining waits until the app web has no version draining.
func waitNoDraining(t *testing.T, e *env, what string, timeout time.Duration) {
	t.Helper()
	waitFor(t, what, timeout, func() bool {
		for _, v := range e.appStatus("web").Versions {
			if v.State == supervisor.StateDraining {
				return false
			}
		}
		return true
	})
}

// checkDrainsEnded checks the daemon's log after swaps behind an outer
// proxy: every old version drained, and none had to wait for its
// drain_timeout to cut the outer proxy's connections.
func checkDrainsEnded(t *testing.T, e *env, swaps int) {
	t.Helper()
	logs := e.logs.String()
	t.Logf("drains: %q", regexp.MustCompile(`version=v\S* took=\S+`).FindAllString(logs, -1))
	if n := strings.Count(logs, "drain deadline"); n > 0 {
		t.Errorf("%d drains reached drain_timeout: the outer proxy kept connections to an old version", n)
	}
	if n := strings.Count(logs, "msg=drained"); n != swaps {
		t.Errorf("%d drains logged, want %d", n, swaps)
	}
}

// supervisorOnlyEnv is a running daemon with no proxy of its own (listen =
// ""), serving web v1 on run/web/current.sock for an outer proxy, with
// releases v1 and v2 and the drain_timeout given.
func supervisorOnlyEnv(t *testing.T, drainTimeout string) *env {
	t.Helper()
	e := newEnv(t)
	e.release("v1")
	e.release("v2")
	e.writeConfig(fmt.Sprintf(`[deployer]
listen = ""
state_dir = "run"
drain_timeout = %q

[apps.web]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
settle = "100ms"
`, drainTimeout))
	e.start()
	return e
}

// startNginx runs nginx from examples/nginx's template in front of e, its
// upstream the stable paths given, and waits until it answers on e.addr.
func startNginx(t *testing.T, e *env, nginx string, sockets ...string) {
	t.Helper()
	ngdir := filepath.Join(e.dir, "nginx")
	if err := os.MkdirAll(ngdir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmpl := template.Must(template.ParseFiles("../../examples/nginx/nginx.conf.tmpl"))
	var conf strings.Builder
	if err := tmpl.Execute(&conf, struct{ Dir, Socket, Listen string }{ngdir, sockets[0], e.addr}); err != nil {
		t.Fatal(err)
	}
	servers := ""
	for _, s := range sockets {
		servers += "server unix:" + s + ";\n"
	}
	text := strings.Replace(conf.String(), "server unix:"+sockets[0]+";\n", servers, 1)
	if err := os.WriteFile(filepath.Join(ngdir, "nginx.conf"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// Workers run as root here only because the test's sockets belong to
	// root; a real setup gives nginx's user access to the socket directory.
	cmd := exec.Command(nginx, "-p", ngdir, "-c", filepath.Join(ngdir, "nginx.conf"), "-e", filepath.Join(ngdir, "error.log"), "-g", "daemon off; user root;")
	var out testlog.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGQUIT)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(ngdir, "error.log"))
			t.Logf("nginx output:\n%s\nerror.log:\n%s", out.String(), b)
		}
	})
	waitFor(t, "nginx to answer", 10*time.Second, func() bool {
		code, _, _ := tryGet(e.url("/"))
		return code == 200
	})
}

// nginx with both stable paths of a 2-instance app as its upstream
// servers, under 16 clients, while a swap takes the app to 1 instance:
// current-1.sock goes as v1's drain begins, nginx's connects to it fail
// with nothing sent and go to current.sock, and v1 drains well before its
// drain_timeout. The path used to name v1's socket until v1 had stopped:
// nginx kept opening connections to the retired version, its drain ran to
// the deadline, and what was in flight then was cut.
func TestNginxScaleDownUnderLoad(t *testing.T) {
	nginx := requireBinary(t, "nginx")
	e := newEnv(t)
	e.release("v1")
	e.release("v2")
	conf := func(instances int) string {
		return fmt.Sprintf(`[deployer]
listen = ""
state_dir = "run"
drain_timeout = "15s"

[apps.web]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
settle = "100ms"
instances = %d
`, instances)
	}
	e.writeConfig(conf(2))
	e.start()
	run := filepath.Join(e.dir, "run", "web")
	startNginx(t, e, nginx, filepath.Join(run, "current.sock"), filepath.Join(run, "current-1.sock"))

	l := startLoad(t, e.url("/"), 16)
	time.Sleep(time.Second)
	e.replaceConfig(conf(1))
	waitFor(t, "instances = 1 to be pending", 5*time.Second, func() bool {
		return slices.Contains(e.appStatus("web").Pending, "instances")
	})
	e.mustCLI("swap", "web", "v2")
	waitFor(t, "nginx to reach v2", 5*time.Second, func() bool {
		_, _, h := tryGet(e.url("/"))
		return h.Get("X-Version") == "v2"
	})
	waitNoDraining(t, e, "v1 to drain while the load runs", 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	got := l.finish()
	t.Logf("nginx in front, a swap from 2 instances to 1: %s", got)
	if got.failures() != 0 {
		t.Fatalf("failed requests through nginx: %s", got)
	}
	checkDrainsEnded(t, e, 1)
	if _, err := os.Lstat(filepath.Join(run, "current-1.sock")); err == nil {
		t.Error("current-1.sock is still there after the swap to 1 instance")
	}
}
