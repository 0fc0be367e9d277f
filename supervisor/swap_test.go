package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
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
// app's table and env lines (NAME = "value") to its env, and returns it once
// v1 serves.
func fakeAppDaemon(t *testing.T, settings string, env ...string) (*runningDaemon, *App, *version) {
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
%s
`, socketDir(t), exe, settings, appRoleEnv, strings.Join(env, "\n")))
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

// An outer proxy (nginx with current.sock and current-1.sock as its
// upstreams) opens its connections through the stable paths. A stable path
// the serving version no longer has (a swap from two instances to one;
// every one after a stop) used to keep naming the drained version's socket
// until its processes had stopped: new connections kept reaching it after
// the swap, its drain never saw zero connections, and the request in
// flight at drain_timeout was cut. Such a path now goes when the drain
// begins, so a new connect fails with nothing sent (nginx tries the next
// upstream) and what v1 accepted before finishes.
func TestDrainUnlinksExtraStableFirst(t *testing.T) {
	type outcome struct {
		started time.Time
		body    string
		err     error
	}
	// hammer sends slow GETs through path, one connection each, until
	// stop is closed.
	hammer := func(path string, stop chan struct{}) <-chan []outcome {
		out := make(chan []outcome, 1)
		c := &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", path)
			},
			DisableKeepAlives: true,
		}}
		go func() {
			var got []outcome
			for {
				select {
				case <-stop:
					out <- got
					return
				default:
				}
				o := outcome{started: time.Now()}
				res, err := c.Get("http://app" + slowPath)
				if err == nil {
					var b []byte
					b, err = io.ReadAll(res.Body)
					res.Body.Close()
					o.body = string(b)
				}
				o.err = err
				got = append(got, o)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
		return out
	}
	check := func(t *testing.T, got []outcome, since time.Time) {
		t.Helper()
		var v1Before, v1After, refused int
		for _, o := range got {
			switch {
			case o.err == nil && strings.Contains(o.body, "from v1"):
				if o.started.After(since.Add(100 * time.Millisecond)) {
					v1After++
				} else {
					v1Before++
				}
			case o.err == nil:
				t.Errorf("unexpected answer %q", o.body)
			case errors.Is(o.err, syscall.ENOENT) || errors.Is(o.err, syscall.ECONNREFUSED):
				refused++ // nothing sent: an outer proxy tries its next upstream
			default:
				t.Errorf("a request started %s after the drain began failed after it was sent: %v",
					o.started.Sub(since).Round(time.Millisecond), o.err)
			}
		}
		t.Logf("answered by v1 before the drain began: %d, after: %d; refused at connect: %d", v1Before, v1After, refused)
		if v1After > 0 {
			t.Errorf("%d connections opened after the drain began reached the drained version", v1After)
		}
	}

	t.Run("scale down", func(t *testing.T) {
		_, a, _ := fakeAppDaemon(t, "instances = 2\ndrain_timeout = \"2s\"\nsettle = \"0s\"")
		cfg := *a.cfg.Load()
		cfg.Instances = 1
		a.setConfig(&cfg)
		stop := make(chan struct{})
		results := hammer(a.layout().Stable("web", 1), stop)
		time.Sleep(200 * time.Millisecond)
		res, err := a.Swap(context.Background(), "swap", "v2", false, func(string, ...any) {})
		if err != nil || !res.OK {
			t.Fatalf("swap: %+v %v", res, err)
		}
		swapped := time.Now()
		time.Sleep(2500 * time.Millisecond) // past v1's drain_timeout
		close(stop)
		check(t, <-results, swapped)
	})

	t.Run("stop", func(t *testing.T) {
		_, a, _ := fakeAppDaemon(t, "drain_timeout = \"2s\"\nsettle = \"0s\"")
		stop := make(chan struct{})
		results := hammer(a.layout().Stable("web", 0), stop)
		time.Sleep(200 * time.Millisecond)
		began := time.Now()
		res, err := a.Stop(context.Background(), func(string, ...any) {})
		if err != nil {
			t.Fatal(err)
		}
		close(stop)
		t.Logf("stop took %dms", res.DurationMS)
		check(t, <-results, began)
	})
}
