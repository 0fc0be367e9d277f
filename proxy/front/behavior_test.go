package front

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestKeepAliveAndPipelining(t *testing.T) {
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.URL.Path+":"+string(b))
	}), nil)
	cl := dial(t, addr)
	// Three requests in one write, one with a body, then a fourth later.
	cl.send("GET /1 HTTP/1.1\r\nHost: h\r\n\r\n" +
		"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc" +
		"\r\n" + // a stray CRLF between requests is tolerated (RFC 9112 2.2)
		"POST /3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n")
	for _, want := range []string{"/1:", "/2:abc", "/3:xy"} {
		if _, body := cl.get("GET"); body != want {
			t.Errorf("got %q, want %q", body, want)
		}
	}
	cl.send("GET /4 HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, body := cl.get("GET"); body != "/4:" {
		t.Errorf("got %q, want /4:", body)
	}
	// A head sent a byte at a time, and one longer than the read buffer.
	req := "GET /5 HTTP/1.1\r\nHost: h\r\nX-Long: " + strings.Repeat("v", 6000) + "\r\n\r\n"
	for i := range 40 {
		cl.send(req[i : i+1])
	}
	cl.send(req[40:])
	if _, body := cl.get("GET"); body != "/5:" {
		t.Errorf("got %q, want /5:", body)
	}
}

func TestHTTP10(t *testing.T) {
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			io.WriteString(w, strings.Repeat("x", 5000)) // past the pre-head buffer: no length
			return
		}
		io.WriteString(w, "hi")
	}), nil)

	cl := dial(t, addr)
	cl.send("GET / HTTP/1.0\r\n\r\n")
	res, body := cl.get("GET")
	if body != "hi" || res.Proto != "HTTP/1.0" || res.ContentLength != 2 {
		t.Errorf("got %s %q length %d", res.Proto, body, res.ContentLength)
	}
	if !cl.closed() {
		t.Error("HTTP/1.0 without keep-alive: connection not closed")
	}

	cl = dial(t, addr)
	for range 3 {
		cl.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		res, body := cl.get("GET")
		if body != "hi" || res.Header.Get("Connection") != "keep-alive" {
			t.Errorf("keep-alive: got %q, Connection %q", body, res.Header.Get("Connection"))
		}
	}
	cl.send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if _, body := cl.get("GET"); len(body) != 5000 {
		t.Errorf("close-delimited body: %d bytes", len(body))
	}
	if !cl.closed() {
		t.Error("HTTP/1.0 body of unknown length: connection not closed")
	}
}

