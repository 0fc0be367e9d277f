package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// A 3-second request started before a swap completes with 200 from the old
// version.
func TestSlowRequestSurvivesSwap(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()

	done := getInBackground(e.url("/slow?d=3s"))
	waitFor(t, "the slow request to be in flight", 5*time.Second, func() bool {
		return e.appStatus("web").InFlight == 1
	})
	e.mustCLI("swap", "web", "v2")
	if code, _, h := e.get("/"); code != 200 || h.Get("X-Version") != "v2" {
		t.Fatalf("after swap: %d from %q, want 200 from v2", code, h.Get("X-Version"))
	}
	r := <-done
	if r.err != nil || r.code != 200 || r.version != "v1" {
		t.Fatalf("slow request: code %d version %q err %v; want 200 from v1", r.code, r.version, r.err)
	}
}

// A websocket opened before a swap keeps echoing through the old version
// until drain_timeout cuts it; one opened after goes to the new version.
func TestWebSocketAcrossSwap(t *testing.T) {
	e := newEnv(t)
	e.basicConfig(`drain_timeout = "3s"`)
	e.start()
	ctx := context.Background()

	dial := func() (*websocket.Conn, string) {
		t.Helper()
		c, _, err := websocket.Dial(ctx, "ws://"+e.addr+"/ws", nil)
		if err != nil {
			t.Fatalf("websocket dial: %v", err)
		}
		_, hello, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("websocket first message: %v", err)
		}
		return c, string(hello)
	}
	echo := func(c *websocket.Conn, msg string) error {
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			return err
		}
		_, got, err := c.Read(ctx)
		if err != nil {
			return err
		}
		if string(got) != msg {
			return fmt.Errorf("echo %q, want %q", got, msg)
		}
		return nil
	}

	old, hello := dial()
	defer old.CloseNow()
	if hello != "version v1" {
		t.Fatalf("first websocket greeted %q, want version v1", hello)
	}
	swapped := time.Now()
	e.mustCLI("swap", "web", "v2")

	fresh, hello := dial()
	defer fresh.CloseNow()
	if hello != "version v2" {
		t.Fatalf("websocket opened after the swap greeted %q, want version v2", hello)
	}
	// The old one keeps echoing through v1 until the drain deadline.
	for i := 0; time.Since(swapped) < 2*time.Second; i++ {
		if err := echo(old, fmt.Sprintf("m%d", i)); err != nil {
			t.Fatalf("old websocket after swap, %s in: %v", time.Since(swapped), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Then drain_timeout (3s) cuts it.
	cut := make(chan error, 1)
	go func() {
		for {
			if err := echo(old, "x"); err != nil {
				cut <- err
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	select {
	case <-cut:
		if d := time.Since(swapped); d < 2900*time.Millisecond {
			t.Fatalf("old websocket cut after %s, before drain_timeout", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("old websocket still open 10s after the swap: drain_timeout did not cut it")
	}
	if err := echo(fresh, "still here"); err != nil {
		t.Fatalf("new websocket: %v", err)
	}
}

// POSTs with bodies in flight during swaps are each delivered exactly once:
// never lost, never replayed.
func TestPostDeliveredExactlyOnce(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()

	const clients, swaps = 8, 8
	var wg sync.WaitGroup
	out := newOutcomes()
	stop := make(chan struct{})
	sent := make([]int, clients) // POSTs per client
	body := strings.Repeat("x", 64<<10)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("c%d-%d", c, i)
				res, err := client.Post(e.url("/echo?id="+id), "text/plain", strings.NewReader(body))
				if err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				class, detail := classify(res, err)
				out.add(class, id+": "+detail)
				sent[c] = i + 1
			}
		}()
	}
	for n := 0; n < swaps; n++ {
		e.mustCLI("swap", "web", []string{"v2", "v1"}[n%2])
	}
	close(stop)
	wg.Wait()
	t.Logf("POSTs during %d swaps: %s", swaps, out)
	if out.failures() != 0 {
		t.Fatalf("failed POSTs: %s", out)
	}
	rec, err := os.ReadFile(filepath.Join(e.dir, "record"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(rec)), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "POST" {
			seen[f[1]]++
		}
	}
	total := 0
	for c := 0; c < clients; c++ {
		for i := 0; i < sent[c]; i++ {
			total++
			if id := fmt.Sprintf("c%d-%d", c, i); seen[id] != 1 {
				t.Errorf("POST %s delivered %d times, want exactly once", id, seen[id])
			}
		}
	}
	if total < 200 {
		t.Fatalf("only %d POSTs made", total)
	}
}

// Bytes a client sends right behind its upgrade request, in the same write,
// reach the app (Go's ReverseProxy loses them unless the proxy drains the
// hijacked buffer — PITFALLS, Go issue 80875).
func TestBytesAfterUpgradeRequest(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()

	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	// One write: the request and a masked text frame "early bird".
	if _, err := c.Write(append([]byte(req), maskedTextFrame("early bird")...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %s", res.Status)
	}
	if got := readTextFrame(t, br); got != "version v1" {
		t.Fatalf("first frame %q, want the greeting", got)
	}
	if got := readTextFrame(t, br); got != "early bird" {
		t.Fatalf("echo %q, want the bytes sent with the upgrade request", got)
	}
}

// maskedTextFrame encodes a short client→server websocket text frame.
func maskedTextFrame(s string) []byte {
	mask := []byte{1, 2, 3, 4}
	f := []byte{0x81, 0x80 | byte(len(s))}
	f = append(f, mask...)
	for i := 0; i < len(s); i++ {
		f = append(f, s[i]^mask[i%4])
	}
	return f
}

// readTextFrame reads one unmasked server→client text message of short
// frames (the first may be followed by continuation frames).
func readTextFrame(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			t.Fatalf("reading frame: %v", err)
		}
		op, fin, n := h[0]&0x0f, h[0]&0x80 != 0, h[1]
		if (op != 1 && op != 0) || n&0x80 != 0 || n > 125 {
			t.Fatalf("unexpected frame header % x", h)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			t.Fatalf("reading frame: %v", err)
		}
		msg = append(msg, b...)
		if fin {
			return string(msg)
		}
	}
}
