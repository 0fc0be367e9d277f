package supervisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testlog"
	"github.com/deployer/deployer/internal/testredis"
	"github.com/deployer/deployer/proxy"
)

// propagation is how fast a change in Redis must reach the routing table.
const propagation = 100 * time.Millisecond

// routeTest is a daemon that is never Run: its proxy and its Redis route
// source are driven directly, requests go to the proxy's ServeHTTP.
type routeTest struct {
	t     *testing.T
	d     *Daemon
	redis *testredis.Server
	logs  *testlog.Buffer
	store *RouteStore
}

// newRouteTest makes a daemon with app web on www.test (serving, when
// serveWeb is called, whatever backend it is given) and [routes] redis
// pointing at srv, plus extra [routes] lines.
func newRouteTest(t *testing.T, srv *testredis.Server, extra string) *routeTest {
	t.Helper()
	return newRouteTestIn(t, socketDir(t), srv, extra)
}

func newRouteTestIn(t *testing.T, stateDir string, srv *testredis.Server, extra string) *routeTest {
	t.Helper()
	cfg := loadString(t, fmt.Sprintf(`
[deployer]
state_dir = %q
listen = "127.0.0.1:1"
queue_timeout = "2s"
drain_timeout = "1s"

[apps.web]
command = ["/bin/false"]
version = "v1"
hosts = ["www.test"]

[routes]
redis = %q
%s`, stateDir, srv.URL(), extra))
	logs := &testlog.Buffer{}
	d, err := NewDaemon(cfg, DaemonOptions{Logger: slog.New(slog.NewTextHandler(io.MultiWriter(logs, t.Output()), nil))})
	if err != nil {
		t.Fatalf("NewDaemon: %v", err)
	}
	store, err := OpenRouteStore(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	rt := &routeTest{t: t, d: d, redis: srv, logs: logs, store: store}
	d.redis.start(d.ctx)
	t.Cleanup(func() {
		d.cancel()
		d.redis.shutdown(time.Second)
		store.Close()
	})
	return rt
}

// backend serves its name on a fresh unix socket or loopback TCP port
// until the test ends or stop is called.
func backend(t *testing.T, name, network string) (proxy.Target, func()) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(socketDir(t), name+".sock")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name)
	})}
	go srv.Serve(l)
	var once sync.Once
	stop := func() { once.Do(func() { srv.Close() }) }
	t.Cleanup(stop)
	return proxy.Target{Network: network, Addr: l.Addr().String()}, stop
}

// get sends one request for host through the proxy.
func (rt *routeTest) get(host string) (int, string) {
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "http://any/", nil)
	r.Host = host
	rt.d.proxy.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

