package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deployer/deployer/proxy"
	"github.com/deployer/deployer/sockets"
)

// Errors of app operations, translated to API codes in one place (control.go).
var (
	ErrOpRunning  = errors.New("supervisor: another operation is running")
	ErrNoPrevious = errors.New("supervisor: no previous version to roll back to")
	ErrNotServing = errors.New("supervisor: app is not serving")
	ErrLaunch     = errors.New("supervisor: version failed")
)

// failureLines is how many of a failed version's output lines a failure
// report carries.
const failureLines = 20

// progressFunc reports a step of an operation to whoever asked for it.
type progressFunc func(format string, args ...any)

// launchError is a failed launch: the reason and the version's last output.
type launchError struct {
	version string
	reason  error
	output  []string
}

func (e *launchError) Error() string {
	return fmt.Sprintf("version %s: %v", e.version, e.reason)
}
func (e *launchError) Unwrap() []error { return []error{ErrLaunch, e.reason} }

// App supervises one [apps.NAME]: its serving version, the versions still
// draining, crash restarts, and the operations start, swap, stop.
type App struct {
	name string
	d    *Daemon
	logs *LogBuffer
	log  *slog.Logger
	cfg  atomic.Pointer[AppConfig]

	// op serialises operations; a second one is refused (acquireOp), never
	// queued: a CI job should learn at once that another deploy is running.
	op sync.Mutex
	// booting is set while the daemon's own start of the app runs: an
	// operation waits for it (one attempt, within ready_timeout) instead of
	// being refused, since `status` already says serving a moment before.
	booting atomic.Bool

	mu       sync.Mutex
	serving  *version
	previous string // the version that served before the last swap
	last     string // the version to start again after a stop
	draining map[*version]struct{}
	drains   sync.WaitGroup // one per version in draining
	state    string         // when nothing serves: starting, stopped or failed
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
	}
	a.cfg.Store(cfg)
	return a
}

func (a *App) layout() sockets.Layout { return a.d.layout }

// launch starts every instance of a new version and waits until all of them
// are healthy and have stayed so for the settle time. If any fails, all are
// killed and a *launchError says why.
func (a *App) launch(ctx context.Context, name string, progress progressFunc) (*version, error) {
	cfg := a.cfg.Load()
	if err := ValidVersion(name); err != nil {
		return nil, err
	}
	v := newVersion(name, cfg)
	progress("launching %s of %s (%d instance%s)", name, a.name, cfg.Instances, plural(cfg.Instances))
	ctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()

	// The first instance to fail says why; the others then fail only
	// because the launch was cancelled, which would hide the reason.
	var (
		failOnce sync.Once
		failure  error
	)
	fail := func(err error) {
		failOnce.Do(func() { failure = err })
		cancel() // one failed: none will move, stop waiting for the others
	}
	var wg sync.WaitGroup
	for _, in := range v.instances {
		p, ep, err := a.startInstance(v, in.index)
		if err != nil {
			fail(fmt.Errorf("instance %d: %w", in.index, err))
			break
		}
		in.set(p, ep, false)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := waitReady(ctx, p, ep, cfg.Health, a.d.settle(cfg)); err != nil {
				if errors.Is(ctx.Err(), context.DeadlineExceeded) && !p.exited() {
					err = fmt.Errorf("not healthy within %s: %w", cfg.ReadyTimeout, err)
				}
				fail(fmt.Errorf("instance %d (pid %d): %w", in.index, p.pid, err))
				return
			}
			in.setHealthy(true)
			progress("%s instance %d (pid %d) is healthy", name, in.index, p.pid)
		}()
	}
	wg.Wait()
	if err := failure; err != nil {
		a.kill(v)
		return nil, &launchError{version: name, reason: err, output: a.outputOf(v)}
	}
	v.state.Store(StateServing)
	return v, nil
}

