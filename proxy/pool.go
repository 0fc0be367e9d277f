package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/deployer/deployer/proxy/internal/rawio"
)

// Settings of the connections to instances.
const (
	// dialTimeout bounds one connect. A unix socket connect never waits: it
	// succeeds or fails with ENOENT, ECONNREFUSED or EAGAIN; this is for a
	// wedged TCP ({port}) app.
	dialTimeout = 3 * time.Second
	// idleConnTimeout closes pooled connections idle this long. It must stay
	// below the apps' own keep-alive timeout, or the proxy would send
	// requests on connections the app is closing (PITFALLS).
	idleConnTimeout = 30 * time.Second
	// maxIdleConns is how many idle connections one instance's pool keeps;
	// more are closed when they come back. A burst above it dials again.
	maxIdleConns = 256
	// connBufferSize is the size of each connection's read and write
	// buffers: a request head, a response head and a small body fit in one
	// read and one write.
	connBufferSize = 4 << 10
	// maxPending is how many requests one instance may have been sent and
	// not yet begun to answer; more wait their turn (see acquireSlot).
	maxPending = 1024
)

// slotWait bounds the wait for a slot (a variable for tests).
var slotWait = time.Second

// connPool is the keep-alive pool of one instance: its idle connections,
// most recently used first, so a light load keeps reusing a few warm
// connections and the rest age out.
//
// A pool belongs to one instance of one version (PITFALLS: one pool per
// version, so a pooled connection never carries a new request to an old
// version). An instance restarted on a new socket gets a new pool.
type connPool struct {
	v      *version
	target Target

	slots chan struct{} // one per request sent and not answered yet; cap maxPending

	mu     sync.Mutex
	idle   []*backendConn // LIFO: the top is the warmest
	closed bool           // the instance was replaced or its version closed: no dials, no reuse
	sweep  *time.Timer    // armed while idle is not empty
}

func newConnPool(v *version, t Target) *connPool {
	return &connPool{v: v, target: t, slots: make(chan struct{}, maxPending)}
}

// get returns an idle connection (reused=true) or a new one. check asks for
// a liveness probe of a reused connection first: worth a syscall for a
// request that must not be sent on a connection the app already closed,
// since it cannot be sent again. now is the current time (see call.now).
// A connect ends when ctx does. Errors are *dialError: nothing was sent.
func (p *connPool) get(ctx context.Context, check bool, now time.Time) (bc *backendConn, reused bool, err error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, false, &dialError{target: p.target, err: errDialSkipped}
		}
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		bc = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if now.Sub(bc.idleSince) < idleConnTimeout && (!check || bc.alive(now)) {
			return bc, true, nil
		}
		bc.close()
	}
	bc, err = p.v.connect(ctx, p)
	return bc, false, err
}

// acquireSlot takes one of the instance's maxPending slots for a request
// about to be sent, waiting its turn (first come, first served) while all
// are taken, up to slotWait; then the request goes without one, so that an
// app with more slow requests than slots is slowed down, never stalled. It
// reports whether c holds a slot; false too when c was aborted or its client
// left meanwhile.
//
// The slots smooth bursts: thousands of held requests released at once
// reach a just-started app over about maxPending connections, reused as
// answers come back, instead of thousands of new connections overflowing
// its listen backlog (PITFALLS: EAGAIN) and the memory of both.
func (p *connPool) acquireSlot(c *call) bool {
	select {
	case p.slots <- struct{}{}:
		return true
	default:
	}
	c.waited = true
	t := time.NewTimer(slotWait)
	defer t.Stop()
	select {
	case p.slots <- struct{}{}:
		return true
	case <-t.C:
	case <-c.client.Done():
	case <-c.abortChan():
	}
	return false
}

// releaseSlot gives a slot back: the request's answer began, or its attempt
// failed.
func (p *connPool) releaseSlot() { <-p.slots }

// put returns a connection whose last response was read in full and which
// the app keeps open. A closed pool, or a full one, closes it instead.
func (p *connPool) put(bc *backendConn) {
	bc.call = nil
	bc.idleSince = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) >= maxIdleConns {
		p.mu.Unlock()
		bc.close()
		return
	}
	p.idle = append(p.idle, bc)
	if p.sweep == nil {
		p.sweep = time.AfterFunc(idleConnTimeout, p.closeExpired)
	}
	p.mu.Unlock()
}