func TestResponseFraming(t *testing.T) {
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/small":
			io.WriteString(w, "small")
		case "/large":
			w.Write(bytes.Repeat([]byte("L"), 10000))
		case "/flushed":
			io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			io.WriteString(w, "b")
		case "/length":
			w.Header().Set("Content-Length", "3")
			io.WriteString(w, "abc")
		case "/head":
			w.Header().Set("Content-Length", "1234")
			w.Header().Set("X-Head", "yes")
		case "/headwrite":
			io.WriteString(w, "hello")
		case "/204":
			w.WriteHeader(204)
			if _, err := w.Write([]byte("x")); !errors.Is(err, http.ErrBodyNotAllowed) {
				panic("write to a 204 allowed")
			}
		case "/304":
			w.Header().Set("ETag", `"x"`)
			w.WriteHeader(304)
		case "/trailers":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		case "/interim":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			io.WriteString(w, "final")
		case "/splitting":
			w.Header().Set("X-Evil", "a\r\nSet-Cookie: x=1")
			io.WriteString(w, "ok")
		case "/date":
			w.Header()["Date"] = nil // suppresses it, as with net/http
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		}
	}), nil)
	cl := dial(t, addr)
	do := func(method, path string) (*http.Response, string) {
		t.Helper()
		cl.send(method + " " + path + " HTTP/1.1\r\nHost: h\r\n\r\n")
		return cl.get(method)
	}

	if res, body := do("GET", "/small"); body != "small" || res.ContentLength != 5 || res.Header.Get("Date") == "" {
		t.Errorf("small: %q length %d date %q", body, res.ContentLength, res.Header.Get("Date"))
	}
	if res, body := do("GET", "/large"); len(body) != 10000 || !slices.Equal(res.TransferEncoding, []string{"chunked"}) {
		t.Errorf("large: %d bytes, TE %v", len(body), res.TransferEncoding)
	}
	if res, body := do("GET", "/flushed"); body != "ab" || res.ContentLength != -1 {
		t.Errorf("flushed: %q length %d", body, res.ContentLength)
	}
	if res, body := do("GET", "/length"); body != "abc" || res.ContentLength != 3 {
		t.Errorf("length: %q length %d", body, res.ContentLength)
	}
	if res, body := do("HEAD", "/head"); body != "" || res.ContentLength != 1234 || res.Header.Get("X-Head") != "yes" {
		t.Errorf("HEAD: %q length %d", body, res.ContentLength)
	}
	if res, _ := do("HEAD", "/headwrite"); res.ContentLength != 5 {
		t.Errorf("HEAD with a body written: length %d, want 5", res.ContentLength)
	}
	if res, body := do("GET", "/204"); res.StatusCode != 204 || body != "" || res.Header.Get("Content-Length") != "" {
		t.Errorf("204: %d %q", res.StatusCode, body)
	}
	if res, body := do("GET", "/304"); res.StatusCode != 304 || body != "" || res.Header.Get("ETag") != `"x"` {
		t.Errorf("304: %d %q", res.StatusCode, body)
	}
	res, body := do("GET", "/trailers")
	if body != "body" || res.Trailer.Get("X-Sum") != "42" || res.Trailer.Get("X-Late") != "late" {
		t.Errorf("trailers: %q %v", body, res.Trailer)
	}

	cl.send("GET /interim HTTP/1.1\r\nHost: h\r\n\r\n")
	line, _ := cl.br.ReadString('\n')
	if line != "HTTP/1.1 103 Early Hints\r\n" {
		t.Errorf("interim: %q", line)
	}
	link, _ := cl.br.ReadString('\n')
	end, _ := cl.br.ReadString('\n')
	if !strings.HasPrefix(link, "Link: </a.css>") || end != "\r\n" {
		t.Errorf("interim head: %q %q", link, end)
	}
	if res, body := cl.get("GET"); res.StatusCode != 200 || body != "final" || res.Header.Get("Link") != "" {
		t.Errorf("after interim: %d %q %v", res.StatusCode, body, res.Header)
	}

	if res, body := do("GET", "/splitting"); body != "ok" || res.Header.Get("Set-Cookie") != "" {
		t.Errorf("header value with CRLF split the response: %v", res.Header)
	}
	if res, _ := do("GET", "/date"); res.Header.Get("Date") != "" {
		t.Errorf("Date %q, want none", res.Header.Get("Date"))
	}
	if res, body := do("GET", "/close"); body != "bye" || !res.Close {
		t.Errorf("close: %q close=%v", body, res.Close)
	}
	if !cl.closed() {
		t.Error("Connection: close from the handler: connection not closed")
	}
}

func TestContentLengthMismatch(t *testing.T) {
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		if r.URL.Path == "/short" {
			io.WriteString(w, "abc")
			return
		}
		if _, err := io.WriteString(w, "abcdefgh"); !errors.Is(err, http.ErrContentLength) {
			panic("overlong write allowed")
		}
		io.WriteString(w, "abcde")
	}), nil)
	for _, path := range []string{"/short", "/long"} {
		cl := dial(t, addr)
		cl.send("GET " + path + " HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n")
		res := cl.response("GET")
		b, _ := io.ReadAll(res.Body)
		if path == "/long" && string(b) != "abcde" {
			t.Errorf("%s: body %q", path, b)
		}
		if !cl.closed() {
			t.Errorf("%s: connection not closed", path)
		}
	}
}

func TestExpectContinue(t *testing.T) {
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/reject" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "got "+string(b))
	}), nil)

	cl := dial(t, addr)
	cl.send("POST /read HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	if line, _ := cl.br.ReadString('\n'); line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q, want 100 Continue", line)
	}
	cl.br.ReadString('\n')
	cl.send("body")
	if _, body := cl.get("POST"); body != "got body" {
		t.Errorf("got %q", body)
	}

	// Rejected without reading: no 100, and the connection closes since
	// the body may or may not follow.
	cl = dial(t, addr)
	cl.send("POST /reject HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	if res, _ := cl.get("POST"); res.StatusCode != 403 || !res.Close {
		t.Errorf("reject: status %d, close %v", res.StatusCode, res.Close)
	}
	if !cl.closed() {
		t.Error("connection not closed")
	}
}

