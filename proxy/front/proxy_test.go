package front

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/proxy"
)

// startApp serves h on a unix socket, as an app would, until the test
// ends. The directory is under /tmp: sun_path holds 108 bytes.
func startApp(t testing.TB, h http.Handler) proxy.Target {
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
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return proxy.Target{Network: "unix", Addr: path}
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
