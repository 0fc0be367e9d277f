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

// pooled is the report of several saved runs.
type pooled struct {
	files   []string
	rounds  []int    // per file: rounds paired with nginx
	builds  []string // per file: the deployer build measured, "" unrecorded
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
	p.files = append(p.files, name)
	p.rounds = append(p.rounds, len(r.Rounds["nginx"]))
	p.builds = append(p.builds, r.Machine.DeployerBuild)
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
		if q.Nginx >= 1.0 && q.P99VsNginxMs <= 0 {
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

// verdict says what an interval shows about a figure whose target is to be
// at least goal (atLeast) or at most goal.
func verdict(lo, hi, goal float64, atLeast, ok bool) string {
	switch {
	case !ok:
		return "too few rounds to tell"
	case atLeast && lo >= goal, !atLeast && hi <= goal:
		return "met: the whole interval is on the target's side"
	case atLeast && hi < goal, !atLeast && lo > goal:
		return "not met: the whole interval is on the wrong side"
	default:
		return "not shown either way: the interval straddles the target"
	}
}

func (p *pooled) print(w io.Writer) {
	total := 0
	for _, n := range p.rounds {
		total += n
	}
	fmt.Fprintf(w, "pooled: %d runs, %d rounds with nginx, every target compared with nginx in the same round\n", len(p.files), total)
	for i, f := range p.files {
		b := p.builds[i]
		if b == "" {
			b = "build not recorded"
		}
		fmt.Fprintf(w, "  %-28s %2d rounds  deployer %s\n", f, p.rounds[i], b)
	}
	if builds := distinct(p.builds); len(builds) > 1 {
		fmt.Fprintf(w, "  note: these runs measured %d different deployer builds (or some did not record theirs); pool runs of one build to judge it\n", len(builds))
	}
	fmt.Fprintln(w)
	pct := fmt.Sprintf("%.0f %%", confidence*100)
	fmt.Fprintf(w, "%-16s %6s  %-28s %6s  %-32s %6s  %s\n", "target", "rounds", "vs nginx: median ["+pct+"]", "≥ 1.0", "p99 − nginx's: median ["+pct+"]", "≤ 0", "runs meeting both")
	for _, name := range p.names() {
		t := p.targets[name]
		rlo, rhi, ok := medianInterval(t.ratios, confidence)
		plo, phi, _ := medianInterval(t.p99, confidence)
		ri, pi := "", ""
		if ok {
			ri = fmt.Sprintf(" [%.3f, %.3f]", rlo, rhi)
			pi = fmt.Sprintf(" [%+.2f, %+.2f]", plo, phi)
		}
		fmt.Fprintf(w, "%-16s %6d  %-28s %6d  %-32s %6d  %d of %d\n", name, len(t.ratios),
			fmt.Sprintf("%.3f ×%s", median(t.ratios), ri), count(t.ratios, func(x float64) bool { return x >= 1.0 }),
			fmt.Sprintf("%+.2f ms%s", median(t.p99), pi), count(t.p99, func(x float64) bool { return x <= 0 }),
			t.both, t.runs)
	}
	fmt.Fprintf(w, "median: of the per-round figures (the upper one of an even count); [..]: a distribution-free %s confidence interval for it (order statistics)\n", pct)
	fmt.Fprintln(w, "runs meeting both: runs whose own median ratio was ≥ 1.000 and median p99 difference ≤ 0, as each run's table judges them")
	for _, name := range []string{"deployer", "nginx-b"} {
		t := p.targets[name]
		if t == nil {
			continue
		}
		rlo, rhi, ok := medianInterval(t.ratios, confidence)
		plo, phi, _ := medianInterval(t.p99, confidence)
		what := name
		if name == "nginx-b" {
			what = "control: nginx-b (the same nginx again)"
		}
		fmt.Fprintf(w, "\n%s, by issue 5's first two targets over the pooled rounds:\n", what)
		fmt.Fprintf(w, "  ≥ 1.0 × nginx requests/s   %s\n", verdict(rlo, rhi, 1.0, true, ok))
		fmt.Fprintf(w, "  p99 ≤ nginx p99            %s\n", verdict(plo, phi, 0, false, ok))
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

// distinct returns the different values of ss, in first-seen order.
func distinct(ss []string) []string {
	var out []string
	for _, s := range ss {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
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
	if len(p.files) == 0 {
		return fmt.Errorf("-pool: none of the %d files has rounds of nginx: %s", len(args), strings.Join(p.skipped, "; "))
	}
	p.print(w)
	return nil
}
