package supervisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/deployer/deployer/proxy"
)

// newObsDaemon returns a Daemon for one app, web (never started), with
// metrics on 127.0.0.1:0 and the given extra [deployer] lines. Its metrics
// listener, once started, is sent on the returned channel.
func newObsDaemon(t *testing.T, extra string) (*Daemon, <-chan net.Listener) {
	t.Helper()
	stateDir := socketDir(t)
	cfg := loadString(t, fmt.Sprintf(`
[deployer]
state_dir = %q
metrics = "127.0.0.1:0"
%s
[apps.web]
command = ["/bin/false"]
version = "v1"
`, stateDir, extra))
	ls := make(chan net.Listener, 1)
	d, err := NewDaemon(cfg, DaemonOptions{
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Listen: func(network, addr string) (net.Listener, error) {
			l, err := net.Listen(network, addr)
			if err == nil {
				ls <- l
			}
			return l, err
		},
	})
	if err != nil {
		t.Fatalf("NewDaemon: %v", err)
	}
	close(d.acceptGate) // as Run does once ready: the metrics listener accepts
	t.Cleanup(func() {
		d.cancel()
	})
	return d, ls
}

// metricValue returns the value of the series name{labels} (exactly those
// labels) in d's registry: a counter's or gauge's value, a histogram's
// sample count.
func metricValue(t *testing.T, d *Daemon, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := d.observer().m.reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
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
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue(), true
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func wantMetric(t *testing.T, d *Daemon, name string, labels map[string]string, want float64) {
	t.Helper()
	got, ok := metricValue(t, d, name, labels)
	if !ok {
		t.Fatalf("%s%v: no such series", name, labels)
	}
	if got != want {
		t.Fatalf("%s%v: got %v, want %v", name, labels, got, want)
	}
}

func TestVersionName(t *testing.T) {
	for key, want := range map[string]string{"v42#3": "v42", "v1": "v1", "": "", "a#b#c": "a"} {
		if got := versionName(key); got != want {
			t.Errorf("versionName(%q): got %q, want %q", key, got, want)
		}
	}
}

func TestRequestMetrics(t *testing.T) {
	d, _ := newObsDaemon(t, "")
	o := d.observer()
	for _, info := range []proxy.RequestInfo{
		{App: "web", Version: "v1#1", Status: 200, Duration: 2 * time.Millisecond},
		{App: "web", Version: "v1#2", Status: 200, Duration: 3 * time.Millisecond}, // a restart: same name
		{App: "web", Version: "v2#3", Status: 200, Duration: time.Millisecond},
		{App: "web", Version: "v2#3", Status: 502},
		{App: "web", Version: "v2#3", Status: 101, Duration: time.Hour}, // a websocket
		{App: "", Status: 404},
	} {
		o.onRequest(&info)
	}
	wantMetric(t, d, "deployer_requests_total", map[string]string{"app": "web", "version": "v1", "status": "200"}, 2)
	wantMetric(t, d, "deployer_requests_total", map[string]string{"app": "web", "version": "v2", "status": "200"}, 1)
	wantMetric(t, d, "deployer_requests_total", map[string]string{"app": "web", "version": "v2", "status": "502"}, 1)
	wantMetric(t, d, "deployer_requests_total", map[string]string{"app": "web", "version": "v2", "status": "101"}, 1)
	wantMetric(t, d, "deployer_requests_total", map[string]string{"app": "", "version": "", "status": "404"}, 1)
	// The websocket is counted, not timed.
	wantMetric(t, d, "deployer_request_duration_seconds", map[string]string{"app": "web"}, 4)
	wantMetric(t, d, "deployer_request_duration_seconds", map[string]string{"app": ""}, 1)
}

// Requests from many goroutines at once, new series among them: every one
// is counted once (go test -race checks the cache's copy on write).
func TestRequestMetricsConcurrent(t *testing.T) {
	d, _ := newObsDaemon(t, "")
	o := d.observer()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 500; i++ {
				o.onRequest(&proxy.RequestInfo{App: "web", Version: fmt.Sprintf("v%d#1", i%5), Status: 200 + i%3})
			}
		})
	}
	wg.Wait()
	total := 0.0
	for v := 0; v < 5; v++ {
		for s := 200; s < 203; s++ {
			n, _ := metricValue(t, d, "deployer_requests_total", map[string]string{"app": "web", "version": fmt.Sprintf("v%d", v), "status": fmt.Sprint(s)})
			total += n
		}
	}
	if total != 8*500 {
		t.Fatalf("requests counted: got %v, want %d", total, 8*500)
	}
}