// startInstance launches the process for instance i of v on a fresh socket
// (or port).
func (a *App) startInstance(v *version, i int) (*process, endpoint, error) {
	cfg := v.cfg
	vars := Vars{App: a.name, Version: v.name, Instance: i}
	var ep endpoint
	if cfg.UsesPort() {
		port, err := freePort()
		if err != nil {
			return nil, ep, err
		}
		vars.Port = port
		ep = endpoint{network: "tcp", addr: fmt.Sprintf("127.0.0.1:%d", port)}
	} else {
		path, err := a.layout().Unique(a.name, v.name, i)
		if err != nil {
			return nil, ep, err
		}
		vars.Socket = path
		ep = endpoint{network: "unix", addr: path}
	}
	argv := make([]string, len(cfg.Command))
	for j, s := range cfg.Command {
		argv[j] = Expand(s, vars)
	}
	dir := Expand(cfg.Dir, vars)
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(a.d.cfgDir(), dir)
	}
	logPath, err := a.outputPath(v.name, i)
	if err != nil {
		return nil, ep, err
	}
	spec := launchSpec{
		App: a.name, Version: v.name, Instance: i,
		Socket: vars.Socket, Port: vars.Port,
		Command: argv, Dir: dir,
		Env:     appEnv(os.Environ(), cfg.Env, vars, cfg.UsesPort()),
		LogPath: logPath,
	}
	p, err := startProcess(spec, a.logs)
	if err != nil {
		return nil, ep, err
	}
	a.log.Info("process started", "version", v.name, "instance", i, "pid", p.pid, "addr", ep.addr)
	return p, ep, nil
}

// outputPath names a fresh output file for a process of version, instance i:
// <state_dir>/<app>/log/<version>-<i>-<random>.log.
func (a *App) outputPath(version string, i int) (string, error) {
	dir := filepath.Join(a.layout().AppDir(a.name), "log")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("supervisor: output dir: %w", err)
	}
	f, err := os.CreateTemp(dir, fmt.Sprintf("%s-%d-*.log", version, i))
	if err != nil {
		return "", fmt.Errorf("supervisor: output file: %w", err)
	}
	f.Close()
	return f.Name(), nil
}

// outputOf returns v's last output lines, waiting briefly for the pipes of
// exited processes to be read to the end so the last words are there.
func (a *App) outputOf(v *version) []string {
	for _, in := range v.instances {
		if p, _, _, _ := in.snapshot(); p != nil {
			select {
			case <-p.outDone:
			case <-time.After(time.Second):
			}
		}
	}
	lines := a.logs.Tail(failureLines, func(l LogLine) bool {
		return l.Version == v.name && !l.Time.Before(v.launched)
	})
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = fmt.Sprintf("[%d] %s", l.Instance, l.Text)
	}
	return out
}

// kill ends every process of a version that never served.
func (a *App) kill(v *version) {
	v.markStopping()
	for _, in := range v.instances {
		if p, ep, _, _ := in.snapshot(); p != nil {
			p.kill()
			a.unlink(ep)
		}
	}
	v.state.Store(StateFailed)
}

// activate moves traffic to v: the built-in proxy first, then one rename per
// instance over the stable path for outer proxies (nginx). If a rename fails,
// the stable paths already moved are put back on old's sockets.
func (a *App) activate(v, old *version) error {
	a.d.proxy.Serve(a.name, v.key, targets(v))
	for i, in := range v.instances {
		_, ep, _, _ := in.snapshot()
		if ep.network != "unix" {
			continue
		}
		if err := sockets.Swap(ep.addr, a.layout().Stable(a.name, i)); err != nil {
			a.restoreStable(old, i)
			if old != nil {
				a.d.proxy.Serve(a.name, old.key, targets(old))
			}
			a.forget(v)
			return fmt.Errorf("supervisor: moving %s to %s: %w", a.layout().Stable(a.name, i), ep.addr, err)
		}
	}
	// A version with fewer instances than the last one leaves extra stable
	// paths pointing at the old version: remove them once it is gone (drain).
	return nil
}

