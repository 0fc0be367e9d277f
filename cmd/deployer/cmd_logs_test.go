package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestLogs(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("GET /v1/apps/web/logs", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "v1/0 GET / 200\nv1/0 GET /healthz 200\n")
	})

	got := run(t, "logs", "-n", "2", "-c", cfg)
	wantCode(t, got, exitOK)
	if want := "v1/0 GET / 200\nv1/0 GET /healthz 200\n"; got.stdout != want {
		t.Errorf("stdout = %q, want %q", got.stdout, want)
	}
	r := d.only(t)
	if n := r.Query["n"]; !slices.Equal(n, []string{"2"}) {
		t.Errorf("n = %q, want 2", n)
	}
	if _, ok := r.Query["follow"]; ok {
		t.Errorf("follow sent without -f: %v", r.Query)
	}
}

// TestLogsFollow checks that -f asks the daemon to follow, prints lines as
// they come, and ends with status 0 when interrupted.
func TestLogsFollow(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("GET /v1/apps/web/logs", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "v1/0 first\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // follow until the client goes
	})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &lineWriter{first: make(chan string, 1)}
	done := make(chan int)
	go func() {
		c := &CLI{Stdout: out, Stderr: io.Discard, Getenv: func(string) string { return "" }}
		done <- c.Run(ctx, []string{"logs", "web", "-f", "-c", cfg})
	}()
	if line := <-out.first; line != "v1/0 first\n" {
		t.Errorf("first output = %q", line)
	}
	cancel() // what Ctrl-C does
	if code := <-done; code != exitOK {
		t.Errorf("exit status %d, want 0", code)
	}
	r := d.only(t)
	if r.Query.Get("follow") != "1" || r.Query.Get("n") != "200" {
		t.Errorf("query = %v, want follow=1 n=200", r.Query)
	}
}

// lineWriter hands its first write to first.
type lineWriter struct {
	mu    sync.Mutex
	b     strings.Builder
	first chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() == 0 {
		w.first <- string(p)
	}
	return w.b.Write(p)
}

func TestParseLogLine(t *testing.T) {
	at := func(clock, version string, instance int, text string) jsonLogLine {
		return jsonLogLine{Time: clock, Version: version, Instance: &instance, Text: text}
	}
	tests := []struct {
		in   string
		want jsonLogLine
	}{
		{"15:04:05.000 v1[0] listening on /srv/run/web/v1-0.sock", at("15:04:05.000", "v1", 0, "listening on /srv/run/web/v1-0.sock")},
		{"00:00:00.001 v1.2.3+b_7-rc[12] GET /x [200]  two  spaces ", at("00:00:00.001", "v1.2.3+b_7-rc", 12, "GET /x [200]  two  spaces ")},
		{"23:59:59.999 v2[1] ", at("23:59:59.999", "v2", 1, "")},
		{"23:59:59.999 v2[1] 12:00:00.000 v9[9] quoted", at("23:59:59.999", "v2", 1, "12:00:00.000 v9[9] quoted")},
		// Not the API's form: all text.
		{"v1/0 GET / 200", jsonLogLine{Text: "v1/0 GET / 200"}},
		{"", jsonLogLine{Text: ""}},
		{"15:04:05.000", jsonLogLine{Text: "15:04:05.000"}},
		{"15:04:05.000 v1[0]", jsonLogLine{Text: "15:04:05.000 v1[0]"}},
		{"15:04:05.000 v1[0]text", jsonLogLine{Text: "15:04:05.000 v1[0]text"}},
		{"5:04:05.000 v1[0] x", jsonLogLine{Text: "5:04:05.000 v1[0] x"}},
		{"15:04:05,000 v1[0] x", jsonLogLine{Text: "15:04:05,000 v1[0] x"}},
		{"15:04:05.000 ../v1[0] x", jsonLogLine{Text: "15:04:05.000 ../v1[0] x"}},
		{"15:04:05.000 v1[-1] x", jsonLogLine{Text: "15:04:05.000 v1[-1] x"}},
		{"15:04:05.000 v1[a] x", jsonLogLine{Text: "15:04:05.000 v1[a] x"}},
		{"15:04:05.000 v1 x", jsonLogLine{Text: "15:04:05.000 v1 x"}},
	}
	for _, tt := range tests {
		got := parseLogLine(tt.in)
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(tt.want)
		if string(g) != string(w) {
			t.Errorf("parseLogLine(%q) = %s, want %s", tt.in, g, w)
		}
	}
}

// logs --json prints one object per line of output, and keeps an app's
// "<" and "&" as they are.
func TestLogsJSON(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("GET /v1/apps/web/logs", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "12:00:01.250 v1[0] GET / 200\n12:00:01.300 v1[1] <b>a & b</b>\nnot a tagged line\n")
	})

	got := run(t, "logs", "--json", "-c", cfg)
	wantCode(t, got, exitOK)
	want := `{"time":"12:00:01.250","version":"v1","instance":0,"text":"GET / 200"}` + "\n" +
		`{"time":"12:00:01.300","version":"v1","instance":1,"text":"<b>a & b</b>"}` + "\n" +
		`{"time":"","version":"","instance":null,"text":"not a tagged line"}` + "\n"
	if got.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", got.stdout, want)
	}
}

// logs -f --json follows a daemon upgrade as logs -f does (a response ended
// by the Deployer-Logs-End: handover trailer, then after=handover), one
// JSON object per line, a last line without its newline too.
func TestLogsFollowJSONHandover(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("GET /v1/apps/web/logs", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("after") != "handover" {
			w.Header().Set("Trailer", logsEndTrailer)
			io.WriteString(w, "12:00:01.000 v1[0] tick 1\n12:00:02.000 v1[0] tick 2\n")
			w.Header().Set(logsEndTrailer, "handover")
			return
		}
		io.WriteString(w, "12:00:03.000 v1[0] tick 3\n12:00:04.000 v1[0] tick") // the daemon went
	})

	got := run(t, "logs", "-f", "--json", "-c", cfg)
	wantCode(t, got, exitOK)
	var ticks []string
	for _, line := range strings.Split(strings.TrimSuffix(got.stdout, "\n"), "\n") {
		var l jsonLogLine
		if err := json.Unmarshal([]byte(line), &l); err != nil || l.Version != "v1" || l.Instance == nil || *l.Instance != 0 {
			t.Fatalf("line %q: %+v, %v", line, l, err)
		}
		ticks = append(ticks, l.Time+" "+l.Text)
	}
	want := []string{"12:00:01.000 tick 1", "12:00:02.000 tick 2", "12:00:03.000 tick 3", "12:00:04.000 tick"}
	if !slices.Equal(ticks, want) {
		t.Errorf("lines %q, want %q", ticks, want)
	}
	if !strings.Contains(got.stderr, "the daemon was upgraded: following the new one") {
		t.Errorf("stderr = %q, want the note about the upgrade", got.stderr)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.reqs) != 2 || d.reqs[1].Query.Get("after") != "handover" {
		t.Errorf("requests %+v, want a second one with after=handover", d.reqs)
	}
}
