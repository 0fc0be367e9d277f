package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape GETs /metrics from addr and parses it.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	res, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("scrape: status %d", res.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("scrape: parsing: %v", err)
	}
	return fams
}

// sample returns the value of name{labels} (exactly those labels): a
// counter's or gauge's value, a histogram's count.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
series:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
				continue series
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// hasSeries reports whether name has a series whose labels include want.
func hasSeries(fams map[string]*dto.MetricFamily, name string, want map[string]string) bool {
	f := fams[name]
	if f == nil {
		return false
	}
	for _, m := range f.GetMetric() {
		n := 0
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
				n++
			}
		}
		if n == len(want) {
			return true
		}
	}
	return false
}

// TestMetricsAfterSwap runs the daemon with metrics and an access log,
// sends traffic, swaps v1 → v2, and checks what a scrape over HTTP says:
// every request counted under the version that answered it, one swap with
// its duration, v2's instance healthy and v1 gone once drained, requests
// held during a pause, a crash restart after kill -9; /_deployer/health
// answers 200; the access log has one line per proxied request.
func TestMetricsAfterSwap(t *testing.T) {
	e := newEnv(t)
	e.release("v1")
	e.release("v2")
	metrics := freeAddr(t)
	e.writeConfig(fmt.Sprintf(`[deployer]
listen = "%%ADDR%%"
state_dir = "run"
queue_timeout = "10s"
drain_timeout = "5s"
metrics = %q
access_log = "log/access.log"

[apps.web]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
settle = "100ms"
ready_timeout = "10s"
stop_timeout = "5s"
`, metrics))
	e.start()

	if code, body, _ := e.get("/_deployer/health"); code != 200 || body != "ok\n" {
		t.Fatalf("/_deployer/health: got %d %q, want 200 \"ok\\n\"", code, body)
	}
	get := func(n int, version string) {
		t.Helper()
		for i := 0; i < n; i++ {
			if code, _, h := e.get("/"); code != 200 || h.Get("X-Version") != version {
				t.Fatalf("GET /: got %d from %q, want 200 from %s", code, h.Get("X-Version"), version)
			}
		}
	}
	const n1, n2 = 25, 35
	get(n1, "v1")
	e.mustCLI("swap", "web", "v2")
	get(n2, "v2")

	web := map[string]string{"app": "web"}
	healthy := func(version string) map[string]string {
		return map[string]string{"app": "web", "version": version, "instance": "0"}
	}
	var fams map[string]*dto.MetricFamily
	waitFor(t, "v1 drained: no deployer_instance_healthy series of v1", 20*time.Second, func() bool {
		fams = scrape(t, metrics)
		return !hasSeries(fams, "deployer_instance_healthy", map[string]string{"version": "v1"})
	})
	if v, ok := sample(fams, "deployer_instance_healthy", healthy("v2")); !ok || v != 1 {
		t.Errorf("deployer_instance_healthy of v2: got %v (present %v), want 1", v, ok)
	}
	req := func(version string) map[string]string {
		return map[string]string{"app": "web", "version": version, "status": "200"}
	}
	got1, _ := sample(fams, "deployer_requests_total", req("v1"))
	got2, _ := sample(fams, "deployer_requests_total", req("v2"))
	if got1 != n1 || got2 != n2 {
		t.Errorf("deployer_requests_total status 200: v1 %v, v2 %v; want %d and %d", got1, got2, n1, n2)
	}
	total := 0.0
	for _, m := range fams["deployer_requests_total"].GetMetric() {
		total += m.GetCounter().GetValue()
	}
	if total != n1+n2 {
		t.Errorf("deployer_requests_total, all series: got %v, want %d (health checks are not proxied)", total, n1+n2)
	}
	if n, _ := sample(fams, "deployer_request_duration_seconds", web); n != n1+n2 {
		t.Errorf("deployer_request_duration_seconds count: got %v, want %d", n, n1+n2)
	}
	for outcome, want := range map[string]float64{"ok": 1, "failed": 0, "timeout": 0, "refused": 0} {
		if v, ok := sample(fams, "deployer_swaps_total", map[string]string{"app": "web", "outcome": outcome}); !ok || v != want {
			t.Errorf("deployer_swaps_total{outcome=%q}: got %v (present %v), want %v", outcome, v, ok, want)
		}
	}
	if n, _ := sample(fams, "deployer_swap_duration_seconds", web); n != 1 {
		t.Errorf("deployer_swap_duration_seconds count: got %v, want 1", n)
	}
	if v, ok := sample(fams, "deployer_requests_in_flight", web); !ok || v != 0 {
		t.Errorf("deployer_requests_in_flight: got %v (present %v), want 0", v, ok)
	}
	for _, name := range []string{"deployer_build_info", "go_goroutines", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}

	// A request held during a pause shows in the held gauge.
	e.mustCLI("pause", "web")
	held := getInBackground(e.url("/"))
	waitFor(t, "deployer_requests_held 1 during the pause", 10*time.Second, func() bool {
		v, _ := sample(scrape(t, metrics), "deployer_requests_held", web)
		return v == 1
	})
	e.mustCLI("resume", "web")
	if r := <-held; r.err != nil || r.code != 200 {
		t.Fatalf("held request: %d %v, want 200", r.code, r.err)
	}
	if v, _ := sample(scrape(t, metrics), "deployer_requests_held", web); v != 0 {
		t.Errorf("deployer_requests_held after resume: got %v, want 0", v)
	}

	// kill -9 of the app: one crash restart.
	if v, ok := sample(scrape(t, metrics), "deployer_restarts_total", web); !ok || v != 0 {
		t.Fatalf("deployer_restarts_total before the kill: got %v (present %v), want 0", v, ok)
	}
	pid := e.appStatus("web").Instances[0].PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deployer_restarts_total 1 and v2 healthy again", 20*time.Second, func() bool {
		fams := scrape(t, metrics)
		r, _ := sample(fams, "deployer_restarts_total", web)
		h, _ := sample(fams, "deployer_instance_healthy", healthy("v2"))
		return r == 1 && h == 1
	})

	// The access log: one line per proxied request (the health checks are
	// not), flushed within 100 ms.
	path := filepath.Join(e.dir, "log", "access.log")
	var lines []map[string]any
	waitFor(t, "the access log's lines", 5*time.Second, func() bool {
		lines = accessLines(t, path)
		return len(lines) >= n1+n2+1
	})
	if len(lines) != n1+n2+1 {
		t.Fatalf("access log: %d lines, want %d", len(lines), n1+n2+1)
	}
	versions := map[any]int{}
	for i, l := range lines {
		versions[l["version"]]++
		if l["app"] != "web" || l["method"] != "GET" || l["path"] != "/" || l["status"] != 200.0 ||
			l["request_id"] == "" || l["remote"] == "" || l["msg"] != "request" {
			t.Errorf("access log line %d: %v", i, l)
		}
		if _, ok := l["duration_ms"].(float64); !ok {
			t.Errorf("access log line %d: duration_ms %v", i, l["duration_ms"])
		}
	}
	if versions["v1"] != n1 || versions["v2"] != n2+1 {
		t.Errorf("access log lines by version: %v, want v1 %d, v2 %d", versions, n1, n2+1)
	}
	if held, ok := lines[len(lines)-1]["held_ms"].(float64); !ok || held <= 0 {
		t.Errorf("the held request's line has held_ms %v, want > 0", lines[len(lines)-1]["held_ms"])
	}
}

