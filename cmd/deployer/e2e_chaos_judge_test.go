package main

// How the chaos test (e2e_chaos_test.go) tells documented outcomes from
// failures, and its summary.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// judge explains every outcome of the load that was not a 200 by the chaos
// that caused it, and returns the ones nothing explains.
func (c *chaos) judge(s *chaosStats, m *chaosMonitor) []string {
	problems := s.problemList()
	c.mu.Lock()
	defer c.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()

	// A 503 after queue_timeout: the request was held from its arrival for
	// queue_timeout, so app had nothing ready — paused, or every instance
	// down — for the whole time.
	for _, r := range s.held {
		if took := r.to.Sub(r.from); took < chaosQueueTimeout-50*time.Millisecond {
			problems = append(problems, fmt.Sprintf("%s %s: 503 after %s, before queue_timeout (%s)", r.what, r.app, took, chaosQueueTimeout))
			continue
		}
		var holds []window
		for _, w := range c.pauses {
			if w.app == r.app && w.to.Sub(w.from) >= chaosQueueTimeout {
				holds = append(holds, w)
			}
		}
		for _, w := range m.down {
			if w.app == r.app {
				holds = append(holds, w)
			}
		}
		if !covered(holds, r.from, r.to) {
			problems = append(problems, fmt.Sprintf("%s %s: 503 from %s to %s, outside any pause longer than queue_timeout or outage (pauses %s; outages %s)",
				r.what, r.app, r.from.Format("15:04:05.000"), r.to.Format("15:04:05.000"), windowsNear(c.pauses, r), windowsNear(m.down, r)))
		}
	}

	// A POST's 502: its app process died under it (POSTs are never
	// replayed), so a kill of that app happened while it ran — or just
	// before it began: a killed process's sockets stay open until the
	// kernel has torn it down, tens of ms on a busy machine, and a request
	// written meanwhile is lost with them, which no proxy can tell.
	for _, r := range s.post502 {
		i := slices.IndexFunc(c.kills, func(k kill) bool {
			return k.app == r.app && !k.at.Before(r.from.Add(-chaosSlack)) && !k.at.After(r.to)
		})
		if i >= 0 {
			k := c.kills[i]
			c.notes = append(c.notes, fmt.Sprintf("POST %s 502 (%s): kill of %s pid %d %s after it began",
				r.app, r.to.Sub(r.from).Round(time.Millisecond), k.how, k.pid, k.at.Sub(r.from).Round(100*time.Microsecond)))
		} else {
			problems = append(problems, fmt.Sprintf("POST %s: 502 from %s to %s, and no process of %s was killed meanwhile",
				r.app, r.from.Format("15:04:05.000"), r.to.Format("15:04:05.000"), r.app))
		}
	}

	// A stream ends early when its process was killed, or when its version
	// was retired drain_timeout before.
	for _, r := range s.cuts {
		killed := slices.ContainsFunc(c.kills, func(k kill) bool {
			return k.pid == r.pid && !k.at.Before(r.from) && !k.at.After(r.to.Add(chaosSlack))
		})
		seen, ok := m.lastSeen[r.pid]
		drained := ok && seen.Before(r.to) && !r.to.Before(seen.Add(chaosDrainTimeout-chaosSlack))
		if !killed && !drained {
			problems = append(problems, fmt.Sprintf("%s on %s pid %d, open %s to %s: cut, but its process was not killed, and it was last seen serving at %s (drain_timeout %s)",
				r.what, r.app, r.pid, r.from.Format("15:04:05.000"), r.to.Format("15:04:05.000"), seen.Format("15:04:05.000"), chaosDrainTimeout))
		}
	}

	// Every pause longer than queue_timeout by a margin turned someone away:
	// the GET clients never stop asking.
	for _, w := range c.pauses {
		if w.released.Sub(w.held) < chaosQueueTimeout+500*time.Millisecond {
			continue
		}
		if !slices.ContainsFunc(s.held, func(r timed) bool {
			return r.app == w.app && !r.from.Before(w.from.Add(-chaosSlack)) && !r.to.After(w.to.Add(chaosSlack))
		}) {
			problems = append(problems, fmt.Sprintf("pause of %s called at %s, returned at %s; resume called at %s, returned at %s: no request got 503, want some (queue_timeout %s)",
				w.app, w.from.Format("15:04:05.000"), w.held.Format("15:04:05.000"), w.released.Format("15:04:05.000"), w.to.Format("15:04:05.000"), chaosQueueTimeout))
		}
	}
	// A swap fails when a kill hits the version it launches: the
	// documented failed swap (exit 1, the old version untouched).
	for _, f := range c.failed {
		if !strings.Contains(f.output, "killed by SIGKILL") || !slices.ContainsFunc(c.kills, func(k kill) bool {
			return k.app == f.app && k.how != "serving" && !k.at.Before(f.from) && !k.at.After(f.to)
		}) {
			problems = append(problems, fmt.Sprintf("%s at %s failed, and no process it launched was killed: %s", f.what, f.from.Format("15:04:05.000"), f.output))
		}
	}
	return problems
}

