package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of issue 6, "hostile clients": what reaches the app of requests
// built to be read two ways, of hop-by-hop and forwarding headers, of
// bodies over max_body and of h2c upgrades; and what reaches the client of
// responses the app frames wrong. The proxy is served by net/http's server
// here; proxy/front has wire-level tests of its own.

// appRequest is one request as a recorder app read it off the wire.
type appRequest struct {
	line     string      // "POST /a HTTP/1.1"
	header   http.Header // every header line as sent (keys canonical)
	body     string
	complete bool // the whole body arrived, by the framing the app was sent
}

// recorder is an app that reads requests itself, line by line, so that it
// sees the head exactly as the proxy wrote it. A request framed two ways
// (Content-Length and Transfer-Encoding, or either twice) is recorded and
// its connection closed. reply answers each complete request (default: 200
// "ok"); a request whose body broke off is not answered.
type recorder struct {
	reply func(req appRequest) string
	conns atomic.Int64 // connections accepted

	mu   sync.Mutex
	reqs []appRequest
}

func startRecorder(t testing.TB, reply func(req appRequest) string) (*recorder, Target) {
	t.Helper()
	if reply == nil {
		reply = func(appRequest) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" }
	}
	rec := &recorder{reply: reply}
	ln, target := listenUnix(t, sockDir(t), "rec.sock")
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			rec.conns.Add(1)
			go rec.serve(conn)
		}
	}()
	return rec, target
}

func (rec *recorder) serve(conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	tp := textproto.NewReader(br)
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		h, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		req := appRequest{line: line, header: http.Header(h)}
		cl, te := h["Content-Length"], h["Transfer-Encoding"]
		var body io.Reader
		want := int64(-1)
		switch {
		case len(cl)+len(te) > 1:
			rec.add(req) // framed two ways: not complete
			return
		case len(te) == 1:
			body = httputil.NewChunkedReader(br)
		case len(cl) == 1:
			if want, err = strconv.ParseInt(cl[0], 10, 64); err != nil {
				rec.add(req)
				return
			}
			body = io.LimitReader(br, want)
		}
		if body != nil {
			b, err := io.ReadAll(body)
			req.body = string(b)
			if err == nil && len(te) == 1 {
				_, err = tp.ReadMIMEHeader() // the trailer section
			}
			if err != nil || want >= 0 && int64(len(b)) != want {
				rec.add(req) // the body broke off
				return
			}
		}
		req.complete = true
		rec.add(req)
		if _, err := io.WriteString(conn, rec.reply(req)); err != nil {
			return
		}
	}
}

func (rec *recorder) add(req appRequest) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.reqs = append(rec.reqs, req)
}

// requests returns what the app read so far.
func (rec *recorder) requests() []appRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.reqs)
}

// lines returns the request lines the app read so far.
func (rec *recorder) lines() []string {
	var lines []string
	for _, r := range rec.requests() {
		lines = append(lines, r.line)
	}
	return lines
}

// hostile is a Proxy served by httptest.NewServer, with one app "web" (the
// recorder), that records the request line of every request it handles.
type hostile struct {
	p    *Proxy
	app  *recorder
	addr string
	url  string

	mu  sync.Mutex
	saw []string // request lines the proxy handled, as the app would get them
}

func newHostile(t testing.TB, po Options, o AppOptions, reply func(appRequest) string) *hostile {
	t.Helper()
	po.Logger = testLogger(t)
	h := &hostile{p: New(po)}
	h.p.SetApp("web", o)
	if err := h.p.SetRoutes([]Route{{Host: "*", App: "web"}}); err != nil {
		t.Fatal(err)
	}
	var target Target
	h.app, target = startRecorder(t, reply)
	h.p.Serve("web", "v1", []Target{target})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.saw = append(h.saw, r.Method+" "+r.URL.RequestURI()+" HTTP/1.1")
		h.mu.Unlock()
		h.p.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	h.addr = strings.TrimPrefix(srv.URL, "http://")
	return h
}

func (h *hostile) handled() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.saw)
}

