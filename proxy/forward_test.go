package proxy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testapp"
)

// A target whose socket does not exist yet (ENOENT): the request is held, not
// answered 502, and goes through once the app binds its socket.
func TestDialFailureHeldUntilSocketAppears(t *testing.T) {
	f := newFixture(t, AppOptions{})
	dir := sockDir(t)
	later := Target{Network: "unix", Addr: filepath.Join(dir, "later.sock")}
	f.p.Serve("web", "v1", []Target{later})

	ch := f.goGet(context.Background(), "/")
	waitFor(t, "the request to be held", func() bool { return f.p.Stats("web").Held == 1 })

	ln, _ := listenUnix(t, dir, "later.sock")
	serveOn(t, ln, text("finally"))
	r := recv(t, ch)
	if r.err != nil || r.status != 200 || r.body != "finally" {
		t.Fatalf("got %d %q %v, want 200 finally", r.status, r.body, r.err)
	}
	if held := f.p.Stats("web").Held; held != 0 {
		t.Errorf("held after serving = %d, want 0", held)
	}
}

// A stale socket file with nobody listening (ECONNREFUSED) on one instance:
// requests go to the other instance, none fails.
func TestDialFailurePrefersAnotherInstance(t *testing.T) {
	f := newFixture(t, AppOptions{})
	dir := sockDir(t)
	ln, stale := listenUnix(t, dir, "stale.sock")
	if ul, ok := ln.(interface{ SetUnlinkOnClose(bool) }); ok {
		ul.SetUnlinkOnClose(false)
	}
	ln.Close() // the file stays, nobody accepts: ECONNREFUSED

	f.p.Serve("web", "v1", []Target{stale, startBackend(t, text("ok"))})
	for i := range 10 {
		if status, body := f.get(t, "/"); status != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q, want 200 ok", i, status, body)
		}
	}
}

// The app dies after reading a request, before answering. Idempotent
// requests are sent again to another instance; others get 502, and the dead
// app saw them exactly once.
func TestReplayAfterAppDied(t *testing.T) {
	f := newFixture(t, AppOptions{QueueTimeout: 5 * time.Second})
	tests := []struct {
		method string
		header string // "Name: value"
		body   string
		status int
		good   int64 // requests the healthy instance got
	}{
		{"GET", "", "", 200, 1},
		{"HEAD", "", "", 200, 1},
		{"OPTIONS", "", "", 200, 1},
		{"GET", "", "a body on a GET", 200, 1},
		{"POST", "Idempotency-Key: k1", "payment", 200, 1},
		{"POST", "", "payment", 502, 0},
		{"PUT", "", "doc", 502, 0},
		{"DELETE", "", "", 502, 0},
		{"PATCH", "", "x", 502, 0},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%s %s", tt.method, tt.header), func(t *testing.T) {
			dead, deadSeen := startCloser(t)
			var good atomic.Int64
			var gotBody atomic.Value
			healthy := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				gotBody.Store(string(b))
				good.Add(1)
				io.WriteString(w, "ok")
			}))
			// A fresh version per case: round robin starts at instance 0,
			// the dead one.
			f.p.Serve("web", fmt.Sprintf("v%d", i), []Target{dead, healthy})

			req := mustRequest(t, tt.method, f.url+"/", strings.NewReader(tt.body))
			if tt.body == "" {
				req.Body = nil
			}
			if name, value, ok := strings.Cut(tt.header, ": "); ok {
				req.Header.Set(name, value)
			}
			status, _ := f.do(t, req)
			if status != tt.status {
				t.Errorf("status %d, want %d", status, tt.status)
			}
			if n := deadSeen.Load(); n != 1 {
				t.Errorf("the dead app saw the request %d times, want 1", n)
			}
			if n := good.Load(); n != tt.good {
				t.Errorf("the healthy app saw the request %d times, want %d", n, tt.good)
			}
			if tt.good > 0 && tt.body != "" {
				if b, _ := gotBody.Load().(string); b != tt.body {
					t.Errorf("replayed body = %q, want %q", b, tt.body)
				}
			}
		})
	}
}

