package supervisor

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// addLines adds lines with texts "<from>" to "<to>" to b, tagged v.
func addLines(b *LogBuffer, version string, from, to int) {
	for i := from; i <= to; i++ {
		b.Add(LogLine{Version: version, Text: fmt.Sprint(i)})
	}
}

func texts(lines []LogLine) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Text
	}
	return out
}

func TestLogBufferTail(t *testing.T) {
	tests := []struct {
		name  string
		added int // lines "1".."added" into a ring of 3
		n     int
		want  []string
	}{
		{"empty", 0, 10, []string{}},
		{"not full", 2, 10, []string{"1", "2"}},
		{"exactly full", 3, 10, []string{"1", "2", "3"}},
		{"wrapped once", 4, 10, []string{"2", "3", "4"}},
		{"wrapped to the start", 6, 10, []string{"4", "5", "6"}},
		{"wrapped more than once", 8, 10, []string{"6", "7", "8"}},
		{"n below size", 8, 2, []string{"7", "8"}},
		{"n zero", 8, 0, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newLogBuffer(3)
			addLines(b, "v1", 1, tt.added)
			if got := texts(b.Tail(tt.n, nil)); !slices.Equal(got, tt.want) {
				t.Errorf("Tail(%d): got %q, want %q", tt.n, got, tt.want)
			}
		})
	}
}

// TestLogBufferTailFilter checks that n counts the kept lines, the most
// recent ones, returned oldest first.
func TestLogBufferTailFilter(t *testing.T) {
	b := newLogBuffer(10)
	for i := 1; i <= 12; i++ {
		v := "v1"
		if i%2 == 0 {
			v = "v2"
		}
		b.Add(LogLine{Version: v, Text: fmt.Sprint(i)})
	}
	isV2 := func(l LogLine) bool { return l.Version == "v2" }
	if got, want := texts(b.Tail(3, isV2)), []string{"8", "10", "12"}; !slices.Equal(got, want) {
		t.Errorf("Tail(3, v2): got %q, want %q", got, want)
	}
	// Lines 1 and 2 left the ring: only 4..12 are there to keep.
	if got, want := texts(b.Tail(100, isV2)), []string{"4", "6", "8", "10", "12"}; !slices.Equal(got, want) {
		t.Errorf("Tail(100, v2): got %q, want %q", got, want)
	}
	none := func(LogLine) bool { return false }
	if got := b.Tail(100, none); len(got) != 0 {
		t.Errorf("Tail(100, none): got %q, want none", texts(got))
	}
}

func TestLogBufferSubscribe(t *testing.T) {
	b := newLogBuffer(10)
	addLines(b, "v1", 1, 2)
	ch, cancel := b.Subscribe()
	addLines(b, "v1", 3, 4)
	for _, want := range []string{"3", "4"} {
		select {
		case l := <-ch:
			if l.Text != want {
				t.Errorf("got line %q, want %q (lines from before Subscribe are not sent)", l.Text, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no line %q within 5s", want)
		}
	}
	cancel()
	addLines(b, "v1", 5, 5)
	select {
	case l := <-ch:
		t.Errorf("got line %q after cancel, want none", l.Text)
	default: // Add sends synchronously or not at all: nothing can be on the way
	}
}

// TestLogBufferSlowSubscriber checks that a follower that never reads does
// not block Add (an app's output must never wait for deployer), and that it
// keeps the lines that fit its channel, the oldest.
func TestLogBufferSlowSubscriber(t *testing.T) {
	b := newLogBuffer(DefaultLogLines)
	ch, cancel := b.Subscribe()
	defer cancel()
	const n = 5000 // far more than the channel holds
	done := make(chan struct{})
	go func() {
		defer close(done)
		addLines(b, "v1", 1, n)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Add blocked on a subscriber that does not read")
	}
	if got := len(ch); got != cap(ch) {
		t.Errorf("subscriber holds %d lines, want its capacity %d", got, cap(ch))
	}
	if l := <-ch; l.Text != "1" {
		t.Errorf("first line: got %q, want %q", l.Text, "1")
	}
	if got := texts(b.Tail(1, nil)); !slices.Equal(got, []string{fmt.Sprint(n)}) {
		t.Errorf("Tail(1): got %q, want %q", got, []string{fmt.Sprint(n)})
	}
}

// TestLogBufferConcurrent runs writers, readers and followers at once, for
// the race detector.
func TestLogBufferConcurrent(t *testing.T) {
	b := newLogBuffer(50)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() { addLines(b, fmt.Sprint("v", w), 1, 500) })
	}
	wg.Go(func() {
		for range 200 {
			if got := len(b.Tail(20, nil)); got > 20 {
				t.Errorf("Tail(20) returned %d lines", got)
			}
		}
	})
	wg.Go(func() {
		for range 50 {
			_, cancel := b.Subscribe()
			cancel()
		}
	})
	wg.Wait()
	if got := len(b.Tail(100, nil)); got != 50 {
		t.Errorf("after 2000 lines: Tail(100) returned %d, want the ring's 50", got)
	}
}

func TestLogLineString(t *testing.T) {
	l := LogLine{
		Time:     time.Date(2025, 1, 2, 13, 4, 5, 67_000_000, time.UTC),
		Version:  "v2",
		Instance: 1,
		Stream:   "stderr",
		Text:     "hello",
	}
	if got, want := l.String(), "13:04:05.067 v2[1] hello"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
