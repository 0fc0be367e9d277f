package main

import (
	"context"
	"testing"

	"github.com/coder/websocket"
)

// TestWebsocketSetCloseAll checks that closeAll ends every open websocket
// with the given status, and that a websocket accepted afterwards is closed
// at once instead of outliving the shutdown.
func TestWebsocketSetCloseAll(t *testing.T) {
	s := newTestServer()
	client := serveUnix(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	dial := func() *websocket.Conn {
		t.Helper()
		c, _, err := websocket.Dial(ctx, "ws://hello/ws", &websocket.DialOptions{HTTPClient: client})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		return c
	}

	var open []*websocket.Conn
	for range 2 {
		c := dial()
		// Read the greeting: it is sent once the set tracks c.
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}

	// The clients read concurrently, as closeAll waits for their replies.
	errs := make(chan error, len(open))
	for _, c := range open {
		go func() {
			_, _, err := c.Read(ctx)
			errs <- err
		}()
	}
	s.websockets.closeAll(websocket.StatusGoingAway, "bye")
	for range open {
		if err := <-errs; websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Errorf("open websocket ended with %v, want status %v", err, websocket.StatusGoingAway)
		}
	}

	late := dial()
	if _, _, err := late.Read(ctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("websocket after closeAll ended with %v, want status %v", err, websocket.StatusGoingAway)
	}
}
