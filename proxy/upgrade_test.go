package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// rawEchoUpgrade is an app that switches to a protocol "echo" and echoes
// every byte, those its server read ahead included.
func rawEchoUpgrade(t testing.TB) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("backend hijack: %v", err)
			return
		}
		defer conn.Close()
		io.WriteString(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw.Reader)
	})
}

// Go issue 80875: bytes a client sends in the same write as its upgrade
// request sit in the proxy server's read buffer. They must reach the app.
func TestUpgradeBytesAfterRequest(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, rawEchoUpgrade(t))})

	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	const req = "GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
	if _, err := io.WriteString(conn, req+"HELLO"); err != nil { // one write
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	expect := func(want string) {
		t.Helper()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("reading the echo of %q: %v", want, err)
		}
		if string(got) != want {
			t.Fatalf("echo %q, want %q", got, want)
		}
	}
	expect("HELLO")
	io.WriteString(conn, "again")
	expect("again")

	s := f.p.Stats("web")
	if s.InFlight["v1"] != 1 || s.Upgraded["v1"] != 1 {
		t.Errorf("stats with one upgraded connection: %+v", s)
	}
	// Half-close from the client: the app sees EOF, ends, and everything
	// is closed and unregistered.
	conn.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadAll(br); err != nil {
		t.Errorf("after half-close: %v", err)
	}
	waitFor(t, "the upgraded connection to be unregistered", func() bool { return f.p.Stats("web").InFlight["v1"] == 0 })
}

// A websocket passes through, counts as in flight and upgraded, survives a
// swap, and is cut by Retire at its deadline.
func TestWebSocketThroughSwapAndCut(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.Serve("web", "v1", []Target{startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, data, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, data); err != nil {
				return
			}
		}
	}))})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+f.addr+"/ws", &websocket.DialOptions{HTTPClient: f.client})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	roundTrip := func(msg string) error {
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			return err
		}
		_, got, err := ws.Read(ctx)
		if err == nil && string(got) != msg {
			t.Errorf("echo %q, want %q", got, msg)
		}
		return err
	}
	if err := roundTrip("first"); err != nil {
		t.Fatal(err)
	}
	if s := f.p.Stats("web"); s.InFlight["v1"] != 1 || s.Upgraded["v1"] != 1 {
		t.Errorf("stats with one websocket: %+v", s)
	}

	// Swapped away from: the websocket stays on v1 and keeps working.
	f.p.Serve("web", "v2", []Target{startBackend(t, text("v2"))})
	if err := roundTrip("after swap"); err != nil {
		t.Fatalf("websocket after the swap: %v", err)
	}

	drain, cancelDrain := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelDrain()
	if cut := f.p.Retire(drain, "web", "v1"); cut != 1 {
		t.Errorf("cut = %d, want 1", cut)
	}
	if _, _, err := ws.Read(ctx); err == nil {
		t.Error("the websocket still reads after being cut")
	}
	if _, listed := f.p.Stats("web").InFlight["v1"]; listed {
		t.Error("v1 still listed after Retire returned")
	}
}
