package supervisor

import (
	"os"
	"runtime"
)

// maxProcs bounds deployer.procs: more threads than any machine deployer
// runs on has CPUs is a typo.
const maxProcs = 1024

// cpus is the runtime's own GOMAXPROCS when the process started: the CPUs
// it may use (the machine's, or its cgroup's CPU limit), or what the
// GOMAXPROCS environment variable said.
var cpus = runtime.GOMAXPROCS(0)

// Procs is how many threads may run the daemon's Go code at once
// (runtime.GOMAXPROCS) under deploy.toml's procs = n, and where that number
// comes from: "config" (n > 0), "env" (n = 0 and the GOMAXPROCS
// environment variable is set) or "auto" (half the CPUs, rounded up).
//
// Why half by default: the daemon shares the machine with the apps it
// runs, and a Go program with as many threads as CPUs on a machine whose
// CPUs are busy with other processes pays for it (threads spinning for
// work, waking each other, descheduled with goroutines queued behind
// them). On the benchmark's 2-core machine, one thread instead of two cost
// the proxy about a sixth less CPU per request and cut its p99 latency
// (BENCHMARKS.md). A proxy that needs more sets procs.
func Procs(n int) (procs int, source string) {
	switch {
	case n > 0:
		return n, "config"
	case os.Getenv("GOMAXPROCS") != "":
		return cpus, "env"
	}
	return max(1, (cpus+1)/2), "auto"
}

// setProcs applies procs = n to the process, if the daemon manages it
// (DaemonOptions.ManageProcs), and logs it.
func (d *Daemon) setProcs(n int) {
	if !d.opts.ManageProcs {
		return
	}
	procs, source := Procs(n)
	runtime.GOMAXPROCS(procs)
	d.log.Info("procs: threads running Go code at once (GOMAXPROCS)", "procs", procs, "source", source, "cpus", cpus)
}
