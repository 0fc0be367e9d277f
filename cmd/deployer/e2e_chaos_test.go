package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// The chaos test: under GET, POST, websocket and SSE load on two apps, a
// seeded random sequence of kill -9, swaps, rollbacks, restarts and pauses
// runs for a minute. Then every outcome must be one the README documents,
// and the daemon must hold no more goroutines and fds than before.
//
// DEPLOYER_CHAOS_SEED replays a run's chaos sequence (the seed is logged;
// the timing of the load differs from run to run), DEPLOYER_CHAOS_DURATION
// (a Go duration) sets its length: 60s, 10s under -short.

const (
	chaosQueueTimeout = 2 * time.Second
	chaosDrainTimeout = 2 * time.Second
	// chaosSlack is how far a measured moment may lie outside the window
	// that explains it: the test sees pauses, kills and status changes from
	// outside the daemon, a CLI call or a status poll late.
	chaosSlack = 250 * time.Millisecond
	// Tolerances of the leak check, between two moments when the same apps
	// run fresh processes with no load.
	chaosGoroutineSlack = 5
	chaosFDSlack        = 2
)

var chaosApps = []string{"web", "api"}

func TestChaos(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DEPLOYER_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("DEPLOYER_CHAOS_SEED=%q: %v", s, err)
		}
		seed = n
	}
	dur := 60 * time.Second
	if testing.Short() {
		dur = 10 * time.Second
	}
	if s := os.Getenv("DEPLOYER_CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("DEPLOYER_CHAOS_DURATION=%q: %v", s, err)
		}
		dur = d
	}
	t.Logf("chaos seed %d (DEPLOYER_CHAOS_SEED=%d replays it), duration %s", seed, seed, dur)

	e := newEnv(t)
	for _, v := range []string{"v1", "v2", "v3", "v4"} {
		e.release(v)
	}
	app := func(name, extra string) string {
		return fmt.Sprintf(`
[apps.%s]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
env = { GREETING = "app {app}" }
settle = "100ms"
ready_timeout = "10s"
stop_timeout = "2s"
health_interval = "500ms"
%s`, name, extra)
	}
	e.writeConfig(fmt.Sprintf(`[deployer]
listen = "%%ADDR%%"
state_dir = "run"
queue_timeout = "%s"
drain_timeout = "%s"
`, chaosQueueTimeout, chaosDrainTimeout) + app("web", "instances = 2\n") + app("api", "path = \"/api\"\nstrip_path = true\n"))
	e.start(chaosApps...)
	c := &chaos{e: e, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), seed: seed}

	// Warm up (pools, buffers, the runtime's own goroutines), then take the
	// counts the end of the run is compared with.
	warm := c.startLoad("warm")
	time.Sleep(2 * time.Second)
	warm.finish()
	if p := warm.stats.problemList(); len(p) > 0 {
		t.Fatalf("warm-up without chaos: %d undocumented outcomes, first: %s", len(p), p[0])
	}
	before := c.quiesce(t, nil)

	// The run.
	mon := c.startMonitor()
	l := c.startLoad("run")
	c.chaosLoop(dur)
	for _, a := range chaosApps {
		e.mustCLI("resume", a) // nothing should be paused now; make sure
	}
	l.finish()
	mon.finish()

	// The daemon is still healthy and serves both apps.
	select {
	case <-e.exited:
		t.Fatalf("the daemon exited during the chaos run")
	default:
	}
	for _, a := range chaosApps {
		st := e.waitState(a, supervisor.StateServing, 30*time.Second)
		code, body := chaosGet(e.url(map[string]string{"web": "/", "api": "/api/"}[a]))
		if code != 200 || !strings.HasPrefix(body, "app "+a+"\n") {
			t.Errorf("after the run %s answers %d %q (serving %s)", a, code, body, st.Version)
		}
	}

	problems := c.judge(l.stats, mon)
	posts := c.checkPosts(t, l.stats)
	after := c.quiesce(t, &before)
	c.summary(t, l.stats, before, after, posts)

	for i, p := range problems {
		if i == 20 {
			t.Errorf("... and %d more", len(problems)-20)
			break
		}
		t.Errorf("undocumented outcome: %s", p)
	}
	if len(problems) > 0 {
		t.Errorf("%d undocumented outcomes; replay with DEPLOYER_CHAOS_SEED=%d", len(problems), seed)
	}
	if n := l.stats.count("GET web 200") + l.stats.count("GET api 200"); n < 500 {
		t.Errorf("only %d GETs answered 200: the load did not run", n)
	}
	if dg, dfd := after.goroutines-before.goroutines, after.fds-before.fds; dg > chaosGoroutineSlack || dfd > chaosFDSlack {
		t.Errorf("leak: daemon goroutines %d → %d, open fds %d → %d (tolerance +%d, +%d); seed %d",
			before.goroutines, after.goroutines, before.fds, after.fds, chaosGoroutineSlack, chaosFDSlack, seed)
		t.Logf("daemon fds before:\n  %s\nafter:\n  %s", strings.Join(before.fdTargets, "\n  "), strings.Join(after.fdTargets, "\n  "))
	}
	if len(after.children) != 3 {
		t.Errorf("daemon has %d app processes after the run, want 3 (2 web, 1 api): %v", len(after.children), after.children)
	}
}

