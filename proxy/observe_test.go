package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// observed starts a fixture whose OnRequest hook sends a copy of every
// RequestInfo on the returned channel. The hook runs after the response is
// written, so a test waits for the info, not for the response.
func observed(t *testing.T, o AppOptions) (*fixture, <-chan RequestInfo) {
	t.Helper()
	infos := make(chan RequestInfo, 16)
	f := newFixtureWith(t, Options{OnRequest: func(info *RequestInfo) { infos <- *info }}, o)
	return f, infos
}

func nextInfo(t *testing.T, infos <-chan RequestInfo) RequestInfo {
	t.Helper()
	select {
	case info := <-infos:
		return info
	case <-time.After(10 * time.Second):
		t.Fatal("OnRequest not called")
		return RequestInfo{}
	}
}

func TestOnRequestServed(t *testing.T) {
	f, infos := observed(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, text("hello"))})

	before := time.Now()
	req := mustRequest(t, http.MethodGet, f.url+"/a/b?q=1", nil)
	req.Host = "shop.example"
	if status, body := f.do(t, req); status != 200 || body != "hello" {
		t.Fatalf("got %d %q", status, body)
	}
	info := nextInfo(t, infos)
	if info.App != "web" || info.Version != "v1" || info.Method != "GET" || info.Host != "shop.example" ||
		info.Path != "/a/b" || info.Status != 200 || info.Bytes != 5 || info.Held != 0 {
		t.Errorf("info %+v", info)
	}
	if !strings.HasPrefix(info.Remote, "127.0.0.1:") {
		t.Errorf("Remote %q", info.Remote)
	}
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(info.RequestID) {
		t.Errorf("RequestID %q, want the generated one", info.RequestID)
	}
	if info.Start.Before(before) || info.Duration <= 0 || info.Duration > time.Since(before) {
		t.Errorf("Start %v, Duration %v", info.Start, info.Duration)
	}

	req = mustRequest(t, http.MethodGet, f.url+"/", nil)
	req.Header.Set("X-Request-Id", "client-id")
	f.do(t, req)
	if info := nextInfo(t, infos); info.RequestID != "client-id" {
		t.Errorf("RequestID %q, want the client's", info.RequestID)
	}
}

// A request held by Hold until Release says how long it waited.
func TestOnRequestHeld(t *testing.T) {
	f, infos := observed(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, text("ok"))})
	f.p.Hold("web")
	ch := f.goGet(context.Background(), "/")
	waitFor(t, "the request to be held", func() bool { return f.p.Stats("web").Held == 1 })
	held := time.Now()
	// Held must measure something: wait until the clock has moved on.
	waitFor(t, "time to pass", func() bool { return time.Since(held) >= time.Millisecond })
	f.p.Release("web")
	if r := recv(t, ch); r.err != nil || r.status != 200 {
		t.Fatalf("got %d %v", r.status, r.err)
	}
	info := nextInfo(t, infos)
	if info.Status != 200 || info.Held < time.Millisecond || info.Held > info.Duration {
		t.Errorf("Status %d, Held %v, Duration %v", info.Status, info.Held, info.Duration)
	}
}

// The proxy's own answers are reported with their status: 404, 503 after
// the queue timeout, 413, 400 for PRI.
func TestOnRequestProxyAnswers(t *testing.T) {
	f, infos := observed(t, AppOptions{QueueTimeout: 50 * time.Millisecond, MaxBody: 10})
	f.p.Serve("web", "v1", []Target{startBackend(t, text("ok"))})

	f.p.Hold("web")
	if status, _ := f.get(t, "/"); status != 503 {
		t.Fatalf("held: %d, want 503", status)
	}
	info := nextInfo(t, infos)
	if info.Status != 503 || info.App != "web" || info.Held < 50*time.Millisecond || info.RequestID != "" {
		t.Errorf("queue timeout: %+v", info)
	}
	f.p.Release("web")

	if status, _ := f.do(t, mustRequest(t, http.MethodPost, f.url+"/up", strings.NewReader("eleven byte"))); status != 413 {
		t.Fatalf("POST of 11 bytes: %d, want 413", status)
	}
	if info := nextInfo(t, infos); info.Status != 413 || info.App != "web" || info.Method != "POST" || info.Bytes != 0 {
		t.Errorf("413: %+v", info)
	}

	if err := f.p.SetRoutes([]Route{{Host: "shop.example", App: "web"}}); err != nil {
		t.Fatal(err)
	}
	if status, _ := f.get(t, "/"); status != 404 {
		t.Fatalf("no route: %d, want 404", status)
	}
	if info := nextInfo(t, infos); info.Status != 404 || info.App != "" || info.Version != "" {
		t.Errorf("no route: %+v", info)
	}

	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	if res, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || res.StatusCode != 400 {
		t.Fatalf("PRI: %v %v, want 400", res, err)
	}
	if info := nextInfo(t, infos); info.Status != 400 || info.Method != "PRI" {
		t.Errorf("PRI: %+v", info)
	}
}

// An upgraded connection is reported as 101 when it ends.
func TestOnRequestUpgrade(t *testing.T) {
	f, infos := observed(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, rawEchoUpgrade(t))})
	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhi")
	br := bufio.NewReader(conn)
	if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != 101 {
		t.Fatalf("%v %v, want 101", res, err)
	}
	select {
	case info := <-infos:
		t.Fatalf("reported while the connection is open: %+v", info)
	default:
	}
	conn.(*net.TCPConn).CloseWrite()
	io.ReadAll(br)
	if info := nextInfo(t, infos); info.Status != 101 || info.Version != "v1" || info.Path != "/chat" {
		t.Errorf("upgrade: %+v", info)
	}
}
