package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// newTestDaemon returns a Daemon for one app, web, that is never started:
// only handlers that need no running app may be called. It writes its
// state file, and its listeners accept, as a running daemon's do once it
// is ready.
func newTestDaemon(t *testing.T) *Daemon {
	t.Helper()
	d := newUnstartedDaemon(t)
	d.adopting.Store(false)
	close(d.acceptGate)
	return d
}

// newUnstartedDaemon is newTestDaemon as NewDaemon leaves it, before Run's
// adoption: it writes no state file and its listeners accept nothing.
func newUnstartedDaemon(t *testing.T) *Daemon {
	t.Helper()
	stateDir := socketDir(t)
	cfg := loadString(t, fmt.Sprintf(`
[deployer]
state_dir = %q
[apps.web]
command = ["/bin/false"]
version = "v1"
`, stateDir))
	d, err := NewDaemon(cfg, DaemonOptions{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatalf("NewDaemon: %v", err)
	}
	t.Cleanup(d.cancel)
	return d
}

// do sends a request to d's control handler.
func do(t *testing.T, d *Daemon, method, target, body string) *httptest.ResponseRecorder {
	t.Helper()
	var r *http.Request
	if body == "" {
		r = httptest.NewRequest(method, "http://deployer"+target, nil)
	} else {
		r = httptest.NewRequest(method, "http://deployer"+target, strings.NewReader(body))
	}
	w := httptest.NewRecorder()
	d.controlHandler().ServeHTTP(w, r)
	return w
}

// decode decodes w's JSON body into v, checking the status and content type.
func decode(t *testing.T, w *httptest.ResponseRecorder, status int, v any) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status: got %d, want %d; body %s", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
		t.Fatalf("body %s: %v", w.Body, err)
	}
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestControlStatus checks the JSON shape of GET /v1/status, the contract of
// `deployer status --json`, for an app that has not started.
func TestControlStatus(t *testing.T) {
	d := newTestDaemon(t)
	for _, target := range []string{"/v1/status", "/v1/status?app=web"} {
		var got map[string]any
		decode(t, do(t, d, "GET", target, ""), http.StatusOK, &got)
		if k := keys(got); !slices.Equal(k, []string{"apps", "daemon", "load"}) {
			t.Errorf("%s: keys %q, want apps, daemon, load", target, k)
		}
		daemon, _ := got["daemon"].(map[string]any)
		if pid, _ := daemon["pid"].(float64); int(pid) != os.Getpid() {
			t.Errorf("%s: daemon pid %v, want %d", target, daemon["pid"], os.Getpid())
		}
		load, _ := got["load"].(map[string]any)
		if k := keys(load); !slices.Equal(k, []string{"load1", "load15", "load5"}) {
			t.Errorf("%s: load keys %q, want load1, load5, load15", target, k)
		}
		apps, _ := got["apps"].([]any)
		if len(apps) != 1 {
			t.Fatalf("%s: apps %v, want one", target, got["apps"])
		}
		app, _ := apps[0].(map[string]any)
		// last_error is left out while there is none.
		want := []string{"held", "in_flight", "instances", "name", "previous", "state", "version", "versions"}
		if k := keys(app); !slices.Equal(k, want) {
			t.Errorf("%s: app keys %q, want %q", target, k, want)
		}
		for k, v := range map[string]any{"name": "web", "state": StateStopped, "version": "", "previous": "", "in_flight": 0.0, "held": 0.0} {
			if app[k] != v {
				t.Errorf("%s: %s = %#v, want %#v", target, k, app[k], v)
			}
		}
		// Empty lists are [], not null: scripts may iterate them.
		for _, k := range []string{"instances", "versions"} {
			if l, ok := app[k].([]any); !ok || len(l) != 0 {
				t.Errorf("%s: %s = %#v, want []", target, k, app[k])
			}
		}
	}
}

