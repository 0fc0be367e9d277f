package supervisor

import (
	"time"

	"github.com/deployer/deployer/proxy"
)

// healthLoop checks one instance of a serving version every health_interval
// until the version stops serving. After `fall` failed checks in a row the
// instance leaves rotation, unless it is the last one in rotation: an app
// with one sick instance is better served by it (the proxy holds or retries
// what fails) than by nothing. After `rise` passing checks in a row it comes
// back. Health settings are read at every check, so a reload applies them at
// once: a new health_interval counts from the last check (a shorter one
// that has passed already checks at once). A process that exits is handled
// by watchInstance, not here.
func (a *App) healthLoop(v *version, in *instance) {
	var (
		fails, passes int
		checked       *process // the process the counters are about
		last          = time.Now()
	)
	for {
		reloaded := a.reloadedC()
		cfg := a.cfg.Load()
		wait := time.NewTimer(time.Until(last.Add(cfg.HealthInterval)))
		select {
		case <-wait.C:
		case <-reloaded:
			wait.Stop()
			continue
		case <-a.d.ctx.Done():
			wait.Stop()
			return
		}
		last = time.Now()
		if v.isStopping() {
			return
		}
		p, ep, healthy, _ := in.snapshot()
		if p == nil || p.exited() {
			continue
		}
		if p != checked {
			checked, fails, passes = p, 0, 0
		}
		err := checkHealth(a.d.ctx, ep, cfg.Health, cfg.HealthTimeout)
		if a.d.ctx.Err() != nil || v.isStopping() {
			return
		}
		if err == nil {
			fails, passes = 0, passes+1
			if passes >= cfg.Rise {
				in.setCheckErr(p, "")
			}
			if !healthy && passes >= cfg.Rise && a.d.bgEnter() {
				a.setInRotation(v, in, p, true, nil)
				a.d.bgExit()
			}
			continue
		}
		fails, passes = fails+1, 0
		if fails >= cfg.Fall {
			in.setCheckErr(p, err.Error())
		}
		if healthy && fails >= cfg.Fall && a.d.bgEnter() {
			a.setInRotation(v, in, p, false, err)
			a.d.bgExit()
		}
	}
}

// setInRotation moves instance in of v in or out of rotation, if it still
// holds process p. The last instance in rotation is never taken out for
// failing checks alone.
func (a *App) setInRotation(v *version, in *instance, p *process, on bool, why error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopping {
		return
	}
	if !on && v.inRotation() <= 1 {
		if !in.warnedLast {
			in.warnedLast = true
			a.log.Warn("health checks failing on the last instance in rotation; keeping it", "version", v.name, "instance", in.index, "error", why)
		}
		return
	}
	in.mu.Lock()
	if in.proc != p {
		in.mu.Unlock()
		return // restarted meanwhile: the new process has its own verdict
	}
	in.healthy = on
	in.warnedLast = false
	ep := in.ep
	in.mu.Unlock()
	a.d.proxy.SetInstance(a.name, v.key, in.index, proxy.Target{Network: ep.network, Addr: ep.addr}, on)
	if on {
		a.log.Info("instance back in rotation", "version", v.name, "instance", in.index, "pid", p.pid)
	} else {
		a.log.Warn("instance out of rotation: health checks failing", "version", v.name, "instance", in.index, "pid", p.pid, "error", why)
	}
}
