// Command backend is the app every proxy in the benchmark forwards to: a
// plain net/http server on the unix socket $DEPLOYER_SOCKET (or -socket)
// that answers every request with the same small body. It is the same
// program for the direct run, deployer, nginx and HAProxy, so the only
// thing that differs between their figures is the proxy.
//
// It does what README "What your app must do" asks: answers GET /healthz,
// keeps its keep-alive idle timeout above the proxy's 30s, leaves its
// socket path to the supervisor (SetUnlinkOnClose(false)) and shuts down
// gracefully on SIGTERM.
//
// With -events DIR it records, for the swap-latency measurement, when it
// answered its first health check and when it got its first other request:
// one line each, "healthy <unix ns>" and "first <unix ns>", in
// DIR/<version>-<pid>.
//
// With -trace FILE it writes an execution trace of a window of its run
// (bench/tracestat): what the app's goroutines waited for, behind a proxy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/deployer/deployer/bench/internal/tracewin"
)

// body is what every request gets: small and fixed, like a tiny JSON API
// answer.
var body = []byte(`{"ok":true,"app":"bench","msg":"hello from the benchmark backend"}` + "\n")

func main() {
	socket := flag.String("socket", os.Getenv("DEPLOYER_SOCKET"), "unix socket to listen on")
	addr := flag.String("addr", "", "also listen on this TCP address (the benchmark's direct run: wrk speaks TCP only)")
	events := flag.String("events", "", "directory to record the first health check and first request in")
	traceFile := flag.String("trace", "", "write an execution trace of a window of the run here (bench/tracestat reads it)")
	traceAfter := flag.Duration("trace-after", 3*time.Second, "with -trace: start the window this long after the start")
	traceFor := flag.Duration("trace-for", 2*time.Second, "with -trace: the window's length")
	flag.Parse()
	tracewin.Start("backend", *traceFile, *traceAfter, *traceFor)
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "backend: no -socket and no $DEPLOYER_SOCKET")
		os.Exit(2)
	}
	if err := run(*socket, *addr, *events); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

func run(socket, addr, events string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	ln, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	// Only the supervisor unlinks socket paths (PITFALLS).
	ln.(*net.UnixListener).SetUnlinkOnClose(false)

	version := os.Getenv("DEPLOYER_VERSION")
	rec := newRecorder(events, version)
	contentLength := strconv.Itoa(len(body))
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{"application/json"}
			h["Content-Length"] = []string{contentLength}
			if version != "" {
				h["X-Version"] = []string{version}
			}
			w.Write(body)
			if rec != nil {
				rec.saw(r.URL.Path == "/healthz")
			}
		}),
		ReadHeaderTimeout: 10 * time.Second,
		// Above the proxies' idle timeouts toward apps (deployer: 30s).
		IdleTimeout: 120 * time.Second,
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	if addr != "" {
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		go func() { errc <- srv.Serve(tl) }()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// recorder writes the time of the first health check answered and of the
// first other request, once each.
type recorder struct {
	path            string
	healthy, served sync.Once
}

func newRecorder(dir, version string) *recorder {
	if dir == "" {
		return nil
	}
	return &recorder{path: filepath.Join(dir, fmt.Sprintf("%s-%d", version, os.Getpid()))}
}

func (r *recorder) saw(health bool) {
	now := time.Now().UnixNano()
	once, what := &r.served, "first"
	if health {
		once, what = &r.healthy, "healthy"
	}
	once.Do(func() {
		f, err := os.OpenFile(r.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return
		}
		fmt.Fprintf(f, "%s %d\n", what, now)
		f.Close()
	})
}
