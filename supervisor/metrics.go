package supervisor

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/deployer/deployer/proxy"
)

// Prometheus metrics ([deployer] metrics) and the access log ([deployer]
// access_log). Both are fed by the proxy's OnRequest hook and by one-line
// hooks where a swap ends and a crashed process is restarted; gauges (in
// flight, held, instance health) are read from the proxy and the apps at
// scrape time, so they cost nothing per request.
//
// Counters live in this daemon's memory: after a self-upgrade the new daemon
// starts them from zero, which Prometheus's rate() and increase() read as a
// counter reset.

// Buckets of the histograms, in seconds.
var (
	requestBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	swapBuckets    = []float64{.25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
)

// outcomeRefused is deployer_swaps_total's outcome for an operation that
// never began: another one was running, no previous version to roll back
// to, nothing serving to restart.
const outcomeRefused = "refused"

// observer is what a daemon does for metrics and the access log; either may
// be off. A nil *observer does nothing.
type observer struct {
	d      *Daemon
	m      *metrics   // nil without [deployer] metrics
	access *accessLog // nil without [deployer] access_log
}

// observer returns d's observer, nil when neither metrics nor the access log
// is on.
func (d *Daemon) observer() *observer {
	return d.obs.Load()
}

// newObserver prepares metrics and the access log as cfg asks, for the
// proxy's OnRequest; nil when neither is on. Nothing is opened until
// startObservability.
func (d *Daemon) newObserver(cfg *Config) *observer {
	pub := cfg.Deployer.Public
	if pub.Metrics == "" && pub.AccessLog == "" {
		return nil
	}
	o := &observer{d: d}
	if pub.Metrics != "" {
		o.m = newMetrics(d)
	}
	if pub.AccessLog != "" {
		o.access = newAccessLog(pub.AccessLog, d.log)
	}
	d.obs.Store(o)
	return o
}

// startObservability starts the metrics endpoint and the access log, as
// [deployer] metrics and access_log ask; stop ends them, flushing the
// access log.
func (d *Daemon) startObservability() (stop func(), err error) {
	o := d.observer()
	if o == nil {
		return func() {}, nil
	}
	done := make(chan struct{})
	var srv *http.Server
	if o.m != nil {
		for _, name := range d.config().AppNames() {
			o.m.initApp(name)
		}
		addr := d.config().Deployer.Public.Metrics
		if srv, err = o.serveMetrics(addr); err != nil {
			d.obs.Store(nil)
			return nil, err
		}
		d.log.Info("metrics listening", "addr", addr)
		go func() {
			// After a hand-over the new daemon accepts on the same socket
			// (tableflip): stop answering scrapes with this one's counters.
			select {
			case <-d.handoverC:
				srv.Close()
			case <-done:
			}
		}()
	}
	if o.access != nil {
		if err := o.access.open(); err != nil {
			if srv != nil {
				close(done)
				srv.Close()
			}
			d.obs.Store(nil)
			return nil, err
		}
	}
	return func() {
		if srv != nil {
			close(done)
			srv.Close()
		}
		if o.access != nil {
			o.access.close()
		}
		d.obs.Store(nil)
	}, nil
}

// serveMetrics serves /metrics on addr, a listener from DaemonOptions.Listen
// so a self-upgrade hands it to the next daemon and no scrape is refused.
func (o *observer) serveMetrics(addr string) (*http.Server, error) {
	l, err := o.d.listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("supervisor: metrics: listen %s: %w", addr, err)
	}
	errLog := slog.NewLogLogger(o.d.log.Handler(), slog.LevelWarn)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.m.reg, promhttp.HandlerOpts{
		ErrorLog: errLog,
		// A collector's error leaves its metrics out, not the whole scrape.
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            o.m.reg,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	go srv.Serve(l)
	return srv, nil
}

// onRequest is the proxy's OnRequest hook: on the request's goroutine, once
// per request. With metrics only it allocates nothing.
func (o *observer) onRequest(info *proxy.RequestInfo) {
	version := versionName(info.Version)
	if o.m != nil {
		o.m.request(info.App, version, info.Status, info.Duration)
	}
	if o.access != nil {
		o.access.request(info, version)
	}
}

// versionName is the version's name in a proxy version key ("v42#3" →
// "v42"): labels by name keep the series count to one per deployed version,
// not one per launch.
func versionName(key string) string {
	if i := strings.IndexByte(key, '#'); i >= 0 {
		return key[:i]
	}
	return key
}

// swapDone counts a swap (swap, rollback, restart) that ended with res, or
// was refused with err.
func (o *observer) swapDone(app string, res *Result, err error) {
	if o == nil || o.m == nil {
		return
	}
	outcome := outcomeRefused
	if err == nil && res != nil {
		r := *res
		r.setOutcome()
		outcome = r.Outcome
		o.m.swapDuration.WithLabelValues(app).Observe(float64(res.DurationMS) / 1000)
	}
	o.m.swaps.WithLabelValues(app, outcome).Inc()
}

// restarted counts a crash restart: a process of a serving version exited
// on its own and is being started again.
func (o *observer) restarted(app string) {
	if o == nil || o.m == nil {
		return
	}
	o.m.restarts.WithLabelValues(app).Inc()
}

// metrics is one daemon's Prometheus registry (not the global one: tests
// run many daemons in one process) and its request series cache.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	swaps        *prometheus.CounterVec
	swapDuration *prometheus.HistogramVec
	restarts     *prometheus.CounterVec

	// series caches the children of requests and duration per (app,
	// version, status), copied on write: the hot path does one map lookup
	// and no label hashing, no allocation.
	mu     sync.Mutex // serializes writers of series
	series atomic.Pointer[map[seriesKey]requestSeries]
}