func TestUnreadBody(t *testing.T) {
	_, addr := startServer(t, text("ignored your body"), nil)
	cl := dial(t, addr)
	small := strings.Repeat("s", 100<<10)
	cl.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + strconv.Itoa(len(small)) + "\r\n\r\n" + small)
	if res, _ := cl.get("POST"); res.Close {
		t.Error("a small unread body closed the connection")
	}
	cl.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, body := cl.get("GET"); body != "ignored your body" {
		t.Errorf("next request: %q", body)
	}

	cl = dial(t, addr)
	cl.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n")
	if res, _ := cl.get("POST"); !res.Close {
		t.Error("a large unread body: no Connection: close")
	}
	if !cl.closed() {
		t.Error("connection not closed")
	}
}

// A goroutine a handler left reading its body, paused between two reads
// when the handler returned, gets nothing of the next request's body: its
// next read fails. (The proxy streams bodies from such a goroutine and may
// answer before the body is all sent.)
func TestLeftoverBodyReader(t *testing.T) {
	resumes := make(chan chan struct{}, 1) // from /a's handler to /b's
	leftover := make(chan string, 1)
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a":
			body, paused, resume := r.Body, make(chan struct{}), make(chan struct{})
			go func() {
				var b [2]byte
				body.Read(b[:])
				close(paused)
				<-resume
				n, err := body.Read(b[:])
				leftover <- fmt.Sprintf("%q %v", b[:n], err)
			}()
			<-paused
			resumes <- resume
			io.WriteString(w, "a") // answered with the body half read
		case "/b":
			close(<-resumes)
			got := <-leftover
			b, err := io.ReadAll(r.Body)
			fmt.Fprintf(w, "b read %q %v; the leftover read %s", b, err, got)
		}
	}), nil)
	cl := dial(t, addr)
	for _, tt := range []struct{ name, b string }{
		{"Content-Length", "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"},
		{"chunked", "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	} {
		cl.send("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nAAAA" + tt.b)
		if _, body := cl.get("POST"); body != "a" {
			t.Fatalf("%s: /a answered %q", tt.name, body)
		}
		want := `b read "hello" <nil>; the leftover read "" http: invalid Read on closed Body`
		if _, body := cl.get("POST"); body != want {
			t.Errorf("%s: /b answered %q, want %q", tt.name, body, want)
		}
	}
}

