package supervisor

import (
	"net/http"

	"github.com/deployer/deployer/proxy"
)

// HealthPath is answered by the daemon itself on the public listeners, for
// an outer load balancer, before any routing: no app can be reached at it,
// even one routed at "/".
const HealthPath = "/_deployer/health"

// proxyOptions are the proxy's settings for cfg.
func (d *Daemon) proxyOptions(cfg *Config) proxy.Options {
	o := proxy.Options{
		Logger:         d.log,
		TrustedProxies: cfg.Deployer.Public.TrustedProxies,
	}
	// Without metrics and access log the hook stays nil: no cost at all.
	if obs := d.newObserver(cfg); obs != nil {
		o.OnRequest = obs.onRequest
	}
	return o
}

// publicHandler is what the public listeners (plain and TLS) serve.
func (d *Daemon) publicHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == HealthPath {
			d.serveHealth(w, r)
			return
		}
		d.proxy.ServeHTTP(w, r)
	})
}

// serveHealth answers HealthPath: 200 "ok" while the daemon serves, 503 once
// it shuts down, so a load balancer takes it out before its listener
// closes. It says nothing about the apps: each has its own gate.
//
// A daemon that handed over to a new one after an upgrade still answers
// 200: the new daemon accepts on the same address, so the address the load
// balancer checks is healthy; a 503 there would take it out of rotation.
// The old daemon's answers carry "Connection: close" (publicServer), so the
// next check reaches the new daemon.
func (d *Daemon) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if d.ctx.Err() != nil && !d.handedOver.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}
