package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/proxy"
)

// readLines parses the JSON lines of the file at path.
func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

func TestAccessLogLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs", "deployer", "access.log") // directories created
	l := newAccessLog(path, testLogger(t))
	if err := l.open(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	l.request(&proxy.RequestInfo{
		App: "web", Method: "POST", Host: "example.com", Path: `/a "quoted" path`,
		Remote: "10.0.0.1:5555", RequestID: "abc123", Status: 201, Bytes: 42,
		Start: start, Duration: 1234567 * time.Nanosecond, Held: 250 * time.Millisecond,
	}, "v42")
	l.request(&proxy.RequestInfo{App: "", Method: "GET", Host: "nowhere", Path: "/", Status: 404}, "")
	l.close()
	l.request(&proxy.RequestInfo{App: "web", Status: 200}, "v42") // after close: dropped

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode&^0o640 != 0 {
		t.Errorf("file mode %v, want at most 0640", mode)
	}
	lines := readLines(t, path)
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2: %v", len(lines), lines)
	}
	want := map[string]any{
		"level": "INFO", "msg": "request", "app": "web", "version": "v42", "method": "POST",
		"host": "example.com", "path": `/a "quoted" path`, "status": 201.0, "duration_ms": 1.234,
		"bytes": 42.0, "request_id": "abc123", "remote": "10.0.0.1:5555", "held_ms": 250.0,
	}
	for k, v := range want {
		if lines[0][k] != v {
			t.Errorf("%s: got %#v, want %#v", k, lines[0][k], v)
		}
	}
	ts, err := time.Parse(time.RFC3339Nano, lines[0]["time"].(string))
	if err != nil || ts.Before(start.Truncate(time.Second)) {
		t.Errorf("time %v: %v", lines[0]["time"], err)
	}
	if _, ok := lines[1]["held_ms"]; ok {
		t.Error("held_ms on a request that was not held")
	}
	if lines[1]["status"] != 404.0 || lines[1]["app"] != "" {
		t.Errorf("second line: %v", lines[1])
	}
}

// Lines reach the file within the flush interval, without a close.
func TestAccessLogFlushes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l := newAccessLog(path, testLogger(t))
	if err := l.open(); err != nil {
		t.Fatal(err)
	}
	defer l.close()
	l.request(&proxy.RequestInfo{App: "web", Status: 200}, "v1")
	eventually(t, "the line in the file", func() bool { return len(readLines(t, path)) == 1 })
}

// logrotate renames (or removes) the file: the writer opens a new one at
// the path, and lines go there from then on.
func TestAccessLogReopen(t *testing.T) {
	for _, how := range []string{"rename", "remove"} {
		t.Run(how, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "access.log")
			w := newLogWriter(path, testLogger(t), 5*time.Millisecond, 5*time.Millisecond)
			if err := w.open(); err != nil {
				t.Fatal(err)
			}
			defer w.close()
			w.Write([]byte("{\"n\":1}\n"))
			eventually(t, "line 1 written", func() bool { return len(readLines(t, path)) == 1 })
			if how == "rename" {
				if err := os.Rename(path, path+".1"); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the file reopened", func() bool {
				_, err := os.Stat(path)
				return err == nil
			})
			w.Write([]byte("{\"n\":2}\n"))
			eventually(t, "line 2 in the new file", func() bool { return len(readLines(t, path)) == 1 })
			if how == "rename" {
				if got := readLines(t, path+".1"); len(got) != 1 || got[0]["n"] != 1.0 {
					t.Fatalf("rotated file: %v", got)
				}
			}
		})
	}
}

// A writer that cannot keep up drops lines instead of holding requests, and
// says how many.
func TestAccessLogDropsWhenBehind(t *testing.T) {
	var logs bytes.Buffer
	w := newLogWriter(filepath.Join(t.TempDir(), "a.log"), slog.New(slog.NewTextHandler(&logs, nil)), time.Hour, time.Hour)
	line := []byte(strings.Repeat("x", 1<<20-1) + "\n")
	for i := 0; i < accessLogMaxBuffered>>20+3; i++ { // not opened: nothing is written
		w.Write(line)
	}
	if w.dropped != 3 || len(w.buf) != accessLogMaxBuffered {
		t.Fatalf("dropped %d, buffered %d: want 3 and %d", w.dropped, len(w.buf), accessLogMaxBuffered)
	}
	if err := w.open(); err != nil {
		t.Fatal(err)
	}
	w.close()
	if !strings.Contains(logs.String(), "dropped=3") {
		t.Fatalf("no report of the dropped lines: %s", logs.String())
	}
}

// The hand-made line is byte for byte what slog's JSONHandler writes for
// the same record, hostile strings included.
func TestAccessLineMatchesSlog(t *testing.T) {
	at := time.Date(2026, 11, 21, 14, 46, 58, 123456789, time.FixedZone("X", 3600))
	for _, tt := range []struct {
		info    proxy.RequestInfo
		version string
	}{
		{proxy.RequestInfo{App: "web", Method: "GET", Host: "example.com", Path: "/", Remote: "10.0.0.1:5555",
			RequestID: "abc", Status: 200, Bytes: 512, Duration: 1234567 * time.Nanosecond}, "v42"},
		{proxy.RequestInfo{App: "", Method: "GET", Host: "", Path: "", Status: 404}, ""},
		{proxy.RequestInfo{App: "api", Method: "POST", Host: "h\"o\\st\x00\x1f\x7f", Path: "/a\nb\rc\td<>&\u2028\u2029é\xff\xfe日本",
			Status: 499, Bytes: 1 << 40, Duration: 30 * time.Second, Held: 1500 * time.Microsecond}, "v1.2+build"},
		{proxy.RequestInfo{App: "web", Status: 101, Duration: 90 * time.Minute, Held: time.Microsecond}, "v2"},
	} {
		got := string(appendAccessLine(nil, at, &tt.info, tt.version))
		var want bytes.Buffer
		r := slog.NewRecord(at, slog.LevelInfo, "request", 0)
		r.AddAttrs(
			slog.String("app", tt.info.App), slog.String("version", tt.version),
			slog.String("method", tt.info.Method), slog.String("host", tt.info.Host),
			slog.String("path", tt.info.Path), slog.Int("status", tt.info.Status),
			slog.Float64("duration_ms", float64(tt.info.Duration.Microseconds())/1000),
			slog.Int64("bytes", tt.info.Bytes), slog.String("request_id", tt.info.RequestID),
			slog.String("remote", tt.info.Remote),
		)
		if tt.info.Held > 0 {
			r.AddAttrs(slog.Float64("held_ms", float64(tt.info.Held.Microseconds())/1000))
		}
		slog.NewJSONHandler(&want, nil).Handle(context.Background(), r)
		if got != want.String() {
			t.Errorf("got  %s\nwant %s", got, want.String())
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("not valid JSON: %s", got)
		}
	}
}

func TestPipeChunk(t *testing.T) {
	line := func(n int) string { return strings.Repeat("x", n-1) + "\n" }
	for _, tt := range []struct {
		name string
		b    string
		want int
	}{
		{"small", line(100) + line(100), 200},
		{"exactly PIPE_BUF", line(2048) + line(2048), 4096},
		{"cut at the last line end", line(3000) + line(3000), 3000},
		{"one long line whole", line(10000) + line(10), 10000},
		{"no line end", strings.Repeat("x", 5000), 5000},
	} {
		if got := pipeChunk([]byte(tt.b)); got != tt.want {
			t.Errorf("%s: got %d, want %d", tt.name, got, tt.want)
		}
	}
}
