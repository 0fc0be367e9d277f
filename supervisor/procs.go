package supervisor

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// maxProcs bounds deployer.procs: more threads than any machine deployer
// runs on has CPUs is a typo.
const maxProcs = 1024

// ProcsAuto is deploy.toml's procs = "auto", the default: see Procs.
const ProcsAuto = -1

// cpus is the runtime's own GOMAXPROCS when the process started: the CPUs
// it may use (the machine's, or its cgroup's CPU limit), or what the
// GOMAXPROCS environment variable said.
var cpus = runtime.GOMAXPROCS(0)

// ProcsPlan is what deploy.toml's procs means on this machine: how many
// threads may run the daemon's Go code at once (runtime.GOMAXPROCS).
type ProcsPlan struct {
	// Source is where the number comes from: "auto" (procs unset or
	// "auto": between Min and Max, see Procs), "all" (procs = 0: every CPU,
	// the runtime's own setting), "config" (procs = n) or "env" (the
	// GOMAXPROCS environment variable, when procs is unset or "auto").
	Source string
	// Min and Max are equal unless Source is "auto".
	Min, Max int
}

// Procs is the plan for procs = n (ProcsAuto, 0, or a number of threads).
//
// "auto" runs the daemon on half the CPUs (rounded up) while it is steady,
// and on all of them while the machine is busiest for it: from the moment an
// app process starts until 2 s after it is healthy (a swap, a restart), and
// while the daemon's own CPU use is near what half the CPUs give it. On the
// benchmark's 2 CPUs, shared with the apps and the load, half the CPUs cost
// the proxy about a tenth less CPU per request and gave a lower p99 under
// steady load than every CPU, but a longer tail during swaps, when a new app
// process competes for the cores (BENCHMARKS.md): auto takes each side's
// better half. On one CPU, Min = Max = 1.
func Procs(n int) ProcsPlan {
	switch {
	case n > 0:
		return ProcsPlan{Source: "config", Min: n, Max: n}
	case n == 0:
		return ProcsPlan{Source: "all", Min: cpus, Max: cpus}
	case os.Getenv("GOMAXPROCS") != "":
		return ProcsPlan{Source: "env", Min: cpus, Max: cpus}
	}
	return ProcsPlan{Source: "auto", Min: halfOf(cpus), Max: cpus}
}

func halfOf(n int) int { return max(1, (n+1)/2) }

// Auto tuning.
const (
	// tuneEvery is how often the tuner samples the daemon's CPU use.
	tuneEvery = 250 * time.Millisecond
	// startTail is how long all CPUs stay after an app process became
	// healthy: the swap, the new process's first requests, the old one's
	// stop.
	startTail = 2 * time.Second
	// busyWindow is how far back the CPU use is measured.
	busyWindow = time.Second
	// calmFor is how long the CPU use must stay under calmShare of Min
	// before a busy daemon goes back to Min.
	calmFor = 5 * time.Second
)

const (
	// busyShare of Min CPUs used makes the daemon busy: it goes to Max.
	busyShare = 0.85
	// calmShare of Min CPUs is what a busy daemon must stay under.
	calmShare = 0.5
)

// threadTuner sets the process's GOMAXPROCS from a ProcsPlan and, for
// "auto", keeps moving it between Min and Max.
type threadTuner struct {
	log *slog.Logger
	// manage is DaemonOptions.ManageProcs: without it the tuner leaves
	// GOMAXPROCS alone and its plan stays the zero ProcsPlan.
	manage bool
	// set applies n threads (0: the runtime's own setting) and returns
	// the number now in force; now and cpuTime are the clock and the
	// process's CPU time. Fakes in the tests.
	set     func(n int) int
	now     func() time.Time
	cpuTime func() time.Duration

	mu       sync.Mutex
	plan     ProcsPlan
	current  int
	starting int       // app processes started and not yet healthy or gone
	tailTo   time.Time // Max at least until then (startTail)
	busy     bool
	calm     time.Time // since when the CPU use is under calmShare (zero: it is not)
	samples  []useSample
	loop     context.CancelFunc // the sampling loop of "auto"
}

type useSample struct {
	at  time.Time
	cpu time.Duration
}

func newThreadTuner(log *slog.Logger, manage bool) *threadTuner {
	return &threadTuner{log: log, manage: manage, set: setGOMAXPROCS, now: time.Now, cpuTime: processCPU, current: runtime.GOMAXPROCS(0)}
}

