package front

import (
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"syscall"
	"testing"
)

// TestFinishYields: on one thread, a goroutine that is ready to run when
// the handler returns runs before the response's buffered bytes are
// written (see rawio.Yield).
func TestFinishYields(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var cl *client
	seen := make(chan int, 1)
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
		// Ready, not running, when the handler returns: the only
		// thread is this one's.
		go func() { seen <- pending(t, cl.c) }()
	}), nil)
	cl = dial(t, addr)
	cl.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if res, body := cl.get("GET"); res.StatusCode != 200 || body != "ok" {
		t.Fatalf("got %d %q, want 200 ok", res.StatusCode, body)
	}
	if n := <-seen; n != 0 {
		t.Errorf("the goroutine ready when the handler returned found %d bytes of the response already written, want 0: finish did not yield first", n)
	}
}

// pending is how many bytes wait unread on nc's socket, without reading
// them.
func pending(t testing.TB, nc net.Conn) int {
	rc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Error(err)
		return -1
	}
	var n int
	var rerr error
	buf := make([]byte, 4096)
	if err := rc.Control(func(fd uintptr) {
		n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); err != nil {
		t.Error(err)
		return -1
	}
	if errors.Is(rerr, syscall.EAGAIN) {
		return 0
	}
	if rerr != nil {
		t.Error(rerr)
		return -1
	}
	return n
}
