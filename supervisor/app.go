package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deployer/deployer/sockets"
)

// Errors of app operations, translated to API codes in one place (control.go).
var (
	ErrOpRunning  = errors.New("supervisor: another operation is running")
	ErrNoPrevious = errors.New("supervisor: no previous version to roll back to")
	ErrNotServing = errors.New("supervisor: app is not serving")
	ErrLaunch     = errors.New("supervisor: version failed")
	ErrTimeout    = errors.New("supervisor: operation timed out")
)

// timeoutError is the cause of an operation's context when the timeout of
// its request (SwapRequest.Timeout) passed; it matches ErrTimeout.
type timeoutError struct{ after time.Duration }

func (e *timeoutError) Error() string        { return fmt.Sprintf("timeout %s expired", e.after) }
func (e *timeoutError) Is(target error) bool { return target == ErrTimeout }

// withTimeout bounds an operation by its request's timeout (0: none). Once
// it passes, context.Cause(ctx) is a *timeoutError, which tells it apart
// from ready_timeout and from the daemon stopping.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, d, &timeoutError{after: d})
}

// progressFunc reports a step of an operation to whoever asked for it.
type progressFunc func(format string, args ...any)

// App supervises one [apps.NAME]: its serving version, the versions still
// draining, crash restarts, and the operations start, swap, stop.
type App struct {
	name string
	d    *Daemon
	logs *LogBuffer
	log  *slog.Logger
	cfg  atomic.Pointer[AppConfig]
	// reloaded is closed when a reload gives the app a new config
	// (setConfig), then replaced: loops that wait on a setting wake up.
	reloadMu sync.Mutex
	reloaded chan struct{}
	// holdMu makes Pause and Resume one step each (the hold file, then the
	// proxy): interleaved, the file and the proxy could disagree.
	holdMu sync.Mutex

	// op serialises operations; a second one is refused (acquireOp), never
	// queued: a CI job should learn at once that another deploy is running.
	op sync.Mutex
	// removed is set when a reload takes the app out of deploy.toml: no
	// start, swap or boot retry runs on it any more.
	removed atomic.Bool
	// booting is set while the daemon's own start of the app runs: an
	// operation waits for it (one attempt, within ready_timeout) instead of
	// being refused, since `status` already says serving a moment before.
	booting atomic.Bool

	mu       sync.Mutex
	serving  *version
	previous string // the version that served before the last swap
	last     string // the version to start again after a stop
	// lastConfigured is deploy.toml's version when last was set: if the
	// file names another one at the next start, the edit is the newer
	// decision and wins (startVersionLocked).
	lastConfigured string
	draining       map[*version]struct{}
	drains         sync.WaitGroup // one per version in draining
	// starting is the version a start or swap launched that neither
	// serves nor failed yet: the state file lists it, so that a daemon
	// taking over after a crash stops its processes (retireUnfinished).
	starting *version
	state    string // when nothing serves: starting, stopped or failed
	lastErr  string
	paused   bool
	// userStopped: stopped by `deployer stop`; boot retries leave it alone.
	userStopped bool
}

func newApp(d *Daemon, cfg *AppConfig) *App {
	a := &App{
		name:     cfg.Name,
		d:        d,
		logs:     newLogBuffer(DefaultLogLines),
		log:      d.log.With("app", cfg.Name),
		draining: make(map[*version]struct{}),
		state:    StateStopped,
		reloaded: make(chan struct{}),
	}
	a.cfg.Store(cfg)
	return a
}

// setConfig gives the app the config of a reload and wakes whoever waits
// on its settings.
func (a *App) setConfig(cfg *AppConfig) {
	a.cfg.Store(cfg)
	a.reloadMu.Lock()
	close(a.reloaded)
	a.reloaded = make(chan struct{})
	a.reloadMu.Unlock()
}

// reloadedC is closed by the next setConfig.
func (a *App) reloadedC() <-chan struct{} {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	return a.reloaded
}

func (a *App) layout() sockets.Layout { return a.d.layout }