// A POST to a version whose only instance dies on it: 502, seen once, never
// replayed.
func TestPostNotReplayed(t *testing.T) {
	f := newFixture(t, AppOptions{})
	dead, deadSeen := startCloser(t)
	f.p.Serve("web", "v1", []Target{dead})
	status, body := f.do(t, mustRequest(t, http.MethodPost, f.url+"/charge", strings.NewReader("42")))
	if status != http.StatusBadGateway {
		t.Errorf("status %d %q, want 502", status, body)
	}
	if body != "proxy: bad gateway\n" {
		t.Errorf("body %q leaks details", body)
	}
	if n := deadSeen.Load(); n != 1 {
		t.Errorf("the app saw the POST %d times, want exactly 1", n)
	}
}

// A GET whose every instance keeps dying is replayed a bounded number of
// times, then answered: it cannot take the app down forever.
func TestReplayBounded(t *testing.T) {
	f := newFixture(t, AppOptions{QueueTimeout: 10 * time.Second})
	dead, deadSeen := startCloser(t)
	f.p.Serve("web", "v1", []Target{dead})
	status, _ := f.get(t, "/")
	if status != http.StatusBadGateway {
		t.Errorf("status %d, want 502", status)
	}
	if n := deadSeen.Load(); n != 1+maxReplays {
		t.Errorf("the app saw the GET %d times, want %d", n, 1+maxReplays)
	}
}

func TestIsIdempotent(t *testing.T) {
	for _, tt := range []struct {
		method string
		header string
		want   bool
	}{
		{"GET", "", true},
		{"HEAD", "", true},
		{"OPTIONS", "", true},
		{"TRACE", "", true},
		{"", "", true},
		{"POST", "", false},
		{"PUT", "", false},
		{"DELETE", "", false},
		{"PATCH", "", false},
		{"POST", "Idempotency-Key", true},
		{"PATCH", "X-Idempotency-Key", true},
	} {
		r := &http.Request{Method: tt.method, Header: http.Header{}}
		if tt.header != "" {
			r.Header.Set(tt.header, "k")
		}
		if got := isIdempotent(r); got != tt.want {
			t.Errorf("isIdempotent(%s, %q) = %v, want %v", tt.method, tt.header, got, tt.want)
		}
	}
}

// startRaw is an app that answers every request it reads (body included)
// with the bytes reply returns, then keeps the connection unless reply
// asks to close it.
func startRaw(t testing.TB, reply func(req *http.Request) (raw string, closeAfter bool)) Target {
	t.Helper()
	ln, target := listenUnix(t, sockDir(t), "raw.sock")
	go testapp.ServeRaw(ln, reply)
	return target
}

// Every shape of response body reaches the client whole: chunked with
// trailers (announced and not), until-close, large, HEAD, 204.
func TestResponseShapes(t *testing.T) {
	f := newFixture(t, AppOptions{})
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	f.p.Serve("web", "v1", []Target{startRaw(t, func(r *http.Request) (string, bool) {
		switch r.URL.Path {
		case "/chunked":
			return "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\nX-Late: surprise\r\n\r\n", false
		case "/close":
			return "HTTP/1.1 200 OK\r\n\r\nuntil the app closes", true
		case "/big":
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big), big), false
		case "/nocontent":
			return "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", false
		default:
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
		}
	})})

	res, err := f.client.Get(f.url + "/chunked")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || string(body) != "hello world" {
		t.Errorf("chunked: %q %v", body, err)
	}
	if res.Trailer.Get("X-Sum") != "42" || res.Trailer.Get("X-Late") != "surprise" {
		t.Errorf("trailers %v, want X-Sum and X-Late", res.Trailer)
	}

	for path, want := range map[string]string{"/close": "until the app closes", "/big": big, "/": "ok", "/nocontent": ""} {
		if status, body := f.get(t, path); status/100 != 2 || body != want {
			t.Errorf("%s: %d, %d bytes, want %d bytes", path, status, len(body), len(want))
		}
	}
	res, err = f.client.Head(f.url + "/big")
	if err != nil || res.ContentLength != int64(len(big)) {
		t.Errorf("HEAD: %v, length %d", err, res.ContentLength)
	}
	waitFor(t, "nothing in flight", func() bool { return f.p.Stats("web").InFlight["v1"] == 0 })
}

