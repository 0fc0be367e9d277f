package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// A pooled report (-pool) reads results saved with -json and compares every
// target with nginx over all their rounds together. One run's median says
// little when two copies of the same nginx land ±5 % apart (-control); the
// pooled rounds say how far apart the two really are, with an interval.

// confidence is the pooled report's confidence level for its intervals.
const confidence = 0.95

// pooledTarget is one target's rounds against nginx's, over every run.
type pooledTarget struct {
	ratios []float64 // requests/s over nginx's, round by round
	p99    []float64 // p99 minus nginx's in ms, round by round
	runs   int       // runs that measured it beside nginx
	both   int       // runs whose medians met both of issue 5's first two targets
}

// intervals returns the confidence intervals of t's two medians; ok is false
// when t has too few rounds for them.
func (t *pooledTarget) intervals() (rlo, rhi, plo, phi float64, ok bool) {
	rlo, rhi, ok = medianInterval(t.ratios, confidence)
	plo, phi, _ = medianInterval(t.p99, confidence) // as many rounds
	return rlo, rhi, plo, phi, ok
}

// pooledRun is one saved run that was pooled.
type pooledRun struct {
	file   string
	rounds int    // rounds paired with nginx
	build  string // the deployer build measured, "" unrecorded
}

// pooled is the report of several saved runs.
type pooled struct {
	runs    []pooledRun
	skipped []string // files left out, with why
	targets map[string]*pooledTarget
}

// loadPooled reads saved results and pairs every round with nginx's round
// of the same run.
func loadPooled(files []string) (*pooled, error) {
	p := &pooled{targets: map[string]*pooledTarget{}}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		p.add(filepath.Base(f), &r)
	}
	return p, nil
}

// add pools the rounds of one run named name.
func (p *pooled) add(name string, r *result) {
	if len(r.Rounds["nginx"]) == 0 {
		p.skipped = append(p.skipped, name+": no rounds of nginx (run without nginx, or saved by a bench before -rounds)")
		return
	}
	p.runs = append(p.runs, pooledRun{file: name, rounds: len(r.Rounds["nginx"]), build: r.Machine.DeployerBuild})
	for tname, q := range pairedRatios(r.Rounds) {
		if tname == "nginx" || len(q.NginxRounds) == 0 {
			continue
		}
		t := p.targets[tname]
		if t == nil {
			t = &pooledTarget{}
			p.targets[tname] = t
		}
		t.ratios = append(t.ratios, q.NginxRounds...)
		t.p99 = append(t.p99, q.P99Rounds...)
		t.runs++
		if rpsGoal(q.Nginx) && p99Goal(q.P99VsNginxMs) {
			t.both++
		}
	}
}

