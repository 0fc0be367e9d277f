package front

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testlog"
)

// startServer serves h with a Server on a loopback TCP listener until the
// test ends. set, if not nil, adjusts the server before it serves.
func startServer(t testing.TB, h http.Handler, set func(*Server)) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h, Logger: testLogger(t)}
	if set != nil {
		set(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, ln.Addr().String()
}

// client is a raw connection to a server under test.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (cl *client) send(s string) {
	cl.t.Helper()
	if _, err := io.WriteString(cl.c, s); err != nil {
		cl.t.Fatalf("writing request: %v", err)
	}
}

// response reads one response to a request with method.
func (cl *client) response(method string) *http.Response {
	cl.t.Helper()
	res, err := http.ReadResponse(cl.br, &http.Request{Method: method})
	if err != nil {
		cl.t.Fatalf("reading response: %v", err)
	}
	return res
}

// get reads one whole response: its status, headers and body.
func (cl *client) get(method string) (*http.Response, string) {
	cl.t.Helper()
	res := cl.response(method)
	b, err := io.ReadAll(res.Body)
	if err != nil {
		cl.t.Fatalf("reading body: %v", err)
	}
	return res, string(b)
}

// closed reports whether the server closes the connection within 3 s,
// with nothing more to read.
func (cl *client) closed() bool {
	cl.t.Helper()
	cl.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	defer cl.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := cl.br.ReadByte()
	if err == nil {
		cl.t.Errorf("read %q after the response, want the connection closed", b)
		return false
	}
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout()
}

// testLogger logs to t.Log until the test ends.
func testLogger(t testing.TB) *slog.Logger { return testlog.New(t) }

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func text(body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	})
}