func TestSwapMetrics(t *testing.T) {
	d, _ := newObsDaemon(t, "")
	d.observer().m.initApp("web")
	// Every outcome is there at zero before the first swap.
	for _, out := range []string{"ok", "failed", "timeout", "refused"} {
		wantMetric(t, d, "deployer_swaps_total", map[string]string{"app": "web", "outcome": out}, 0)
	}
	wantMetric(t, d, "deployer_restarts_total", map[string]string{"app": "web"}, 0)

	a := d.apps["web"]
	a.d.observer().swapDone("web", &Result{OK: true, DurationMS: 1500}, nil)
	a.d.observer().swapDone("web", &Result{OK: true, DurationMS: 700}, nil)
	a.d.observer().swapDone("web", &Result{Error: "unhealthy", DurationMS: 10000}, nil)
	a.d.observer().swapDone("web", &Result{Outcome: OutcomeTimeout, DurationMS: 5000}, nil)
	a.d.observer().swapDone("web", nil, ErrOpRunning)
	a.d.observer().restarted("web")
	wantMetric(t, d, "deployer_swaps_total", map[string]string{"app": "web", "outcome": "ok"}, 2)
	wantMetric(t, d, "deployer_swaps_total", map[string]string{"app": "web", "outcome": "failed"}, 1)
	wantMetric(t, d, "deployer_swaps_total", map[string]string{"app": "web", "outcome": "timeout"}, 1)
	wantMetric(t, d, "deployer_swaps_total", map[string]string{"app": "web", "outcome": "refused"}, 1)
	// A refused swap has no duration.
	wantMetric(t, d, "deployer_swap_duration_seconds", map[string]string{"app": "web"}, 4)
	wantMetric(t, d, "deployer_restarts_total", map[string]string{"app": "web"}, 1)

	// Without metrics (or any observer) the hooks do nothing.
	var none *observer
	none.swapDone("web", &Result{OK: true}, nil)
	none.restarted("web")
}

// The gauges are read at scrape time: requests held at a paused app, one in
// flight to a backend, the health of serving and draining instances, and no
// series of a version once it is gone.
func TestStateMetrics(t *testing.T) {
	d, _ := newObsDaemon(t, "")
	release := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer backend.Close()
	defer close(release)
	addr := strings.TrimPrefix(backend.URL, "http://")
	d.proxy.Serve("web", "v1#1", []proxy.Target{{Network: "tcp", Addr: addr}})

	inFlight := map[string]string{"app": "web"}
	wantMetric(t, d, "deployer_requests_in_flight", inFlight, 0)
	wantMetric(t, d, "deployer_requests_held", inFlight, 0)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	send := func() {
		go d.publicHandler().ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(ctx, "GET", "http://x/", nil))
	}
	send()
	eventually(t, "a request in flight", func() bool {
		n, _ := metricValue(t, d, "deployer_requests_in_flight", inFlight)
		return n == 1
	})
	d.proxy.Hold("web")
	send()
	send()
	eventually(t, "two requests held", func() bool {
		n, _ := metricValue(t, d, "deployer_requests_held", inFlight)
		return n == 2
	})

	a := d.apps["web"]
	cfg := a.cfg.Load()
	cfg2 := *cfg
	cfg2.Instances = 2
	v1, v2, v2again := newVersion("v1", cfg), newVersion("v2", &cfg2), newVersion("v2", &cfg2)
	v1.instances[0].setHealthy(true)
	v2.instances[0].setHealthy(true)
	v2again.instances[1].setHealthy(true)
	a.mu.Lock()
	a.serving = v2again // a restart of v2: the old launch drains
	a.draining[v1] = struct{}{}
	a.draining[v2] = struct{}{}
	a.mu.Unlock()
	healthy := func(version, instance string) map[string]string {
		return map[string]string{"app": "web", "version": version, "instance": instance}
	}
	wantMetric(t, d, "deployer_instance_healthy", healthy("v1", "0"), 1)
	wantMetric(t, d, "deployer_instance_healthy", healthy("v2", "0"), 0) // the serving launch's
	wantMetric(t, d, "deployer_instance_healthy", healthy("v2", "1"), 1)

	a.mu.Lock()
	delete(a.draining, v1)
	delete(a.draining, v2)
	a.mu.Unlock()
	if _, ok := metricValue(t, d, "deployer_instance_healthy", healthy("v1", "0")); ok {
		t.Fatal("deployer_instance_healthy of v1 still reported after it drained")
	}
	a.mu.Lock()
	a.serving = nil
	a.mu.Unlock()
}

