package front

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testapp"
	"github.com/deployer/deployer/proxy"
)

// listenApp listens on a unix socket for an app, until the test ends. The
// directory is under /tmp: sun_path holds 108 bytes.
func listenApp(t testing.TB) (net.Listener, proxy.Target) {
	t.Helper()
	dir, err := os.MkdirTemp("", "front")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "app.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, proxy.Target{Network: "unix", Addr: path}
}

// startApp serves h on a unix socket, as an app would, until the test
// ends.
func startApp(t testing.TB, h http.Handler) proxy.Target {
	t.Helper()
	ln, target := listenApp(t)
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return target
}

// startProxy serves a proxy.Proxy, with app "web" routed for every host,
// through a front Server.
func startProxy(t testing.TB, app http.Handler) (*proxy.Proxy, string) {
	t.Helper()
	p := proxy.New(proxy.Options{Logger: testLogger(t)})
	p.SetApp("web", proxy.AppOptions{})
	if err := p.SetRoutes([]proxy.Route{{Host: "*", App: "web"}}); err != nil {
		t.Fatal(err)
	}
	if app != nil {
		p.Serve("web", "v1", []proxy.Target{startApp(t, app)})
	}
	_, addr := startServer(t, p, nil)
	return p, addr
}

func TestProxyChunkedWithTrailers(t *testing.T) {
	_, addr := startProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Trailer", "X-Echo-Sum")
		io.WriteString(w, "app got "+string(b)+" sum="+r.Trailer.Get("X-Sum")+" te="+strings.Join(r.TransferEncoding, ","))
		w.Header().Set("X-Echo-Sum", r.Trailer.Get("X-Sum"))
	}))
	cl := dial(t, addr)
	for range 2 { // twice: the connection is kept
		cl.send("POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n")
		res, body := cl.get("POST")
		if body != "app got hello world sum=11 te=chunked" {
			t.Errorf("got %d %q", res.StatusCode, body)
		}
		if got := res.Trailer.Get("X-Echo-Sum"); got != "11" {
			t.Errorf("response trailer X-Echo-Sum = %q, want 11", got)
		}
	}
}

func TestProxyUpgrade(t *testing.T) {
	_, addr := startProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want an upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString("echo " + line)
			brw.Flush()
		}
	}))
	cl := dial(t, addr)
	// The first frame goes in the same write as the upgrade request.
	cl.send("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nfirst\n")
	res := cl.response("GET")
	if res.StatusCode != 101 {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	if line, _ := cl.br.ReadString('\n'); line != "echo first\n" {
		t.Errorf("got %q, want the early frame echoed", line)
	}
	cl.send("second\n")
	if line, _ := cl.br.ReadString('\n'); line != "echo second\n" {
		t.Errorf("got %q", line)
	}
}

func TestProxyBodylessResponses(t *testing.T) {
	_, addr := startProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(304)
		default:
			w.Header().Set("Content-Length", "7")
			io.WriteString(w, "content")
		}
	}))
	cl := dial(t, addr)
	for _, tt := range []struct {
		method, path string
		status       int
		length       int64
	}{
		{"HEAD", "/", 200, 7},
		{"GET", "/204", 204, 0},
		{"GET", "/304", 304, -1},
		{"GET", "/", 200, 7},
	} {
		cl.send(tt.method + " " + tt.path + " HTTP/1.1\r\nHost: h\r\n\r\n")
		res, body := cl.get(tt.method)
		if res.StatusCode != tt.status || body != "" && tt.method == "HEAD" {
			t.Errorf("%s %s: %d %q", tt.method, tt.path, res.StatusCode, body)
		}
		if tt.path == "/" && res.ContentLength != tt.length {
			t.Errorf("%s %s: length %d, want %d", tt.method, tt.path, res.ContentLength, tt.length)
		}
	}
}

