package supervisor

import (
	"context"
	"time"

	"github.com/deployer/deployer/proxy"
	"github.com/deployer/deployer/sockets"
)

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
	a.d.observer().restarted(a.name)

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
	err = waitReady(ctx, np, nep, v.cfg.Health, v.cfg.HealthTimeout, 0)
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
	in.proc, in.ep, in.healthy, in.checkErr = p, ep, true, ""
	in.restarts++
	in.mu.Unlock()
	a.d.proxy.SetInstance(a.name, v.key, in.index, proxy.Target{Network: ep.network, Addr: ep.addr}, true)
	return true
}
