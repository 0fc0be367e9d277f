package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Settings of every version's http.Transport.
const (
	// dialTimeout bounds one connect. The transport's dial context is
	// detached from the request (PITFALLS), so without it a connect to a
	// wedged TCP backend could outlive the request. A unix socket connect
	// never waits: it succeeds or fails with ENOENT, ECONNREFUSED or EAGAIN.
	dialTimeout = 3 * time.Second
	// idleConnTimeout closes pooled connections idle this long. It must stay
	// below the apps' own keep-alive timeout, or the proxy would send
	// requests on connections the app is closing (PITFALLS).
	idleConnTimeout = 30 * time.Second
	// maxIdleConnsPerHost is per instance (each instance is its own "host").
	// Go's default of 2 would make every burst dial again.
	maxIdleConnsPerHost = 256
	// expectContinueTimeout: how long a request with "Expect: 100-continue"
	// waits for the app's 100 before sending its body anyway.
	expectContinueTimeout = time.Second
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
	// host names the instance in request URLs. The version's transport pools
	// connections per URL host, so each instance has its own pool, and a
	// restarted instance (new target, new host) never reuses the dead
	// process's connections. The .invalid TLD is never resolved: dial
	// looks the host up in version.hosts.
	host  string
	ready bool
}

// version is one generation of an app's processes: the targets given to one
// Serve, with their own http.Transport (PITFALLS: one transport per version,
// so keep-alive pools never feed an old version) and the registry of
// requests in flight on them.
type version struct {
	name      string
	transport *http.Transport
	dialer    net.Dialer
	hosts     atomic.Pointer[map[string]Target] // read by dial without locks

	// Guarded by the backend's mu.
	instances     []*instance // by index; nil: not known yet
	ready         []*instance // the ready ones, in index order
	rr            uint        // round robin position
	hostSeq       int
	flights       callList // the in-flight registry
	upgraded      int      // calls in flights that switched protocols
	retiring      bool     // Retire began: no new requests
	drained       chan struct{}
	drainedClosed bool

	connMu sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

func newVersion(name string) *version {
	v := &version{
		name:    name,
		dialer:  net.Dialer{Timeout: dialTimeout},
		drained: make(chan struct{}),
		conns:   make(map[*trackedConn]struct{}),
	}
	v.hosts.Store(&map[string]Target{})
	var protocols http.Protocols
	protocols.SetHTTP1(true) // apps speak HTTP/1.1 on their sockets; no h2c
	v.transport = &http.Transport{
		Proxy:                 nil, // never an outbound proxy from the environment
		DialContext:           v.dial,
		DisableCompression:    true, // pass Accept-Encoding and bodies through untouched
		MaxIdleConnsPerHost:   maxIdleConnsPerHost,
		IdleConnTimeout:       idleConnTimeout,
		ExpectContinueTimeout: expectContinueTimeout,
		Protocols:             &protocols,
	}
	return v
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

// newInstanceLocked returns instance i at t. It keeps the host (and so the
// pooled connections) of the current instance i when the target is the same.
func (v *version) newInstanceLocked(i int, t Target, ready bool) *instance {
	if i < len(v.instances) {
		if old := v.instances[i]; old != nil && old.target == t {
			return &instance{index: i, target: t, host: old.host, ready: ready}
		}
	}
	v.hostSeq++
	return &instance{index: i, target: t, host: fmt.Sprintf("i%d-%d.deployer.invalid", i, v.hostSeq), ready: ready}
}

// refreshLocked rebuilds the ready list and the host table after a change.
func (v *version) refreshLocked() {
	v.ready = v.ready[:0:0]
	hosts := make(map[string]Target, len(v.instances))
	for _, in := range v.instances {
		if in == nil {
			continue
		}
		hosts[in.host] = in.target
		if in.ready {
			v.ready = append(v.ready, in)
		}
	}
	v.hosts.Store(&hosts)
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

// cutLocked returns the cancel functions of every call in flight on v.
func (v *version) cutLocked() []context.CancelCauseFunc {
	cancels := make([]context.CancelCauseFunc, 0, v.flights.n)
	for c := v.flights.head; c != nil; c = c.next {
		cancels = append(cancels, c.cancel)
	}
	return cancels
}

// dial is the transport's DialContext: addr names an instance (see
// instance.host); dial connects to its target. Every error is a *dialError:
// nothing of the request was sent.
func (v *version) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	t, ok := (*v.hosts.Load())[host]
	if !ok {
		return nil, &dialError{target: Target{Network: "instance", Addr: host}, err: errDialSkipped}
	}
	conn, err := v.dialer.DialContext(ctx, t.Network, t.Addr)
	if err != nil {
		return nil, &dialError{target: t, err: err}
	}
	v.connMu.Lock()
	defer v.connMu.Unlock()
	if v.closed {
		conn.Close()
		return nil, &dialError{target: t, err: errDialSkipped}
	}
	tc := &trackedConn{Conn: conn, v: v}
	v.conns[tc] = struct{}{}
	return tc, nil
}

// close forgets v: no more dials, idle connections closed, and any
// connection still open (a cut request's, or one the transport returns to
// its pool after Retire's first CloseIdleConnections) closed too.
func (v *version) close() {
	v.connMu.Lock()
	v.closed = true
	conns := make([]*trackedConn, 0, len(v.conns))
	for c := range v.conns {
		conns = append(conns, c)
	}
	v.connMu.Unlock()
	v.transport.CloseIdleConnections()
	for _, c := range conns {
		c.Close()
	}
}

// openConns is the number of connections v has open to its instances.
func (v *version) openConns() int {
	v.connMu.Lock()
	defer v.connMu.Unlock()
	return len(v.conns)
}

// trackedConn is a connection to an instance, known to its version until
// closed.
type trackedConn struct {
	net.Conn
	v    *version
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.v.connMu.Lock()
		delete(c.v.conns, c)
		c.v.connMu.Unlock()
	})
	return c.Conn.Close()
}

// CloseWrite lets a half-close of an upgraded connection reach the app
// (http.Transport's 101 body looks for it on the connection).
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("proxy: CloseWrite on %T: %w", c.Conn, errors.ErrUnsupported)
}