// An interim 103 reaches the client before the final response.
func TestEarlyHintsPassedOn(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startRaw(t, func(r *http.Request) (string, bool) {
		return "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})})
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprintf("%d %s", code, h.Get("Link")))
		return nil
	}}
	req := mustRequest(t, http.MethodGet, f.url+"/", nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	if status, body := f.do(t, req); status != 200 || body != "ok" {
		t.Fatalf("got %d %q", status, body)
	}
	if len(hints) != 1 || hints[0] != "103 </app.css>; rel=preload" {
		t.Errorf("interim responses %q, want the 103", hints)
	}
}

// Request bodies of every shape reach the app whole: known length, large,
// chunked (unknown length), and with Expect: 100-continue.
func TestRequestBodies(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %x %d", len(b), sha256.Sum256(b), r.ContentLength)
	}))})
	sum := func(s string, length int64) string {
		return fmt.Sprintf("%d %x %d", len(s), sha256.Sum256([]byte(s)), length)
	}
	big := strings.Repeat("payload!", 1<<17) // 1 MiB: over inlineBodyMax
	for _, tt := range []struct {
		name    string
		body    string
		chunked bool
		expect  bool
	}{
		{"small", "a=1&b=2", false, false},
		{"large", big, false, false},
		{"chunked", big, true, false},
		{"expect continue", big, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var rd io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				rd = io.MultiReader(rd) // hides the length: the client sends chunks
			}
			req := mustRequest(t, http.MethodPost, f.url+"/upload", rd)
			want := sum(tt.body, int64(len(tt.body)))
			if tt.chunked {
				want = sum(tt.body, -1)
			}
			if tt.expect {
				req.Header.Set("Expect", "100-continue")
			}
			if status, body := f.do(t, req); status != 200 || body != want {
				t.Errorf("got %d %q, want %q", status, body, want)
			}
		})
	}
}

// An app that answers before reading a large upload is heard: the client
// gets its answer, and the proxy carries on.
func TestEarlyAnswerToUpload(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/upload" {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		io.WriteString(w, "ok")
	}))})
	req := mustRequest(t, http.MethodPost, f.url+"/upload", strings.NewReader(strings.Repeat("x", 8<<20)))
	res, err := f.client.Do(req)
	if err == nil {
		res.Body.Close()
		if res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413", res.StatusCode)
		}
	}
	// The client may also see its upload cut: either way, what follows
	// works.
	if status, body := f.get(t, "/"); status != 200 || body != "ok" {
		t.Errorf("after the early answer: %d %q", status, body)
	}
	waitFor(t, "nothing in flight", func() bool { return f.p.Stats("web").InFlight["v1"] == 0 })
}

// An app that closes keep-alive connections between requests (without
// saying so): a GET is sent again on a fresh connection, and a POST is
// never sent on a connection the app closed, so neither fails.
func TestAppClosesIdleConnections(t *testing.T) {
	f := newFixture(t, AppOptions{})
	var posts atomic.Int64
	f.p.Serve("web", "v1", []Target{startRaw(t, func(r *http.Request) (string, bool) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true // closes without Connection: close
	})})
	for i := range 20 {
		method := http.MethodGet
		if i%2 == 1 {
			method = http.MethodPost
		}
		// Let the close reach the proxy's pooled connection.
		time.Sleep(5 * time.Millisecond)
		if status, body := f.do(t, mustRequest(t, method, f.url+"/", strings.NewReader("x"))); status != 200 || body != "ok" {
			t.Fatalf("request %d (%s): %d %q", i, method, status, body)
		}
	}
	if n := posts.Load(); n != 10 {
		t.Errorf("the app saw %d POSTs, want 10", n)
	}
}

// A response the app gets wrong is a 502, not a broken connection.
func TestMalformedResponse(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startRaw(t, func(r *http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nBad Header Name: x\r\n\r\n", true
	})})
	if status, body := f.get(t, "/"); status != http.StatusBadGateway || body != "proxy: bad gateway\n" {
		t.Errorf("got %d %q, want 502", status, body)
	}
}

