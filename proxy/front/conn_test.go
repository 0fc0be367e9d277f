package front

import (
	"testing"
	"unsafe"
)

// TestConnSize pins the connection struct below an allocation size class
// boundary: every connection, a held request's included, costs the whole
// class (Go's size classes go 768, 896, 1024 bytes here). A field that
// pushes it over costs 128 more bytes per connection: make room first,
// for instance by packing one-byte fields together.
func TestConnSize(t *testing.T) {
	const max = 896
	if got := unsafe.Sizeof(conn{}); got > max {
		t.Errorf("conn is %d bytes, want at most %d (its allocation size class)", got, max)
	}
}