func TestControlErrors(t *testing.T) {
	d := newTestDaemon(t)
	tests := []struct {
		name, method, target, body string
		status                     int
		code                       string
	}{
		{"status of unknown app", "GET", "/v1/status?app=nope", "", 404, "unknown_app"},
		{"swap of unknown app", "POST", "/v1/apps/nope/swap", `{"version":"v2"}`, 404, "unknown_app"},
		{"pause of unknown app", "POST", "/v1/apps/nope/pause", "", 404, "unknown_app"},
		{"logs of unknown app", "GET", "/v1/apps/nope/logs", "", 404, "unknown_app"},
		{"bad version", "POST", "/v1/apps/web/swap", `{"version":"../v2"}`, 400, "bad_request"},
		{"swap without version", "POST", "/v1/apps/web/swap", `{}`, 400, "bad_request"},
		{"bad JSON", "POST", "/v1/apps/web/swap", `{"version":`, 400, "bad_request"},
		{"version not a string", "POST", "/v1/apps/web/swap", `{"version":2}`, 400, "bad_request"},
		{"unknown op", "POST", "/v1/apps/web/frobnicate", "", 400, "bad_request"},
		{"logs with a bad n", "GET", "/v1/apps/web/logs?n=-1", "", 400, "bad_request"},
		{"logs after what", "GET", "/v1/apps/web/logs?after=yesterday", "", 400, "bad_request"},
		{"unknown endpoint", "GET", "/v2/status", "", 400, "bad_request"},
		{"wrong method", "GET", "/v1/apps/web/swap", "", 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got APIError
			decode(t, do(t, d, tt.method, tt.target, tt.body), tt.status, &got)
			if got.Code != tt.code || got.Error == "" {
				t.Errorf("got %+v, want code %q and a message", got, tt.code)
			}
		})
	}
}

// TestControlPauseResume checks that pause and resume answer the app's
// Status and create and remove the hold file, and that state.json follows.
func TestControlPauseResume(t *testing.T) {
	d := newTestDaemon(t)
	hold := filepath.Join(d.cfg.Deployer.StateDir, "web", "hold")
	statePath := filepath.Join(d.cfg.Deployer.StateDir, "state.json")
	for _, step := range []struct {
		op   string
		held bool
	}{{"pause", true}, {"pause", true}, {"resume", false}, {"resume", false}} {
		var got AppStatus
		decode(t, do(t, d, "POST", "/v1/apps/web/"+step.op, ""), http.StatusOK, &got)
		if got.Name != "web" || got.State != StateStopped {
			t.Errorf("%s: got name %q state %q, want web, %s (nothing serves)", step.op, got.Name, got.State, StateStopped)
		}
		if _, err := os.Stat(hold); (err == nil) != step.held {
			t.Errorf("%s: hold file exists = %v, want %v", step.op, err == nil, step.held)
		}
		var sf stateFile
		b, err := os.ReadFile(statePath)
		if err != nil {
			t.Fatalf("%s: %v", step.op, err)
		}
		if err := json.Unmarshal(b, &sf); err != nil {
			t.Fatalf("%s: state.json: %v", step.op, err)
		}
		if sf.Apps["web"].Paused != step.held {
			t.Errorf("%s: state.json says paused %v, want %v", step.op, sf.Apps["web"].Paused, step.held)
		}
	}
}

func TestControlLogs(t *testing.T) {
	d := newTestDaemon(t)
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.Local)
	for i := 1; i <= 3; i++ {
		d.apps["web"].logs.Add(LogLine{Time: at, Version: "v1", Text: fmt.Sprint("line ", i)})
	}
	w := do(t, d, "GET", "/v1/apps/web/logs?n=2", "")
	if w.Code != http.StatusOK {
		t.Fatalf("status: got %d, want 200; body %s", w.Code, w.Body)
	}
	if want := "03:04:05.000 v1[0] line 2\n03:04:05.000 v1[0] line 3\n"; w.Body.String() != want {
		t.Errorf("got %q, want %q", w.Body, want)
	}
	// after=handover leaves out what the daemon before showed (Backlog).
	d.apps["web"].logs.Add(LogLine{Time: at, Version: "v1", Text: "line 4", Backlog: true})
	d.apps["web"].logs.Add(LogLine{Time: at, Version: "v1", Text: "line 5"})
	w = do(t, d, "GET", "/v1/apps/web/logs?n=9&after=handover", "")
	if want := "03:04:05.000 v1[0] line 1\n03:04:05.000 v1[0] line 2\n03:04:05.000 v1[0] line 3\n03:04:05.000 v1[0] line 5\n"; w.Body.String() != want {
		t.Errorf("after=handover: got %q, want %q", w.Body, want)
	}
	// A follower back after a hand-over that reaches the old daemon again
	// (it accepts for a moment still) gets nothing and the trailer at once:
	// the old daemon's own lines would have been shown twice.
	d.handedOver.Store(true)
	srv := httptest.NewServer(d.controlHandler())
	defer srv.Close()
	c := &http.Client{Timeout: 5 * time.Second}
	res, err := c.Get(srv.URL + "/v1/apps/web/logs?n=9&follow=1&after=handover")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if len(body) != 0 || res.Trailer.Get("Deployer-Logs-End") != "handover" || res.Header.Get("Deployer-Pid") != strconv.Itoa(os.Getpid()) {
		t.Errorf("a follower back at a daemon that handed over: body %q, trailer %v, header %v", body, res.Trailer, res.Header)
	}
}

