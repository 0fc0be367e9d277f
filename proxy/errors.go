package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
)

// Errors a request can end with. ServeHTTP turns each into an HTTP status in
// one place (statusFor); they are exported so that tests and callers wrapping
// the handler can match them with errors.Is.
var (
	// ErrNoRoute: no route matches the request's host and path (404).
	ErrNoRoute = errors.New("proxy: no route")
	// ErrUnknownApp: the route names an app the proxy was never told about
	// with SetApp or Serve (503: a configuration being applied).
	ErrUnknownApp = errors.New("proxy: unknown app")
	// ErrAppRemoved: the app was removed while the request waited (503).
	ErrAppRemoved = errors.New("proxy: app removed")
	// ErrQueueTimeout: the request waited queue_timeout, counted from its
	// arrival, without an instance to go to (503 + Retry-After).
	ErrQueueTimeout = errors.New("proxy: queue timeout")
	// ErrQueueFull: max_queued requests were already waiting (503 +
	// Retry-After at once).
	ErrQueueFull = errors.New("proxy: queue full")
	// ErrCut: Retire's deadline passed while the request was in flight and
	// cancelled it (502 when no response had started).
	ErrCut = errors.New("proxy: request cut at drain deadline")
	// ErrClientGone: the client went away before a response was written
	// (logged as 499, nginx's "client closed request").
	ErrClientGone = errors.New("proxy: client gone")
	// ErrRequestBody: the client's request body could not be read (400), a
	// chunked body cut or malformed, say. An HTTP/1 client's connection is
	// closed after the answer: what is left of its bytes is not a request.
	ErrRequestBody = errors.New("proxy: reading request body")
	// ErrBodyTooLarge: the request body is larger than the app's MaxBody
	// (413; an HTTP/1 client's connection is closed after the answer). A body
	// that says so in its Content-Length never reaches the app; one that
	// grows past the limit is cut off, so the app never gets a complete
	// request.
	ErrBodyTooLarge = errors.New("proxy: request body too large")
	// ErrBadRequest: a request the proxy refuses to forward (400): an HTTP/2
	// preface ("PRI * HTTP/2.0") that reached the handler, or an upgrade to
	// a protocol name that is not printable ASCII.
	ErrBadRequest = errors.New("proxy: bad request")

	// ErrInvalidRoute: SetRoutes got a route whose host, path or app is not
	// valid; the routing table is left unchanged.
	ErrInvalidRoute = errors.New("proxy: invalid route")
	// ErrDuplicateRoute: SetRoutes got two routes with the same host pattern
	// and path prefix; the routing table is left unchanged.
	ErrDuplicateRoute = errors.New("proxy: duplicate route")
)

// StatusClientClosedRequest is the status recorded when the client left
// before its response (nginx's 499). The client never sees it.
const StatusClientClosedRequest = 499

// retryAfter is the Retry-After value, in seconds, sent with every 503: long
// enough for a starting or restarting instance, short enough for a client to
// come back while a swap settles.
const retryAfter = 5

// errDialSkipped is reported by a version's dialer for an instance that is no
// longer known or a version already retired: like any dial error, nothing was
// sent, so the request goes back to the gate.
var errDialSkipped = errors.New("proxy: instance gone")

// dialError marks a failure to connect to an instance. Nothing of the request
// was sent, so it is always safe to send the request again (PITFALLS:
// ENOENT, ECONNREFUSED and EAGAIN all mean "nothing was sent"). The dialer
// wraps every error in this type so forward can tell it apart with errors.As
// from a failure after the request was (perhaps) written.
type dialError struct {
	target Target
	err    error
}

func (e *dialError) Error() string {
	return "proxy: connect to " + e.target.Network + " " + e.target.Addr + ": " + e.err.Error()
}

func (e *dialError) Unwrap() error { return e.err }

// statusFor maps the error a request ended with to the HTTP status the client
// gets. It is the only place that does.
func statusFor(err error) int {
	switch {
	case errors.Is(err, ErrClientGone):
		return StatusClientClosedRequest
	case errors.Is(err, ErrNoRoute):
		return http.StatusNotFound
	case errors.Is(err, ErrQueueTimeout),
		errors.Is(err, ErrQueueFull),
		errors.Is(err, ErrUnknownApp),
		errors.Is(err, ErrAppRemoved):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrBodyTooLarge):
		// Before ErrRequestBody: a limit reached while reading is both.
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrRequestBody), errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	default:
		return http.StatusBadGateway
	}
}

// classify names why a forward failed when the error itself does not say:
// the request was aborted (Retire cut it, or the client left), or its
// client's context ended.
func classify(c *call, err error) error {
	if c == nil || errors.Is(err, ErrCut) || errors.Is(err, ErrClientGone) {
		return err
	}
	if cause := c.aborted(); cause != nil {
		return fmt.Errorf("%w: %w", cause, err)
	}
	if c.client.Err() != nil {
		return fmt.Errorf("%w: %w", ErrClientGone, err)
	}
	return err
}

// writeError answers r with the status for err, a short text body and, for
// 503, Retry-After: every request the proxy cannot route or forward gets
// its answer here. Events an operator should see (502s, queue timeouts) are
// logged; routine ones at Debug.
func (p *Proxy) writeError(w http.ResponseWriter, r *http.Request, c *call, err error) {
	err = classify(c, err)
	status := statusFor(err)
	if c != nil {
		c.status = status
	}

	attrs := []any{"status", status, "method", r.Method, "host", r.Host, "path", r.URL.Path, "error", err}
	if c != nil {
		attrs = append(attrs, "app", c.b.name)
		if c.requestID != "" || c.idNum != 0 {
			attrs = append(attrs, "request_id", c.id())
		}
		if c.lastVersion != "" {
			attrs = append(attrs, "version", c.lastVersion)
		}
	}
	switch {
	case status == StatusClientClosedRequest, status == http.StatusNotFound, errors.Is(err, ErrCut):
		// A cut is counted and logged once by Retire.
		p.log.Debug("request failed", attrs...)
	case status == http.StatusServiceUnavailable:
		p.log.Info("request not served", attrs...)
	case status == http.StatusBadRequest, status == http.StatusRequestEntityTooLarge:
		// The client's doing: nothing for an operator to fix.
		p.log.Info("request refused", attrs...)
	default:
		p.log.Warn("bad gateway", attrs...)
	}

	if status == StatusClientClosedRequest {
		// Nobody reads this; the status is there for access logs that wrap
		// the proxy.
		w.WriteHeader(status)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	if (status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge) && r.ProtoMajor == 1 {
		// What is left of the request's bytes (the rest of a body too
		// large or malformed) must not be read as the next request. Over
		// HTTP/2 (where net/http would turn this header into a GOAWAY) the
		// stream's end is enough.
		h.Set("Connection", "close")
	}
	w.WriteHeader(status)
	io.WriteString(w, clientMessage(err, status)+"\n")
}

// clientMessage is the body text for an error: the proxy's own errors are
// written to be shown; anything else (a backend's error, socket paths) is
// not shown to clients.
func clientMessage(err error, status int) string {
	switch status {
	case http.StatusRequestEntityTooLarge:
		// The limit, not the wrapping: "proxy: request body too large:
		// the limit is 1048576 bytes".
		if tl := (*bodyTooLargeError)(nil); errors.As(err, &tl) {
			return tl.Error()
		}
		return ErrBodyTooLarge.Error()
	case http.StatusNotFound, http.StatusServiceUnavailable, http.StatusBadRequest:
		return err.Error()
	default:
		return "proxy: bad gateway"
	}
}

// logger returns l, or slog.Default() when l is nil.
func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}