// chaos is one run: the installation, the random sequence, and the record of
// what the chaos did, which judge compares the load's outcomes with.
type chaos struct {
	e    *env
	rng  *rand.Rand // used by chaosLoop only
	seed uint64

	mu     sync.Mutex
	pauses []window                  // per pause: app, from pause called to resume returned
	kills  []kill                    // every kill -9
	ops    map[string]map[string]int // "swap web" → outcome → count
	failed []failedOp                // operations that failed
	notes  []string                  // how judge explained some outcomes
	paused map[string]bool           // apps a pause goroutine holds now

	actions sync.WaitGroup
}

// failedOp is an operation that exited non-zero, not because another one
// was running.
type failedOp struct {
	app, what, output string
	from, to          time.Time
}

type window struct {
	app      string
	from, to time.Time
	// For a pause: from the pause command's return to the resume
	// command's start, when the app was paused for sure.
	held, released time.Time
}

type kill struct {
	at       time.Time
	app, how string // how: serving, launching or draining
	pid      int
}

// chaosLoop runs one random action every 100–800ms until dur has passed,
// then waits for the ones still running.
func (c *chaos) chaosLoop(dur time.Duration) {
	c.paused = map[string]bool{}
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		time.Sleep(time.Duration(100+c.rng.IntN(700)) * time.Millisecond)
		app := chaosApps[c.rng.IntN(len(chaosApps))]
		switch r := c.rng.IntN(100); {
		case r < 30:
			c.kill(app, c.rng.IntN(1<<30))
		case r < 55:
			c.op(app, "swap", fmt.Sprintf("v%d", 1+c.rng.IntN(4)))
		case r < 65:
			c.op(app, "rollback")
		case r < 80:
			c.op(app, "restart")
		default:
			c.pause(app, time.Duration(200+c.rng.IntN(2800))*time.Millisecond)
		}
	}
	c.actions.Wait()
}

// kill sends SIGKILL to one of app's processes (pick chooses which):
// serving, launching or draining. A serving one is killed only while every
// instance of app is healthy, so that crash restarts do not pile up (each
// would double the restart backoff) into holds longer than queue_timeout.
func (c *chaos) kill(app string, pick int) {
	st, err := c.controlStatus()
	if err != nil {
		c.count("kill "+app, "status failed: "+err.Error())
		return
	}
	serving := map[int]bool{}
	allHealthy := true
	var versions []string
	for _, a := range st.Apps {
		if a.Name != app {
			continue
		}
		for _, in := range a.Instances {
			serving[in.PID] = true
			allHealthy = allHealthy && in.Healthy && in.PID != 0
		}
		for _, v := range a.Versions {
			versions = append(versions, v.Version+":"+v.State)
		}
	}
	var pids []int
	for pid, a := range appProcesses(c.e.daemon.Process.Pid) {
		if a == app {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		c.count("kill "+app, "no process")
		return
	}
	slices.Sort(pids)
	pid := pids[pick%len(pids)]
	how := "launching or draining"
	if serving[pid] {
		how = "serving"
		if !allHealthy {
			c.count("kill "+app, "skipped: an instance is restarting")
			return
		}
	}
	at := time.Now()
	c.mu.Lock()
	c.kills = append(c.kills, kill{at: at, app: app, pid: pid, how: how})
	c.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		c.count("kill "+app, "gone already")
		return
	}
	c.count("kill "+app, how)
}

