package main

import (
	"bytes"
	"net"
	"runtime/trace"
	"strings"
	"testing"
	"time"
)

// waitForPeer reads from c, whose peer writes after a pause: a network wait
// whose stack names this function.
func waitForPeer(t *testing.T, c net.Conn) {
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err != nil {
		t.Error(err)
	}
}

// A trace of this test process: one goroutine waits 50 ms for its peer on a
// loopback connection. tracestat finds that wait among the network waits,
// in the group of the stack it parked with, and counts scheduling delays.
func TestRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	defer server.Close()

	var out bytes.Buffer
	if err := trace.Start(&out); err != nil {
		t.Fatal(err)
	}
	const pause = 50 * time.Millisecond
	go func() {
		time.Sleep(pause)
		server.Write([]byte("x"))
	}()
	waitForPeer(t, client)
	trace.Stop()

	s, err := read(&out, []string{"tracestat.waitForPeer"})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.sched) == 0 {
		t.Error("no scheduling delays in the trace")
	}
	if len(s.groups[0]) != 1 {
		t.Fatalf("%d network waits in waitForPeer, want 1 (all network waits: %v)", len(s.groups[0]), s.network)
	}
	if d := s.groups[0][0]; d < pause || d > 5*time.Second {
		t.Errorf("the wait in waitForPeer took %s, want at least %s", d, pause)
	}
	if len(s.network) != len(s.groups[0])+len(s.groups[1]) {
		t.Errorf("%d network waits, %d + %d in the groups", len(s.network), len(s.groups[0]), len(s.groups[1]))
	}

	var text strings.Builder
	s.print(&text, []string{"tracestat.waitForPeer"})
	for _, want := range []string{"sched (runnable → running): n=", "network, stack has tracestat.waitForPeer: n=1 ", "network, the rest:"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, text.String())
		}
	}
}
