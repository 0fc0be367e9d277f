package main

// End-to-end tests of routes from Redis: real deployer daemons sharing a
// real redis-server, real app processes, concurrent clients.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testredis"
	"github.com/deployer/deployer/supervisor"
)

// propagation is how fast a change in Redis must reach every proxy.
const propagation = 100 * time.Millisecond

// redisProxy starts a deployer with app web (GREETING "app web") on
// www.test and routes from srv: keyspace notifications on, targets checked
// every 100ms.
func redisProxy(t *testing.T, srv *testredis.Server, extraApps ...string) *env {
	t.Helper()
	e := newEnv(t)
	apps := append([]string{reloadApp("web", `["www.test"]`)}, extraApps...)
	e.writeConfig(reloadConfig(e.addr, apps...) + fmt.Sprintf(`
[routes]
redis = %q
keyspace_events = true
health_interval = "100ms"
`, srv.URL()))
	e.start("web")
	return e
}

// startBare is start for a daemon with no app: it waits until the daemon
// answers.
func (e *env) startBare() {
	e.t.Helper()
	e.launch()
	waitFor(e.t, "the daemon to answer", 10*time.Second, func() bool {
		_, _, code := e.cli("status", "--json")
		return code == 0
	})
}

// routesStatus is the "routes" object of the proxy's status.
func routesStatus(e *env) *supervisor.RoutesStatus {
	e.t.Helper()
	st := e.mustStatus()
	if st.Routes == nil {
		e.t.Fatal("status has no routes object")
	}
	return st.Routes
}

// targetHealth maps each target of host's Redis route to its health.
func targetHealth(e *env, host string) map[string]bool {
	m := map[string]bool{}
	for _, r := range routesStatus(e).Routes {
		if r.Host == host {
			for _, tg := range r.Targets {
				m[tg.Target] = tg.Healthy
			}
		}
	}
	return m
}

// hostLoad runs keep-alive clients against hosts on several proxies until
// finish, counting every outcome; any answer but 2xx is a failure.
type hostLoad struct {
	out  *outcomes
	stop chan struct{}
	wg   sync.WaitGroup
}

func startHostLoad(proxies []*env, hosts []string, clients int) *hostLoad {
	l := &hostLoad{out: newOutcomes(), stop: make(chan struct{})}
	for _, e := range proxies {
		for _, host := range hosts {
			for range clients {
				l.wg.Go(func() {
					c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
					defer c.CloseIdleConnections()
					for {
						select {
						case <-l.stop:
							return
						default:
						}
						req, _ := http.NewRequest("GET", e.url("/"), nil)
						req.Host = host
						res, err := c.Do(req)
						if err == nil {
							io.Copy(io.Discard, res.Body)
							res.Body.Close()
						}
						class, detail := classify(res, err)
						l.out.add(class, host+": "+detail)
					}
				})
			}
		}
	}
	return l
}

func (l *hostLoad) finish() *outcomes {
	close(l.stop)
	l.wg.Wait()
	return l.out
}

// timeToAll makes a change and returns, for each proxy, how long after the
// change began it took until host answered as ok says; the answer must
// then stay that way for 50 more requests.
func timeToAll(t *testing.T, proxies []*env, host string, ok func(code int, body string) bool, change func()) []time.Duration {
	t.Helper()
	took := make([]time.Duration, len(proxies))
	errs := make([]string, len(proxies))
	start := make(chan struct{})
	var t0 time.Time
	var wg sync.WaitGroup
	for i, e := range proxies {
		wg.Go(func() {
			c := &http.Client{Timeout: 5 * time.Second}
			defer c.CloseIdleConnections()
			<-start
			deadline := time.Now().Add(10 * time.Second)
			for {
				code, body, _ := hostGet(t, c, e.url("/"), host)
				if ok(code, body) {
					took[i] = time.Since(t0)
					break
				}
				if time.Now().After(deadline) {
					errs[i] = fmt.Sprintf("proxy %d: Host %s still %d %q after 10s", i, host, code, body)
					return
				}
			}
			for range 50 {
				if code, body, _ := hostGet(t, c, e.url("/"), host); !ok(code, body) {
					errs[i] = fmt.Sprintf("proxy %d: Host %s went back to %d %q", i, host, code, body)
					return
				}
			}
		})
	}
	t0 = time.Now()
	close(start)
	change()
	wg.Wait()
	for _, err := range errs {
		if err != "" {
			t.Fatal(err)
		}
	}
	return took
}

func servedByApp(app string) func(int, string) bool {
	return func(code int, body string) bool { return code == 200 && strings.HasPrefix(body, "app "+app+"\n") }
}

func is404(code int, _ string) bool { return code == 404 }