// TestControlLogsFollow checks that follow=1 streams lines added after the
// request, and ends when the client goes.
func TestControlLogsFollow(t *testing.T) {
	d := newTestDaemon(t)
	logs := d.apps["web"].logs
	logs.Add(LogLine{Version: "v1", Text: "old"})
	srv := httptest.NewServer(d.controlHandler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/v1/apps/web/logs?n=1&follow=1")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	r := bufio.NewReader(res.Body)
	readLine := func() string {
		t.Helper()
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		return line
	}
	if got := readLine(); !strings.HasSuffix(got, " old\n") {
		t.Errorf("got %q, want the old line first", got)
	}
	// The handler subscribed before it sent the old line: nothing added
	// from now on can be missed.
	logs.Add(LogLine{Version: "v2", Instance: 1, Text: "new"})
	if got := readLine(); !strings.HasSuffix(got, " v2[1] new\n") {
		t.Errorf("got %q, want the new line", got)
	}
}

func TestControlShutdown(t *testing.T) {
	d := newTestDaemon(t)
	var got map[string]any
	decode(t, do(t, d, "POST", "/v1/shutdown", ""), http.StatusOK, &got)
	if len(got) != 0 {
		t.Errorf("got %v, want {}", got)
	}
	select {
	case <-d.shutdown:
	default:
		t.Error("shutdown not requested")
	}
	// A second request must not panic on the closed channel.
	do(t, d, "POST", "/v1/shutdown", "")
}

// TestAPIStatus checks the one mapping from errors to HTTP statuses and API
// codes, wrapped errors included.
func TestAPIStatus(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{ErrUnknownApp, 404, "unknown_app"},
		{fmt.Errorf("%w: x", errBadRequest), 400, "bad_request"},
		{fmt.Errorf("%w on web", ErrOpRunning), 409, "swap_running"},
		{fmt.Errorf("%w: web", ErrNoPrevious), 409, "no_previous"},
		{fmt.Errorf("%w: web", ErrNotServing), 409, "not_serving"},
		{errors.New("disk full"), 500, "internal"},
	}
	for _, tt := range tests {
		status, code := apiStatus(tt.err)
		if status != tt.status || code != tt.code {
			t.Errorf("%v: got %d %q, want %d %q", tt.err, status, code, tt.status, tt.code)
		}
	}
}

// Progress from several goroutines at once (a launch reports per instance)
// makes whole NDJSON lines, and the result comes last.
func TestStreamConcurrentProgress(t *testing.T) {
	d := newTestDaemon(t)
	a, err := d.app("web")
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	d.stream(w, a, func(_ context.Context, progress progressFunc) (*Result, error) {
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 50; j++ {
					progress("instance %d step %d", i, j)
				}
			}()
		}
		wg.Wait()
		return &Result{OK: true, App: "web"}, nil
	})
	lines := strings.Split(strings.TrimSpace(w.Body.String()), "\n")
	if len(lines) != 8*50+1 {
		t.Fatalf("%d lines, want %d", len(lines), 8*50+1)
	}
	for i, l := range lines {
		var ev Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %d %q: %v", i, l, err)
		}
		if last := i == len(lines)-1; (ev.Type == "result") != last {
			t.Fatalf("line %d is a %q event", i, ev.Type)
		}
	}
}

// noAppConfig is deploy.toml text for a daemon with no proxy and one app,
// web, that never starts (/bin/false), in a fresh state directory.
func noAppConfig(t *testing.T) string {
	return fmt.Sprintf(`
[deployer]
listen = ""
state_dir = %q
[apps.web]
command = ["/bin/false"]
version = "v1"
`, socketDir(t))
}

// runningDaemon is a daemon whose Run goes on until the test ends.
type runningDaemon struct {
	*Daemon
	ready   chan struct{} // closed once its ready step returned
	stopped chan struct{} // closed once Run returned
	mayFail bool
	runErr  error // Run's, once stopped is closed
}

// runDaemon runs NewDaemon(cfg, opts) until the test ends (then it cancels
// Run's context and waits at most 30s for it). opts.Ready, if set, runs as
// the daemon's ready step before ready is closed.
func runDaemon(t *testing.T, cfg *Config, opts DaemonOptions) *runningDaemon {
	t.Helper()
	return runDaemonMayFail(t, cfg, opts, false)
}

