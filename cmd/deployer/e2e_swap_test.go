package main

import (
	"strings"
	"testing"
	"time"
)

// TestSwapUnderLoad is the core claim: 16 keep-alive clients for the whole
// run, 20 swaps back and forth, every response 200, and after each swap
// returns new requests see the new version.
func TestSwapUnderLoad(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.start()

	l := startLoad(t, e.url("/"), 16)
	const swaps = 20
	for i := 0; i < swaps; i++ {
		v := []string{"v2", "v1"}[i%2]
		out := e.mustCLI("swap", "web", v)
		if !strings.Contains(out, "swapped web") {
			t.Fatalf("swap %d output:\n%s", i, out)
		}
		// Every request started after the swap returned reaches v.
		for j := 0; j < 5; j++ {
			if code, _, h := e.get("/"); code != 200 || h.Get("X-Version") != v {
				t.Fatalf("after swap %d to %s: got %d from %q", i, v, code, h.Get("X-Version"))
			}
		}
	}
	time.Sleep(200 * time.Millisecond)
	got := l.finish()
	t.Logf("swap under load: %d swaps, %d requests: %s", swaps, got.total(), got)
	if got.failures() != 0 {
		t.Fatalf("failed requests across %d swaps: %s", swaps, got)
	}
	if got.total() < 1000 {
		t.Fatalf("only %d requests made: the load did not run", got.total())
	}
}
