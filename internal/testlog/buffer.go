package testlog

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that one goroutine may write (a process's output
// copier, a logger) while another reads it (the test). The zero value is
// an empty buffer.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
