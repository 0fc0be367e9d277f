package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testVersion is an app version with a backend of its own that counts what
// reaches it.
type testVersion struct {
	name    string
	target  Target
	hits    atomic.Int64
	retired atomic.Bool // set when Retire returned
	late    atomic.Int64
}

func startVersion(t testing.TB, name string) *testVersion {
	v := &testVersion{name: name}
	v.target = startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.hits.Add(1)
		if v.retired.Load() {
			v.late.Add(1)
		}
		w.Header().Set("X-Version", v.name)
		io.WriteString(w, "ok")
	}))
	return v
}

// Swaps under load: 16 keep-alive clients hammer the proxy while the serving
// version changes every 50 ms and the old one is retired each time. No
// request fails, a request sent after Serve reaches the new version, and no
// request reaches a version after its Retire.
func TestServeSwitchUnderLoad(t *testing.T) {
	f := newFixture(t, AppOptions{})
	cur := startVersion(t, "v0")
	versions := []*testVersion{cur}
	f.p.Serve("web", cur.name, []Target{cur.target})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok atomic.Int64
	var mu sync.Mutex
	var failures []string
	for range 16 {
		client := newClient(t)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := client.Get(f.url + "/")
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					continue
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != 200 || string(body) != "ok" {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%d %q %v", res.StatusCode, body, err))
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		})
	}

	probe := newClient(t)
	ticker := time.NewTicker(50 * time.Millisecond) // pacing, not synchronisation
	defer ticker.Stop()
	// At least 10 swaps, and at least 1.5 s of them: a loaded machine
	// makes each swap slower, not the test weaker.
	end := time.Now().Add(1500 * time.Millisecond)
	for i := 1; i <= 10 || time.Now().Before(end); i++ {
		<-ticker.C
		next := startVersion(t, fmt.Sprintf("v%d", i))
		versions = append(versions, next)
		f.p.Serve("web", next.name, []Target{next.target})

		res, err := probe.Get(f.url + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if got := res.Header.Get("X-Version"); got != next.name {
			t.Errorf("a request after Serve(%s) reached %s", next.name, got)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cut := f.p.Retire(ctx, "web", cur.name)
		cancel()
		cur.retired.Store(true)
		if cut != 0 {
			t.Errorf("Retire(%s) cut %d requests, want 0", cur.name, cut)
		}
		if _, listed := f.p.Stats("web").InFlight[cur.name]; listed {
			t.Errorf("%s still listed after Retire returned", cur.name)
		}
		cur = next
	}
	close(stop)
	wg.Wait()

	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed; first: %s", len(failures), int(ok.Load())+len(failures), failures[0])
	}
	if ok.Load() < 100 {
		t.Errorf("only %d requests went through", ok.Load())
	}
	for _, v := range versions {
		if n := v.late.Load(); n > 0 {
			t.Errorf("%s got %d requests after its Retire", v.name, n)
		}
	}
	t.Logf("%d requests over %d versions", ok.Load(), len(versions))
}

// Retire waits for a slow request, which completes; new requests go to the
// new version meanwhile.
func TestRetireWaitsForInFlight(t *testing.T) {
	f := newFixture(t, AppOptions{})
	release := make(chan struct{})
	var handlerDone atomic.Bool
	f.p.Serve("web", "v1", []Target{startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "slow")
		handlerDone.Store(true)
	}))})
	slow := f.goGet(context.Background(), "/slow")
	waitFor(t, "the slow request in flight", func() bool { return f.p.Stats("web").InFlight["v1"] == 1 })

	f.p.Serve("web", "v2", []Target{startBackend(t, text("new"))})
	retired := make(chan int, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		retired <- f.p.Retire(ctx, "web", "v1")
	}()
	if status, body := f.get(t, "/"); status != 200 || body != "new" {
		t.Errorf("while v1 drains: %d %q, want 200 new", status, body)
	}
	waitFor(t, "v1 to be retiring", func() bool {
		b := f.p.app("web")
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.versions) == 2 && b.versions[0].retiring
	})
	select {
	case cut := <-retired:
		t.Fatalf("Retire returned (cut %d) with a request in flight", cut)
	default:
	}

	close(release)
	if r := recv(t, slow); r.status != 200 || r.body != "slow" {
		t.Fatalf("the slow request: %d %q %v", r.status, r.body, r.err)
	}
	select {
	case cut := <-retired:
		if cut != 0 {
			t.Errorf("cut = %d, want 0", cut)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Retire did not return after the request completed")
	}
	if !handlerDone.Load() {
		t.Error("Retire returned before the handler finished")
	}
}

