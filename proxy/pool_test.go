package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testapp"
)

// setSlots gives instance 0 of the app's first version a pool with n slots.
func setSlots(t *testing.T, f *fixture, n int) {
	t.Helper()
	f.p.app("web").versions[0].instances[0].pool.slots = make(chan struct{}, n)
}

// Requests beyond the slots wait for an answer to begin, first come first
// served; none fails.
func TestSlotsBoundPendingRequests(t *testing.T) {
	f := newFixture(t, AppOptions{})
	var now, peak atomic.Int64
	release := make(chan struct{})
	f.p.Serve("web", "v1", []Target{startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := now.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		now.Add(-1)
		io.WriteString(w, "ok")
	}))})
	setSlots(t, f, 2)

	var results []<-chan result
	for range 5 {
		results = append(results, f.goGet(context.Background(), "/"))
	}
	waitFor(t, "two requests at the app", func() bool { return now.Load() == 2 })
	time.Sleep(50 * time.Millisecond)
	if p := peak.Load(); p != 2 {
		t.Errorf("%d requests at the app at once, want 2", p)
	}
	close(release)
	for i, ch := range results {
		if r := recv(t, ch); r.err != nil || r.status != 200 {
			t.Errorf("request %d: %d %v", i, r.status, r.err)
		}
	}
}

// A response that began (a stream) frees its slot: streams never hold up
// other requests.
func TestSlotsFreedByStreams(t *testing.T) {
	f := newFixture(t, AppOptions{})
	done := make(chan struct{})
	defer close(done)
	f.p.Serve("web", "v1", []Target{startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: hi\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-done:
		case <-r.Context().Done():
		}
	}))})
	setSlots(t, f, 1)

	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			res, err := f.client.Do(mustRequest(t, http.MethodGet, f.url+"/events", nil).WithContext(ctx))
			if err != nil {
				t.Errorf("stream %d: %v", i, err)
				return
			}
			defer res.Body.Close()
			buf := make([]byte, len("data: hi\n\n"))
			if _, err := io.ReadFull(res.Body, buf); err != nil {
				t.Errorf("stream %d: first event: %v", i, err)
			}
		})
	}
	wg.Wait()
}

// stuckSlot is a fixture whose app holds /stuck unanswered and answers
// anything else "ok", counting those, with its one instance limited to one
// slot, which a /stuck request holds when it returns.
func stuckSlot(t *testing.T) (*fixture, *atomic.Int64) {
	t.Helper()
	f := newFixture(t, AppOptions{})
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	var seen atomic.Int64
	f.p.Serve("web", "v1", []Target{startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stuck" {
			select {
			case <-stuck:
			case <-r.Context().Done():
			}
			return
		}
		seen.Add(1)
		io.WriteString(w, "ok")
	}))})
	setSlots(t, f, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.goGet(ctx, "/stuck")
	pool := f.p.app("web").versions[0].instances[0].pool
	waitFor(t, "the stuck request to take the slot", func() bool { return len(pool.slots) == 1 })
	return f, &seen
}

// With every slot held by a request the app does not answer, another
// request waits slotWait, then goes anyway.
func TestSlotWaitBounded(t *testing.T) {
	old := slotWait
	slotWait = 50 * time.Millisecond
	defer func() { slotWait = old }()
	f, _ := stuckSlot(t)
	start := time.Now()
	if status, body := f.get(t, "/"); status != 200 || body != "ok" {
		t.Fatalf("got %d %q", status, body)
	}
	if d := time.Since(start); d < slotWait {
		t.Errorf("answered after %s, before slotWait", d)
	}
}

// The client watch's read deadline is shared by the requests on a
// connection and moved only when near; one that passed while the connection
// sat idle neither fails the liveness probe nor the next request's reads.
func TestPoolWatchDeadline(t *testing.T) {
	ln, target := listenUnix(t, sockDir(t), "app.sock")
	go testapp.ServeConns(ln, func(c net.Conn) {
		buf := make([]byte, 64)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			io.WriteString(c, "ok")
		}
	})
	v := newVersion("v1")
	v.setTargetsLocked([]Target{target})
	p := v.instances[0].pool
	defer v.close()

	bc, _, err := p.get(context.Background(), false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	bc.armWatch(now)
	first := bc.watchAt
	bc.armWatch(now.Add(clientWatchDelay / 4))
	if bc.watchAt != first {
		t.Errorf("deadline moved for a request %s later", clientWatchDelay/4)
	}
	bc.armWatch(now.Add(clientWatchDelay * 3 / 4))
	if bc.watchAt == first {
		t.Errorf("deadline not moved for a request %s later", clientWatchDelay*3/4)
	}

	// A deadline in the past, as after an idle spell.
	bc.clearWatch()
	bc.armWatch(time.Now().Add(-time.Minute))
	p.put(bc)
	again, reused, err := p.get(context.Background(), true, time.Now())
	if err != nil || again != bc || !reused {
		t.Fatalf("after its watch deadline passed: reused %v, err %v", reused, err)
	}
	bc.armWatch(time.Now())
	if _, err := bc.conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 2)
	if _, err := io.ReadFull(bc.br, b); err != nil || string(b) != "ok" {
		t.Errorf("read %q, %v; want ok", b, err)
	}
}

