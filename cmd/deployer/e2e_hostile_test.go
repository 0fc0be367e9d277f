package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The public side's limits as deploy.toml sets them, through the real
// daemon: proxy/front and proxy test each rule in depth; these prove the
// keys reach them.

// hostileConfig is one app "web" with short public-side limits; the proxy
// trusts X-Forwarded-* from 127.0.0.2 only.
func (e *env) hostileConfig() {
	e.release("v1")
	e.writeConfig(`[deployer]
listen = "%ADDR%"
state_dir = "run"
queue_timeout = "10s"
drain_timeout = "5s"
read_header_timeout = "1s"
idle_timeout = "2s"
max_header_bytes = "4KiB"
max_body = "1KiB"
trusted_proxies = ["127.0.0.2"]

[apps.web]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
settle = "100ms"
ready_timeout = "10s"

[apps.upload]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
path = "/up"
strip_path = true
settle = "100ms"
ready_timeout = "10s"
max_body = "64KiB"
`)
}

// rawExchange sends raw on a fresh connection and returns the status of the
// first response. The server must close the connection after it, with
// nothing more: a second answer would mean bytes after the rejected request
// were read as another one (smuggling).
func rawExchange(t *testing.T, addr, raw string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", raw, err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	// Whatever follows the first answer: more answers (a smuggled request
	// got through) or the close.
	rest, err := io.ReadAll(br)
	if len(rest) > 0 {
		t.Errorf("after the answer to %q the server sent more: %q", raw, rest)
	}
	if err != nil {
		t.Errorf("after the answer to %q the connection stayed open: %v", raw, err)
	}
	return res.StatusCode
}

// headersFrom GETs /headers (the app's view of the request's headers) from
// the local address src, with extra request headers.
func headersFrom(t *testing.T, e *env, src string, extra map[string]string) map[string][]string {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", e.url("/headers"), nil)
	for k, v := range extra {
		req.Header.Set(k, v)
	}
	res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var h map[string][]string
	if err := json.NewDecoder(res.Body).Decode(&h); err != nil {
		t.Fatalf("GET /headers: %d: %v", res.StatusCode, err)
	}
	return h
}

// TestHostileClients: a slowloris client is cut at read_header_timeout
// while 8 keep-alive clients get nothing but 200s; bodies over max_body get
// 413 (per app); heads over max_header_bytes 431; smuggling attempts 400
// with the connection closed and the smuggled request never answered;
// X-Forwarded-For believed only from trusted_proxies; h2c ignored.
func TestHostileClients(t *testing.T) {
	e := newEnv(t)
	e.hostileConfig()
	e.start("web", "upload")
	l := startLoad(t, e.url("/"), 8)

	// Slowloris: one byte of the head every 300 ms.
	slow := make(chan time.Duration, 1)
	go func() {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			slow <- -1
			return
		}
		defer c.Close()
		start := time.Now()
		head := "GET / HTTP/1.1\r\nHost: example.com\r\nX-Slow: " + strings.Repeat("a", 100) + "\r\n\r\n"
		for i := 0; i < len(head); i++ {
			if _, err := c.Write([]byte{head[i]}); err != nil {
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c) // until the server closes
		slow <- time.Since(start)
	}()

	// Bodies: web allows 1 KiB ([deployer] max_body), upload 64 KiB.
	post := func(path string, n int) int {
		res, err := http.Post(e.url(path), "application/octet-stream", strings.NewReader(strings.Repeat("x", n)))
		if err != nil {
			t.Fatalf("POST %s (%d bytes): %v", path, n, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	for _, tc := range []struct {
		path string
		n    int
		want int
	}{
		{"/echo", 1024, 200},
		{"/echo", 1025, 413},
		{"/up/echo", 60 << 10, 200},
		{"/up/echo", 65<<10 + 1, 413},
	} {
		if got := post(tc.path, tc.n); got != tc.want {
			t.Errorf("POST %s with %d bytes: %d, want %d", tc.path, tc.n, got, tc.want)
		}
	}
	// A chunked body growing past the limit.
	chunked := "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"400\r\n" + strings.Repeat("y", 1024) + "\r\n10\r\n" + strings.Repeat("z", 16) + "\r\n0\r\n\r\n"
	if got := rawExchange(t, e.addr, chunked); got != 413 {
		t.Errorf("chunked body over max_body: %d, want 413", got)
	}

	// Heads and smuggling.
	smuggled := "GET /headers HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range []struct {
		name, raw string
		want      int
	}{
		{"head over max_header_bytes", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 5000) + "\r\n\r\n", 431},
		{"CL and TE", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, 400},
		{"two lengths", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd" + smuggled, 400},
		{"obfuscated TE", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + smuggled, 501},
		{"space before colon", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + smuggled, 400},
		{"bad chunk size", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" + smuggled, 400},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
	} {
		got := rawExchange(t, e.addr, tc.raw)
		if got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}

	// X-Forwarded-For: replaced from 127.0.0.1, extended from 127.0.0.2.
	forged := map[string]string{"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
	h := headersFrom(t, e, "127.0.0.1", forged)
	if got := strings.Join(h["X-Forwarded-For"], ","); got != "127.0.0.1" {
		t.Errorf("untrusted client: the app got X-Forwarded-For %q, want 127.0.0.1 alone", got)
	}
	if got := strings.Join(h["X-Forwarded-Proto"], ","); got != "http" {
		t.Errorf("untrusted client: X-Forwarded-Proto %q, want http", got)
	}
	h = headersFrom(t, e, "127.0.0.2", forged)
	if got := strings.Join(h["X-Forwarded-For"], ","); got != "203.0.113.9, 127.0.0.2" {
		t.Errorf("trusted proxy: the app got X-Forwarded-For %q, want %q", got, "203.0.113.9, 127.0.0.2")
	}
	if got := strings.Join(h["X-Forwarded-Host"], ","); got != "evil.example" {
		t.Errorf("trusted proxy: X-Forwarded-Host %q, want it kept", got)
	}

	// h2c: served as plain HTTP/1.1, the app never sees the upgrade.
	h = headersFrom(t, e, "127.0.0.1", map[string]string{"Upgrade": "h2c", "Connection": "Upgrade, HTTP2-Settings", "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"})
	for _, k := range []string{"Upgrade", "Http2-Settings", "Connection"} {
		if v, ok := h[k]; ok {
			t.Errorf("h2c upgrade: the app got %s: %q", k, v)
		}
	}

	var cut time.Duration
	select {
	case cut = <-slow:
	case <-time.After(20 * time.Second):
		t.Fatal("the slowloris client was never cut")
	}
	if cut < 0 || cut > 3*time.Second {
		t.Errorf("slowloris client cut after %v, want about read_header_timeout (1s)", cut)
	}
	got := l.finish()
	t.Logf("slowloris cut after %v; load meanwhile: %s", cut.Round(time.Millisecond), got)
	if got.failures() != 0 || got.total() == 0 {
		t.Errorf("normal clients beside the hostile ones: %s", got)
	}
}
