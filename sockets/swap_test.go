package sockets

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestSwapNoConnectFails swaps the stable path between two listeners 100
// times while a client connects to it in a loop: not one connect may fail.
func TestSwapNoConnectFails(t *testing.T) {
	dir := socketDir(t)
	stable := filepath.Join(dir, "current.sock")
	paths := [2]string{filepath.Join(dir, "v1-0-aaaaaaaa.sock"), filepath.Join(dir, "v2-0-bbbbbbbb.sock")}
	serveByte(t, listenUnix(t, paths[0]), '1')
	serveByte(t, listenUnix(t, paths[1]), '2')
	if err := Swap(paths[0], stable); err != nil {
		t.Fatal(err)
	}

	var (
		mu       sync.Mutex
		connects int
		errs     []error
		seen     = map[byte]int{}
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := readByte(stable)
			mu.Lock()
			connects++
			if err != nil {
				errs = append(errs, err)
			} else {
				seen[b]++
			}
			mu.Unlock()
		}
	})
	count := func() int { mu.Lock(); defer mu.Unlock(); return connects }
	eventually(t, "the client to connect", func() bool { return count() > 0 })

	for i := range 100 {
		before := count()
		if err := Swap(paths[(i+1)%2], stable); err != nil {
			t.Fatalf("swap %d: %v", i, err)
		}
		// Let the client in between swaps, so they interleave.
		eventually(t, "a connect after the swap", func() bool { return count() > before })
	}
	close(stop)
	wg.Wait()

	if len(errs) > 0 {
		t.Fatalf("%d of %d connects failed, first: %v", len(errs), connects, errs[0])
	}
	if seen['1'] == 0 || seen['2'] == 0 {
		t.Errorf("answers %v, want both listeners reached", seen)
	}
	t.Logf("%d connects, answers %v", connects, seen)

	// 100 swaps end where they began, on the first listener.
	if b, err := readByte(stable); err != nil || b != '1' {
		t.Errorf("after the swaps: %q, %v; want '1'", b, err)
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("bound path gone after Swap: %v", err)
		}
	}
	assertNoTempLinks(t, dir)
}

func TestSwapSameSocketTwice(t *testing.T) {
	dir := socketDir(t)
	bound := filepath.Join(dir, "v1-0-aaaaaaaa.sock")
	stable := filepath.Join(dir, "current.sock")
	serveByte(t, listenUnix(t, bound), '1')
	for range 2 {
		if err := Swap(bound, stable); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := readByte(stable); err != nil || b != '1' {
		t.Errorf("stable: %q, %v; want '1'", b, err)
	}
	assertNoTempLinks(t, dir)
}

func TestSwapErrors(t *testing.T) {
	dir := socketDir(t)
	sock := filepath.Join(dir, "v1-0-aaaaaaaa.sock")
	listenUnix(t, sock)
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	stableDir := filepath.Join(dir, "current-dir.sock")
	if err := os.Mkdir(stableDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stableDir, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, bound, stable string
		want                error // nil: any error
	}{
		{"bound missing", filepath.Join(dir, "missing.sock"), filepath.Join(dir, "current.sock"), fs.ErrNotExist},
		{"bound not a socket", regular, filepath.Join(dir, "current.sock"), ErrNotSocket},
		{"stable is a directory", sock, stableDir, nil},
		{"stable dir missing", sock, filepath.Join(dir, "nodir", "current.sock"), fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Swap(tt.bound, tt.stable)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Swap: %v, want error %v", err, tt.want)
			}
			assertNoTempLinks(t, dir)
		})
	}
	if _, err := os.Lstat(filepath.Join(dir, "current.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed swaps created the stable path: %v", err)
	}
}

func TestUnlink(t *testing.T) {
	dir := socketDir(t)
	sock := filepath.Join(dir, "v1-0-aaaaaaaa.sock")
	listenUnix(t, sock)
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, path string
		want       error
		remains    bool
	}{
		{"socket", sock, nil, false},
		{"socket again", sock, nil, false},
		{"missing", filepath.Join(dir, "missing.sock"), nil, false},
		{"regular file", regular, ErrNotSocket, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Unlink(tt.path); !isErr(err, tt.want) {
				t.Fatalf("Unlink: %v, want %v", err, tt.want)
			}
			_, err := os.Lstat(tt.path)
			if remains := err == nil; remains != tt.remains {
				t.Errorf("path remains: %v, want %v", remains, tt.remains)
			}
		})
	}
}
