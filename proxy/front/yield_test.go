package front

import (
	"io"
	"net/http"
	"runtime"
	"testing"

	"github.com/deployer/deployer/internal/testsock"
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
		go func() {
			n, err := testsock.Unread(cl.c)
			if err != nil {
				t.Error(err)
			}
			seen <- n
		}()
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
