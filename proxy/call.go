package proxy

import (
	"context"
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
// New arrivals, the common case, are appended in O(1); a request older than
// every waiter goes to the front in O(1).
func (l *callList) insertByArrival(c *call) {
	if l.tail == nil || l.tail.seq <= c.seq {
		l.pushBack(c)
		return
	}
	// Insert before the first waiter that arrived later than c.
	at := l.head
	if at.seq <= c.seq {
		at = l.tail
		for at.prev.seq > c.seq {
			at = at.prev
		}
	}
	c.list, c.next, c.prev = l, at, at.prev
	if at.prev != nil {
		at.prev.next = c
	} else {
		l.head = c
	}
	at.prev = c
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