// rawResponse is one response a raw client read.
type rawResponse struct {
	status int
	header http.Header
	body   string
	close  bool  // the server said it closes the connection
	err    error // reading its body failed: the connection was cut mid-body
}

// exchange writes raw on a new connection to addr in one write and reads
// responses until the server closes the connection, which it must do
// within 10 s: every raw request of these tests ends with one that asks
// for it, or is refused.
func exchange(t testing.TB, addr, raw string) []rawResponse {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	var out []rawResponse
	br := bufio.NewReader(conn)
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the server kept the connection open; responses so far: %+v", out)
			}
			return out // closed (EOF or reset)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		out = append(out, rawResponse{status: res.StatusCode, header: res.Header, body: string(b), close: res.Close, err: err})
		if err != nil {
			return out
		}
	}
}

func statuses(rs []rawResponse) []int {
	var s []int
	for _, r := range rs {
		s = append(s, r.status)
	}
	return s
}

const lastRequest = "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

// Requests built to be read one way by a proxy and another by the app
// behind it: the proxy re-frames every body it forwards, so the app reads
// exactly the requests the proxy handled, never one hidden in a body, and
// never gets a head with two framings. What the server refuses (two
// lengths, bad chunking) reaches no app as a second request, and the client
// gets 400 or a closed connection.
func TestSmugglingAttempts(t *testing.T) {
	for _, tt := range []struct {
		name string
		raw  string
		// what the client gets, and the request lines the app gets
		statuses []int
		appLines []string
	}{
		{
			// net/http takes the chunked framing (RFC 9112 6.3) and drops
			// the length; the GET behind the body is a request of its own
			// to both.
			name: "Content-Length and Transfer-Encoding",
			raw: "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n" + lastRequest,
			statuses: []int{200, 200, 200},
			appLines: []string{"POST /a HTTP/1.1", "GET /smuggled HTTP/1.1", "GET /last HTTP/1.1"},
		},
		{
			name: "Transfer-Encoding and Content-Length hiding a request in the body",
			raw: "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" +
				"1e\r\nGET /smuggled HTTP/1.1\r\nX: y\r\n\r\n0\r\n\r\n" + lastRequest,
			statuses: []int{200, 200},
			appLines: []string{"POST /a HTTP/1.1", "GET /last HTTP/1.1"},
		},
		{
			name: "two Content-Lengths",
			raw: "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n" +
				"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n" + lastRequest,
			statuses: []int{400},
		},
		{
			name:     "Transfer-Encoding other than chunked",
			raw:      "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + lastRequest,
			statuses: []int{501},
		},
		{
			name: "chunk longer than its size",
			raw: "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"3\r\nabcGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n" + lastRequest,
			statuses: []int{400},
			appLines: []string{"POST /a HTTP/1.1"}, // its body never complete
		},
		{
			name: "chunk size not hex",
			raw: "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"zz\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n" + lastRequest,
			statuses: []int{400},
			appLines: []string{"POST /a HTTP/1.1"},
		},
		{
			name: "bad chunk in an idempotent request (buffered first)",
			raw: "PUT /a HTTP/1.1\r\nHost: x\r\nIdempotency-Key: 1\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"3\r\nabcGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n" + lastRequest,
			statuses: []int{400},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHostile(t, Options{}, AppOptions{}, nil)
			got := exchange(t, h.addr, tt.raw)
			if !slices.Equal(statuses(got), tt.statuses) {
				t.Errorf("client got %v, want %v", statuses(got), tt.statuses)
			}
			// The proxy is done with a request before its answer ends.
			waitFor(t, "nothing in flight", func() bool { return h.p.Stats("web").InFlight["v1"] == 0 })
			// The app records a request cut off when it notices.
			waitFor(t, "the app to read", func() bool { return len(h.app.lines()) >= len(tt.appLines) })
			lines := h.app.lines()
			if !slices.Equal(lines, tt.appLines) {
				t.Errorf("app got %q, want %q", lines, tt.appLines)
			}
			for _, req := range h.app.requests() {
				if strings.Contains(req.line, "smuggled") && !slices.Contains(h.handled(), req.line) {
					t.Errorf("the app got %q, which the proxy never handled", req.line)
				}
				if len(req.header["Content-Length"])+len(req.header["Transfer-Encoding"]) > 1 {
					t.Errorf("%s: sent with two framings: %v", req.line, req.header)
				}
			}
		})
	}
}

