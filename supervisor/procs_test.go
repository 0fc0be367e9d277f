package supervisor

import "testing"

func TestProcs(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	if n, src := Procs(3); n != 3 || src != "config" {
		t.Errorf("Procs(3) = %d, %q; want 3, config", n, src)
	}
	if n, src := Procs(0); n != cpus || src != "auto" {
		t.Errorf("Procs(0) with %d CPUs = %d, %q; want %d, auto", cpus, n, src, cpus)
	}
	// GOMAXPROCS in the environment was applied by the runtime at start
	// (cpus holds it) and wins over the default, not over procs.
	t.Setenv("GOMAXPROCS", "5")
	if n, src := Procs(0); n != cpus || src != "env" {
		t.Errorf("Procs(0) with GOMAXPROCS set = %d, %q; want %d, env", n, src, cpus)
	}
	if n, src := Procs(2); n != 2 || src != "config" {
		t.Errorf("Procs(2) with GOMAXPROCS set = %d, %q; want 2, config", n, src)
	}
}