// runDaemonMayFail is runDaemon; with mayFail, Run's error is the test's to
// look at (runErr, once stopped is closed), not a failure.
func runDaemonMayFail(t *testing.T, cfg *Config, opts DaemonOptions, mayFail bool) *runningDaemon {
	t.Helper()
	r := &runningDaemon{ready: make(chan struct{}), stopped: make(chan struct{}), mayFail: mayFail}
	hook := opts.Ready
	opts.Ready = func() error {
		if hook != nil {
			if err := hook(); err != nil {
				return err
			}
		}
		close(r.ready)
		return nil
	}
	opts.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	d, err := NewDaemon(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	r.Daemon = d
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		if r.runErr = d.Run(ctx); r.runErr != nil && !r.mayFail {
			t.Errorf("Run: %v", r.runErr)
		}
		close(r.stopped)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.stopped:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return 30s after its context ended")
		}
	})
	return r
}

// waitReady waits (at most 10s) until the daemon is ready.
func (r *runningDaemon) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-r.ready:
	case <-r.stopped:
		t.Fatal("Run returned before the daemon was ready")
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon never got ready")
	}
}

// The control socket listens from the daemon's start but is served only
// once the daemon is ready (its apps adopted): until then a call waits, so
// that after an upgrade the old daemon, which shares the socket, answers it.
func TestControlServedOnceReady(t *testing.T) {
	inReady, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	releaseReady := func() { releaseOnce.Do(func() { close(release) }) }
	d := runDaemon(t, loadString(t, noAppConfig(t)), DaemonOptions{Ready: func() error {
		close(inReady)
		<-release
		return nil
	}})
	defer releaseReady() // before runDaemon's cleanup ends Run
	select {
	case <-inReady:
	case <-d.stopped:
		t.Fatal("Run returned before its ready step")
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon never got to its ready step")
	}

	conn, err := net.Dial("unix", d.layout.ControlSocket())
	if err != nil {
		t.Fatalf("the control socket does not accept connections while the daemon starts: %v", err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v1/status HTTP/1.1\r\nHost: deployer\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a control call before the daemon is ready was answered (%d bytes, %v)", n, err)
	}
	releaseReady()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the waiting call was not answered once ready: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status once ready: %s", res.Status)
	}
}

