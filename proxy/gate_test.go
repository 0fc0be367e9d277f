package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

func TestHoldRelease(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, text("ok"))})
	f.p.Hold("web")
	if !f.p.Stats("web").Paused {
		t.Fatal("Stats.Paused = false after Hold")
	}

	const n = 200
	results := make([]<-chan result, n)
	for i := range results {
		results[i] = f.goGet(context.Background(), "/")
	}
	waitFor(t, "200 held requests", func() bool { return f.p.Stats("web").Held == n })
	f.p.Release("web")
	for i, ch := range results {
		if r := recv(t, ch); r.err != nil || r.status != 200 || r.body != "ok" {
			t.Fatalf("request %d: %d %q %v, want 200 ok", i, r.status, r.body, r.err)
		}
	}
	if s := f.p.Stats("web"); s.Held != 0 || s.Paused {
		t.Errorf("after Release: held %d, paused %v", s.Held, s.Paused)
	}
}

func TestQueueTimeout(t *testing.T) {
	const timeout = 150 * time.Millisecond
	f := newFixture(t, AppOptions{QueueTimeout: timeout})
	f.p.Serve("web", "v1", []Target{startBackend(t, text("ok"))})
	f.p.Hold("web")

	start := time.Now()
	res, err := f.client.Get(f.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if took := time.Since(start); took < timeout {
		t.Errorf("answered after %v, before the queue timeout %v", took, timeout)
	}
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Errorf("got %d, Retry-After %q; want 503 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
	if held := f.p.Stats("web").Held; held != 0 {
		t.Errorf("held after the timeout = %d, want 0", held)
	}
}

// The queue timeout counts from arrival over all waits, here a wait for a
// socket that never appears.
func TestQueueTimeoutWhileRetrying(t *testing.T) {
	f := newFixture(t, AppOptions{QueueTimeout: 100 * time.Millisecond})
	f.p.Serve("web", "v1", []Target{{Network: "unix", Addr: "/nonexistent/deployer-test.sock"}})
	if status, _ := f.get(t, "/"); status != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", status)
	}
}

func TestMaxQueued(t *testing.T) {
	f := newFixture(t, AppOptions{MaxQueued: 2})
	f.p.Serve("web", "v1", []Target{startBackend(t, text("ok"))})
	f.p.Hold("web")
	first, second := f.goGet(context.Background(), "/"), f.goGet(context.Background(), "/")
	waitFor(t, "2 held requests", func() bool { return f.p.Stats("web").Held == 2 })

	start := time.Now()
	res, err := f.client.Get(f.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Errorf("third request: %d, Retry-After %q; want 503 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the third request waited %v; want an answer at once", took)
	}
	f.p.Release("web")
	for _, ch := range []<-chan result{first, second} {
		if r := recv(t, ch); r.status != 200 {
			t.Errorf("held request: %d %v, want 200", r.status, r.err)
		}
	}
}

func TestClientCancelLeavesQueue(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, text("ok"))})
	f.p.Hold("web")
	ctx, cancel := context.WithCancel(context.Background())
	ch := f.goGet(ctx, "/")
	stay := f.goGet(context.Background(), "/")
	waitFor(t, "2 held requests", func() bool { return f.p.Stats("web").Held == 2 })
	cancel()
	if r := recv(t, ch); !errors.Is(r.err, context.Canceled) {
		t.Errorf("cancelled request: %v, want context.Canceled", r.err)
	}
	waitFor(t, "the cancelled request to leave the queue", func() bool { return f.p.Stats("web").Held == 1 })
	f.p.Release("web")
	if r := recv(t, stay); r.status != 200 {
		t.Errorf("remaining request: %d %v", r.status, r.err)
	}
}

// Nothing ready (an app starting, or its only instance crashed): requests are
// held, and go through once an instance is ready.
func TestHeldWhileNothingReady(t *testing.T) {
	f := newFixture(t, AppOptions{})
	ch := f.goGet(context.Background(), "/before-serve")
	waitFor(t, "a held request", func() bool { return f.p.Stats("web").Held == 1 })
	target := startBackend(t, text("ok"))
	f.p.Serve("web", "v1", []Target{target})
	if r := recv(t, ch); r.status != 200 {
		t.Fatalf("request held before Serve: %d %v", r.status, r.err)
	}

	f.p.SetInstance("web", "v1", 0, target, false) // crashed
	ch = f.goGet(context.Background(), "/after-crash")
	waitFor(t, "a held request", func() bool { return f.p.Stats("web").Held == 1 })
	restarted := startBackend(t, text("restarted"))
	f.p.SetInstance("web", "v1", 0, restarted, true)
	if r := recv(t, ch); r.status != 200 || r.body != "restarted" {
		t.Fatalf("request held during the crash: %d %q %v", r.status, r.body, r.err)
	}
}

func TestRemoveAppFailsHeld(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Hold("web")
	ch := f.goGet(context.Background(), "/")
	waitFor(t, "a held request", func() bool { return f.p.Stats("web").Held == 1 })
	f.p.RemoveApp("web")
	if r := recv(t, ch); r.status != http.StatusServiceUnavailable {
		t.Errorf("held request after RemoveApp: %d %v, want 503", r.status, r.err)
	}
	if status, _ := f.get(t, "/"); status != http.StatusServiceUnavailable {
		t.Errorf("new request after RemoveApp: %d, want 503", status)
	}
	if apps := f.p.Apps(); len(apps) != 0 {
		t.Errorf("Apps() = %v after RemoveApp", apps)
	}
	f.p.SetApp("web", AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, text("back"))})
	if status, body := f.get(t, "/"); status != 200 || body != "back" {
		t.Errorf("after SetApp again: %d %q", status, body)
	}
}

