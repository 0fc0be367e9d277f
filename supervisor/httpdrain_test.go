package supervisor

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployer/deployer/proxy/front"
)

// handoverPair is an old and a new publicServer accepting on one listening
// socket, as two daemons do across an upgrade (tableflip hands the new one
// a duplicate of the descriptor).
type handoverPair struct {
	old, new *publicServer
	addr     string
	scheme   string
	served   [2]atomic.Int64 // requests answered by old, new
	startNew func()          // the new server accepts from here on
}

// newHandoverPair starts the old server, and the new one unless lazy (then
// p.startNew does); wrap, if not nil, turns each raw listener into the one
// served (TLS, with net/http's server); without, proxy/front's serves.
func newHandoverPair(t *testing.T, wrap func(net.Listener) net.Listener, protos *http.Protocols, lazy bool) *handoverPair {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := raw.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	dup, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	p := &handoverPair{addr: raw.Addr().String(), scheme: "http"}
	if wrap != nil {
		p.scheme = "https"
	}
	serve := func(i int, l net.Listener) *publicServer {
		if wrap != nil {
			l = wrap(l)
		}
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				time.Sleep(time.Second)
			}
			if r.Body != nil {
				io.Copy(io.Discard, r.Body)
			}
			p.served[i].Add(1)
			fmt.Fprintf(w, "server %d over HTTP/%d\n", i, r.ProtoMajor)
		})
		if wrap == nil {
			// The plain listener, served as the daemon serves it.
			return newFrontServer(l, h, &front.Server{ReadHeaderTimeout: 5 * time.Second})
		}
		return newPublicServer(l, h, &http.Server{ReadHeaderTimeout: 5 * time.Second, Protocols: protos})
	}
	p.old, p.new = serve(0, raw), serve(1, dup)
	go p.old.serve()
	p.startNew = sync.OnceFunc(func() { go p.new.serve() })
	if !lazy {
		p.startNew()
	}
	t.Cleanup(func() {
		p.old.srv.Close()
		p.new.srv.Close()
	})
	return p
}

// clientLoad runs keep-alive clients until stopped and counts failures.
type clientLoad struct {
	newSlow  func() *http.Client // a client for the slow request
	stop     chan struct{}
	wg       sync.WaitGroup
	ok, bad  atomic.Int64
	mu       sync.Mutex
	firstErr string
	protos   sync.Map // "HTTP/1.1", "HTTP/2.0" → true
}

func (l *clientLoad) fail(format string, args ...any) {
	l.bad.Add(1)
	l.mu.Lock()
	if l.firstErr == "" {
		l.firstErr = fmt.Sprintf(format, args...)
	}
	l.mu.Unlock()
}

// run starts n clients made by newClient, each sending GETs, or POSTs with
// a body when post is set.
func (l *clientLoad) run(n int, url string, post bool, newClient func() *http.Client) {
	for range n {
		l.wg.Go(func() {
			c := newClient()
			defer c.CloseIdleConnections()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				var res *http.Response
				var err error
				if post {
					res, err = c.Post(url, "text/plain", strings.NewReader(fmt.Sprintf("body %d", i)))
				} else {
					res, err = c.Get(url)
				}
				if err != nil {
					l.fail("%v", err)
					continue
				}
				_, err = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != http.StatusOK {
					l.fail("%s %v", res.Status, err)
					continue
				}
				l.protos.Store(res.Proto, true)
				l.ok.Add(1)
			}
		})
	}
}

func (l *clientLoad) finish() {
	close(l.stop)
	l.wg.Wait()
}

// handOverUnderLoad hands p's old server over under the load and checks
// nothing failed, the old server let go of every connection well before
// the deadline, and the new one served on.
func handOverUnderLoad(t *testing.T, p *handoverPair, l *clientLoad) {
	t.Helper()
	// Every client is connected to the old server; then the new one
	// accepts too, and the old one hands over.
	waitUntil(t, "the old server to answer", 5*time.Second, func() bool { return p.served[0].Load() > 100 })
	// A slow request in flight across the hand-over finishes.
	slow := make(chan error, 1)
	go func() {
		res, err := l.newSlow().Get(p.scheme + "://" + p.addr + "/slow")
		if err == nil {
			_, err = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		slow <- err
	}()
	time.Sleep(100 * time.Millisecond)
	p.startNew()

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.old.handOver(ctx)
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Errorf("handOver ran to its deadline (%s): connections were left", took)
	}
	after := p.served[0].Load()
	n := p.served[1].Load()
	waitUntil(t, "the new server to serve on", 5*time.Second, func() bool { return p.served[1].Load() > n+200 })
	l.finish()
	if err := <-slow; err != nil {
		t.Errorf("slow request across the hand-over: %v", err)
	}
	if took < 800*time.Millisecond {
		t.Errorf("handOver returned after %s, before the slow request (1s) was answered", took)
	}
	if got := p.served[0].Load(); got != after {
		t.Errorf("old server answered %d requests after handOver returned", got-after)
	}
	t.Logf("handOver took %s; %d requests ok, %d failed; old served %d, new %d", took.Round(time.Millisecond), l.ok.Load(), l.bad.Load(), p.served[0].Load(), p.served[1].Load())
	if l.bad.Load() != 0 {
		t.Errorf("%d requests failed across the hand-over; first: %s", l.bad.Load(), l.firstErr)
	}
}

// The plain listener: keep-alive GETs and POSTs (never retried by the
// client) across a hand-over, none failed.
func TestHandoverPlainUnderLoad(t *testing.T) {
	p := newHandoverPair(t, nil, nil, true)
	l := &clientLoad{stop: make(chan struct{})}
	client := func() *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	}
	l.newSlow = client
	url := p.scheme + "://" + p.addr + "/"
	l.run(8, url, false, client)
	l.run(4, url, true, client)
	handOverUnderLoad(t, p, l)
}

