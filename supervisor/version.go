package supervisor

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// version is one launched version of an app: its instances, one process
// each. The same version name may be launched again (restart), so a version
// is identified by its pointer, never by its name alone.
type version struct {
	name      string
	key       string     // unique per launch: how the proxy knows this version
	cfg       *AppConfig // the config it was launched with
	launched  time.Time
	instances []*instance

	// mu orders a crash restart's rename over the stable path against the
	// swap that retires this version: once stopping is set, no instance of
	// this version touches a stable path again.
	mu       sync.Mutex
	stopping bool

	state atomic.Value // string: starting serving draining stopped failed

	drainDeadline time.Time // set when it starts draining; guarded by App.mu
}

// launches numbers launches, making version keys unique in this daemon.
var launches atomic.Uint64

func newVersion(name string, cfg *AppConfig) *version {
	key := name + "#" + strconv.FormatUint(launches.Add(1), 10)
	v := &version{name: name, key: key, cfg: cfg, launched: time.Now()}
	v.state.Store(StateStarting)
	for i := 0; i < cfg.Instances; i++ {
		v.instances = append(v.instances, &instance{index: i})
	}
	return v
}

func (v *version) State() string { return v.state.Load().(string) }

// markStopping stops crash restarts of v from touching stable paths, and
// reports whether it was already stopping.
func (v *version) markStopping() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	was := v.stopping
	v.stopping = true
	return was
}

func (v *version) isStopping() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.stopping
}

// inRotation counts v's instances in rotation. The caller holds v.mu.
func (v *version) inRotation() int {
	n := 0
	for _, in := range v.instances {
		in.mu.Lock()
		if in.healthy {
			n++
		}
		in.mu.Unlock()
	}
	return n
}

// instance is one slot of a version: the process currently filling it, which
// changes when a crashed process is restarted.
type instance struct {
	index int

	mu      sync.Mutex
	proc    *process
	ep      endpoint
	healthy bool // in rotation
	// checkErr is the last health check's error once fall checks in a
	// row failed, until rise pass: also for the last instance, which is
	// kept in rotation anyway. "" for a new process.
	checkErr string
	restarts int
	// warnedLast: the log already says this last instance in rotation
	// fails its checks but is kept.
	warnedLast bool
}

func (in *instance) snapshot() (p *process, ep endpoint, healthy bool, restarts int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.proc, in.ep, in.healthy, in.restarts
}

func (in *instance) set(p *process, ep endpoint, healthy bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.proc, in.ep, in.healthy, in.checkErr = p, ep, healthy, ""
}

// setCheckErr records the health verdict on process p (see checkErr), if
// the instance still holds it.
func (in *instance) setCheckErr(p *process, msg string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.proc == p {
		in.checkErr = msg
	}
}

func (in *instance) checkError() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.checkErr
}

func (in *instance) setHealthy(h bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.healthy = h
}
