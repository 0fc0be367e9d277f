package supervisor

import (
	"fmt"
	"sync"
	"time"
)

// DefaultLogLines is how many output lines each app keeps for `deployer logs`
// and for failure reports.
const DefaultLogLines = 2000

// LogLine is one line an app process wrote, tagged with where it came from.
type LogLine struct {
	Time     time.Time
	Version  string
	Instance int
	Stream   string // "stdout" or "stderr"
	Text     string
	// Backlog marks a line this daemon read again from before the point
	// where the daemon it took over from stopped reading: that one showed
	// it already (logs ?after=handover leaves it out).
	Backlog bool
}

func (l LogLine) String() string {
	return fmt.Sprintf("%s %s[%d] %s", l.Time.Format("15:04:05.000"), l.Version, l.Instance, l.Text)
}

// LogBuffer keeps an app's most recent output lines in a ring and lets
// followers subscribe to new ones. Its zero value is not usable; use
// newLogBuffer.
type LogBuffer struct {
	mu    sync.Mutex
	lines []LogLine // ring of capacity cap(lines)
	next  int       // index of the next write once full
	full  bool
	subs  map[chan LogLine]struct{}
}

func newLogBuffer(n int) *LogBuffer {
	return &LogBuffer{lines: make([]LogLine, 0, n), subs: make(map[chan LogLine]struct{})}
}

// Add appends a line. Followers too slow to keep up miss lines rather than
// slow the app down: an app's stdout must never block on deployer.
func (b *LogBuffer) Add(l LogLine) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.lines) < cap(b.lines) {
		b.lines = append(b.lines, l)
	} else {
		b.lines[b.next] = l
		b.next = (b.next + 1) % len(b.lines)
		b.full = true
	}
	for ch := range b.subs {
		select {
		case ch <- l:
		default:
		}
	}
}

// Tail returns up to n of the most recent lines, oldest first, keeping only
// those for which keep returns true (nil keeps all).
func (b *LogBuffer) Tail(n int, keep func(LogLine) bool) []LogLine {
	b.mu.Lock()
	defer b.mu.Unlock()
	ordered := make([]LogLine, 0, len(b.lines))
	if b.full {
		ordered = append(ordered, b.lines[b.next:]...)
		ordered = append(ordered, b.lines[:b.next]...)
	} else {
		ordered = append(ordered, b.lines...)
	}
	var out []LogLine
	for i := len(ordered) - 1; i >= 0 && len(out) < n; i-- {
		if keep == nil || keep(ordered[i]) {
			out = append(out, ordered[i])
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// Subscribe returns a channel of lines added from now on and a function that
// ends the subscription.
func (b *LogBuffer) Subscribe() (<-chan LogLine, func()) {
	ch := make(chan LogLine, 256)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.mu.Unlock()
	}
}