func TestSlowlorisCut(t *testing.T) {
	_, addr := startServer(t, text("ok"), func(s *Server) { s.ReadHeaderTimeout = time.Second })

	slow := dial(t, addr)
	cut := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		req := "GET / HTTP/1.1\r\nHost: h\r\nX-Slow: " + strings.Repeat("z", 100) + "\r\n\r\n"
		for i := range len(req) {
			if _, err := io.WriteString(slow.c, req[i:i+1]); err != nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
			if i > 20 {
				// Past the timeout by far: see whether the server hung up.
				slow.c.SetReadDeadline(time.Now().Add(time.Millisecond))
				if _, err := slow.br.ReadByte(); err != nil && !isTimeout(err) {
					break
				}
			}
		}
		cut <- time.Since(start)
	}()

	// Meanwhile 16 keep-alive clients are served.
	var wg sync.WaitGroup
	var ok atomic.Int64
	stop := time.Now().Add(1500 * time.Millisecond)
	for range 16 {
		wg.Go(func() {
			cl := dial(t, addr)
			for time.Now().Before(stop) {
				cl.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
				res, err := http.ReadResponse(cl.br, nil)
				if err != nil {
					t.Errorf("keep-alive client: %v", err)
					return
				}
				io.Copy(io.Discard, res.Body)
				if res.StatusCode == 200 {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load() < 16 {
		t.Errorf("only %d requests served meanwhile", ok.Load())
	}
	select {
	case d := <-cut:
		if d > 8*time.Second {
			t.Errorf("slow client cut after %v", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("slow client never cut")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestIdleTimeout(t *testing.T) {
	_, addr := startServer(t, text("ok"), func(s *Server) {
		s.IdleTimeout = 300 * time.Millisecond
		s.ReadHeaderTimeout = 5 * time.Second
	})
	cl := dial(t, addr)
	cl.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	cl.get("GET")
	start := time.Now()
	if !cl.closed() {
		t.Fatal("idle connection not closed")
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Errorf("closed after %v, want about 300ms", d)
	}
}

func TestConnStateSequence(t *testing.T) {
	var mu sync.Mutex
	var states []http.ConnState
	var hijackedConn net.Conn
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hijack" {
			c, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err)
			}
			mu.Lock()
			hijackedConn = c
			mu.Unlock()
			return
		}
		io.WriteString(w, "ok")
	}), func(s *Server) {
		s.ConnState = func(c net.Conn, st http.ConnState) {
			mu.Lock()
			states = append(states, st)
			mu.Unlock()
		}
	})
	get := func() []http.ConnState {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(states)
	}
	cl := dial(t, addr)
	waitFor(t, "StateNew", func() bool { return len(get()) == 1 })
	for range 2 {
		cl.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		cl.get("GET")
	}
	cl.c.Close()
	want := []http.ConnState{http.StateNew, http.StateActive, http.StateIdle, http.StateActive, http.StateIdle, http.StateClosed}
	waitFor(t, "StateClosed", func() bool { return len(get()) == len(want) })
	if got := get(); !slices.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}

	mu.Lock()
	states = nil
	mu.Unlock()
	cl = dial(t, addr)
	cl.send("GET /hijack HTTP/1.1\r\nHost: h\r\n\r\n")
	want = []http.ConnState{http.StateNew, http.StateActive, http.StateHijacked}
	waitFor(t, "StateHijacked", func() bool { return len(get()) == len(want) })
	time.Sleep(50 * time.Millisecond) // nothing may follow
	if got := get(); !slices.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
	mu.Lock()
	hijackedConn.Close()
	mu.Unlock()
}

func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	s, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	}), nil)

	idle := dial(t, addr)
	idle.send("GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
	idle.get("GET")
	busy := dial(t, addr)
	busy.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	<-entered

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if !idle.closed() {
		t.Error("idle connection not closed by Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
	close(release)
	res, body := busy.get("GET")
	if body != "done /slow" || !res.Close {
		t.Errorf("in-flight request: %q close=%v", body, res.Close)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}

	// A deadline passing first.
	s2, addr2 := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}), nil)
	cl := dial(t, addr2)
	cl.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s2.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
}

func TestPanics(t *testing.T) {
	logs := &bytes.Buffer{}
	var logMu sync.Mutex
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/abort":
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "part")
			panic(http.ErrAbortHandler)
		case "/abort-buffered":
			io.WriteString(w, "part") // in the pre-head buffer: must not go out as a whole response
			panic(http.ErrAbortHandler)
		case "/boom":
			panic("boom")
		}
	}), func(s *Server) {
		s.Logger = newBufLogger(logs, &logMu)
	})

	cl := dial(t, addr)
	cl.send("GET /boom HTTP/1.1\r\nHost: h\r\n\r\n")
	if res, _ := cl.get("GET"); res.StatusCode != 500 {
		t.Errorf("panic: status %d, want 500", res.StatusCode)
	}
	if !cl.closed() {
		t.Error("panic: connection not closed")
	}
	logMu.Lock()
	if !strings.Contains(logs.String(), "boom") || !strings.Contains(logs.String(), "runHandler") {
		t.Errorf("panic not logged with its stack: %s", logs)
	}
	logs.Reset()
	logMu.Unlock()

	for _, path := range []string{"/abort", "/abort-buffered"} {
		cl := dial(t, addr)
		cl.send("GET " + path + " HTTP/1.1\r\nHost: h\r\n\r\n")
		res, err := http.ReadResponse(cl.br, nil)
		if err == nil {
			if _, err = io.ReadAll(res.Body); err == nil {
				t.Errorf("%s: a whole response arrived", path)
			}
		}
		if !cl.closed() {
			t.Errorf("%s: connection not closed", path)
		}
	}
	logMu.Lock()
	if logs.Len() > 0 {
		t.Errorf("ErrAbortHandler logged: %s", logs)
	}
	logMu.Unlock()
}

