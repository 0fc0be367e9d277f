//go:build linux

package front

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// A check of a watch that was stopped after the epoll loop had looked it
// up leaves the connection alone: by then the connection's next request
// may be watched on the same registration. (Its re-arm used to take that
// registration over with the old watch's id, unknown to the loop, and the
// next request's client leaving was never seen: a held request went to the
// app when released.)
func TestStaleCheckLeavesNextWatch(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	c := &conn{rwc: sc}

	first := &reqCtx{c: c}
	cw1 := startClientWatch(c, first, false)
	if cw1 == nil {
		t.Fatal("no epoll watch")
	}
	cw1.stop() // its handler returned
	next := &reqCtx{c: c}
	cw2 := startClientWatch(c, next, true) // the next request, held with its body unread
	if cw2 == nil {
		t.Fatal("no epoll watch")
	}
	defer cw2.stop()
	theEpoller().check(cw1, syscall.EPOLLIN) // the loop, late
	if first.Err() != nil {
		t.Error("a check after stop cancelled the stopped watch's request")
	}

	cl.Close() // the next request's client leaves
	deadline := time.Now().Add(5 * time.Second)
	for next.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the next request's client left and its context was never cancelled")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
