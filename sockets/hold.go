package sockets

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// HoldDebounce is how long HoldWatcher lets the events about one app's hold
// file settle before it looks at the file.
const HoldDebounce = 20 * time.Millisecond

// Held reports whether app is paused: whether its hold file exists.
func Held(l Layout, app string) bool {
	_, err := os.Stat(l.Hold(app))
	return err == nil
}

// SetHold pauses (held) or resumes app by creating an empty hold file (mode
// 0644, creating the app directory if needed) or removing it. Setting the
// state app is already in succeeds and changes nothing.
func SetHold(l Layout, app string, held bool) error {
	if err := checkName("app", app); err != nil {
		return err
	}
	path := l.Hold(app)
	if !held {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sockets: resume %s: %w", app, err)
		}
		return nil
	}
	if err := os.MkdirAll(l.AppDir(app), 0o755); err != nil {
		return fmt.Errorf("sockets: pause %s: %w", app, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("sockets: pause %s: %w", app, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sockets: pause %s: %w", app, err)
	}
	return nil
}

// HoldWatcher tells when an app's hold file (Layout.Hold) appears or
// disappears, whether by `deployer pause`, by SetHold or by hand: the
// contract lets users pause an app with touch and resume it with rm.
//
// It uses one inotify instance for all apps and watches each app directory,
// never the hold file itself, since a file replaced by mv or an editor takes
// its watch with it (PITFALLS). Events only schedule a look: after
// HoldDebounce without further events about an app, the file is Stat'ed and
// onChange is called if the result differs from what was last reported. So a
// quick create, remove, create is reported once, as held, and calls for an
// app always alternate between held and not held.
//
// onChange is called from a single goroutine, one call at a time. It may
// call Add and Remove, but not Close (which waits for that goroutine), and it
// should return quickly: events queue behind it.
type HoldWatcher struct {
	layout   Layout
	onChange func(app string, held bool)
	logger   *slog.Logger
	w        *fsnotify.Watcher
	wake     chan struct{} // capacity 1: look at the due apps now
	done     chan struct{} // closed when run returns

	mu     sync.Mutex
	apps   map[string]*holdState
	byHold map[string]string // hold file path → app
	byDir  map[string]string // app directory → app
	closed bool
}

// holdState is what HoldWatcher knows about one app.
type holdState struct {
	dir, hold string
	due       time.Time // when to look at the hold file; zero: no look pending
	reported  bool      // whether held has been reported since Add
	held      bool      // the state last reported
}

// NewHoldWatcher returns a HoldWatcher watching no app yet; Add apps to it.
// onChange receives every change (see HoldWatcher); logger, which may be
// nil, receives the watcher's own trouble, such as a watched directory being
// removed.
func NewHoldWatcher(l Layout, onChange func(app string, held bool), logger *slog.Logger) (*HoldWatcher, error) {
	if onChange == nil {
		onChange = func(string, bool) {}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("sockets: hold watcher: %w", err)
	}
	h := &HoldWatcher{
		layout:   l,
		onChange: onChange,
		logger:   logger,
		w:        w,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		apps:     make(map[string]*holdState),
		byHold:   make(map[string]string),
		byDir:    make(map[string]string),
	}
	go h.run()
	return h, nil
}

// Add watches app's hold file, creating the app directory (0755) if it is
// missing. Shortly after, onChange reports app's current state, held or not,
// even if it was reported before; from then on it reports every change.
//
// Adding an app that is already watched renews its watch, which repairs one
// lost when the app directory was removed and created again.
func (h *HoldWatcher) Add(app string) error {
	if err := checkName("app", app); err != nil {
		return err
	}
	dir := h.layout.AppDir(app)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("sockets: hold watch %s: %w", app, err)
	}
	// The watch is in place before the first look, which is scheduled below:
	// a change after this point is seen by an event, one before by the look.
	if err := h.w.Add(dir); err != nil {
		if errors.Is(err, fsnotify.ErrClosed) {
			return ErrClosed
		}
		return fmt.Errorf("sockets: hold watch %s: %w", app, err)
	}

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrClosed
	}
	st := h.apps[app]
	if st == nil {
		st = &holdState{dir: dir, hold: h.layout.Hold(app)}
		h.apps[app] = st
		h.byHold[st.hold] = app
		h.byDir[dir] = app
	}
	st.reported = false
	st.due = time.Now()
	h.mu.Unlock()

	h.poke()
	return nil
}