// helloProc is an examples/hello process serving on its own, the way an app
// host elsewhere would.
type helloProc struct {
	t      *testing.T
	target string // as a route names it: host:port or unix:/path
	cmd    *exec.Cmd
	done   chan struct{}
}

// startHello runs hello on addr ("127.0.0.1:port" or an absolute socket
// path) with GREETING "app NAME" and waits until it answers.
func startHello(t *testing.T, name, addr string) *helloProc {
	t.Helper()
	h := &helloProc{t: t, target: addr}
	args := []string{"-addr", addr, "-version", name}
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		args = []string{"-socket", addr, "-version", name}
		h.target, network = "unix:"+addr, "unix"
	}
	h.cmd = exec.Command(helloBin, args...)
	h.cmd.Env = append(os.Environ(), "GREETING=app "+name)
	var out bytes.Buffer
	h.cmd.Stdout, h.cmd.Stderr = &out, &out
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.done = make(chan struct{})
	go func() { h.cmd.Wait(); close(h.done) }()
	t.Cleanup(h.kill)
	waitFor(t, "hello "+name+" to listen", 10*time.Second, func() bool {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return h
}

func (h *helloProc) kill() {
	select {
	case <-h.done:
	default:
		h.cmd.Process.Signal(syscall.SIGKILL)
		<-h.done
	}
}

// HSET routes new.test web on a Redis that two proxies share, under load on
// both: both route it within 100ms; HDEL: both answer 404 within 100ms; no
// request of the load fails. `deployer route set` (HSET + PUBLISH) is as fast.
func TestRedisRoutesTwoProxies(t *testing.T) {
	srv := testredis.Start(t)
	a, b := redisProxy(t, srv), redisProxy(t, srv)
	proxies := []*env{a, b}
	c := srv.Client()
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil { // connected: the timing is the write's
		t.Fatal(err)
	}
	for _, e := range proxies {
		if code, _, _ := hostGet(t, http.DefaultClient, e.url("/"), "new.test"); code != 404 {
			t.Fatalf("new.test before any route: %d", code)
		}
	}
	load := startHostLoad(proxies, []string{"www.test"}, 2)

	took := timeToAll(t, proxies, "new.test", servedByApp("web"), func() {
		if err := c.HSet(ctx, "routes", "new.test", "web").Err(); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("HSET routes new.test web: routed by the two proxies after %v", took)
	for i, d := range took {
		if d > propagation {
			t.Errorf("proxy %d routed new.test after %s, more than %s", i, d, propagation)
		}
	}

	took = timeToAll(t, proxies, "new.test", is404, func() {
		if err := c.HDel(ctx, "routes", "new.test").Err(); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("HDEL routes new.test: 404 on the two proxies after %v", took)
	for i, d := range took {
		if d > propagation {
			t.Errorf("proxy %d: 404 after %s, more than %s", i, d, propagation)
		}
	}

	// The CLI writes and publishes; timed from its exit.
	var cli time.Duration
	took = timeToAll(t, proxies, "cli.test", servedByApp("web"), func() {
		began := time.Now()
		a.mustCLI("route", "set", "cli.test", "web")
		cli = time.Since(began)
	})
	for i, d := range took {
		t.Logf("deployer route set: proxy %d routed %s after the CLI exited (it ran %s)", i, max(d-cli, 0), cli)
		if d-cli > propagation {
			t.Errorf("proxy %d routed cli.test %s after deployer route set exited, more than %s", i, d-cli, propagation)
		}
	}

	got := load.finish()
	t.Logf("load on www.test during the changes: %s", got)
	if got.failures() != 0 || got.total() == 0 {
		t.Fatalf("failed requests: %s", got)
	}
}

// A comma list is balanced round robin on every proxy; a dead target is
// taken out (on both proxies, no request failing meanwhile) and comes back.
func TestRedisRoutesRoundRobinAndDeadTarget(t *testing.T) {
	srv := testredis.Start(t)
	a, b := redisProxy(t, srv), redisProxy(t, srv)
	proxies := []*env{a, b}
	sock := filepath.Join(a.dir, "h3.sock")
	hosts := []*helloProc{
		startHello(t, "h1", freeAddr(t)),
		startHello(t, "h2", freeAddr(t)),
		startHello(t, "h3", sock),
	}
	targets := []string{hosts[0].target, hosts[1].target, hosts[2].target}
	a.mustCLI("route", "set", "lb.test", strings.Join(targets, ","))
	timeToAll(t, proxies, "lb.test", func(code int, _ string) bool { return code == 200 }, func() {})

	for i, e := range proxies {
		counts := map[string]int{}
		c := &http.Client{}
		for range 30 {
			_, body, _ := hostGet(t, c, e.url("/"), "lb.test")
			counts[strings.SplitN(body, "\n", 2)[0]]++
		}
		c.CloseIdleConnections()
		t.Logf("proxy %d, 30 requests: %v", i, counts)
		for _, h := range []string{"app h1", "app h2", "app h3"} {
			if counts[h] != 10 {
				t.Errorf("proxy %d: %s got %d of 30 requests, want 10 (round robin)", i, h, counts[h])
			}
		}
	}

	load := startHostLoad(proxies, []string{"lb.test"}, 4)
	time.Sleep(200 * time.Millisecond)
	addr1 := hosts[0].target
	hosts[0].kill()
	for _, e := range proxies {
		waitFor(t, "h1 out of rotation", 3*time.Second, func() bool {
			h := targetHealth(e, "lb.test")
			return !h[addr1] && h[targets[1]] && h[targets[2]]
		})
	}
	time.Sleep(300 * time.Millisecond)
	startHello(t, "h1", addr1)
	for _, e := range proxies {
		waitFor(t, "h1 back in rotation", 3*time.Second, func() bool { return targetHealth(e, "lb.test")[addr1] })
	}
	got := load.finish()
	t.Logf("load on lb.test while h1 died and came back: %s", got)
	if got.failures() != 0 || got.total() == 0 {
		t.Fatalf("failed requests: %s", got)
	}
}

// Redis killed under load: no request fails, each proxy logs the outage
// once; routes changed while it was down (it comes back from a backup with
// another table) are picked up by both once it is back.
func TestRedisRoutesRedisKilled(t *testing.T) {
	srv := testredis.Start(t)
	a, b := redisProxy(t, srv), redisProxy(t, srv)
	proxies := []*env{a, b}
	h1 := startHello(t, "h1", freeAddr(t))
	a.mustCLI("route", "set", "app.test", "web")
	a.mustCLI("route", "set", "far.test", h1.target)
	timeToAll(t, proxies, "far.test", servedByApp("h1"), func() {})

	load := startHostLoad(proxies, []string{"app.test", "far.test", "www.test"}, 3)
	time.Sleep(200 * time.Millisecond)
	srv.Kill()
	for _, e := range proxies {
		waitFor(t, "redis down in status", 3*time.Second, func() bool { return routesStatus(e).Redis == supervisor.RedisDown })
	}
	time.Sleep(1500 * time.Millisecond) // several reconnect attempts
	got := load.finish()
	t.Logf("load with Redis down: %s", got)
	if got.failures() != 0 || got.total() == 0 {
		t.Fatalf("failed requests with Redis down: %s", got)
	}
	for i, e := range proxies {
		if n := strings.Count(e.logs.String(), "redis unreachable"); n != 1 {
			t.Errorf("proxy %d logged the outage %d times, want once:\n%s", i, n, e.logs.String())
		}
	}

	load = startHostLoad(proxies, []string{"app.test", "www.test"}, 3)
	var restart time.Duration
	took := timeToAll(t, proxies, "new.test", servedByApp("web"), func() {
		began := time.Now()
		srv.RestartWith(supervisor.RedisRoutesKey, map[string]string{"app.test": "web", "new.test": "web"})
		restart = time.Since(began)
	})
	for i, d := range took {
		t.Logf("proxy %d: the new table in force %s after Redis answered again (reconnect backoff)", i, max(d-restart, 0))
	}
	timeToAll(t, proxies, "far.test", is404, func() {})
	got = load.finish()
	t.Logf("load while Redis came back with another table: %s", got)
	if got.failures() != 0 {
		t.Fatalf("failed requests: %s", got)
	}
	for _, e := range proxies {
		if st := routesStatus(e); st.Redis != supervisor.RedisUp || st.Hosts != 2 {
			t.Errorf("status: %+v", st)
		}
	}
}

// Garbage values for some hosts, written under load, disturb no other
// host; a host whose value turns to garbage keeps its previous route.
func TestRedisRoutesGarbage(t *testing.T) {
	srv := testredis.Start(t)
	e := redisProxy(t, srv)
	h1 := startHello(t, "h1", freeAddr(t))
	e.mustCLI("route", "set", "good.test", h1.target)
	e.mustCLI("route", "set", "turns-bad.test", "web")
	timeToAll(t, []*env{e}, "good.test", servedByApp("h1"), func() {})
	timeToAll(t, []*env{e}, "turns-bad.test", servedByApp("web"), func() {})

	load := startHostLoad([]*env{e}, []string{"good.test", "turns-bad.test", "www.test"}, 3)
	c := srv.Client()
	ctx := context.Background()
	garbage := []string{"", "unix:relative", "web,127.0.0.1:80", "http://x:1", "127.0.0.1:0", "nope!", strings.Repeat("x", 5000), "\x00\xff"}
	for i, g := range garbage {
		c.HSet(ctx, "routes", "turns-bad.test", g, fmt.Sprintf("bad%d.test", i), g)
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, "the bad values reported", 3*time.Second, func() bool {
		n := 0
		for _, r := range routesStatus(e).Routes {
			if r.Error != "" {
				n++
			}
		}
		return n == len(garbage)+1
	})
	got := load.finish()
	t.Logf("load while garbage was written: %s", got)
	if got.failures() != 0 || got.total() == 0 {
		t.Fatalf("failed requests: %s", got)
	}
	for i := range garbage {
		if code, _, _ := hostGet(t, http.DefaultClient, e.url("/"), fmt.Sprintf("bad%d.test", i)); code != 404 {
			t.Errorf("bad%d.test: %d, want 404", i, code)
		}
	}
}

// examples/fleet as its README runs it: two front proxies with no app of
// their own share one Redis and route by host:port to two app hosts
// (deployers running hello), round robin.
func TestFleetExample(t *testing.T) {
	srv := testredis.Start(t)
	dir := stateDir(t)
	ports := map[string]string{}
	for _, name := range []string{"8081", "8082", "9001", "9002"} {
		ports[name] = freeAddr(t)
	}
	var daemons []*env
	for _, f := range []string{"app-host-1", "app-host-2", "proxy-a", "proxy-b"} {
		src, err := os.ReadFile(filepath.Join("../../examples/fleet", f+".toml"))
		if err != nil {
			t.Fatal(err)
		}
		text := string(src)
		for port, addr := range ports {
			text = strings.ReplaceAll(text, "127.0.0.1:"+port, addr)
		}
		text = strings.ReplaceAll(text, "redis://127.0.0.1:6379/0", srv.URL())
		text = strings.ReplaceAll(text, `["go", "run", "./examples/hello",`, fmt.Sprintf("[%q,", helloBin))
		text = strings.ReplaceAll(text, `dir = "../.."`, `dir = "."`)
		text = strings.ReplaceAll(text, `state_dir = "run/`, fmt.Sprintf(`state_dir = "%s/`, dir))
		e := newEnv(t)
		e.config = filepath.Join(dir, f+".toml")
		writeFile(t, e.config, text)
		if strings.HasPrefix(f, "proxy") {
			e.addr = ports[map[string]string{"proxy-a": "8081", "proxy-b": "8082"}[f]]
			e.startBare()
			waitFor(t, f+" to read Redis", 5*time.Second, func() bool { return routesStatus(e).Redis == supervisor.RedisUp })
		} else {
			e.start("hello")
		}
		daemons = append(daemons, e)
	}
	proxies := daemons[2:]
	hosts := ports["9001"] + "," + ports["9002"]
	daemons[2].mustCLI("route", "set", "hello.localhost", hosts)
	timeToAll(t, proxies, "hello.localhost", func(code int, _ string) bool { return code == 200 }, func() {})
	for i, e := range proxies {
		seen := map[string]int{}
		c := &http.Client{}
		for range 10 {
			_, body, _ := hostGet(t, c, e.url("/"), "hello.localhost")
			seen[strings.SplitN(body, "\n", 2)[0]]++
		}
		c.CloseIdleConnections()
		if seen["app host 1"] != 5 || seen["app host 2"] != 5 {
			t.Errorf("proxy %d: %v, want 5 answers from each app host", i, seen)
		}
	}
	out := daemons[3].mustCLI("route", "ls")
	if !strings.Contains(out, "hello.localhost") {
		t.Errorf("route ls: %s", out)
	}
}

// Redis back after an outage with no routes at all (restarted without its
// data): the proxy takes the empty table, as it would any table, and says
// why its Redis routes went.
func TestRedisRoutesEmptyAfterOutage(t *testing.T) {
	srv := testredis.Start(t)
	e := redisProxy(t, srv)
	e.mustCLI("route", "set", "app.test", "web")
	timeToAll(t, []*env{e}, "app.test", servedByApp("web"), func() {})
	srv.Kill()
	waitFor(t, "redis down in status", 3*time.Second, func() bool { return routesStatus(e).Redis == supervisor.RedisDown })
	if code, body, _ := hostGet(t, http.DefaultClient, e.url("/"), "app.test"); !servedByApp("web")(code, body) {
		t.Fatalf("app.test answered %d while Redis is down, want the last known route to web", code)
	}
	srv.RestartWith(supervisor.RedisRoutesKey, nil)
	timeToAll(t, []*env{e}, "app.test", is404, func() {})
	if !strings.Contains(e.logs.String(), "the redis routes table is empty after the outage") {
		t.Errorf("no warning that the Redis routes went with an empty table:\n%s", e.logs.String())
	}
}
