package main

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// Targets are compared round by round: here deployer's median row (by
// requests/s) is round 2 and nginx's round 3, and the medians of the
// per-round comparisons differ from what those two rows say.
func TestPairedRatios(t *testing.T) {
	m := func(rps, p99ms float64) measured {
		return measured{Load: loadResult{RPS: rps, P99us: p99ms * 1000}}
	}
	rounds := map[string][]measured{
		"deployer": {m(47589, 4.30), m(45517, 5.09), m(44128, 4.76)},
		"nginx":    {m(46258, 5.49), m(35727, 6.21), m(45129, 4.84)},
		"haproxy":  {m(46000, 5.00), m(40000, 5.00), m(44128, 5.00)},
	}
	q := pairedRatios(rounds)["deployer"]
	round2 := func(xs []float64) []float64 {
		out := make([]float64, len(xs))
		for i, x := range xs {
			out[i] = math.Round(x*100) / 100
		}
		return out
	}
	if got := round2(q.NginxRounds); !slices.Equal(got, []float64{1.03, 1.27, 0.98}) {
		t.Errorf("vs nginx by round %v, want [1.03 1.27 0.98]", got)
	}
	if got := round2(q.P99Rounds); !slices.Equal(got, []float64{-1.19, -1.12, -0.08}) {
		t.Errorf("p99 minus nginx's by round %v, want [-1.19 -1.12 -0.08]", got)
	}
	if q.Nginx != q.NginxRounds[0] || q.P99VsNginxMs != q.P99Rounds[1] {
		t.Errorf("medians %.3f and %.3f ms: want round 1's ratio and round 2's p99 difference", q.Nginx, q.P99VsNginxMs)
	}
	if got := round2([]float64{q.HAProxy}); got[0] != 1.03 {
		t.Errorf("vs HAProxy %.3f, want the median 1.03 (rounds %v)", q.HAProxy, round2(q.HAProxyRounds))
	}
	if n := pairedRatios(rounds)["nginx"]; n.Nginx != 1 || n.P99VsNginxMs != 0 {
		t.Errorf("nginx against itself: %v", n)
	}

	// The targets follow the paired figures, not the median rows (5.09
	// against 4.84 ms would fail the p99 target).
	r := &result{Targets: map[string]loadResult{"deployer": rounds["deployer"][1].Load, "nginx": rounds["nginx"][2].Load}, Ratios: pairedRatios(rounds)}
	for _, g := range checkGoals(r) {
		if !g.Met {
			t.Errorf("goal %q not met: %s", g.What, g.Got)
		}
	}
	// One round: the same comparison as the rows.
	one := map[string][]measured{"deployer": {m(100, 5)}, "nginx": {m(110, 4)}}
	if q := pairedRatios(one)["deployer"]; q.P99VsNginxMs != 1 || q.Nginx != 100.0/110 {
		t.Errorf("one round: %+v", q)
	}
}

// The control row is compared with nginx like any target, and the line
// under the table says which of the first two targets it would have met.
func TestControl(t *testing.T) {
	m := func(rps, p99ms float64) measured {
		return measured{Load: loadResult{RPS: rps, P99us: p99ms * 1000}}
	}
	r := &result{Ratios: pairedRatios(map[string][]measured{
		"nginx":   {m(40000, 5.0), m(40000, 5.0), m(40000, 5.0)},
		"nginx-b": {m(44000, 5.5), m(38000, 5.2), m(41000, 4.9)},
	})}
	got := r.control()
	for _, want := range []string{"1.025 ×", "rounds 1.10 0.95 1.02", "p99 +0.20 ms", "rounds +0.50 +0.20 -0.10", "met the requests/s one, not the p99 one"} {
		if !strings.Contains(got, want) {
			t.Errorf("control line lacks %q:\n%s", want, got)
		}
	}
	if c := (&result{Ratios: pairedRatios(map[string][]measured{"nginx": {m(1, 1)}})}).control(); c != "" {
		t.Errorf("a run without nginx-b printed a control line: %q", c)
	}
}

// Odd rounds measure the targets as listed, even ones in reverse; the
// caller's list is left as it was.
func TestRoundOrder(t *testing.T) {
	targets := []string{"deployer", "nginx", "nginx-b"}
	var got [][]string
	for round := 1; round <= 3; round++ {
		got = append(got, slices.Clone(roundOrder(targets, round)))
	}
	want := [][]string{{"deployer", "nginx", "nginx-b"}, {"nginx-b", "nginx", "deployer"}, {"deployer", "nginx", "nginx-b"}}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("round %d: %v, want %v", i+1, got[i], want[i])
		}
	}
	if !slices.Equal(targets, []string{"deployer", "nginx", "nginx-b"}) {
		t.Errorf("the list itself was changed: %v", targets)
	}
}