// Remove stops watching app. A report about app that was already being
// delivered may still arrive; none is started afterwards.
func (h *HoldWatcher) Remove(app string) {
	h.mu.Lock()
	st := h.apps[app]
	if st != nil {
		delete(h.apps, app)
		delete(h.byHold, st.hold)
		delete(h.byDir, st.dir)
	}
	h.mu.Unlock()
	if st != nil {
		// Fails only if the watch is gone already (directory removed) or the
		// watcher is closed: nothing left to undo either way.
		_ = h.w.Remove(st.dir)
	}
}

// Close stops the watcher and waits until onChange is no longer running. It
// must not be called from onChange. It is safe to call more than once.
func (h *HoldWatcher) Close() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	err := h.w.Close() // closes Events and Errors, which ends run
	<-h.done
	if err != nil {
		return fmt.Errorf("sockets: hold watcher: %w", err)
	}
	return nil
}

// poke makes run look at the due apps without waiting for an event.
func (h *HoldWatcher) poke() {
	select {
	case h.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// run is the watcher's goroutine: it turns events into scheduled looks and
// performs the looks that are due. It stays quick between events, since
// fsnotify's Events channel is unbuffered (PITFALLS).
func (h *HoldWatcher) run() {
	defer close(h.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		if next, ok := h.nextDue(); ok {
			timer.Reset(time.Until(next))
		} else {
			timer.Stop()
		}
		select {
		case ev, ok := <-h.w.Events:
			if !ok {
				return
			}
			h.event(ev)
		case err, ok := <-h.w.Errors:
			if !ok {
				return
			}
			h.watchError(err)
		case <-h.wake:
		case <-timer.C:
		}
		h.settle()
	}
}

// event schedules a look at the hold file the event is about.
func (h *HoldWatcher) event(ev fsnotify.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if app, ok := h.byHold[ev.Name]; ok {
		// Debounce: the kernel coalesces identical unread events, so their
		// number means nothing; only the state once they stop does.
		h.apps[app].due = time.Now().Add(HoldDebounce)
		return
	}
	if app, ok := h.byDir[ev.Name]; ok && ev.Has(fsnotify.Remove|fsnotify.Rename) {
		// The directory went, and its watch with it: the hold file is gone
		// from the path, so app is no longer held; but later changes go
		// unseen until Add is called again.
		h.logger.Warn("hold watch lost: app directory removed", "app", app, "dir", ev.Name)
		h.apps[app].due = time.Now()
	}
}

// watchError handles an error from the watcher. After ErrEventOverflow
// events were dropped, so every app is looked at again; other errors are
// rare, and a fresh look is just as cheap a remedy.
func (h *HoldWatcher) watchError(err error) {
	if !errors.Is(err, fsnotify.ErrEventOverflow) {
		h.logger.Warn("hold watch error", "error", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	for _, st := range h.apps {
		st.due = now
	}
}

// nextDue returns the earliest scheduled look.
func (h *HoldWatcher) nextDue() (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var next time.Time
	for _, st := range h.apps {
		if !st.due.IsZero() && (next.IsZero() || st.due.Before(next)) {
			next = st.due
		}
	}
	return next, !next.IsZero()
}

// settle looks at every hold file whose look is due and reports the changes,
// earliest scheduled first. onChange runs without the lock held, so it may
// call Add and Remove.
func (h *HoldWatcher) settle() {
	type look struct {
		app  string
		hold string
		due  time.Time
	}
	var looks []look
	now := time.Now()
	h.mu.Lock()
	for app, st := range h.apps {
		if !st.due.IsZero() && !st.due.After(now) {
			looks = append(looks, look{app, st.hold, st.due})
			st.due = time.Time{}
		}
	}
	h.mu.Unlock()
	slices.SortFunc(looks, func(a, b look) int { return a.due.Compare(b.due) })

	for _, lk := range looks {
		_, err := os.Stat(lk.hold)
		held := err == nil
		h.mu.Lock()
		st, ok := h.apps[lk.app]
		report := ok && !h.closed && (!st.reported || st.held != held)
		if report {
			st.reported, st.held = true, held
		}
		h.mu.Unlock()
		if report {
			h.onChange(lk.app, held)
		}
	}
}