// closeExpired closes the connections idle longer than idleConnTimeout,
// which sit at the bottom of the stack, and re-arms while any is left.
func (p *connPool) closeExpired() {
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && time.Since(p.idle[n].idleSince) >= idleConnTimeout {
		n++
	}
	expired := p.takeOldestLocked(n)
	p.sweep = nil
	if len(p.idle) > 0 {
		next := idleConnTimeout - time.Since(p.idle[0].idleSince)
		p.sweep = time.AfterFunc(max(next, time.Second), p.closeExpired)
	}
	p.mu.Unlock()
	for _, bc := range expired {
		bc.close()
	}
}

// closeIdleSince closes the idle connections that went idle at t or
// before. One of them was found closed by the app, which closes idle
// connections after a timeout of its own: those idle as long are closed too.
func (p *connPool) closeIdleSince(t time.Time) {
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && !p.idle[n].idleSince.After(t) {
		n++
	}
	stale := p.takeOldestLocked(n)
	p.mu.Unlock()
	for _, bc := range stale {
		bc.close()
	}
}

// takeOldestLocked takes the n connections idle longest (the bottom of the
// stack) out of the pool. p.mu is held.
func (p *connPool) takeOldestLocked(n int) []*backendConn {
	if n == 0 {
		return nil
	}
	taken := append([]*backendConn(nil), p.idle[:n]...)
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	return taken
}

// closeIdle closes the idle connections; with retire, the pool also stops
// dialing and closes every connection that comes back.
func (p *connPool) closeIdle(retire bool) {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if retire {
		p.closed = true
	}
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
	p.mu.Unlock()
	for _, bc := range idle {
		bc.close()
	}
}