// Start launches the app at version (its last or configured one when "")
// and moves traffic to it. Requests arriving meanwhile are held by the proxy.
func (a *App) Start(ctx context.Context, name string, progress progressFunc) (*Result, error) {
	if !a.acquireOp() {
		return nil, fmt.Errorf("%w on %s", ErrOpRunning, a.name)
	}
	defer a.op.Unlock()
	if a.removed.Load() {
		return nil, a.errRemoved()
	}
	return a.startLocked(ctx, "start", name, progress)
}

// errRemoved answers an operation on an app a reload took out of
// deploy.toml while the operation waited (a boot retry, a call that looked
// the app up just before).
func (a *App) errRemoved() error {
	return fmt.Errorf("%w %q: removed from deploy.toml", ErrUnknownApp, a.name)
}

// acquireOp takes the operation lock, or reports that another operation
// holds it. The daemon's own boot is waited for, not refused.
func (a *App) acquireOp() bool {
	if a.op.TryLock() {
		return true
	}
	if a.booting.Load() {
		a.op.Lock()
		return true
	}
	return false
}

// startLocked is Start with a.op held.
func (a *App) startLocked(ctx context.Context, op, name string, progress progressFunc) (*Result, error) {
	a.mu.Lock()
	if v := a.serving; v != nil {
		// Already what start asks for: success, so `deployer start` is
		// idempotent in scripts.
		a.mu.Unlock()
		progress("%s already serves %s", a.name, v.name)
		return &Result{OK: true, App: a.name, Op: op, NewVersion: v.name}, nil
	}
	if name == "" {
		name = a.startVersionLocked()
	}
	a.state = StateStarting
	a.userStopped = false
	a.mu.Unlock()

	start := time.Now()
	res := &Result{App: a.name, Op: op, NewVersion: name}
	v, err := a.launch(ctx, name, progress)
	if err == nil {
		err = a.abandonIfDone(ctx, v)
	}
	if err == nil {
		err = a.activate(v, nil)
		if err != nil {
			a.retireFailed(v)
		}
	}
	res.DurationMS = time.Since(start).Milliseconds()
	if err != nil {
		a.fail(err)
		fillFailure(res, err)
		return res, nil
	}
	res.ReadyMS, res.SwitchMS, res.TrafficMoved = res.DurationMS, res.DurationMS, true
	a.mu.Lock()
	a.serving, a.starting, a.lastErr = v, nil, ""
	a.setLastLocked(name)
	a.mu.Unlock()
	a.watch(v)
	a.d.saveState()
	progress("%s serves %s", a.name, name)
	res.OK = true
	return res, nil
}