// A malformed chunked body reaches the app cut off, never complete, and the
// connection it went on is closed.
func TestBadChunkedBodyNeverCompleteAtApp(t *testing.T) {
	h := newHostile(t, Options{}, AppOptions{}, nil)
	exchange(t, h.addr, "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n")
	waitFor(t, "the app to read the request", func() bool { return len(h.app.requests()) == 1 })
	if req := h.app.requests()[0]; req.complete {
		t.Errorf("the app got a complete request: %+v", req)
	}
	// The next request needs a new connection.
	exchange(t, h.addr, lastRequest)
	if n := h.app.conns.Load(); n != 2 {
		t.Errorf("%d connections to the app, want 2", n)
	}
}

// Responses the app frames ambiguously or wrong: the client gets a 502 (or
// a connection cut mid-body once the head went out), and the connection
// they came on is never used again, so no later request reads their
// leftovers as its answer.
func TestResponseFramingAttacks(t *testing.T) {
	const ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	for _, tt := range []struct {
		name   string
		raw    string // the app's answer to /bad
		status int    // 0: the client's read of the body fails
	}{
		{"Content-Length and Transfer-Encoding", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled", 502},
		{"two Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk", 502},
		{"signed Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", 502},
		{"chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 502},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n", 0},
		{"a second response behind the first", ok + "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled", 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, AppOptions{})
			rec, target := startRecorder(t, func(req appRequest) string {
				if strings.HasPrefix(req.line, "GET /bad ") {
					return tt.raw
				}
				return ok
			})
			f.p.Serve("web", "v1", []Target{target})
			res, err := f.client.Get(f.url + "/bad")
			if err == nil {
				_, err = io.ReadAll(res.Body)
				res.Body.Close()
			}
			switch {
			case tt.status == 0 && err == nil:
				// The head may not have gone out yet when the body
				// breaks: then the client sees the connection closed.
				t.Errorf("status %d, body read in full; want it cut", res.StatusCode)
			case tt.status != 0 && (err != nil || res.StatusCode != tt.status):
				t.Errorf("%v, want status %d", err, tt.status)
			}
			for i := range 3 {
				if status, body := f.get(t, "/next"); status != 200 || body != "ok" {
					t.Fatalf("request %d after: %d %q", i, status, body)
				}
			}
			// /bad's connection was dropped: the requests after it went
			// on a new one, reused for all of them.
			if n := rec.conns.Load(); n != 2 {
				t.Errorf("%d connections to the app, want 2", n)
			}
		})
	}
}