// A shutdown asked for while an upgrade runs waits for it; the upgrade
// having succeeded, the daemon hands over and Run returns (it used to wait
// for the apps' operation locks, which the upgrade keeps, for ever).
func TestShutdownDuringUpgrade(t *testing.T) {
	inUpgrade, finish := make(chan struct{}), make(chan struct{})
	d := runDaemon(t, loadString(t, noAppConfig(t)), DaemonOptions{Upgrade: func() error {
		close(inUpgrade)
		<-finish
		return nil
	}})
	d.waitReady(t)
	upgraded := make(chan *UpgradeResult, 1)
	go func() {
		// The app's boot retries hold its operation lock for a moment
		// each: an upgrade then is refused, and tried again.
		for {
			res, err := d.Upgrade()
			if errors.Is(err, ErrOpRunning) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if err != nil {
				t.Errorf("Upgrade: %v", err)
			}
			upgraded <- res
			return
		}
	}()
	select {
	case <-inUpgrade:
	case res := <-upgraded:
		t.Fatalf("the upgrade ended before it began: %+v", res)
	case <-time.After(10 * time.Second):
		t.Fatal("the upgrade never began")
	}
	d.requestShutdown()
	time.Sleep(100 * time.Millisecond) // Run is at the shutdown now
	close(finish)
	select {
	case res := <-upgraded:
		if res == nil || !res.OK {
			t.Fatalf("upgrade result %+v", res)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the upgrade did not end")
	}
	select {
	case <-d.handoverC:
	case <-time.After(5 * time.Second):
		t.Fatal("no hand-over")
	}
	// Run returning is checked by runDaemon's cleanup: within 30s, not for
	// ever.
}

// An upgrade is refused while an app removed from deploy.toml still
// drains: the new daemon would not know it, and its processes would be
// no one's.
func TestUpgradeRefusedWhileRemovedAppDrains(t *testing.T) {
	d := runDaemon(t, loadString(t, noAppConfig(t)), DaemonOptions{Upgrade: func() error { return errors.New("not to be called") }})
	d.waitReady(t)
	gone := newApp(d.Daemon, d.config().Apps["web"])
	gone.name = "api"
	d.mu.Lock()
	d.removing[gone] = struct{}{}
	d.mu.Unlock()
	_, err := d.Upgrade()
	if !errors.Is(err, ErrUpgradeBusy) || !strings.Contains(err.Error(), "app api, removed from deploy.toml, is still draining") {
		t.Fatalf("Upgrade: %v, want ErrUpgradeBusy naming api", err)
	}
	d.mu.Lock()
	delete(d.removing, gone)
	d.mu.Unlock()
}

// A deploy.toml edited after it was read and before the daemon watched it
// (what the old daemon leaves to the new one during an upgrade) is applied
// when the daemon starts.
func TestEditBeforeWatchApplied(t *testing.T) {
	text := noAppConfig(t)
	cfg := loadString(t, text)
	if err := os.WriteFile(cfg.Path, []byte(text+"[apps.api]\ncommand = [\"/bin/false\"]\nversion = \"v1\"\nhosts = [\"api.test\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := runDaemon(t, cfg, DaemonOptions{})
	d.waitReady(t)
	waitUntil(t, "app api from the edit", 5*time.Second, func() bool { return d.config().Apps["api"] != nil })
}

// An edit of deploy.toml during an upgrade is left to the new daemon; when
// the upgrade fails, the daemon that serves on applies it.
func TestEditDuringFailedUpgradeApplied(t *testing.T) {
	text := noAppConfig(t)
	cfg := loadString(t, text)
	d := runDaemon(t, cfg, DaemonOptions{Upgrade: func() error {
		edit := text + "[apps.api]\ncommand = [\"/bin/false\"]\nversion = \"v1\"\nhosts = [\"api.test\"]\n"
		if err := os.WriteFile(cfg.Path, []byte(edit), 0o644); err != nil {
			return err
		}
		time.Sleep(2 * reloadDebounce) // the watch sees it while the upgrade runs
		return errors.New("the new binary failed")
	}})
	d.waitReady(t)
	// Past the start's own look for an edit (just after ready), which
	// would otherwise wait for this upgrade and find the edit itself.
	time.Sleep(200 * time.Millisecond)
	for {
		res, err := d.Upgrade()
		if errors.Is(err, ErrOpRunning) { // web's boot retry holds its lock a moment
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil || res.OK {
			t.Fatalf("Upgrade: %+v, %v; want a failed upgrade", res, err)
		}
		break
	}
	waitUntil(t, "app api from the edit made during the failed upgrade", 5*time.Second, func() bool { return d.config().Apps["api"] != nil })
}

// A daemon accepts no public connection before it is ready: after an
// upgrade the old daemon, which shares the listening socket, accepts them
// meanwhile, and a new daemon that then fails drops none. (It served them
// from its start, and one that failed at Ready dropped those it had.)
func TestNoAcceptBeforeReady(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg := loadString(t, fmt.Sprintf(`
[deployer]
listen = %q
state_dir = %q
[apps.web]
command = ["/bin/false"]
version = "v1"
`, ln.Addr().String(), socketDir(t)))
	answered := make(chan string, 1)
	d := runDaemonMayFail(t, cfg, DaemonOptions{
		// The daemon's copy of the socket, as tableflip hands one over.
		Listen: func(network, addr string) (net.Listener, error) {
			if network == "tcp" {
				return net.FileListener(f)
			}
			return net.Listen(network, addr)
		},
		Ready: func() error {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return err
			}
			defer c.Close()
			io.WriteString(c, "GET "+HealthPath+" HTTP/1.1\r\nHost: x\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			b, _ := io.ReadAll(c)
			answered <- string(b)
			return errors.New("test: this daemon fails at Ready")
		},
	}, true)
	select {
	case got := <-answered:
		if got != "" {
			t.Errorf("a daemon not ready yet answered a public connection: %q", got)
		}
	case <-d.stopped:
		t.Fatal("Run returned before its ready step")
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon never got to its ready step")
	}
	select {
	case <-d.stopped:
		if d.runErr == nil || !strings.Contains(d.runErr.Error(), "fails at Ready") {
			t.Errorf("Run returned %v, want the ready step's error", d.runErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its ready step failed")
	}
	// The connection is still the socket's: "the old daemon" takes it.
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	if c, err := ln.Accept(); err != nil {
		t.Errorf("the connection made before Ready was not left in the socket's queue: %v", err)
	} else {
		c.Close()
	}
}
