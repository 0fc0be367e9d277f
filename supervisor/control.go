package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// controlHandler serves the control API described in api.go.
func (d *Daemon) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", d.handleStatus)
	mux.HandleFunc("POST /v1/apps/{app}/{op}", d.handleOp)
	mux.HandleFunc("GET /v1/apps/{app}/logs", d.handleLogs)
	mux.HandleFunc("POST /v1/upgrade", func(w http.ResponseWriter, r *http.Request) {
		res, err := d.Upgrade()
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET /v1/routes", func(w http.ResponseWriter, r *http.Request) {
		st := d.routesStatus()
		if st == nil {
			writeError(w, fmt.Errorf("%w: no [routes] redis in deploy.toml", ErrNoRedisRoutes))
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /v1/shutdown", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, struct{}{})
		d.log.Info("shutdown requested")
		d.requestShutdown()
	})
	mux.HandleFunc("/", noEndpoint(mux))
	return mux
}

var errBadRequest = errors.New("bad request")

// apiStatus maps an error to its HTTP status and API code: the one place
// where supervisor errors become answers.
func apiStatus(err error) (int, string) {
	switch {
	case errors.Is(err, ErrUnknownApp):
		return http.StatusNotFound, "unknown_app"
	case errors.Is(err, errBadRequest):
		return http.StatusBadRequest, "bad_request"
	case errors.Is(err, errMethodNotAllowed):
		return http.StatusMethodNotAllowed, "method_not_allowed"
	case errors.Is(err, errBodyTooLarge):
		return http.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, errPermissionDenied):
		return http.StatusForbidden, "permission_denied"
	case errors.Is(err, ErrOpRunning):
		return http.StatusConflict, "swap_running"
	case errors.Is(err, ErrUpgradeBusy):
		return http.StatusConflict, "upgrade_busy"
	case errors.Is(err, ErrNoUpgrade):
		return http.StatusNotImplemented, "not_supported"
	case errors.Is(err, ErrNoPrevious):
		return http.StatusConflict, "no_previous"
	case errors.Is(err, ErrNotServing):
		return http.StatusConflict, "not_serving"
	case errors.Is(err, ErrNoRedisRoutes):
		return http.StatusNotFound, "no_redis_routes"
	}
	return http.StatusInternalServerError, "internal"
}