// op runs `deployer <name> <app> [args]` in the background.
func (c *chaos) op(app, name string, args ...string) {
	c.actions.Go(func() {
		start := time.Now()
		out, code, err := c.cli(append([]string{name, app}, args...)...)
		outcome := "ok"
		switch {
		case err != nil:
			outcome = "error"
		case code == 0:
		case strings.Contains(out, "another operation is running"):
			outcome = "refused: busy"
		case strings.Contains(out, "no previous version"):
			outcome = "refused: no previous"
		default:
			outcome = "failed"
		}
		c.count(name+" "+app, outcome)
		if outcome == "failed" || outcome == "error" {
			c.fail(app, fmt.Sprintf("%s %s %s (exit %d, %v)", name, app, strings.Join(args, " "), code, err), out, start)
		}
	})
}

// pause holds app for d, then resumes it, in the background. One pause per
// app at a time: a second one's resume would end the first early.
func (c *chaos) pause(app string, d time.Duration) {
	c.mu.Lock()
	busy := c.paused[app]
	c.paused[app] = true
	c.mu.Unlock()
	if busy {
		c.count("pause "+app, "skipped: paused already")
		return
	}
	c.actions.Go(func() {
		defer func() {
			c.mu.Lock()
			c.paused[app] = false
			c.mu.Unlock()
		}()
		from := time.Now()
		out, code, err := c.cli("pause", app)
		if err != nil || code != 0 {
			c.count("pause "+app, "failed")
			c.fail(app, fmt.Sprintf("pause %s (exit %d, %v)", app, code, err), out, from)
		}
		held := time.Now()
		time.Sleep(d)
		released := time.Now()
		out, code, err = c.cli("resume", app)
		to := time.Now()
		if err != nil || code != 0 {
			c.fail(app, fmt.Sprintf("resume %s (exit %d, %v)", app, code, err), out, from)
		}
		c.mu.Lock()
		c.pauses = append(c.pauses, window{app: app, from: from, to: to, held: held, released: released})
		c.mu.Unlock()
		if to.Sub(from) >= chaosQueueTimeout {
			c.count("pause "+app, "longer than queue_timeout")
		} else {
			c.count("pause "+app, "shorter than queue_timeout")
		}
	})
}

func (c *chaos) fail(app, what, output string, from time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failed = append(c.failed, failedOp{app: app, what: what, output: truncate(strings.Join(strings.Fields(output), " "), 400), from: from, to: time.Now()})
}

func (c *chaos) count(what, outcome string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ops == nil {
		c.ops = map[string]map[string]int{}
	}
	if c.ops[what] == nil {
		c.ops[what] = map[string]int{}
	}
	c.ops[what][outcome]++
}

// cli runs the deployer CLI; unlike env.cli it may run on any goroutine.
func (c *chaos) cli(args ...string) (output string, code int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, deployerBin, append([]string{"-c", c.e.config}, args...)...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return b.String(), ee.ExitCode(), nil
	}
	return b.String(), 0, err
}

// controlStatus asks the control socket directly: cheaper than the CLI,
// and usable from any goroutine.
func (c *chaos) controlStatus() (supervisor.Status, error) {
	var st supervisor.Status
	sock := filepath.Join(c.e.dir, "run", "deployer.sock")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true, // no idle connection left in the daemon's counts
	}}
	res, err := client.Get("http://deployer/v1/status")
	if err != nil {
		return st, err
	}
	defer res.Body.Close()
	return st, json.NewDecoder(res.Body).Decode(&st)
}

// appProcesses maps the pid of every child of the daemon that runs an app
// to the app's name, read from the -socket argument the release script
// passes (<state_dir>/<app>/<version>-....sock).
func appProcesses(daemon int) map[int]string {
	procs := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(daemon) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(string(cmdline), "\x00")
		if i := slices.Index(args, "-socket"); i >= 0 && i+1 < len(args) {
			procs[pid] = filepath.Base(filepath.Dir(args[i+1]))
		} else {
			procs[pid] = "" // the release script, before its exec
		}
	}
	return procs
}

// The monitor: what the daemon said, every 50ms.

type chaosMonitor struct {
	c    *chaos
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	down     []window          // per app: no instance in rotation, from the last poll that saw one to the next
	lastSeen map[int]time.Time // pid → last poll that saw it serving
	polls    int
	errs     int
}

func (c *chaos) startMonitor() *chaosMonitor {
	m := &chaosMonitor{c: c, stop: make(chan struct{}), done: make(chan struct{}), lastSeen: map[int]time.Time{}}
	go m.run()
	return m
}

