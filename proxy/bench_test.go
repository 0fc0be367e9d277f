package proxy

import (
	"net/http"
	"testing"

	"github.com/deployer/deployer/internal/testapp"
)

// startFastApp is an app that answers every request with the same small
// response, reading requests with a bufio.Reader and writing raw bytes: it
// costs so little that a benchmark through it measures the proxy.
func startFastApp(t testing.TB) Target {
	t.Helper()
	ln, target := listenUnix(t, sockDir(t), "fast.sock")
	go testapp.ServeFixed(ln)
	return target
}

// discardWriter is a ResponseWriter that keeps only the status and the
// number of body bytes.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += len(p)
	return len(p), nil
}
func (w *discardWriter) Flush() {}

// BenchmarkProxyHandler is the proxy's own cost per request: ServeHTTP
// with the request and ResponseWriter made once, to an app that costs
// almost nothing. Its allocations are the proxy's.
func BenchmarkProxyHandler(b *testing.B) {
	p := New(Options{})
	p.SetApp("web", AppOptions{})
	if err := p.SetRoutes([]Route{{Host: "*", App: "web"}}); err != nil {
		b.Fatal(err)
	}
	p.Serve("web", "v1", []Target{startFastApp(b)})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r, err := http.NewRequest(http.MethodGet, "http://app.example.com/api/items?page=2", nil)
		if err != nil {
			b.Error(err)
			return
		}
		r.RemoteAddr = "192.0.2.1:4711"
		r.Header.Set("User-Agent", "bench")
		r.Header.Set("Accept", "*/*")
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			w.status, w.n = 0, 0
			p.ServeHTTP(w, r)
			if w.status != http.StatusOK || w.n != 12 {
				b.Errorf("status %d, %d bytes", w.status, w.n)
				return
			}
		}
	})
}