type seriesKey struct {
	app, version string
	status       int
}

type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

func newMetrics(d *Daemon) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deployer_requests_total",
			Help: "Requests answered by the proxy, by app, version name and status code (app and version empty when no route matched or no version answered).",
		}, []string{"app", "version", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "deployer_request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its response, waiting at the gate included; upgraded connections (101) are not observed.",
			Buckets: requestBuckets,
		}, []string{"app"}),
		swaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deployer_swaps_total",
			Help: "Swaps, rollbacks and restarts by outcome: ok, failed, timeout (the request's --timeout passed), refused (never began).",
		}, []string{"app", "outcome"}),
		swapDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "deployer_swap_duration_seconds",
			Help:    "Duration of swaps, rollbacks and restarts that began, whatever their outcome (with --wait-drain, the drain included).",
			Buckets: swapBuckets,
		}, []string{"app"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deployer_restarts_total",
			Help: "Crash restarts: processes of a serving version that exited on their own and were started again.",
		}, []string{"app"}),
	}
	m.series.Store(&map[seriesKey]requestSeries{})
	m.reg.MustRegister(m.requests, m.duration, m.swaps, m.swapDuration, m.restarts,
		newStateCollector(d), buildInfo(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// initApp creates app's swap and restart series at zero, so rate() and
// alerts on them work before the first event.
func (m *metrics) initApp(app string) {
	for _, o := range []string{OutcomeOK, OutcomeFailed, OutcomeTimeout, outcomeRefused} {
		m.swaps.WithLabelValues(app, o)
	}
	m.swapDuration.WithLabelValues(app)
	m.restarts.WithLabelValues(app)
}

// request counts one request.
func (m *metrics) request(app, version string, status int, d time.Duration) {
	s, ok := (*m.series.Load())[seriesKey{app, version, status}]
	if !ok {
		s = m.newSeries(app, version, status)
	}
	s.count.Inc()
	if status != http.StatusSwitchingProtocols {
		// A websocket's duration is its lifetime, not a latency.
		s.duration.Observe(d.Seconds())
	}
}

// newSeries adds the series of (app, version, status) to the cache.
func (m *metrics) newSeries(app, version string, status int) requestSeries {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.series.Load()
	k := seriesKey{app, version, status}
	if s, ok := old[k]; ok {
		return s
	}
	// The request's strings may be views into larger ones (version keys,
	// hosts): the cache keeps its own copies.
	k.app, k.version = strings.Clone(app), strings.Clone(version)
	s := requestSeries{
		count:    m.requests.WithLabelValues(k.app, k.version, strconv.Itoa(status)),
		duration: m.duration.WithLabelValues(k.app),
	}
	next := make(map[seriesKey]requestSeries, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[k] = s
	m.series.Store(&next)
	return s
}

// buildInfo is deployer_build_info{version, go_version} 1.
func buildInfo() prometheus.Collector {
	version := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "deployer_build_info",
		Help:        "The deployer binary serving: its module version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "go_version": runtime.Version()},
	})
	g.Set(1)
	return g
}

// stateCollector reads the gauges at scrape time: requests in flight and
// held per app (proxy.Stats), and the health of every instance of the
// serving and draining versions. A version gone is simply not reported, so
// its series end with it.
type stateCollector struct {
	d                       *Daemon
	inFlight, held, healthy *prometheus.Desc
}

func newStateCollector(d *Daemon) *stateCollector {
	return &stateCollector{
		d: d,
		inFlight: prometheus.NewDesc("deployer_requests_in_flight",
			"Requests being forwarded to the app's versions, upgraded connections (websockets) included.", []string{"app"}, nil),
		held: prometheus.NewDesc("deployer_requests_held",
			"Requests waiting at the app's gate: paused, nothing ready, or between retries.", []string{"app"}, nil),
		healthy: prometheus.NewDesc("deployer_instance_healthy",
			"1 if the instance is in rotation (its process runs and its health checks pass), else 0; serving and draining versions only.",
			[]string{"app", "version", "instance"}, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inFlight
	ch <- c.held
	ch <- c.healthy
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, app := range c.d.proxy.Apps() {
		st := c.d.proxy.Stats(app)
		n := 0
		for _, f := range st.InFlight {
			n += f
		}
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(n), app)
		ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(st.Held), app)
	}
	for _, a := range c.d.appList() {
		for _, h := range a.instanceHealth() {
			v := 0.0
			if h.healthy {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.healthy, prometheus.GaugeValue, v, a.name, h.version, strconv.Itoa(h.index))
		}
	}
}

// instanceHealth is one instance's line of deployer_instance_healthy.
type instanceHealth struct {
	version string
	index   int
	healthy bool
}

// instanceHealth lists the instances of a's serving and draining versions.
// A restart drains a version of the same name as the one serving; the
// newest launch is reported, as a series can appear only once.
func (a *App) instanceHealth() []instanceHealth {
	a.mu.Lock()
	vs := make([]*version, 0, 1+len(a.draining))
	for v := range a.draining {
		vs = append(vs, v)
	}
	slices.SortFunc(vs, func(x, y *version) int { return y.launched.Compare(x.launched) })
	if a.serving != nil {
		vs = slices.Insert(vs, 0, a.serving)
	}
	a.mu.Unlock()
	type key struct {
		version string
		index   int
	}
	seen := make(map[key]bool)
	var out []instanceHealth
	for _, v := range vs {
		for _, in := range v.instances {
			k := key{v.name, in.index}
			if seen[k] {
				continue
			}
			seen[k] = true
			_, _, healthy, _ := in.snapshot()
			out = append(out, instanceHealth{version: v.name, index: in.index, healthy: healthy})
		}
	}
	return out
}
