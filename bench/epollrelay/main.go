//go:build linux

// Command epollrelay is a measuring stick for the benchmark, not a proxy:
// rawrelay's work (relay GET heads as bytes with the forwarding headers
// deployer adds, relay Content-Length answers back) done the way nginx
// does it instead of the way Go's net package does: event loops, each an
// OS thread of its own with its own edge-triggered epoll set, listening
// socket (SO_REUSEPORT) and pool of app connections, no goroutine per
// connection and no use of the runtime's poller or scheduler while it
// serves. Its row shows what an nginx-style front end written in Go would
// gain over deployer's goroutine per connection (see BENCHMARKS.md).
//
// It runs one loop by default, the number of threads deployer's proxy
// runs while steady; -loops sets it. It handles only what the benchmark
// sends (GET without a body; answers with a Content-Length, head and body
// within 16 KiB; an app that keeps its connections open) and none of
// deployer's guarantees: no holding, no retries, no draining, no upgrades,
// no error answers (a failure closes the client's connection; a client or
// app that closes its end is closed at once, with nothing more answered).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/deployer/deployer/bench/internal/relayhead"
)

// bufSize is each connection's read buffer: a head, or an answer's head
// and body, must fit in it.
const bufSize = 16 << 10

func main() {
	socket := flag.String("socket", "", "the app's unix socket")
	addr := flag.String("addr", "127.0.0.1:8085", "address to listen on")
	loops := flag.Int("loops", 1, "event loops, each an OS thread with its own listening socket")
	shared := flag.Bool("shared", false, "one listening socket for all the loops, each taking one new connection per wake-up (EPOLLEXCLUSIVE), as nginx's workers do, instead of one socket each (SO_REUSEPORT), where the kernel spreads connections by a hash of their addresses")
	flag.Parse()
	if *socket == "" || *loops < 1 {
		fail(fmt.Errorf("usage: epollrelay -socket PATH [-addr HOST:PORT] [-loops N>0] [-shared]"))
	}
	ap, err := net.ResolveTCPAddr("tcp4", *addr)
	if err != nil {
		fail(err)
	}
	done := make(chan error)
	lfd := -1
	for i := 0; i < *loops; i++ {
		l, err := newLoop(ap, *socket, lfd)
		if err != nil {
			fail(err)
		}
		if ap, err = l.addr(); err != nil { // the port chosen for ":0", for the next loops
			fail(err)
		}
		if *shared {
			lfd, l.shared = l.lfd, true
		}
		go func() { done <- l.run() }()
	}
	fail(<-done)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "epollrelay:", err)
	os.Exit(1)
}

// conn is one socket: a client's (TCP) or a pooled one to the app (unix).
type conn struct {
	fd     int
	app    bool
	closed bool   // its fd is closed (and its number may be another's now)
	in     []byte // bytes read, not yet used
	out    []byte // bytes to write, not yet written
	// A client's:
	peer *conn  // the app connection its request in flight went to
	ip   []byte // its address, for X-Forwarded-For
	id   uint64 // its requests so far, for X-Request-Id
	// An app connection's:
	client *conn // the client whose request it carries; nil while idle
}

// loop is one event loop: a listening socket, an epoll set and the app
// connections, all used by one OS thread only.
type loop struct {
	ep     int
	lfd    int
	shared bool // lfd is every loop's: take one connection per wake-up
	socket string
	conns  map[int]*conn
	idle   []*conn
	events []unix.EpollEvent
}

// newLoop listens on a, with SO_REUSEPORT so that every loop has a
// listening socket of its own on the same port (the kernel spreads new
// connections over them), for requests to relay to the app at socket. With
// shared ≥ 0 it listens on that socket instead, another loop's, and is woken
// for it alone of the loops waiting (EPOLLEXCLUSIVE).
func newLoop(a *net.TCPAddr, socket string, shared int) (*loop, error) {
	lfd := shared
	if lfd < 0 {
		var err error
		if lfd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
			return nil, err
		}
		unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		sa := &unix.SockaddrInet4{Port: a.Port}
		copy(sa.Addr[:], a.IP.To4())
		if err := unix.Bind(lfd, sa); err != nil {
			return nil, err
		}
		if err := unix.Listen(lfd, 4096); err != nil {
			return nil, err
		}
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	// Exclusive for a shared socket, and for the first loop's in case
	// others share it.
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(lfd)}); err != nil {
		return nil, err
	}
	return &loop{ep: ep, lfd: lfd, shared: shared >= 0, socket: socket, conns: map[int]*conn{}, events: make([]unix.EpollEvent, 256)}, nil
}

// addr is the address l listens on.
func (l *loop) addr() (*net.TCPAddr, error) {
	sa, err := unix.Getsockname(l.lfd)
	if err != nil {
		return nil, err
	}
	s, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return nil, fmt.Errorf("listening on %T", sa)
	}
	return &net.TCPAddr{IP: net.IP(s.Addr[:]), Port: s.Port}, nil
}