// A client that gives up on a slow answer aborts its request: the app sees
// its request context end.
func TestClientLeavesSlowRequest(t *testing.T) {
	f := newFixture(t, AppOptions{})
	gone := make(chan struct{})
	f.p.Serve("web", "v1", []Target{startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(gone)
		case <-time.After(10 * time.Second):
		}
	}))})
	ctx, cancel := context.WithCancel(context.Background())
	ch := f.goGet(ctx, "/slow")
	waitFor(t, "the request in flight", func() bool { return f.p.Stats("web").InFlight["v1"] == 1 })
	time.Sleep(2 * clientWatchDelay) // past the watch delay
	cancel()
	if r := recv(t, ch); r.err == nil {
		t.Errorf("the client got %d after leaving", r.status)
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the app did not see the client leave")
	}
	waitFor(t, "nothing in flight", func() bool { return f.p.Stats("web").InFlight["v1"] == 0 })
}

// A cut in the middle of a streamed response aborts the client's
// connection: the client must not take a partial body for a whole one.
func TestCutMidResponse(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "first part")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}))})
	res, err := f.client.Get(f.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	buf := make([]byte, 10)
	if _, err := io.ReadFull(res.Body, buf); err != nil || string(buf) != "first part" {
		t.Fatalf("first part: %q %v", buf, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if cut := f.p.Retire(ctx, "web", "v1"); cut != 1 {
		t.Errorf("cut %d, want 1", cut)
	}
	if _, err := io.ReadAll(res.Body); err == nil {
		t.Error("the rest of a cut response read without error")
	}
}

// Keep-alive: sequential requests share one connection to the app, and a
// version's pools are empty once it is retired.
func TestConnectionsPooled(t *testing.T) {
	f := newFixture(t, AppOptions{})
	var conns atomic.Int64
	ln, target := listenUnix(t, sockDir(t), "app.sock")
	srv := &http.Server{Handler: text("ok"), ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	f.p.Serve("web", "v1", []Target{target})
	for range 50 {
		f.get(t, "/")
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("50 sequential requests opened %d connections, want 1", n)
	}
	v := f.p.app("web").versions[0]
	if n := v.instances[0].pool.idleCount(); n != 1 {
		t.Errorf("%d idle connections pooled, want 1", n)
	}
	f.p.Retire(context.Background(), "web", "v1")
	if n := v.openConns(); n != 0 {
		t.Errorf("%d connections open after Retire", n)
	}
}

// A request whose client leaves while the proxy still connects to a TCP app
// (its accept queue full: the kernel drops the SYN, and sends it again only
// after a second) is not sent once the connect succeeds: the connect ends
// with the client. It used to go to the app when the app caught up.
func TestClientLeavesDuringConnect(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "app")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Fill the accept queue (a backlog of 0 holds one connection).
	for range 2 {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 200*time.Millisecond)
		if err != nil {
			break
		}
		defer c.Close()
	}

	p := New(Options{Logger: testLogger(t)})
	p.SetApp("web", AppOptions{})
	if err := p.SetRoutes([]Route{{Host: "*", App: "web"}}); err != nil {
		t.Fatal(err)
	}
	p.Serve("web", "v1", []Target{{Network: "tcp", Addr: ln.Addr().String()}})
	ctx, leave := context.WithCancel(context.Background())
	req := httptest.NewRequest("POST", "http://h/order", strings.NewReader("x")).WithContext(ctx)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { p.ServeHTTP(rec, req); close(done) }()
	time.Sleep(300 * time.Millisecond) // the connect waits for the SYN to be sent again
	leave()
	var got atomic.Int64
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got.Add(1) })) // the app catches up
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not end 10s after its client left")
	}
	time.Sleep(1500 * time.Millisecond) // past the SYN's second try
	if n := got.Load(); n != 0 || rec.Code != StatusClientClosedRequest {
		t.Errorf("the app got %d request(s) whose client had left during the connect; answered %d, want %d", n, rec.Code, StatusClientClosedRequest)
	}
}