// waitBody polls host until it answers 200 with body want (or, for want
// "404", until it answers 404) and returns how long that took.
func (rt *routeTest) waitBody(host, want string, within time.Duration) time.Duration {
	rt.t.Helper()
	start := time.Now()
	for {
		code, body := rt.get(host)
		if (want == "404" && code == 404) || (code == 200 && body == want) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			rt.t.Fatalf("Host %s: got %d %q after %s, want %q", host, code, body, within, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func (rt *routeTest) set(host, value string) {
	rt.t.Helper()
	spec, err := ParseRoute(host, value)
	if err != nil {
		rt.t.Fatal(err)
	}
	if err := rt.store.Set(context.Background(), spec); err != nil {
		rt.t.Fatal(err)
	}
}

func (rt *routeTest) status() *RoutesStatus {
	rt.t.Helper()
	w := do(rt.t, rt.d, "GET", "/v1/routes", "")
	var st RoutesStatus
	decode(rt.t, w, http.StatusOK, &st)
	return &st
}

func (rt *routeTest) route(host string) RedisRouteStatus {
	for _, r := range rt.status().Routes {
		if r.Host == host {
			return r
		}
	}
	return RedisRouteStatus{}
}

// `deployer route set/rm` (HSET or HDEL, then PUBLISH) reach the table
// within 100ms; app routes, address lists (round robin) and deploy.toml's
// precedence.
func TestRedisRoutesFollowTheTable(t *testing.T) {
	srv := testredis.Start(t)
	rt := newRouteTest(t, srv, `resync = "1m"`)
	web, _ := backend(t, "web", "unix")
	rt.d.proxy.Serve("web", "v1", []proxy.Target{web})
	a, _ := backend(t, "a", "unix")
	b, _ := backend(t, "b", "tcp")

	if code, _ := rt.get("new.test"); code != 404 {
		t.Fatalf("new.test before any route: %d, want 404", code)
	}
	rt.set("new.test", "web")
	t.Logf("app route: routed after %s", rt.waitBody("new.test", "web", propagation))

	rt.set("new.test", "unix:"+a.Addr+", "+b.Addr)
	t.Logf("address list: routed after %s", rt.waitBody("new.test", "a", propagation))
	counts := map[string]int{}
	for range 40 {
		_, body := rt.get("new.test")
		counts[body]++
	}
	if counts["a"] != 20 || counts["b"] != 20 {
		t.Errorf("round robin over a and b: %v, want 20 each", counts)
	}

	if _, err := rt.store.Remove(context.Background(), "NEW.test"); err != nil {
		t.Fatal(err)
	}
	t.Logf("removed: 404 after %s", rt.waitBody("new.test", "404", propagation))

	// deploy.toml routes www.test to web: a Redis entry cannot take it.
	rt.set("www.test", "unix:"+a.Addr)
	rt.set("*.www.test", "unix:"+a.Addr)
	rt.waitBody("x.www.test", "a", propagation)
	if code, body := rt.get("www.test"); body != "web" {
		t.Errorf("www.test with a Redis route: %d %q, want deploy.toml's web", code, body)
	}
	if r := rt.route("www.test"); !strings.Contains(r.Error, "deploy.toml wins") {
		t.Errorf("status of www.test: %+v, want the conflict", r)
	}
	rt.set("gone.test", "nosuchapp")
	waitUntil(t, "nosuchapp reported", time.Second, func() bool {
		return strings.Contains(rt.route("gone.test").Error, `app "nosuchapp" is not in deploy.toml`)
	})
	if code, _ := rt.get("gone.test"); code != 404 {
		t.Errorf("route to an unknown app: %d, want 404", code)
	}
	if n := strings.Count(rt.logs.String(), "deploy.toml wins"); n != 1 {
		t.Errorf("the conflict was logged %d times, want once:\n%s", n, rt.logs)
	}
	if st := rt.status(); st.Redis != RedisUp || st.Hosts != 1 {
		t.Errorf("status: %+v, want up with 1 host in force (*.www.test)", st)
	}
}

// With keyspace_events, a plain HSET/HDEL (redis-cli, an admin panel) is
// seen within 100ms; without, at the next resync. The server's other
// notification flags are kept.
func TestRedisRoutesPlainWrites(t *testing.T) {
	srv := testredis.Start(t)
	c := srv.Client()
	ctx := context.Background()
	if err := c.ConfigSet(ctx, "notify-keyspace-events", "Ex").Err(); err != nil {
		t.Fatal(err)
	}
	a, _ := backend(t, "a", "unix")

	// No keyspace notifications on the server yet: the resync finds it.
	slow := newRouteTest(t, srv, `resync = "300ms"`)
	if err := c.HSet(ctx, RedisRoutesKey, "slow.test", "unix:"+a.Addr).Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("resync every 300ms: routed after %s", slow.waitBody("slow.test", "a", time.Second))

	fast := newRouteTest(t, srv, "keyspace_events = true\nresync = \"1m\"")
	flags, err := c.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range "EKxh" {
		if !strings.ContainsRune(flags["notify-keyspace-events"], f) {
			t.Errorf("notify-keyspace-events = %q, want E and x kept, K and h added", flags["notify-keyspace-events"])
		}
	}
	if err := c.HSet(ctx, RedisRoutesKey, "plain.test", "unix:"+a.Addr).Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("keyspace notification: routed after %s", fast.waitBody("plain.test", "a", propagation))
	slow.waitBody("plain.test", "a", propagation) // the server notifies every subscriber now
	if err := c.HDel(ctx, RedisRoutesKey, "plain.test").Err(); err != nil {
		t.Fatal(err)
	}
	fast.waitBody("plain.test", "404", propagation)
	slow.waitBody("plain.test", "404", propagation)
}

// A bad value is logged once and ignored for its host only: a host that had
// a good route keeps it, the others are not disturbed.
func TestRedisRoutesBadValues(t *testing.T) {
	srv := testredis.Start(t)
	rt := newRouteTest(t, srv, "keyspace_events = true")
	a, _ := backend(t, "a", "unix")
	b, _ := backend(t, "b", "unix")
	c := srv.Client()
	ctx := context.Background()
	rt.set("good.test", "unix:"+a.Addr)
	rt.set("kept.test", "unix:"+b.Addr)
	rt.waitBody("kept.test", "b", propagation)

	garbage := map[string]string{
		"kept.test":    "http://nowhere",
		"bad1.test":    "",
		"bad2.test":    "unix:relative.sock",
		"bad3.test":    "web,127.0.0.1:80",
		"bad4.test":    "127.0.0.1:99999",
		"*":            "web",
		"bad host":     "web",
		"loop.test":    "127.0.0.1:1", // the daemon's own listen address
		"loop2.test":   "LOCALHOST:1",
		"ctl.test":     "unix:" + rt.d.layout.ControlSocket(), // the public would get the control API
		"empty.test":   " , ",
		"toomany.test": strings.Repeat("127.0.0.1:80,", 65) + "127.0.0.1:80",
		"dup.test":     "unix:" + a.Addr, // "Dup.test" sorts first and wins
	}
	if err := c.HSet(ctx, RedisRoutesKey, "Dup.test", "unix:"+b.Addr).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, RedisRoutesKey, garbage).Err(); err != nil {
		t.Fatal(err)
	}
	c.Publish(ctx, RedisRoutesChannel, "test")
	waitUntil(t, "bad values reported", time.Second, func() bool {
		n := 0
		for _, r := range rt.status().Routes {
			if r.Error != "" {
				n++
			}
		}
		return n == len(garbage)
	})
	for range 20 {
		if _, body := rt.get("good.test"); body != "a" {
			t.Fatalf("good.test: %q, want a", body)
		}
		if _, body := rt.get("kept.test"); body != "b" {
			t.Fatalf("kept.test with a bad new value: %q, want its previous target b", body)
		}
	}
	for host := range garbage {
		if host == "kept.test" || host == "*" || host == "dup.test" {
			continue
		}
		if code, _ := rt.get(host); code != 404 {
			t.Errorf("%s: %d, want 404", host, code)
		}
	}
	if _, body := rt.get("dup.test"); body != "b" {
		t.Errorf("dup.test: %q, want b (the value of Dup.test)", body)
	}
	if code, _ := rt.get("anything.test"); code != 404 {
		t.Errorf(`"*" in Redis routed anything.test: %d`, code)
	}
	// More re-reads: still one line per bad value.
	for range 3 {
		c.Publish(ctx, RedisRoutesChannel, "test")
	}
	rt.set("other.test", "unix:"+a.Addr)
	rt.waitBody("other.test", "a", propagation)
	if n := strings.Count(rt.logs.String(), "redis route ignored: bad value"); n != len(garbage) {
		t.Errorf("%d lines about bad values, want one per bad value (%d):\n%s", n, len(garbage), rt.logs)
	}
	if r := rt.route("kept.test"); r.Target != "unix:"+b.Addr {
		t.Errorf("status of kept.test: %+v, want its previous target", r)
	}
}

// Targets are connect-checked: a dead one leaves rotation (requests go to
// the others meanwhile), never the last one, and comes back.
func TestRedisRoutesDeadTarget(t *testing.T) {
	srv := testredis.Start(t)
	rt := newRouteTest(t, srv, `health_interval = "50ms"`)
	a, stopA := backend(t, "a", "tcp")
	b, stopB := backend(t, "b", "tcp")
	rt.set("rr.test", a.Addr+","+b.Addr)
	rt.waitBody("rr.test", "a", propagation)

	stopA()
	for range 20 {
		if code, body := rt.get("rr.test"); body != "b" {
			t.Fatalf("rr.test with a dead: %d %q, want b", code, body)
		}
	}
	healthy := func() map[string]bool {
		m := map[string]bool{}
		for _, tg := range rt.route("rr.test").Targets {
			m[tg.Target] = tg.Healthy
		}
		return m
	}
	waitUntil(t, "a out of rotation", 10*time.Second, func() bool { h := healthy(); return !h[a.Addr] && h[b.Addr] })

	stopB() // the last one in rotation stays
	time.Sleep(300 * time.Millisecond)
	if h := healthy(); !h[b.Addr] {
		t.Errorf("the last target was taken out: %v", h)
	}
	if !strings.Contains(rt.logs.String(), "keeping it") {
		t.Errorf("no warning about the last target:\n%s", rt.logs)
	}

	// a comes back on its address.
	l, err := net.Listen("tcp", a.Addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", a.Addr, err)
	}
	srvA := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a2") })}
	go srvA.Serve(l)
	defer srvA.Close()
	waitUntil(t, "a back in rotation", 2*time.Second, func() bool { return healthy()[a.Addr] })
	rt.waitBody("rr.test", "a2", time.Second)
}

// waitUntil polls cond until it holds or timeout passes.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A reload of deploy.toml gives the address routes already in force its
// new proxy settings, as it gives the apps: max_body here. (Only routes
// made after the reload had them.)
func TestRedisRoutesTakeReloadedSettings(t *testing.T) {
	srv := testredis.Start(t)
	rt := newRouteTest(t, srv, "")
	a, _ := backend(t, "a", "unix")
	rt.set("addr.test", "unix:"+a.Addr)
	rt.waitBody("addr.test", "a", time.Second)

	path := rt.d.config().Path
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(src), "[deployer]", "[deployer]\nmax_body = \"1KiB\"", 1)
	if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := rt.d.Reload(); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "http://addr.test/", strings.NewReader(strings.Repeat("x", 64<<10)))
	r.Host = "addr.test"
	rt.d.proxy.ServeHTTP(w, r)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("a 64 KiB POST to a Redis address route after a reload set max_body = 1KiB: %d, want 413", w.Code)
	}
}
