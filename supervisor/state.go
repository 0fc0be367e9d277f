package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// stateFile is <state_dir>/state.json: what serves, what served before, and
// the processes, rewritten atomically on every change.
type stateFile struct {
	Written time.Time           `json:"written"`
	PID     int                 `json:"pid"`
	Apps    map[string]stateApp `json:"apps"`
}

type stateApp struct {
	Serving   string          `json:"serving,omitempty"`
	Previous  string          `json:"previous,omitempty"`
	Paused    bool            `json:"paused"`
	Instances []stateInstance `json:"instances,omitempty"`
}

type stateInstance struct {
	Instance int       `json:"instance"`
	PID      int       `json:"pid"`
	Started  time.Time `json:"started"`
	Socket   string    `json:"socket,omitempty"`
	Addr     string    `json:"addr,omitempty"`
}

// saveState writes the state file; a failure is logged, never fatal: the
// apps serve on whether or not the file could be written.
func (d *Daemon) saveState() {
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	sf := stateFile{Written: time.Now().UTC(), PID: os.Getpid(), Apps: make(map[string]stateApp)}
	for _, a := range d.appList() {
		name := a.name
		a.mu.Lock()
		sa := stateApp{Previous: a.previous, Paused: a.paused}
		if v := a.serving; v != nil {
			sa.Serving = v.name
			for _, in := range v.instances {
				p, ep, _, _ := in.snapshot()
				si := stateInstance{Instance: in.index}
				if p != nil {
					si.PID, si.Started = p.pid, p.started.UTC()
				}
				if ep.network == "unix" {
					si.Socket = ep.addr
				} else {
					si.Addr = ep.addr
				}
				sa.Instances = append(sa.Instances, si)
			}
		}
		a.mu.Unlock()
		sf.Apps[name] = sa
	}
	b, err := json.MarshalIndent(sf, "", "  ")
	if err == nil {
		err = writeFileAtomic(d.layout.StateFile(), append(b, '\n'), 0o644)
	}
	if err != nil {
		d.log.Error("writing state file", "error", err)
	}
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