// forget drops a version that the proxy served only for a moment (its
// activation failed): anything it took is cut at once.
func (a *App) forget(v *version) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a.d.proxy.Retire(ctx, a.name, v.key)
}

// restoreStable points the first n stable paths back at old's sockets.
func (a *App) restoreStable(old *version, n int) {
	if old == nil {
		return
	}
	for i := 0; i < n && i < len(old.instances); i++ {
		if _, ep, _, _ := old.instances[i].snapshot(); ep.network == "unix" {
			sockets.Swap(ep.addr, a.layout().Stable(a.name, i))
		}
	}
}

func targets(v *version) []proxy.Target {
	ts := make([]proxy.Target, len(v.instances))
	for i, in := range v.instances {
		_, ep, _, _ := in.snapshot()
		ts[i] = proxy.Target{Network: ep.network, Addr: ep.addr}
	}
	return ts
}

// Start launches the app at version (its last or configured one when "")
// and moves traffic to it. Requests arriving meanwhile are held by the proxy.
func (a *App) Start(ctx context.Context, name string, progress progressFunc) (*Result, error) {
	if !a.acquireOp() {
		return nil, fmt.Errorf("%w on %s", ErrOpRunning, a.name)
	}
	defer a.op.Unlock()
	return a.startLocked(ctx, "start", name, progress)
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
		name = a.last
	}
	if name == "" {
		name = a.cfg.Load().Version
	}
	a.state = StateStarting
	a.userStopped = false
	a.mu.Unlock()

	start := time.Now()
	res := &Result{App: a.name, Op: op, NewVersion: name}
	v, err := a.launch(ctx, name, progress)
	if err == nil {
		err = a.activate(v, nil)
		if err != nil {
			a.kill(v)
		}
	}
	res.DurationMS = time.Since(start).Milliseconds()
	if err != nil {
		a.fail(err)
		fillFailure(res, err)
		return res, nil
	}
	res.ReadyMS = res.DurationMS
	a.mu.Lock()
	a.serving, a.last, a.lastErr = v, name, ""
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
	if err != nil {
		res.DurationMS = time.Since(start).Milliseconds()
		fillFailure(res, err)
		a.setLastErr(err)
		a.log.Warn("swap failed", "version", name, "error", err)
		return res, nil
	}

	// From here no crash restart of old may rename over a stable path.
	old.markStopping()
	if err := a.activate(v, old); err != nil {
		old.mu.Lock()
		old.stopping = false
		old.mu.Unlock()
		a.kill(v)
		res.DurationMS = time.Since(start).Milliseconds()
		fillFailure(res, err)
		return res, nil
	}
	a.mu.Lock()
	a.serving, a.previous, a.last, a.lastErr = v, old.name, name, ""
	a.draining[old] = struct{}{}
	old.drainDeadline = time.Now().Add(old.cfg.DrainTimeout)
	a.drains.Add(1)
	a.mu.Unlock()
	a.watch(v)
	a.d.saveState()
	progress("%s now serves %s; draining %s", a.name, name, old.name)
	a.log.Info("swapped", "from", old.name, "version", name)

	drained := make(chan int, 1)
	go func() { drained <- a.drain(old, len(v.instances)) }()
	if waitDrain {
		progress("waiting for %s to drain (up to %s)", old.name, old.cfg.DrainTimeout)
		res.CutRequests = <-drained
		res.DrainMS = time.Since(start).Milliseconds() - res.ReadyMS
		progress("%s drained and stopped", old.name)
	}
	res.DurationMS = time.Since(start).Milliseconds()
	res.OK = true
	return res, nil
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
	a.serving, a.last, a.state = nil, v.name, StateStopped
	a.draining[v] = struct{}{}
	v.drainDeadline = time.Now().Add(v.cfg.DrainTimeout)
	a.drains.Add(1)
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