// The endpoint serves the registry over HTTP, Go and process metrics
// included, on a listener from DaemonOptions.Listen; stop closes it.
func TestMetricsEndpoint(t *testing.T) {
	d, ls := newObsDaemon(t, "")
	stop, err := d.startObservability()
	if err != nil {
		t.Fatal(err)
	}
	l := <-ls
	d.observer().onRequest(&proxy.RequestInfo{App: "web", Version: "v1#1", Status: 200})
	url := "http://" + l.Addr().String() + "/metrics"
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d\n%s", res.StatusCode, body)
	}
	for _, want := range []string{
		`deployer_requests_total{app="web",status="200",version="v1"} 1`,
		`deployer_swaps_total{app="web",outcome="ok"} 0`,
		`deployer_build_info{go_version="go`,
		"go_goroutines ",
		"process_open_fds ",
		`deployer_requests_held{app="web"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	stop()
	if d.observer() != nil {
		t.Error("observer still registered after stop")
	}
	if res, err := http.Get(url); err == nil {
		res.Body.Close()
		t.Fatal("metrics endpoint still answers after stop")
	}
}

// A metrics address already taken makes the start fail, with nothing left
// running.
func TestMetricsListenError(t *testing.T) {
	d, _ := newObsDaemon(t, "")
	d.opts.Listen = func(network, addr string) (net.Listener, error) {
		return nil, fmt.Errorf("address in use")
	}
	if _, err := d.startObservability(); err == nil || !strings.Contains(err.Error(), "metrics") {
		t.Fatalf("startObservability: got %v, want a metrics listen error", err)
	}
}

// Neither metrics nor access log: no hook in the proxy, nothing to stop.
func TestNoObserver(t *testing.T) {
	d := newTestDaemon(t)
	if d.observer() != nil || d.proxyOptions(d.config()).OnRequest != nil {
		t.Fatal("an observer without metrics or access_log")
	}
	stop, err := d.startObservability()
	if err != nil {
		t.Fatal(err)
	}
	stop()
}

// /_deployer/health is answered before routing (web is routed at "/"):
// 200 while the daemon serves and after a hand-over, 503 once it shuts down.
func TestHealthEndpoint(t *testing.T) {
	d := newTestDaemon(t)
	h := d.publicHandler()
	get := func(method, target string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, "http://lb.example"+target, nil))
		return w
	}
	if w := get("GET", "/_deployer/health"); w.Code != 200 || w.Body.String() != "ok\n" {
		t.Fatalf("GET health: got %d %q, want 200 \"ok\\n\"", w.Code, w.Body)
	}
	if w := get("HEAD", "/_deployer/health?probe=1"); w.Code != 200 {
		t.Fatalf("HEAD health: got %d, want 200", w.Code)
	}
	if w := get("POST", "/_deployer/health"); w.Code != 405 || w.Header().Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST health: got %d (Allow %q), want 405", w.Code, w.Header().Get("Allow"))
	}
	// Other paths go to the proxy: web is not running, so nothing answers
	// "ok" there (a held request ends with the client).
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequestWithContext(ctx, "GET", "http://lb.example/_deployer/healthz", nil))
	if w.Body.String() == "ok\n" {
		t.Fatal("/_deployer/healthz answered by the health endpoint")
	}

	d.handedOver.Store(true)
	d.cancel()
	if w := get("GET", "/_deployer/health"); w.Code != 200 {
		t.Fatalf("after a hand-over: got %d, want 200 (the new daemon serves this address)", w.Code)
	}
	d.handedOver.Store(false)
	if w := get("GET", "/_deployer/health"); w.Code != 503 {
		t.Fatalf("shutting down: got %d, want 503", w.Code)
	}
}

// BenchmarkOnRequest is the proxy's per-request hook with metrics on (the
// series exist, as in steady state), and with the access log too.
func BenchmarkOnRequest(b *testing.B) {
	cfg, err := LoadConfig(writeBenchConfig(b))
	if err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, d *Daemon) {
		o := d.observer()
		info := &proxy.RequestInfo{
			App: "web", Version: "v42#3", Method: "GET", Host: "example.com", Path: "/api/items",
			Remote: "10.0.0.1:55555", RequestID: "0f8a2c4e5b6d7e8f", Status: 200, Bytes: 512,
			Start: time.Now(), Duration: 1500 * time.Microsecond,
		}
		o.onRequest(info)
		b.ReportAllocs()
		b.ResetTimer()
		// CPU time, the flusher's and the GC's included: unlike ns/op it
		// holds on a busy machine.
		cpu0 := cpuTime()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				o.onRequest(info)
			}
		})
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	}
	b.Run("metrics", func(b *testing.B) {
		d, err := NewDaemon(cfg, DaemonOptions{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		run(b, d)
	})
	b.Run("metrics+accesslog", func(b *testing.B) {
		c := *cfg
		c.Deployer.Public.AccessLog = filepath.Join(b.TempDir(), "access.log")
		d, err := NewDaemon(&c, DaemonOptions{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		if err := d.observer().access.open(); err != nil {
			b.Fatal(err)
		}
		defer d.observer().access.close()
		run(b, d)
	})
}

func writeBenchConfig(b *testing.B) string {
	dir := b.TempDir()
	path := filepath.Join(dir, "deploy.toml")
	src := fmt.Sprintf("[deployer]\nstate_dir = %q\nmetrics = \"127.0.0.1:0\"\n[apps.web]\ncommand = [\"/bin/false\"]\nversion = \"v1\"\n", dir)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
