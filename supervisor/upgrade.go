package supervisor

import (
	"errors"
	"fmt"
	"os"

	"github.com/deployer/deployer/sockets"
)

// ErrUpgradeBusy refuses an upgrade while another one runs, or while the
// daemon an earlier upgrade replaced has not exited yet (tableflip allows
// one old process at a time).
var ErrUpgradeBusy = errors.New("supervisor: an upgrade is already in progress")

// ErrNoUpgrade is returned when the daemon was started without an upgrader.
var ErrNoUpgrade = errors.New("supervisor: this daemon cannot upgrade itself (no upgrader)")

// UpgradeResult answers POST /v1/upgrade.
type UpgradeResult struct {
	OK     bool   `json:"ok"`
	OldPID int    `json:"old_pid"`
	NewPID int    `json:"new_pid,omitempty"`
	Error  string `json:"error,omitempty"`
	// OldBuild is the answering daemon's build; NewBuild the new daemon's,
	// as it wrote it in the state file (nil: unknown, a daemon from before
	// builds were recorded).
	OldBuild Build  `json:"old_build,omitzero"`
	NewBuild *Build `json:"new_build,omitempty"`
}

// Upgrade replaces this daemon with the deployer binary now on disk: the new
// process inherits the listeners (tableflip), adopts the apps from the state
// file and reports ready; then this daemon hands over and Run returns once
// its own in-flight requests are done. No swap may run meanwhile. If the new
// binary fails to start or to become ready, this daemon serves on as if
// nothing happened and the result says why.
func (d *Daemon) Upgrade() (*UpgradeResult, error) {
	if d.opts.Upgrade == nil {
		return nil, ErrNoUpgrade
	}
	if !d.upgradeMu.TryLock() {
		return nil, ErrUpgradeBusy
	}
	defer d.upgradeMu.Unlock()
	if d.handedOver.Load() {
		return nil, fmt.Errorf("%w: this daemon already handed over", ErrUpgradeBusy)
	}
	if d.ctx.Err() != nil {
		return nil, fmt.Errorf("%w: this daemon is shutting down", ErrUpgradeBusy)
	}
	// An app removed from deploy.toml drains under this daemon alone: the
	// new one would not know it, and its processes would outlive both.
	if gone := d.removingApps(); len(gone) > 0 {
		return nil, fmt.Errorf("%w: app %s, removed from deploy.toml, is still draining (at most its drain_timeout): upgrade once it has stopped", ErrUpgradeBusy, gone[0].name)
	}
	// Every app's operation lock: no swap, stop or start across the
	// hand-over. On success they stay locked: this daemon is done with apps.
	apps := d.appList()
	var locked []*App
	unlock := func() {
		for _, a := range locked {
			a.op.Unlock()
		}
	}
	for _, a := range apps {
		if !a.op.TryLock() {
			unlock()
			return nil, fmt.Errorf("%w on %s: upgrade when it is done", ErrOpRunning, a.name)
		}
		locked = append(locked, a)
	}
	// Background work (crash restarts, health verdicts, the end of drains)
	// waits; output readers stop where they are, so the state file says
	// exactly where the new daemon reads on.
	d.bg.Lock()
	for _, a := range apps {
		a.pauseOutput()
	}
	d.saveState()
	// From here the state file is the new daemon's to write, unless it fails.
	d.upgrading.Store(true)
	res := &UpgradeResult{OldPID: os.Getpid(), OldBuild: CurrentBuild()}
	d.log.Info("upgrading: starting the new daemon")
	if err := d.opts.Upgrade(); err != nil {
		d.upgrading.Store(false)
		refused := errors.Is(err, sockets.ErrParentRunning)
		for _, a := range apps {
			a.resumeOutput()
		}
		d.saveState() // the failed one may have written its own
		d.bg.Unlock()
		unlock()
		// An edit of deploy.toml during the upgrade was left to the new
		// daemon: it is this one's again (once Upgrade returns).
		go d.reloadIfChanged()
		if refused {
			return nil, fmt.Errorf("%w: %v", ErrUpgradeBusy, err)
		}
		res.Error = err.Error()
		d.log.Error("upgrade failed: this daemon serves on", "error", err)
		return res, nil
	}
	d.handedOver.Store(true)
	d.bg.Unlock()
	if st, err := readState(d.layout.StateFile()); err == nil && st.PID != res.OldPID {
		res.NewPID, res.NewBuild = st.PID, st.Build
	}
	res.OK = true
	attrs := []any{"new_pid", res.NewPID}
	if res.NewBuild != nil {
		attrs = append(attrs, "new_build", res.NewBuild.String())
	}
	d.log.Info("upgraded: the new daemon serves; finishing in-flight requests", attrs...)
	d.handoverOne.Do(func() { close(d.handoverC) })
	return res, nil
}

// bgEnter admits a background action that changes apps (a crash restart, a
// health verdict, stopping a drained version). It fails once the daemon has
// handed over to a new one; otherwise the caller must call bgExit.
func (d *Daemon) bgEnter() bool {
	d.bg.RLock()
	if d.handedOver.Load() {
		d.bg.RUnlock()
		return false
	}
	return true
}

func (d *Daemon) bgExit() { d.bg.RUnlock() }

// pauseOutput stops reading the output files of every process (for a
// hand-over): their offsets are then final.
func (a *App) pauseOutput() {
	for _, p := range a.processes() {
		if o := p.log.Load(); o != nil {
			o.handOver()
		}
	}
}

// resumeOutput reads on after a failed hand-over.
func (a *App) resumeOutput() {
	for _, p := range a.processes() {
		if o := p.log.Load(); o != nil {
			p.log.Store(followOutput(p, o.Offset(), 0, a.logs))
		}
	}
}

// processes lists the live processes of the serving and draining versions.
func (a *App) processes() []*process {
	a.mu.Lock()
	vs := make([]*version, 0, 1+len(a.draining))
	if a.serving != nil {
		vs = append(vs, a.serving)
	}
	for v := range a.draining {
		vs = append(vs, v)
	}
	a.mu.Unlock()
	var ps []*process
	for _, v := range vs {
		for _, in := range v.instances {
			if p, _, _, _ := in.snapshot(); p != nil && !p.exited() {
				ps = append(ps, p)
			}
		}
	}
	return ps
}