// drain retires v (the caller added it to a.draining and a.drains): the proxy stops sending it requests and waits for its
// in-flight ones; then, for outer proxies, drain waits until /proc/net/unix
// shows no connection left to v's sockets (an nginx keep-alive pool keeps
// using old connections after the rename — PITFALLS); all bounded by
// drain_timeout. Then v's processes get stop_signal, SIGKILL after
// stop_timeout, and only then are its sockets unlinked. keep is how many
// stable paths the new version uses; extra ones still pointing at v go.
func (a *App) drain(v *version, keep int) (cut int) {
	return a.drainWithin(v, keep, v.cfg.DrainTimeout)
}

// drainWithin is drain with the time left of the drain deadline (less than
// drain_timeout for a drain taken over from an earlier daemon).
func (a *App) drainWithin(v *version, keep int, timeout time.Duration) (cut int) {
	v.markStopping()
	v.state.Store(StateDraining)
	cfg := v.cfg
	defer a.drains.Done()
	// Not a.d.ctx: a daemon shutting down drains too, within drain_timeout.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()

	cut = a.d.proxy.Retire(ctx, a.name, v.key)
	var paths []string
	for _, in := range v.instances {
		if _, ep, _, _ := in.snapshot(); ep.network == "unix" {
			paths = append(paths, ep.addr)
		}
	}
	left := waitNoConnections(ctx, paths)
	if cut > 0 || left > 0 {
		a.log.Warn("drain deadline: cutting connections", "version", v.name,
			"cut_requests", cut, "outer_connections", left, "drain_timeout", cfg.DrainTimeout)
	}
	// Stopping the processes is the daemon's in charge: after an upgrade
	// that is the new one, which finishes this drain itself.
	if !a.d.bgEnter() {
		return cut
	}
	defer a.d.bgExit()
	var wg sync.WaitGroup
	for _, in := range v.instances {
		p, ep, _, _ := in.snapshot()
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stop(cfg.StopSignal, cfg.StopTimeout)
			a.log.Info("process stopped", "version", v.name, "instance", in.index, "pid", p.pid, "how", p.exitDescription())
			a.unlink(ep)
		}()
	}
	wg.Wait()
	a.removeExtraStable(v, keep)
	v.state.Store(StateStopped)
	a.mu.Lock()
	delete(a.draining, v)
	a.mu.Unlock()
	a.log.Info("drained", "version", v.name, "took", time.Since(start).Round(time.Millisecond), "cut", cut)
	return cut
}

