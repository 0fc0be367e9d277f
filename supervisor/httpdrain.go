package supervisor

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deployer/deployer/proxy/front"
)

// idleGrace is how long a keep-alive connection must have been idle before
// a daemon that handed over closes it. A client may be sending its next
// request on it right now; the longer it has been quiet, the less likely.
// Busy connections are never closed under a client: their next response
// says "Connection: close".
const idleGrace = 250 * time.Millisecond

// publicServer is a public listener's server with what a hand-over needs:
// http.Server.Shutdown closes idle keep-alive connections at once, racing
// clients that reuse them, and SetKeepAlivesEnabled(false) does the same.
// After handOver, every response closes its connection and idle
// connections are closed only once quiet for idleGrace. proxy/front's
// server (the plain listener) does that itself (front.Server.HandOver),
// with no per-request bookkeeping; for net/http's (the TLS listener),
// publicServer tracks every connection's state through ConnState and wraps
// the handler.
//
// HTTP/2 connections (TLS listener) are never closed under a client: a
// GOAWAY tells the client which streams were served and to open new ones
// elsewhere, and Go's and browsers' clients retry the rest on a new
// connection. net/http's HTTP/2 server sends one when a response carries
// "Connection: close" (which it removes from the response), and to every
// connection at Shutdown.
type publicServer struct {
	srv      server
	ln       net.Listener
	draining atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]connState
}

type connState struct {
	state http.ConnState
	since time.Time
	h2    bool // HTTP/2: its states come from net/http's HTTP/2 server
}

// server is what a publicServer needs of an HTTP server: net/http's (TLS,
// HTTP/2) or proxy/front's (plain HTTP/1.x), which has the same methods.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// newPublicServer serves h on ln with net/http's server (the TLS listener).
func newPublicServer(ln net.Listener, h http.Handler, srv *http.Server) *publicServer {
	ps := &publicServer{srv: srv, ln: ln, conns: make(map[net.Conn]connState)}
	srv.Handler = ps.wrap(h)
	srv.ConnState = ps.track
	return ps
}

// newFrontServer serves h on ln with proxy/front's server (the plain
// listener): a leaner HTTP/1.x server, strict about what clients send.
func newFrontServer(ln net.Listener, h http.Handler, srv *front.Server) *publicServer {
	srv.Handler = h
	return &publicServer{srv: srv, ln: ln}
}

// wrap makes every response close its connection once the server hands
// over.
func (ps *publicServer) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ps.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

func (ps *publicServer) serve() { ps.srv.Serve(ps.ln) }

func (ps *publicServer) track(c net.Conn, s http.ConnState) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	switch s {
	case http.StateHijacked, http.StateClosed:
		delete(ps.conns, c) // upgraded connections are the proxy's to track
	default:
		prev, ok := ps.conns[c]
		h2 := prev.h2
		if ok && prev.state == http.StateNew && s != http.StateNew {
			// The first state after New comes once the TLS handshake is
			// done, from the connection's own goroutine: ConnectionState
			// does not wait on it.
			h2 = negotiatedH2(c)
		}
		ps.conns[c] = connState{state: s, since: time.Now(), h2: h2}
	}
}

// negotiatedH2 reports whether c is a TLS connection that speaks HTTP/2.
func negotiatedH2(c net.Conn) bool {
	tc, ok := c.(*tls.Conn)
	return ok && tc.ConnectionState().NegotiatedProtocol == "h2"
}

// handOver stops accepting (the new daemon accepts on the same socket) and
// lets every connection end: HTTP/1 ones that are busy after their current
// response, idle ones once quiet for idleGrace; HTTP/2 ones that serve a
// request get a GOAWAY with its response, and once no HTTP/1 connection is
// left, Shutdown sends one to the rest and waits for their streams. At
// ctx's end whatever is left is closed.
func (ps *publicServer) handOver(ctx context.Context) {
	if fs, ok := ps.srv.(*front.Server); ok {
		ps.ln.Close() // Serve may not have registered it yet
		fs.HandOver(ctx, idleGrace)
		fs.Close()
		return
	}
	ps.draining.Store(true)
	ps.ln.Close()
	tick := time.NewTicker(idleGrace / 5)
	defer tick.Stop()
	for {
		ps.mu.Lock()
		n := 0
		for c, st := range ps.conns {
			if st.h2 {
				continue
			}
			if st.state == http.StateIdle && time.Since(st.since) >= idleGrace {
				c.Close()
			}
			n++
		}
		ps.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			ps.srv.Close()
			return
		case <-tick.C:
		}
	}
	// No HTTP/1 connection is left, so Shutdown closes none under a
	// client. Its error is the listener's, closed above, or ctx's.
	ps.srv.Shutdown(ctx)
	ps.srv.Close()
}
