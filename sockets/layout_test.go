package sockets

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestLayoutPaths(t *testing.T) {
	l := Layout{StateDir: "/var/lib/deployer"}
	tests := []struct {
		name, got, want string
	}{
		{"ControlSocket", l.ControlSocket(), "/var/lib/deployer/deployer.sock"},
		{"StateFile", l.StateFile(), "/var/lib/deployer/state.json"},
		{"AppDir", l.AppDir("web"), "/var/lib/deployer/web"},
		{"Stable 0", l.Stable("web", 0), "/var/lib/deployer/web/current.sock"},
		{"Stable 1", l.Stable("web", 1), "/var/lib/deployer/web/current-1.sock"},
		{"Stable 12", l.Stable("web", 12), "/var/lib/deployer/web/current-12.sock"},
		{"Hold", l.Hold("web"), "/var/lib/deployer/web/hold"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestUnique(t *testing.T) {
	l := Layout{StateDir: t.TempDir()}
	tests := []struct {
		app, version string
		instance     int
	}{
		{"web", "v1", 0},
		{"web", "v1.2.3", 7},
		{"api", "2024-01-01_abc", 12},
	}
	for _, tt := range tests {
		if l.UniqueLen(tt.app, tt.version, tt.instance) > MaxPathLen {
			t.Skipf("TempDir too long for this test: %s", l.StateDir)
		}
		got, err := l.Unique(tt.app, tt.version, tt.instance)
		if err != nil {
			t.Fatalf("Unique(%q, %q, %d): %v", tt.app, tt.version, tt.instance, err)
		}
		if want := l.UniqueLen(tt.app, tt.version, tt.instance); len(got) != want {
			t.Errorf("len(%q) = %d, want UniqueLen %d", got, len(got), want)
		}
		if dir := filepath.Dir(got); dir != l.AppDir(tt.app) {
			t.Errorf("Unique in %q, want %q", dir, l.AppDir(tt.app))
		}
		base := filepath.Base(got)
		prefix := tt.version + "-" + strconv.Itoa(tt.instance) + "-"
		rnd, ok := strings.CutPrefix(strings.TrimSuffix(base, ".sock"), prefix)
		if !ok || !strings.HasSuffix(base, ".sock") {
			t.Fatalf("Unique = %q, want %s<rand>.sock", base, prefix)
		}
		if len(rnd) != UniqueSuffixLen || strings.Trim(rnd, "0123456789abcdef") != "" {
			t.Errorf("random part %q, want %d lowercase hex digits", rnd, UniqueSuffixLen)
		}
		again, err := l.Unique(tt.app, tt.version, tt.instance)
		if err != nil {
			t.Fatal(err)
		}
		if again == got {
			t.Errorf("two calls returned the same path %q", got)
		}
	}
}

// TestUniqueSkipsExisting forces the first random suffix to collide with an
// existing file.
func TestUniqueSkipsExisting(t *testing.T) {
	l := Layout{StateDir: socketDir(t)}
	if err := os.MkdirAll(l.AppDir("web"), 0o755); err != nil {
		t.Fatal(err)
	}
	taken := filepath.Join(l.AppDir("web"), "v1-0-00000000.sock")
	if err := os.WriteFile(taken, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	calls := 0
	orig := randRead
	t.Cleanup(func() { randRead = orig })
	randRead = func(b []byte) (int, error) {
		calls++
		for i := range b {
			b[i] = byte(calls - 1) // all zero the first time
		}
		return len(b), nil
	}

	got, err := l.Unique("web", "v1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(l.AppDir("web"), "v1-0-01010101.sock"); got != want {
		t.Errorf("Unique = %q, want %q", got, want)
	}
	if calls != 2 {
		t.Errorf("drew %d suffixes, want 2", calls)
	}
}

func TestUniqueErrors(t *testing.T) {
	short := Layout{StateDir: "/run/d"}
	long := Layout{StateDir: "/" + strings.Repeat("x", 90)}
	tests := []struct {
		name         string
		l            Layout
		app, version string
		instance     int
		want         error
	}{
		{"too long", long, "web", "v1", 0, ErrPathTooLong},
		{"empty app", short, "", "v1", 0, ErrBadName},
		{"dot app", short, ".", "v1", 0, ErrBadName},
		{"dotdot version", short, "web", "..", 0, ErrBadName},
		{"slash version", short, "web", "../../etc/x", 0, ErrBadName},
		{"nul app", short, "we\x00b", "v1", 0, ErrBadName},
		{"negative instance", short, "web", "v1", -1, ErrBadName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.l.Unique(tt.app, tt.version, tt.instance)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Unique = %q, %v; want error %v", got, err, tt.want)
			}
		})
	}
}

func TestUniqueLenBoundary(t *testing.T) {
	// Grow the state directory until the unique path is exactly at the limit,
	// then one byte over.
	for extra := range 2 {
		// "/" + k bytes adds k+1 bytes to the path under "/".
		k := MaxPathLen - (Layout{StateDir: "/"}.UniqueLen("a", "v1", 0) + 1) + extra
		l := Layout{StateDir: "/" + strings.Repeat("s", k)}
		if n := l.UniqueLen("a", "v1", 0); n != MaxPathLen+extra {
			t.Fatalf("UniqueLen = %d, want %d", n, MaxPathLen+extra)
		}
		got, err := l.Unique("a", "v1", 0)
		switch {
		case extra == 0 && err != nil:
			t.Errorf("at the limit: %v", err)
		case extra == 0 && len(got) != MaxPathLen:
			t.Errorf("at the limit: len %d, want %d", len(got), MaxPathLen)
		case extra == 1 && !errors.Is(err, ErrPathTooLong):
			t.Errorf("one over: Unique = %q, %v; want ErrPathTooLong", got, err)
		case extra == 1 && !strings.Contains(err.Error(), "108 bytes"):
			t.Errorf("error %q does not state the length", err)
		}
	}
}

func TestCheckPath(t *testing.T) {
	if err := CheckPath("/" + strings.Repeat("a", MaxPathLen-1)); err != nil {
		t.Errorf("%d bytes: %v", MaxPathLen, err)
	}
	if err := CheckPath("/" + strings.Repeat("a", MaxPathLen)); !errors.Is(err, ErrPathTooLong) {
		t.Errorf("%d bytes: got %v, want ErrPathTooLong", MaxPathLen+1, err)
	}
}