func TestHijackKeepsEarlyBytes(t *testing.T) {
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		// Echo lines until "bye".
		for {
			line, err := brw.ReadString('\n')
			if err != nil || line == "bye\n" {
				return
			}
			brw.WriteString("echo " + line)
			brw.Flush()
		}
	}), nil)
	cl := dial(t, addr)
	cl.send("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly\n")
	res := cl.response("GET")
	if res.StatusCode != 101 {
		t.Fatalf("status %d", res.StatusCode)
	}
	if line, _ := cl.br.ReadString('\n'); line != "echo early\n" {
		t.Errorf("got %q, want the early bytes echoed", line)
	}
	cl.send("late\n")
	if line, _ := cl.br.ReadString('\n'); line != "echo late\n" {
		t.Errorf("got %q", line)
	}
	cl.send("bye\n")
}

// TestClientGone checks the request context: done when the client leaves
// during the request, through Done and through context.AfterFunc; and a
// pipelined request does not count as leaving.
func TestClientGone(t *testing.T) {
	gone := make(chan string, 4)
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		switch r.URL.Path {
		case "/done":
			select {
			case <-ctx.Done():
				gone <- "done " + ctx.Err().Error()
			case <-time.After(5 * time.Second):
				gone <- "timeout"
			}
		case "/afterfunc":
			ch := make(chan struct{})
			context.AfterFunc(ctx, func() { close(ch) })
			select {
			case <-ch:
				gone <- "afterfunc"
			case <-time.After(5 * time.Second):
				gone <- "timeout"
			}
		case "/pipelined":
			select {
			case <-ctx.Done():
				gone <- "cancelled by a pipelined request"
			case <-time.After(200 * time.Millisecond):
				io.WriteString(w, "still here")
			}
		default:
			io.WriteString(w, "second "+strconv.FormatBool(ctx.Err() == nil))
		}
	}), nil)

	for _, path := range []string{"/done", "/afterfunc"} {
		cl := dial(t, addr)
		cl.send("GET " + path + " HTTP/1.1\r\nHost: h\r\n\r\n")
		time.Sleep(50 * time.Millisecond)
		cl.c.Close()
		select {
		case got := <-gone:
			if got == "timeout" {
				t.Errorf("%s: client leaving not noticed", path)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: handler never returned", path)
		}
	}

	cl := dial(t, addr)
	cl.send("GET /pipelined HTTP/1.1\r\nHost: h\r\n\r\n")
	time.Sleep(50 * time.Millisecond) // the handler is watching
	cl.send("GET /second HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, body := cl.get("GET"); body != "still here" {
		t.Errorf("first: %q", body)
	}
	if _, body := cl.get("GET"); body != "second true" {
		t.Errorf("second (its first byte read by the watch): %q", body)
	}
	select {
	case got := <-gone:
		t.Error(got)
	default:
	}
}

func TestLeadingBytesLimit(t *testing.T) {
	// A client streaming empty lines is cut like any oversized head.
	_, addr := startServer(t, text("ok"), func(s *Server) { s.MaxHeaderBytes = 1024 })
	cl := dial(t, addr)
	cl.send(strings.Repeat("\r\n", 2000))
	if res, _ := cl.get("GET"); res.StatusCode != 431 {
		t.Errorf("status %d, want 431", res.StatusCode)
	}
}

// bufLogger logs to a buffer.
func newBufLogger(b *bytes.Buffer, mu *sync.Mutex) *slog.Logger {
	return slog.New(slog.NewTextHandler(&lockedWriter{w: b, mu: mu}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// A request whose handler watches its client keeps no read buffer while
// it waits (a held request costs no 4 KiB), and its connection then serves
// a next request sent later, which is read without one until it arrives.
func TestWatchReleasesReadBuffer(t *testing.T) {
	var s *Server
	buffered := make(chan bool, 1)
	s, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/watch" {
			r.Context().Done()
			s.mu.Lock()
			for c := range s.conns {
				if c.inHandler && &c.req == r {
					buffered <- c.br != nil // the handler's goroutine owns c.br
				}
			}
			s.mu.Unlock()
		}
		io.WriteString(w, "ok "+r.URL.Path)
	}), nil)

	cl := dial(t, addr)
	for range 2 {
		cl.send("GET /watch HTTP/1.1\r\nHost: h\r\n\r\n")
		if _, body := cl.get("GET"); body != "ok /watch" {
			t.Fatalf("got %q", body)
		}
		if <-buffered {
			t.Error("a watched request's connection kept its read buffer")
		}
		time.Sleep(20 * time.Millisecond) // the next request comes later
	}
	cl.send("GET /plain HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, body := cl.get("GET"); body != "ok /plain" {
		t.Errorf("after the watched requests: got %q", body)
	}
}