func (m *chaosMonitor) run() {
	defer close(m.done)
	lastUp := map[string]time.Time{}
	isDown := map[string]bool{}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
		asked := time.Now()
		st, err := m.c.controlStatus()
		m.mu.Lock()
		m.polls++
		if err != nil {
			m.errs++
			m.mu.Unlock()
			continue
		}
		for _, a := range st.Apps {
			up := false
			for _, in := range a.Instances {
				if in.PID != 0 {
					m.lastSeen[in.PID] = time.Now()
				}
				up = up || (in.Healthy && in.PID != 0)
			}
			switch {
			case up && isDown[a.Name]:
				m.down = append(m.down, window{app: a.Name, from: lastUp[a.Name], to: time.Now()})
				isDown[a.Name] = false
			case !up && !isDown[a.Name]:
				isDown[a.Name] = true
			}
			if up {
				lastUp[a.Name] = asked
			}
		}
		m.mu.Unlock()
	}
}

func (m *chaosMonitor) finish() {
	close(m.stop)
	<-m.done
}

// daemonCounts is the daemon's state for the leak check.
type daemonCounts struct {
	goroutines, fds int      // fds from /proc/<pid>/fd, as seen from outside
	statusFDs       int      // open_fds as the daemon reports it
	children        []int    // app processes
	fdTargets       []string // what the fds lead to, for a reader
}

func (c *chaos) counts(t *testing.T) daemonCounts {
	t.Helper()
	st := c.e.status()
	pid := c.e.daemon.Process.Pid
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("daemon fds: %v", err)
	}
	sockets := socketNames(pid)
	var targets []string
	for _, en := range entries {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, en.Name()))
		targets = append(targets, l+sockets[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")])
	}
	slices.Sort(targets)
	var children []int
	for p := range appProcesses(pid) {
		children = append(children, p)
	}
	slices.Sort(children)
	return daemonCounts{goroutines: st.Daemon.Goroutines, statusFDs: st.Daemon.OpenFDs, fds: len(entries), children: children, fdTargets: targets}
}

// quiesce brings the daemon to a state that can be compared: both apps
// restarted (fresh processes, empty connection pools, as after the last
// warm-up), every old version drained and stopped, nothing in flight. It
// returns the counts once they stop moving (or, with want, once they are
// within the leak tolerance of want), waiting up to 15s.
func (c *chaos) quiesce(t *testing.T, want *daemonCounts) daemonCounts {
	t.Helper()
	for _, a := range chaosApps {
		c.e.mustCLI("restart", a, "--wait-drain")
	}
	waitFor(t, "both apps serving one version, nothing in flight", 30*time.Second, func() bool {
		for _, a := range chaosApps {
			st := c.e.appStatus(a)
			if st.State != supervisor.StateServing || len(st.Versions) != 1 || st.InFlight != 0 || st.Held != 0 {
				return false
			}
			for _, in := range st.Instances {
				if !in.Healthy {
					return false
				}
			}
		}
		return true
	})
	deadline := time.Now().Add(15 * time.Second)
	prev := c.counts(t)
	for {
		time.Sleep(300 * time.Millisecond)
		cur := c.counts(t)
		if want == nil && cur.goroutines == prev.goroutines && cur.fds == prev.fds {
			return cur
		}
		if want != nil && cur.goroutines-want.goroutines <= chaosGoroutineSlack && cur.fds-want.fds <= chaosFDSlack && len(cur.children) == 3 {
			return cur
		}
		if time.Now().After(deadline) {
			return cur
		}
		prev = cur
	}
}

// socketNames maps socket inodes of process pid to " tcp LOCAL REMOTE" or
// " unix PATH", to tell a reader what a leaked socket was.
func socketNames(pid int) map[string]string {
	names := map[string]string{}
	for _, proto := range []string{"tcp", "tcp6"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, proto))
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			if f := strings.Fields(line); len(f) > 9 {
				names[f[9]] = fmt.Sprintf(" %s %s → %s state %s", proto, f[1], f[2], f[3])
			}
		}
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/unix", pid))
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// Num RefCount Protocol Flags Type St Inode [Path]
		if f := strings.Fields(line); len(f) > 6 {
			names[f[6]] = " unix " + strings.Join(f[7:], " ")
		}
	}
	return names
}

// chaosGet makes one GET with a client of its own, closed after: an idle
// keep-alive connection would be one more fd in the daemon's count.
func chaosGet(url string) (int, string) {
	c := chaosClient()
	defer c.CloseIdleConnections()
	res, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
