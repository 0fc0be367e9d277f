package main

// End-to-end tests of the daemon replacing itself (deployer upgrade,
// SIGHUP) and of a new daemon re-adopting the apps of one that crashed.
// The daemon runs from a copy of the deployer binary that each test may
// replace, by rename, as an operator would.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/deployer/deployer/internal/testlog"
	"github.com/deployer/deployer/sockets"
	"github.com/deployer/deployer/supervisor"
)

// upgradeEnv is an env whose daemon runs from <dir>/bin/deployer, a copy
// of deployerBin, and whose daemon pid changes with every upgrade. The
// env's own daemon fields stay unset: its start and stopDaemon would follow
// the first process only.
type upgradeEnv struct {
	*env
	bin     string // the daemon's binary: replaced by rename, never written into
	logPath string // every daemon's stdout and stderr, appended
	// lastUpgrade is what the last u.upgrade's `deployer upgrade` printed.
	lastUpgrade string

	mu      sync.Mutex
	pids    map[int]bool // every daemon and app process seen, for the cleanup
	cleanup bool         // the cleanup is registered
}

func newUpgradeEnv(t *testing.T) *upgradeEnv {
	t.Helper()
	e := newEnv(t)
	u := &upgradeEnv{
		env:     e,
		bin:     filepath.Join(e.dir, "bin", "deployer"),
		logPath: filepath.Join(e.dir, "daemon.log"),
		pids:    map[int]bool{},
	}
	if err := os.MkdirAll(filepath.Dir(u.bin), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(deployerBin)
	if err != nil {
		t.Fatal(err)
	}
	u.install(b)
	return u
}

// install puts content at u.bin the way an operator must: written to a
// temporary name, then renamed over the binary. Writing into the file of a
// running program fails with ETXTBSY, and the next upgrade would start a
// half-written file.
func (u *upgradeEnv) install(content []byte) {
	u.t.Helper()
	tmp := u.bin + ".new"
	if err := os.WriteFile(tmp, content, 0o755); err != nil {
		u.t.Fatal(err)
	}
	if err := os.Rename(tmp, u.bin); err != nil {
		u.t.Fatal(err)
	}
}

// configure writes deploy.toml: app web at v1 from releases/{version}/run,
// with drain as the drain_timeout of the daemon and of the app, and the
// daemon's pid in run/deployer.pid. v1 and v2 are released with flags.
func (u *upgradeEnv) configure(drain, appExtra string, flags ...string) {
	u.t.Helper()
	u.release("v1", flags...)
	u.release("v2", flags...)
	u.writeConfig(`[deployer]
listen = "%ADDR%"
state_dir = "run"
pid_file = "run/deployer.pid"
queue_timeout = "10s"
drain_timeout = "` + drain + `"

[apps.web]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
settle = "100ms"
ready_timeout = "10s"
stop_timeout = "5s"
drain_timeout = "` + drain + `"
` + appExtra)
}

// startDaemon runs `<dir>/bin/deployer start` in the background and waits
// until web serves.
func (u *upgradeEnv) startDaemon() {
	u.t.Helper()
	logf, err := os.OpenFile(u.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		u.t.Fatal(err)
	}
	// A file, not a pipe: cmd.Wait would wait for every holder of a pipe's
	// write end to exit, and the next daemon inherits it.
	defer logf.Close()
	cmd := exec.Command(u.bin, "-c", u.config, "start")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "HELLO_RECORD="+filepath.Join(u.dir, "record"))
	if err := cmd.Start(); err != nil {
		u.t.Fatal(err)
	}
	// Reap it, so that its pid is gone once it exits (a zombie answers
	// kill(pid, 0)). The daemons after an upgrade are not this process's
	// children.
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	u.track(cmd.Process.Pid)
	u.mu.Lock()
	if !u.cleanup {
		u.cleanup = true
		u.t.Cleanup(u.shutdown)
	}
	u.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	for {
		st := u.appStatus("web")
		if st.State == supervisor.StateServing {
			break
		}
		select {
		case <-exited:
			u.t.Fatalf("daemon exited (%v) before web served\n%s", cmd.ProcessState, u.daemonLog())
		default:
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("web not serving within 30s (state %q, last error %q)", st.State, st.LastError)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range u.appPIDs() {
		u.track(p)
	}
}

func (u *upgradeEnv) track(pid int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.pids[pid] = true
}

// shutdown stops the current daemon the way an operator would, then kills
// whatever daemon or app process of this test is left.
func (u *upgradeEnv) shutdown() {
	if _, errOut, code := u.cli("shutdown"); code != 0 && !strings.Contains(errOut, "no daemon is running") {
		u.t.Errorf("deployer shutdown at cleanup: exit %d: %s", code, errOut)
	}
	u.mu.Lock()
	pids := make([]int, 0, len(u.pids))
	for p := range u.pids {
		pids = append(pids, p)
	}
	u.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range pids {
		for !processGone(p) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if processGone(p) || !u.ours(p) {
			continue
		}
		u.t.Errorf("pid %d (%s) still running after deployer shutdown: killed", p, cmdline(p))
		// Apps run in their own process group (the pid is its id).
		syscall.Kill(-p, syscall.SIGKILL)
		syscall.Kill(p, syscall.SIGKILL)
	}
	if u.t.Failed() {
		u.t.Logf("daemon output:\n%s", u.daemonLog())
	}
}

// ours reports whether pid still is a process of this test: a daemon or app
// started from u.dir, not another process that got the pid since.
func (u *upgradeEnv) ours(pid int) bool {
	return strings.Contains(cmdline(pid), u.dir)
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
}

func (u *upgradeEnv) daemonLog() string {
	b, _ := os.ReadFile(u.logPath)
	return string(b)
}

// processGone reports whether pid has exited and closed its files: no such
// process, or a zombie nobody has reaped yet (an old daemon is reparented
// when its parent, the daemon before it, exits; kill(pid, 0) succeeds on a
// zombie). A multithreaded process's main thread turns zombie while its
// other threads are still exiting and holding the shared descriptor table
// (its listeners accept connects still), so a zombie counts as gone only
// once it is the last thread left.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses and may
	// hold spaces: "1234 (deployer) Z ...".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) || b[i+2] != 'Z' {
		return false
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return err != nil || len(tasks) <= 1
}

func waitGone(t *testing.T, what string, pid int, timeout time.Duration) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s (pid %d) to exit", what, pid), timeout, func() bool { return processGone(pid) })
}

