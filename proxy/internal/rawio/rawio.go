// Package rawio reads and writes a connection's socket with raw system
// calls, for the proxy's hot path.
//
// A net.Conn's Read and Write enter the kernel through syscall.Syscall,
// which tells the runtime the thread may block: while it is in the kernel,
// the runtime's monitor thread (sysmon) checks on it every 20 µs, and takes
// its P for another thread if it is still there on the next check. A
// non-blocking socket call never blocks, but on a machine whose cores are
// shared with the app and the load (every small server), the thread is
// often descheduled in the middle of one, so sysmon keeps finding Ps to
// take, never backs off from its 20 µs period, and hands Ps from thread to
// thread. On the benchmark's 2-core machine that bookkeeping cost a plain
// Go relay about a fifth of its CPU per request (bench/rawrelay changed to
// these calls: 12.3 → 10.0 µs per request; sysmon's sleeps went from about
// 3,700 a second to none), and deployer 16.2 → 14.7 µs in one run (BENCHMARKS.md).
//
// The price is in the tail: a thread the kernel deschedules in the middle
// of a raw call keeps its P, so the goroutines queued on that P wait for it
// instead of moving to another thread after 20 µs. Under the benchmark's
// load deployer's median latency fell by about a tenth and its p99 rose by
// about as much (BENCHMARKS.md, "The third step").
//
// Conn keeps everything else of the net.Conn: it goes through the
// connection's syscall.RawConn, so the runtime's poller parks the
// goroutine when the socket is not ready, read and write deadlines apply,
// and Close from another goroutine interrupts a blocked call, as with the
// net.Conn itself. Errors are the poller's (os.ErrDeadlineExceeded,
// net.ErrClosed) or the system call's errno, not wrapped in *net.OpError.
//
// A write longer than MaxRawWrite, a connection that is no syscall.Conn
// (a net.Pipe in a test) and a platform other than Linux go through the
// net.Conn's own methods. So do all calls in a race-detector build: the
// syscall package's calls tell the detector that a write happens before
// the read of the same bytes, which raw calls cannot.
package rawio

import (
	"io"
	"net"
	"runtime"
	"syscall"
)

// MaxRawWrite is the longest write made with a raw system call: copying
// more into the kernel may take long enough that the runtime should be free
// to run the thread's goroutines elsewhere meanwhile.
const MaxRawWrite = 64 << 10

// Conn is a connection's socket, read and written with raw system calls.
// The zero value is not usable: call Init. As with a net.Conn, one Read and
// one Write may run at the same time (a request's body written while its
// response is read); a Conn may be copied only before Init.
type Conn struct {
	nc net.Conn
	rc syscall.RawConn // nil: use nc's methods
	r  half
	w  half
}

