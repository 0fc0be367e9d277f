package supervisor

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// dirNames lists dir, so a test can see that no temp file was left.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for _, mode := range []os.FileMode{0o644, 0o600} {
		if err := writeFileAtomic(path, []byte("one\n"), mode); err != nil {
			t.Fatalf("writeFileAtomic: %v", err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != "one\n" {
			t.Errorf("content: got %q, want %q", b, "one\n")
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		// Chmod, not the umask, decides: 0644 stays 0644 under umask 022.
		if got := fi.Mode(); got != mode {
			t.Errorf("mode: got %v, want %v", got, mode)
		}
		if got := dirNames(t, dir); !slices.Equal(got, []string{"state.json"}) {
			t.Errorf("directory holds %q, want only state.json: a temp file was left", got)
		}
	}
}

// TestWriteFileAtomicReplaces checks that an overwrite replaces the file
// rather than writing into it: a reader that opened the old file reads it
// whole, and the path names a new inode with the new content.
func TestWriteFileAtomicReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	old := []byte("old content, longer than the new one\n")
	if err := writeFileAtomic(path, old, 0o644); err != nil {
		t.Fatal(err)
	}
	reader, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	oldInfo, err := reader.Stat()
	if err != nil {
		t.Fatal(err)
	}

	if err := writeFileAtomic(path, []byte("new\n"), 0o644); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
	got, err := io.ReadAll(reader)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(old) {
		t.Errorf("reader of the old file got %q, want %q", got, old)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "new\n" {
		t.Errorf("content: got %q, want %q", b, "new\n")
	}
	newInfo, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(oldInfo, newInfo) {
		t.Error("the path names the old inode: the file was written in place")
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"state.json"}) {
		t.Errorf("directory holds %q, want only state.json", got)
	}
}

func TestWriteFileAtomicNoDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "state.json")
	if err := writeFileAtomic(path, []byte("x"), 0o644); err == nil {
		t.Error("got no error writing into a missing directory, want one")
	}
}

// TestWriteFileAtomicRenameFails checks that a failed rename (here: the
// path is a directory) leaves no temp file behind.
func TestWriteFileAtomicRenameFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(path, []byte("x"), 0o644); err == nil {
		t.Error("got no error renaming over a non-empty directory, want one")
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"state.json"}) {
		t.Errorf("directory holds %q, want only state.json: a temp file was left", got)
	}
}
