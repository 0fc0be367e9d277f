package sockets

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// waitArmed runs waitForSocket in a goroutine and returns once the wait is
// armed (the watch is in place and the socket was not there yet); the
// result arrives on the returned channel.
func waitArmed(t *testing.T, ctx context.Context, path string) <-chan error {
	t.Helper()
	armed := make(chan struct{})
	result := make(chan error, 1)
	go func() { result <- waitForSocket(ctx, path, func() { close(armed) }) }()
	select {
	case <-armed:
	case err := <-result:
		t.Fatalf("waitForSocket returned before waiting: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("waitForSocket not armed within 5s")
	}
	return result
}

func await(t *testing.T, result <-chan error) error {
	t.Helper()
	select {
	case err := <-result:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("waitForSocket did not return within 5s")
		return nil
	}
}

func TestWaitForSocketBoundLater(t *testing.T) {
	path := filepath.Join(socketDir(t), "v1-0-aaaaaaaa.sock")
	result := waitArmed(t, context.Background(), path)
	listenUnix(t, path)
	if err := await(t, result); err != nil {
		t.Fatalf("WaitForSocket: %v", err)
	}
}

func TestWaitForSocketRenamedIntoPlace(t *testing.T) {
	dir := socketDir(t)
	path := filepath.Join(dir, "current.sock")
	other := filepath.Join(dir, "v1-0-aaaaaaaa.sock")
	listenUnix(t, other)
	result := waitArmed(t, context.Background(), path)
	if err := Swap(other, path); err != nil {
		t.Fatal(err)
	}
	if err := await(t, result); err != nil {
		t.Fatalf("WaitForSocket: %v", err)
	}
}

func TestWaitForSocketAlreadyThere(t *testing.T) {
	path := filepath.Join(socketDir(t), "v1-0-aaaaaaaa.sock")
	listenUnix(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // must not matter: the socket is there
	if err := WaitForSocket(ctx, path); err != nil {
		t.Fatalf("WaitForSocket: %v", err)
	}
}

func TestWaitForSocketNeverAppears(t *testing.T) {
	path := filepath.Join(socketDir(t), "v1-0-aaaaaaaa.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := WaitForSocket(ctx, path)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForSocket: %v, want DeadlineExceeded", err)
	}
	if ctx.Err() == nil {
		t.Error("returned before the deadline")
	}
}

// TestWaitForSocketRegularFile: a regular file at the path is no socket; the
// wait goes on until a socket replaces it.
func TestWaitForSocketRegularFile(t *testing.T) {
	path := filepath.Join(socketDir(t), "v1-0-aaaaaaaa.sock")
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	result := waitArmed(t, ctx, path)

	// Events about the file itself must not end the wait.
	if err := os.WriteFile(path, []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("z"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-result:
		t.Fatalf("WaitForSocket returned for a regular file: %v", err)
	default:
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	listenUnix(t, path)
	if err := await(t, result); err != nil {
		t.Fatalf("WaitForSocket: %v", err)
	}
}

// TestWaitForSocketRegularFileTimesOut: with only a regular file there, the
// wait ends at the deadline.
func TestWaitForSocketRegularFileTimesOut(t *testing.T) {
	path := filepath.Join(socketDir(t), "v1-0-aaaaaaaa.sock")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := WaitForSocket(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForSocket: %v, want DeadlineExceeded", err)
	}
}

func TestWaitForSocketNoDirectory(t *testing.T) {
	path := filepath.Join(socketDir(t), "missing", "v1.sock")
	if err := WaitForSocket(context.Background(), path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("WaitForSocket: %v, want ErrNotExist", err)
	}
}

func TestWaitForSocketDirectoryRemoved(t *testing.T) {
	dir := filepath.Join(socketDir(t), "web")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	result := waitArmed(t, context.Background(), filepath.Join(dir, "v1.sock"))
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := await(t, result); !errors.Is(err, ErrDirGone) {
		t.Fatalf("WaitForSocket: %v, want ErrDirGone", err)
	}
}

func TestWaitForSocketCancelled(t *testing.T) {
	path := filepath.Join(socketDir(t), "v1.sock")
	ctx, cancel := context.WithCancel(context.Background())
	result := waitArmed(t, ctx, path)
	cancel()
	if err := await(t, result); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitForSocket: %v, want Canceled", err)
	}
}

func TestPollForSocket(t *testing.T) {
	path := filepath.Join(socketDir(t), "v1.sock")
	armed := make(chan struct{})
	result := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { result <- pollForSocket(ctx, path, func() { close(armed) }) }()
	<-armed
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := await(t, result); err != nil {
		t.Fatalf("pollForSocket: %v", err)
	}
}