// Idle connections older than idleConnTimeout are not reused, and an idle
// connection the app closed fails the liveness check.
func TestPoolReuseRules(t *testing.T) {
	ln, target := listenUnix(t, sockDir(t), "app.sock")
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	v := newVersion("v1")
	v.setTargetsLocked([]Target{target})
	p := v.instances[0].pool
	defer v.close()

	bc, reused, err := p.get(context.Background(), false, time.Now())
	if err != nil || reused {
		t.Fatalf("first get: reused %v, err %v", reused, err)
	}
	peer := <-accepted
	p.put(bc)
	if again, reused, _ := p.get(context.Background(), true, time.Now()); again != bc || !reused {
		t.Fatal("a live idle connection was not reused")
	}
	p.put(bc)

	peer.Close() // the app closes it while idle
	time.Sleep(10 * time.Millisecond)
	fresh, reused, err := p.get(context.Background(), true, time.Now())
	if err != nil || reused || fresh == bc {
		t.Fatalf("after the app closed the idle connection: reused %v, err %v", reused, err)
	}
	<-accepted
	fresh.idleSince = time.Now().Add(-2 * idleConnTimeout)
	p.mu.Lock()
	p.idle = append(p.idle, fresh)
	p.mu.Unlock()
	if third, reused, _ := p.get(context.Background(), false, time.Now()); reused || third == fresh {
		t.Error("a connection idle past idleConnTimeout was reused")
	}
	if n := v.openConns(); n != 1 {
		t.Errorf("%d connections open, want 1 (the others closed)", n)
	}
}

// An app that closes idle keep-alive connections sooner than the proxy
// (gunicorn: 2s, Node: 5s) leaves the pool full of dead connections after a
// quiet spell. The first request after it finds one dead, drops those idle
// as long, and goes on at once on a fresh connection to the same instance:
// it does not try each dead one with a backoff between (40 dead connections
// used to cost it 40 × 25 ms).
func TestStalePoolAfterAppIdleTimeout(t *testing.T) {
	ln, target := listenUnix(t, sockDir(t), "app.sock")
	srv := &http.Server{Handler: text("ok"), IdleTimeout: 50 * time.Millisecond}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	f := newFixture(t, AppOptions{QueueTimeout: 10 * time.Second})
	f.p.Serve("web", "v1", []Target{target})

	const conns = 40
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			req := mustRequest(t, http.MethodGet, f.url+"/", nil)
			// Each its own client connection, so that the proxy opens 40
			// app connections at once.
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			<-release
			res, err := c.Do(req)
			if err == nil {
				res.Body.Close()
			}
		})
	}
	close(release)
	wg.Wait()
	time.Sleep(300 * time.Millisecond) // the app closes every idle connection

	start := time.Now()
	code, body := f.get(t, "/")
	took := time.Since(start)
	if code != 200 || body != "ok" {
		t.Fatalf("after the app closed its idle connections: %d %q", code, body)
	}
	if took > 500*time.Millisecond {
		t.Fatalf("the first request after a quiet spell took %s: it went through the dead pooled connections one by one", took)
	}
	t.Logf("first request after the app closed %d idle connections: %s", conns, took.Round(time.Microsecond))
}

// A request whose client leaves while it waits for a slot is not sent to
// the app: the app never sees it.
func TestSlotWaitClientGone(t *testing.T) {
	f, seen := stuckSlot(t)
	gone, leave := context.WithCancel(context.Background())
	res := f.goGet(gone, "/left")
	time.Sleep(200 * time.Millisecond) // waiting for the slot
	leave()
	<-res
	time.Sleep(slotWait + 200*time.Millisecond) // past the slot wait
	if n := seen.Load(); n != 0 {
		t.Fatalf("the app saw %d request(s) from a client that left while waiting for a slot", n)
	}
}

// A POST whose write fails with nothing sent, on a pooled connection the
// app stopped reading after the proxy checked it, goes again on a new
// connection: its small body is read into memory before it is written, so
// it can be sent again. It used to get 502 (its body had been read from
// the client, and a POST's body is not kept). The app gets it once.
func TestStalePoolPostSentAgain(t *testing.T) {
	ln, target := listenUnix(t, sockDir(t), "app.sock")
	var mu sync.Mutex
	var conns []*net.UnixConn
	var saw []string
	go testapp.ServeConns(ln, func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c.(*net.UnixConn))
		mu.Unlock()
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			saw = append(saw, r.Method+" "+string(b))
			mu.Unlock()
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\ngot %s", 4+len(b), b)
		}
	})
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{target})
	if code, body := f.get(t, "/"); code != 200 {
		t.Fatalf("GET: %d %q", code, body)
	}
	// The app shuts its side for reading: the proxy's check of the idle
	// connection (a peek) finds it open, and its write fails (EPIPE) with
	// nothing sent.
	mu.Lock()
	conns[0].CloseRead()
	mu.Unlock()
	code, body := f.do(t, mustRequest(t, http.MethodPost, f.url+"/", strings.NewReader("hello")))
	if code != 200 || body != "got hello" {
		t.Fatalf("POST on a pooled connection the app no longer reads: %d %q, want 200", code, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(saw) != 2 || saw[1] != "POST hello" {
		t.Errorf("the app saw %q, want the GET and the POST once", saw)
	}
}
