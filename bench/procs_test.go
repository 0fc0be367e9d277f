package main

import (
	"math"
	"testing"
)

func TestCPUStat(t *testing.T) {
	// Linux 6.x: user nice system idle iowait irq softirq steal guest guest_nice.
	before := parseCPUStat("cpu  2667872 0 1084063 4069279 12481 0 203302 4385 0 0")
	after := parseCPUStat("cpu  2668672 0 1084463 4069379 12481 0 203502 4785 0 0")
	if before.total != 2667872+1084063+4069279+12481+203302+4385 || before.idle != 4069279 || before.steal != 4385 {
		t.Fatalf("parsed %+v", before)
	}
	// 800 user + 400 system + 100 idle + 200 softirq + 400 steal = 1900.
	steal, idle := after.since(before)
	if math.Abs(steal-100*400.0/1900) > 1e-9 || math.Abs(idle-100*100.0/1900) > 1e-9 {
		t.Errorf("steal %.3f%% idle %.3f%%, want %.3f%% and %.3f%%", steal, idle, 100*400.0/1900, 100*100.0/1900)
	}
	if s, i := after.since(after); s != 0 || i != 0 {
		t.Errorf("no time passed: %v %v, want 0 0", s, i)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7 8", "cpu 1 2 3"} {
		if got := parseCPUStat(bad); got != (cpuStat{}) {
			t.Errorf("parseCPUStat(%q) = %+v, want zero", bad, got)
		}
	}
}
