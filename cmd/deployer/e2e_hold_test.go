package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pause: 200 concurrent requests arrive and wait; resume: all 200 answered.
func TestPauseHoldsRequests(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()
	e.mustCLI("pause", "web")
	if _, err := os.Stat(filepath.Join(e.dir, "run", "web", "hold")); err != nil {
		t.Fatalf("hold file after pause: %v", err)
	}

	const n = 200
	out := newOutcomes()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := http.Get(e.url("/"))
			if err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
			class, detail := classify(res, err)
			out.add(class, detail)
		}()
	}
	waitFor(t, "200 held requests", 10*time.Second, func() bool { return e.appStatus("web").Held == n })
	if got := out.total(); got != 0 {
		t.Fatalf("%d requests answered while paused", got)
	}
	e.mustCLI("resume", "web")
	wg.Wait()
	if out.counts["2xx"] != n {
		t.Fatalf("after resume: %s; want %d × 2xx", out, n)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "run", "web", "hold")); !os.IsNotExist(err) {
		t.Fatalf("hold file still there after resume: %v", err)
	}
}

// The hold file pauses and resumes when created or removed by hand.
func TestHoldFileByHand(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()
	hold := filepath.Join(e.dir, "run", "web", "hold")
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e.waitState("web", "paused", 5*time.Second)
	done := make(chan int, 1)
	go func() {
		res, err := http.Get(e.url("/"))
		if err != nil {
			done <- 0
			return
		}
		res.Body.Close()
		done <- res.StatusCode
	}()
	waitFor(t, "a held request", 5*time.Second, func() bool { return e.appStatus("web").Held == 1 })
	os.Remove(hold)
	select {
	case code := <-done:
		if code != 200 {
			t.Fatalf("held request answered %d after the hold file went", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held request not released after removing the hold file")
	}
	e.waitState("web", "serving", 5*time.Second)
}

// queue_timeout passes → 503 with Retry-After; max_queued exceeded → 503 at once.
func TestQueueLimits(t *testing.T) {
	e := newEnv(t)
	e.release("v1")
	e.writeConfig(`[deployer]
listen = "%ADDR%"
state_dir = "run"
queue_timeout = "1s"
max_queued = 5

[apps.web]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
settle = "0s"
`)
	e.start()
	e.mustCLI("pause")

	start := time.Now()
	code, _, h := e.get("/")
	if code != 503 || h.Get("Retry-After") == "" {
		t.Fatalf("held past queue_timeout: %d Retry-After %q, want 503 with Retry-After", code, h.Get("Retry-After"))
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 5*time.Second {
		t.Fatalf("503 after %s, want about queue_timeout (1s)", d)
	}

	// Fill the queue with 5 slow waiters, then the 6th is refused at once.
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, err := http.Get(e.url("/")); err == nil {
				res.Body.Close()
			}
		}()
	}
	waitFor(t, "5 held requests", 5*time.Second, func() bool { return e.appStatus("web").Held == 5 })
	start = time.Now()
	code, _, h = e.get("/")
	if code != 503 || h.Get("Retry-After") == "" || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("beyond max_queued: %d after %s; want 503 at once", code, time.Since(start))
	}
	wg.Wait()
}

// kill -9 of the app under load: GETs are held and served after the restart.
func TestCrashRestartUnderLoad(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()
	l := startLoad(t, e.url("/"), 16)
	time.Sleep(300 * time.Millisecond)
	for i := 0; i < 3; i++ {
		st := e.appStatus("web")
		pid := st.Instances[0].PID
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
		waitFor(t, "a restarted instance", 15*time.Second, func() bool {
			s := e.appStatus("web")
			return len(s.Instances) == 1 && s.Instances[0].PID != pid && s.Instances[0].PID != 0 && s.Instances[0].Healthy
		})
		time.Sleep(300 * time.Millisecond)
	}
	got := l.finish()
	t.Logf("3 kills under load: %s", got)
	if got.failures() != 0 {
		t.Fatalf("failed requests across crashes: %s", got)
	}
	if r := e.appStatus("web").Instances[0].Restarts; r != 3 {
		t.Fatalf("restarts = %d, want 3", r)
	}
}

// stop holds requests until start; start brings the app back.
func TestStopThenStart(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()
	pid := e.appStatus("web").Instances[0].PID
	e.mustCLI("stop", "web")
	e.waitState("web", "stopped", 5*time.Second)
	if syscall.Kill(pid, 0) == nil {
		t.Fatalf("pid %d still alive after stop", pid)
	}
	done := make(chan int, 1)
	go func() {
		res, err := http.Get(e.url("/"))
		if err != nil {
			done <- 0
			return
		}
		res.Body.Close()
		done <- res.StatusCode
	}()
	waitFor(t, "a held request", 5*time.Second, func() bool { return e.appStatus("web").Held == 1 })
	out := e.mustCLI("start", "web")
	if code := <-done; code != 200 {
		t.Fatalf("request held across stop/start answered %d:\n%s", code, out)
	}
	if st := e.appStatus("web"); st.State != "serving" || st.Version != "v1" {
		t.Fatalf("after start: %s %s", st.State, st.Version)
	}
	_ = strconv.Itoa
}

// Which version a new daemon starts after a clean shutdown: the one that
// served last (a reboot never undoes a swap), unless deploy.toml's version
// was edited since it served; then the edit, the newer decision, wins.
func TestStartAfterShutdown(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.release("v3")
	e.start()
	e.mustCLI("swap", "web", "v2")
	e.stopDaemon()

	e.start()
	if st := e.appStatus("web"); st.Version != "v2" {
		t.Fatalf("after a restart of the daemon: serving %q, want v2 (the swap stays done)", st.Version)
	}
	e.stopDaemon()

	e.writeConfig(strings.Replace(basicConfigText("", ""), `version = "v1"`, `version = "v3"`, 1))
	e.start()
	if st := e.appStatus("web"); st.Version != "v3" {
		t.Fatalf("after version = \"v3\" was written to deploy.toml: serving %q, want v3", st.Version)
	}
	if !strings.Contains(e.logs.String(), "deploy.toml names another version since the last one served") {
		t.Errorf("the daemon did not say why it starts v3 rather than v2:\n%s", e.logs.String())
	}
	e.stopDaemon()

	// v3 served last with v3 configured: it starts again.
	e.start()
	if st := e.appStatus("web"); st.Version != "v3" {
		t.Fatalf("third restart: serving %q, want v3", st.Version)
	}
}
