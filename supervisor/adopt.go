package supervisor

import (
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deployer/deployer/sockets"
)

// backlog is how much of an adopted process's output file before the
// hand-over point is read again, so `deployer logs` shows what the app wrote
// before the upgrade or crash too.
const backlog = 128 << 10

// adoptAll takes over the processes the state file lists (left by the daemon
// this one replaces: an upgrade, or a crash of the last one) instead of
// starting new copies. It returns the apps that still need a boot: nothing
// of theirs survived, or the state never knew them.
func (d *Daemon) adoptAll() []*App {
	st, err := readState(d.layout.StateFile())
	if err != nil {
		d.log.Error("reading the state file: starting every app afresh", "error", err)
		return d.appList()
	}
	if st.PID != 0 && st.PID != os.Getpid() && st.PIDStart != 0 {
		if ticks, err := startTicks(st.PID); err == nil && ticks == st.PIDStart {
			d.previous = daemonProcess{pid: st.PID, start: st.PIDStart}
		}
	}
	var boot []*App
	for _, a := range d.appList() {
		sa, ok := st.Apps[a.name]
		if !ok {
			boot = append(boot, a)
			continue
		}
		if !a.adopt(sa) {
			boot = append(boot, a)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(st.Apps)) {
		if _, err := d.app(name); err != nil {
			d.retireRemoved(name, st.Apps[name])
		}
	}
	return boot
}

// retireRemoved drains and stops the processes the state file lists for an
// app deploy.toml no longer defines (removed while no daemon ran, or during
// an upgrade): nothing routes to them any more, and left alone they would
// run on, no one's. It drains as a reload's removal does (connections of
// outer proxies and of the previous daemon first), with the default stop
// settings, its config being gone.
func (d *Daemon) retireRemoved(name string, sa stateApp) {
	if !appNameRE.MatchString(name) {
		return // not a name deployer writes
	}
	a := newApp(d, defaultApp(name, d.config().Deployer))
	a.removed.Store(true)
	// A version that was draining keeps its deadline; the others (serving,
	// launched and never serving, or from a state file written before
	// deadlines were kept) drain from now. a is no one else's yet.
	var versions []*version
	retire := func(sv *stateVersion, deadline time.Time) {
		if sv == nil {
			return
		}
		v := a.adoptVersion(*sv)
		if v == nil {
			return
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(v.cfg.DrainTimeout)
		}
		a.mu.Lock()
		a.beginDrainLocked(v, deadline)
		a.mu.Unlock()
		versions = append(versions, v)
	}
	for _, sv := range sa.Draining {
		retire(&sv, sv.Deadline)
	}
	retire(sa.Serving, time.Time{})
	retire(sa.Starting, time.Time{})
	if len(versions) == 0 {
		return
	}
	a.log.Warn("app no longer in deploy.toml: draining and stopping the processes it left", "versions", len(versions))
	d.mu.Lock()
	d.removing[a] = struct{}{}
	d.mu.Unlock()
	go func() {
		var wg sync.WaitGroup
		for _, v := range versions {
			wg.Go(func() { a.drainWithin(v, 0, max(time.Until(v.drainDeadline), 0)) })
		}
		wg.Wait()
		d.forgetApp(a)
		d.saveState()
	}()
}

// adopt restores an app from its state; it reports whether the app is taken
// care of (serving adopted processes, or stopped on purpose).
func (a *App) adopt(sa stateApp) bool {
	a.mu.Lock()
	a.previous, a.last, a.lastConfigured, a.userStopped = sa.Previous, sa.Last, sa.Configured, sa.Stopped
	a.mu.Unlock()
	// Paused is what the hold file says, not the state file: the file may
	// have been removed (a documented resume) while no daemon ran, or a
	// resume during an upgrade was answered by the old daemon, which no
	// longer writes the state file then.
	if sockets.Held(a.layout(), a.name) {
		a.setPaused(true)
	}
	// The serving version is adopted below; a launch the last daemon did
	// not finish is retired once it is (the deferred call reads serving
	// as it is when adopt returns).
	var serving *version
	if sa.Starting != nil {
		if u := a.adoptVersion(*sa.Starting); u != nil {
			defer func() { a.retireUnfinished(u, serving) }()
		}
	}
	for _, sv := range sa.Draining {
		if v := a.adoptVersion(sv); v != nil {
			a.mu.Lock()
			a.beginDrainLocked(v, sv.Deadline)
			a.mu.Unlock()
			left := time.Until(sv.Deadline)
			go a.drainWithin(v, 0, max(left, 0))
		}
	}
	if sa.Serving == nil {
		if sa.Stopped {
			a.mu.Lock()
			a.state = StateStopped
			a.mu.Unlock()
			return true
		}
		return false
	}
	v := a.adoptVersion(*sa.Serving)
	if v == nil {
		// Nothing survived: boot starts the version that served, not the
		// one deploy.toml names (a deploy that happened stays done),
		// unless deploy.toml was edited since (startVersionLocked).
		a.mu.Lock()
		a.last = sa.Serving.Version
		a.mu.Unlock()
		a.log.Warn("no process of the serving version survived: starting it again", "version", sa.Serving.Version)
		return false
	}
	a.serveInProxy(v)
	v.state.Store(StateServing)
	serving = v
	a.mu.Lock()
	a.serving, a.state = v, StateServing
	if a.last == "" {
		a.setLastLocked(v.name)
	}
	a.mu.Unlock()
	a.watch(v) // an instance that did not survive is restarted from here
	return true
}

// retireUnfinished stops u, a version whose start or swap the last daemon
// began and never finished (it crashed meanwhile): its processes still run,
// and no one else would stop them. The state file's serving version serves
// on, as after a failed swap; the swap's client was told the outcome is
// unknown. If the crash came after the stable paths moved to u, they are
// put back on serving's sockets first, and u drains as a version that
// took traffic does: connections an outer proxy opened to it finish
// within its drain_timeout.
func (a *App) retireUnfinished(u, serving *version) {
	a.log.Warn("a start or swap the last daemon did not finish: stopping its processes", "version", u.name)
	a.restoreStable(serving, u, len(u.instances))
	a.retireFailed(u)
}

// daemonProcess names a daemon process by pid and start time.
type daemonProcess struct {
	pid   int
	start uint64 // clock ticks since boot (/proc/<pid>/stat)
}

// ownStartTicks is this process's start time, for the state file.
var ownStartTicks = sync.OnceValue(func() uint64 {
	ticks, _ := startTicks(os.Getpid())
	return ticks
})

// waitPrevious waits until the daemon this one took over from (after an
// upgrade it finishes the requests, streams and websockets it accepted,
// within its drain_timeout) has exited, or ctx ends. Nothing to wait for
// after a crash, or when this daemon started afresh.
func (d *Daemon) waitPrevious(ctx context.Context) {
	prev := d.previous
	if prev.pid == 0 {
		return
	}
	for {
		if ticks, err := startTicks(prev.pid); err != nil || ticks != prev.start {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// adoptVersion rebuilds a version from its state, adopting every process
// that still runs. An instance whose process is gone gets a stand-in that
// has already exited, so the crash watcher restarts it. It returns nil when
// no process survived.
func (a *App) adoptVersion(sv stateVersion) *version {
	cfg := *a.cfg.Load()
	cfg.Instances = len(sv.Instances) // what runs, whatever deploy.toml says now
	if cfg.Instances == 0 {
		return nil
	}
	if l := sv.Launch; l != nil {
		// As launched, whatever deploy.toml says now: its drain and stop
		// follow these, and status lists the edits as pending.
		cfg.Command, cfg.Dir, cfg.EnvFiles = l.Command, l.Dir, l.EnvFiles
		cfg.envChanged = l.EnvChanged
		cfg.DrainTimeout, cfg.StopTimeout = l.DrainTimeout, l.StopTimeout
		if sig, ok := stopSignals[strings.TrimPrefix(l.StopSignal, "SIG")]; ok {
			cfg.StopSignal = sig
		}
	}
	v := newVersion(sv.Version, &cfg)
	v.launched = sv.Launched
	alive := 0
	for i, si := range sv.Instances {
		in := v.instances[i]
		ep := endpoint{network: "unix", addr: si.Socket}
		if si.Socket == "" {
			ep = endpoint{network: "tcp", addr: si.Addr}
		}
		spec := launchSpec{App: a.name, Version: sv.Version, Instance: i, Socket: si.Socket, LogPath: si.Log}
		p, err := adoptProcess(spec, si.PID, si.StartTicks, si.Started, backlogStart(si.Log, si.LogOffset), si.LogOffset, a.logs)
		if err != nil {
			a.log.Warn("process did not survive", "version", sv.Version, "instance", i, "pid", si.PID, "error", err)
			p = exitedProcess(spec)
		} else {
			alive++
			a.log.Info("process adopted", "version", sv.Version, "instance", i, "pid", p.pid, "addr", ep.addr)
		}
		in.mu.Lock()
		in.proc, in.ep, in.healthy, in.restarts = p, ep, !p.exited(), si.Restarts
		in.mu.Unlock()
	}
	if alive == 0 {
		return nil
	}
	return v
}

// exitedProcess stands in for a process that did not survive.
func exitedProcess(spec launchSpec) *process {
	p := &process{spec: spec, adopted: true, done: make(chan struct{}), outDone: make(chan struct{})}
	close(p.done)
	close(p.outDone)
	return p
}

// backlogStart is where to start reading an adopted process's output file:
// up to `backlog` bytes before the hand-over point, at a line start.
func backlogStart(path string, offset int64) int64 {
	start := max(offset-backlog, 0)
	if start == 0 || path == "" {
		return start
	}
	f, err := os.Open(path)
	if err != nil {
		return offset
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n, err := f.ReadAt(buf, start)
	if err != nil && !errors.Is(err, io.EOF) {
		return offset
	}
	for i := 0; i < n; i++ {
		if buf[i] == '\n' {
			return start + int64(i) + 1
		}
	}
	return offset
}
