package sockets

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// pollInterval is how often WaitForSocket looks for the socket when it cannot
// use inotify (no instance or watch left, or the watcher died).
const pollInterval = 25 * time.Millisecond

// WaitForSocket blocks until path exists and is a socket (os.Stat reports
// os.ModeSocket), or ctx is done. It returns nil at once if the socket is
// already there.
//
// It watches path's parent directory with inotify, never the path itself: an
// app binds a fresh name (a Create event) or renames one into place (also a
// Create), and a watch on a file's old inode dies with it (PITFALLS). Events
// only trigger a fresh Stat, because the kernel coalesces them; an event
// queue overflow does the same. A regular file at path is not a socket, and
// the wait goes on.
//
// The parent directory must exist: an error is returned otherwise, and one
// wrapping ErrDirGone if it is removed or renamed during the wait. When ctx is
// done the error wraps ctx.Err(). When no inotify instance is left (they are
// limited per user), it polls every 25 ms instead.
func WaitForSocket(ctx context.Context, path string) error {
	return waitForSocket(ctx, path, nil)
}

// waitForSocket is WaitForSocket with a hook that tests use to learn that the
// wait is armed: watching, if not nil, is called once, after the watch is in
// place and the first check found no socket.
func waitForSocket(ctx context.Context, path string, watching func()) error {
	path = filepath.Clean(path)
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("sockets: wait for %s: %w", path, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("sockets: wait for %s: %s is not a directory", path, dir)
	}

	w, err := fsnotify.NewWatcher()
	if err != nil {
		return pollForSocket(ctx, path, watching)
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		// Out of watches (ENOSPC), typically: the directory exists, we
		// checked. Polling still works.
		return pollForSocket(ctx, path, watching)
	}

	// The watch is in place before this check, so a socket bound after it is
	// reported by an event, and one bound before it is found here.
	if isSocket(path) {
		return nil
	}
	if watching != nil {
		watching()
	}

	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("sockets: wait for %s: %w", path, ctx.Err())
		case ev, ok := <-w.Events:
			if !ok {
				return pollForSocket(ctx, path, nil)
			}
			switch {
			case ev.Name == path:
				if isSocket(path) {
					return nil
				}
			case ev.Name == dir && ev.Has(fsnotify.Remove|fsnotify.Rename):
				return fmt.Errorf("sockets: wait for %s: %w: %s", path, ErrDirGone, dir)
			}
		case _, ok := <-w.Errors:
			if !ok {
				return pollForSocket(ctx, path, nil)
			}
			// ErrEventOverflow means events were dropped, the one we wait for
			// maybe among them; after any other error the watcher may have
			// missed some too. Either way: look again.
			if isSocket(path) {
				return nil
			}
		}
	}
}

// pollForSocket is the fallback of waitForSocket without inotify.
func pollForSocket(ctx context.Context, path string, watching func()) error {
	if isSocket(path) {
		return nil
	}
	if watching != nil {
		watching()
	}
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("sockets: wait for %s: %w", path, ctx.Err())
		case <-t.C:
			if isSocket(path) {
				return nil
			}
		}
	}
}

// isSocket reports whether path names a socket, following symlinks, since a
// connect does too.
func isSocket(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().Type() == fs.ModeSocket
}
