// Command tracestat reads a Go execution trace (runtime/trace, as written by
// `bench/proxyprof -trace` or `bench/backend -trace`) and prints how long
// goroutines waited, as distributions rather than the totals that
// `go tool trace -pprof=sched` gives:
//
//   - sched: from runnable to running. This is the Go scheduler's queueing
//     and, inside it, the time the thread holding the P was descheduled by
//     the kernel.
//   - network: blocked on the network poller, from the park to the moment
//     the poller found the socket ready. In a proxy this is the peer's time:
//     the client's next request, or the app's answer.
//
// With -split, network waits whose stack at the park contains one of the
// comma-separated strings are shown as a group of their own, for example the
// proxy's waits for its app:
//
//	go run ./bench/tracestat -split 'proxy.(*call)' proxy.trace
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

func main() {
	split := flag.String("split", "", "comma-separated stack substrings: network waits whose park stack contains one form their own group")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: tracestat [-split s1,s2] TRACE")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fail(err)
	}
	defer f.Close()
	var subs []string
	if *split != "" {
		subs = strings.Split(*split, ",")
	}
	s, err := read(f, subs)
	if err != nil {
		fail(err)
	}
	s.print(os.Stdout, subs)
}

// stats are the waits of one trace.
type stats struct {
	sched   []time.Duration
	network []time.Duration
	// groups[i] are the network waits whose stack matched split i; the last
	// group is the rest.
	groups [][]time.Duration
}

func read(r io.Reader, subs []string) (*stats, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, err
	}
	s := &stats{groups: make([][]time.Duration, len(subs)+1)}
	runnable := map[trace.GoID]trace.Time{}
	type park struct {
		at    trace.Time
		group int
	}
	parked := map[trace.GoID]park{}
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if err != nil {
			return nil, err
		}
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		from, to := st.Goroutine()
		switch {
		case to == trace.GoRunnable:
			runnable[id] = ev.Time()
		case from == trace.GoRunnable && to == trace.GoRunning:
			if at, ok := runnable[id]; ok {
				s.sched = append(s.sched, time.Duration(ev.Time()-at))
				delete(runnable, id)
			}
		}
		switch {
		case to == trace.GoWaiting && st.Reason == "network":
			parked[id] = park{ev.Time(), groupOf(st.Stack, subs)}
		case from == trace.GoWaiting:
			if p, ok := parked[id]; ok {
				d := time.Duration(ev.Time() - p.at)
				s.network = append(s.network, d)
				s.groups[p.group] = append(s.groups[p.group], d)
				delete(parked, id)
			}
		}
	}
}

// groupOf is the index of the first of subs that a frame of stk contains,
// or len(subs).
func groupOf(stk trace.Stack, subs []string) int {
	for fr := range stk.Frames() {
		for i, sub := range subs {
			if strings.Contains(fr.Func, sub) {
				return i
			}
		}
	}
	return len(subs)
}

func (s *stats) print(w io.Writer, subs []string) {
	line(w, "sched (runnable → running)", s.sched)
	line(w, "network (parked → ready)", s.network)
	if len(subs) == 0 {
		return
	}
	for i, sub := range subs {
		line(w, "  network, stack has "+sub, s.groups[i])
	}
	line(w, "  network, the rest", s.groups[len(subs)])
}

func line(w io.Writer, name string, d []time.Duration) {
	if len(d) == 0 {
		fmt.Fprintf(w, "%s: none\n", name)
		return
	}
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	q := func(p float64) string { return ms(d[int(float64(len(d)-1)*p)]) }
	fmt.Fprintf(w, "%s: n=%d mean=%s p50=%s p90=%s p99=%s p99.9=%s max=%s\n",
		name, len(d), ms(sum/time.Duration(len(d))), q(.5), q(.9), q(.99), q(.999), ms(d[len(d)-1]))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3fms", d.Seconds()*1000) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tracestat:", err)
	os.Exit(1)
}
