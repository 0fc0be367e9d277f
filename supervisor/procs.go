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
// comes from: "config" (n > 0), else what the runtime chose at start:
// "env" (the GOMAXPROCS environment variable) or "auto" (every CPU the
// process may use).
//
// Fewer threads than CPUs is a trade-off for a machine whose CPUs the apps
// need too. On the benchmark's 2 CPUs, procs = 1 cost the proxy about a
// tenth less CPU per request and gave a lower p99 under steady load, but a
// longer tail during swaps (the one thread descheduled while a new app
// process starts stops the whole proxy) and a few percent fewer requests/s
// at saturation (BENCHMARKS.md). So the default stays Go's.
func Procs(n int) (procs int, source string) {
	switch {
	case n > 0:
		return n, "config"
	case os.Getenv("GOMAXPROCS") != "":
		return cpus, "env"
	}
	return cpus, "auto"
}

// setProcs applies procs = n to the process, if the daemon manages it
// (DaemonOptions.ManageProcs), and logs it: at start (reload false) and
// when a reload changed it. Without procs the runtime's own setting stays,
// which follows a cgroup CPU limit as it changes (runtime.GOMAXPROCS would
// stop that); a reload back to it restores it.
func (d *Daemon) setProcs(n int, reload bool) {
	if !d.opts.ManageProcs {
		return
	}
	procs, source := Procs(n)
	switch {
	case source == "config":
		runtime.GOMAXPROCS(procs)
	case !reload:
	case source == "env":
		runtime.GOMAXPROCS(procs)
	default:
		runtime.SetDefaultGOMAXPROCS()
	}
	d.log.Info("procs: threads running Go code at once (GOMAXPROCS)", "procs", runtime.GOMAXPROCS(0), "source", source, "cpus", cpus)
}
