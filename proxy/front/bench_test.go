package front

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/deployer/deployer/internal/testapp"
	"github.com/deployer/deployer/proxy"
)

// BenchmarkKeepAliveGET is one keep-alive GET through the server to a
// handler writing a small body, against net/http's server with the same
// handler. The client reads responses without allocating, so allocs/op
// are the server's.
func BenchmarkKeepAliveGET(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "12")
		io.WriteString(w, "{\"ok\":true}\n")
	})
	const req = "GET /api/items?page=2 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
	b.Run("front", func(b *testing.B) { benchGET(b, serveFront(b, h), req) })
	b.Run("net-http", func(b *testing.B) { benchGET(b, serveNetHTTP(b, h), req) })
}

// BenchmarkProxyGET is a keep-alive GET through the server and a
// proxy.Proxy to an app on a unix socket that answers at once, against
// the same proxy behind net/http's server.
func BenchmarkProxyGET(b *testing.B) {
	p := proxy.New(proxy.Options{Logger: slog.New(slog.DiscardHandler)})
	p.SetApp("web", proxy.AppOptions{})
	if err := p.SetRoutes([]proxy.Route{{Host: "*", App: "web"}}); err != nil {
		b.Fatal(err)
	}
	p.Serve("web", "v1", []proxy.Target{startFastApp(b)})
	const req = "GET /api/items?page=2 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
	b.Run("front", func(b *testing.B) { benchGET(b, serveFront(b, p), req) })
	b.Run("net-http", func(b *testing.B) { benchGET(b, serveNetHTTP(b, p), req) })
}

func serveFront(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Handler: h, Logger: slog.New(slog.DiscardHandler)}
	go s.Serve(ln)
	b.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

func serveNetHTTP(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &http.Server{Handler: h}
	go s.Serve(ln)
	b.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

// benchGET runs keep-alive clients in parallel, one connection each.
func benchGET(b *testing.B, addr, req string) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 8192)
		for pb.Next() {
			if _, err := io.WriteString(c, req); err != nil {
				b.Error(err)
				return
			}
			if err := readRawResponse(br); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// readRawResponse reads a 200 response with a Content-Length, without
// allocating.
func readRawResponse(br *bufio.Reader) error {
	length := -1
	first := true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if first {
			if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
				return io.ErrUnexpectedEOF
			}
			first = false
			continue
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if length < 0 {
		return io.ErrUnexpectedEOF
	}
	_, err := br.Discard(length)
	return err
}

// startFastApp is an app answering every request with the same small
// response, raw, so that the benchmark measures the proxy and its server.
func startFastApp(b *testing.B) proxy.Target {
	dir, err := os.MkdirTemp("", "front")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "fast.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go testapp.ServeFixed(ln)
	return proxy.Target{Network: "unix", Addr: path}
}
