package sockets

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
)

// procNetUnix lists the unix sockets of the current network namespace.
const procNetUnix = "/proc/net/unix"

// Columns of /proc/net/unix, as printed by the kernel's unix_seq_show:
//
//	Num       RefCount Protocol Flags    Type St Inode Path
//	%pK:      %08X     %08X     %08X     %04X %02X %5lu[ path]
const (
	unixFieldFlags = 3
	unixFieldState = 5
	unixFields     = 7 // fields before the optional path

	// soAcceptCon (__SO_ACCEPTCON) in Flags marks a listening socket.
	soAcceptCon = 0x00010000
)

// Connections counts live connections accepted (or waiting in the backlog)
// on the listener that was bound at path, whatever name it has now.
//
// It reads /proc/net/unix, which lists every connection under the path its
// listener was bound to, even after that path was renamed or swapped over
// (PITFALLS): so the count for an old version's unique bind path covers the
// connections of every client, deployer's proxy or an outer one like nginx.
// Counted are the entries whose path is path, other than the listener itself:
// accepted connections (St 03, connected) and connections still in the accept
// backlog (St 02, connecting), which the listener would reset if it closed
// now. path must be the string the app passed to bind(2), byte for byte;
// Layout.Unique paths are absolute and clean.
//
// It is cheap enough to call every 100 ms per draining version: one read of
// the file, no allocation per line.
func Connections(path string) (int, error) {
	counts, err := ConnectionCounts([]string{path})
	if err != nil {
		return 0, err
	}
	return counts[path], nil
}

// ConnectionCounts is Connections for many paths, reading /proc/net/unix once.
// The map has an entry for every path asked for, 0 when it has no
// connection.
func ConnectionCounts(paths []string) (map[string]int, error) {
	f, err := os.Open(procNetUnix)
	if err != nil {
		return nil, fmt.Errorf("sockets: count connections: %w", err)
	}
	defer f.Close()
	counts := make(map[string]int, len(paths))
	for _, p := range paths {
		counts[p] = 0
	}
	if err := countConnections(f, counts); err != nil {
		return nil, fmt.Errorf("sockets: count connections: %s: %w", procNetUnix, err)
	}
	return counts, nil
}

// countConnections adds to counts[p], for every p already in counts, the live
// connections listed under p in r, a /proc/net/unix listing.
func countConnections(r io.Reader, counts map[string]int) error {
	sc := bufio.NewScanner(r)
	// A line is at most ~60 bytes of columns plus a path of up to 108 bytes;
	// abstract names could be longer, and are not ours anyway.
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		path, flags, state, ok := parseUnixLine(sc.Bytes())
		if !ok || flags&soAcceptCon != 0 || (state != ssConnecting && state != ssConnected) {
			continue
		}
		// The string(path) conversion in a map index does not allocate.
		if n, want := counts[string(path)]; want {
			counts[string(path)] = n + 1
		}
	}
	return sc.Err()
}

// Socket states in the St column (include/uapi/linux/net.h, socket_state).
const (
	ssConnecting = 2 // in the listener's accept backlog: no struct socket yet
	ssConnected  = 3 // accepted, or a connected client
)

// parseUnixLine splits one line of /proc/net/unix. ok is false for a line
// without a path (unnamed sockets: the client side of every connection) or
// one that does not parse.
//
// The kernel prints one space between Inode and Path and the path verbatim,
// so the path is everything after that space, spaces included.
func parseUnixLine(line []byte) (path []byte, flags, state uint64, ok bool) {
	rest := line
	for i := range unixFields {
		rest = bytes.TrimLeft(rest, " ")
		end := bytes.IndexByte(rest, ' ')
		if end < 0 {
			return nil, 0, 0, false // no path column
		}
		switch i {
		case unixFieldFlags:
			flags, ok = parseHex(rest[:end])
		case unixFieldState:
			state, ok = parseHex(rest[:end])
		default:
			ok = true
		}
		if !ok {
			return nil, 0, 0, false
		}
		rest = rest[end:]
	}
	if len(rest) < 2 { // the separating space and at least one byte
		return nil, 0, 0, false
	}
	return rest[1:], flags, state, true
}

// parseHex parses a non-empty hex field such as "00010000" without
// allocating.
func parseHex(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(c)
	}
	return v, true
}
