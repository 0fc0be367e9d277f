package sockets

import "errors"

var (
	// ErrPathTooLong is returned for a socket path longer than MaxPathLen.
	ErrPathTooLong = errors.New("sockets: path too long for a unix socket")

	// ErrBadName is returned for an app or version name that cannot be one
	// path element: empty, ".", "..", or holding a '/' or a NUL byte.
	ErrBadName = errors.New("sockets: invalid name")

	// ErrNotSocket is returned when a path that should name a unix socket
	// names something else.
	ErrNotSocket = errors.New("sockets: not a socket")

	// ErrInUse is returned by Upgrader.Listen when a process already accepts
	// connections on the unix socket path: another daemon is running.
	ErrInUse = errors.New("sockets: socket in use by a running process")

	// ErrDirGone is returned by WaitForSocket when the directory it watches is
	// removed or renamed: the socket can no longer appear at the path.
	ErrDirGone = errors.New("sockets: directory removed while waiting")

	// ErrClosed is returned by HoldWatcher methods after Close.
	ErrClosed = errors.New("sockets: watcher closed")
)