// half is the state of the Read or the Write in progress, for its RawConn
// callback (made once, in Init, so that a call allocates nothing).
type half struct {
	p     []byte
	n     int // bytes done
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// Init makes c read and write nc. A Conn may be initialized again, for
// another connection, once no call is in progress: the callbacks made the
// first time are kept.
func (c *Conn) Init(nc net.Conn) {
	*c = Conn{nc: nc, r: half{fn: c.r.fn}, w: half{fn: c.w.fn}}
	if !enabled || nc == nil {
		return
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	c.rc = rc
	if c.r.fn == nil {
		c.r.fn, c.w.fn = c.r.read, c.w.write
	}
}

// Read reads from the socket into p, as net.Conn.Read.
func (c *Conn) Read(p []byte) (int, error) {
	if c.rc == nil || len(p) == 0 {
		return c.nc.Read(p)
	}
	c.r.p, c.r.n, c.r.errno = p, 0, 0
	err := c.rc.Read(c.r.fn)
	n, errno := c.r.n, c.r.errno
	c.r.p = nil
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, errno
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes p to the socket, as net.Conn.Write: all of it, or an error.
func (c *Conn) Write(p []byte) (int, error) {
	if c.rc == nil || len(p) == 0 || len(p) > MaxRawWrite {
		return c.nc.Write(p)
	}
	c.w.p, c.w.n, c.w.errno = p, 0, 0
	err := c.rc.Write(c.w.fn)
	n, errno := c.w.n, c.w.errno
	c.w.p = nil
	if err == nil && errno != 0 {
		err = errno
	}
	return n, err
}

// read and write are the RawConn callbacks: false when the socket is not
// ready, so that the poller waits for it and calls again.
func (h *half) read(fd uintptr) bool {
	for {
		n, errno := read(fd, h.p)
		switch errno {
		case 0:
			h.n = n
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			h.errno = errno
			return true
		}
	}
}

func (h *half) write(fd uintptr) bool {
	switch errno := writeAll(fd, h.p, &h.n); errno {
	case 0:
		return true
	case syscall.EAGAIN:
		return false
	default:
		h.errno = errno
		return true
	}
}

// writeAll writes p[*n:] to fd, adding what it wrote to *n, until all of p
// is written (0), the socket is full (EAGAIN) or the call fails.
func writeAll(fd uintptr, p []byte, n *int) syscall.Errno {
	for *n < len(p) {
		k, errno := write(fd, p[*n:])
		switch errno {
		case 0:
			*n += k
		case syscall.EINTR:
		default:
			return errno
		}
	}
	return 0
}

// Yield lets the goroutines that are ready to run go first, before a
// message that ends a turn (a request to an app, a response to a client) is
// written. The proxy's goroutines woken by one poll of the network then
// each get as far as their write, and the writes go out together, one after
// another, instead of one every time a goroutine has parsed, routed and
// checked its message: the peer (the app's threads, the client's) wakes
// once for several messages instead of once for each. Without it, on the
// benchmark's 2-core machine, the one proxy thread wrote so slowly compared
// to how fast its peers took each message that they went back to sleep
// after nearly every one: the whole machine made about 2.0 context switches
// per request behind deployer's proxy and 1.1 behind nginx; with it, 1.4
// (BENCHMARKS.md, "The twelfth step"). When nothing else is ready, it costs
// one pass through the scheduler, a fraction of a microsecond.
func Yield() { runtime.Gosched() }

// RequestConn is a Conn to a server, which speaks only when asked: a request
// written with WriteRead is followed by a wait for its answer with no read
// attempt before it, which could only find nothing. That saves one system
// call per request out of the six a proxied request costs otherwise.
type RequestConn struct {
	Conn
	q    []byte // the request WriteRead is writing
	nq   int    // bytes of q written
	stop bool   // q's write found the socket full: finish it outside
	wrFn func(fd uintptr) bool
}

// Init makes c read and write nc.
func (c *RequestConn) Init(nc net.Conn) {
	c.Conn.Init(nc)
	c.q, c.nq, c.stop, c.wrFn = nil, 0, false, nil
	if c.rc != nil {
		c.wrFn = c.writeRead
	}
}

// WriteRead writes q, then reads the answer into p, as Write(q) followed by
// Read(p). nq is how much of q was written: all of it unless err is set.
// It must not run at the same time as a Read or Write.
//
// Why no read attempt is needed: the runtime's poller forgets a socket's
// readiness when a read begins and learns it anew from the next edge
// (epoll's EPOLLET), so a read that waits without trying first could miss
// data that arrived before it began. Here the request is written after the
// read began, and the answer to it comes after that: its arrival is an
// edge the poller sees. Bytes the server sent unasked before the request
// would not wake the read, but the answer does, and the proxy checks an
// idle connection for such bytes before it reuses it.
//
// It yields first (see Yield).
func (c *RequestConn) WriteRead(q, p []byte) (nq, nr int, err error) {
	Yield()
	if c.rc == nil || len(q) == 0 || len(q) > MaxRawWrite || len(p) == 0 {
		if nq, err = c.Write(q); err != nil {
			return nq, 0, err
		}
		nr, err = c.Read(p)
		return nq, nr, err
	}
	c.q, c.nq, c.stop = q, 0, false
	c.r.p, c.r.n, c.r.errno = p, 0, 0
	err = c.rc.Read(c.wrFn)
	nq, nr, errno, stop := c.nq, c.r.n, c.r.errno, c.stop
	c.q, c.r.p = nil, nil
	switch {
	case err != nil:
		return nq, 0, err
	case errno != 0:
		return nq, 0, errno
	case stop:
		// The socket took only part of the request: the rest goes with
		// a write that waits for room, and then the answer is read as
		// usual.
		n, err := c.Write(q[nq:])
		if nq += n; err != nil {
			return nq, 0, err
		}
		nr, err = c.Read(p)
		return nq, nr, err
	case nr == 0:
		return nq, 0, io.EOF
	}
	return nq, nr, nil
}

// writeRead is WriteRead's RawConn callback: the request's write first, then
// false to wait for the answer, then the read.
func (c *RequestConn) writeRead(fd uintptr) bool {
	if c.q == nil {
		return c.r.read(fd)
	}
	switch errno := writeAll(fd, c.q, &c.nq); errno {
	case 0:
		c.q = nil
		return false
	case syscall.EAGAIN:
		c.stop = true
	default:
		c.r.errno = errno
	}
	return true
}
