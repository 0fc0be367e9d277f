package proxy

import (
	"context"
	"net"
	"slices"
	"sync"
)

// Target is where one instance listens.
type Target struct {
	Network string // "unix" or "tcp"
	Addr    string // an absolute socket path, or "127.0.0.1:PORT"
}

// instance is one process of a version, as the proxy knows it. Instances are
// immutable: a change (crash, restart on a new socket) replaces the value, so
// a request holding one never sees it change underneath.
type instance struct {
	index  int
	target Target
	// pool holds the keep-alive connections to the instance. It is kept
	// while the target stays the same; a restarted instance (new target)
	// gets a new pool, so it never reuses the dead process's connections.
	pool  *connPool
	ready bool
}

// version is one generation of an app's processes: the targets given to one
// Serve, with their own connection pools (PITFALLS: one pool per version, so
// keep-alive connections never feed an old version) and the registry of
// requests in flight on them.
type version struct {
	name   string
	dialer net.Dialer

	// Guarded by the backend's mu.
	instances     []*instance // by index; nil: not known yet
	ready         []*instance // the ready ones, in index order
	rr            uint        // round robin position
	flights       callList    // the in-flight registry
	upgraded      int         // calls in flights that switched protocols
	retiring      bool        // Retire began: no new requests
	drained       chan struct{}
	drainedClosed bool

	// Every pool the version made and every connection it opened, for
	// closeIdle and close.
	connMu sync.Mutex
	pools  []*connPool
	conns  map[*backendConn]struct{}
	closed bool
}

func newVersion(name string) *version {
	return &version{
		name:    name,
		dialer:  net.Dialer{Timeout: dialTimeout},
		drained: make(chan struct{}),
		conns:   make(map[*backendConn]struct{}),
	}
}

// sameTargetsLocked reports whether v's instances are exactly targets.
func (v *version) sameTargetsLocked(targets []Target) bool {
	if len(v.instances) != len(targets) {
		return false
	}
	for i, in := range v.instances {
		if in == nil || in.target != targets[i] {
			return false
		}
	}
	return true
}

// setTargetsLocked makes targets v's instances, all ready.
func (v *version) setTargetsLocked(targets []Target) {
	insts := make([]*instance, len(targets))
	for i, t := range targets {
		insts[i] = v.newInstanceLocked(i, t, true)
	}
	v.instances = insts
	v.refreshLocked()
}

// setInstanceLocked replaces instance i.
func (v *version) setInstanceLocked(i int, t Target, ready bool) {
	in := v.newInstanceLocked(i, t, ready)
	for len(v.instances) <= i {
		v.instances = append(v.instances, nil)
	}
	v.instances[i] = in
	v.refreshLocked()
}

// newInstanceLocked returns instance i at t. It keeps the pool (and so the
// pooled connections) of the current instance i when the target is the same;
// a replaced target's pool is retired: its idle connections are closed, and
// those in use are closed when their request ends.
func (v *version) newInstanceLocked(i int, t Target, ready bool) *instance {
	if i < len(v.instances) {
		if old := v.instances[i]; old != nil {
			if old.target == t {
				return &instance{index: i, target: t, pool: old.pool, ready: ready}
			}
			old.pool.closeIdle(true)
		}
	}
	return &instance{index: i, target: t, pool: v.newPool(t), ready: ready}
}

// refreshLocked rebuilds the ready list after a change.
func (v *version) refreshLocked() {
	v.ready = v.ready[:0:0]
	for _, in := range v.instances {
		if in != nil && in.ready {
			v.ready = append(v.ready, in)
		}
	}
}

// pickLocked returns the next ready instance round robin, skipping those in
// avoid, or nil when every ready instance is in avoid.
func (v *version) pickLocked(avoid []*instance) *instance {
	n := uint(len(v.ready))
	start := v.rr
	v.rr++
	for k := range n {
		if in := v.ready[(start+k)%n]; !slices.Contains(avoid, in) {
			return in
		}
	}
	return nil
}

// registerLocked puts c in v's in-flight registry, on instance in.
func (v *version) registerLocked(c *call, in *instance) {
	c.version, c.inst = v, in
	v.flights.pushBack(c)
}

// unregisterLocked takes c out of v's registry, if it is there.
func (v *version) unregisterLocked(c *call) {
	if c.list != &v.flights {
		return
	}
	v.flights.remove(c)
	if c.upgraded {
		c.upgraded = false
		v.upgraded--
	}
	c.version, c.inst = nil, nil
	v.checkDrainedLocked()
}

// checkDrainedLocked closes drained once v is retiring with nothing in
// flight.
func (v *version) checkDrainedLocked() {
	if v.retiring && v.flights.n == 0 && !v.drainedClosed {
		v.drainedClosed = true
		close(v.drained)
	}
}

// cutLocked returns every call in flight on v.
func (v *version) cutLocked() []*call {
	calls := make([]*call, 0, v.flights.n)
	for c := v.flights.head; c != nil; c = c.next {
		calls = append(calls, c)
	}
	return calls
}

// newPool makes the pool of an instance at t. The pool of a closed version
// is closed from the start.
func (v *version) newPool(t Target) *connPool {
	p := newConnPool(v, t)
	v.connMu.Lock()
	defer v.connMu.Unlock()
	if v.closed {
		p.closed = true
	} else {
		v.pools = append(v.pools, p)
	}
	return p
}

// connect opens a connection for p. Every error is a *dialError: nothing of
// the request was sent. A TCP connect, which waits when the app's accept
// queue is full (a dropped SYN is sent again after a second), ends when
// ctx does (the client left); a unix socket's never waits.
func (v *version) connect(ctx context.Context, p *connPool) (*backendConn, error) {
	var conn net.Conn
	var err error
	if p.target.Network == "unix" {
		conn, err = v.dialer.Dial(p.target.Network, p.target.Addr)
	} else {
		conn, err = v.dialer.DialContext(ctx, p.target.Network, p.target.Addr)
	}
	if err != nil {
		return nil, &dialError{target: p.target, err: err}
	}
	v.connMu.Lock()
	defer v.connMu.Unlock()
	if v.closed {
		conn.Close()
		return nil, &dialError{target: p.target, err: errDialSkipped}
	}
	bc := newBackendConn(p, conn)
	v.conns[bc] = struct{}{}
	return bc, nil
}

// untrack forgets a closed connection.
func (v *version) untrack(bc *backendConn) {
	v.connMu.Lock()
	delete(v.conns, bc)
	v.connMu.Unlock()
}

// closeIdle closes the idle connections of every pool of v (PITFALLS: a
// keep-alive pool must not keep feeding an old version).
func (v *version) closeIdle() {
	v.connMu.Lock()
	pools := slices.Clone(v.pools)
	v.connMu.Unlock()
	for _, p := range pools {
		p.closeIdle(false)
	}
}

// close forgets v: no more dials, idle connections closed, and any
// connection still open (a cut request's, or one returned to its pool after
// Retire's first closeIdle) closed too.
func (v *version) close() {
	v.connMu.Lock()
	v.closed = true
	pools := v.pools
	v.pools = nil
	conns := make([]*backendConn, 0, len(v.conns))
	for bc := range v.conns {
		conns = append(conns, bc)
	}
	v.connMu.Unlock()
	for _, p := range pools {
		p.closeIdle(true)
	}
	for _, bc := range conns {
		bc.close()
	}
}

// openConns is the number of connections v has open to its instances.
func (v *version) openConns() int {
	v.connMu.Lock()
	defer v.connMu.Unlock()
	return len(v.conns)
}