// idleCount is the number of idle connections, for tests.
func (p *connPool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// backendConn is one connection to an instance with its buffers. One request
// at a time uses it; between requests it sits in its pool.
type backendConn struct {
	conn net.Conn
	sock rawio.RequestConn // conn's socket, for connReader and connWriter
	// request is a request head flushRequest left for connReader to
	// write (see rawio.RequestConn.WriteRead); nil when none.
	request    []byte
	deferWrite bool
	// fields is the buffer a response's header lines are read into for a
	// fieldsWriter (see readResponseHead), reused.
	fields    []byte
	pool      *connPool
	br        *bufio.Reader
	bw        *bufio.Writer
	written   int64 // bytes written to conn since the attempt began
	call      *call // the request using the connection, while it does
	aborted   atomic.Bool
	idleSince time.Time
	// watchAt is the read deadline set for the client watch (see armWatch
	// and connReader); zero when none is set. Owned by the goroutine using
	// the connection.
	watchAt   time.Time
	closeOnce sync.Once
	// bodyDone reports the end of the attempt's body writer, when the body
	// is written by a goroutine of its own (see inlineBodyMax); nil
	// otherwise. Until it reports, that goroutine owns bw and written.
	bodyDone chan error
}

// errBodyUnfinished: the app answered before the request body was all
// written, so the connection cannot carry another request.
var errBodyUnfinished = errors.New("proxy: app answered before reading the whole request body")

// stopBody ends the attempt's body writer, if one runs, and returns its
// error. It waits for a write or read in progress, which the abort fails at
// once; a read from a slow client ends when the client sends or leaves.
func (bc *backendConn) stopBody() error {
	done := bc.bodyDone
	if done == nil {
		return nil
	}
	bc.bodyDone = nil
	select {
	case err := <-done:
		return err
	default:
	}
	bc.abort()
	return <-done
}

// finishBody is stopBody once the response was read: a writer still
// running is told to stop but not waited for (it may be blocked on the
// client, whose body the server closes when the handler returns), and the
// connection cannot be reused.
func (bc *backendConn) finishBody() error {
	done := bc.bodyDone
	if done == nil {
		return nil
	}
	bc.bodyDone = nil
	select {
	case err := <-done:
		return err
	default:
		bc.abort()
		return errBodyUnfinished
	}
}

func newBackendConn(p *connPool, conn net.Conn) *backendConn {
	bc := &backendConn{conn: conn, pool: p}
	bc.sock.Init(conn)
	bc.br = bufio.NewReaderSize(connReader{bc}, connBufferSize)
	bc.bw = bufio.NewWriterSize(connWriter{bc}, connBufferSize)
	return bc
}

// armWatch makes a read that waits past about clientWatchDelay after now
// (a request was just sent) time out, so that connReader starts the
// request's client watch. Moving a deadline is a runtime timer change, a
// measurable part of a request's cost (BENCHMARKS.md); so requests in a row
// on one connection share a deadline, moved only once it is less than half
// the delay ahead: the watch starts between clientWatchDelay/2 and
// clientWatchDelay after a request was sent. A deadline that passed while
// the connection was idle is moved too, so no request starts on a
// connection whose deadline has passed.
func (bc *backendConn) armWatch(now time.Time) {
	if bc.watchAt.Sub(now) >= clientWatchDelay/2 {
		return
	}
	bc.watchAt = now.Add(clientWatchDelay)
	bc.conn.SetReadDeadline(bc.watchAt)
}

// clearWatch removes the client watch's read deadline.
func (bc *backendConn) clearWatch() {
	if !bc.watchAt.IsZero() {
		bc.watchAt = time.Time{}
		bc.conn.SetReadDeadline(time.Time{})
	}
}

// connReader reads the connection for br. A read that times out on the
// deadline armWatch set means the app is slow to answer: the request starts
// watching its client, and the read goes on without a deadline. A timeout
// from an abort is returned as it is.
type connReader struct{ bc *backendConn }

func (r connReader) Read(p []byte) (int, error) {
	bc := r.bc
	for {
		var n int
		var err error
		if q := bc.request; q != nil {
			var nq int
			nq, n, err = bc.sock.WriteRead(q, p)
			bc.written += int64(nq)
			bc.request = nil
			if nq < len(q) && err != nil {
				bc.request = q[nq:] // for the read after the watch starts
			}
		} else {
			n, err = bc.sock.Read(p)
		}
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || bc.aborted.Load() || bc.call == nil {
			if err != nil {
				bc.request = nil
			}
			return n, err
		}
		bc.call.watchClient()
		bc.watchAt = time.Time{}
		bc.conn.SetReadDeadline(time.Time{})
		// An abort between the check above and clearing the deadline
		// must not be undone.
		if bc.aborted.Load() {
			bc.conn.SetDeadline(aLongTimeAgo)
			bc.request = nil
			return n, err
		}
		if n > 0 {
			return n, nil
		}
	}
}

// connWriter counts what reaches the connection, so that a request whose
// head was never written can be told apart from one the app may have seen.
type connWriter struct{ bc *backendConn }

func (w connWriter) Write(p []byte) (int, error) {
	if w.bc.deferWrite {
		// flushRequest's: written by the read of the answer.
		w.bc.deferWrite = false
		w.bc.request = p
		return len(p), nil
	}
	n, err := w.bc.sock.Write(p)
	w.bc.written += int64(n)
	return n, err
}

// flushRequest flushes a request that has no body to follow: its last
// bytes are written by the first read of its answer (connReader), which
// then waits for the answer without a read attempt first. bw's buffer
// holds them until then: nothing writes to bw before that read.
func (bc *backendConn) flushRequest() error {
	bc.deferWrite = true
	err := bc.bw.Flush()
	bc.deferWrite = false
	return err
}

// abort makes every blocked and future read and write on the connection
// fail at once; the forwarder then closes it. Safe from any goroutine.
func (bc *backendConn) abort() {
	bc.aborted.Store(true)
	bc.conn.SetDeadline(aLongTimeAgo)
}

// aLongTimeAgo is a deadline in the past: it fails I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// close closes the connection and forgets it. Safe to call more than once.
func (bc *backendConn) close() {
	bc.closeOnce.Do(func() {
		bc.conn.Close()
		bc.pool.v.untrack(bc)
	})
}

// alive reports whether an idle connection can carry a request: the app has
// not closed it and sent nothing unasked. It costs one non-blocking
// MSG_PEEK read.
func (bc *backendConn) alive(now time.Time) bool {
	if bc.br.Buffered() > 0 {
		return false
	}
	if !bc.watchAt.IsZero() && bc.watchAt.Sub(now) < clientWatchDelay/2 {
		// A passed read deadline would fail the probe itself (Go's
		// poller checks it before any read); send moves one this near
		// anyway (armWatch).
		bc.clearWatch()
	}
	sc, ok := bc.conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && alive
}
