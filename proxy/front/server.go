package front

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Server fields left zero.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
)

// Server serves HTTP/1.0 and HTTP/1.1 on net.Listeners, like http.Server
// without TLS, HTTP/2 or a ServeMux. Set its fields before Serve; the zero
// value (with a Handler) works.
type Server struct {
	Handler http.Handler
	// ReadHeaderTimeout bounds reading a whole request head, from its
	// first byte (from the accept for a connection's first request): a
	// client that trickles its head (slowloris) is cut there. 0:
	// DefaultReadHeaderTimeout.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the first byte of a keep-alive
	// connection's next request: the connection is closed after between
	// IdleTimeout and 9/8 of it (see armIdleDeadline). 0:
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request line and its headers; a longer head
	// gets 431 and the connection is closed. 0: DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// ConnState is called as connections change state, with the states and
	// at the moments net/http's server uses (see http.ConnState).
	ConnState func(net.Conn, http.ConnState)
	// Logger receives protocol errors at Debug and handler panics at
	// Error. nil: slog.Default().
	Logger *slog.Logger

	mu          sync.Mutex
	listeners   map[*net.Listener]struct{}
	conns       map[*conn]struct{}
	inShutdown  atomic.Bool
	handingOver atomic.Bool
	connsDone   chan struct{} // closed when conns empties during a shutdown; made on demand
}

// Serve accepts connections on l and serves each in its own goroutine. It
// returns http.ErrServerClosed once Shutdown or Close was called, or the
// listener's error otherwise. l is closed when Serve returns.
func (s *Server) Serve(l net.Listener) error {
	if !s.trackListener(&l, true) {
		l.Close()
		return http.ErrServerClosed
	}
	defer s.trackListener(&l, false)
	defer l.Close()

	var delay time.Duration
	for {
		rwc, err := l.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return http.ErrServerClosed
			}
			// Out of file descriptors and the like: wait and go on, as
			// net/http does, instead of ending the server.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logger().Debug("front: accept error; retrying", "error", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := newConn(s, rwc)
		if !s.trackConn(c, true) {
			rwc.Close()
			return http.ErrServerClosed
		}
		c.setState(http.StateNew)
		go c.serve()
	}
}

// isTemporary reports whether an accept error is worth retrying
// (EMFILE, ENFILE, ECONNABORTED...): net.Error's Temporary is deprecated
// but still what the net package sets for them.
func isTemporary(err error) bool {
	te, ok := err.(interface{ Temporary() bool })
	return ok && te.Temporary()
}

// Shutdown stops the server gracefully, as http.Server.Shutdown does: it
// closes the listeners, then closes idle connections (and new ones silent
// for 5 s) as they become idle, and returns once every connection is
// closed, or with ctx's error when ctx ends first. A connection serving a
// request finishes its response, marked "Connection: close", and is
// closed. Hijacked connections are the handler's: Shutdown neither closes
// nor waits for them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
	lnerr := s.closeListeners()

	wait := time.Millisecond
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		if s.closeIdleConns() {
			return lnerr
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.allConnsDone():
			return lnerr
		case <-timer.C:
			wait = min(2*wait, 500*time.Millisecond)
			timer.Reset(wait)
		}
	}
}

// HandOver ends the server after another process took over its
// listening sockets (a daemon upgrade: the new process accepts on the same
// sockets), without closing a connection under a client that may be
// sending its next request on it right now, which Shutdown does to idle
// keep-alive connections. It closes the listeners; from then on every
// response carries "Connection: close" and its connection is closed after
// it; a connection idle for at least grace is closed (a client about to
// reuse it is less likely the longer it has been quiet), as is one that
// never sent a byte in 5 s. It returns once no connection is left, or at
// ctx's end, when it closes what is left, with ctx's error. Hijacked
// connections are the handler's, as with Shutdown.
//
// It needs no per-request bookkeeping: every grace/5 it samples each
// connection's state word, which counts the times the connection went
// idle, and closes those seen idle with the same count for grace.
func (s *Server) HandOver(ctx context.Context, grace time.Duration) error {
	s.handingOver.Store(true)
	s.inShutdown.Store(true)
	lnerr := s.closeListeners()
	tick := time.NewTicker(max(grace/5, time.Millisecond))
	defer tick.Stop()
	seen := make(map[*conn]idleMark)
	for {
		if s.closeQuietConns(seen, grace) {
			return lnerr
		}
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// idleMark is when HandOver first saw a connection idle, with its state
// word then.
type idleMark struct {
	state uint64
	at    time.Time
}

// closeQuietConns closes the connections idle for grace (per seen) or
// silent since their accept for 5 s, and reports whether none is left.
func (s *Server) closeQuietConns(seen map[*conn]idleMark, grace time.Duration) bool {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range seen {
		if _, ok := s.conns[c]; !ok {
			delete(seen, c)
		}
	}
	for c := range s.conns {
		v := c.state.Load()
		switch st := http.ConnState(v & 0xff); {
		case st == http.StateNew && time.Unix(int64(v>>8), 0).Before(now.Add(-5*time.Second)):
			c.rwc.Close()
		case st == http.StateIdle:
			m, ok := seen[c]
			if !ok || m.state != v {
				seen[c] = idleMark{state: v, at: now}
			} else if now.Sub(m.at) >= grace {
				c.rwc.Close()
			}
		default:
			delete(seen, c)
		}
	}
	return len(s.conns) == 0
}

// Close closes the listeners and every connection that is not hijacked at
// once, interrupting requests in flight.
func (s *Server) Close() error {
	s.inShutdown.Store(true)
	err := s.closeListeners()
	s.mu.Lock()
	for c := range s.conns {
		c.rwc.Close()
	}
	s.mu.Unlock()
	return err
}

func (s *Server) closeListeners() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for l := range s.listeners {
		if cerr := (*l).Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// closeIdleConns closes the connections waiting for a request, and reports
// whether none is left.
func (s *Server) closeIdleConns() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	quiet := true
	for c := range s.conns {
		st, since := c.getState()
		// A connection that never sent a byte counts as idle after 5 s
		// (net/http's rule: it may be a slow client about to write).
		if st == http.StateNew && since.Before(time.Now().Add(-5*time.Second)) {
			st = http.StateIdle
		}
		if st != http.StateIdle {
			quiet = false
			continue
		}
		c.rwc.Close()
	}
	return quiet && len(s.conns) == 0
}

// allConnsDone returns a channel closed once no connection is left.
func (s *Server) allConnsDone() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.connsDone == nil {
		s.connsDone = make(chan struct{})
		if len(s.conns) == 0 {
			close(s.connsDone)
		}
	}
	return s.connsDone
}

func (s *Server) trackListener(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listeners == nil {
		s.listeners = make(map[*net.Listener]struct{})
	}
	if add {
		if s.inShutdown.Load() {
			return false
		}
		s.listeners[l] = struct{}{}
	} else {
		delete(s.listeners, l)
	}
	return true
}

func (s *Server) trackConn(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	if add {
		if s.inShutdown.Load() {
			return false
		}
		s.conns[c] = struct{}{}
		return true
	}
	delete(s.conns, c)
	if len(s.conns) == 0 && s.connsDone != nil {
		select {
		case <-s.connsDone:
		default:
			close(s.connsDone)
		}
	}
	return true
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) readHeaderTimeout() time.Duration {
	if s.ReadHeaderTimeout > 0 {
		return s.ReadHeaderTimeout
	}
	return DefaultReadHeaderTimeout
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultIdleTimeout
}

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return DefaultMaxHeaderBytes
}
