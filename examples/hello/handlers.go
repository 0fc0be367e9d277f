package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

const (
	defaultSlow = 3 * time.Second
	maxSlow     = 5 * time.Minute

	defaultSSEEvents   = 5
	maxSSEEvents       = 100000
	defaultSSEInterval = 200 * time.Millisecond
	maxSSEInterval     = 5 * time.Minute
)

// server holds what the handlers report. Its fields are set once before it
// serves; websockets is the only state that changes.
type server struct {
	version  string
	pid      string
	instance string
	greeting string // first line of GET /, if set
	record   string // file /echo appends a line to, if set

	unhealthy     bool
	unhealthyFile string

	websockets websocketSet
}

// routes returns the handler for every endpoint.
func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.handleRoot)
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("GET /slow", s.handleSlow)
	mux.HandleFunc("GET /sse", s.handleSSE)
	mux.HandleFunc("/ws", s.handleWebsocket)
	mux.HandleFunc("/echo", s.handleEcho)
	mux.HandleFunc("GET /headers", s.handleHeaders)
	return s.identify(mux)
}

// identify stamps every response, 404s and websocket handshakes included,
// with the version, pid and instance that produced it.
func (s *server) identify(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Version", s.version)
		h.Set("X-Pid", s.pid)
		h.Set("X-Instance", s.instance)
		next.ServeHTTP(w, r)
	})
}

func (s *server) helloLine() string {
	return fmt.Sprintf("hello from %s (pid %s, instance %s)\n", s.version, s.pid, s.instance)
}

func writeText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func (s *server) handleRoot(w http.ResponseWriter, r *http.Request) {
	body := s.helloLine()
	if s.greeting != "" {
		body = s.greeting + "\n" + body
	}
	writeText(w, http.StatusOK, body)
}

func (s *server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	if s.unhealthy || s.unhealthyFileExists() {
		writeText(w, http.StatusServiceUnavailable, "unhealthy")
		return
	}
	writeText(w, http.StatusOK, "ok")
}

// unhealthyFileExists is checked on every health request, so a demo can make
// a running version fail its checks by creating the file.
func (s *server) unhealthyFileExists() bool {
	if s.unhealthyFile == "" {
		return false
	}
	_, err := os.Stat(s.unhealthyFile)
	return err == nil
}

// handleSlow answers after ?d= (default 3s, at most 5m): a long request that
// shows a swap letting in-flight requests finish on the old version.
func (s *server) handleSlow(w http.ResponseWriter, r *http.Request) {
	d, err := durationParam(r, "d", defaultSlow, maxSlow)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error()+"\n")
		return
	}
	if sleep(r.Context(), d) {
		writeText(w, http.StatusOK, s.helloLine())
	}
	// Otherwise the client left (or the server was closed): nobody would
	// read an answer.
}

// handleSSE streams ?n= events, ?interval= apart, each flushed at once so a
// client sees the stream stay on one version across a swap.
func (s *server) handleSSE(w http.ResponseWriter, r *http.Request) {
	n, err := intParam(r, "n", defaultSSEEvents, maxSSEEvents)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error()+"\n")
		return
	}
	interval, err := durationParam(r, "interval", defaultSSEInterval, maxSSEInterval)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error()+"\n")
		return
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// nginx buffers proxied responses unless told otherwise, which would
	// hold events back until the buffer fills.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	rc := http.NewResponseController(w)
	for k := 1; k <= n; k++ {
		if k > 1 && !sleep(r.Context(), interval) {
			return
		}
		if _, err := fmt.Fprintf(w, "data: %s %d\n\n", s.version, k); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// handleEcho reads the whole body and answers with its length and sha256, so
// a client can tell its body arrived intact. With a record file it also
// appends "<method> <id> <version>", which lets tests count how often each
// request reached any app process.
func (s *server) handleEcho(w http.ResponseWriter, r *http.Request) {
	sum := sha256.New()
	n, err := io.Copy(sum, r.Body)
	if err != nil {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("reading body: %v\n", err))
		return
	}
	if s.record != "" {
		if err := s.appendRecord(r.Method, r.URL.Query().Get("id")); err != nil {
			writeText(w, http.StatusInternalServerError, err.Error()+"\n")
			return
		}
	}
	writeText(w, http.StatusOK, fmt.Sprintf("%s %d %x\n", s.version, n, sum.Sum(nil)))
}

// appendRecord appends one line to the record file. Several processes (old
// and new versions) append to the same file at once: O_APPEND and a single
// write(2) per line keep their lines whole and unmixed.
func (s *server) appendRecord(method, id string) error {
	if id == "" {
		id = "-"
	}
	// Escaping keeps the line at three space-separated fields whatever the
	// client put in id.
	line := fmt.Sprintf("%s %s %s\n", method, url.QueryEscape(id), s.version)

	f, err := os.OpenFile(s.record, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	_, err = f.Write([]byte(line))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	return nil
}

// handleWebsocket sends "version <v>" and then echoes every message back
// unchanged until the client closes. The connection is tracked so shutdown
// can close it: http.Server.Shutdown ignores hijacked connections.
func (s *server) handleWebsocket(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// Any origin, so a browser demo works from any page. A real app
		// must check Origin: browsers send cookies with cross-site
		// websocket handshakes.
		InsecureSkipVerify: true,
	})
	if err != nil {
		return // Accept has answered the request already
	}
	defer c.CloseNow()
	if !s.websockets.add(c) {
		c.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	defer s.websockets.remove(c)

	// Messages are streamed through, never held whole, so their size needs
	// no bound.
	c.SetReadLimit(-1)
	// The request context stays valid after the hijack until this handler
	// returns; closing the connection unblocks every call below.
	ctx := r.Context()
	if err := c.Write(ctx, websocket.MessageText, []byte("version "+s.version)); err != nil {
		return
	}
	for {
		typ, rd, err := c.Reader(ctx)
		if err != nil {
			return // closed by the client, by shutdown, or broken
		}
		wr, err := c.Writer(ctx, typ)
		if err != nil {
			return
		}
		if _, err := io.Copy(wr, rd); err != nil {
			wr.Close()
			return
		}
		if err := wr.Close(); err != nil {
			return
		}
	}
}

// sleep waits for d and reports whether it did; false means ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// durationParam reads query parameter name as a duration in [0, max]; larger
// values are capped at max.
func durationParam(r *http.Request, name string, def, max time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("bad %s: %w", name, err)
	}
	if d < 0 {
		return 0, errors.New("bad " + name + ": negative")
	}
	return min(d, max), nil
}

// intParam reads query parameter name as an integer in [0, max]; larger
// values are capped at max.
func intParam(r *http.Request, name string, def, max int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("bad %s: %w", name, err)
	}
	if n < 0 {
		return 0, errors.New("bad " + name + ": negative")
	}
	return min(n, max), nil
}

// handleHeaders shows the request's headers as the app got them: what a
// proxy in front added, kept or removed (X-Forwarded-For, hop-by-hop).
func (s *server) handleHeaders(w http.ResponseWriter, r *http.Request) {
	h := r.Header.Clone()
	h.Set("Host", r.Host)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(h)
}
