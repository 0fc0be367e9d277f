package supervisor

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveUnix serves h on a fresh unix socket until cleanup and returns its
// endpoint.
func serveUnix(t *testing.T, h http.Handler) endpoint {
	t.Helper()
	path := socketDir(t) + "/h.sock"
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return endpoint{network: "unix", addr: path}
}

func TestCheckHealth(t *testing.T) {
	type seen struct {
		close bool
		ua    string
	}
	requests := make(chan seen, 10)
	ep := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests <- seen{r.Close, r.UserAgent()}
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte("ok"))
		case "/created":
			w.WriteHeader(http.StatusNoContent)
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		default:
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	}))
	tests := []struct {
		path    string
		wantErr string // "" for no error
	}{
		{"/ok", ""},
		{"/created", ""},
		{"/down", "GET /down answered 503 Service Unavailable"},
		{"/moved", "GET /moved answered 302 Found"}, // redirects are not followed
	}
	for _, tt := range tests {
		err := checkHealth(context.Background(), ep, tt.path, 0)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: got %v, want no error", tt.path, err)
		case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
			t.Errorf("%s: got %v, want %q", tt.path, err, tt.wantErr)
		}
		// A pooled health connection would count as a live connection to
		// the version and hold up its drain.
		if s := <-requests; !s.close || s.ua != "deployer-health" {
			t.Errorf("%s: request with Connection: close %v, User-Agent %q; want true, deployer-health", tt.path, s.close, s.ua)
		}
	}

	// Path "": connecting is enough, whatever the app would answer.
	if err := checkHealth(context.Background(), ep, "", 0); err != nil {
		t.Errorf(`path "": got %v, want no error`, err)
	}
	select {
	case s := <-requests:
		t.Errorf(`path "": got a request %+v, want only a connect`, s)
	default:
	}
}

func TestCheckHealthUnreachable(t *testing.T) {
	missing := endpoint{network: "unix", addr: socketDir(t) + "/missing.sock"}
	for _, path := range []string{"/healthz", ""} {
		if err := checkHealth(context.Background(), missing, path, 0); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("path %q, no socket: got %v, want ENOENT", path, err)
		}
	}

	// A socket that accepts (in the kernel's backlog) but never answers:
	// the check ends with its context instead of hanging.
	path := socketDir(t) + "/mute.sock"
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := checkHealth(ctx, endpoint{network: "unix", addr: path}, "/healthz", 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("mute app: got %v, want context.DeadlineExceeded", err)
	}
}

// waitReadyAsync runs waitReady on a goroutine.
func waitReadyAsync(ctx context.Context, p *process, ep endpoint, health string, settle time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() { done <- waitReady(ctx, p, ep, health, 0, settle) }()
	return done
}

// TestWaitReadySocketAppears starts the app before its socket exists:
// waitReady waits for the socket, then for a passing check.
func TestWaitReadySocketAppears(t *testing.T) {
	logs := newLogBuffer(100)
	p, ep := startApp(t, logs, map[string]string{appWaitUSR1Env: "1"})
	waitLine(t, logs, "waiting")
	if _, err := os.Lstat(ep.addr); err == nil {
		t.Fatal("socket exists before the app was told to bind")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := waitReadyAsync(ctx, p, ep, "/healthz", 0)
	if err := syscall.Kill(p.pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("waitReady: got %v, want nil", err)
	}
	waitLine(t, logs, "listening")
}

// TestWaitReadySettles checks that a healthy app is ready only after it has
// stayed healthy for settle.
func TestWaitReadySettles(t *testing.T) {
	p, ep := startApp(t, newLogBuffer(100), nil)
	const settle = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := waitReady(ctx, p, ep, "/healthz", 0, settle); err != nil {
		t.Fatalf("waitReady: got %v, want nil", err)
	}
	if took := time.Since(start); took < settle {
		t.Errorf("ready after %v, before settle %v passed", took, settle)
	}
}

// TestWaitReadyExited checks that waitReady gives up as soon as the process
// exits, long before its deadline, saying how it ended.
func TestWaitReadyExited(t *testing.T) {
	p := startShell(t, "echo failing; exit 3", newLogBuffer(100))
	ep := endpoint{network: "unix", addr: socketDir(t) + "/never.sock"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err := waitReady(ctx, p, ep, "/healthz", 0, 0)
	if !errors.Is(err, errExited) || !strings.Contains(err.Error(), "exited with status 3") {
		t.Errorf("got %v, want errExited saying exited with status 3", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %v to notice the exit", took)
	}
}

// TestWaitReadyDeadline checks that an app that never passes its check
// fails at the deadline, naming what the last check got.
func TestWaitReadyDeadline(t *testing.T) {
	logs := newLogBuffer(100)
	p, ep := startApp(t, logs, map[string]string{appHealthEnv: "503"})
	waitLine(t, logs, "listening") // the deadline is for checks, not for starting
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := waitReady(ctx, p, ep, "/healthz", 0, 0)
	if want := "last health check: GET /healthz answered 503 Service Unavailable"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	if errors.Is(err, errExited) || p.exited() {
		t.Errorf("got %v, exited %v: the app is still running", err, p.exited())
	}
}

// TestWaitReadyDeadlineDuringCheck checks that a check cut short by the
// deadline does not hide what the checks before it got.
func TestWaitReadyDeadlineDuringCheck(t *testing.T) {
	logs := newLogBuffer(100)
	p, ep := startApp(t, logs, map[string]string{appHealthEnv: "503", appHangCheckEnv: "2"})
	waitLine(t, logs, "listening")
	// Shorter than healthTimeout: the hanging check ends with the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := waitReady(ctx, p, ep, "/healthz", 0, 0)
	if want := "last health check: GET /healthz answered 503 Service Unavailable"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

// TestWaitReadyDeadlineWhileSettling checks the message when the deadline
// comes while a healthy app is still settling: no check failed, so there is
// no last health error to name.
func TestWaitReadyDeadlineWhileSettling(t *testing.T) {
	logs := newLogBuffer(100)
	p, ep := startApp(t, logs, nil)
	waitLine(t, logs, "listening")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := waitReady(ctx, p, ep, "/healthz", 0, time.Minute)
	if err == nil || !strings.HasPrefix(err.Error(), "healthy for ") || !strings.HasSuffix(err.Error(), ", less than settle (1m0s)") {
		t.Errorf("got %v, want it to say that settle did not pass", err)
	}
}

// TestWaitReadyCrashWhileSettling checks that an app that passes its first
// check and exits during settle is not ready.
func TestWaitReadyCrashWhileSettling(t *testing.T) {
	p, ep := startApp(t, newLogBuffer(100), map[string]string{appExitCheckEnv: "2"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := waitReady(ctx, p, ep, "/healthz", 0, 5*time.Second)
	if !errors.Is(err, errExited) || !strings.Contains(err.Error(), "exited with status 3") {
		t.Errorf("got %v, want errExited saying exited with status 3", err)
	}
}

// The caller's timeout bounds a check, not a fixed one: an app whose health
// endpoint takes 2.5s passes with health_timeout = "3s" and fails with 1s.
func TestCheckHealthTimeout(t *testing.T) {
	ep := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2500 * time.Millisecond):
		case <-r.Context().Done():
		}
	}))
	if err := checkHealth(context.Background(), ep, "/healthz", 3*time.Second); err != nil {
		t.Fatalf("with a 3s timeout: got %v, want nil", err)
	}
	if err := checkHealth(context.Background(), ep, "/healthz", time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("with a 1s timeout: got %v, want a deadline error", err)
	}
}
