package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/deployer/deployer/internal/testlog"
)

// Supervisor-only mode behind real HAProxy, run with the example's own
// config (examples/haproxy/haproxy.cfg): swaps under concurrent keep-alive
// GETs and POSTs fail no request and deliver every POST once; a websocket
// opened before a swap keeps working on its version; and since HAProxy
// opens a connection per request, each old version's drain ends with its
// last request, long before drain_timeout, even while the load goes on.
func TestHAProxySwapsUnderLoad(t *testing.T) {
	haproxy := requireBinary(t, "haproxy")
	e := supervisorOnlyEnv(t, "10s")
	startHAProxy(t, haproxy, filepath.Join(e.dir, "run", "web", "current.sock"), e.addr)
	swapTo := func(v string) {
		t.Helper()
		e.mustCLI("swap", "web", v)
		waitFor(t, "HAProxy to reach "+v, 5*time.Second, func() bool {
			_, _, h := tryGet(e.url("/"))
			return h.Get("X-Version") == v
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+e.addr+"/ws", nil)
	if err != nil {
		t.Fatalf("websocket through HAProxy: %v", err)
	}
	defer ws.CloseNow()
	if _, hello, err := ws.Read(ctx); err != nil || string(hello) != "version v1" {
		t.Fatalf("websocket greeted %q, %v; want version v1", hello, err)
	}

	gets := startLoad(t, e.url("/"), 12)
	posts := startPostLoad(t, e.url("/echo"), 4)
	const swaps = 10
	for i := 0; i < swaps; i++ {
		swapTo([]string{"v2", "v1"}[i%2])
		if i == 0 {
			// The websocket stays with v1, which drains.
			if err := ws.Write(ctx, websocket.MessageText, []byte("still here")); err != nil {
				t.Fatalf("websocket write after the swap: %v", err)
			}
			if _, got, err := ws.Read(ctx); err != nil || string(got) != "still here" {
				t.Fatalf("websocket echo after the swap: %q, %v", got, err)
			}
			ws.Close(websocket.StatusNormalClosure, "")
		}
		time.Sleep(300 * time.Millisecond)
	}
	waitNoDraining(t, e, "every old version to drain while the load runs", 5*time.Second)
	got := gets.finish()
	gotPosts := posts.finish()
	t.Logf("HAProxy in front, %d swaps: GET %s; POST %s", swaps, got, gotPosts.out)
	if got.failures() != 0 {
		t.Errorf("failed GETs through HAProxy: %s", got)
	}
	if gotPosts.out.failures() != 0 {
		t.Errorf("failed POSTs through HAProxy: %s", gotPosts.out)
	}
	if got.total() < 1000 {
		t.Errorf("only %d GETs made: the load did not run", got.total())
	}
	gotPosts.deliveredOnce(t, filepath.Join(e.dir, "record"))

	checkDrainsEnded(t, e, swaps)
}

// startHAProxy runs haproxy in the foreground with the example's config in
// front of socket, listening on addr, until the test ends (its output
// logged if the test failed).
func startHAProxy(t *testing.T, haproxy, socket, addr string) {
	t.Helper()
	cmd := exec.Command(haproxy, "-db", "-f", "../../examples/haproxy/haproxy.cfg")
	cmd.Env = append(os.Environ(), "SOCKET="+socket, "LISTEN="+addr)
	var out testlog.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// SIGUSR1: stop listening, finish what is in flight, exit.
		cmd.Process.Signal(syscall.SIGUSR1)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out.String())
		}
	})
	waitFor(t, "HAProxy to answer", 10*time.Second, func() bool {
		select {
		case <-exited:
			t.Fatalf("haproxy exited: %v\n%s", cmd.ProcessState, out.String())
		default:
		}
		code, _, _ := tryGet("http://" + addr + "/")
		return code == 200
	})
}