// Swap launches version beside the serving one, moves new traffic to it once
// healthy, and drains the old one in the background (or before returning,
// with waitDrain). A failed launch leaves the serving version untouched.
func (a *App) Swap(ctx context.Context, op, name string, waitDrain bool, progress progressFunc) (*Result, error) {
	if !a.acquireOp() {
		return nil, fmt.Errorf("%w on %s: try again when it is done", ErrOpRunning, a.name)
	}
	defer a.op.Unlock()
	if a.removed.Load() {
		return nil, a.errRemoved()
	}
	a.mu.Lock()
	old := a.serving
	switch op {
	case "rollback":
		name = a.previous
		if name == "" {
			a.mu.Unlock()
			return nil, fmt.Errorf("%w: %s", ErrNoPrevious, a.name)
		}
	case "restart":
		if old == nil {
			a.mu.Unlock()
			return nil, fmt.Errorf("%w: %s", ErrNotServing, a.name)
		}
		name = old.name
	}
	a.mu.Unlock()
	if old == nil {
		// Nothing serves (stopped or failed): a swap is a start at version.
		return a.startLocked(ctx, op, name, progress)
	}

	start := time.Now()
	res := &Result{App: a.name, Op: op, OldVersion: old.name, NewVersion: name}
	v, err := a.launch(ctx, name, progress)
	res.ReadyMS = time.Since(start).Milliseconds()
	if err == nil {
		err = a.abandonIfDone(ctx, v)
	}
	if err != nil {
		res.DurationMS = time.Since(start).Milliseconds()
		fillFailure(res, err)
		a.setLastErr(err)
		a.log.Warn("swap failed", "version", name, "error", err)
		return res, nil
	}

	// A crash restart of old that finishes during activate would rename over
	// a stable path activate just moved, and one that saw old stopping
	// would end old's restarts and health checks for good: old.mu keeps
	// them out until old is retired (stopping) or, activation failed,
	// serves on with its stable paths restored.
	old.mu.Lock()
	err = a.activate(v, old)
	if err == nil {
		old.stopping = true
	}
	old.mu.Unlock()
	if err != nil {
		a.retireFailed(v)
		res.DurationMS = time.Since(start).Milliseconds()
		fillFailure(res, err)
		a.setLastErr(err)
		a.log.Warn("swap failed; the old version serves on", "version", name, "error", err)
		return res, nil
	}
	a.mu.Lock()
	a.serving, a.starting, a.previous, a.lastErr = v, nil, old.name, ""
	a.setLastLocked(name)
	a.beginDrainLocked(old, time.Now().Add(old.cfg.DrainTimeout))
	a.mu.Unlock()
	a.watch(v)
	a.d.saveState()
	res.SwitchMS, res.TrafficMoved = time.Since(start).Milliseconds(), true
	progress("%s now serves %s; draining %s", a.name, name, old.name)
	a.log.Info("swapped", "from", old.name, "version", name)

	drained := make(chan int, 1)
	go func() { drained <- a.drain(old, len(v.instances)) }()
	if waitDrain {
		progress("waiting for %s to drain (up to %s)", old.name, old.cfg.DrainTimeout)
		cut, ok := awaitDrain(ctx, drained)
		if !ok {
			// Traffic has moved and cannot move back: the timeout only
			// ends the wait. The drain goes on, bounded by drain_timeout.
			res.DurationMS = time.Since(start).Milliseconds()
			res.Outcome = OutcomeTimeout
			res.Error = fmt.Sprintf("%v while %s drained: %s serves all new traffic; %s drains on in the background (up to %s)",
				context.Cause(ctx), old.name, name, old.name, old.cfg.DrainTimeout)
			return res, nil
		}
		res.CutRequests = cut
		res.DrainMS = time.Since(start).Milliseconds() - res.SwitchMS
		progress("%s drained and stopped", old.name)
	}
	res.DurationMS = time.Since(start).Milliseconds()
	res.OK = true
	return res, nil
}

// abandonIfDone kills v, launched and healthy, if the operation's context
// ended meanwhile (its timeout passed, or the daemon is stopping): traffic
// has not moved yet, so the old version serves on untouched.
func (a *App) abandonIfDone(ctx context.Context, v *version) error {
	if ctx.Err() == nil {
		return nil
	}
	a.kill(v)
	reason := context.Cause(ctx)
	return &launchError{version: v.name, reason: fmt.Errorf("%w after it was healthy, before traffic moved", reason)}
}

// awaitDrain waits for the old version's drain to end and returns the
// requests it cut, or reports false when the operation's timeout passes
// first. A daemon that is stopping drains anyway, so that is waited for.
func awaitDrain(ctx context.Context, drained <-chan int) (int, bool) {
	select {
	case cut := <-drained:
		return cut, true
	case <-ctx.Done():
	}
	if errors.Is(context.Cause(ctx), ErrTimeout) {
		return 0, false
	}
	return <-drained, true
}

// swapWithin is Swap bounded by timeout (0: no bound beyond the app's own
// timeouts), counted from now.
func (a *App) swapWithin(ctx context.Context, timeout time.Duration, op, name string, waitDrain bool, progress progressFunc) (*Result, error) {
	ctx, cancel := withTimeout(ctx, timeout)
	defer cancel()
	res, err := a.Swap(ctx, op, name, waitDrain, progress)
	a.d.observer().swapDone(a.name, res, err)
	if res != nil && timeout > 0 {
		res.TimeoutMS = timeout.Milliseconds()
	}
	return res, err
}

// Stop drains the serving version and stops its processes. New requests are
// held (up to queue_timeout) until the app starts again.
func (a *App) Stop(ctx context.Context, progress progressFunc) (*Result, error) {
	if !a.acquireOp() {
		return nil, fmt.Errorf("%w on %s", ErrOpRunning, a.name)
	}
	defer a.op.Unlock()
	a.mu.Lock()
	a.userStopped = true
	a.mu.Unlock()
	return a.stopLocked(progress)
}