// At the deadline Retire cuts what is left: the client gets 502.
func TestRetireCutsAtDeadline(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers on its own
	}))})
	stuck := f.goGet(context.Background(), "/stuck")
	waitFor(t, "the request in flight", func() bool { return f.p.Stats("web").InFlight["v1"] == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if cut := f.p.Retire(ctx, "web", "v1"); cut != 1 {
		t.Errorf("cut = %d, want 1", cut)
	}
	if r := recv(t, stuck); r.status != http.StatusBadGateway {
		t.Errorf("cut request: %d %v, want 502", r.status, r.err)
	}
	// v1 was serving: new requests are held until a later Serve.
	held := f.goGet(context.Background(), "/")
	waitFor(t, "a held request", func() bool { return f.p.Stats("web").Held == 1 })
	f.p.Serve("web", "v2", []Target{startBackend(t, text("v2"))})
	if r := recv(t, held); r.status != 200 || r.body != "v2" {
		t.Errorf("held request: %d %q %v", r.status, r.body, r.err)
	}
}

// PITFALLS: pooled keep-alive connections to an old version must not outlive
// its Retire.
func TestRetireClosesIdleConnections(t *testing.T) {
	f := newFixture(t, AppOptions{})
	var open atomic.Int64
	ln, target := listenUnix(t, sockDir(t), "v1.sock")
	srv := &http.Server{Handler: text("ok"), ConnState: func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	f.p.Serve("web", "v1", []Target{target})
	for range 3 {
		f.get(t, "/")
	}
	if n := open.Load(); n != 1 {
		t.Fatalf("v1 has %d connections after 3 sequential requests, want 1 (pooled)", n)
	}
	f.p.Serve("web", "v2", []Target{startBackend(t, text("v2"))})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.p.Retire(ctx, "web", "v1")
	waitFor(t, "v1's pooled connection to close", func() bool { return open.Load() == 0 })
}

// Serving a version's name again on new sockets (a restart) makes a new
// version; Retire of that name then drains the old processes, not the new.
func TestServeSameNameAgain(t *testing.T) {
	f := newFixture(t, AppOptions{})
	old := startBackend(t, text("old"))
	f.p.Serve("web", "v1", []Target{old})
	if _, body := f.get(t, "/"); body != "old" {
		t.Fatalf("got %q", body)
	}
	restarted := startBackend(t, text("restarted"))
	f.p.Serve("web", "v1", []Target{restarted})
	f.p.Serve("web", "v1", []Target{restarted}) // again: same targets, same version
	if n := len(f.p.app("web").versions); n != 2 {
		t.Fatalf("%d versions after a restart, want 2", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cut := f.p.Retire(ctx, "web", "v1"); cut != 0 {
		t.Errorf("cut %d", cut)
	}
	s := f.p.Stats("web")
	if s.Serving != "v1" {
		t.Errorf("serving %q after retiring the old v1, want v1", s.Serving)
	}
	if status, body := f.get(t, "/"); status != 200 || body != "restarted" {
		t.Errorf("after retiring the old v1: %d %q, want the restarted one", status, body)
	}
}

// Swapping back to a version that is still draining reuses it.
func TestServeBackToDrainingVersion(t *testing.T) {
	f := newFixture(t, AppOptions{})
	t1, t2 := startBackend(t, text("one")), startBackend(t, text("two"))
	f.p.Serve("web", "v1", []Target{t1})
	f.p.Serve("web", "v2", []Target{t2})
	f.p.Serve("web", "v1", []Target{t1})
	if n := len(f.p.app("web").versions); n != 2 {
		t.Errorf("%d versions, want 2", n)
	}
	if _, body := f.get(t, "/"); body != "one" {
		t.Errorf("got %q, want one", body)
	}
	f.p.Retire(context.Background(), "web", "v2")
	if s := f.p.Stats("web"); s.Serving != "v1" || len(s.InFlight) != 1 {
		t.Errorf("stats after retiring v2: %+v", s)
	}
}

// An instance taken out of rotation gets no requests; round robin covers
// the others.
func TestRoundRobinAndSetInstance(t *testing.T) {
	f := newFixture(t, AppOptions{})
	targets := []Target{startBackend(t, text("0")), startBackend(t, text("1")), startBackend(t, text("2"))}
	f.p.Serve("web", "v1", targets)
	count := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			_, body := f.get(t, "/")
			got[body]++
		}
		return got
	}
	if got := count(9); got["0"] != 3 || got["1"] != 3 || got["2"] != 3 {
		t.Errorf("9 requests over 3 instances: %v, want 3 each", got)
	}
	f.p.SetInstance("web", "v1", 1, targets[1], false)
	if got := count(6); got["1"] != 0 || got["0"] != 3 || got["2"] != 3 {
		t.Errorf("with instance 1 down: %v", got)
	}
	f.p.SetInstance("web", "v1", 3, startBackend(t, text("3")), true) // a new instance
	if got := count(6); got["3"] != 2 {
		t.Errorf("with instance 3 added: %v", got)
	}
}
