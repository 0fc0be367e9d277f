package front

import (
	"context"
	"errors"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// reqCtx is a request's context. It is done when the client goes away
// during the request, or when the handler returns. Finding out that the
// client went away takes a read on the connection in a goroutine of its own
// (a background read, as net/http's server does), which costs a goroutine,
// two deadline changes and a wake-up: reqCtx starts it only when someone
// first asks for Done or registers an AfterFunc (context.AfterFunc calls the
// method of that name when a context has one). The proxy asks only when a
// request has to wait (held, or its app slow to answer), so a request that
// is answered at once never pays for it.
//
// A reqCtx nobody asked is reused for the connection's next request; one
// that was asked is cancelled when its handler returns and replaced.
type reqCtx struct {
	c *conn

	mu       sync.Mutex
	asked    bool // Done or AfterFunc was called
	done     chan struct{}
	canceled atomic.Bool
	afters   map[*afterFunc]struct{}
}

type afterFunc struct{ f func() }

func (x *reqCtx) Deadline() (time.Time, bool) { return time.Time{}, false }

func (x *reqCtx) Err() error {
	if x.canceled.Load() {
		return context.Canceled
	}
	return nil
}

// Value answers http.LocalAddrContextKey as net/http does; nothing else.
func (x *reqCtx) Value(key any) any {
	if key == http.LocalAddrContextKey {
		return x.c.rwc.LocalAddr()
	}
	return nil
}

func (x *reqCtx) Done() <-chan struct{} {
	x.mu.Lock()
	if x.done == nil {
		x.done = make(chan struct{})
		if x.canceled.Load() {
			close(x.done)
		}
	}
	d := x.done
	first := !x.asked
	x.asked = true
	x.mu.Unlock()
	if first {
		x.c.wantBackgroundRead(x)
	}
	return d
}

// AfterFunc arranges for f to run in its own goroutine once x is done, and
// returns a function that stops that, as context.AfterFunc documents.
func (x *reqCtx) AfterFunc(f func()) (stop func() bool) {
	a := &afterFunc{f: f}
	x.mu.Lock()
	first := !x.asked
	x.asked = true
	if x.canceled.Load() {
		x.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	if x.afters == nil {
		x.afters = make(map[*afterFunc]struct{})
	}
	x.afters[a] = struct{}{}
	x.mu.Unlock()
	if first {
		x.c.wantBackgroundRead(x)
	}
	return func() bool {
		x.mu.Lock()
		defer x.mu.Unlock()
		_, ok := x.afters[a]
		delete(x.afters, a)
		return ok
	}
}

// cancel makes x done: the client went away, the connection failed or the
// handler returned.
func (x *reqCtx) cancel() {
	x.mu.Lock()
	if x.canceled.Load() {
		x.mu.Unlock()
		return
	}
	x.canceled.Store(true)
	if x.done != nil {
		close(x.done)
	}
	afters := x.afters
	x.afters = nil
	x.mu.Unlock()
	for a := range afters {
		go a.f()
	}
}

// used reports whether Done or AfterFunc was called: x cannot serve
// another request then.
func (x *reqCtx) used() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.asked
}

func (x *reqCtx) String() string { return "front.requestContext" }

// aLongTimeAgo is a read deadline in the past: it makes a pending read
// return at once (with a timeout error).
var aLongTimeAgo = time.Unix(1, 0)

// wantBackgroundRead starts watching the connection for x's client going
// away: at once when the request body was read to its end (or there is
// none), else when it is. Later requests' contexts are never watched by an
// earlier one's call.
func (c *conn) wantBackgroundRead(x *reqCtx) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if x != c.ctx || !c.inHandler {
		return
	}
	c.bgWanted = true
	c.startBackgroundReadLocked()
}

// startBackgroundReadLocked starts watching for the client leaving, if
// that is wanted and the connection is free: in a handler, its body read,
// not hijacked, and nothing of a next request buffered (a client that
// pipelined is still there; net/http does not treat its bytes as leaving
// either). With nothing buffered, the read buffer goes back to the pool
// until the handler returns: a held request keeps none. While the body is
// unread, the client is watched for the end of its stream only (a hangup
// watch, Linux only), which the full watch replaces once the body is read.
// Called with c.mu held.
func (c *conn) startBackgroundReadLocked() {
	if !c.bgWanted || c.bgRunning || !c.inHandler {
		return
	}
	if !c.bodyDone {
		if c.watch == nil {
			c.watch = startClientWatch(c, c.ctx, true)
		}
		return
	}
	if c.hasByte || c.br.Buffered() > 0 {
		return
	}
	if cw := c.watch; cw != nil { // the body's hangup watch
		c.watch = nil
		cw.stop()
	}
	c.releaseReader()
	c.bgRunning = true
	if c.watch = startClientWatch(c, c.ctx, false); c.watch != nil {
		// Nothing reads the socket until the handler returns, and
		// nothing writes it before writer, which takes c.mu: a held
		// request keeps no socket reader either.
		if c.bw == nil {
			c.releaseSock()
		}
		return
	}
	// A head read in one go leaves the idle deadline armed (see
	// readRequest); the read must outlive it.
	if c.rdArmed {
		c.rwc.SetReadDeadline(time.Time{})
		c.rdArmed = false
	}
	c.bgDone = make(chan struct{})
	go c.backgroundRead(c.ctx, c.bgDone)
}

func (c *conn) backgroundRead(x *reqCtx, done chan struct{}) {
	n, err := c.sock.Read(c.byteBuf[:])
	c.mu.Lock()
	if n == 1 {
		// The first byte of a pipelined request: keep it for the parser.
		c.hasByte = true
	}
	aborted := c.bgAbort && errors.Is(err, os.ErrDeadlineExceeded)
	c.bgRunning = false
	c.mu.Unlock()
	if err != nil && !aborted {
		x.cancel()
	}
	close(done)
}

// stopBackgroundRead ends the handler phase: no watch starts any more,
// one registered is ended, and a background read running is interrupted
// and waited for, so the connection is the server's (or a hijacker's)
// alone again. A byte the read took stays in c.byteBuf for the next parse.
// The read buffer, if it went back to the pool, is taken again only when
// the next request's first byte is in (see readRequest).
func (c *conn) stopBackgroundRead() {
	c.mu.Lock()
	c.inHandler = false
	if cw := c.watch; cw != nil {
		c.watch, c.bgRunning = nil, false
		c.mu.Unlock()
		cw.stop()
		return
	}
	if !c.bgRunning {
		c.mu.Unlock()
		return
	}
	c.bgAbort = true
	c.rwc.SetReadDeadline(aLongTimeAgo)
	done := c.bgDone
	c.mu.Unlock()
	<-done
	c.mu.Lock()
	c.bgAbort = false
	c.mu.Unlock()
	c.rwc.SetReadDeadline(time.Time{})
	c.rdArmed = false
}

// Read is the connection as the bufio.Reader sees it: a byte the
// background read took first, then the socket.
func (c *conn) Read(p []byte) (int, error) {
	if c.hasByte && len(p) > 0 {
		p[0] = c.byteBuf[0]
		c.hasByte = false
		return 1, nil
	}
	return c.sock.Read(p)
}