// stoppedByUser reports whether the last word on this app was `stop`.
func (a *App) stoppedByUser() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.userStopped
}

func (a *App) stopLocked(progress progressFunc) (*Result, error) {
	a.mu.Lock()
	v := a.serving
	if v == nil {
		a.state = StateStopped
		a.mu.Unlock()
		return &Result{OK: true, App: a.name, Op: "stop"}, nil
	}
	a.serving, a.state = nil, StateStopped
	a.setLastLocked(v.name)
	a.beginDrainLocked(v, time.Now().Add(v.cfg.DrainTimeout))
	a.mu.Unlock()
	start := time.Now()
	progress("draining %s of %s (up to %s)", v.name, a.name, v.cfg.DrainTimeout)
	v.markStopping()
	cut := a.drain(v, 0)
	a.d.saveState()
	progress("%s stopped", a.name)
	return &Result{OK: true, App: a.name, Op: "stop", OldVersion: v.name, CutRequests: cut,
		DurationMS: time.Since(start).Milliseconds()}, nil
}

// beginDrainLocked counts v among the versions draining, until deadline
// (kept in the state file, so a daemon taking over keeps it too); drain
// ends it. a.mu is held.
func (a *App) beginDrainLocked(v *version, deadline time.Time) {
	if a.starting == v {
		a.starting = nil
	}
	a.draining[v] = struct{}{}
	v.drainDeadline = deadline
	a.drains.Add(1)
}

// setLastLocked records name as the version to start again, with the
// version deploy.toml names now. a.mu is held.
func (a *App) setLastLocked(name string) {
	a.last, a.lastConfigured = name, a.cfg.Load().Version
}

// startVersionLocked is the version a start launches when none is named:
// the one that served last, so that a restart of the daemon (a reboot)
// never undoes a swap; but deploy.toml's version when it was edited since
// that one served, or when nothing served yet. a.mu is held.
func (a *App) startVersionLocked() string {
	configured := a.cfg.Load().Version
	switch {
	case a.last == "":
		return configured
	case a.lastConfigured != "" && a.lastConfigured != configured && a.last != configured:
		a.log.Info("deploy.toml names another version since the last one served: starting it",
			"version", configured, "last_served", a.last, "configured_then", a.lastConfigured)
		return configured
	}
	return a.last
}

func (a *App) fail(err error) {
	a.mu.Lock()
	a.state = StateFailed
	a.lastErr = err.Error()
	a.mu.Unlock()
}

func (a *App) setLastErr(err error) {
	a.mu.Lock()
	a.lastErr = err.Error()
	a.mu.Unlock()
}

// Pause holds new requests; the hold file makes it visible (and settable) on
// disk.
func (a *App) Pause() error {
	a.holdMu.Lock()
	defer a.holdMu.Unlock()
	if err := sockets.SetHold(a.layout(), a.name, true); err != nil {
		return err
	}
	a.setPaused(true)
	return nil
}

// Resume releases held requests in arrival order.
func (a *App) Resume() error {
	a.holdMu.Lock()
	defer a.holdMu.Unlock()
	if err := sockets.SetHold(a.layout(), a.name, false); err != nil {
		return err
	}
	a.setPaused(false)
	return nil
}

// setPaused applies the hold state; the hold-file watcher calls it too, so it
// is idempotent.
func (a *App) setPaused(p bool) {
	a.mu.Lock()
	changed := a.paused != p
	a.paused = p
	a.mu.Unlock()
	if p {
		a.d.proxy.Hold(a.name)
	} else {
		a.d.proxy.Release(a.name)
	}
	if changed {
		a.log.Info("hold", "paused", p)
		a.d.saveState()
	}
}

// shutdown drains whatever runs, for the daemon's exit.
func (a *App) shutdown() {
	a.op.Lock()
	defer a.op.Unlock()
	a.stopLocked(func(string, ...any) {})
	// Versions already draining finish on their own goroutines.
	a.drains.Wait()
}

func fillFailure(res *Result, err error) {
	res.Error = err.Error()
	if errors.Is(err, ErrTimeout) {
		res.Outcome = OutcomeTimeout
	}
	var le *launchError
	if errors.As(err, &le) {
		res.Output = le.output
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
