package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// testTimeout bounds every wait in these tests, so a bug fails a test rather
// than hanging it.
const testTimeout = 10 * time.Second

func newTestServer() *server {
	return &server{version: "v1", pid: "123", instance: "0"}
}

// shortTempDir returns a fresh directory whose path is short enough for a
// unix socket (sun_path holds 107 bytes; t.TempDir paths can exceed that).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "h")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// unixClient returns an HTTP client that sends every request, whatever its
// URL, to the unix socket at path.
func unixClient(t *testing.T, path string) *http.Client {
	t.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// serveUnix serves s on a real unix socket, the way deployer runs hello, and
// returns a client for it.
func serveUnix(t *testing.T, s *server) *http.Client {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "h.sock")
	ln, err := listen(config{socket: path})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: readHeaderTimeout}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		s.websockets.closeAll(websocket.StatusGoingAway, "test over")
	})
	return unixClient(t, path)
}

// get runs a request against s without a network.
func get(s *server, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.routes().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

func TestRoot(t *testing.T) {
	tests := []struct {
		greeting string
		want     string
	}{
		{"", "hello from v1 (pid 123, instance 0)\n"},
		{"hi there", "hi there\nhello from v1 (pid 123, instance 0)\n"},
	}
	for _, tt := range tests {
		s := newTestServer()
		s.greeting = tt.greeting
		rec := get(s, "/")
		if rec.Code != http.StatusOK {
			t.Errorf("greeting %q: status %d, want 200", tt.greeting, rec.Code)
		}
		if got := rec.Body.String(); got != tt.want {
			t.Errorf("greeting %q: body %q, want %q", tt.greeting, got, tt.want)
		}
	}
}

func TestEveryResponseIsIdentified(t *testing.T) {
	s := &server{version: "v3", pid: "77", instance: "2"}
	for _, target := range []string{"/", "/healthz", "/no-such-page", "/ws"} {
		rec := get(s, target)
		for header, want := range map[string]string{"X-Version": "v3", "X-Pid": "77", "X-Instance": "2"} {
			if got := rec.Header().Get(header); got != want {
				t.Errorf("GET %s (status %d): %s = %q, want %q", target, rec.Code, header, got, want)
			}
		}
	}
}

func TestHealthz(t *testing.T) {
	flagFile := filepath.Join(t.TempDir(), "sick")
	s := newTestServer()
	s.unhealthyFile = flagFile

	check := func(when string, wantStatus int, wantBody string) {
		t.Helper()
		rec := get(s, "/healthz")
		if rec.Code != wantStatus || rec.Body.String() != wantBody {
			t.Errorf("%s: got %d %q, want %d %q", when, rec.Code, rec.Body.String(), wantStatus, wantBody)
		}
	}
	check("no file", http.StatusOK, "ok")
	if err := os.WriteFile(flagFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	check("file exists", http.StatusServiceUnavailable, "unhealthy")
	if err := os.Remove(flagFile); err != nil {
		t.Fatal(err)
	}
	check("file removed", http.StatusOK, "ok")

	s.unhealthy = true
	check("-unhealthy", http.StatusServiceUnavailable, "unhealthy")
}

func TestSlow(t *testing.T) {
	s := newTestServer()
	if rec := get(s, "/slow?d=1ms"); rec.Code != http.StatusOK || rec.Body.String() != s.helloLine() {
		t.Errorf("d=1ms: got %d %q, want 200 %q", rec.Code, rec.Body.String(), s.helloLine())
	}
	for _, d := range []string{"soon", "-1s"} {
		if rec := get(s, "/slow?d="+d); rec.Code != http.StatusBadRequest {
			t.Errorf("d=%s: status %d, want 400", d, rec.Code)
		}
	}
}

// TestSlowCancel checks that a client leaving ends the handler at once
// instead of holding a goroutine (and a drain) for the full delay.
func TestSlowCancel(t *testing.T) {
	s := newTestServer()
	started := make(chan struct{})
	finished := make(chan struct{})
	h := s.routes()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		defer close(finished)
		h.ServeHTTP(w, r)
	}))
	defer ts.Close()

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/slow?d=5m", nil)
		resp, err := ts.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()

	timeout := time.After(testTimeout)
	select {
	case <-started:
	case <-timeout:
		t.Fatal("request never reached the handler")
	}
	cancel()
	select {
	case <-finished:
	case <-timeout:
		t.Fatal("handler still sleeping after the client left")
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("client: got %v, want context.Canceled", err)
	}
}

func TestSSE(t *testing.T) {
	s := newTestServer()
	rec := get(s, "/sse?n=3&interval=1ms")
	if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	if want := "data: v1 1\n\ndata: v1 2\n\ndata: v1 3\n\n"; rec.Body.String() != want {
		t.Errorf("body %q, want %q", rec.Body.String(), want)
	}
	for _, q := range []string{"n=x", "n=-1", "interval=x"} {
		if rec := get(s, "/sse?"+q); rec.Code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", q, rec.Code)
		}
	}
}

