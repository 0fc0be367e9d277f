package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// seen is what an echo backend reports about the request it got.
type seen struct {
	Method     string
	Path       string
	RawQuery   string
	Host       string
	Header     http.Header
	Body       string
	RemoteAddr string
}

func echoBackend(t testing.TB) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "secret")
		w.Header().Set("Keep-Alive", "timeout=1")
		w.Header().Set("X-Resp", "kept")
		json.NewEncoder(w).Encode(seen{
			Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host,
			Header: r.Header, Body: string(body), RemoteAddr: r.RemoteAddr,
		})
	})
}

func TestForwardRequest(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, echoBackend(t))})

	req := mustRequest(t, http.MethodPut, f.url+"/items/7?x=1&y=2", strings.NewReader("the body"))
	req.Host = "shop.example.com:8080"
	req.Header.Set("X-Custom", "a")
	req.Header.Add("X-Multi", "1")
	req.Header.Add("X-Multi", "2")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "secret")
	req.Header.Set("Proxy-Authorization", "Basic secret")
	req.Header.Set("X-Forwarded-For", "6.6.6.6")       // forged: replaced
	req.Header.Set("X-Forwarded-Host", "evil.example") // forged: replaced
	req.Header.Set("Forwarded", "for=6.6.6.6")         // forged: dropped
	res, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("status %d, want 200", res.StatusCode)
	}
	var got seen
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}

	checks := []struct{ name, got, want string }{
		{"method", got.Method, "PUT"},
		{"path", got.Path, "/items/7"},
		{"query", got.RawQuery, "x=1&y=2"},
		{"host", got.Host, "shop.example.com:8080"},
		{"body", got.Body, "the body"},
		{"X-Custom", got.Header.Get("X-Custom"), "a"},
		{"X-Multi", strings.Join(got.Header.Values("X-Multi"), ","), "1,2"},
		{"X-Hop (named in Connection)", got.Header.Get("X-Hop"), ""},
		{"Connection", got.Header.Get("Connection"), ""},
		{"Proxy-Authorization", got.Header.Get("Proxy-Authorization"), ""},
		{"X-Forwarded-For", got.Header.Get("X-Forwarded-For"), "127.0.0.1"},
		{"X-Forwarded-Host", got.Header.Get("X-Forwarded-Host"), "shop.example.com:8080"},
		{"X-Forwarded-Proto", got.Header.Get("X-Forwarded-Proto"), "http"},
		{"Forwarded", got.Header.Get("Forwarded"), ""},
		{"response X-Resp", res.Header.Get("X-Resp"), "kept"},
		{"response X-Resp-Hop", res.Header.Get("X-Resp-Hop"), ""},
		{"response Keep-Alive", res.Header.Get("Keep-Alive"), ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
	if id := got.Header.Get("X-Request-Id"); !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) {
		t.Errorf("X-Request-Id = %q, want 16 hex digits", id)
	}
}

func TestRequestIDKeptAndUnique(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Request-Id"))
	}))})

	req := mustRequest(t, http.MethodGet, f.url+"/", nil)
	req.Header.Set("X-Request-Id", "from-the-client")
	if _, body := f.do(t, req); body != "from-the-client" {
		t.Errorf("X-Request-Id = %q, want the client's", body)
	}
	ids := map[string]bool{}
	for range 20 {
		_, id := f.get(t, "/")
		if ids[id] {
			t.Fatalf("X-Request-Id %q repeated", id)
		}
		ids[id] = true
	}
}

// An SSE event reaches the client while the app's handler is still running:
// the proxy flushes at once.
func TestSSEFlushesAtOnce(t *testing.T) {
	f := newFixture(t, AppOptions{})
	done := make(chan struct{})
	defer close(done)
	f.p.Serve("web", "v1", []Target{startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-done:
		case <-r.Context().Done():
		}
	}))})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := f.client.Do(mustRequest(t, http.MethodGet, f.url+"/events", nil).WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the first event while the handler runs: %v", err)
	}
	if line != "data: first\n" {
		t.Fatalf("got %q, want the first event", line)
	}
	if n := f.p.Stats("web").InFlight["v1"]; n != 1 {
		t.Errorf("in flight during the stream = %d, want 1", n)
	}
}

// The registry entry goes when the response is done, whatever its shape.
func TestInFlightReturnsToZero(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/big":
			w.Write(make([]byte, 1<<20))
		default:
			io.WriteString(w, "ok")
		}
	}))})
	for _, path := range []string{"/", "/empty", "/big"} {
		f.get(t, path)
		f.do(t, mustRequest(t, http.MethodHead, f.url+path, nil))
	}
	waitFor(t, "no request in flight", func() bool { return f.p.Stats("web").InFlight["v1"] == 0 })
}

func BenchmarkProxyServeHTTP(b *testing.B) {
	p := New(Options{})
	p.SetApp("web", AppOptions{})
	if err := p.SetRoutes([]Route{{Host: "*", App: "web"}}); err != nil {
		b.Fatal(err)
	}
	payload := strings.Repeat("x", 1024)
	p.Serve("web", "v1", []Target{startBackend(b, text(payload))})
	var errs atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodGet, "http://bench.example/", nil)
			w := httptest.NewRecorder()
			p.ServeHTTP(w, req)
			if w.Code != 200 || w.Body.Len() != len(payload) {
				errs.Add(1)
			}
		}
	})
	if n := errs.Load(); n > 0 {
		b.Fatalf("%d requests failed", n)
	}
}

// Serve and SetApp for an app that was removed and whose last
// version is being retired at that moment bring it back: the retirement's
// drop of the removed app never takes the app out from under them. (It
// could, between their lookup of the app and their change to it: the
// change was then lost and new requests got 503, unknown app.)
func TestServeRacingRetireOfRemovedApp(t *testing.T) {
	p := New(Options{Logger: testLogger(t)})
	targets := []Target{{Network: "unix", Addr: "/nonexistent/app.sock"}}
	for _, change := range []struct {
		name string
		f    func(app string)
		done func(b *backend) bool
	}{
		{"Serve", func(app string) { p.Serve(app, "v2", targets) }, func(b *backend) bool { return b.serving != nil && b.serving.name == "v2" }},
		{"SetApp", func(app string) { p.SetApp(app, AppOptions{MaxQueued: 7}) }, func(b *backend) bool { return b.opts.MaxQueued == 7 && !b.removed }},
	} {
		lost := 0
		for i := range 2000 {
			app := fmt.Sprintf("%s-%d", change.name, i)
			p.Serve(app, "v1", targets)
			p.RemoveApp(app)
			var wg sync.WaitGroup
			wg.Go(func() { p.Retire(context.Background(), app, "v1") })
			wg.Go(func() { change.f(app) })
			wg.Wait()
			b := p.app(app)
			if b == nil {
				lost++
				continue
			}
			b.mu.Lock()
			ok := change.done(b)
			b.mu.Unlock()
			if !ok {
				lost++
			}
		}
		if lost > 0 {
			t.Errorf("%s: lost in %d of 2000 races with the retirement of a removed app's last version", change.name, lost)
		}
	}
}