// setGOMAXPROCS sets the runtime's GOMAXPROCS to n, or back to the
// runtime's own choice for 0 (which, unlike a number, keeps following a
// cgroup CPU limit as it changes).
func setGOMAXPROCS(n int) int {
	if n == 0 {
		runtime.SetDefaultGOMAXPROCS()
	} else {
		runtime.GOMAXPROCS(n)
	}
	return runtime.GOMAXPROCS(0)
}

// processCPU is the user + system time of the whole process.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// configure applies procs = n: at start (reload false) and when a reload
// changed it. For "auto" it starts the sampling loop, which ends with ctx or
// the next configure. It does nothing unless the tuner manages GOMAXPROCS.
func (t *threadTuner) configure(ctx context.Context, n int, reload bool) {
	if !t.manage {
		return
	}
	plan := Procs(n)
	t.mu.Lock()
	if t.loop != nil {
		t.loop()
		t.loop = nil
	}
	t.plan = plan
	t.busy, t.calm, t.samples = false, time.Time{}, nil
	switch plan.Source {
	case "config":
		t.current = t.set(plan.Min)
	case "all", "env":
		// Unset at start: the runtime's own setting is already in
		// force. After a reload: back to it (env: the start value).
		if reload {
			if plan.Source == "env" {
				t.current = t.set(cpus)
			} else {
				t.current = t.set(0)
			}
		}
	case "auto":
		t.retuneLocked()
		if plan.Min < plan.Max {
			lctx, cancel := context.WithCancel(ctx)
			t.loop = cancel
			go t.run(lctx)
		}
	}
	current := t.current
	t.mu.Unlock()
	attrs := []any{"procs", current, "source", plan.Source, "cpus", cpus}
	if plan.Source == "auto" {
		attrs = append(attrs, "min", plan.Min, "max", plan.Max)
	}
	t.log.Info("procs: threads running Go code at once (GOMAXPROCS)", attrs...)
}

// run samples the CPU use every tuneEvery until ctx ends.
func (t *threadTuner) run(ctx context.Context) {
	tick := time.NewTicker(tuneEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.sample()
		}
	}
}

// sample records the process's CPU time, updates busy from the use over
// the last busyWindow, and retunes.
func (t *threadTuner) sample() {
	now, cpu := t.now(), t.cpuTime()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.plan.Source != "auto" {
		return
	}
	t.samples = append(t.samples, useSample{now, cpu})
	// The oldest sample kept is the newest at least busyWindow old.
	for len(t.samples) > 2 && now.Sub(t.samples[1].at) >= busyWindow {
		t.samples = t.samples[1:]
	}
	if first := t.samples[0]; now.Sub(first.at) >= busyWindow {
		used := float64(cpu-first.cpu) / float64(now.Sub(first.at)) // CPUs
		base := float64(t.plan.Min)
		switch {
		case used >= busyShare*base:
			t.busy, t.calm = true, time.Time{}
		case !t.busy || used >= calmShare*base:
			t.calm = time.Time{}
		case t.calm.IsZero():
			t.calm = now
		case now.Sub(t.calm) >= calmFor:
			t.busy, t.calm = false, time.Time{}
		}
	}
	t.retuneLocked()
}

// appStarting is called when an app process is about to start; the
// returned func when it is healthy, failed or gone (once is enough: later
// calls do nothing).
func (t *threadTuner) appStarting() (started func()) {
	t.mu.Lock()
	t.starting++
	t.retuneLocked()
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			t.starting--
			t.tailTo = t.now().Add(startTail)
			t.mu.Unlock()
		})
	}
}

// retuneLocked moves GOMAXPROCS to what auto wants now.
func (t *threadTuner) retuneLocked() {
	if t.plan.Source != "auto" {
		return
	}
	want, why := t.plan.Min, "steady"
	switch {
	case t.starting > 0:
		want, why = t.plan.Max, "app starting"
	case t.now().Before(t.tailTo):
		want, why = t.plan.Max, "app started"
	case t.busy:
		want, why = t.plan.Max, "busy"
	}
	if want == t.current {
		return
	}
	if want == t.plan.Max {
		// The runtime's own setting: it follows a cgroup CPU limit;
		// Min is half of what it says now.
		t.current = t.set(0)
		t.plan.Max, t.plan.Min = t.current, halfOf(t.current)
	} else {
		t.current = t.set(want)
	}
	t.log.Debug("procs changed", "procs", t.current, "why", why)
}

// status reports the plan in force (Max and Min as last learned).
func (t *threadTuner) status() ProcsPlan {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.plan
}
