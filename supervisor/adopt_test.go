package supervisor

import (
	"bytes"
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/sockets"
)

// A version a daemon took over while it drained keeps the deadline the
// state file gave it, so that the state this daemon writes carries it on:
// a third daemon taking over (another upgrade, a crash) must not find it
// zero and cut the drain at once.
func TestAdoptKeepsDrainDeadline(t *testing.T) {
	d := newTestDaemon(t)
	// A process that outlives SIGTERM: the drain started by adopt stops
	// it only after stop_timeout, long after the checks below.
	cmd := exec.Command("sh", "-c", `trap "" TERM; sleep 30`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var a *App
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if a != nil {
			a.drains.Wait() // its last log lines come before the test ends
		}
	})
	ticks, err := startTicks(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Hour).Truncate(time.Second)
	a, err = d.app("web")
	if err != nil {
		t.Fatal(err)
	}
	a.adopt(stateApp{Draining: []stateVersion{{
		Version:   "v0",
		Instances: []stateInstance{{PID: cmd.Process.Pid, StartTicks: ticks, Addr: "127.0.0.1:1"}},
		Deadline:  deadline,
	}}})
	got := a.persisted().Draining
	if len(got) != 1 || !got[0].Deadline.Equal(deadline) {
		t.Fatalf("the state written after adopting a draining version: %+v, want its deadline %s", got, deadline)
	}
}

