package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzControlRequest sends arbitrary control requests (method, path with
// query, body) to the real control handler of a daemon whose one app, web,
// cannot start (its command does not exist, so no process is ever run).
// Whatever arrives: no panic, no 5xx (but the 501 of an upgrade, which this
// daemon cannot do), every error a JSON APIError, and no file created
// outside state_dir.
func FuzzControlRequest(f *testing.F) {
	root, err := os.MkdirTemp("", "fz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(root) })
	stateDir := filepath.Join(root, "state")
	config := filepath.Join(root, "deploy.toml")
	src := fmt.Sprintf(`[deployer]
state_dir = %q
[apps.web]
command = [%q, "{socket}"]
version = "v1"
dir = "{version}"
`, stateDir, filepath.Join(root, "no-such-app"))
	if err := os.WriteFile(config, []byte(src), 0o644); err != nil {
		f.Fatal(err)
	}
	cfg, err := LoadConfig(config)
	if err != nil {
		f.Fatal(err)
	}
	d, err := NewDaemon(cfg, DaemonOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(d.cancel)
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		f.Fatal(err)
	}
	h := d.controlHandler()
	// The request's client is gone before it starts: logs?follow=1 returns
	// at once instead of waiting for lines. Operations run on the daemon's
	// context, not the request's, so they still run.
	gone, cancel := context.WithCancel(context.Background())
	cancel()

	for _, s := range []struct{ method, target, body string }{
		{"GET", "/v1/status", ""},
		{"GET", "/v1/status?app=web", ""},
		{"POST", "/v1/apps/web/swap", `{"version":"v2"}`},
		{"POST", "/v1/apps/web/swap", `{"version":"../../x"}`},
		{"POST", "/v1/apps/web/start", `{"version":"v1","wait_drain":true,"timeout":"1s"}`},
		{"POST", "/v1/apps/web/pause", ""},
		{"POST", "/v1/apps/%2e%2e/resume", ""},
		{"GET", "/v1/apps/web/logs?n=3&follow=1", ""},
		{"POST", "/v1/upgrade", ""},
		{"PUT", "/v1/routes", "{}"},
	} {
		f.Add(s.method, s.target, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, method, target string, body []byte) {
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		r, err := http.NewRequestWithContext(gone, method, "http://deployer"+target, bytes.NewReader(body))
		if err != nil {
			return // not a request net/http would ever hand a handler
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)

		upgrade := r.Method == http.MethodPost && r.URL.Path == "/v1/upgrade"
		if w.Code >= 500 && !(upgrade && w.Code == http.StatusNotImplemented) {
			t.Fatalf("%s %q %q: got %d, want no 5xx; body %s", method, target, body, w.Code, w.Body)
		}
		if w.Code >= 400 {
			var e APIError
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code == "" || e.Error == "" {
				t.Fatalf("%s %q: %d answer is not an APIError: %q", method, target, w.Code, w.Body)
			}
		}
		checkOnly(t, root, "deploy.toml", "state")
		checkOnly(t, stateDir, "state.json", "web")
	})
}

// checkOnly fails t if dir holds anything but names.
func checkOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !slices.Contains(names, e.Name()) {
			t.Fatalf("%s: %s was created, want only %v", dir, e.Name(), names)
		}
	}
}
