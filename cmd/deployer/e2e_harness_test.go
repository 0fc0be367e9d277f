package main

// End-to-end tests: the real deployer binary runs as a daemon, real app
// processes (examples/hello) listen on real unix sockets, and concurrent
// clients count every outcome across swaps.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testlog"
	"github.com/deployer/deployer/supervisor"
)

var (
	deployerBin string // built once by TestMain
	helloBin    string
)

// buildBinaries builds deployer and examples/hello once for the end-to-end
// tests (TestMain calls it) and returns a cleanup function.
func buildBinaries() (func(), error) {
	dir, err := os.MkdirTemp("", "dbin")
	if err != nil {
		return nil, err
	}
	deployerBin = filepath.Join(dir, "deployer")
	helloBin = filepath.Join(dir, "hello")
	for _, b := range []struct{ out, pkg string }{{deployerBin, "."}, {helloBin, "../../examples/hello"}} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("building %s: %w", b.pkg, err)
		}
	}
	return func() { os.RemoveAll(dir) }, nil
}

// env is one deployer installation: a short directory (unix socket paths
// are limited to 107 bytes) with deploy.toml and releases/<version>/run.
type env struct {
	t      *testing.T
	dir    string
	config string
	addr   string // the proxy's listen address
	daemon *exec.Cmd
	logs   *testlog.Buffer
	exited chan struct{}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "dpl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return &env{t: t, dir: dir, config: filepath.Join(dir, "deploy.toml"), addr: freeAddr(t)}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// release writes releases/<version>/run, a script that runs hello with
// extra flags.
func (e *env) release(version string, flags ...string) {
	e.t.Helper()
	d := filepath.Join(e.dir, "releases", version)
	if err := os.MkdirAll(d, 0o755); err != nil {
		e.t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\nexec %s -socket \"$DEPLOYER_SOCKET\" -version \"$DEPLOYER_VERSION\" %s\n", helloBin, strings.Join(flags, " "))
	if err := os.WriteFile(filepath.Join(d, "run"), []byte(script), 0o755); err != nil {
		e.t.Fatal(err)
	}
}

// writeConfig writes deploy.toml; %ADDR% is replaced by the proxy address.
func (e *env) writeConfig(text string) {
	e.t.Helper()
	text = strings.ReplaceAll(text, "%ADDR%", e.addr)
	if err := os.WriteFile(e.config, []byte(text), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// basicConfig is one app "web" at v1 behind the proxy, with short timeouts.
func (e *env) basicConfig(extra string) {
	e.release("v1")
	e.release("v2")
	e.writeConfig(basicConfigText("", extra))
}

// basicConfigText is basicConfig's deploy.toml: deployerExtra ends
// [deployer] (its first line is line 6), extra ends [apps.web].
func basicConfigText(deployerExtra, extra string) string {
	return `[deployer]
listen = "%ADDR%"
state_dir = "run"
queue_timeout = "10s"
drain_timeout = "5s"
` + deployerExtra + `
[apps.web]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
settle = "100ms"
ready_timeout = "10s"
stop_timeout = "5s"
` + extra
}

// start runs `deployer start` in the background and waits until every app
// in names serves.
func (e *env) start(names ...string) {
	e.t.Helper()
	e.launch()
	if len(names) == 0 {
		names = []string{"web"}
	}
	for _, n := range names {
		e.waitState(n, supervisor.StateServing, 30*time.Second)
	}
}

// launch runs `deployer start` in the background, stopped at the test's end
// (its output logged if the test failed).
func (e *env) launch() {
	e.t.Helper()
	e.logs = &testlog.Buffer{}
	cmd := exec.Command(deployerBin, "-c", e.config, "start")
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	cmd.Env = append(os.Environ(), "HELLO_RECORD="+filepath.Join(e.dir, "record"))
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.daemon = cmd
	e.exited = make(chan struct{})
	go func() { cmd.Wait(); close(e.exited) }()
	e.t.Cleanup(func() {
		e.stopDaemon()
		if e.t.Failed() {
			e.t.Logf("daemon output:\n%s", e.logs.String())
		}
	})
}

// killDaemon kills the daemon with SIGKILL, as a crash would: its apps'
// processes run on, and the state file stays as it last wrote it.
func (e *env) killDaemon() {
	e.t.Helper()
	if err := e.daemon.Process.Signal(syscall.SIGKILL); err != nil {
		e.t.Fatal(err)
	}
	<-e.exited
}

func (e *env) stopDaemon() {
	if e.daemon == nil {
		return
	}
	select {
	case <-e.exited:
		return
	default:
	}
	e.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(30 * time.Second):
		e.daemon.Process.Kill()
		<-e.exited
	}
}

// cli runs the deployer CLI against this installation.
func (e *env) cli(args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	cmd := exec.Command(deployerBin, append([]string{"-c", e.config}, args...)...)
	var o, s bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &s
	err := cmd.Run()
	code = 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running deployer %v: %v", args, err)
	}
	return o.String(), s.String(), code
}

// mustCLI runs the CLI and fails the test unless it exits 0.
func (e *env) mustCLI(args ...string) string {
	e.t.Helper()
	out, errOut, code := e.cli(args...)
	if code != 0 {
		e.t.Fatalf("deployer %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
	}
	return out
}

func (e *env) status() supervisor.Status {
	e.t.Helper()
	out, errOut, code := e.cli("status", "--json")
	var st supervisor.Status
	if code != 0 {
		return st
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("status --json: %v\n%s%s", err, out, errOut)
	}
	return st
}

func (e *env) appStatus(name string) supervisor.AppStatus {
	e.t.Helper()
	for _, a := range e.status().Apps {
		if a.Name == name {
			return a
		}
	}
	return supervisor.AppStatus{}
}

func (e *env) waitState(app, state string, timeout time.Duration) supervisor.AppStatus {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := e.appStatus(app)
		if st.State == state {
			return st
		}
		select {
		case <-e.exited:
			e.t.Fatalf("daemon exited while waiting for %s to be %s", app, state)
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s not %s within %s (state %q, last error %q)", app, state, timeout, st.State, st.LastError)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) url(path string) string { return "http://" + e.addr + path }

// get makes one request through the proxy with a fresh client.
func (e *env) get(path string) (int, string, http.Header) {
	e.t.Helper()
	res, err := http.Get(e.url(path))
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header
}

// outcomes counts what concurrent clients saw, by class.
type outcomes struct {
	mu     sync.Mutex
	counts map[string]int
	first  map[string]string // first error text per class
}

func newOutcomes() *outcomes {
	return &outcomes{counts: map[string]int{}, first: map[string]string{}}
}

func (o *outcomes) add(class, detail string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.counts[class]++
	if _, ok := o.first[class]; !ok && detail != "" {
		o.first[class] = detail
	}
}

func (o *outcomes) total() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, c := range o.counts {
		n += c
	}
	return n
}

func (o *outcomes) failures() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for k, c := range o.counts {
		if k != "2xx" {
			n += c
		}
	}
	return n
}

func (o *outcomes) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var b strings.Builder
	for _, k := range []string{"2xx", "4xx", "5xx", "refused", "reset", "timeout", "eof", "other"} {
		fmt.Fprintf(&b, "%s=%d ", k, o.counts[k])
	}
	for k, v := range o.first {
		fmt.Fprintf(&b, "\n  first %s: %s", k, v)
	}
	return b.String()
}

// classify sorts a request's result into the classes the zero-downtime
// claims are about.
func classify(res *http.Response, err error) (string, string) {
	switch {
	case err == nil && res.StatusCode < 300:
		return "2xx", ""
	case err == nil && res.StatusCode < 500:
		return "4xx", res.Status
	case err == nil:
		return "5xx", res.Status
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused", err.Error()
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset", err.Error()
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof", err.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout", err.Error()
	}
	return "other", err.Error()
}

// load runs n keep-alive clients against path until stop is closed; each
// client keeps its own connection pool for the whole run.
type load struct {
	out      *outcomes
	stop     chan struct{}
	wg       sync.WaitGroup
	versions sync.Map // version → count
	last     atomic.Value
}

func startLoad(t *testing.T, url string, n int) *load {
	t.Helper()
	return startLoadVia(t, url, n, "")
}

// startLoadVia is startLoad through the unix socket at socket, as an outer
// proxy (nginx) connects to current.sock; "" dials url's host over TCP.
func startLoadVia(t *testing.T, url string, n int, socket string) *load {
	t.Helper()
	l := &load{out: newOutcomes(), stop: make(chan struct{})}
	for i := 0; i < n; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			if socket != "" {
				tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", socket)
				}
			}
			c := &http.Client{Timeout: 30 * time.Second, Transport: tr}
			defer c.CloseIdleConnections()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				res, err := c.Get(url)
				if err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if v := res.Header.Get("X-Version"); v != "" {
						l.last.Store(v)
						n, _ := l.versions.LoadOrStore(v, new(atomic.Int64))
						n.(*atomic.Int64).Add(1)
					}
				}
				class, detail := classify(res, err)
				l.out.add(class, detail)
			}
		}()
	}
	return l
}

// finish stops the clients and returns the counts.
func (l *load) finish() *outcomes {
	close(l.stop)
	l.wg.Wait()
	return l.out
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// tryGet makes one request and reports 0 on a transport error.
func tryGet(url string) (int, string, http.Header) {
	c := &http.Client{Timeout: 5 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		return 0, "", http.Header{}
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header
}

// slowResult is how a request started in the background ended.
type slowResult struct {
	code    int
	version string // X-Version: which version answered
	err     error
}

// getInBackground starts GET url and reports its end on the channel.
func getInBackground(url string) <-chan slowResult {
	done := make(chan slowResult, 1)
	go func() {
		res, err := http.Get(url)
		if err != nil {
			done <- slowResult{err: err}
			return
		}
		_, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		done <- slowResult{code: res.StatusCode, version: res.Header.Get("X-Version"), err: err}
	}()
	return done
}
