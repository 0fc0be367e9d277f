package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A target whose socket does not exist yet (ENOENT): the request is held, not
// answered 502, and goes through once the app binds its socket.
func TestDialFailureHeldUntilSocketAppears(t *testing.T) {
	f := newFixture(t, AppOptions{})
	dir := sockDir(t)
	later := Target{Network: "unix", Addr: filepath.Join(dir, "later.sock")}
	f.p.Serve("web", "v1", []Target{later})

	ch := f.goGet(context.Background(), "/")
	waitFor(t, "the request to be held", func() bool { return f.p.Stats("web").Held == 1 })

	ln, _ := listenUnix(t, dir, "later.sock")
	serveOn(t, ln, text("finally"))
	r := recv(t, ch)
	if r.err != nil || r.status != 200 || r.body != "finally" {
		t.Fatalf("got %d %q %v, want 200 finally", r.status, r.body, r.err)
	}
	if held := f.p.Stats("web").Held; held != 0 {
		t.Errorf("held after serving = %d, want 0", held)
	}
}

// A stale socket file with nobody listening (ECONNREFUSED) on one instance:
// requests go to the other instance, none fails.
func TestDialFailurePrefersAnotherInstance(t *testing.T) {
	f := newFixture(t, AppOptions{})
	dir := sockDir(t)
	ln, stale := listenUnix(t, dir, "stale.sock")
	if ul, ok := ln.(interface{ SetUnlinkOnClose(bool) }); ok {
		ul.SetUnlinkOnClose(false)
	}
	ln.Close() // the file stays, nobody accepts: ECONNREFUSED

	f.p.Serve("web", "v1", []Target{stale, startBackend(t, text("ok"))})
	for i := range 10 {
		if status, body := f.get(t, "/"); status != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q, want 200 ok", i, status, body)
		}
	}
}

// The app dies after reading a request, before answering. Idempotent
// requests are sent again to another instance; others get 502, and the dead
// app saw them exactly once.
func TestReplayAfterAppDied(t *testing.T) {
	f := newFixture(t, AppOptions{QueueTimeout: 5 * time.Second})
	tests := []struct {
		method string
		header string // "Name: value"
		body   string
		status int
		good   int64 // requests the healthy instance got
	}{
		{"GET", "", "", 200, 1},
		{"HEAD", "", "", 200, 1},
		{"OPTIONS", "", "", 200, 1},
		{"GET", "", "a body on a GET", 200, 1},
		{"POST", "Idempotency-Key: k1", "payment", 200, 1},
		{"POST", "", "payment", 502, 0},
		{"PUT", "", "doc", 502, 0},
		{"DELETE", "", "", 502, 0},
		{"PATCH", "", "x", 502, 0},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%s %s", tt.method, tt.header), func(t *testing.T) {
			dead, deadSeen := startCloser(t)
			var good atomic.Int64
			var gotBody atomic.Value
			healthy := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				gotBody.Store(string(b))
				good.Add(1)
				io.WriteString(w, "ok")
			}))
			// A fresh version per case: round robin starts at instance 0,
			// the dead one.
			f.p.Serve("web", fmt.Sprintf("v%d", i), []Target{dead, healthy})

			req := mustRequest(t, tt.method, f.url+"/", strings.NewReader(tt.body))
			if tt.body == "" {
				req.Body = nil
			}
			if name, value, ok := strings.Cut(tt.header, ": "); ok {
				req.Header.Set(name, value)
			}
			status, _ := f.do(t, req)
			if status != tt.status {
				t.Errorf("status %d, want %d", status, tt.status)
			}
			if n := deadSeen.Load(); n != 1 {
				t.Errorf("the dead app saw the request %d times, want 1", n)
			}
			if n := good.Load(); n != tt.good {
				t.Errorf("the healthy app saw the request %d times, want %d", n, tt.good)
			}
			if tt.good > 0 && tt.body != "" {
				if b, _ := gotBody.Load().(string); b != tt.body {
					t.Errorf("replayed body = %q, want %q", b, tt.body)
				}
			}
		})
	}
}

// A POST to a version whose only instance dies on it: 502, seen once, never
// replayed.
func TestPostNotReplayed(t *testing.T) {
	f := newFixture(t, AppOptions{})
	dead, deadSeen := startCloser(t)
	f.p.Serve("web", "v1", []Target{dead})
	status, body := f.do(t, mustRequest(t, http.MethodPost, f.url+"/charge", strings.NewReader("42")))
	if status != http.StatusBadGateway {
		t.Errorf("status %d %q, want 502", status, body)
	}
	if body != "proxy: bad gateway\n" {
		t.Errorf("body %q leaks details", body)
	}
	if n := deadSeen.Load(); n != 1 {
		t.Errorf("the app saw the POST %d times, want exactly 1", n)
	}
}

// A GET whose every instance keeps dying is replayed a bounded number of
// times, then answered: it cannot take the app down forever.
func TestReplayBounded(t *testing.T) {
	f := newFixture(t, AppOptions{QueueTimeout: 10 * time.Second})
	dead, deadSeen := startCloser(t)
	f.p.Serve("web", "v1", []Target{dead})
	status, _ := f.get(t, "/")
	if status != http.StatusBadGateway {
		t.Errorf("status %d, want 502", status)
	}
	if n := deadSeen.Load(); n != 1+maxReplays {
		t.Errorf("the app saw the GET %d times, want %d", n, 1+maxReplays)
	}
}

func TestIsIdempotent(t *testing.T) {
	for _, tt := range []struct {
		method string
		header string
		want   bool
	}{
		{"GET", "", true},
		{"HEAD", "", true},
		{"OPTIONS", "", true},
		{"TRACE", "", true},
		{"", "", true},
		{"POST", "", false},
		{"PUT", "", false},
		{"DELETE", "", false},
		{"PATCH", "", false},
		{"POST", "Idempotency-Key", true},
		{"PATCH", "X-Idempotency-Key", true},
	} {
		r := &http.Request{Method: tt.method, Header: http.Header{}}
		if tt.header != "" {
			r.Header.Set(tt.header, "k")
		}
		if got := isIdempotent(r); got != tt.want {
			t.Errorf("isIdempotent(%s, %q) = %v, want %v", tt.method, tt.header, got, tt.want)
		}
	}
}
