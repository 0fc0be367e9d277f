package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"time"
)

// stateFile is <state_dir>/state.json: what serves, what served before, and
// every process, rewritten atomically on every change. A new daemon (after an
// upgrade, or a crash of the last one) adopts the processes it lists.
type stateFile struct {
	Written time.Time `json:"written"`
	PID     int       `json:"pid"` // the daemon that wrote it
	// PIDStart is that daemon's start time (clock ticks since boot): its
	// pid alone could be another process's by the time it is read.
	PIDStart uint64              `json:"pid_start_ticks,omitempty"`
	Build    *Build              `json:"build,omitempty"` // its build (nil: written before builds were recorded)
	Apps     map[string]stateApp `json:"apps"`
}

type stateApp struct {
	Serving  *stateVersion `json:"serving,omitempty"`
	Previous string        `json:"previous,omitempty"`
	Last     string        `json:"last,omitempty"` // started again after a stop
	// Configured is deploy.toml's version when Last was recorded; another
	// one there at the next start wins over Last (an edit since).
	Configured string         `json:"configured,omitempty"`
	Paused     bool           `json:"paused"`
	Stopped    bool           `json:"stopped,omitempty"` // by `deployer stop`
	Draining   []stateVersion `json:"draining,omitempty"`
	// Starting is a version launched and not serving yet (a start or a
	// swap in progress): after a crash the next daemon stops it.
	Starting *stateVersion `json:"starting,omitempty"`
}

type stateVersion struct {
	Version   string          `json:"version"`
	Launched  time.Time       `json:"launched"`
	Instances []stateInstance `json:"instances"`
	// Deadline of a draining version: when its drain_timeout runs out.
	Deadline time.Time `json:"deadline,omitzero"`
	// Launch holds what the version was launched with, where deploy.toml
	// may say otherwise since: a daemon taking over drains and stops it
	// by these, and status keeps listing the edits as pending.
	Launch *stateLaunch `json:"launch,omitempty"`
}

// stateLaunch is the launch-time part of a version's config. The env is not
// kept (its values may be secrets), only whether it differs.
type stateLaunch struct {
	Command      []string      `json:"command"`
	Dir          string        `json:"dir,omitempty"`
	EnvFiles     []string      `json:"env_files,omitempty"`
	EnvChanged   bool          `json:"env_changed,omitempty"` // deploy.toml's env differed when the state was written
	DrainTimeout time.Duration `json:"drain_timeout_ns"`
	StopSignal   string        `json:"stop_signal"`
	StopTimeout  time.Duration `json:"stop_timeout_ns"`
}

type stateInstance struct {
	Instance   int       `json:"instance"`
	PID        int       `json:"pid"`
	StartTicks uint64    `json:"start_ticks"` // /proc/<pid>/stat starttime
	Started    time.Time `json:"started"`
	Socket     string    `json:"socket,omitempty"`
	Addr       string    `json:"addr,omitempty"`
	Log        string    `json:"log,omitempty"`
	LogOffset  int64     `json:"log_offset"`
	Restarts   int       `json:"restarts"`
}

// saveState writes the state file; a failure is logged, never fatal: the
// apps serve on whether or not the file could be written. While a new daemon
// starts, and once it took over, the file is the new one's to write.
func (d *Daemon) saveState() {
	if d.handedOver.Load() || d.upgrading.Load() || d.adopting.Load() {
		return
	}
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	build := CurrentBuild()
	sf := stateFile{Written: time.Now().UTC(), PID: os.Getpid(), PIDStart: ownStartTicks(), Build: &build, Apps: make(map[string]stateApp)}
	for _, a := range d.appList() {
		sf.Apps[a.name] = a.persisted()
	}
	// Apps removed from deploy.toml stay listed while their processes
	// drain: a daemon that takes over meanwhile stops them (retireRemoved).
	for _, a := range d.removingApps() {
		if _, ok := sf.Apps[a.name]; !ok {
			sf.Apps[a.name] = a.persisted()
		}
	}
	b, err := json.MarshalIndent(sf, "", "  ")
	if err == nil {
		err = writeFileAtomic(d.layout.StateFile(), append(b, '\n'), 0o644)
	}
	if err != nil {
		d.log.Error("writing state file", "error", err)
	}
}

// state describes the app for the state file.
func (a *App) persisted() stateApp {
	a.mu.Lock()
	defer a.mu.Unlock()
	sa := stateApp{Previous: a.previous, Last: a.last, Configured: a.lastConfigured, Paused: a.paused, Stopped: a.userStopped}
	now := a.cfg.Load()
	if a.serving != nil {
		sv := a.serving.persisted(now)
		sa.Serving = &sv
	}
	for v := range a.draining {
		sv := v.persisted(now)
		sv.Deadline = v.drainDeadline
		sa.Draining = append(sa.Draining, sv)
	}
	if v := a.starting; v != nil {
		sv := v.persisted(now)
		sa.Starting = &sv
	}
	return sa
}

// persisted describes v for the state file; now is its app's config in
// force.
func (v *version) persisted(now *AppConfig) stateVersion {
	c := v.cfg
	sv := stateVersion{Version: v.name, Launched: v.launched.UTC(), Launch: &stateLaunch{
		Command: c.Command, Dir: c.Dir, EnvFiles: c.EnvFiles,
		EnvChanged:   c.envChanged || !reflect.DeepEqual(c.Env, now.Env),
		DrainTimeout: c.DrainTimeout, StopSignal: signalName(c.StopSignal), StopTimeout: c.StopTimeout,
	}}
	for _, in := range v.instances {
		p, ep, _, restarts := in.snapshot()
		si := stateInstance{Instance: in.index, Restarts: restarts}
		if p != nil && !p.exited() {
			si.PID, si.StartTicks, si.Started = p.pid, p.startTicks, p.started.UTC()
			si.Log = p.spec.LogPath
			if o := p.log.Load(); o != nil {
				si.LogOffset = o.Offset()
			}
		}
		if ep.network == "unix" {
			si.Socket = ep.addr
		} else {
			si.Addr = ep.addr
		}
		sv.Instances = append(sv.Instances, si)
	}
	return sv
}

// readState reads the state file; a missing one is an empty state.
func readState(path string) (*stateFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &stateFile{Apps: map[string]stateApp{}}, nil
	}
	if err != nil {
		return nil, err
	}
	var sf stateFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return nil, fmt.Errorf("supervisor: %s: %w", path, err)
	}
	if sf.Apps == nil {
		sf.Apps = map[string]stateApp{}
	}
	return &sf, nil
}

// writeFileAtomic writes data to a temp file beside path, fsyncs it, renames
// it over path and fsyncs the directory: readers see the old file or the new
// one, never a torn one, even across a crash.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	df, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer df.Close()
	return df.Sync()
}
