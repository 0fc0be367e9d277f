package supervisor

import (
	"os"
	"runtime"
	"sort"
)

// Status reports the app for `deployer status`.
func (a *App) Status() AppStatus {
	a.mu.Lock()
	serving, paused := a.serving, a.paused
	st := AppStatus{
		Name:      a.name,
		Previous:  a.previous,
		LastError: a.lastErr,
		State:     a.state,
		Instances: []InstanceStatus{},
		Versions:  []VersionStatus{},
	}
	draining := make([]*version, 0, len(a.draining))
	for v := range a.draining {
		draining = append(draining, v)
	}
	a.mu.Unlock()
	sort.Slice(draining, func(i, j int) bool { return draining[i].launched.Before(draining[j].launched) })

	stats := a.d.proxy.Stats(a.name)
	st.Held = stats.Held
	for _, n := range stats.InFlight {
		st.InFlight += n
	}
	switch {
	case serving != nil && paused:
		st.State = StatePaused
	case serving != nil:
		st.State = StateServing
	case len(draining) > 0:
		st.State = StateDraining
	}
	if serving != nil {
		st.Pending = pendingChanges(serving.cfg, a.cfg.Load())
		st.Version = serving.name
		st.Versions = append(st.Versions, VersionStatus{Version: serving.name, State: StateServing, InFlight: stats.InFlight[serving.key]})
		for _, in := range serving.instances {
			p, ep, healthy, restarts := in.snapshot()
			checkErr := in.checkError()
			is := InstanceStatus{Instance: in.index, Socket: ep.addr, Version: serving.name,
				Healthy: healthy && checkErr == "", InRotation: healthy, HealthError: checkErr, Restarts: restarts}
			if p != nil && !p.exited() {
				is.PID = p.pid
				is.CPU, is.RSS = a.d.procs.sample(p.pid)
			}
			st.Instances = append(st.Instances, is)
		}
	}
	for _, v := range draining {
		st.Versions = append(st.Versions, VersionStatus{Version: v.name, State: v.State(), InFlight: stats.InFlight[v.key]})
	}
	return st
}

// daemonStatus describes the daemon process answering.
func (d *Daemon) daemonStatus() DaemonStatus {
	plan := d.threads.status()
	bin := executable()
	var disk *Build
	if b, err := fileBuild(bin); err == nil && b.Differs(CurrentBuild()) {
		disk = &b
	}
	return DaemonStatus{
		PID:         os.Getpid(),
		Started:     d.started.UTC(),
		Binary:      bin,
		Build:       CurrentBuild(),
		BinaryBuild: disk,
		Goroutines:  runtime.NumGoroutine(),
		OpenFDs:     openFDs(),
		Procs:       runtime.GOMAXPROCS(0),
		CPUs:        cpus,
		ProcsSource: plan.Source,
		ProcsMin:    plan.Min,
		ProcsMax:    plan.Max,
	}
}

// openFDs counts this process's open file descriptors, or reports -1 where
// /proc/self/fd cannot be read.
func openFDs() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	// The listing includes the descriptor ReadDir read it through, which is
	// closed again by now.
	return len(entries) - 1
}
