//go:build linux

package front

import (
	"sync"
	"syscall"
)

// clientWatch watches one waiting request's connection for its client
// leaving without a goroutine of its own: the connection is registered,
// one-shot, in an epoll set that a single goroutine per process waits on.
// Holding 10,000 requests then costs no 10,000 goroutines blocked in a
// read (each with its stack, at least 2 KiB, and its g), and nothing is
// read: the connection's buffer can go back to the pool while the handler
// waits.
//
// When the connection becomes readable the watcher peeks at it
// (MSG_PEEK, so nothing is taken from the next request): end of stream or
// an error means the client left and the request's context is cancelled;
// data means the client pipelined its next request and is still there (the
// watch ends, as net/http's background read does after one byte).
//
// A request whose body is not read yet (held before it is sent, or waiting
// for 100 Continue) cannot be watched that way: what is readable is its
// body. Its watch (hangup) asks for the end of the client's stream only
// (EPOLLRDHUP, reported even with unread data before it): a client that
// closed or reset its connection has left, and so has one that shut down
// its sending side, as net/http's background read takes an end of stream
// once the body was read.
type clientWatch struct {
	x      *reqCtx
	rc     syscall.RawConn
	id     uint64
	hangup bool

	// mu orders a check against stop: once stop has returned, no check
	// touches the registration (another watch of the same connection may
	// have it by then) or cancels x.
	mu      sync.Mutex
	stopped bool
}

// epoller is the process's epoll set of watched connections.
type epoller struct {
	fd int

	mu      sync.Mutex
	running bool // the wait loop runs
	failed  bool // epoll_wait failed: watch with goroutines from now on
	next    uint64
	watches map[uint64]*clientWatch
}

// watchEvents: readable, peer closed, one shot (re-armed on a spurious
// wake-up). EPOLLERR and EPOLLHUP are always reported.
const watchEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// hangupEvents: the peer closed, reset or shut down its sending side; not
// data (a body's bytes arriving).
const hangupEvents = syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// events is what cw's registration asks for.
func (cw *clientWatch) events() uint32 {
	if cw.hangup {
		return hangupEvents
	}
	return watchEvents
}

// watchIdleExit is how long the wait loop outlives the last watch, in
// milliseconds: a daemon with nothing held keeps no thread in epoll_wait.
const watchIdleExit = 1000

var theEpoller = sync.OnceValue(func() *epoller {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	return &epoller{fd: fd, watches: make(map[uint64]*clientWatch)}
})

// startClientWatch starts watching c's connection for x's client leaving,
// by its end of stream only if hangup (see clientWatch). It returns nil
// when it cannot (not a socket, no epoll): the caller then watches with a
// blocking read, or (hangup) not at all.
func startClientWatch(c *conn, x *reqCtx, hangup bool) *clientWatch {
	sc, ok := c.rwc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	ep := theEpoller()
	if ep == nil {
		return nil
	}
	cw := &clientWatch{x: x, rc: rc, hangup: hangup}
	ep.mu.Lock()
	if ep.failed {
		ep.mu.Unlock()
		return nil
	}
	ep.next++
	cw.id = ep.next
	ep.watches[cw.id] = cw
	if !ep.running {
		ep.running = true
		go ep.loop()
	}
	ep.mu.Unlock()

	var addErr error
	err = rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: cw.events(), Fd: int32(uint32(cw.id)), Pad: int32(uint32(cw.id >> 32))}
		addErr = syscall.EpollCtl(ep.fd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil || addErr != nil {
		ep.forget(cw)
		return nil
	}
	return cw
}

// stop ends the watch. Once it returns, no check of this watch touches the
// connection's registration or cancels x: a check under way is waited for.
func (cw *clientWatch) stop() {
	ep := theEpoller()
	cw.mu.Lock()
	defer cw.mu.Unlock()
	cw.stopped = true
	ep.forget(cw)
	// Control fails once the connection is closed: the kernel dropped the
	// registration with the socket, and the descriptor's number may
	// belong to another connection by now, so it must not be touched.
	cw.rc.Control(func(fd uintptr) {
		syscall.EpollCtl(ep.fd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
}

func (ep *epoller) forget(cw *clientWatch) {
	ep.mu.Lock()
	delete(ep.watches, cw.id)
	ep.mu.Unlock()
}

func (ep *epoller) loop() {
	var events [64]syscall.EpollEvent
	for {
		n, err := syscall.EpollWait(ep.fd, events[:], watchIdleExit)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			// Not expected on a valid epoll descriptor. Requests watched
			// now are no longer (they still end at their queue timeout);
			// later ones are watched with goroutines.
			ep.mu.Lock()
			ep.failed, ep.running = true, false
			ep.mu.Unlock()
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			ep.mu.Lock()
			cw := ep.watches[id]
			ep.mu.Unlock()
			if cw != nil {
				ep.check(cw, ev.Events)
			}
		}
		if n == 0 {
			ep.mu.Lock()
			if len(ep.watches) == 0 {
				ep.running = false
				ep.mu.Unlock()
				return
			}
			ep.mu.Unlock()
		}
	}
}

// check looks at a connection whose registration reported events.
func (ep *epoller) check(cw *clientWatch, events uint32) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if cw.stopped {
		// Stopped after the loop looked it up: the connection's next
		// request may be watched by now, on the same registration.
		return
	}
	var gone, again bool
	err := cw.rc.Control(func(fd uintptr) {
		if cw.hangup {
			gone = events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0
		} else {
			var b [1]byte
			n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case err == syscall.EAGAIN || err == syscall.EINTR:
			case err != nil || n == 0:
				gone = true // reset, or end of stream
			default:
				return // the client's next request: it is there
			}
		}
		if !gone {
			// Nothing after all: watch on.
			again = true
			ev := syscall.EpollEvent{Events: cw.events(), Fd: int32(uint32(cw.id)), Pad: int32(uint32(cw.id >> 32))}
			syscall.EpollCtl(ep.fd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
		}
	})
	if err != nil {
		// The server closed the connection: not the client's doing.
		ep.forget(cw)
		return
	}
	if !again {
		ep.forget(cw)
	}
	if gone {
		cw.x.cancel()
	}
}