// accessLines parses the JSON lines of the access log at path.
func accessLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	for _, s := range strings.SplitAfter(string(b), "\n") {
		if s == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("access log line %q: %v", s, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// TestMetricsAcrossUpgrade: the metrics socket and /_deployer/health are
// handed to the new daemon by a self-upgrade. Scrapes and health checks
// running all along (keep-alive, so some reach the old daemon after the
// hand-over) never fail; the new daemon's counters start from zero.
func TestMetricsAcrossUpgrade(t *testing.T) {
	u := newUpgradeEnv(t)
	u.configure("5s", "")
	metrics := freeAddr(t)
	b, err := os.ReadFile(u.config)
	if err != nil {
		t.Fatal(err)
	}
	u.writeConfig(strings.Replace(string(b), "state_dir = \"run\"\n", fmt.Sprintf("state_dir = \"run\"\nmetrics = %q\n", metrics), 1))
	u.startDaemon()

	const n = 10
	for i := 0; i < n; i++ {
		if code, _, _ := u.get("/"); code != 200 {
			t.Fatalf("GET /: %d", code)
		}
	}
	if v, _ := sample(scrape(t, metrics), "deployer_requests_total", map[string]string{"app": "web", "version": "v1", "status": "200"}); v != n {
		t.Fatalf("deployer_requests_total before the upgrade: got %v, want %d", v, n)
	}

	// Pollers of /metrics and /_deployer/health, each on one keep-alive
	// client, until stop.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var polls, failures atomic.Int64
	var firstFailure atomic.Value
	poll := func(url string) {
		defer wg.Done()
		c := &http.Client{Timeout: 5 * time.Second}
		defer c.CloseIdleConnections()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			res, err := c.Get(url)
			if err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					err = fmt.Errorf("status %d", res.StatusCode)
				}
			}
			polls.Add(1)
			if err != nil {
				failures.Add(1)
				firstFailure.CompareAndSwap(nil, fmt.Sprintf("%s: %v", url, err))
			}
		}
	}
	wg.Add(2)
	go poll("http://" + metrics + "/metrics")
	go poll(u.url("/_deployer/health"))

	oldPID, newPID := u.upgrade()
	waitGone(t, "the old daemon", oldPID, 15*time.Second)
	before := polls.Load()
	waitFor(t, "polls after the old daemon exited", 10*time.Second, func() bool { return polls.Load() > before+20 })
	close(stop)
	wg.Wait()
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of %d scrapes and health checks failed across the upgrade; first: %v", f, polls.Load(), firstFailure.Load())
	}
	t.Logf("%d scrapes and health checks across the upgrade (daemon %d → %d), none failed", polls.Load(), oldPID, newPID)

	// The new daemon counts from zero (a counter reset to Prometheus).
	if code, _, _ := u.get("/"); code != 200 {
		t.Fatalf("GET / after the upgrade: %d", code)
	}
	if v, _ := sample(scrape(t, metrics), "deployer_requests_total", map[string]string{"app": "web", "version": "v1", "status": "200"}); v != 1 {
		t.Fatalf("deployer_requests_total after the upgrade: got %v, want 1 (a new daemon's count)", v)
	}
}
