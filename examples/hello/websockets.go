package main

import (
	"sync"

	"github.com/coder/websocket"
)

// websocketSet tracks open websockets so shutdown can close them: they are
// hijacked, and http.Server.Shutdown neither waits for nor closes hijacked
// connections (PITFALLS: "Proxying"). Its zero value is an empty, open set.
type websocketSet struct {
	mu     sync.Mutex
	conns  map[*websocket.Conn]struct{}
	closed bool
}

// add tracks c. It reports false once closeAll has begun; the caller must
// then close c itself.
func (s *websocketSet) add(c *websocket.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*websocket.Conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

// remove stops tracking c.
func (s *websocketSet) remove(c *websocket.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// closeAll refuses further websockets and closes the open ones with code and
// reason, all at once: each close handshake may wait up to 10s for a slow
// peer. It returns when every close handshake has finished or timed out.
func (s *websocketSet) closeAll(code websocket.StatusCode, reason string) {
	s.mu.Lock()
	s.closed = true
	conns := make([]*websocket.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	var wg sync.WaitGroup
	for _, c := range conns {
		// The error only says the peer did not finish the handshake
		// cleanly; the connection is closed either way.
		wg.Go(func() { c.Close(code, reason) })
	}
	wg.Wait()
}
