package sockets

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

type holdReport struct {
	app  string
	held bool
}

// newHoldWatcher returns a HoldWatcher over a fresh state directory whose
// reports arrive on the returned channel.
func newHoldWatcher(t *testing.T) (*HoldWatcher, Layout, <-chan holdReport) {
	t.Helper()
	l := Layout{StateDir: t.TempDir()}
	reports := make(chan holdReport, 100)
	h, err := NewHoldWatcher(l, func(app string, held bool) { reports <- holdReport{app, held} }, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Error(err)
		}
	})
	return h, l, reports
}

// nextReport waits for the next report.
func nextReport(t *testing.T, reports <-chan holdReport) holdReport {
	t.Helper()
	select {
	case r := <-reports:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no report within 5s")
		return holdReport{}
	}
}

func expectReport(t *testing.T, reports <-chan holdReport, want holdReport) {
	t.Helper()
	if got := nextReport(t, reports); got != want {
		t.Fatalf("report %+v, want %+v", got, want)
	}
}

func TestHoldWatcherByHand(t *testing.T) {
	h, l, reports := newHoldWatcher(t)
	if err := h.Add("web"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(l.AppDir("web")); err != nil || !fi.IsDir() {
		t.Fatalf("Add did not create the app directory: %v", err)
	}
	expectReport(t, reports, holdReport{"web", false})

	// touch run/web/hold
	if err := os.WriteFile(l.Hold("web"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	expectReport(t, reports, holdReport{"web", true})

	// rm run/web/hold
	if err := os.Remove(l.Hold("web")); err != nil {
		t.Fatal(err)
	}
	expectReport(t, reports, holdReport{"web", false})

	// A quick create, remove, create ends held. The debounce usually
	// folds it into one report; however it is split, reports alternate
	// and the last says held.
	for _, create := range []bool{true, false, true} {
		if err := SetHold(l, "web", create); err != nil {
			t.Fatal(err)
		}
	}
	last := false
	for !last {
		r := nextReport(t, reports)
		if r.app != "web" || r.held == last {
			t.Fatalf("report %+v after held=%v: reports must alternate", r, last)
		}
		last = r.held
	}

	// mv a file over the hold path: the watch is on the directory, so a
	// replaced file is seen too.
	tmp := l.AppDir("web") + "/hold.tmp"
	if err := os.WriteFile(tmp, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(l.Hold("web")); err != nil {
		t.Fatal(err)
	}
	expectReport(t, reports, holdReport{"web", false})
	if err := os.Rename(tmp, l.Hold("web")); err != nil {
		t.Fatal(err)
	}
	expectReport(t, reports, holdReport{"web", true})
}

func TestHoldWatcherAddWhileHeld(t *testing.T) {
	h, l, reports := newHoldWatcher(t)
	if err := SetHold(l, "api", true); err != nil {
		t.Fatal(err)
	}
	if err := h.Add("api"); err != nil {
		t.Fatal(err)
	}
	expectReport(t, reports, holdReport{"api", true})

	// Adding again reports the state again, even though it did not change.
	if err := h.Add("api"); err != nil {
		t.Fatal(err)
	}
	expectReport(t, reports, holdReport{"api", true})
}

// TestHoldWatcherRemove: after Remove an app's changes are not reported. It
// changes the removed app first, then a watched one: had the first been
// reported, it would have come first, since its look was due first.
func TestHoldWatcherRemove(t *testing.T) {
	h, l, reports := newHoldWatcher(t)
	for _, app := range []string{"a", "b"} {
		if err := h.Add(app); err != nil {
			t.Fatal(err)
		}
	}
	initial := map[holdReport]bool{nextReport(t, reports): true, nextReport(t, reports): true}
	if !initial[holdReport{"a", false}] || !initial[holdReport{"b", false}] {
		t.Fatalf("initial reports %v", initial)
	}

	h.Remove("a")
	h.Remove("a") // again: nothing to do
	if err := SetHold(l, "a", true); err != nil {
		t.Fatal(err)
	}
	if err := SetHold(l, "b", true); err != nil {
		t.Fatal(err)
	}
	expectReport(t, reports, holdReport{"b", true})
}

// TestHoldWatcherOverflow: after an event queue overflow every app is
// looked at again, and changes whose events were lost are reported.
func TestHoldWatcherOverflow(t *testing.T) {
	h, l, reports := newHoldWatcher(t)
	if err := h.Add("web"); err != nil {
		t.Fatal(err)
	}
	expectReport(t, reports, holdReport{"web", false})

	// Lose the event: stop watching the directory behind the watcher's back.
	if err := h.w.Remove(l.AppDir("web")); err != nil {
		t.Fatal(err)
	}
	if err := SetHold(l, "web", true); err != nil {
		t.Fatal(err)
	}
	h.watchError(fsnotify.ErrEventOverflow)
	h.poke()
	expectReport(t, reports, holdReport{"web", true})
}

func TestHoldWatcherClosed(t *testing.T) {
	l := Layout{StateDir: t.TempDir()}
	h, err := NewHoldWatcher(l, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := h.Add("web"); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v, want ErrClosed", err)
	}
}

func TestHoldWatcherBadName(t *testing.T) {
	h, _, _ := newHoldWatcher(t)
	if err := h.Add("../etc"); !errors.Is(err, ErrBadName) {
		t.Errorf("Add(../etc): %v, want ErrBadName", err)
	}
}

func TestSetHold(t *testing.T) {
	l := Layout{StateDir: t.TempDir()}
	steps := []bool{true, true, false, false, true}
	for i, held := range steps {
		if err := SetHold(l, "web", held); err != nil {
			t.Fatalf("step %d SetHold(%v): %v", i, held, err)
		}
		if got := Held(l, "web"); got != held {
			t.Fatalf("step %d: Held = %v, want %v", i, got, held)
		}
	}
	fi, err := os.Stat(l.Hold("web"))
	if err != nil {
		t.Fatal(err)
	}
	// 0644 less the umask: never more than 0644, always owner read-write.
	if perm := fi.Mode().Perm(); fi.Size() != 0 || perm&^0o644 != 0 || perm&0o600 != 0o600 {
		t.Errorf("hold file: size %d mode %v, want empty, 0644", fi.Size(), fi.Mode().Perm())
	}
}
