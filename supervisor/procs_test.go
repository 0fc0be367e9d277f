package supervisor

import "testing"

func TestProcs(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	if n, src := Procs(3); n != 3 || src != "config" {
		t.Errorf("Procs(3) = %d, %q; want 3, config", n, src)
	}
	if n, src := Procs(0); n != max(1, (cpus+1)/2) || src != "auto" || n > cpus {
		t.Errorf("Procs(0) with %d CPUs = %d, %q; want half of them rounded up, auto", cpus, n, src)
	}
	for c, want := range map[int]int{1: 1, 2: 1, 3: 2, 4: 2, 8: 4} {
		saved := cpus
		cpus = c
		n, _ := Procs(0)
		cpus = saved
		if n != want {
			t.Errorf("Procs(0) with %d CPUs = %d, want %d", c, n, want)
		}
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
