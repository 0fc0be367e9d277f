package proxy

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// AppOptions are the per-app settings of the gate. The zero value works.
type AppOptions struct {
	// QueueTimeout is how long a request may wait, counted from its arrival
	// and over all its waits, for an instance to go to (0:
	// DefaultQueueTimeout). Then it gets 503 with Retry-After.
	QueueTimeout time.Duration
	// MaxQueued is how many requests may wait at once (0: DefaultMaxQueued).
	// One more gets 503 at once.
	MaxQueued int
	// MaxBody is the largest request body passed on to the app, in bytes;
	// 0 (or less) for no limit. A bigger one gets 413 Content Too Large and
	// its client connection is closed: at once, before any byte reaches the
	// app, when its Content-Length says so; when the body has no length
	// (chunked, HTTP/2) and grows past the limit, the request to the app is
	// broken off unfinished (its connection closed) and the client gets the
	// 413 unless the app had already begun to answer.
	MaxBody int64
}

// withDefaults fills in the zero fields; the one place defaults are applied.
func (o AppOptions) withDefaults() AppOptions {
	if o.QueueTimeout <= 0 {
		o.QueueTimeout = DefaultQueueTimeout
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = DefaultMaxQueued
	}
	return o
}

// AppStats is a snapshot of one app.
type AppStats struct {
	// Serving is the version new requests go to; "" when none (the app is
	// starting, stopped, or its serving version was retired).
	Serving string
	// InFlight counts the requests in flight per version, upgraded
	// connections (websockets) included. Every version not yet retired is
	// listed, the serving one and those draining, even with none.
	InFlight map[string]int
	// Upgraded counts, of InFlight, the connections that switched protocols.
	Upgraded map[string]int
	// Held counts the requests waiting: in the queue (paused, or nothing
	// ready) or between retries after their instance refused the connection.
	Held int
	// Paused reports Hold without a Release since.
	Paused bool
}

// backend is one app: its gate options, its versions (the serving one and
// those still draining), and the gate in front of them: the pause flag and
// the FIFO queue of held requests. One mutex guards it all, including the
// versions' instances and in-flight registries: a request is assigned to a
// version and registered there in one critical section, so once Retire has
// marked a version no request can slip onto it.
type backend struct {
	name string

	// maxBody is opts.MaxBody, read without the lock by every request.
	maxBody atomic.Int64

	mu       sync.Mutex
	opts     AppOptions // with defaults applied
	paused   bool
	removed  bool
	serving  *version
	versions []*version // in Serve order; retiring ones until their Retire returns
	queue    callList   // held requests, in arrival order
	// expiry ends held requests at their deadline: one timer per app, set
	// for the earliest deadline in the queue, instead of one per request
	// (a held request then costs no timer). expiryAt is when it fires;
	// zero when it is not set.
	expiry   *time.Timer
	expiryAt time.Time
	// unorderedUntil: until then, deadlines in the queue may not follow
	// arrival order, because queue_timeout was lowered while requests were
	// held or in flight (see expireLocked).
	unorderedUntil time.Time
	backingOff     int // requests between retries (see backoff), counted as held
	// changed is closed and replaced on every change that may let a request
	// through (Serve, SetInstance, Release, RemoveApp): requests backing off
	// wait on it.
	changed chan struct{}
}

func newBackend(name string, o AppOptions) *backend {
	b := &backend{name: name, opts: o.withDefaults(), changed: make(chan struct{})}
	b.maxBody.Store(b.opts.MaxBody)
	return b
}

// openLocked reports whether requests may go through now.
func (b *backend) openLocked() bool {
	return !b.paused && !b.removed && b.serving != nil && len(b.serving.ready) > 0
}

func (b *backend) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// heldLocked counts the requests waiting.
func (b *backend) heldLocked() int { return b.queue.n + b.backingOff }

func (b *backend) setOptions(o AppOptions) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.opts.QueueTimeout
	b.opts = o.withDefaults()
	if b.opts.QueueTimeout < old {
		// Requests admitted under the old timeout keep their deadlines:
		// for as long as that, a later arrival may expire first.
		b.unorderedUntil = time.Now().Add(old)
	}
	b.maxBody.Store(b.opts.MaxBody)
	b.removed = false
}