// daemon returns the current daemon from status --json.
func (u *upgradeEnv) daemon() supervisor.DaemonStatus {
	u.t.Helper()
	out, errOut, code := u.cli("status", "--json")
	if code != 0 {
		u.t.Fatalf("status --json: exit %d: %s", code, errOut)
	}
	var st supervisor.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		u.t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st.Daemon.PID == 0 {
		u.t.Fatalf("status --json has no daemon.pid:\n%s", out)
	}
	return st.Daemon
}

func (u *upgradeEnv) daemonPID() int { return u.daemon().PID }

// appPIDs returns the pids of web's serving instances, in instance order.
func (u *upgradeEnv) appPIDs() []int {
	u.t.Helper()
	st := u.appStatus("web")
	var pids []int
	for _, in := range st.Instances {
		if in.Version == st.Version {
			pids = append(pids, in.PID)
		}
	}
	return pids
}

// pidFile returns the pid in pid_file, 0 while there is none.
func (u *upgradeEnv) pidFile() int {
	u.t.Helper()
	b, err := os.ReadFile(filepath.Join(u.dir, "run", "deployer.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		u.t.Fatalf("pid_file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		u.t.Fatalf("pid_file holds %q: %v", b, err)
	}
	return pid
}

var upgradedRE = regexp.MustCompile(`^upgraded: daemon pid (\d+) → (\d+)\n(build[^\n]*\n)?$`)

// upgrade runs `deployer upgrade`, checks what it printed against status and
// returns the old and the new daemon's pids. It does not wait for the old
// daemon to exit.
func (u *upgradeEnv) upgrade() (oldPID, newPID int) {
	u.t.Helper()
	before := u.daemonPID()
	out := u.mustCLI("upgrade")
	m := upgradedRE.FindStringSubmatch(out)
	if m == nil {
		u.t.Fatalf("deployer upgrade printed %q, want upgraded: daemon pid OLD → NEW", out)
	}
	oldPID, _ = strconv.Atoi(m[1])
	newPID, _ = strconv.Atoi(m[2])
	u.track(newPID)
	u.lastUpgrade = out
	if oldPID != before || newPID == oldPID {
		u.t.Fatalf("deployer upgrade printed %q; the daemon's pid was %d", out, before)
	}
	// The old daemon stops accepting on the shared control socket just
	// after it answered: a status call may still reach it for a moment.
	var got int
	deadline := time.Now().Add(5 * time.Second)
	for got = u.daemonPID(); got != newPID && time.Now().Before(deadline); got = u.daemonPID() {
		time.Sleep(20 * time.Millisecond)
	}
	if got != newPID {
		u.t.Fatalf("status shows daemon pid %d 5s after the upgrade, want the new daemon's %d", got, newPID)
	}
	return oldPID, newPID
}

// TestDaemonUpgradeUnderLoad is issue 4's claim: the daemon replaces itself
// six times in a row (five upgrade commands, then SIGHUP) under 16
// keep-alive clients with no request failed, the apps keep their pids, and
// a swap afterwards works.
func TestDaemonUpgradeUnderLoad(t *testing.T) {
	u := newUpgradeEnv(t)
	u.configure("5s", "")
	u.startDaemon()

	d := u.daemon()
	if d.Binary != u.bin {
		t.Errorf("status: daemon binary %q, want %q", d.Binary, u.bin)
	}
	if d.Started.IsZero() || time.Since(d.Started) > time.Minute {
		t.Errorf("status: daemon started %v", d.Started)
	}
	// A fresh daemon writes pid_file once it is ready, which may come just
	// after its apps serve.
	waitFor(t, "pid_file to hold the daemon's pid", 5*time.Second, func() bool { return u.pidFile() == d.PID })
	apps := u.appPIDs()

	l := startLoad(t, u.url("/"), 16)
	// POSTs are never retried by the client (net/http replays only
	// idempotent requests on a reused connection that closed), so a request
	// the old daemon drops shows here instead of being hidden.
	posts := startPostLoad(t, u.url("/echo"), 4)
	// after checks what must hold after each upgrade; the next may only
	// start once the old daemon has exited (tableflip refuses it before).
	after := func(i, oldPID, newPID int) {
		t.Helper()
		// `deployer upgrade` returns once the new daemon is ready, and so
		// has written pid_file; after SIGHUP the test sees the new daemon
		// by its status, which it answers a moment before it is ready.
		waitFor(t, fmt.Sprintf("upgrade %d: pid_file to hold the new daemon's pid %d", i, newPID), 5*time.Second,
			func() bool { return u.pidFile() == newPID })
		if got := u.appPIDs(); !slices.Equal(got, apps) {
			t.Fatalf("upgrade %d: app pids %v, want %v unchanged", i, got, apps)
		}
		if code, _, h := u.get("/"); code != 200 || h.Get("X-Version") != "v1" {
			t.Fatalf("upgrade %d: got %d from %q, want 200 from v1", i, code, h.Get("X-Version"))
		}
		// Nothing holds the old daemon but the load's keep-alive
		// connections, which it closes when idle: it exits well before
		// drain_timeout (5s).
		waitGone(t, fmt.Sprintf("upgrade %d: the old daemon", i), oldPID, 15*time.Second)
	}
	const upgrades = 5
	for i := 0; i < upgrades; i++ {
		oldPID, newPID := u.upgrade()
		after(i, oldPID, newPID)
		t.Logf("upgrade %d: daemon pid %d → %d, %d requests so far", i, oldPID, newPID, l.out.total())
	}

	// SIGHUP does the same as the command.
	oldPID := u.daemonPID()
	if err := syscall.Kill(oldPID, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var newPID int
	waitFor(t, "a new daemon after SIGHUP", 20*time.Second, func() bool {
		newPID = u.daemonPID()
		return newPID != oldPID
	})
	u.track(newPID)
	after(upgrades, oldPID, newPID)

	// The new daemon does swaps as the first one did.
	n := l.out.total()
	waitFor(t, "requests after the last upgrade", 10*time.Second, func() bool { return l.out.total() > n+200 })
	out := u.mustCLI("swap", "web", "v2")
	if !strings.Contains(out, "swapped web v1 → v2") {
		t.Fatalf("swap after the upgrades:\n%s", out)
	}
	for j := 0; j < 5; j++ {
		if code, _, h := u.get("/"); code != 200 || h.Get("X-Version") != "v2" {
			t.Fatalf("after the swap: got %d from %q, want 200 from v2", code, h.Get("X-Version"))
		}
	}
	waitFor(t, "the adopted v1 processes to be stopped after the swap", 20*time.Second, func() bool {
		for _, p := range apps {
			if !processGone(p) {
				return false
			}
		}
		return true
	})
	n = l.out.total()
	waitFor(t, "requests after the swap", 10*time.Second, func() bool { return l.out.total() > n+200 })

	got := l.finish()
	gotPosts := posts.finish()
	t.Logf("%d upgrades and a swap under load, %d GETs: %s", upgrades+1, got.total(), got)
	t.Logf("%d POSTs, the slowest %s: %s", gotPosts.out.total(), gotPosts.slowest, gotPosts.out)
	if got.failures() != 0 {
		t.Errorf("failed GETs across %d upgrades: %s", upgrades+1, got)
	}
	if gotPosts.out.failures() != 0 {
		t.Errorf("failed POSTs across %d upgrades: %s", upgrades+1, gotPosts.out)
	}
	// The old daemon forwards what it accepted to the apps, which are
	// running: nothing has to wait for its drain deadline.
	if gotPosts.slowest > 2*time.Second {
		t.Errorf("a POST took %s across an upgrade (drain_timeout 5s): requests stalled", gotPosts.slowest)
	}
	if got.total() < 1000 {
		t.Errorf("only %d requests made: the load did not run", got.total())
	}
	gotPosts.deliveredOnce(t, filepath.Join(u.dir, "record"))
}

// postLoad runs keep-alive clients that POST small bodies, each with an id
// the app records, and times every request.
type postLoad struct {
	out      *outcomes
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	answered map[string]bool // id → got a 2xx
	slowest  time.Duration
}

func startPostLoad(t *testing.T, url string, n int) *postLoad {
	t.Helper()
	p := &postLoad{out: newOutcomes(), stop: make(chan struct{}), answered: map[string]bool{}}
	for c := 0; c < n; c++ {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for i := 0; ; i++ {
				select {
				case <-p.stop:
					return
				default:
				}
				id := fmt.Sprintf("p%d-%d", c, i)
				start := time.Now()
				res, err := client.Post(url+"?id="+id, "text/plain", strings.NewReader(id))
				if err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				took := time.Since(start)
				class, detail := classify(res, err)
				p.out.add(class, fmt.Sprintf("%s after %s: %s", id, took.Round(time.Millisecond), detail))
				p.mu.Lock()
				p.answered[id] = class == "2xx"
				p.slowest = max(p.slowest, took)
				p.mu.Unlock()
			}
		}()
	}
	return p
}

func (p *postLoad) finish() *postLoad {
	close(p.stop)
	p.wg.Wait()
	return p
}

// deliveredOnce checks the app's record: every POST answered 2xx reached
// the app exactly once, and none was delivered twice.
func (p *postLoad) deliveredOnce(t *testing.T, record string) {
	t.Helper()
	rec, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(rec)), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "POST" {
			seen[f[1]]++
		}
	}
	var lost []string
	for id, ok := range p.answered {
		switch {
		case seen[id] > 1:
			t.Errorf("POST %s delivered %d times", id, seen[id])
		case ok && seen[id] == 0:
			t.Errorf("POST %s answered 2xx but never reached the app", id)
		case !ok && seen[id] == 0:
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		slices.Sort(lost)
		t.Logf("%d failed POSTs never reached the app: %v", len(lost), lost)
	}
	if len(p.answered) < 100 {
		t.Errorf("only %d POSTs made", len(p.answered))
	}
}

