package proxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testapp"
	"github.com/deployer/deployer/internal/testlog"
)

// sockDir returns a fresh directory for unix sockets. It is under /tmp, not
// t.TempDir(): a socket path must fit in sun_path's 108 bytes.
func sockDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "p")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// listenUnix listens on dir/name.
func listenUnix(t testing.TB, dir, name string) (net.Listener, Target) {
	t.Helper()
	path := filepath.Join(dir, name)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, Target{Network: "unix", Addr: path}
}

// serveOn serves h on ln until the test ends.
func serveOn(t testing.TB, ln net.Listener, h http.Handler) *http.Server {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return srv
}

// startBackend serves h on a fresh unix socket, as an app would.
func startBackend(t testing.TB, h http.Handler) Target {
	t.Helper()
	ln, target := listenUnix(t, sockDir(t), "app.sock")
	serveOn(t, ln, h)
	return target
}

// startCloser is an app that dies on every request: it reads one request,
// body included, counts it, and closes the connection without answering.
func startCloser(t testing.TB) (Target, *atomic.Int64) {
	t.Helper()
	ln, target := listenUnix(t, sockDir(t), "closer.sock")
	var seen atomic.Int64
	go testapp.ServeConns(ln, func(conn net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(conn))
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		seen.Add(1)
	})
	return target, &seen
}

// testLogger logs to t.Log until the test ends.
func testLogger(t testing.TB) *slog.Logger { return testlog.New(t) }

// fixture is a Proxy serving on a loopback TCP listener, with one app "web"
// routed for every host.
type fixture struct {
	p      *Proxy
	url    string // http://127.0.0.1:port
	addr   string
	client *http.Client
}

func newFixture(t testing.TB, o AppOptions) *fixture {
	t.Helper()
	return newFixtureWith(t, Options{}, o)
}

// newFixtureWith is newFixture with Options (its Logger is the test's).
func newFixtureWith(t testing.TB, po Options, o AppOptions) *fixture {
	t.Helper()
	if _, ok := t.(*testing.B); ok {
		po.Logger = slog.New(slog.DiscardHandler)
	} else {
		po.Logger = testLogger(t)
	}
	p := New(po)
	p.SetApp("web", o)
	if err := p.SetRoutes([]Route{{Host: "*", App: "web"}}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, ln, p)
	return &fixture{p: p, url: "http://" + ln.Addr().String(), addr: ln.Addr().String(), client: newClient(t)}
}

// newClient returns a keep-alive client of its own.
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// get sends a GET for path and returns the status and body.
func (f *fixture) get(t testing.TB, path string) (int, string) {
	t.Helper()
	return f.do(t, mustRequest(t, http.MethodGet, f.url+path, nil))
}

func (f *fixture) do(t testing.TB, req *http.Request) (int, string) {
	t.Helper()
	res, err := f.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return res.StatusCode, string(body)
}

func mustRequest(t testing.TB, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// result is what a background request ended with.
type result struct {
	status int
	header http.Header
	body   string
	err    error
}

// goGet sends a GET in the background.
func (f *fixture) goGet(ctx context.Context, path string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url+path, nil)
		if err != nil {
			ch <- result{err: err}
			return
		}
		res, err := f.client.Do(req)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		ch <- result{status: res.StatusCode, header: res.Header, body: string(body), err: err}
	}()
	return ch
}

// recv waits for a background result.
func recv(t testing.TB, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("timed out waiting for a response")
		return result{}
	}
}

// text is a handler answering body with 200.
func text(body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	})
}
