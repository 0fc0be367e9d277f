package sockets

import (
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseUnixLine(t *testing.T) {
	tests := []struct {
		name, line   string
		path         string
		flags, state uint64
		ok           bool
	}{
		{"listener", "0000000015f844a7: 00000002 00000000 00010000 0001 01  4243 /tmp/lt/v2.sock", "/tmp/lt/v2.sock", 0x10000, 1, true},
		{"backlog", "000000007157b398: 00000003 00000000 00000000 0001 02     0 /tmp/lt/v2.sock", "/tmp/lt/v2.sock", 0, 2, true},
		{"accepted", "00000000ec4a6bfd: 00000003 00000000 00000000 0001 03  4247 /tmp/lt/v2.sock", "/tmp/lt/v2.sock", 0, 3, true},
		{"spaces in path", "00000000ec4a6bfd: 00000003 00000000 00000000 0001 03  4247 /tmp/my app/v 2.sock", "/tmp/my app/v 2.sock", 0, 3, true},
		{"leading space in path", "00000000ec4a6bfd: 00000003 00000000 00000000 0001 03  4247  x.sock", " x.sock", 0, 3, true},
		{"wide inode", "00000000ec4a6bfd: 00000003 00000000 00000000 0001 03 123456789 /a.sock", "/a.sock", 0, 3, true},
		{"abstract", "0000000000000000: 00000002 00000000 00010000 0001 01 18932 @/tmp/.X11-unix/X0", "@/tmp/.X11-unix/X0", 0x10000, 1, true},
		{"unnamed", "00000000a1b2c3d4: 00000003 00000000 00000000 0001 03  4248", "", 0, 0, false},
		{"header", "Num       RefCount Protocol Flags    Type St Inode Path", "", 0, 0, false},
		{"bad flags", "00000000a1b2c3d4: 00000003 00000000 0000zz00 0001 03  4248 /a.sock", "", 0, 0, false},
		{"empty", "", "", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, flags, state, ok := parseUnixLine([]byte(tt.line))
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			if string(path) != tt.path || flags != tt.flags || state != tt.state {
				t.Errorf("got (%q, %#x, %d), want (%q, %#x, %d)", path, flags, state, tt.path, tt.flags, tt.state)
			}
		})
	}
}

func TestCountConnections(t *testing.T) {
	const listing = `Num       RefCount Protocol Flags    Type St Inode Path
0000000015f844a7: 00000002 00000000 00010000 0001 01  4243 /tmp/lt/v2.sock
000000007157b398: 00000003 00000000 00000000 0001 02     0 /tmp/lt/v2.sock
00000000ec4a6bfd: 00000003 00000000 00000000 0001 03  4247 /tmp/lt/v2.sock
00000000ec4a6bfe: 00000003 00000000 00000000 0001 03  4249
00000000ec4a6bff: 00000002 00000000 00000000 0001 04  4250 /tmp/lt/v2.sock
00000000ec4a6c00: 00000003 00000000 00000000 0001 03  4251 /tmp/lt/v2.sock.old
00000000ec4a6c01: 00000003 00000000 00000000 0001 03  4252 /tmp/lt/v1.sock
00000000ec4a6c02: 00000003 00000000 00000000 0001 03  4253 /tmp/my app/v1.sock
`
	counts := map[string]int{"/tmp/lt/v2.sock": 0, "/tmp/lt/v1.sock": 0, "/tmp/my app/v1.sock": 0, "/tmp/lt/none.sock": 0}
	if err := countConnections(strings.NewReader(listing), counts); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"/tmp/lt/v2.sock": 2, "/tmp/lt/v1.sock": 1, "/tmp/my app/v1.sock": 1, "/tmp/lt/none.sock": 0}
	if !maps.Equal(counts, want) {
		t.Errorf("counts = %v, want %v", counts, want)
	}
}

// TestConnections counts real connections: some accepted, one left in the
// backlog, then after the bound path was renamed, then after closing.
func TestConnections(t *testing.T) {
	dir := socketDir(t)
	bound := filepath.Join(dir, "v1-0-aaaaaaaa.sock")
	ln := listenUnix(t, bound)

	connections := func(path string) int {
		t.Helper()
		n, err := Connections(path)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := connections(bound); n != 0 {
		t.Fatalf("no client yet: %d connections, want 0 (the listener is not one)", n)
	}

	var clients, accepted []net.Conn
	dial := func(path string) {
		t.Helper()
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	accept := func() {
		t.Helper()
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		accepted = append(accepted, c)
	}
	t.Cleanup(func() {
		for _, c := range append(clients, accepted...) {
			c.Close()
		}
	})

	for range 3 {
		dial(bound)
	}
	accept()
	accept() // the third stays in the backlog
	if n := connections(bound); n != 3 {
		t.Errorf("2 accepted + 1 in backlog: %d connections, want 3", n)
	}

	// The listing keeps the bound name after a rename over another path,
	// for old connections and new ones through the new name alike.
	renamed := filepath.Join(dir, "current.sock")
	if err := os.Rename(bound, renamed); err != nil {
		t.Fatal(err)
	}
	dial(renamed)
	counts, err := ConnectionCounts([]string{bound, renamed})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{bound: 4, renamed: 0}; !maps.Equal(counts, want) {
		t.Errorf("after the rename: %v, want %v", counts, want)
	}

	accept()
	accept()
	for _, c := range append(clients, accepted...) {
		c.Close()
	}
	eventually(t, "no connections after closing", func() bool { return connections(bound) == 0 })
}

// BenchmarkConnectionCounts measures one read of /proc/net/unix as it is
// on this machine.
func BenchmarkConnectionCounts(b *testing.B) {
	paths := []string{"/run/deployer/web/v1-0-aaaaaaaa.sock", "/run/deployer/web/v2-0-bbbbbbbb.sock"}
	for b.Loop() {
		if _, err := ConnectionCounts(paths); err != nil {
			b.Fatal(err)
		}
	}
}
