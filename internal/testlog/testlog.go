// Package testlog makes loggers that write to a test's log, and a buffer
// a test reads while a process or a logger writes it.
package testlog

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// New returns a debug-level logger writing to t.Log until the test ends;
// later lines are dropped (t.Log after the end panics).
func New(t testing.TB) *slog.Logger {
	w := &writer{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writer struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}
