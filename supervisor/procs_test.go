package supervisor

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

func TestProcs(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	if got, want := Procs(3), (ProcsPlan{"config", 3, 3}); got != want {
		t.Errorf("Procs(3) = %+v, want %+v", got, want)
	}
	if got, want := Procs(0), (ProcsPlan{"all", cpus, cpus}); got != want {
		t.Errorf("Procs(0) = %+v, want %+v", got, want)
	}
	if got, want := Procs(ProcsAuto), (ProcsPlan{"auto", max(1, (cpus+1)/2), cpus}); got != want {
		t.Errorf("Procs(auto) with %d CPUs = %+v, want %+v", cpus, got, want)
	}
	// GOMAXPROCS in the environment was applied by the runtime at start
	// (cpus holds it) and wins over auto, not over a number.
	t.Setenv("GOMAXPROCS", "5")
	if got, want := Procs(ProcsAuto), (ProcsPlan{"env", cpus, cpus}); got != want {
		t.Errorf("Procs(auto) with GOMAXPROCS set = %+v, want %+v", got, want)
	}
	if got, want := Procs(2), (ProcsPlan{"config", 2, 2}); got != want {
		t.Errorf("Procs(2) with GOMAXPROCS set = %+v, want %+v", got, want)
	}
	for n, want := range map[int]int{1: 1, 2: 1, 3: 2, 4: 2, 8: 4, 9: 5} {
		if got := halfOf(n); got != want {
			t.Errorf("halfOf(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestLoadConfigProcs(t *testing.T) {
	for src, want := range map[string]int{
		"":                       ProcsAuto,
		`procs = "auto"`:         ProcsAuto,
		"procs = 0":              0,
		"procs = 3":              3,
		"procs = 1024":           1024,
		"queue_timeout = \"1s\"": ProcsAuto,
	} {
		cfg := loadString(t, "[deployer]\n"+src+"\n"+app)
		if cfg.Deployer.Procs != want {
			t.Errorf("%q: Procs = %d, want %d", src, cfg.Deployer.Procs, want)
		}
	}
}

// fakeRuntime stands for the runtime's GOMAXPROCS, the clock and the
// process's CPU time in threadTuner's tests.
type fakeRuntime struct {
	procs, dflt int // in force; what the runtime chooses on its own
	sets        int
	now         time.Time
	cpu         time.Duration
}

func (f *fakeRuntime) tuner(t *testing.T) *threadTuner {
	t.Setenv("GOMAXPROCS", "")
	return &threadTuner{
		log:    slog.New(slog.DiscardHandler),
		manage: true,
		set: func(n int) int {
			f.sets++
			if n == 0 {
				n = f.dflt
			}
			f.procs = n
			return n
		},
		now:     func() time.Time { return f.now },
		cpuTime: func() time.Duration { return f.cpu },
		current: f.procs,
	}
}

// run advances the clock by d in tuneEvery steps, the process using
// cpus CPUs meanwhile, sampling at every step as the loop does.
func (f *fakeRuntime) run(tt *threadTuner, d time.Duration, cpus float64) {
	for end := f.now.Add(d); f.now.Before(end); {
		f.now = f.now.Add(tuneEvery)
		f.cpu += time.Duration(cpus * float64(tuneEvery))
		tt.sample()
	}
}

func TestThreadTunerAuto(t *testing.T) {
	if cpus < 2 {
		// Procs(ProcsAuto) is {auto 1 1} on one CPU: nothing to move.
		// The plan below is set by hand, so the test runs anyway.
		t.Logf("%d CPU: the plan is set by hand", cpus)
	}
	f := &fakeRuntime{procs: 4, dflt: 4, now: time.Unix(1e9, 0)}
	tt := f.tuner(t)
	tt.plan = ProcsPlan{"auto", 2, 4}
	tt.retuneLocked()
	if f.procs != 2 {
		t.Fatalf("steady: procs %d, want 2 (half of 4)", f.procs)
	}

	// An app process starting: all CPUs at once, and for startTail after
	// it is healthy.
	started := tt.appStarting()
	if f.procs != 4 {
		t.Fatalf("app starting: procs %d, want 4", f.procs)
	}
	f.run(tt, 5*time.Second, 0.2) // a slow start
	if f.procs != 4 {
		t.Fatalf("app still starting after 5s: procs %d, want 4", f.procs)
	}
	started()
	started() // a second call does nothing
	f.run(tt, startTail-tuneEvery, 0.2)
	if f.procs != 4 {
		t.Fatalf("%s after the start: procs %d, want 4 for %s", startTail-tuneEvery, f.procs, startTail)
	}
	f.run(tt, 2*tuneEvery, 0.2)
	if f.procs != 2 {
		t.Fatalf("after the start's tail: procs %d, want 2", f.procs)
	}
	if tt.starting != 0 {
		t.Fatalf("starting = %d after one start ended twice, want 0", tt.starting)
	}

	// Busy: over busyShare of 2 CPUs for busyWindow → 4. Under it: stays.
	f.run(tt, 3*time.Second, 0.8*2)
	if f.procs != 2 {
		t.Fatalf("using 1.6 of 2 CPUs: procs %d, want 2 (not busy)", f.procs)
	}
	f.run(tt, busyWindow+tuneEvery, 1.9)
	if f.procs != 4 {
		t.Fatalf("using 1.9 of 2 CPUs: procs %d, want 4 (busy)", f.procs)
	}
	// Still over calmShare: stays busy, however long.
	f.run(tt, 3*calmFor, 1.2)
	if f.procs != 4 {
		t.Fatalf("busy, then using 1.2 CPUs: procs %d, want 4 (over calmShare of 2)", f.procs)
	}
	// Calm (under calmShare over the last busyWindow) for less than
	// calmFor: still 4; a burst starts the calm over.
	f.run(tt, calmFor-tuneEvery, 0.5)
	if f.procs != 4 {
		t.Fatalf("calm for less than %s: procs %d, want 4", calmFor, f.procs)
	}
	f.run(tt, busyWindow, 1.5)
	f.run(tt, calmFor-tuneEvery, 0.5)
	if f.procs != 4 {
		t.Fatalf("calm again for less than %s after a burst: procs %d, want 4", calmFor, f.procs)
	}
	f.run(tt, busyWindow+2*tuneEvery, 0.5)
	if f.procs != 2 {
		t.Fatalf("calm for %s: procs %d, want 2", calmFor, f.procs)
	}

	// The runtime's own choice changed (a cgroup CPU limit): the next
	// time auto goes to all CPUs it learns the new number, and its half.
	f.dflt = 6
	done := tt.appStarting()
	if f.procs != 6 {
		t.Fatalf("starting with 6 CPUs now: procs %d, want 6", f.procs)
	}
	done()
	f.run(tt, startTail+tuneEvery, 0)
	if plan := tt.status(); f.procs != 3 || plan.Min != 3 || plan.Max != 6 {
		t.Fatalf("after the CPUs changed: procs %d, plan %+v; want 3 of 3..6", f.procs, plan)
	}

	// No change, no call: sampling alone never sets GOMAXPROCS again.
	sets := f.sets
	f.run(tt, 10*time.Second, 0.1)
	if f.sets != sets {
		t.Errorf("%d GOMAXPROCS calls while nothing changed", f.sets-sets)
	}
}

func TestThreadTunerConfigure(t *testing.T) {
	f := &fakeRuntime{procs: cpus, dflt: cpus, now: time.Unix(1e9, 0)}
	tt := f.tuner(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	tt.configure(ctx, 3, false)
	if f.procs != 3 {
		t.Fatalf("procs = 3: GOMAXPROCS %d", f.procs)
	}
	// A fixed number does not move while an app starts.
	started := tt.appStarting()
	if f.procs != 3 {
		t.Fatalf("procs = 3, app starting: GOMAXPROCS %d, want 3", f.procs)
	}
	started()
	f.now = f.now.Add(startTail)

	tt.configure(ctx, ProcsAuto, true)
	if want := halfOf(cpus); f.procs != want {
		t.Fatalf("auto: GOMAXPROCS %d, want %d", f.procs, want)
	}
	if cpus > 1 && tt.loop == nil {
		t.Errorf("auto with %d CPUs: no sampling loop", cpus)
	}

	tt.configure(ctx, 0, true)
	if f.procs != cpus || tt.loop != nil {
		t.Fatalf("procs = 0 after a reload: GOMAXPROCS %d (want %d), loop running %v", f.procs, cpus, tt.loop != nil)
	}
	// procs = 0 at start leaves the runtime's setting alone.
	f2 := &fakeRuntime{procs: cpus, dflt: cpus}
	tt2 := f2.tuner(t)
	tt2.configure(ctx, 0, false)
	if f2.sets != 0 {
		t.Errorf("procs = 0 at start: %d GOMAXPROCS calls, want none", f2.sets)
	}
	// A tuner that does not manage GOMAXPROCS (a daemon inside a test
	// process) never sets it, and has no plan to report.
	f3 := &fakeRuntime{procs: cpus, dflt: cpus}
	tt3 := f3.tuner(t)
	tt3.manage = false
	tt3.configure(ctx, 3, false)
	tt3.configure(ctx, ProcsAuto, true)
	tt3.appStarting()()
	if f3.sets != 0 || tt3.status() != (ProcsPlan{}) {
		t.Errorf("unmanaged: %d GOMAXPROCS calls, plan %+v; want none and the zero plan", f3.sets, tt3.status())
	}
}
