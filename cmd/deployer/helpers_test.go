package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer/deployer/sockets"
	"github.com/deployer/deployer/supervisor"
)

// stateDir returns a fresh directory short enough for unix socket paths
// (sun_path holds 107 bytes; t.TempDir's names can be longer).
func stateDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "c")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// writeConfig writes a deploy.toml into a fresh state dir, defining apps
// (each `command = ["true"]`, version v1, on its own host so that they do
// not conflict), and returns the dir and the config's path.
func writeConfig(t *testing.T, apps ...string) (dir, path string) {
	t.Helper()
	dir = stateDir(t)
	var b strings.Builder
	fmt.Fprintf(&b, "[deployer]\nstate_dir = %q\n", dir)
	for _, app := range apps {
		fmt.Fprintf(&b, "[apps.%s]\ncommand = [\"true\"]\nversion = \"v1\"\nhosts = [\"%[1]s.test\"]\n", app)
	}
	path = filepath.Join(dir, "deploy.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

type outcome struct {
	code           int
	stdout, stderr string
}

// run runs the command line args with $DEPLOYER_CONFIG unset.
func run(t *testing.T, args ...string) outcome {
	t.Helper()
	return runCtx(t, context.Background(), nil, args...)
}

// runCtx runs the command line args in ctx, with env as the whole
// environment.
func runCtx(t *testing.T, ctx context.Context, env map[string]string, args ...string) outcome {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := &CLI{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }}
	code := c.Run(ctx, args)
	t.Logf("deployer %s → %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return outcome{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// fakeDaemon is a control server on a real unix socket, the one deploy.toml
// points the CLI at, answering with canned JSON and NDJSON. It records
// every request it gets.
type fakeDaemon struct {
	socket string
	srv    *http.Server
	mux    *http.ServeMux

	mu   sync.Mutex
	reqs []request
}

type request struct {
	Method, Path string
	Query        url.Values
	Body         string
}

func newFakeDaemon(t *testing.T, dir string) *fakeDaemon {
	t.Helper()
	f := &fakeDaemon{
		socket: sockets.Layout{StateDir: dir}.ControlSocket(),
		mux:    http.NewServeMux(),
	}
	ln, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = &http.Server{Handler: http.HandlerFunc(f.serveHTTP)}
	go f.srv.Serve(ln)
	t.Cleanup(func() { f.srv.Close() })
	return f
}

func (f *fakeDaemon) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Body: string(body)})
	f.mu.Unlock()
	f.mux.ServeHTTP(w, r)
}

func (f *fakeDaemon) handle(pattern string, h http.HandlerFunc) { f.mux.HandleFunc(pattern, h) }

func (f *fakeDaemon) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

// only returns the one request the daemon got, failing the test if it got
// another number.
func (f *fakeDaemon) only(t *testing.T) request {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) != 1 {
		t.Fatalf("daemon got %d requests, want 1: %+v", len(f.reqs), f.reqs)
	}
	return f.reqs[0]
}

// answer replies with v as JSON and the given status.
func answer(status int, v any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
}

// stream replies with events as NDJSON, flushing after each line as the
// daemon does.
func stream(events ...supervisor.Event) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for _, ev := range events {
			enc.Encode(ev)
			w.(http.Flusher).Flush()
		}
	}
}

// at is a fixed local time of day for progress events.
func at(h, m, s int) time.Time { return time.Date(2026, 3, 4, h, m, s, 0, time.Local) }

func progress(t time.Time, msg string) supervisor.Event {
	return supervisor.Event{Type: "progress", Time: t, Message: msg}
}

func resultEvent(r supervisor.Result) supervisor.Event {
	return supervisor.Event{Type: "result", Time: at(12, 0, 9), Result: &r}
}

// wantCode fails the test unless got exited with code.
func wantCode(t *testing.T, got outcome, code int) {
	t.Helper()
	if got.code != code {
		t.Fatalf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", got.code, code, got.stdout, got.stderr)
	}
}
