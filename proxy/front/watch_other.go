//go:build !linux

package front

// clientWatch is Linux only (watch_linux.go); elsewhere a waiting request's
// client is watched by a goroutine blocked in a 1-byte read once its body
// was read, and not before.
type clientWatch struct{}

func startClientWatch(*conn, *reqCtx, bool) *clientWatch { return nil }

func (*clientWatch) stop() {}
