package supervisor

import (
	"net/http"
	"os"
	"testing"
)

// TestDaemonStatusCounts checks that status reports the daemon's goroutines
// and open fds, and that both follow what the process does. Other tests'
// leftovers may start or end goroutines meanwhile, so each check is tried a
// few times before it fails.
func TestDaemonStatusCounts(t *testing.T) {
	d := newTestDaemon(t)
	status := func() DaemonStatus {
		var st Status
		decode(t, do(t, d, "GET", "/v1/status", ""), http.StatusOK, &st)
		return st.Daemon
	}
	if st := status(); st.Goroutines < 1 || st.OpenFDs < 3 {
		t.Fatalf("daemon status %+v: want goroutines ≥ 1 and open_fds ≥ 3 (stdin, stdout, stderr)", st)
	}

	const n = 5
	dir := t.TempDir()
	fdsFollow := false
	for try := 0; try < 5 && !fdsFollow; try++ {
		before := status().OpenFDs
		var files []*os.File
		for i := 0; i < n; i++ {
			f, err := os.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		during := status().OpenFDs
		for _, f := range files {
			f.Close()
		}
		after := status().OpenFDs
		fdsFollow = during-before == n && after == before
		if !fdsFollow {
			t.Logf("open_fds %d → %d (%d files open) → %d (closed)", before, during, n, after)
		}
	}
	if !fdsFollow {
		t.Errorf("open_fds did not follow %d files opened and closed", n)
	}

	goroutinesFollow := false
	for try := 0; try < 5 && !goroutinesFollow; try++ {
		before := status().Goroutines
		stop := make(chan struct{})
		for i := 0; i < n; i++ {
			go func() { <-stop }()
		}
		during := status().Goroutines
		close(stop)
		goroutinesFollow = during-before == n
		if !goroutinesFollow {
			t.Logf("goroutines %d → %d with %d more running", before, during, n)
		}
	}
	if !goroutinesFollow {
		t.Errorf("goroutines did not follow %d goroutines started", n)
	}
}
