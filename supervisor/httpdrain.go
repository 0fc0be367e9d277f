package supervisor

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// idleGrace is how long a keep-alive connection must have been idle before
// a daemon that handed over closes it. A client may be sending its next
// request on it right now; the longer it has been quiet, the less likely.
// Busy connections are never closed under a client: their next response
// says "Connection: close".
const idleGrace = 250 * time.Millisecond

// publicServer is the proxy's http.Server with what a hand-over needs:
// http.Server.Shutdown closes idle keep-alive connections at once, racing
// clients that reuse them, and SetKeepAlivesEnabled(false) does the same.
// After handOver, every response closes its connection and idle
// connections are closed only once quiet for idleGrace.
type publicServer struct {
	srv      *http.Server
	ln       net.Listener
	draining atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]connState
}

type connState struct {
	state http.ConnState
	since time.Time
}

func newPublicServer(ln net.Listener, h http.Handler, srv *http.Server) *publicServer {
	ps := &publicServer{srv: srv, ln: ln, conns: make(map[net.Conn]connState)}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ps.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
	srv.ConnState = ps.track
	return ps
}

func (ps *publicServer) serve() { ps.srv.Serve(ps.ln) }

func (ps *publicServer) track(c net.Conn, s http.ConnState) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	switch s {
	case http.StateHijacked, http.StateClosed:
		delete(ps.conns, c) // upgraded connections are the proxy's to track
	default:
		ps.conns[c] = connState{state: s, since: time.Now()}
	}
}

// handOver stops accepting (the new daemon accepts on the same socket) and
// lets every connection end: busy ones after their current response, idle
// ones once quiet for idleGrace. At ctx's end the rest are closed.
func (ps *publicServer) handOver(ctx context.Context) {
	ps.draining.Store(true)
	ps.ln.Close()
	tick := time.NewTicker(idleGrace / 5)
	defer tick.Stop()
	for {
		ps.mu.Lock()
		for c, st := range ps.conns {
			if st.state == http.StateIdle && time.Since(st.since) >= idleGrace {
				c.Close()
			}
		}
		n := len(ps.conns)
		ps.mu.Unlock()
		if n == 0 {
			ps.srv.Close()
			return
		}
		select {
		case <-ctx.Done():
			ps.srv.Close()
			return
		case <-tick.C:
		}
	}
}