// Adopting an app writes no state file: what the last daemon wrote stays
// until every app is adopted. (A paused app's adoption wrote one in which
// it, and every app after it, served nothing; a crash then made the next
// daemon start them afresh beside their running processes.)
func TestAdoptWritesNoState(t *testing.T) {
	d := newUnstartedDaemon(t)
	a, err := d.app("web")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(a.layout().AppDir("web"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := sockets.SetHold(a.layout(), "web", true); err != nil {
		t.Fatal(err)
	}
	const written = `{"apps": {"web": {"last": "v1"}}, "note": "the last daemon's"}`
	if err := os.WriteFile(a.layout().StateFile(), []byte(written), 0o644); err != nil {
		t.Fatal(err)
	}
	a.adopt(stateApp{Last: "v1"})
	if b, err := os.ReadFile(a.layout().StateFile()); err != nil || string(b) != written {
		t.Errorf("the state file after adopting a paused app: %q, %v; want it untouched", b, err)
	}
	a.mu.Lock()
	paused := a.paused
	a.mu.Unlock()
	if !paused {
		t.Error("the app is not paused after adoption with its hold file present")
	}
}

// A daemon that takes over drains and stops a version by the settings it
// was launched with, as the daemon before would have, and status keeps
// listing the edits made since as pending. adoptVersion used to rebuild
// the version's config from deploy.toml as it is now: a drain_timeout cut
// from 30s to 1s applied to processes launched under 30s, and a changed
// command or env was no longer pending though the processes ran the old.
func TestAdoptKeepsLaunchSettings(t *testing.T) {
	_, a, v1 := fakeAppDaemon(t, "drain_timeout = \"30s\"\nstop_signal = \"SIGINT\"\nsettle = \"0s\"")
	cfg := *a.cfg.Load()
	cfg.DrainTimeout, cfg.StopTimeout, cfg.StopSignal = time.Second, 2*time.Second, syscall.SIGTERM
	cfg.Command = append(slices.Clone(cfg.Command), "-extra")
	cfg.Env = maps.Clone(cfg.Env)
	cfg.Env["NEW"] = "1"
	a.setConfig(&cfg)
	before := pendingChanges(v1.cfg, a.cfg.Load())

	// Through the state file's JSON, as the next daemon reads it.
	b, err := json.Marshal(v1.persisted(a.cfg.Load()))
	if err != nil {
		t.Fatal(err)
	}
	var sv stateVersion
	if err := json.Unmarshal(b, &sv); err != nil {
		t.Fatal(err)
	}
	adopted := a.adoptVersion(sv)
	if adopted == nil {
		t.Fatal("nothing adopted")
	}
	got := adopted.cfg
	if got.DrainTimeout != 30*time.Second || got.StopSignal != syscall.SIGINT || got.StopTimeout != v1.cfg.StopTimeout {
		t.Errorf("adopted stop settings: drain %s, signal %s, stop %s; want the launch's 30s, SIGINT, %s",
			got.DrainTimeout, got.StopSignal, got.StopTimeout, v1.cfg.StopTimeout)
	}
	if !slices.Equal(got.Command, v1.cfg.Command) {
		t.Errorf("adopted command %q, want the launch's %q", got.Command, v1.cfg.Command)
	}
	after := pendingChanges(got, a.cfg.Load())
	if !slices.Equal(after, before) {
		t.Errorf("pending after the takeover %q, before %q", after, before)
	}
	if !slices.Contains(after, "env") || bytes.Contains(b, []byte(`"NEW"`)) {
		t.Errorf("env: pending %q, state %s; want env pending and no env values in the state", after, b)
	}
}

// A start or swap that the last daemon began and never finished (it crashed
// while the new version was launched, here after its stable path moved)
// left processes that no one stopped: the state file did not list them.
// The next daemon stops them, as after a failed swap, and the stable path
// names the serving version's socket again.
func TestAdoptRetiresUnfinishedLaunch(t *testing.T) {
	d := newTestDaemon(t)
	a, err := d.app("web")
	if err != nil {
		t.Fatal(err)
	}
	dir := a.layout().AppDir("web")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	serve := func(name string) string {
		path := filepath.Join(dir, name)
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		return path
	}
	s1, s2 := serve("v1-0.sock"), serve("v2-0.sock")
	p1, t1, v1Exited := standIn(t)
	p2, t2, v2Exited := standIn(t)
	stable := a.layout().Stable("web", 0)
	if err := sockets.Swap(s1, stable); err != nil {
		t.Fatal(err)
	}
	if err := sockets.Swap(s2, stable); err != nil { // the swap's rename, then the crash
		t.Fatal(err)
	}
	t.Cleanup(a.drains.Wait)
	t.Cleanup(d.cancel) // first: no crash restart of v1 when its stand-in is killed

	a.adopt(stateApp{
		Serving:  &stateVersion{Version: "v1", Instances: []stateInstance{{PID: p1, StartTicks: t1, Socket: s1}}},
		Starting: &stateVersion{Version: "v2", Instances: []stateInstance{{PID: p2, StartTicks: t2, Socket: s2}}},
	})
	if !sameFile(stable, s1) {
		t.Errorf("%s does not name v1's socket after the takeover", stable)
	}
	select {
	case <-v2Exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the unfinished launch's process still runs 10s after the takeover")
	}
	select {
	case <-v1Exited:
		t.Fatal("the serving version's process was stopped")
	default:
	}
	a.mu.Lock()
	serving := a.serving
	a.mu.Unlock()
	if serving == nil || serving.name != "v1" {
		t.Errorf("serving %v after the takeover, want v1", serving)
	}
	if sa := a.persisted(); sa.Starting != nil {
		t.Errorf("the state still lists %s as starting", sa.Starting.Version)
	}
}

// An app removed from deploy.toml while its old version drained keeps that
// drain's deadline when the next daemon stops what it left: the drain used
// to start again, a whole drain_timeout (30s by default) from the takeover.
func TestRetireRemovedKeepsDrainDeadline(t *testing.T) {
	d, _, _ := fakeAppDaemon(t, "")
	dir := filepath.Join(d.layout.StateDir, "gone")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "v1-0.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// An outer proxy's connection that stays open: the drain waits for
	// it until the deadline.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pid, ticks, exited := standIn(t)

	d.retireRemoved("gone", stateApp{Draining: []stateVersion{{
		Version:   "v1",
		Instances: []stateInstance{{PID: pid, StartTicks: ticks, Socket: sock}},
		Deadline:  time.Now().Add(500 * time.Millisecond),
	}}})
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the removed app's draining version still runs 5s after the takeover; its deadline was 500ms away")
	}
	eventually(t, "the removed app forgotten", func() bool { return len(d.removingApps()) == 0 })
}

// standIn starts a process that stands for an app's (in a process group of
// its own, as the daemon starts them), killed at the test's end; exited is
// closed once it has exited and been reaped.
func standIn(t *testing.T) (pid int, ticks uint64, exited <-chan struct{}) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-done })
	ticks, err := startTicks(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid, ticks, done
}
