// Package tracewin writes a Go execution trace of one window of a bench
// program's run: the steady part of a load, without its start.
package tracewin

import (
	"fmt"
	"os"
	"runtime/trace"
	"time"
)

// Start traces the process from after until after+length into path, in the
// background, and reports on stderr when the file is complete. An empty path
// traces nothing.
func Start(prog, path string, after, length time.Duration) {
	if path == "" {
		return
	}
	go func() {
		time.Sleep(after)
		f, err := os.Create(path)
		if err == nil {
			err = trace.Start(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: trace: %v\n", prog, err)
			return
		}
		time.Sleep(length)
		trace.Stop()
		if err := f.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: trace: %v\n", prog, err)
			return
		}
		fmt.Fprintf(os.Stderr, "%s: trace of %s written to %s\n", prog, length, path)
	}()
}
