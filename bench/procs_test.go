package main

import (
	"math"
	"slices"
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

// A run disturbed by steal is measured again; the least disturbed attempt
// is kept, and the others' steal is recorded.
func TestMeasureSteady(t *testing.T) {
	cases := []struct {
		name      string
		maxSteal  float64
		steal     []float64 // each attempt's
		keep      float64
		discarded []float64
	}{
		{"calm", 2, []float64{0.4}, 0.4, nil},
		{"once disturbed", 2, []float64{9, 0.1}, 0.1, []float64{9}},
		{"always disturbed, the least kept", 2, []float64{9, 3, 12, 5}, 3, []float64{9, 12, 5}},
		{"off", 0, []float64{40}, 40, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			calls := 0
			measure := func() (measured, error) {
				m := measured{StealPct: c.steal[calls], Load: loadResult{RPS: float64(1000 * (calls + 1))}}
				calls++
				return m, nil
			}
			m, err := measureSteady(c.maxSteal, 3, measure, func(string, ...any) {})
			if err != nil {
				t.Fatal(err)
			}
			if calls != len(c.steal) || m.StealPct != c.keep || !slices.Equal(m.Discarded, c.discarded) {
				t.Errorf("%d attempts, kept steal %v, discarded %v; want %d, %v, %v", calls, m.StealPct, m.Discarded, len(c.steal), c.keep, c.discarded)
			}
		})
	}
}
