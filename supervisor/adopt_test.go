package supervisor

import (
	"os"
	"os/exec"
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