// covered reports whether the windows, each widened by chaosSlack, cover
// [from, to] without a gap.
func covered(ws []window, from, to time.Time) bool {
	ws = slices.Clone(ws)
	slices.SortFunc(ws, func(a, b window) int { return a.from.Compare(b.from) })
	at := from
	for _, w := range ws {
		if w.from.Add(-chaosSlack).After(at) {
			break
		}
		if end := w.to.Add(chaosSlack); end.After(at) {
			at = end
		}
		if !at.Before(to) {
			return true
		}
	}
	return !at.Before(to)
}

// windowsNear lists the windows of r's app that touch [r.from-5s, r.to+5s].
func windowsNear(ws []window, r timed) string {
	var b strings.Builder
	for _, w := range ws {
		if w.app == r.app && w.to.After(r.from.Add(-5*time.Second)) && w.from.Before(r.to.Add(5*time.Second)) {
			fmt.Fprintf(&b, "[%s %s] ", w.from.Format("15:04:05.000"), w.to.Sub(w.from).Round(time.Millisecond))
		}
	}
	return b.String()
}

// checkPosts compares the POSTs with the record the apps kept: every POST
// answered 200 reached an app exactly once, and none reached one twice.
// It returns how many never reached an app (all of them failed ones).
func (c *chaos) checkPosts(t *testing.T, s *chaosStats) (lost int) {
	t.Helper()
	rec, err := os.ReadFile(filepath.Join(c.e.dir, "record"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(rec)), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "POST" {
			seen[f[1]]++
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, ok := range s.posts {
		switch {
		case seen[id] > 1:
			t.Errorf("POST %s reached the apps %d times, want at most once", id, seen[id])
		case ok && seen[id] == 0:
			t.Errorf("POST %s answered 200 but never reached an app", id)
		case seen[id] == 0:
			lost++
		}
	}
	return lost
}

// summary logs the counts of the run as tables.
func (c *chaos) summary(t *testing.T, s *chaosStats, before, after daemonCounts, lostPosts int) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "chaos seed %d\n", c.seed)
	fmt.Fprintf(&b, "%-9s %8s %6s %6s %6s %8s\n", "LOAD", "200/ok", "503", "502", "cut", "problem")
	s.mu.Lock()
	for _, what := range []string{"GET", "POST", "WS", "SSE"} {
		for _, app := range chaosApps {
			k := what + " " + app + " "
			n200, n503, n502, cut := s.counts[k+"200"], s.counts[k+"503"], s.counts[k+"502"], s.counts[k+"cut"]
			bad := 0
			for key, n := range s.counts {
				if strings.HasPrefix(key, k) {
					bad += n
				}
			}
			bad -= n200 + n503 + n502 + cut
			if n200+bad+n503+n502+cut > 0 {
				fmt.Fprintf(&b, "%-9s %8d %6d %6d %6d %8d\n", what+" "+app, n200, n503, n502, cut, bad)
			}
		}
	}
	fmt.Fprintf(&b, "POSTs that failed and never reached an app: %d\n", lostPosts)
	s.mu.Unlock()
	c.mu.Lock()
	whats := make([]string, 0, len(c.ops))
	for w := range c.ops {
		whats = append(whats, w)
	}
	slices.Sort(whats)
	fmt.Fprintf(&b, "CHAOS\n")
	for _, w := range whats {
		outs := make([]string, 0, len(c.ops[w]))
		for o, n := range c.ops[w] {
			outs = append(outs, fmt.Sprintf("%s %d", o, n))
		}
		slices.Sort(outs)
		fmt.Fprintf(&b, "  %-14s %s\n", w, strings.Join(outs, ", "))
	}
	for _, n := range c.notes {
		fmt.Fprintf(&b, "  %s\n", n)
	}
	for _, f := range c.failed {
		fmt.Fprintf(&b, "  failed: %s at %s: %s\n", f.what, f.from.Format("15:04:05.000"), f.output)
	}
	c.mu.Unlock()
	fmt.Fprintf(&b, "DAEMON    goroutines %d → %d, open fds %d → %d (open_fds in status %d → %d), app processes %d → %d\n",
		before.goroutines, after.goroutines, before.fds, after.fds, before.statusFDs, after.statusFDs, len(before.children), len(after.children))
	t.Logf("summary:\n%s", b.String())
}