// TestProxyHeldClientGone: a request held by a paused app, whose client
// leaves, ends (the proxy sees the context done) instead of waiting for
// its queue timeout.
func TestProxyHeldClientGone(t *testing.T) {
	p, addr := startProxy(t, text("released"))
	p.Hold("web")
	cl := dial(t, addr)
	cl.send("GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
	waitFor(t, "the request to be held", func() bool { return p.Stats("web").Held == 1 })
	cl.c.Close()
	waitFor(t, "the held request to end", func() bool { return p.Stats("web").Held == 0 })

	// A held request whose client stays gets its answer on release.
	cl = dial(t, addr)
	cl.send("GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
	waitFor(t, "the request to be held", func() bool { return p.Stats("web").Held == 1 })
	p.Release("web")
	if _, body := cl.get("GET"); body != "released" {
		t.Errorf("got %q", body)
	}
}

// TestProxyHeldBodyClientGone: a held request whose body is still unread
// (in the server's buffer, in the socket, or not sent yet because the
// client waits for 100 Continue) ends when its client leaves, and is never
// sent to the app on release; one whose client stays gets its body through.
func TestProxyHeldBodyClientGone(t *testing.T) {
	var mu sync.Mutex
	var saw []string
	p, addr := startProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		saw = append(saw, r.URL.Path+" "+string(b))
		mu.Unlock()
		io.WriteString(w, "got "+string(b))
	}))
	p.Hold("web")
	for _, tt := range []struct{ name, req string }{
		{"body sent", "POST /sent HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"},
		{"body partly sent", "POST /partly HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel"},
		{"100-continue", "POST /continue HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"},
		{"chunked", "POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	} {
		cl := dial(t, addr)
		cl.send(tt.req)
		waitFor(t, tt.name+": the request to be held", func() bool { return p.Stats("web").Held == 1 })
		cl.c.Close()
		waitFor(t, tt.name+": the held request to end", func() bool { return p.Stats("web").Held == 0 })
	}

	// A held POST whose client stays is answered on release, body whole,
	// with the rest of its body arriving while it is held.
	cl := dial(t, addr)
	cl.send("POST /stays HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel")
	waitFor(t, "the request to be held", func() bool { return p.Stats("web").Held == 1 })
	cl.send("lo")
	time.Sleep(50 * time.Millisecond)
	if p.Stats("web").Held != 1 {
		t.Fatal("more of the body ended the held request")
	}
	p.Release("web")
	if _, body := cl.get("POST"); body != "got hello" {
		t.Errorf("got %q", body)
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(saw) != 1 || saw[0] != "/stays hello" {
		t.Errorf("the app saw %q, want only the request whose client stayed", saw)
	}
}

// TestProxySlowAppClientGone: the proxy watches the client with
// context.AfterFunc once its app is slow to answer; the client leaving
// then aborts the request to the app.
func TestProxySlowAppClientGone(t *testing.T) {
	appSaw := make(chan error, 1)
	_, addr := startProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			appSaw <- r.Context().Err()
		case <-time.After(10 * time.Second):
			appSaw <- nil
		}
	}))
	cl := dial(t, addr)
	cl.send("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	time.Sleep(300 * time.Millisecond) // past the proxy's watch delay
	cl.c.Close()
	select {
	case err := <-appSaw:
		if err == nil {
			t.Error("the app's request was not cancelled")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("timed out")
	}
}

// startRawApp answers each request on a unix socket with responses[path],
// bytes as they are, so that a test controls every header line.
func startRawApp(t testing.TB, responses map[string]string) proxy.Target {
	t.Helper()
	ln, target := listenApp(t)
	go testapp.ServeRaw(ln, func(r *http.Request) (string, bool) { return responses[r.URL.Path], false })
	return target
}

// TestProxyResponseFields: an app's response head reaches the client
// through WriteHeaderFields (no header map) as it would through the map:
// end-to-end fields in order, hop-by-hop ones dropped, one Date, the
// framing redone, and the fields a wrapping handler set written too.
func TestProxyResponseFields(t *testing.T) {
	p := proxy.New(proxy.Options{Logger: testLogger(t)})
	p.SetApp("web", proxy.AppOptions{})
	if err := p.SetRoutes([]proxy.Route{{Host: "*", App: "web"}}); err != nil {
		t.Fatal(err)
	}
	p.Serve("web", "v1", []proxy.Target{startRawApp(t, map[string]string{
		"/date":    "HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok",
		"/nodate":  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/hop":     "HTTP/1.1 200 OK\r\nConnection: X-Private, keep-alive\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\ncontent-type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"/cr":      "HTTP/1.1 200 OK\r\nX-Odd: a\rb\r\nContent-Length: 2\r\n\r\nok",
		"/204":     "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-Kept: yes\r\n\r\n",
	})})
	// The wrapping handler sets a field of its own, and on /wrapped asks
	// for the connection to close, as the supervisor does when it hands
	// over.
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Wrapper", "1")
		if r.URL.Path == "/wrapped" {
			r.URL.Path = "/date"
			w.Header().Set("Connection", "close")
		}
		p.ServeHTTP(w, r)
	}), nil)

	cl := dial(t, addr)
	get := func(path string) (*http.Response, string) {
		t.Helper()
		cl.send("GET " + path + " HTTP/1.1\r\nHost: h\r\n\r\n")
		return cl.get("GET")
	}
	one := func(res *http.Response, k, want string) {
		t.Helper()
		if got := res.Header[k]; len(got) != 1 || want != "" && got[0] != want {
			t.Errorf("%s: %q, want one %q", k, got, want)
		}
	}

	res, body := get("/date")
	one(res, "Date", "Mon, 01 Jan 2024 00:00:00 GMT")
	one(res, "Content-Length", "2")
	one(res, "X-Wrapper", "1")
	if body != "ok" {
		t.Errorf("/date body %q", body)
	}

	res, _ = get("/nodate")
	one(res, "Date", "") // the server's

	res, _ = get("/hop")
	for _, k := range []string{"X-Private", "Keep-Alive", "Connection"} {
		if v, ok := res.Header[k]; ok {
			t.Errorf("hop-by-hop %s reached the client: %q", k, v)
		}
	}
	one(res, "X-Kept", "yes")
	one(res, "Content-Type", "text/plain")
	if got := res.Header["Set-Cookie"]; len(got) != 2 || got[0] != "a=1" || got[1] != "b=2" {
		t.Errorf("Set-Cookie %q, want [a=1 b=2]", got)
	}

	res, body = get("/chunked")
	if body != "abc" || len(res.TransferEncoding) != 1 || res.TransferEncoding[0] != "chunked" {
		t.Errorf("/chunked: %q, transfer encoding %q", body, res.TransferEncoding)
	}

	res, _ = get("/cr")
	one(res, "X-Odd", "a b")

	res, _ = get("/204")
	if res.StatusCode != 204 || res.Header["Content-Length"] != nil {
		t.Errorf("/204: %d, Content-Length %q", res.StatusCode, res.Header["Content-Length"])
	}
	one(res, "X-Kept", "yes")

	res, body = get("/wrapped")
	if !res.Close {
		t.Error("/wrapped: no Connection: close")
	}
	one(res, "X-Wrapper", "1")
	one(res, "Date", "Mon, 01 Jan 2024 00:00:00 GMT")
	if body != "ok" {
		t.Errorf("/wrapped body %q", body)
	}
	if !cl.closed() {
		t.Error("the connection stayed open after Connection: close")
	}

	// HTTP/1.0: a body of unknown length ends with the connection.
	cl = dial(t, addr)
	cl.send("GET /chunked HTTP/1.0\r\nHost: h\r\n\r\n")
	res, body = cl.get("GET")
	if body != "abc" || res.TransferEncoding != nil || !res.Close {
		t.Errorf("HTTP/1.0 /chunked: %q, transfer encoding %q, close %v", body, res.TransferEncoding, res.Close)
	}
}
