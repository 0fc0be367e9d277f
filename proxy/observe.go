package proxy

import (
	"net/http"
	"time"
)

// RequestInfo describes one request the proxy answered, for metrics and
// access logs (Options.OnRequest). It is only valid during the call.
type RequestInfo struct {
	// App is the app the request was routed to; "" when no route matched.
	App string
	// Version is the version key that served the request ("v42#3": the
	// version's name, '#', the launch); "" when none did.
	Version string
	Method  string
	Host    string
	Path    string
	Remote  string // the client's address as the server saw it
	// RequestID is the X-Request-Id sent to the app: the client's, or one
	// the proxy made; "" when the request never reached an app.
	RequestID string
	// Status is the status the client got: the app's, or the proxy's own
	// (404, 413, 502, 503, 499 for a client that left first). 101 for an
	// upgraded connection.
	Status int
	// Bytes counts the response body bytes written to the client (for an
	// upgraded connection: none, the tunnel is not counted).
	Bytes    int64
	Start    time.Time
	Duration time.Duration // until the response (or the tunnel) ended
	// Held is how long the request waited at the gate (paused app, nothing
	// ready); 0 when it went straight through.
	Held time.Duration
}

// observe reports c's end to the OnRequest hook, if one is set. Without a
// call (no route, an unknown app), status is what the client got.
func (p *Proxy) observe(r *http.Request, c *call, app string, status int) {
	if p.onRequest == nil {
		return
	}
	info := RequestInfo{
		App:    app,
		Method: r.Method,
		Host:   r.Host,
		Path:   r.URL.Path,
		Remote: r.RemoteAddr,
		Status: status,
	}
	if c != nil {
		info.Version = c.lastVersion
		info.Start = c.arrival
		info.Status = c.status
		info.Bytes = c.bytes
		info.Held = c.held
		if c.requestID != "" || c.idNum != 0 {
			info.RequestID = c.id()
		}
	} else {
		info.Start = time.Now()
	}
	info.Duration = time.Since(info.Start)
	if info.Status == 0 {
		// A panic (a response broken off midway, http.ErrAbortHandler)
		// before anything was written.
		info.Status = StatusClientClosedRequest
	}
	p.onRequest(&info)
}
