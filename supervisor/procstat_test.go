package supervisor

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestReadLoad compares readLoad with /proc/loadavg read around it; the
// kernel updates the averages every few seconds, so a read that straddles
// an update is tried again.
func TestReadLoad(t *testing.T) {
	// The first three fields; the others (runnable/total, last pid) change
	// all the time.
	read := func() string {
		b, err := os.ReadFile("/proc/loadavg")
		if err != nil {
			t.Skipf("no /proc/loadavg: %v", err)
		}
		f := strings.Fields(string(b))
		if len(f) < 3 {
			t.Fatalf("/proc/loadavg: %q", b)
		}
		return strings.Join(f[:3], " ")
	}
	for range 5 {
		before := read()
		got := readLoad()
		if read() != before {
			continue
		}
		f := strings.Fields(before)
		var want LoadStatus
		for i, p := range []*float64{&want.Load1, &want.Load5, &want.Load15} {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				t.Fatalf("/proc/loadavg %q: %v", before, err)
			}
			*p = v
		}
		if got != want {
			t.Errorf("got %+v, want %+v from %q", got, want, before)
		}
		if got.Load1 < 0 || got.Load5 < 0 || got.Load15 < 0 {
			t.Errorf("got %+v, want no negative load", got)
		}
		return
	}
	t.Fatal("/proc/loadavg changed during every read")
}

// TestProcSampler samples a real process group: a shell and its background
// child, which the RSS must include.
func TestProcSampler(t *testing.T) {
	logs := newLogBuffer(10)
	p := startShell(t, "sleep 60 & echo started; wait", logs)
	waitLine(t, logs, "started")
	s := newProcSampler()
	cpu, rss := s.sample(p.pid)
	if rss <= 0 {
		t.Errorf("first sample: RSS %d, want > 0", rss)
	}
	if cpu < 0 {
		t.Errorf("first sample: CPU %v%%, want ≥ 0", cpu)
	}
	cpu, rss = s.sample(p.pid)
	if rss <= 0 || cpu < 0 {
		t.Errorf("second sample: CPU %v%%, RSS %d; want ≥ 0 and > 0", cpu, rss)
	}
	// The child counts too. Both processes may still be faulting pages in
	// while they start: compare until they have settled.
	eventually(t, "group RSS above the leader's own", func() bool {
		_, rss := s.sample(p.pid)
		return rss > leaderRSS(t, p.pid)
	})

	if cpu, rss := s.sample(1 << 30); cpu != 0 || rss != 0 {
		t.Errorf("no such group: got CPU %v%%, RSS %d, want 0, 0", cpu, rss)
	}
}

// TestProcSamplerBusy checks that a group that spins shows CPU use.
func TestProcSamplerBusy(t *testing.T) {
	p := startShell(t, "while :; do :; done", newLogBuffer(10))
	s := newProcSampler()
	eventually(t, "CPU % > 0 for a spinning shell", func() bool {
		cpu, _ := s.sample(p.pid)
		return cpu > 0
	})
}

// leaderRSS reads the resident size of pid alone from /proc/<pid>/statm.
func leaderRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		t.Fatal(err)
	}
	pages, err := strconv.ParseInt(strings.Fields(string(b))[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}
