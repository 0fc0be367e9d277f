package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// requestTimeout bounds the control calls that answer at once (status,
// pause, resume, shutdown), so that a wedged daemon cannot hang a CI step.
// Streamed operations are bounded by the daemon's own ready and drain
// timeouts instead, and logs -f runs until interrupted.
const requestTimeout = 30 * time.Second

// controlHost is the host of every control URL. The socket decides which
// daemon answers; the name only makes the URLs readable in logs and curl.
const controlHost = "deployer"

// Event types of a streamed operation (see supervisor.Event).
const (
	eventProgress = "progress"
	eventResult   = "result"
)

// errConnectionLost means an operation's stream ended before its result:
// the daemon died or closed the connection, and the outcome is unknown.
var errConnectionLost = errors.New("connection to daemon lost")

// errNoAnswer means the daemon kept the connection but never answered in
// time: as with errConnectionLost, the outcome is unknown.
var errNoAnswer = errors.New("no answer from the daemon")

// client talks to a running daemon over its control socket, the API in
// supervisor/api.go. Its methods return *noDaemonError when nothing answers
// and *apiError for a non-2xx answer.
type client struct {
	socket string
	http   *http.Client
}

func newClient(socket string) *client {
	var dialer net.Dialer
	return &client{
		socket: socket,
		http: &http.Client{Transport: &http.Transport{
			// Proxy is left nil on purpose: http.DefaultTransport would send
			// http://deployer/... to $HTTP_PROXY instead of the socket.
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, "unix", socket)
			},
		}},
	}
}

// appPath is the URL path of an app's endpoint, e.g. /v1/apps/web/swap.
func appPath(app, op string) string {
	return "/v1/apps/" + url.PathEscape(app) + "/" + op
}

// do sends a request and returns the response if it is 2xx; the caller
// closes its body. body, if not nil, is sent as JSON.
func (c *client) do(ctx context.Context, method, path string, query url.Values, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := "http://" + controlHost + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil && method == http.MethodGet && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		// A daemon handing over to a new one (an upgrade) may close a
		// connection it just accepted; a read-only call is simply asked
		// again, and the new daemon answers.
		resp, err = c.http.Do(req.Clone(ctx))
	}
	if err != nil {
		return nil, c.transportError(err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, readAPIError(resp)
	}
	return resp, nil
}

// transportError translates a failed round trip: a socket that is missing
// or refuses connections means no daemon runs, anything else is reported as
// it is, without the URL (it is the same for every call).
func (c *client) transportError(err error) error {
	if isNoDaemon(err) {
		return &noDaemonError{socket: c.socket}
	}
	if errors.Is(err, syscall.EACCES) {
		// The socket's mode let the kernel refuse the connect: the daemon
		// never heard of it (supervisor/controlauth.go).
		return fmt.Errorf("%w: cannot connect to %s: only root and the daemon's user may control this daemon, unless [deployer] control_users or control_groups in deploy.toml lists you", errPermissionDenied, c.socket)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	return fmt.Errorf("control socket: %w", err)
}

// isNoDaemon reports whether a dial error says nothing listens: ENOENT
// (no socket file) or ECONNREFUSED (a stale file from a daemon that died).
func isNoDaemon(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

// readAPIError decodes the APIError body of a non-2xx answer. A body that is
// not one (a proxy in between, an older daemon) is quoted instead.
func readAPIError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &apiError{status: resp.StatusCode}
	if err := json.Unmarshal(b, &e.body); err != nil || e.body.Error == "" {
		e.body.Error = strings.TrimSpace(string(b))
		if e.body.Error == "" {
			e.body.Error = resp.Status
		}
	}
	return e
}

// call sends a request that answers at once and returns the answer's body.
func (c *client) call(ctx context.Context, method, path string, query url.Values) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := c.do(ctx, method, path, query, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return b, nil
}

// status returns GET /v1/status as received; app "" means every app.
func (c *client) status(ctx context.Context, app string) ([]byte, error) {
	var q url.Values
	if app != "" {
		q = url.Values{"app": {app}}
	}
	return c.call(ctx, http.MethodGet, "/v1/status", q)
}

// operate runs a streamed operation (swap, rollback, restart, start, stop)
// on app, calls progress for each progress event as it arrives, and returns
// the result, decoded and as received.
func (c *client) operate(ctx context.Context, app, op string, req supervisor.SwapRequest, progress func(supervisor.Event)) (*supervisor.Result, json.RawMessage, error) {
	resp, err := c.do(ctx, http.MethodPost, appPath(app, op), nil, req)
	if err != nil {
		if ctx.Err() == nil && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			// The daemon closed the connection before the answer's head:
			// it read the request, and may have begun.
			return nil, nil, errConnectionLost
		}
		return nil, nil, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var line json.RawMessage
		if err := dec.Decode(&line); err != nil {
			var syntax *json.SyntaxError
			switch {
			case ctx.Err() != nil:
				return nil, nil, ctx.Err()
			case errors.As(err, &syntax):
				return nil, nil, fmt.Errorf("bad answer from daemon: %w", err)
			}
			return nil, nil, errConnectionLost
		}
		var ev supervisor.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, nil, fmt.Errorf("bad event from daemon: %w", err)
		}
		switch ev.Type {
		case eventProgress:
			if progress != nil {
				progress(ev)
			}
		case eventResult:
			if ev.Result == nil {
				return nil, nil, errors.New("bad answer from daemon: result event without a result")
			}
			var raw struct {
				Result json.RawMessage `json:"result"`
			}
			if err := json.Unmarshal(line, &raw); err != nil {
				return nil, nil, err
			}
			return ev.Result, raw.Result, nil
		}
		// Other event types are skipped: a newer daemon may send more kinds.
	}
}