// serve makes the version name at targets the serving one. An existing,
// non-retiring version of that name with the same targets is reused (a swap
// back to a version still draining); otherwise a new one is made, so that
// serving a name again on new sockets (a restart) leaves the old processes
// as a separate version for Retire to drain.
func (b *backend) serve(name string, targets []Target) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.removed = false
	var v *version
	for _, cand := range b.versions {
		if cand.name == name && !cand.retiring && cand.sameTargetsLocked(targets) {
			v = cand
		}
	}
	if v == nil {
		v = newVersion(name)
		b.versions = append(b.versions, v)
	}
	v.setTargetsLocked(targets)
	b.serving = v
	b.releaseLocked()
	b.notifyLocked()
}

// setInstance replaces instance i of version name. Among versions of that
// name it picks the one whose instance i is at t (a crash reported with the
// instance's own socket), else the newest (a restart on a new socket).
// Retiring versions are left alone: they get no new requests anyway.
func (b *backend) setInstance(name string, i int, t Target, ready bool) {
	if i < 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var v *version
	for _, cand := range slices.Backward(b.versions) {
		if cand.name != name || cand.retiring {
			continue
		}
		if i < len(cand.instances) && cand.instances[i] != nil && cand.instances[i].target == t {
			v = cand
			break
		}
		if v == nil {
			v = cand
		}
	}
	if v == nil {
		return
	}
	v.setInstanceLocked(i, t, ready)
	b.releaseLocked()
	b.notifyLocked()
}

// beginRetire marks the oldest non-retiring version called name as retiring
// and returns it with the channel closed once its registry is empty; nil when
// there is no such version.
func (b *backend) beginRetire(name string) (*version, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, v := range b.versions {
		if v.name != name || v.retiring {
			continue
		}
		v.retiring = true
		if b.serving == v {
			b.serving = nil
		}
		v.checkDrainedLocked()
		return v, v.drained
	}
	return nil, nil
}

// cut cancels every request still in flight on v and returns how many.
func (b *backend) cut(v *version) int {
	b.mu.Lock()
	calls := v.cutLocked()
	b.mu.Unlock()
	// Outside the lock: what an abort wakes (the forwarder) takes b.mu to
	// unregister.
	for _, c := range calls {
		c.abort(ErrCut)
	}
	return len(calls)
}

// forget drops v from the backend.
func (b *backend) forget(v *version) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.versions = slices.DeleteFunc(b.versions, func(x *version) bool { return x == v })
	if b.serving == v {
		b.serving = nil
	}
}

// gone reports whether b is a removed app with no version left.
func (b *backend) gone() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.removed && len(b.versions) == 0
}

func (b *backend) hold() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.paused = true
}

func (b *backend) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.paused = false
	b.releaseLocked()
	b.notifyLocked()
}

// remove marks the app removed: held requests get ErrAppRemoved, new ones
// too; requests in flight go on.
func (b *backend) remove() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.removed = true
	b.serving = nil
	b.failQueueLocked(ErrAppRemoved)
	b.notifyLocked()
}

func (b *backend) isRemoved() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.removed
}

// finish takes c out of its version's registry, if it is in one. Safe to
// call more than once.
func (b *backend) finish(c *call) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.version != nil {
		c.version.unregisterLocked(c)
	}
}

// markUpgraded records that c's response switched protocols.
func (b *backend) markUpgraded(c *call) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.version != nil && !c.upgraded {
		c.upgraded = true
		c.version.upgraded++
	}
}

func (b *backend) stats() AppStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := AppStats{
		InFlight: make(map[string]int, len(b.versions)),
		Upgraded: make(map[string]int, len(b.versions)),
		Held:     b.heldLocked(),
		Paused:   b.paused,
	}
	if b.serving != nil {
		s.Serving = b.serving.name
		s.InFlight[s.Serving] = 0
	}
	for _, v := range b.versions {
		s.InFlight[v.name] += v.flights.n
		if v.upgraded > 0 {
			s.Upgraded[v.name] += v.upgraded
		}
	}
	return s
}