// Hop-by-hop headers, and those the Connection header names, stop at the
// proxy both ways.
func TestHopByHopHeadersBothWays(t *testing.T) {
	h := newHostile(t, Options{}, AppOptions{}, func(appRequest) string {
		return "HTTP/1.1 200 OK\r\n" +
			"Connection: X-Resp-Hop, keep-alive\r\nX-Resp-Hop: 1\r\nKeep-Alive: timeout=5\r\n" +
			"Proxy-Connection: keep-alive\r\nProxy-Authenticate: Basic realm=x\r\nProxy-Authorization: Basic eA==\r\n" +
			"Te: trailers\r\nUpgrade: h2c\r\nX-Resp-Kept: yes\r\nContent-Length: 2\r\n\r\nok"
	})
	raw := "POST /a HTTP/1.1\r\nHost: x\r\n" +
		"Connection: X-Hop, keep-alive, HTTP2-Settings\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n" +
		"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic c2VjcmV0\r\nProxy-Authenticate: x\r\n" +
		"Te: trailers, deflate\r\nTrailer: X-Trailer\r\nUpgrade: websocket\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n" +
		"X-Kept: yes\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-Trailer: t\r\n\r\n" + lastRequest
	got := exchange(t, h.addr, raw)
	if !slices.Equal(statuses(got), []int{200, 200}) {
		t.Fatalf("client got %v", statuses(got))
	}
	reqs := h.app.requests()
	if len(reqs) != 2 {
		t.Fatalf("app got %d requests", len(reqs))
	}
	req := reqs[0]
	for _, k := range []string{"Connection", "X-Hop", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization",
		"Proxy-Authenticate", "Upgrade", "Http2-Settings"} {
		if vs, ok := req.header[k]; ok {
			t.Errorf("app got %s: %q", k, vs)
		}
	}
	if te := req.header["Te"]; !slices.Equal(te, []string{"trailers"}) {
		t.Errorf("app got Te %q, want only trailers", te)
	}
	if req.header.Get("X-Kept") != "yes" || req.body != "hi" || !req.complete {
		t.Errorf("app got %+v", req)
	}
	res := got[0]
	for _, k := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Upgrade"} {
		if vs, ok := res.header[k]; ok {
			t.Errorf("client got %s: %q", k, vs)
		}
	}
	if c := res.header.Get("Connection"); c != "" {
		t.Errorf("client got Connection: %q", c)
	}
	if res.header.Get("X-Resp-Kept") != "yes" || res.body != "ok" {
		t.Errorf("client got %v %q", res.header, res.body)
	}
}

// Forwarding headers reach the app only from trusted proxies, end to end.
func TestTrustedProxiesEndToEnd(t *testing.T) {
	const raw = "GET /a HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 203.0.113.9\r\n" +
		"X-Forwarded-Proto: https\r\nX-Forwarded-Host: www.example\r\nForwarded: for=203.0.113.9\r\n" +
		"X-Forwarded-Prefix: /p\r\nX-Real-Ip: 203.0.113.9\r\nConnection: close\r\n\r\n"
	for _, tt := range []struct {
		name    string
		trusted string
		want    http.Header
	}{
		{"untrusted", "10.0.0.0/8", http.Header{
			"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"shop.example"},
		}},
		{"trusted", "127.0.0.0/8", http.Header{
			"X-Forwarded-For": {"203.0.113.9, 127.0.0.1"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"www.example"},
			"Forwarded": {"for=203.0.113.9"}, "X-Forwarded-Prefix": {"/p"}, "X-Real-Ip": {"203.0.113.9"},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHostile(t, Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix(tt.trusted)}}, AppOptions{}, nil)
			if got := exchange(t, h.addr, raw); !slices.Equal(statuses(got), []int{200}) {
				t.Fatalf("client got %v", statuses(got))
			}
			req := h.app.requests()[0]
			for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "X-Forwarded-Prefix", "X-Real-Ip"} {
				if !slices.Equal(req.header[k], tt.want[k]) {
					t.Errorf("%s: app got %q, want %q", k, req.header[k], tt.want[k])
				}
			}
		})
	}
}

