package main

import (
	"context"
	"fmt"
	"io"
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

	type result struct {
		code    int
		version string
		err     error
	}
	done := make(chan result, 1)
	go func() {
		res, err := http.Get(e.url("/slow?d=3s"))
		if err != nil {
			done <- result{err: err}
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		done <- result{code: res.StatusCode, version: res.Header.Get("X-Version")}
	}()
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

// POSTs with bodies in flight during swaps are each delivered exactly once.
func TestPostDeliveredExactlyOnce(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()

	const clients, perClient = 8, 60
	var wg sync.WaitGroup
	out := newOutcomes()
	stopSwaps := make(chan struct{})
	swapsDone := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stopSwaps:
				swapsDone <- n
				return
			default:
			}
			e.mustCLI("swap", "web", []string{"v2", "v1"}[n%2])
			n++
		}
	}()
	body := strings.Repeat("x", 64<<10)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second}
			for i := 0; i < perClient; i++ {
				id := fmt.Sprintf("c%d-%d", c, i)
				res, err := client.Post(e.url("/echo?id="+id), "text/plain", strings.NewReader(body))
				if err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				class, detail := classify(res, err)
				out.add(class, id+": "+detail)
			}
		}()
	}
	wg.Wait()
	close(stopSwaps)
	swaps := <-swapsDone
	t.Logf("POSTs during %d swaps: %s", swaps, out)
	if out.failures() != 0 {
		t.Fatalf("failed POSTs: %s", out)
	}
	if swaps < 2 {
		t.Fatalf("only %d swaps happened during the POSTs", swaps)
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
	for c := 0; c < clients; c++ {
		for i := 0; i < perClient; i++ {
			if id := fmt.Sprintf("c%d-%d", c, i); seen[id] != 1 {
				t.Errorf("POST %s delivered %d times, want exactly once", id, seen[id])
			}
		}
	}
}