// run serves l's connections until epoll fails, on a thread of its own.
func (l *loop) run() error {
	runtime.LockOSThread()
	for {
		n, err := unix.EpollWait(l.ep, l.events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			ev := l.events[i]
			fd := int(ev.Fd)
			if fd == l.lfd {
				l.accept()
				continue
			}
			c := l.conns[fd]
			if c == nil {
				continue
			}
			if ev.Events&(unix.EPOLLOUT) != 0 && len(c.out) > 0 {
				if !l.flush(c) {
					continue
				}
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				// With the peer gone, read to the end: no later edge
				// would report it.
				hup := ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
				if c.app {
					l.appReadable(c, hup)
				} else {
					l.clientReadable(c, hup)
				}
			}
		}
	}
}

// add watches c's socket fd (edge-triggered, both ways) and files c under it.
func (l *loop) add(fd int, c *conn) error {
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}); err != nil {
		return err
	}
	l.conns[fd] = c
	return nil
}

// accept takes every connection waiting on the listening socket; one, when
// it is shared (the next wakes another loop, if one waits).
func (l *loop) accept() {
	for first := true; first || !l.shared; first = false {
		fd, sa, err := unix.Accept4(l.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		c := &conn{fd: fd, in: make([]byte, 0, bufSize)}
		if s, ok := sa.(*unix.SockaddrInet4); ok {
			c.ip = []byte(net.IP(s.Addr[:]).String())
		}
		if l.add(fd, c) != nil {
			unix.Close(fd)
		}
	}
}

func (l *loop) close(c *conn) {
	if c.closed {
		return
	}
	c.closed = true
	delete(l.conns, c.fd)
	unix.Close(c.fd)
	if c.app {
		if c.client != nil {
			l.close(c.client)
		}
		return
	}
	if c.peer != nil {
		c.peer.client = nil
		l.close(c.peer) // its answer is unread: the connection cannot be reused
	}
}

// fill reads what is there into c.in; false when the connection is done
// (its end read, an error, or c.in full). Unless hup, a short read ends it:
// the socket is empty, and more data will be a new edge.
func (l *loop) fill(c *conn, hup bool) bool {
	for {
		if len(c.in) == cap(c.in) {
			return false
		}
		n, err := unix.Read(c.fd, c.in[len(c.in):cap(c.in)])
		if n > 0 {
			c.in = c.in[:len(c.in)+n]
			if !hup && len(c.in) < cap(c.in) {
				return true
			}
			continue
		}
		if err == unix.EAGAIN {
			return true
		}
		if err == unix.EINTR {
			continue
		}
		return false
	}
}

// flush writes c.out; false when the connection was closed.
func (l *loop) flush(c *conn) bool {
	for len(c.out) > 0 {
		n, err := unix.Write(c.fd, c.out)
		if n > 0 {
			c.out = c.out[n:]
			continue
		}
		if err == unix.EAGAIN {
			return true
		}
		if err == unix.EINTR {
			continue
		}
		l.close(c)
		return false
	}
	c.out = c.out[:0]
	return true
}

func (l *loop) clientReadable(c *conn, hup bool) {
	if !l.fill(c, hup) {
		l.close(c)
		return
	}
	l.next(c)
}

// next starts the client's next request if its head is in and none is in flight.
func (l *loop) next(c *conn) {
	if c.peer != nil {
		return
	}
	i := bytes.Index(c.in, []byte("\r\n\r\n"))
	if i < 0 {
		return
	}
	head := c.in[:i+4]
	a, err := l.appConn()
	if err != nil {
		l.close(c)
		return
	}
	c.peer, a.client = a, c
	c.id++
	a.out = relayhead.AppendRequest(a.out[:0], head, c.ip, c.id)
	c.in = c.in[:copy(c.in, c.in[i+4:])]
	l.flush(a)
}

func (l *loop) appConn() (*conn, error) {
	for n := len(l.idle); n > 0; n-- {
		a := l.idle[n-1]
		l.idle = l.idle[:n-1]
		if !a.closed {
			return a, nil
		}
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: l.socket}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	a := &conn{fd: fd, app: true, in: make([]byte, 0, bufSize), out: make([]byte, 0, 1024)}
	if err := l.add(fd, a); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return a, nil
}

func (l *loop) appReadable(a *conn, hup bool) {
	if !l.fill(a, hup) {
		l.close(a)
		return
	}
	c := a.client
	if c == nil {
		return
	}
	i := bytes.Index(a.in, []byte("\r\n\r\n"))
	if i < 0 {
		return
	}
	total := i + 4 + relayhead.ContentLength(a.in[:i+4])
	if len(a.in) < total {
		return
	}
	c.out = append(c.out, a.in[:total]...)
	a.in = a.in[:copy(a.in, a.in[total:])]
	c.peer, a.client = nil, nil
	l.idle = append(l.idle, a)
	if !l.flush(c) {
		return
	}
	l.next(c)
}
