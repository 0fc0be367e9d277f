package supervisor

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/deployer/deployer/sockets"
)

// drain retires v (the caller added it to a.draining and a.drains): the
// stable paths from index keep on that still name v's sockets go first (the
// serving version has fewer instances, or none after a stop), so outer
// proxies open no new connection to v; the proxy stops sending it requests
// and waits for its in-flight ones; then, for outer proxies, drain waits
// until /proc/net/unix shows no connection left to v's sockets (an nginx
// keep-alive pool keeps using old connections after the rename —
// PITFALLS); all bounded by drain_timeout. Then v's processes get
// stop_signal, SIGKILL after stop_timeout, and only then are its sockets
// unlinked.
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

	a.unlinkExtraStable(v, keep)
	cut = a.d.proxy.Retire(ctx, a.name, v.key)
	var paths []string
	for _, in := range v.instances {
		if _, ep, _, _ := in.snapshot(); ep.network == "unix" {
			paths = append(paths, ep.addr)
		}
	}
	left := waitNoConnections(ctx, paths)
	if len(paths) < len(v.instances) {
		// A TCP version: no connection count shows what the daemon this
		// one took over from still forwards to it. Wait for that daemon.
		a.d.waitPrevious(ctx)
	}
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

// unlinkExtraStable removes the stable paths from index keep on that name
// one of v's sockets: the version now serving has fewer instances (none
// after a stop). A stable path is a second link to a socket, told apart
// from one a newer version was renamed over by that socket's file. Left in
// place, current-1.sock after a swap from two instances to one (or
// current.sock during a stop) would go on taking new connections for v
// until its deadline, and those would be cut then.
func (a *App) unlinkExtraStable(v *version, keep int) {
	for i := keep; i < len(v.instances); i++ {
		_, ep, _, _ := v.instances[i].snapshot()
		if ep.network != "unix" {
			continue
		}
		stable := a.layout().Stable(a.name, i)
		fs, err := os.Stat(stable)
		if err != nil {
			continue
		}
		if fv, err := os.Stat(ep.addr); err == nil && os.SameFile(fs, fv) {
			sockets.Unlink(stable)
		}
	}
}

func (a *App) unlink(ep endpoint) {
	if ep.network == "unix" {
		sockets.Unlink(ep.addr)
	}
}