// newGateBackend returns a backend and a call factory for driving the gate
// without HTTP.
func newGateBackend(t testing.TB) (*backend, func(seq uint64) *call) {
	b := newBackend("gate", AppOptions{QueueTimeout: time.Minute, MaxQueued: 1 << 20})
	mk := func(seq uint64) *call {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		return &call{b: b, client: ctx, arrival: time.Now(), seq: seq}
	}
	return b, mk
}

// Release assigns held requests in arrival order, in one pass: 10,000 waiters
// are released quickly.
func TestReleaseInArrivalOrderAndFast(t *testing.T) {
	b, mk := newGateBackend(t)
	b.hold()
	b.serve("v1", []Target{{Network: "unix", Addr: "/a"}, {Network: "unix", Addr: "/b"}})

	const n = 10000
	calls := make([]*call, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range calls {
		// Goroutines reach the queue in an order of their own; the queue
		// keeps arrival (seq) order.
		calls[i] = mk(uint64(i + 1))
		wg.Go(func() {
			if _, _, err := b.acquire(calls[i]); err != nil {
				errs <- err
			}
		})
	}
	waitFor(t, "10,000 held", func() bool { return b.stats().Held == n })

	start := time.Now()
	b.release()
	wg.Wait()
	took := time.Since(start)
	t.Logf("released %d waiters in %v", n, took)
	if took > 5*time.Second {
		t.Errorf("releasing %d waiters took %v", n, took)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	v := b.serving
	if v.flights.n != n {
		t.Fatalf("%d registered, want %d", v.flights.n, n)
	}
	prev, perInstance := uint64(0), map[*instance]int{}
	for c := v.flights.head; c != nil; c = c.next {
		if c.seq < prev {
			t.Fatalf("released out of arrival order: %d after %d", c.seq, prev)
		}
		prev = c.seq
		perInstance[c.inst]++
	}
	for in, k := range perInstance {
		if k != n/2 {
			t.Errorf("instance %d got %d requests, want %d (round robin)", in.index, k, n/2)
		}
	}
}

// One expiry timer per app ends held requests at their own deadlines, in
// order, also when queue_timeout was lowered while some were held: those
// keep their longer deadline, later arrivals get the shorter one.
func TestQueueTimeoutsOneTimer(t *testing.T) {
	f := newFixture(t, AppOptions{QueueTimeout: 600 * time.Millisecond})
	f.p.Serve("web", "v1", []Target{startBackend(t, text("ok"))})
	f.p.Hold("web")

	type answer struct {
		status int
		after  time.Duration
	}
	get := func() <-chan answer {
		ch := make(chan answer, 1)
		start := time.Now()
		go func() {
			r := <-f.goGet(context.Background(), "/")
			ch <- answer{r.status, time.Since(start)}
		}()
		return ch
	}
	var early []<-chan answer // arrive under the 600ms timeout
	for range 20 {
		early = append(early, get())
	}
	waitFor(t, "20 held requests", func() bool { return f.p.Stats("web").Held == 20 })
	f.p.SetApp("web", AppOptions{QueueTimeout: 150 * time.Millisecond})
	var late []<-chan answer // arrive under the 150ms timeout
	for range 20 {
		late = append(late, get())
	}
	for i, ch := range late {
		a := <-ch
		if a.status != http.StatusServiceUnavailable || a.after < 150*time.Millisecond || a.after > 500*time.Millisecond {
			t.Errorf("late request %d: %d after %v, want 503 after about 150ms", i, a.status, a.after)
		}
	}
	for i, ch := range early {
		a := <-ch
		if a.status != http.StatusServiceUnavailable || a.after < 600*time.Millisecond {
			t.Errorf("early request %d: %d after %v, want 503 after at least 600ms", i, a.status, a.after)
		}
	}
	if held := f.p.Stats("web").Held; held != 0 {
		t.Errorf("held after every timeout = %d, want 0", held)
	}
}

// max_queued bounds requests waiting on an app whose only instance is in
// rotation but refuses connections (a crash not noticed yet, a full
// backlog) as it bounds the queue of a paused one: beyond it, 503 at once.
func TestMaxQueuedBoundsBackoff(t *testing.T) {
	ln, target := listenUnix(t, sockDir(t), "dead.sock")
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the socket file stays: connections are refused
	f := newFixture(t, AppOptions{MaxQueued: 2, QueueTimeout: 3 * time.Second})
	f.p.Serve("web", "v1", []Target{target})

	type answer struct {
		code int
		took time.Duration
	}
	answers := make(chan answer, 10)
	for range 10 {
		go func() {
			start := time.Now()
			code, _ := f.get(t, "/")
			answers <- answer{code, time.Since(start)}
		}()
	}
	fast, slow := 0, 0
	for range 10 {
		a := <-answers
		if a.code != http.StatusServiceUnavailable {
			t.Errorf("answered %d, want 503", a.code)
		}
		if a.took < 1500*time.Millisecond {
			fast++
		} else {
			slow++
		}
	}
	if fast != 8 || slow != 2 {
		t.Fatalf("%d answered at once, %d after queue_timeout; want 8 refused at once beyond max_queued 2, 2 held until their timeout", fast, slow)
	}
}
