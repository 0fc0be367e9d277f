package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The interval's ranks are the textbook ones for the median (sign test):
// none for five draws or fewer, the extremes for six to eight, the 2nd
// and 9th of ten, the 6th and 15th of twenty.
func TestMedianInterval(t *testing.T) {
	seq := func(n int) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = float64(n - i) // given in reverse: the interval sorts
		}
		return xs
	}
	for _, tc := range []struct {
		n      int
		ok     bool
		lo, hi float64
	}{
		{1, false, 0, 0}, {5, false, 0, 0}, {6, true, 1, 6}, {8, true, 1, 8},
		{9, true, 2, 8}, {10, true, 2, 9}, {20, true, 6, 15}, {100, true, 40, 61},
	} {
		lo, hi, ok := medianInterval(seq(tc.n), 0.95)
		if ok != tc.ok || lo != tc.lo || hi != tc.hi {
			t.Errorf("n=%d: [%v, %v] ok=%v, want [%v, %v] ok=%v", tc.n, lo, hi, ok, tc.lo, tc.hi, tc.ok)
		}
	}
}

func TestVerdict(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		target string // rps: at least nginx's (1.0); p99: at most nginx's (0 ms)
		ok     bool
		want   string
	}{
		{1.01, 1.05, "rps", true, "met"},
		{1.00, 1.05, "rps", true, "met"},
		{0.95, 0.99, "rps", true, "not met"},
		{0.95, 1.02, "rps", true, "not shown"},
		{-0.3, -0.1, "p99", true, "met"},
		{0.1, 0.3, "p99", true, "not met"},
		{-0.2, 0.2, "p99", true, "not shown"},
		{2, 3, "rps", false, "too few"},
	} {
		met := map[string]func(float64) bool{"rps": rpsGoal, "p99": p99Goal}[tc.target]
		if got := verdict(tc.lo, tc.hi, tc.ok, met); !strings.HasPrefix(got, tc.want) {
			t.Errorf("verdict(%v, %v, ok=%v) for the %s target = %q, want %q…", tc.lo, tc.hi, tc.ok, tc.target, got, tc.want)
		}
	}
}

// Runs saved with -json are pooled round by round: each round of a target
// against nginx's round of the same run, never across runs; a run without
// nginx's rounds is left out and named.
func TestPool(t *testing.T) {
	m := func(rps, p99ms float64) measured {
		return measured{Load: loadResult{RPS: rps, P99us: p99ms * 1000}}
	}
	dir := t.TempDir()
	save := func(name string, r result) string {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	a := save("a.json", result{Machine: machine{DeployerBuild: "v1 abc"}, Rounds: map[string][]measured{
		"deployer": {m(110, 4), m(90, 6), m(105, 5)}, // 1.10 −1, 0.90 +1, 1.05 0: median 1.05, 0 → both
		"nginx":    {m(100, 5), m(100, 5), m(100, 5)},
		"nginx-b":  {m(100, 5), m(80, 5), m(120, 5)},
	}})
	b := save("b.json", result{Machine: machine{DeployerBuild: "v1 abc"}, Rounds: map[string][]measured{
		"deployer":    {m(50, 3), m(98, 4)}, // paired with nginx's own rounds: 0.50 +1, 0.98 −2
		"nginx":       {m(100, 2), m(100, 6)},
		"epollrelay2": {m(200, 1), m(200, 1)},
	}})
	c := save("c.json", result{Rounds: map[string][]measured{"deployer": {m(1, 1)}}})

	p, err := loadPooled([]string{a, b, c})
	if err != nil {
		t.Fatal(err)
	}
	d := p.targets["deployer"]
	if want := []float64{1.10, 0.90, 1.05, 0.50, 0.98}; !approxEqual(d.ratios, want) {
		t.Errorf("deployer's ratios %v, want %v", d.ratios, want)
	}
	if want := []float64{-1, 1, 0, 1, -2}; !approxEqual(d.p99, want) {
		t.Errorf("deployer's p99 differences %v, want %v", d.p99, want)
	}
	if d.runs != 2 || d.both != 1 {
		t.Errorf("deployer: %d runs, %d meeting both; want 2 and 1 (a.json's)", d.runs, d.both)
	}
	if p.targets["nginx"] != nil {
		t.Error("nginx pooled against itself")
	}
	if len(p.runs) != 2 || len(p.skipped) != 1 || !strings.HasPrefix(p.skipped[0], "c.json: no rounds of nginx") {
		t.Errorf("runs %v, skipped %q: want a and b pooled, c left out", p.runs, p.skipped)
	}

	var out bytes.Buffer
	p.print(&out)
	text := strings.Join(strings.Fields(out.String()), " ") // columns, not spaces, matter
	for _, want := range []string{
		"pooled: 2 runs, 5 rounds with nginx",
		"deployer 5 0.980 × 2 +0.00 ms 3 1 of 2", // the medians of five; runs meeting both
		"epollrelay2 2 2.000 ×",                  // a target the table does not know still shows
		"too few rounds to tell",                 // five rounds: no 95 % interval
		"skipped: c.json",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "different deployer builds") {
		t.Errorf("one build reported as several:\n%s", out.String())
	}
	if err := poolFiles(&out, nil); err == nil {
		t.Error("-pool with no files: no error")
	}
	if err := poolFiles(&out, []string{c}); err == nil || !strings.Contains(err.Error(), "none of the 1 files") {
		t.Errorf("-pool of a run without nginx: %v", err)
	}
}

func approxEqual(got, want []float64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if d := got[i] - want[i]; d > 1e-9 || d < -1e-9 {
			return false
		}
	}
	return true
}

// Tables list the targets they know in their order, then the others (an
// experiment's row) by name.
func TestTableOrder(t *testing.T) {
	got := tableOrder([]string{"zz", "nginx", "deployer@nice3", "deployer", "aa"})
	if want := []string{"deployer", "nginx", "aa", "deployer@nice3", "zz"}; !slices.Equal(got, want) {
		t.Errorf("tableOrder = %q, want %q", got, want)
	}
}