func writeError(w http.ResponseWriter, err error) {
	status, code := apiStatus(err)
	writeJSON(w, status, APIError{Error: err.Error(), Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (d *Daemon) handleStatus(w http.ResponseWriter, r *http.Request) {
	apps := d.appList()
	if n := r.URL.Query().Get("app"); n != "" {
		a, err := d.controlApp(n)
		if err != nil {
			writeError(w, err)
			return
		}
		apps = []*App{a}
	}
	st := Status{Apps: []AppStatus{}, Load: readLoad()}
	for _, a := range apps {
		st.Apps = append(st.Apps, a.Status())
	}
	d.mu.RLock()
	st.ConfigError = d.reloadErr
	d.mu.RUnlock()
	st.Daemon = d.daemonStatus()
	st.Routes = d.routesStatus()
	writeJSON(w, http.StatusOK, st)
}

// handleOp runs an operation. Streamed operations answer NDJSON Events as
// they progress; an operation refused before it began answers an APIError.
func (d *Daemon) handleOp(w http.ResponseWriter, r *http.Request) {
	a, err := d.controlApp(r.PathValue("app"))
	if err != nil {
		writeError(w, err)
		return
	}
	var req SwapRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Version != "" {
		if err := ValidVersion(req.Version); err != nil {
			writeError(w, fmt.Errorf("%w: %v", errBadRequest, err))
			return
		}
	}
	timeout, err := req.timeout()
	if err != nil {
		writeError(w, fmt.Errorf("%w: %v", errBadRequest, err))
		return
	}
	var run func(ctx context.Context, p progressFunc) (*Result, error)
	switch op := r.PathValue("op"); op {
	case "swap":
		if req.Version == "" {
			writeError(w, fmt.Errorf("%w: swap needs a version", errBadRequest))
			return
		}
		run = func(ctx context.Context, p progressFunc) (*Result, error) {
			return a.swapWithin(ctx, timeout, op, req.Version, req.WaitDrain, p)
		}
	case "rollback", "restart":
		run = func(ctx context.Context, p progressFunc) (*Result, error) {
			return a.swapWithin(ctx, timeout, op, "", req.WaitDrain, p)
		}
	case "start":
		run = func(ctx context.Context, p progressFunc) (*Result, error) {
			return a.Start(ctx, req.Version, p)
		}
	case "stop":
		run = func(ctx context.Context, p progressFunc) (*Result, error) {
			return a.Stop(ctx, p)
		}
	case "pause", "resume":
		if op == "pause" {
			err = a.Pause()
		} else {
			err = a.Resume()
		}
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, a.Status())
		return
	default:
		writeError(w, fmt.Errorf("%w: unknown operation %q", errBadRequest, op))
		return
	}
	d.stream(w, a, run)
}

// stream runs an operation, writing its progress as NDJSON. The status line
// is sent with the first event, so an operation refused at once (another
// swap running) still gets a proper error status. The operation runs on the
// daemon's context, not the request's: a CI job whose connection drops must
// not leave a swap half done.
func (d *Daemon) stream(w http.ResponseWriter, a *App, run func(context.Context, progressFunc) (*Result, error)) {
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	// Progress comes from several goroutines at once (one per instance of
	// a launch), and must not outlive the handler: mu orders the writes,
	// done ends them.
	var (
		mu            sync.Mutex
		started, done bool
	)
	begin := func() {
		if !started {
			started = true
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
		}
	}
	progress := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		a.log.Info(msg)
		mu.Lock()
		defer mu.Unlock()
		if done {
			return
		}
		begin()
		enc.Encode(Event{Type: "progress", Time: time.Now(), Message: msg})
		rc.Flush()
	}
	res, err := run(d.ctx, progress)
	mu.Lock()
	defer mu.Unlock()
	done = true
	if err != nil && !started {
		writeError(w, err)
		return
	}
	if err != nil {
		res = &Result{App: a.name, Error: err.Error()}
	}
	res.setOutcome()
	begin()
	enc.Encode(Event{Type: "result", Time: time.Now(), Result: res})
	rc.Flush()
}

func (d *Daemon) handleLogs(w http.ResponseWriter, r *http.Request) {
	a, err := d.controlApp(r.PathValue("app"))
	if err != nil {
		writeError(w, err)
		return
	}
	n := 200
	if s := r.URL.Query().Get("n"); s != "" {
		if n, err = strconv.Atoi(s); err != nil || n < 0 {
			writeError(w, fmt.Errorf("%w: n must be a number ≥ 0", errBadRequest))
			return
		}
	}
	var keep func(LogLine) bool
	switch after := r.URL.Query().Get("after"); after {
	case "":
	case "handover":
		// A follower of the daemon this one took over from, back for
		// what that one did not show.
		keep = func(l LogLine) bool { return !l.Backlog }
	default:
		writeError(w, fmt.Errorf("%w: after must be \"handover\", not %q", errBadRequest, after))
		return
	}
	follow := r.URL.Query().Get("follow") == "1"
	w.Header().Set(logsPIDHeader, strconv.Itoa(os.Getpid()))
	if follow && keep != nil && d.handedOver.Load() {
		// A follower back after a hand-over reached this daemon again,
		// still accepting for a moment: the new one has its lines.
		w.Header().Set("Trailer", logsEndTrailer)
		w.WriteHeader(http.StatusOK)
		w.Header().Set(logsEndTrailer, "handover")
		return
	}
	var sub <-chan LogLine
	if follow {
		ch, cancel := a.logs.Subscribe()
		defer cancel()
		sub = ch
		// How following ended: "handover" when this daemon handed over to
		// a new one (an upgrade), whose logs go on (ask it with
		// after=handover); none when it stopped.
		w.Header().Set("Trailer", logsEndTrailer)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	bw := bufio.NewWriter(w)
	for _, l := range a.logs.Tail(n, keep) {
		fmt.Fprintln(bw, l.String())
	}
	bw.Flush()
	if !follow {
		return
	}
	rc := http.NewResponseController(w)
	rc.Flush()
	// end finishes the response when this daemon stops or hands over.
	end := func() {
		if d.handedOver.Load() {
			// The output readers stopped before the hand-over: every line
			// they read is in sub by now.
			for len(sub) > 0 {
				fmt.Fprintln(bw, (<-sub).String())
			}
			w.Header().Set(logsEndTrailer, "handover")
		}
		bw.Flush()
	}
	for {
		select {
		case l := <-sub:
			fmt.Fprintln(bw, l.String())
			if len(sub) == 0 {
				bw.Flush()
				rc.Flush()
			}
		case <-r.Context().Done():
			return
		case <-d.handoverC:
			end()
			return
		case <-d.ctx.Done():
			end()
			return
		}
	}
}

// logsEndTrailer is the trailer of a followed logs response that says why
// it ended; logsPIDHeader names the daemon that answers.
const (
	logsEndTrailer = "Deployer-Logs-End"
	logsPIDHeader  = "Deployer-Pid"
)

// executable is the binary an upgrade starts: the path this one was run as.
func executable() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return os.Args[0]
}

// Validation of control requests. Every name a request carries that can end
// up in a path is checked here, before anything is looked up: an app name
// by the rule of deploy.toml (appNameRE) and then against the apps the
// config defines, a version by ValidVersion (one path element, no dot
// names, no leading '-'). sockets.Layout checks both once more where it
// joins them into paths.

var (
	errMethodNotAllowed = errors.New("method not allowed")
	errBodyTooLarge     = errors.New("request body too large")
)

// maxControlBody bounds the JSON body of a control request; the largest
// real one (a swap) is well under 1 KiB.
const maxControlBody = 64 << 10

// controlApp returns the app a request names.
func (d *Daemon) controlApp(name string) (*App, error) {
	if !appNameRE.MatchString(name) {
		return nil, fmt.Errorf("%w: app name %q: want 1 to 32 characters of a-z 0-9 _ -, starting with a letter or digit", errBadRequest, name)
	}
	return d.app(name)
}

// decodeBody decodes r's JSON body, if it has one, into v: one JSON value of
// at most maxControlBody bytes, with no field v does not know (a misspelt
// "wait_drain" must not be dropped silently) and nothing after it. The
// Content-Type is not checked: curl users often leave it out.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if r.Body == nil || r.ContentLength == 0 {
		return nil
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxControlBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = terr
			if err == nil {
				err = errors.New("more than one JSON value")
			}
		}
	} else if err == io.EOF {
		return nil // an empty chunked body
	}
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooLarge):
		return fmt.Errorf("%w: at most %d bytes", errBodyTooLarge, tooLarge.Limit)
	}
	return fmt.Errorf("%w: body: %s", errBadRequest, strings.TrimPrefix(err.Error(), "json: "))
}

// noEndpoint answers the requests no pattern of mux took: 405, with Allow,
// when the path is an endpoint for another method; else 400.
func noEndpoint(mux *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			probe := &http.Request{Method: m, Host: r.Host, URL: r.URL}
			if _, pattern := mux.Handler(probe); m != r.Method && pattern != "" && pattern != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, fmt.Errorf("%w: %s %s (allowed: %s)", errMethodNotAllowed, r.Method, r.URL.Path, strings.Join(allow, ", ")))
			return
		}
		writeError(w, fmt.Errorf("%w: no such endpoint %s %s", errBadRequest, r.Method, r.URL.Path))
	}
}