// TestSSEFlushesEachEvent reads the first event of a stream whose second
// event is an hour away: it arrives only if the handler flushed it.
func TestSSEFlushesEachEvent(t *testing.T) {
	client := serveUnix(t, newTestServer())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://hello/sse?n=2&interval=1h", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	br := bufio.NewReader(resp.Body)
	for _, want := range []string{"data: v1 1\n", "\n"} {
		got, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading first event: %v (not flushed?)", err)
		}
		if got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

func TestEcho(t *testing.T) {
	s := newTestServer()
	s.record = filepath.Join(t.TempDir(), "record")
	client := serveUnix(t, s)

	body := bytes.Repeat([]byte("deployer "), 100000)
	resp, err := client.Post("http://hello/echo?id=big", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("v1 %d %x\n", len(body), sha256.Sum256(body)); resp.StatusCode != http.StatusOK || string(got) != want {
		t.Errorf("got %d %q, want 200 %q", resp.StatusCode, got, want)
	}

	// GET without an id, and an id that would break the line format.
	for _, target := range []string{"/echo", "/echo?id=" + "a%20b%0Ac"} {
		resp, err := client.Get("http://hello" + target)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	record, err := os.ReadFile(s.record)
	if err != nil {
		t.Fatal(err)
	}
	if want := "POST big v1\nGET - v1\nGET a+b%0Ac v1\n"; string(record) != want {
		t.Errorf("record %q, want %q", record, want)
	}
}

// TestEchoRecordConcurrent checks the property tests of deployer rely on:
// with many requests at once, the record file holds exactly one whole line
// per request.
func TestEchoRecordConcurrent(t *testing.T) {
	s := newTestServer()
	s.record = filepath.Join(t.TempDir(), "record")
	client := serveUnix(t, s)

	const n = 32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp, err := client.Post(fmt.Sprintf("http://hello/echo?id=req-%d", i), "text/plain", strings.NewReader("x"))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()

	record, err := os.ReadFile(s.record)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(record), "\n"), "\n")
	sort.Strings(lines)
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("POST req-%d v1", i))
	}
	sort.Strings(want)
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("record lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestWebsocketEcho(t *testing.T) {
	client := serveUnix(t, newTestServer())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	c, resp, err := websocket.Dial(ctx, "ws://hello/ws", &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if got := resp.Header.Get("X-Version"); got != "v1" {
		t.Errorf("handshake X-Version %q, want v1", got)
	}

	typ, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if typ != websocket.MessageText || string(msg) != "version v1" {
		t.Fatalf("first message %v %q, want text %q", typ, msg, "version v1")
	}

	// Larger than coder/websocket's default 32 KiB read limit: the echo
	// must not cut it.
	c.SetReadLimit(-1)
	big := bytes.Repeat([]byte{0, 1, 2, 255}, 50000)
	messages := []struct {
		typ  websocket.MessageType
		data []byte
	}{
		{websocket.MessageText, []byte("hello")},
		{websocket.MessageBinary, big},
		{websocket.MessageText, []byte("")},
	}
	for _, m := range messages {
		if err := c.Write(ctx, m.typ, m.data); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if typ != m.typ || !bytes.Equal(got, m.data) {
			t.Errorf("echo of %v message (%d bytes): got %v message (%d bytes)", m.typ, len(m.data), typ, len(got))
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close: %v", err)
	}
}

// TestListenLeavesSocketFile checks that closing the listener does not unlink
// its path: after a swap that path names the next version's socket.
func TestListenLeavesSocketFile(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "h.sock")
	ln, err := listen(config{socket: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("socket file gone after Close: %v", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		t.Errorf("%s has mode %v, want a socket", path, fi.Mode())
	}

	// Binding again fails: hello never removes a stale socket itself.
	if ln, err := listen(config{socket: path}); err == nil {
		ln.Close()
		t.Error("listen on an existing socket file succeeded")
	}
}

func TestHeaders(t *testing.T) {
	s := newTestServer()
	req := httptest.NewRequest("GET", "http://example.com/headers", nil)
	req.Header.Add("X-Forwarded-For", "203.0.113.9")
	rec := httptest.NewRecorder()
	s.routes().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("GET /headers: %d", rec.Code)
	}
	var got map[string][]string
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("GET /headers: %v in %q", err, rec.Body.String())
	}
	if v := got["X-Forwarded-For"]; len(v) != 1 || v[0] != "203.0.113.9" {
		t.Errorf("X-Forwarded-For = %q, want [203.0.113.9]", v)
	}
	if v := got["Host"]; len(v) != 1 || v[0] != "example.com" {
		t.Errorf("Host = %q, want [example.com]", v)
	}
}
