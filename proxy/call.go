package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// call is the proxy's state for one request, from routing until its response
// (or upgraded connection) is over. It is at most in one list at a time: its
// app's wait queue while held, or the in-flight registry of the version that
// serves it; one pair of links therefore serves both.
type call struct {
	b       *backend
	route   *route
	ctx     context.Context // per request; Retire cancels it with ErrCut
	cancel  context.CancelCauseFunc
	client  context.Context // the inbound request's own context: done when the client leaves
	arrival time.Time
	seq     uint64 // arrival order, for the FIFO

	// Owned by the request's goroutine.
	deadline    time.Time   // arrival + queue_timeout, set on the first acquire
	avoid       []*instance // instances that refused this request since the last state change
	requestID   string
	lastVersion string // for logs
	resBody     *flightBody

	// Guarded by b.mu.
	list       *callList // the queue or a registry this call is in; nil if none
	prev, next *call
	version    *version // the version whose registry holds the call
	inst       *instance
	upgraded   bool
	admitted   bool  // passed the max_queued check once; re-queued calls are not refused
	err        error // set with a wake-up that carries no assignment

	// wake carries one token when a releaser assigned the call (version,
	// inst) or failed it (err) while it waited in the queue.
	wake chan struct{}
}

type callKey struct{}

// callFrom returns the call ServeHTTP attached to ctx, or nil.
func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// callList is an intrusive doubly linked list of calls: O(1) insert at the
// back, removal anywhere, and no allocation per request.
type callList struct {
	head, tail *call
	n          int
}

func (l *callList) pushBack(c *call) {
	c.list, c.prev, c.next = l, l.tail, nil
	if l.tail != nil {
		l.tail.next = c
	} else {
		l.head = c
	}
	l.tail = c
	l.n++
}

// insertByArrival keeps the list ordered by arrival: a request that comes
// back to the queue (its instance refused it) goes before later arrivals.
// New arrivals, the common case, are appended in O(1).
func (l *callList) insertByArrival(c *call) {
	at := l.tail
	for at != nil && at.seq > c.seq {
		at = at.prev
	}
	if at == l.tail {
		l.pushBack(c)
		return
	}
	// Insert after at (nil: at the front).
	c.list, c.prev = l, at
	if at == nil {
		c.next = l.head
		l.head = c
	} else {
		c.next = at.next
		at.next = c
	}
	c.next.prev = c
	l.n++
}

func (l *callList) remove(c *call) {
	if c.list != l {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.tail = c.prev
	}
	c.list, c.prev, c.next = nil, nil, nil
	l.n--
}

func (l *callList) popFront() *call {
	c := l.head
	if c != nil {
		l.remove(c)
	}
	return c
}

// isIdempotent reports whether a request may be sent again after its app
// died before answering: GET, HEAD, OPTIONS, TRACE, or any request carrying
// an Idempotency-Key (the same rule as http.Transport's own retries).
func isIdempotent(r *http.Request) bool {
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := r.Header["Idempotency-Key"]
	_, xkey := r.Header["X-Idempotency-Key"]
	return key || xkey
}

// flightBody wraps a response body so that the call leaves its version's
// registry when the body is done: at EOF or a read error, or on Close,
// whichever comes first.
type flightBody struct {
	io.ReadCloser
	c      *call
	closed atomic.Bool
}

func (f *flightBody) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if err != nil {
		f.c.b.finish(f.c)
	}
	return n, err
}

func (f *flightBody) Close() error {
	f.closed.Store(true)
	err := f.ReadCloser.Close()
	f.c.b.finish(f.c)
	return err
}

// closeIfOpen closes the body if nobody did: ReverseProxy leaves a 101
// response's body open on some error paths.
func (f *flightBody) closeIfOpen() {
	if !f.closed.Load() {
		f.Close()
	}
}

// upgradedBody is the body of a 101 Switching Protocols response: the
// backend connection itself. It must stay an io.ReadWriteCloser or
// ReverseProxy refuses to switch protocols. The call stays in flight until
// Close (ReverseProxy closes it when either side is done, or when the
// request context is cancelled); reaching EOF only means the backend
// stopped writing.
type upgradedBody struct {
	*flightBody
	rwc io.ReadWriteCloser
}

func (u *upgradedBody) Read(p []byte) (int, error) { return u.rwc.Read(p) }

func (u *upgradedBody) Write(p []byte) (int, error) { return u.rwc.Write(p) }

// CloseWrite passes the client's half-close on to the backend, as
// ReverseProxy does when the body supports it.
func (u *upgradedBody) CloseWrite() error {
	if cw, ok := u.rwc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