// The TLS listener with HTTP/1.1 and HTTP/2 clients: HTTP/2 connections
// are told to go by GOAWAY, never closed under a request; nothing fails and
// the hand-over ends long before its deadline.
func TestHandoverTLSUnderLoad(t *testing.T) {
	f := newCertFixture(t)
	c, k := f.ca.Leaf(t, 1)
	plainPair(f, c, k, 0)
	store := f.open()
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	p := newHandoverPair(t, func(l net.Listener) net.Listener { return tls.NewListener(l, store.tlsConfig()) }, &protos, true)

	h1 := func() *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: f.ca.ClientConfig(), MaxIdleConnsPerHost: 1,
		}}
	}
	h2 := func() *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: f.ca.ClientConfig(), ForceAttemptHTTP2: true,
		}}
	}
	l := &clientLoad{stop: make(chan struct{}), newSlow: h2}
	url := p.scheme + "://" + p.addr + "/"
	l.run(6, url, false, h1)
	l.run(2, url, true, h1)
	l.run(6, url, false, h2)
	l.run(2, url, true, h2)
	handOverUnderLoad(t, p, l)
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		if _, ok := l.protos.Load(proto); !ok {
			t.Errorf("no response over %s", proto)
		}
	}
}

// An idle HTTP/2 connection gets a GOAWAY at the hand-over and an idle
// HTTP/1.1 one is closed once quiet: each client's next request goes out on
// a new connection, to the new server, and succeeds.
func TestHandoverIdleConnections(t *testing.T) {
	f := newCertFixture(t)
	c, k := f.ca.Leaf(t, 1)
	plainPair(f, c, k, 0)
	store := f.open()
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	p := newHandoverPair(t, func(l net.Listener) net.Listener { return tls.NewListener(l, store.tlsConfig()) }, &protos, true)

	client := func(h2 bool, dials *atomic.Int64) *http.Client {
		tr := &http.Transport{TLSClientConfig: f.ca.ClientConfig(), ForceAttemptHTTP2: h2}
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
		return &http.Client{Timeout: 5 * time.Second, Transport: tr}
	}
	var h1Dials, h2Dials atomic.Int64
	clients := []struct {
		proto string
		c     *http.Client
		dials *atomic.Int64
	}{{"HTTP/1.1", client(false, &h1Dials), &h1Dials}, {"HTTP/2.0", client(true, &h2Dials), &h2Dials}}
	url := p.scheme + "://" + p.addr + "/"
	get := func(c *http.Client) string {
		t.Helper()
		res, body := getText(t, c, url)
		return res.Proto + " " + body
	}
	for _, cl := range clients {
		if got, want := get(cl.c), cl.proto+" server 0 over HTTP/"+cl.proto[5:6]; got != want {
			t.Fatalf("before the hand-over: got %q, want %q", got, want)
		}
	}

	p.startNew()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	p.old.handOver(ctx)
	if ctx.Err() != nil {
		t.Fatalf("handOver ran to its deadline (%s): idle connections were left", time.Since(start))
	}
	for _, cl := range clients {
		if got, want := get(cl.c), cl.proto+" server 1 over HTTP/"+cl.proto[5:6]; got != want {
			t.Errorf("after the hand-over: got %q, want %q", got, want)
		}
		if n := cl.dials.Load(); n != 2 {
			t.Errorf("%s client dialed %d times, want 2 (one per server)", cl.proto, n)
		}
	}
}

// The plain listener (proxy/front): an idle keep-alive connection is
// closed once quiet for idleGrace, not at once, and the client's next
// request goes to the new server on a new connection; one still busy at
// the hand-over gets "Connection: close" with its response.
func TestHandoverPlainIdleConnection(t *testing.T) {
	p := newHandoverPair(t, nil, nil, true)
	var dials atomic.Int64
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	c := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	defer tr.CloseIdleConnections()
	url := p.scheme + "://" + p.addr + "/"
	get := func(path string) (string, bool) {
		t.Helper()
		res, body := getText(t, c, url+path)
		return body, res.Close
	}
	if got, _ := get(""); got != "server 0 over HTTP/1" {
		t.Fatalf("before the hand-over: got %q", got)
	}

	// A second client is busy in /slow (on the old server, the only one
	// accepting yet) when the hand-over starts.
	slow := make(chan bool, 1)
	go func() {
		sc := &http.Client{Timeout: 5 * time.Second}
		res, err := sc.Get(url + "slow")
		if err != nil {
			t.Error(err)
			slow <- false
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		slow <- res.Close
	}()
	time.Sleep(200 * time.Millisecond) // the slow request is in its handler (1 s)
	p.startNew()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	p.old.handOver(ctx)
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("handOver ran to its deadline (%s): connections were left", took)
	}
	if took < idleGrace {
		t.Errorf("handOver returned after %s: the idle connection was closed before idleGrace (%s)", took, idleGrace)
	}
	if closed := <-slow; !closed {
		t.Error("the response in flight at the hand-over did not say Connection: close")
	}
	if got, _ := get(""); got != "server 1 over HTTP/1" {
		t.Errorf("after the hand-over: got %q, want the new server", got)
	}
	if n := dials.Load(); n != 2 {
		t.Errorf("client dialed %d times, want 2 (one per server)", n)
	}
}

// getText GETs url with c and returns the response and its body, trimmed.
func getText(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, strings.TrimSpace(string(b))
}
