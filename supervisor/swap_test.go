package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/sockets"
)

// A swap whose move of the stable path fails leaves the old version
// serving, still watched: a process of it that crashed while the swap
// moved its paths is restarted. Its crash watcher (and health loop) used
// to see the old version as retiring for that moment and quit for good.
func TestFailedActivationKeepsOldWatched(t *testing.T) {
	d, a, old := fakeAppDaemon(t, `health_interval = "50ms"`)
	crashed, _, _, _ := old.instances[0].snapshot()

	// The move fails after v1's process crashed and its crash watcher and
	// health loop had time to look at v1.
	d.swapStable = func(string, string) error {
		syscall.Kill(crashed.pid, syscall.SIGKILL)
		<-crashed.done
		time.Sleep(300 * time.Millisecond) // 6 health intervals
		return errors.New("test: the stable path cannot be replaced")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := a.Swap(ctx, "swap", "v2", false, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || res.TrafficMoved || !strings.Contains(res.Error, "cannot be replaced") {
		t.Fatalf("swap: %+v, want it failed by the move", res)
	}
	a.mu.Lock()
	serving, lastErr := a.serving, a.lastErr
	a.mu.Unlock()
	if serving != old {
		t.Fatalf("after the failed swap %v serves, want v1", serving.name)
	}
	if !strings.Contains(lastErr, "cannot be replaced") {
		t.Errorf("the app's last error is %q, want the failed move", lastErr)
	}

	eventually(t, "v1's crashed process to be restarted and in rotation", func() bool {
		p, _, healthy, _ := old.instances[0].snapshot()
		return p != crashed && !p.exited() && healthy
	})
}

// A swap whose move of the stable paths fails partway undoes what it did:
// the stable paths it moved point at the old version's sockets again, or
// are removed where the old version has no instance (a scale-up; they were
// left on the new version's sockets, which then went), and the old
// version's instances are in rotation as before (one out of rotation was
// put back in: the proxy's Serve marks every target ready).
func TestFailedActivationRestores(t *testing.T) {
	d := newTestDaemon(t)
	a, err := d.app("web")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(a.layout().AppDir("web"), 0o755); err != nil {
		t.Fatal(err)
	}
	var hits [2]atomic.Int64
	listen := func(v *version, i int) string {
		path, err := a.layout().Unique("web", v.name, i)
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if v.name == "v1" {
				hits[i].Add(1)
			}
		})}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		// A process for the log lines; nothing signals it here.
		v.instances[i].set(&process{pid: 99990 + i, done: make(chan struct{})}, endpoint{network: "unix", addr: path}, true)
		return path
	}
	stableIs := func(i int, want string) bool { return sameFile(a.layout().Stable("web", i), want) }

	cfg := *a.cfg.Load()
	cfg.Instances = 2
	old := newVersion("v1", &cfg)
	oldPaths := []string{listen(old, 0), listen(old, 1)}
	for i, p := range oldPaths {
		if err := sockets.Swap(p, a.layout().Stable("web", i)); err != nil {
			t.Fatal(err)
		}
	}
	d.proxy.Serve("web", old.key, targets(old))
	// Instance 1 fails its health checks: out of rotation.
	sick, _, _, _ := old.instances[1].snapshot()
	a.setInRotation(old, old.instances[1], sick, false, errors.New("test: GET /healthz answered 503"))
	send := func() {
		for range 10 {
			d.publicHandler().ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://web/", nil))
		}
	}
	send()
	if n := hits[1].Load(); n != 0 || hits[0].Load() != 10 {
		t.Fatalf("before the swap the instances got %d and %d of 10 requests, want 10 and 0", hits[0].Load(), n)
	}

	cfg4 := cfg
	cfg4.Instances = 4
	v := newVersion("v2", &cfg4)
	for i := range 4 {
		listen(v, i)
	}
	moves := 0
	d.swapStable = func(bound, stable string) error {
		if moves++; moves == 4 {
			return errors.New("test: the stable path cannot be replaced")
		}
		return sockets.Swap(bound, stable)
	}
	old.mu.Lock()
	err = a.activate(v, old)
	old.mu.Unlock()
	if err == nil {
		t.Fatal("activate succeeded")
	}
	for i, p := range oldPaths {
		if !stableIs(i, p) {
			t.Errorf("stable path %d does not name v1's socket again", i)
		}
	}
	if _, err := os.Lstat(a.layout().Stable("web", 2)); !os.IsNotExist(err) {
		t.Errorf("stable path 2, which v1 has no instance for, is left (%v): it names v2's socket", err)
	}
	hits[0].Store(0)
	send()
	if n := hits[1].Load(); n != 0 || hits[0].Load() != 10 {
		t.Errorf("after the failed activation the instances got %d and %d of 10 requests, want 10 and 0 (instance 1 is out of rotation)", hits[0].Load(), n)
	}
}

// A request the proxy sent the new version in the moment it had traffic,
// before the swap failed on the stable path, is answered by it: the failed
// version drains, as a retired one does, before its processes stop. It
// used to be cut at once (502).
func TestFailedSwapFinishesItsRequests(t *testing.T) {
	d, a, _ := fakeAppDaemon(t, "")

	answer := make(chan string, 1)
	d.swapStable = func(string, string) error {
		go func() {
			w := httptest.NewRecorder()
			d.publicHandler().ServeHTTP(w, httptest.NewRequest("GET", "http://web"+slowPath, nil))
			answer <- fmt.Sprintf("%d %s", w.Code, strings.TrimSpace(w.Body.String()))
		}()
		eventually(t, "v2 to get the request", func() bool {
			return len(a.logs.Tail(10, func(l LogLine) bool { return l.Version == "v2" && l.Text == "slow request" })) > 0
		})
		return errors.New("test: the stable path cannot be replaced")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := a.Swap(ctx, "swap", "v2", false, func(string, ...any) {})
	if err != nil || res.OK {
		t.Fatalf("swap: %+v, %v; want it failed by the move", res, err)
	}
	select {
	case got := <-answer:
		if got != "200 slow answer from v2" {
			t.Errorf("the request v2 took before the swap failed: %q, want v2's answer", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer 10s after the swap failed")
	}
	eventually(t, "v2 to be stopped", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.draining) == 0
	})
}

// fakeAppDaemon runs a daemon for app web, version v1 played by the test
// binary (runApp) with its health checks on, settings adds lines to the
// app's table, and returns it once v1 serves.
func fakeAppDaemon(t *testing.T, settings string) (*runningDaemon, *App, *version) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := loadString(t, fmt.Sprintf(`
[deployer]
listen = ""
state_dir = %q
[apps.web]
command = [%q, "-test.run=^$"]
version = "v1"
health = "/healthz"
%s
[apps.web.env]
%s = "1"
`, socketDir(t), exe, settings, appRoleEnv))
	d := runDaemon(t, cfg, DaemonOptions{})
	d.waitReady(t)
	a, err := d.app("web")
	if err != nil {
		t.Fatal(err)
	}
	var v1 *version
	eventually(t, "v1 to serve", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		v1 = a.serving
		return v1 != nil
	})
	return d, a, v1
}
