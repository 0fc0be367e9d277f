package proxy

import (
	"context"
	"net"
	"sync"
	"time"
)

// call is the proxy's state for one request, from routing until its response
// (or upgraded connection) is over. It is at most in one list at a time: its
// app's wait queue while held, or the in-flight registry of the version that
// serves it; one pair of links therefore serves both.
type call struct {
	b       *backend
	route   *route
	client  context.Context // the inbound request's context: done when the client leaves
	arrival time.Time
	seq     uint64 // arrival order, for the FIFO

	// Owned by the request's goroutine.
	deadline    time.Time     // arrival + queue_timeout, set on the first acquire
	avoid       []*instance   // instances that refused this request since the last state change
	requestID   string        // the client's X-Request-Id, or "" until idNum is formatted
	idNum       uint64        // a generated request id (requestID == "")
	lastVersion string        // for logs
	status      int           // the status the client got (RequestInfo)
	bytes       int64         // response body bytes written to the client
	held        time.Duration // time spent waiting at the gate

	// Guarded by b.mu.
	list       *callList // the queue or a registry this call is in; nil if none
	prev, next *call
	version    *version // the version whose registry holds the call
	inst       *instance
	upgraded   bool
	// trusted: the client is one of Options.TrustedProxies; waited: the
	// request blocked since its arrival (see now); holding: it has waited
	// at the gate (queue or backoff), so it counts against max_queued and
	// is never refused for a full queue again. Owned by the request's
	// goroutine; here to fit in upgraded's padding, which keeps call in
	// its size class.
	trusted bool
	waited  bool
	holding bool
	err     error // set with a wake-up that carries no assignment

	// wake carries one token when a releaser assigned the call (version,
	// inst) or failed it (err) while it waited in the queue.
	wake chan struct{}

	// watchStop ends the watch on the client's context, once started
	// (see watchClient). Owned by the request's goroutine.
	watchStop func() bool

	// The abort state: what cut the request, and the connections an abort
	// must break. Guarded by amu.
	amu    sync.Mutex
	cause  error         // ErrCut or ErrClientGone, once aborted
	bconn  *backendConn  // the current attempt's connection to the app
	cconn  net.Conn      // the client's connection, once hijacked for an upgrade
	bclose bool          // the attempt's connection must be closed, not pooled
	abortc chan struct{} // closed by abort; made only for a wait that needs it
}

// clientWatchDelay is how long at most (and at least half of it, see
// armWatch) a request waits for its app's answer before it watches its
// client's context. Registering a callback on the context of
// every request costs four allocations and two locks; nearly every answer
// comes sooner, and a client that left is noticed anyway when its answer is
// written. A long poll, a slow page or a stream whose client left is
// aborted, so the app sees it go, as http.Transport would.
const clientWatchDelay = 100 * time.Millisecond

// now returns the current time for a request about to be sent (the pool's
// idle check, the client watch): its arrival, microseconds ago, while it has
// not waited anywhere (at the gate, for a slot, for its body, in an earlier
// attempt), which saves a clock read per request; else the clock.
func (c *call) now() time.Time {
	if c.waited || c.held > 0 {
		return time.Now()
	}
	return c.arrival
}

// watchClient makes the client's leaving abort the request from now on.
func (c *call) watchClient() {
	if c.watchStop == nil {
		c.watchStop = context.AfterFunc(c.client, func() { c.abort(ErrClientGone) })
	}
}

// unwatchClient ends the watch, if one started.
func (c *call) unwatchClient() {
	if c.watchStop != nil {
		c.watchStop()
	}
}

// abort ends the request: Retire cut it (ErrCut) or its client left
// (ErrClientGone). I/O on its connection to the app fails at once, and an
// upgraded connection is closed on both sides. The first cause sticks. Safe
// from any goroutine.
func (c *call) abort(cause error) {
	c.amu.Lock()
	defer c.amu.Unlock()
	if c.cause != nil {
		return
	}
	c.cause = cause
	if c.abortc != nil {
		close(c.abortc)
	}
	if c.bconn != nil {
		c.bconn.abort()
		c.bclose = true
	}
	if c.cconn != nil {
		c.cconn.Close()
	}
}

// abortChan returns a channel closed once the call is aborted.
func (c *call) abortChan() <-chan struct{} {
	c.amu.Lock()
	defer c.amu.Unlock()
	if c.abortc == nil {
		c.abortc = make(chan struct{})
		if c.cause != nil {
			close(c.abortc)
		}
	}
	return c.abortc
}

// aborted returns the abort's cause, or nil.
func (c *call) aborted() error {
	c.amu.Lock()
	defer c.amu.Unlock()
	return c.cause
}

// attach makes bc the connection an abort breaks. It reports false, with bc
// broken, when the call was aborted already.
func (c *call) attach(bc *backendConn) bool {
	c.amu.Lock()
	defer c.amu.Unlock()
	c.bconn, c.bclose = bc, false
	if c.cause != nil {
		bc.abort()
		return false
	}
	return true
}

// detach ends the attempt's use of its connection and reports whether an
// abort broke it meanwhile.
func (c *call) detach() (broken bool) {
	c.amu.Lock()
	defer c.amu.Unlock()
	broken = c.bclose
	c.bconn, c.bclose = nil, false
	return broken
}

// attachClient makes an abort close the client's hijacked connection too. It
// reports false when the call was aborted already.
func (c *call) attachClient(conn net.Conn) bool {
	c.amu.Lock()
	defer c.amu.Unlock()
	c.cconn = conn
	return c.cause == nil
}

// id returns the request id sent to the app.
func (c *call) id() string {
	if c.requestID == "" {
		c.requestID = formatRequestID(c.idNum)
	}
	return c.requestID
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