// A 3-second request in flight across an upgrade completes with 200; a
// websocket opened before it keeps echoing through the old daemon, and is
// cut when the old daemon exits at its drain deadline (drain_timeout 3s).
func TestDaemonUpgradeSlowRequestAndWebSocket(t *testing.T) {
	u := newUpgradeEnv(t)
	u.configure("3s", "")
	u.startDaemon()
	ctx := context.Background()

	slow := getInBackground(u.url("/slow?d=3s"))
	waitFor(t, "the slow request to be in flight", 5*time.Second, func() bool {
		return u.appStatus("web").InFlight == 1
	})

	dial := func() *websocket.Conn {
		t.Helper()
		c, _, err := websocket.Dial(ctx, "ws://"+u.addr+"/ws", nil)
		if err != nil {
			t.Fatalf("websocket dial: %v", err)
		}
		if _, hello, err := c.Read(ctx); err != nil || string(hello) != "version v1" {
			t.Fatalf("websocket greeted %q, %v; want version v1", hello, err)
		}
		return c
	}
	echo := func(c *websocket.Conn, msg string) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			return err
		}
		_, got, err := c.Read(ctx)
		if err != nil {
			return err
		}
		if string(got) != msg {
			return fmt.Errorf("echo %q, want %q", got, msg)
		}
		return nil
	}
	old := dial()
	defer old.CloseNow()

	// The old daemon starts draining after begun (it answers the upgrade
	// first) and before upgraded.
	begun := time.Now()
	oldPID, _ := u.upgrade()
	upgraded := time.Now()
	// When did the old daemon exit? Polled, to compare with the cut.
	oldExited := make(chan time.Time, 1)
	go func() {
		for !processGone(oldPID) {
			time.Sleep(10 * time.Millisecond)
		}
		oldExited <- time.Now()
	}()

	fresh := dial() // through the new daemon
	defer fresh.CloseNow()

	// The old websocket keeps echoing through the old daemon, which drains.
	for i := 0; time.Since(upgraded) < 2*time.Second; i++ {
		if err := echo(old, fmt.Sprintf("m%d", i)); err != nil {
			t.Fatalf("websocket opened before the upgrade, %s after it: %v", time.Since(upgraded).Round(time.Millisecond), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := <-slow
	if r.err != nil || r.code != 200 || r.version != "v1" {
		t.Fatalf("3s request across the upgrade: code %d version %q err %v; want 200 from v1", r.code, r.version, r.err)
	}

	// Then the old daemon's drain deadline cuts it, and the old daemon exits.
	cut := make(chan time.Time, 1)
	go func() {
		for echo(old, "x") == nil {
			time.Sleep(20 * time.Millisecond)
		}
		cut <- time.Now()
	}()
	var cutAt, exitedAt time.Time
	select {
	case cutAt = <-cut:
	case <-time.After(15 * time.Second):
		t.Fatal("websocket opened before the upgrade still open 15s after it: the old daemon's drain deadline (3s) did not cut it")
	}
	select {
	case exitedAt = <-oldExited:
	case <-time.After(10 * time.Second):
		t.Fatalf("old daemon (pid %d) still running %s after the upgrade, drain_timeout 3s", oldPID, time.Since(upgraded).Round(time.Millisecond))
	}
	t.Logf("old websocket cut %s after the upgrade; old daemon exited %s after it",
		cutAt.Sub(upgraded).Round(time.Millisecond), exitedAt.Sub(upgraded).Round(time.Millisecond))
	if d := cutAt.Sub(begun); d < 2900*time.Millisecond {
		t.Errorf("old websocket cut %s after the upgrade began, before the drain deadline (3s)", d)
	}
	if d := exitedAt.Sub(upgraded); d > 6*time.Second {
		t.Errorf("old daemon exited %s after the upgrade: not bounded by drain_timeout (3s)", d)
	}
	if d := exitedAt.Sub(cutAt); d < -time.Second || d > 2*time.Second {
		t.Errorf("old websocket cut at %s, old daemon exited at %s (after the upgrade): want the cut at the old daemon's exit",
			cutAt.Sub(upgraded), exitedAt.Sub(upgraded))
	}

	if err := echo(fresh, "still here"); err != nil {
		t.Fatalf("websocket opened after the upgrade: %v", err)
	}
	if code, _, _ := u.get("/"); code != 200 {
		t.Fatalf("after the old daemon exited: %d", code)
	}
}

// An upgrade is refused, with the old daemon serving on, while a swap runs
// (swap_running) and while the previous upgrade's old daemon still drains
// (upgrade_busy).
func TestDaemonUpgradeRefused(t *testing.T) {
	u := newUpgradeEnv(t)
	u.configure("3s", "")
	u.release("v3", "-boot-delay", "2s")
	u.startDaemon()
	cl := newClient(sockets.Layout{StateDir: filepath.Join(u.dir, "run")}.ControlSocket())
	ctx := context.Background()
	refused := func(code string) {
		t.Helper()
		before := u.daemonPID()
		res, _, err := cl.upgrade(ctx)
		var api *apiError
		if !errors.As(err, &api) || api.body.Code != code || api.status/100 == 2 {
			t.Fatalf("upgrade answered %+v, error %v; want a non-2xx %q error", res, err, code)
		}
		out, errOut, exit := u.cli("upgrade")
		if exit != 1 || out != "" || !strings.HasPrefix(errOut, "deployer upgrade: ") {
			t.Fatalf("deployer upgrade refused (%s): exit %d\nstdout:\n%s\nstderr:\n%s", code, exit, out, errOut)
		}
		if got := u.daemonPID(); got != before {
			t.Fatalf("daemon pid %d after a refused upgrade, want %d", got, before)
		}
	}

	// The swap runs in this process, so its first progress event says when
	// it has begun; v3 takes 2s to listen.
	launched := make(chan struct{})
	swapped := make(chan string, 1)
	go func() {
		var once sync.Once
		res, _, err := cl.operate(ctx, "web", "swap", supervisor.SwapRequest{Version: "v3", WaitDrain: true}, func(supervisor.Event) {
			once.Do(func() { close(launched) })
		})
		switch {
		case err != nil:
			swapped <- err.Error()
		case !res.OK:
			swapped <- res.Error
		default:
			swapped <- ""
		}
	}()
	select {
	case <-launched:
	case msg := <-swapped:
		t.Fatalf("swap to v3 ended before it began: %q", msg)
	case <-time.After(10 * time.Second):
		t.Fatal("swap to v3 sent no progress within 10s")
	}
	refused("swap_running")
	if msg := <-swapped; msg != "" {
		t.Fatalf("swap to v3 during a refused upgrade: %s", msg)
	}

	// A slow request keeps the old daemon draining after the next upgrade.
	slow := make(chan int, 1)
	go func() {
		code, _, _ := tryGet(u.url("/slow?d=2s"))
		slow <- code
	}()
	waitFor(t, "the slow request to be in flight", 5*time.Second, func() bool {
		return u.appStatus("web").InFlight == 1
	})
	oldPID, _ := u.upgrade()
	if !processGone(oldPID) {
		refused("upgrade_busy")
	} else {
		t.Errorf("old daemon gone at once with a request in flight: upgrade_busy not tested")
	}
	if code := <-slow; code != 200 {
		t.Fatalf("slow request across the upgrade: %d", code)
	}
	waitGone(t, "the old daemon", oldPID, 10*time.Second)
	u.upgrade()
}

// A new binary that fails (exits at once, or never becomes ready) fails
// the upgrade with exit 1 while the old daemon serves on under load; once
// the good binary is back, the next upgrade works.
func TestDaemonUpgradeBrokenBinary(t *testing.T) {
	u := newUpgradeEnv(t)
	u.configure("5s", "")
	u.startDaemon()
	good, err := os.ReadFile(u.bin)
	if err != nil {
		t.Fatal(err)
	}
	daemonPID := u.daemonPID()
	apps := u.appPIDs()
	l := startLoad(t, u.url("/"), 16)

	// Each script records its pid: one that never becomes ready must be
	// killed when the daemon's upgrade timeout (10s) passes.
	pids := filepath.Join(u.dir, "broken.pids")
	for _, b := range []struct {
		name   string
		script string
		within time.Duration
	}{
		{"exits at once", "#!/bin/sh\necho $$ >>" + pids + "\necho 'broken deployer' >&2\nexit 1\n", 10 * time.Second},
		{"never ready", "#!/bin/sh\necho $$ >>" + pids + "\nwhile :; do sleep 1; done\n", 20 * time.Second},
	} {
		u.install([]byte(b.script))
		start := time.Now()
		out, errOut, code := u.cli("upgrade") // the CLI is deployerBin, not the broken file
		took := time.Since(start)
		t.Logf("upgrade to a binary that %s: exit %d after %s\n%s%s", b.name, code, took.Round(time.Millisecond), out, errOut)
		want := fmt.Sprintf("; the running daemon (pid %d) serves on\n", daemonPID)
		if code != 1 || !strings.HasPrefix(out, "upgrade failed: ") || !strings.HasSuffix(out, want) {
			t.Fatalf("upgrade to a binary that %s: exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit 1 and upgrade failed: ...%s", b.name, code, out, errOut, want)
		}
		if took > b.within {
			t.Errorf("upgrade to a binary that %s took %s, want under %s", b.name, took, b.within)
		}
		if got := u.daemonPID(); got != daemonPID {
			t.Fatalf("daemon pid %d after a failed upgrade, want %d serving on", got, daemonPID)
		}
		if got := u.appPIDs(); !slices.Equal(got, apps) {
			t.Fatalf("app pids %v after a failed upgrade, want %v", got, apps)
		}
		if code, _, h := u.get("/"); code != 200 || h.Get("X-Version") != "v1" {
			t.Fatalf("after a failed upgrade: got %d from %q, want 200 from v1", code, h.Get("X-Version"))
		}
		b, _ := os.ReadFile(pids)
		for _, f := range strings.Fields(string(b)) {
			p, _ := strconv.Atoi(f)
			u.track(p)
			waitGone(t, "the failed new binary", p, 5*time.Second)
		}
		if n := len(strings.Fields(string(b))); n == 0 {
			t.Fatalf("the broken binary was never started")
		}
		os.Remove(pids)
	}

	// A good binary whose new daemon fails once it has listened and adopted
	// the apps, at Ready: deploy.toml now puts pid_file in a directory that
	// does not exist. It accepted no connection before failing (the load
	// counts every outcome), and left the control socket to the old
	// daemon, which status still finds.
	u.install(good)
	src, err := os.ReadFile(u.config)
	if err != nil {
		t.Fatal(err)
	}
	noDir := strings.Replace(string(src), `pid_file = "run/deployer.pid"`, `pid_file = "no-such-dir/deployer.pid"`, 1)
	if noDir == string(src) {
		t.Fatal("the config has no pid_file line to change")
	}
	if err := os.WriteFile(u.config, []byte(noDir), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := u.cli("upgrade")
	t.Logf("upgrade to a daemon that cannot write its pid_file: exit %d\n%s%s", code, out, errOut)
	if code != 1 || !strings.HasPrefix(out, "upgrade failed: ") {
		t.Fatalf("upgrade to a daemon that cannot write its pid_file: exit %d, want 1 and upgrade failed", code)
	}
	if got := u.daemonPID(); got != daemonPID {
		t.Fatalf("daemon pid %d after the failed upgrade, want %d serving on", got, daemonPID)
	}
	if err := os.WriteFile(u.config, src, 0o644); err != nil {
		t.Fatal(err)
	}

	oldPID, newPID := u.upgrade()
	if oldPID != daemonPID {
		t.Fatalf("upgrade replaced pid %d, want %d", oldPID, daemonPID)
	}
	waitGone(t, "the old daemon", oldPID, 15*time.Second)
	if got := u.appPIDs(); !slices.Equal(got, apps) {
		t.Fatalf("app pids %v after the upgrade, want %v", got, apps)
	}
	got := l.finish()
	t.Logf("3 failed upgrades and 1 good one (pid %d → %d) under load: %s", oldPID, newPID, got)
	if got.failures() != 0 {
		t.Fatalf("failed requests: %s", got)
	}
}

// After kill -9 of the daemon the apps keep running; `deployer start` with
// the same config re-adopts those still alive (same pids) and starts the
// dead ones again at the version that served, which need not be the
// configured one.
func TestAdoptAfterDaemonCrash(t *testing.T) {
	u := newUpgradeEnv(t)
	u.configure("3s", "instances = 2\n")
	u.startDaemon()
	u.mustCLI("swap", "web", "v2", "--wait-drain")
	apps := u.appPIDs()
	if len(apps) != 2 {
		t.Fatalf("web serves %d instances of v2, want 2", len(apps))
	}
	for _, p := range apps {
		u.track(p)
	}

	crashed := u.daemonPID()
	if err := syscall.Kill(crashed, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, "the killed daemon", crashed, 5*time.Second)
	for _, p := range apps {
		if processGone(p) {
			t.Fatalf("app pid %d died with the daemon", p)
		}
	}
	// Instance 1 dies while no daemon runs.
	if err := syscall.Kill(apps[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, "instance 1", apps[1], 5*time.Second)

	u.startDaemon()
	if got := u.daemonPID(); got == crashed {
		t.Fatalf("status shows the killed daemon's pid %d", got)
	}
	// A fresh daemon writes pid_file once it is ready, which may come just
	// after its apps serve.
	newPID := u.daemonPID()
	waitFor(t, "pid_file to hold the new daemon's pid", 5*time.Second, func() bool { return u.pidFile() == newPID })
	st := u.appStatus("web")
	if st.Version != "v2" {
		t.Fatalf("after the restart web serves %q, want v2 (the version that served, not the configured v1)", st.Version)
	}
	var got []int
	waitFor(t, "both instances of v2 in rotation", 20*time.Second, func() bool {
		st = u.appStatus("web")
		got = u.appPIDs()
		if len(got) != 2 {
			return false
		}
		for _, in := range st.Instances {
			if in.Version == "v2" && !in.Healthy {
				return false
			}
		}
		return true
	})
	if got[0] != apps[0] {
		t.Fatalf("instance 0 has pid %d after the restart, want %d re-adopted", got[0], apps[0])
	}
	if got[1] == apps[1] || processGone(got[1]) {
		t.Fatalf("instance 1 has pid %d after the restart; it died as %d and must be started again", got[1], apps[1])
	}
	u.track(got[1])
	for _, in := range st.Instances {
		if in.Version != "v2" {
			t.Errorf("instance %d runs %s after the restart, want v2", in.Instance, in.Version)
		}
	}
	for i := 0; i < 10; i++ {
		if code, _, h := u.get("/"); code != 200 || h.Get("X-Version") != "v2" {
			t.Fatalf("after the restart: got %d from %q, want 200 from v2", code, h.Get("X-Version"))
		}
	}

	// A swap moves away from the adopted process and stops it, though the
	// new daemon is not its parent.
	l := startLoad(t, u.url("/"), 8)
	u.mustCLI("swap", "web", "v1")
	for i := 0; i < 5; i++ {
		if code, _, h := u.get("/"); code != 200 || h.Get("X-Version") != "v1" {
			t.Fatalf("after the swap: got %d from %q, want 200 from v1", code, h.Get("X-Version"))
		}
	}
	waitGone(t, "the re-adopted instance 0 after the swap", apps[0], 20*time.Second)
	out := l.finish()
	t.Logf("swap away from re-adopted processes under load: %s", out)
	if out.failures() != 0 {
		t.Fatalf("failed requests: %s", out)
	}
}

var tickRE = regexp.MustCompile(`\btick (\d+) v1\b`)

// ticks returns the tick numbers in `deployer logs -n 2000`, in order.
func (u *upgradeEnv) ticks() []int {
	u.t.Helper()
	var ns []int
	for _, m := range tickRE.FindAllStringSubmatch(u.mustCLI("logs", "web", "-n", "2000"), -1) {
		n, _ := strconv.Atoi(m[1])
		ns = append(ns, n)
	}
	return ns
}

func maxOf(ns []int) int {
	if len(ns) == 0 {
		return 0
	}
	return slices.Max(ns)
}

// An app writing a line every 20ms across 3 upgrades is never restarted
// (no SIGPIPE when the daemon that read its output goes), and its log
// keeps every line, from before the first upgrade to after the last. A
// `deployer logs -f` started before the first upgrade follows each new
// daemon and prints every line once (it used to end, exit 0, at the first).
func TestDaemonUpgradeKeepsAppOutput(t *testing.T) {
	u := newUpgradeEnv(t)
	u.configure("3s", "", "-log-every", "20ms")
	u.startDaemon()
	apps := u.appPIDs()

	var before int
	waitFor(t, "tick lines in deployer logs", 10*time.Second, func() bool {
		before = maxOf(u.ticks())
		return before >= 10
	})
	follow := exec.Command(deployerBin, "-c", u.config, "logs", "web", "-f", "-n", "5")
	var followOut, followErr testlog.Buffer
	follow.Stdout, follow.Stderr = &followOut, &followErr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	followDone := make(chan error, 1)
	go func() { followDone <- follow.Wait() }()
	t.Cleanup(func() { follow.Process.Kill() })
	waitFor(t, "deployer logs -f to print ticks", 10*time.Second, func() bool {
		return len(tickRE.FindAllString(followOut.String(), -1)) >= 10
	})
	var last int
	for i := 0; i < 3; i++ {
		oldPID, _ := u.upgrade()
		waitGone(t, "the old daemon", oldPID, 15*time.Second)
		if got := u.appPIDs(); !slices.Equal(got, apps) {
			t.Fatalf("upgrade %d: app pids %v, want %v", i, got, apps)
		}
		last = maxOf(u.ticks())
	}
	waitFor(t, "tick lines after the last upgrade", 10*time.Second, func() bool {
		return maxOf(u.ticks()) >= last+10
	})

	ticks := u.ticks()
	lo, hi := slices.Min(ticks), slices.Max(ticks)
	t.Logf("%d tick lines, %d..%d; %d seen before the first upgrade, %d at the last", len(ticks), lo, hi, before, last)
	if lo > before {
		t.Errorf("logs start at tick %d: the lines from before the first upgrade (up to %d) are gone", lo, before)
	}
	if hi < last+10 {
		t.Errorf("logs end at tick %d, want lines after the last upgrade (%d)", hi, last)
	}
	seen := map[int]int{}
	for _, n := range ticks {
		seen[n]++
	}
	var missing, doubled []int
	for n := lo; n <= hi; n++ {
		switch seen[n] {
		case 0:
			missing = append(missing, n)
		case 1:
		default:
			doubled = append(doubled, n)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d tick lines lost across the upgrades: %v", len(missing), firstN(missing, 20))
	}
	if len(doubled) > 0 {
		t.Errorf("%d tick lines shown twice across the upgrades: %v", len(doubled), firstN(doubled, 20))
	}

	// The follower: still running, every line from where it started to
	// the last one once, and a note for each upgrade.
	waitFor(t, "deployer logs -f to print the ticks after the last upgrade", 10*time.Second, func() bool {
		select {
		case err := <-followDone:
			t.Fatalf("deployer logs -f ended across the upgrades: %v\nstderr: %s", err, followErr.String())
		default:
		}
		return strings.Contains(followOut.String(), fmt.Sprintf("tick %d v1", last+10))
	})
	follow.Process.Signal(os.Interrupt)
	select {
	case err := <-followDone:
		if err != nil {
			t.Errorf("deployer logs -f, interrupted: %v (want exit 0)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("deployer logs -f did not end on SIGINT")
	}
	var followed []int
	for _, m := range tickRE.FindAllStringSubmatch(followOut.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		followed = append(followed, n)
	}
	t.Logf("deployer logs -f printed %d tick lines, %d..%d", len(followed), followed[0], followed[len(followed)-1])
	for i := 1; i < len(followed); i++ {
		if followed[i] != followed[i-1]+1 {
			t.Errorf("deployer logs -f: tick %d after tick %d (lines lost or shown twice across an upgrade)", followed[i], followed[i-1])
		}
	}
	if followed[len(followed)-1] < last+10 {
		t.Errorf("deployer logs -f ends at tick %d, want lines after the last upgrade (%d)", followed[len(followed)-1], last)
	}
	if n := strings.Count(followErr.String(), "the daemon was upgraded: following the new one"); n != 3 {
		t.Errorf("deployer logs -f noted %d upgrades on stderr, want 3:\n%s", n, followErr.String())
	}

	st := u.appStatus("web")
	if got := u.appPIDs(); !slices.Equal(got, apps) {
		t.Fatalf("app pids %v, want %v", got, apps)
	}
	for _, in := range st.Instances {
		if in.Restarts != 0 {
			t.Errorf("instance %d restarted %d times across the upgrades", in.Instance, in.Restarts)
		}
	}
	for _, p := range apps {
		if processGone(p) {
			t.Errorf("app pid %d is gone", p)
		}
	}
}

func firstN(ns []int, n int) []int {
	if len(ns) > n {
		return ns[:n]
	}
	return ns
}

// The daemon reports its build, status says when the binary on disk is
// another build (an upgrade not yet run), and upgrade says which build
// replaced which: here a second build of deployer with a release version
// set at link time, as a release build would be.
func TestDaemonUpgradeReportsBuilds(t *testing.T) {
	next := filepath.Join(t.TempDir(), "deployer")
	build := exec.Command("go", "build", "-ldflags", "-X github.com/deployer/deployer/supervisor.releaseVersion=v0.0.0-e2e-next", "-o", next, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the next deployer: %v\n%s", err, out)
	}
	u := newUpgradeEnv(t)
	u.configure("5s", "")
	u.startDaemon()

	var first supervisor.Build
	if err := json.Unmarshal([]byte(u.mustCLI("version", "--json")), &first); err != nil {
		t.Fatal(err)
	}
	d := u.daemon()
	if d.Build != first || d.BinaryBuild != nil {
		t.Fatalf("status: daemon build %+v, binary on disk %+v; want %+v, nil (the same file)", d.Build, d.BinaryBuild, first)
	}
	if out := u.mustCLI("status"); !strings.Contains(out, "\ndaemon build: deployer "+first.String()+"\n") || strings.Contains(out, "another build") {
		t.Fatalf("status before the new binary:\n%s", out)
	}

	b, err := os.ReadFile(next)
	if err != nil {
		t.Fatal(err)
	}
	u.install(b)
	d = u.daemon()
	if d.Build != first || d.BinaryBuild == nil || d.BinaryBuild.Version != "v0.0.0-e2e-next" {
		t.Fatalf("status after the new binary was installed: daemon build %+v, binary on disk %+v", d.Build, d.BinaryBuild)
	}
	if out := u.mustCLI("status"); !strings.Contains(out, u.bin+" is now another build: deployer v0.0.0-e2e-next") {
		t.Fatalf("status does not say the binary on disk is another build:\n%s", out)
	}

	u.upgrade()
	want := "build: deployer " + first.String() + " → v0.0.0-e2e-next"
	if !strings.Contains(u.lastUpgrade, want) {
		t.Fatalf("deployer upgrade printed:\n%s\nwant a line %q", u.lastUpgrade, want)
	}
	d = u.daemon()
	if d.Build.Version != "v0.0.0-e2e-next" || d.BinaryBuild != nil {
		t.Fatalf("status after the upgrade: daemon build %+v, binary on disk %+v; want the new build, nil", d.Build, d.BinaryBuild)
	}
	if log := u.daemonLog(); !strings.Contains(log, "v0.0.0-e2e-next") {
		t.Errorf("the new daemon's start line does not name its build:\n%s", log)
	}
}

// A {port} app's old version draining across an upgrade keeps what the
// old daemon still forwards to it: the new daemon sees no connection count
// for TCP, so it waits for the old daemon to exit before it stops that
// version (within its drain deadline). A websocket opened through the old
// daemon to v1 keeps echoing after the upgrade.
func TestUpgradeKeepsTCPDrain(t *testing.T) {
	u := newUpgradeEnv(t)
	u.configure("10s", "env = { LISTEN_PORT = \"{port}\" }\n")
	u.startDaemon()
	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, "ws://"+u.addr+"/ws", nil)
	if err != nil {
		t.Fatalf("websocket dial: %v", err)
	}
	defer c.CloseNow()
	if _, hello, err := c.Read(ctx); err != nil || string(hello) != "version v1" {
		t.Fatalf("websocket greeted %q, %v; want version v1", hello, err)
	}
	u.mustCLI("swap", "web", "v2")
	u.upgrade()
	time.Sleep(time.Second) // the new daemon has adopted v1's drain
	for i := range 3 {
		msg := fmt.Sprintf("after the upgrade %d", i)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := c.Write(wctx, websocket.MessageText, []byte(msg))
		var got []byte
		if err == nil {
			_, got, err = c.Read(wctx)
		}
		cancel()
		if err != nil || string(got) != msg {
			t.Fatalf("websocket to the draining v1 %s after the upgrade: %q, %v", time.Duration(i)*300*time.Millisecond+time.Second, got, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