// waitNoConnections polls until no live connection to any of paths is left
// (seen twice in a row, so a connect racing the rename is not missed) or ctx
// ends, and returns how many were left.
func waitNoConnections(ctx context.Context, paths []string) int {
	if len(paths) == 0 {
		return 0
	}
	zeros := 0
	for {
		counts, err := sockets.ConnectionCounts(paths)
		if err != nil {
			return 0 // no /proc/net/unix: nothing to wait on
		}
		n := 0
		for _, c := range counts {
			n += c
		}
		if n == 0 {
			zeros++
			if zeros >= 2 {
				return 0
			}
		} else {
			zeros = 0
		}
		select {
		case <-ctx.Done():
			return n
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// removeExtraStable unlinks stable paths from index keep on that still name
// one of v's sockets: the version now serving has fewer instances.
func (a *App) removeExtraStable(v *version, keep int) {
	for i := keep; i < len(v.instances); i++ {
		_, ep, _, _ := v.instances[i].snapshot()
		if ep.network != "unix" {
			continue
		}
		stable := a.layout().Stable(a.name, i)
		if sameFile(stable, ep.addr) {
			sockets.Unlink(stable)
		}
	}
}

func (a *App) unlink(ep endpoint) {
	if ep.network == "unix" {
		sockets.Unlink(ep.addr)
	}
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

// watch restarts crashed processes of v while it serves, and checks the
// health of each instance.
func (a *App) watch(v *version) {
	for _, in := range v.instances {
		p, _, _, _ := in.snapshot()
		go a.watchInstance(v, in, p)
		go a.healthLoop(v, in)
	}
}

// watchInstance waits for p to exit; if v still serves and p was not
// replaced, the instance leaves rotation at once (the proxy holds or retries
// its requests elsewhere) and is restarted with backoff.
func (a *App) watchInstance(v *version, in *instance, p *process) {
	select {
	case <-p.done:
	case <-a.d.ctx.Done():
		return
	}
	if v.isStopping() || !a.d.bgEnter() {
		return
	}
	in.setHealthy(false)
	_, ep, _, _ := in.snapshot()
	a.d.proxy.SetInstance(a.name, v.key, in.index, proxy.Target{Network: ep.network, Addr: ep.addr}, false)
	a.d.bgExit()
	a.log.Warn("process exited; restarting", "version", v.name, "instance", in.index, "pid", p.pid, "how", p.exitDescription())

	backoff := 100 * time.Millisecond
	for {
		select {
		case <-time.After(backoff):
		case <-a.d.ctx.Done():
			return
		}
		if v.isStopping() {
			return
		}
		// One attempt at a time holds off an upgrade (bgEnter), never the
		// waits between attempts.
		if !a.d.bgEnter() {
			return
		}
		done, err := a.restartOnce(v, in, ep)
		a.d.bgExit()
		if done {
			return
		}
		a.log.Warn("restart failed", "version", v.name, "instance", in.index, "error", err, "retry_in", backoff*2)
		backoff = min(backoff*2, 30*time.Second)
	}
}

// restartOnce starts a new process for instance in of v and, once healthy,
// puts it in the slot in place of the one that exited (whose socket was
// old). It reports whether the slot needs no more attempts.
func (a *App) restartOnce(v *version, in *instance, old endpoint) (bool, error) {
	np, nep, err := a.startInstance(v, in.index)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(a.d.ctx, v.cfg.ReadyTimeout)
	err = waitReady(ctx, np, nep, v.cfg.Health, 0)
	cancel()
	if err != nil {
		np.kill()
		a.unlink(nep)
		return false, err
	}
	if a.adoptRestart(v, in, np, nep) {
		a.unlink(old)
		a.log.Info("process restarted", "version", v.name, "instance", in.index, "pid", np.pid)
		a.d.saveState()
		go a.watchInstance(v, in, np)
	}
	return true, nil
}

// adoptRestart puts a restarted process into its slot, unless v was retired
// meanwhile (then the process is stopped and adopt reports false).
func (a *App) adoptRestart(v *version, in *instance, p *process, ep endpoint) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopping {
		go func() {
			p.stop(v.cfg.StopSignal, v.cfg.StopTimeout)
			a.unlink(ep)
		}()
		return false
	}
	if ep.network == "unix" {
		if err := sockets.Swap(ep.addr, a.layout().Stable(a.name, in.index)); err != nil {
			a.log.Error("moving stable path to restarted process", "error", err)
		}
	}
	in.mu.Lock()
	in.proc, in.ep, in.healthy = p, ep, true
	in.restarts++
	in.mu.Unlock()
	a.d.proxy.SetInstance(a.name, v.key, in.index, proxy.Target{Network: ep.network, Addr: ep.addr}, true)
	return true
}

// Pause holds new requests; the hold file makes it visible (and settable) on
// disk.
func (a *App) Pause() error {
	if err := sockets.SetHold(a.layout(), a.name, true); err != nil {
		return err
	}
	a.setPaused(true)
	return nil
}

// Resume releases held requests in arrival order.
func (a *App) Resume() error {
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

// freePort asks the kernel for a free loopback port. The app binds it a
// moment later; a collision in between fails the launch, which is reported.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("supervisor: picking a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false
	}
	return os.SameFile(fa, fb)
}
