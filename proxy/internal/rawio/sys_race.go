//go:build linux && race

package rawio

import "syscall"

// A race-detector build keeps Conn's logic (the RawConn callback, EAGAIN
// and partial writes) but makes the calls through the syscall package,
// whose annotations tell the detector that a socket's write happens before
// the read of its bytes; raw calls would make it report races between
// goroutines that only talk over a socket.
const enabled = true

func read(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return max(n, 0), errno(err)
}

func write(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return max(n, 0), errno(err)
}

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return err.(syscall.Errno)
}
