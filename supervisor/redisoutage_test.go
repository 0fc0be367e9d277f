package supervisor

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testredis"
)

// Redis killed: the last table serves, the outage is logged once however
// many retries; a Redis that comes back with another table is read again.
func TestRedisRoutesOutage(t *testing.T) {
	srv := testredis.Start(t)
	rt := newRouteTest(t, srv, "")
	a, _ := backend(t, "a", "unix")
	b, _ := backend(t, "b", "unix")
	rt.set("a.test", "unix:"+a.Addr)
	rt.set("b.test", "unix:"+b.Addr)
	rt.waitBody("b.test", "b", propagation)

	srv.Kill()
	waitUntil(t, "redis down in status", 2*time.Second, func() bool { return rt.status().Redis == RedisDown })
	deadline := time.Now().Add(1500 * time.Millisecond) // 100+200+400+800ms: 4 retries
	for time.Now().Before(deadline) {
		if _, body := rt.get("a.test"); body != "a" {
			t.Fatalf("a.test while Redis is down: %q, want a", body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := strings.Count(rt.logs.String(), "redis unreachable"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, rt.logs)
	}

	// Back, with a.test gone and b.test moved.
	srv.RestartWith(RedisRoutesKey, map[string]string{"b.test": "unix:" + a.Addr, "c.test": "unix:" + b.Addr})
	took := rt.waitBody("c.test", "b", 6*time.Second)
	t.Logf("after Redis came back: new table in force after %s", took)
	rt.waitBody("a.test", "404", propagation)
	rt.waitBody("b.test", "a", propagation)
	if st := rt.status(); st.Redis != RedisUp || st.Hosts != 2 {
		t.Errorf("status: %+v", st)
	}
	if !strings.Contains(rt.logs.String(), "redis is back") {
		t.Errorf("no line about Redis coming back:\n%s", rt.logs)
	}
}

// A Redis that hangs (SIGSTOP) is noticed at the next resync and treated as
// down; requests never wait for it. Once it goes on, changes apply again.
func TestRedisRoutesHungRedis(t *testing.T) {
	srv := testredis.Start(t)
	rt := newRouteTest(t, srv, `resync = "200ms"`)
	a, _ := backend(t, "a", "unix")
	rt.set("a.test", "unix:"+a.Addr)
	rt.waitBody("a.test", "a", propagation)

	srv.Signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			srv.Signal(syscall.SIGCONT)
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		start := time.Now()
		if _, body := rt.get("a.test"); body != "a" {
			t.Fatalf("a.test while Redis hangs: %q", body)
		}
		// Far below the 1s a Redis call may take: no request waits for one.
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("a request took %s while Redis hangs", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := rt.status(); st.Redis != RedisDown || !strings.Contains(st.LastError, "timeout") {
		t.Errorf("status while Redis hangs: %+v, want down after a timeout", st)
	}
	srv.Signal(syscall.SIGCONT)
	stopped = false
	waitUntil(t, "redis up again", 8*time.Second, func() bool { return rt.status().Redis == RedisUp })
	rt.set("b.test", "unix:"+a.Addr)
	rt.waitBody("b.test", "a", propagation)
}

// A daemon that starts while Redis is down serves the routes it last
// applied, from <state_dir>/redis-routes.json.
func TestRedisRoutesCache(t *testing.T) {
	srv := testredis.Start(t)
	stateDir := socketDir(t)
	a, _ := backend(t, "a", "unix")
	first := newRouteTestIn(t, stateDir, srv, "")
	first.set("a.test", "unix:"+a.Addr)
	first.waitBody("a.test", "a", propagation)
	first.d.cancel()
	first.d.redis.shutdown(time.Second)
	srv.Kill()

	b, err := os.ReadFile(filepath.Join(stateDir, "redis-routes.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cache routesCache
	if err := json.Unmarshal(b, &cache); err != nil || cache.Routes["a.test"] != "unix:"+a.Addr {
		t.Fatalf("cache: %s (%v)", b, err)
	}
	start := time.Now()
	second := newRouteTestIn(t, stateDir, srv, "")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("start with Redis down took %s", d)
	}
	if code, body := second.get("a.test"); body != "a" {
		t.Fatalf("a.test from the cache: %d %q, want a", code, body)
	}
	if st := second.status(); st.Redis != RedisDown {
		t.Errorf("status %+v, want down", st)
	}
}
