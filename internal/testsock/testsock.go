// Package testsock looks at a connection's socket from a test.
package testsock

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// Unread is how many bytes (up to 4096) wait unread on nc's socket. It
// does not read them, and does not wait: 0 when none has arrived.
func Unread(nc net.Conn) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return 0, fmt.Errorf("testsock: a %T has no socket", nc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	buf := make([]byte, 4096)
	if err := rc.Control(func(fd uintptr) {
		n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); err != nil {
		return 0, err
	}
	if errors.Is(rerr, syscall.EAGAIN) {
		return 0, nil
	}
	return n, rerr
}
