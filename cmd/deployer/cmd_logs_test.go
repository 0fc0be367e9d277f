package main

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestLogs(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("GET /v1/apps/web/logs", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "v1/0 GET / 200\nv1/0 GET /healthz 200\n")
	})

	got := run(t, "logs", "-n", "2", "-c", cfg)
	wantCode(t, got, exitOK)
	if want := "v1/0 GET / 200\nv1/0 GET /healthz 200\n"; got.stdout != want {
		t.Errorf("stdout = %q, want %q", got.stdout, want)
	}
	r := d.only(t)
	if n := r.Query["n"]; !slices.Equal(n, []string{"2"}) {
		t.Errorf("n = %q, want 2", n)
	}
	if _, ok := r.Query["follow"]; ok {
		t.Errorf("follow sent without -f: %v", r.Query)
	}
}

// TestLogsFollow checks that -f asks the daemon to follow, prints lines as
// they come, and ends with status 0 when interrupted.
func TestLogsFollow(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("GET /v1/apps/web/logs", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "v1/0 first\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // follow until the client goes
	})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &lineWriter{first: make(chan string, 1)}
	done := make(chan int)
	go func() {
		c := &CLI{Stdout: out, Stderr: io.Discard, Getenv: func(string) string { return "" }}
		done <- c.Run(ctx, []string{"logs", "web", "-f", "-c", cfg})
	}()
	if line := <-out.first; line != "v1/0 first\n" {
		t.Errorf("first output = %q", line)
	}
	cancel() // what Ctrl-C does
	if code := <-done; code != exitOK {
		t.Errorf("exit status %d, want 0", code)
	}
	r := d.only(t)
	if r.Query.Get("follow") != "1" || r.Query.Get("n") != "200" {
		t.Errorf("query = %v, want follow=1 n=200", r.Query)
	}
}

// lineWriter hands its first write to first.
type lineWriter struct {
	mu    sync.Mutex
	b     strings.Builder
	first chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() == 0 {
		w.first <- string(p)
	}
	return w.b.Write(p)
}
