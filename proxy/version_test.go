package proxy

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestPickRoundRobin(t *testing.T) {
	v := newVersion("v1")
	v.setTargetsLocked([]Target{{"unix", "/0"}, {"unix", "/1"}, {"unix", "/2"}})
	in := v.instances
	tests := []struct {
		name  string
		avoid []*instance
		want  []int // indexes picked by successive calls; -1: nil
	}{
		{"round robin", nil, []int{0, 1, 2, 0, 1}},
		{"skips avoided", []*instance{in[1]}, []int{0, 2, 2, 0}},
		{"all avoided", []*instance{in[0], in[1], in[2]}, []int{-1, -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v.rr = 0
			for i, want := range tt.want {
				got := v.pickLocked(tt.avoid)
				switch {
				case want < 0 && got != nil:
					t.Fatalf("pick %d = instance %d, want nil", i, got.index)
				case want >= 0 && (got == nil || got.index != want):
					t.Fatalf("pick %d = %v, want instance %d", i, got, want)
				}
			}
		})
	}
}

// An instance keeps its pool (and pooled connections) while its target is
// the same; a new target gets a new pool, and the old one no longer dials.
func TestSetInstancePools(t *testing.T) {
	v := newVersion("v1")
	a, b := Target{"unix", "/a"}, Target{"unix", "/b"}
	v.setTargetsLocked([]Target{a})
	pool := v.instances[0].pool

	v.setInstanceLocked(0, a, false)
	if v.instances[0].pool != pool || len(v.ready) != 0 {
		t.Errorf("down on the same target: new pool, or %d ready", len(v.ready))
	}
	v.setInstanceLocked(0, b, true)
	if v.instances[0].pool == pool || len(v.ready) != 1 {
		t.Errorf("restarted on a new target: pool unchanged or %d ready", len(v.ready))
	}
	_, _, err := pool.get(context.Background(), false, time.Now())
	if de := (*dialError)(nil); !errors.As(err, &de) || !errors.Is(err, errDialSkipped) {
		t.Errorf("dialing the replaced instance: %v, want a dialError", err)
	}

	v.setInstanceLocked(2, a, true) // grows, leaving 1 unknown
	if len(v.instances) != 3 || v.instances[1] != nil || len(v.ready) != 2 {
		t.Errorf("after adding instance 2: %d instances, %d ready", len(v.instances), len(v.ready))
	}
}

// Every dial failure is a *dialError wrapping the cause (PITFALLS: ENOENT,
// ECONNREFUSED mean nothing was sent).
func TestDialErrors(t *testing.T) {
	dir := sockDir(t)
	ln, stale := listenUnix(t, dir, "stale.sock")
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	tests := []struct {
		name   string
		target Target
		want   error
	}{
		{"no socket", Target{"unix", filepath.Join(dir, "missing.sock")}, syscall.ENOENT},
		{"nobody listening", stale, syscall.ECONNREFUSED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVersion("v1")
			v.setTargetsLocked([]Target{tt.target})
			_, _, err := v.instances[0].pool.get(context.Background(), false, time.Now())
			if de := (*dialError)(nil); !errors.As(err, &de) {
				t.Fatalf("got %v (%T), want a *dialError", err, err)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want it to wrap %v", err, tt.want)
			}
		})
	}
}

// close closes every connection the version opened and refuses new dials.
func TestVersionClose(t *testing.T) {
	ln, target := listenUnix(t, sockDir(t), "app.sock")
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	v := newVersion("v1")
	v.setTargetsLocked([]Target{target})
	bc, _, err := v.instances[0].pool.get(context.Background(), false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	defer peer.Close()
	if n := v.openConns(); n != 1 {
		t.Fatalf("%d open connections, want 1", n)
	}

	v.close()
	if n := v.openConns(); n != 0 {
		t.Errorf("%d open connections after close", n)
	}
	if _, err := peer.Read(make([]byte, 1)); err == nil {
		t.Error("the app's side still reads after close")
	}
	bc.close() // again: harmless
	if _, _, err := v.instances[0].pool.get(context.Background(), false, time.Now()); !errors.Is(err, errDialSkipped) {
		t.Errorf("dial after close: %v, want errDialSkipped", err)
	}
}