// medianInterval returns a distribution-free confidence interval at level
// conf for the median of whatever xs are drawn from: the k-th smallest and
// the k-th largest of xs, with k the largest for which the chance that
// fewer than k of n draws fall below the median (a binomial with p = 1/2)
// is at most (1 − conf)/2. ok is false when xs are too few for any such
// interval (five or fewer at 95 %).
func medianInterval(xs []float64, conf float64) (lo, hi float64, ok bool) {
	n := len(xs)
	tail := (1 - conf) / 2
	k, cum := 0, 0.0
	for j := 0; j < n; j++ {
		cum += binomialHalf(n, j)
		if cum > tail {
			break
		}
		k = j + 1
	}
	if k == 0 {
		return 0, 0, false
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[k-1], s[n-k], true
}

// binomialHalf is the chance of exactly j successes in n draws with p = 1/2.
func binomialHalf(n, j int) float64 {
	lg := func(x int) float64 { v, _ := math.Lgamma(float64(x + 1)); return v }
	return math.Exp(lg(n) - lg(j) - lg(n-j) - float64(n)*math.Ln2)
}

// verdict says what an interval [lo, hi] shows about a figure whose target
// is met: met for the whole interval, not met for any of it, or neither.
func verdict(lo, hi float64, ok bool, met func(float64) bool) string {
	switch {
	case !ok:
		return "too few rounds to tell"
	case met(lo) && met(hi):
		return "met: the whole interval is on the target's side"
	case !met(lo) && !met(hi):
		return "not met: the whole interval is on the wrong side"
	default:
		return "not shown either way: the interval straddles the target"
	}
}

func (p *pooled) print(w io.Writer) {
	total := 0
	var builds []string
	for _, run := range p.runs {
		total += run.rounds
		if !slices.Contains(builds, run.build) {
			builds = append(builds, run.build)
		}
	}
	fmt.Fprintf(w, "pooled: %d runs, %d rounds with nginx, every target compared with nginx in the same round\n", len(p.runs), total)
	for _, run := range p.runs {
		b := run.build
		if b == "" {
			b = "build not recorded"
		}
		fmt.Fprintf(w, "  %-28s %2d rounds  deployer %s\n", run.file, run.rounds, b)
	}
	if len(builds) > 1 {
		fmt.Fprintf(w, "  note: these runs measured %d different deployer builds (or some did not record theirs); pool runs of one build to judge it\n", len(builds))
	}
	fmt.Fprintln(w)
	pct := fmt.Sprintf("%.0f %%", confidence*100)
	nw := nameWidth(16, p.names())
	fmt.Fprintf(w, "%-*s %6s  %-28s %6s  %-32s %6s  %s\n", nw, "target", "rounds", "vs nginx: median ["+pct+"]", "≥ 1.0", "p99 − nginx's: median ["+pct+"]", "≤ 0", "runs meeting both")
	for _, name := range p.names() {
		t := p.targets[name]
		rlo, rhi, plo, phi, ok := t.intervals()
		ri, pi := "", ""
		if ok {
			ri = fmt.Sprintf(" [%.3f, %.3f]", rlo, rhi)
			pi = fmt.Sprintf(" [%+.2f, %+.2f]", plo, phi)
		}
		fmt.Fprintf(w, "%-*s %6d  %-28s %6d  %-32s %6d  %d of %d\n", nw, name, len(t.ratios),
			fmt.Sprintf("%.3f ×%s", median(t.ratios), ri), count(t.ratios, rpsGoal),
			fmt.Sprintf("%+.2f ms%s", median(t.p99), pi), count(t.p99, p99Goal),
			t.both, t.runs)
	}
	fmt.Fprintf(w, "median: of the per-round figures (the upper one of an even count); [..]: a distribution-free %s confidence interval for it (order statistics)\n", pct)
	fmt.Fprintln(w, "runs meeting both: runs whose own median ratio was ≥ 1.000 and median p99 difference ≤ 0, as each run's table judges them")
	for _, name := range []string{"deployer", "nginx-b"} {
		t := p.targets[name]
		if t == nil {
			continue
		}
		rlo, rhi, plo, phi, ok := t.intervals()
		what := name
		if name == "nginx-b" {
			what = "control: nginx-b (the same nginx again)"
		}
		fmt.Fprintf(w, "\n%s, by issue 5's first two targets over the pooled rounds:\n", what)
		fmt.Fprintf(w, "  ≥ 1.0 × nginx requests/s   %s\n", verdict(rlo, rhi, ok, rpsGoal))
		fmt.Fprintf(w, "  p99 ≤ nginx p99            %s\n", verdict(plo, phi, ok, p99Goal))
	}
	for _, s := range p.skipped {
		fmt.Fprintf(w, "skipped: %s\n", s)
	}
}

// names returns the pooled targets in table order.
func (p *pooled) names() []string { return tableOrder(slices.Collect(maps.Keys(p.targets))) }

func count(xs []float64, f func(float64) bool) int {
	n := 0
	for _, x := range xs {
		if f(x) {
			n++
		}
	}
	return n
}

// poolFiles is -pool: the report of the saved runs named by args.
func poolFiles(w io.Writer, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("-pool: name the results saved with -json (go run ./bench -pool run1.json run2.json ...)")
	}
	p, err := loadPooled(args)
	if err != nil {
		return err
	}
	if len(p.runs) == 0 {
		return fmt.Errorf("-pool: none of the %d files has rounds of nginx: %s", len(args), strings.Join(p.skipped, "; "))
	}
	p.print(w)
	return nil
}