// max_body: a body known to be too large gets 413 at once and the app sees
// nothing; one that grows too large is cut off before the app has it all,
// and the client gets 413 and a closed connection; one at the limit passes.
func TestMaxBody(t *testing.T) {
	const limit = 1000
	chunked := func(method string, n int) string {
		var b strings.Builder
		b.WriteString(method + " /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
		for n > 0 {
			k := min(n, 300)
			b.WriteString(strconv.FormatInt(int64(k), 16) + "\r\n" + strings.Repeat("b", k) + "\r\n")
			n -= k
		}
		b.WriteString("0\r\n\r\n")
		return b.String()
	}
	for _, tt := range []struct {
		name     string
		raw      string
		status   int
		appSees  int  // requests the app reads
		complete bool // ... and whether the last is complete
	}{
		{"length over", "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n" + strings.Repeat("b", 1001) + lastRequest, 413, 0, false},
		{"length over, expecting 100-continue", "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n", 413, 0, false},
		{"length at the limit", "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("b", 1000) + lastRequest, 200, 2, true},
		{"chunked over, streamed", chunked("POST", 1001) + lastRequest, 413, 1, false},
		{"chunked far over, streamed", chunked("POST", 100000) + lastRequest, 413, 1, false},
		{"chunked over, buffered for replay", chunked("GET", 1001) + lastRequest, 413, 0, false},
		{"chunked at the limit", chunked("POST", 1000) + lastRequest, 200, 2, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHostile(t, Options{}, AppOptions{MaxBody: limit}, nil)
			got := exchange(t, h.addr, tt.raw)
			if len(got) == 0 || got[0].status != tt.status {
				t.Fatalf("client got %v, want %d first", statuses(got), tt.status)
			}
			if tt.status == 413 {
				if len(got) != 1 {
					t.Errorf("client got %v: the connection was not closed after the 413", statuses(got))
				}
				if !got[0].close || !strings.Contains(got[0].body, "limit is 1000 bytes") {
					t.Errorf("413 with %v %q", got[0].header, got[0].body)
				}
			}
			waitFor(t, "nothing in flight", func() bool { return h.p.Stats("web").InFlight["v1"] == 0 })
			if tt.appSees > 0 {
				waitFor(t, "the app to read", func() bool { return len(h.app.requests()) >= tt.appSees })
			}
			reqs := h.app.requests()
			if len(reqs) != tt.appSees {
				t.Fatalf("app read %d requests, want %d", len(reqs), tt.appSees)
			}
			if len(reqs) > 0 && reqs[0].complete != tt.complete {
				t.Errorf("app's request complete = %v, want %v (%d body bytes)", reqs[0].complete, tt.complete, len(reqs[0].body))
			}
		})
	}
}

// A body that goes past MaxBody is stopped there even for an app that
// reads it slowly: the 413 comes, the app never gets the end.
func TestMaxBodyChangesWithSetApp(t *testing.T) {
	h := newHostile(t, Options{}, AppOptions{MaxBody: 10}, nil)
	raw := "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world"
	if got := exchange(t, h.addr, raw); !slices.Equal(statuses(got), []int{413}) {
		t.Errorf("limit 10: %v, want 413", statuses(got))
	}
	h.p.SetApp("web", AppOptions{MaxBody: 0})
	if got := exchange(t, h.addr, raw); !slices.Equal(statuses(got), []int{200}) {
		t.Errorf("no limit: %v, want 200", statuses(got))
	}
}

// h2c is never an upgrade the app sees: the request is served as HTTP/1.1
// without its Upgrade and HTTP2-Settings; other protocols offered with h2c
// still go to the app. PRI (an HTTP/2 preface) is refused.
func TestH2CUpgradeAndPRI(t *testing.T) {
	h := newHostile(t, Options{}, AppOptions{}, nil)
	got := exchange(t, h.addr, "GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
		"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"+lastRequest)
	if !slices.Equal(statuses(got), []int{200, 200}) {
		t.Fatalf("h2c: client got %v, want 200 200", statuses(got))
	}
	req := h.app.requests()[0]
	for _, k := range []string{"Upgrade", "Http2-Settings", "Connection"} {
		if vs, ok := req.header[k]; ok {
			t.Errorf("h2c: app got %s: %q", k, vs)
		}
	}

	for _, raw := range []string{
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"PRI / HTTP/1.1\r\nHost: x\r\n\r\n" + lastRequest,
	} {
		got := exchange(t, h.addr, raw)
		if !slices.Equal(statuses(got), []int{400}) {
			t.Errorf("%q: client got %v, want 400 and a closed connection", raw, statuses(got))
		}
	}
	if n := len(h.app.requests()); n != 2 {
		t.Errorf("app got %d requests, want the 2 of the h2c exchange", n)
	}

	// h2c offered with another protocol: the other is passed on.
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, rawEchoUpgrade(t))})
	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c, echo\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\nping")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("h2c, echo: %v %v, want 101", res, err)
	}
	echo := make([]byte, 4)
	if _, err := io.ReadFull(br, echo); err != nil || string(echo) != "ping" {
		t.Errorf("echo %q %v", echo, err)
	}
}