// logs copies app's recent output, n lines, to w, and with follow goes on
// copying new output until the daemon ends the stream or ctx is done.
func (c *client) logs(ctx context.Context, app string, n int, follow bool, w, notes io.Writer) error {
	q := url.Values{"n": {strconv.Itoa(n)}}
	if follow {
		q.Set("follow", "1")
	}
	var handedOver string // the pid of the daemon that said it handed over
	for {
		end, pid, err := c.logsOnce(ctx, app, q, w)
		if err != nil || end != "handover" {
			return err
		}
		if pid != "" && pid == handedOver {
			// That daemon again, accepting for a moment after the
			// hand-over: ask again, the new one will answer.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		handedOver = pid
		// The daemon was upgraded: follow the new one, from what the old
		// one had not shown (its last output read is where the new one
		// read on). Its ring holds at most DefaultLogLines of them.
		fmt.Fprintln(notes, "deployer: the daemon was upgraded: following the new one")
		q.Set("n", strconv.Itoa(math.MaxInt32))
		q.Set("after", "handover")
	}
}

// logsOnce prints one logs response and returns its end trailer and the
// pid of the daemon that answered.
func (c *client) logsOnce(ctx context.Context, app string, q url.Values, w io.Writer) (end, pid string, err error) {
	resp, err := c.do(ctx, http.MethodGet, appPath(app, "logs"), q, nil)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		return "", "", fmt.Errorf("control socket: %w", err)
	}
	return resp.Trailer.Get(logsEndTrailer), resp.Header.Get(logsPIDHeader), nil
}

// logsEndTrailer and logsPIDHeader are supervisor's: why a followed logs
// response ended, and which daemon answered.
const (
	logsEndTrailer = "Deployer-Logs-End"
	logsPIDHeader  = "Deployer-Pid"
)

// alive reports whether anything accepts connections on the control socket.
func (c *client) alive(ctx context.Context) (bool, error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "unix", c.socket)
	if err == nil {
		conn.Close()
		return true, nil
	}
	if isNoDaemon(err) {
		return false, nil
	}
	return false, c.transportError(err)
}

// waitGone polls the control socket every interval until nothing answers on
// it, or ctx is done. There is no event to wait for instead: the daemon's
// exit is only seen as its socket going away.
func (c *client) waitGone(ctx context.Context, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		up, err := c.alive(ctx)
		if err != nil || !up {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
