package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// spread is what a burst of requests saw: responses per X-Instance and per
// X-Pid, and every response that was not a 200.
type spread struct {
	instances map[string]int
	pids      map[string]int
	versions  map[string]int
	failures  []string
}

// burst makes n requests one after another on one keep-alive connection, so
// the spread over instances is the proxy's doing, not the client's.
func burst(t *testing.T, url string, n int) spread {
	t.Helper()
	s := spread{instances: map[string]int{}, pids: map[string]int{}, versions: map[string]int{}}
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	for i := 0; i < n; i++ {
		res, err := c.Get(url)
		if err != nil {
			s.failures = append(s.failures, err.Error())
			continue
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			s.failures = append(s.failures, res.Status)
			continue
		}
		s.instances[res.Header.Get("X-Instance")]++
		s.pids[res.Header.Get("X-Pid")]++
		s.versions[res.Header.Get("X-Version")]++
	}
	return s
}

// instance returns instance i of app's serving version.
func (e *env) instance(app string, i int) supervisor.InstanceStatus {
	e.t.Helper()
	for _, in := range e.appStatus(app).Instances {
		if in.Instance == i {
			return in
		}
	}
	return supervisor.InstanceStatus{Instance: -1}
}

// multiConfig writes one app "web" of n instances running hello straight
// from the command line, each with -unhealthy-file <dir>/sick-<instance>.
func (e *env) multiConfig(n int, extra string) {
	e.t.Helper()
	e.writeConfig(fmt.Sprintf(`[deployer]
listen = "%%ADDR%%"
state_dir = "run"
queue_timeout = "10s"
drain_timeout = "5s"

[apps.web]
command = ["%s", "-socket", "{socket}", "-version", "{version}", "-unhealthy-file", "%s/sick-{instance}"]
version = "v1"
instances = %d
settle = "100ms"
ready_timeout = "10s"
stop_timeout = "5s"
%s`, helloBin, e.dir, n, extra))
}

// sick makes instance i fail its health checks (or pass them again).
func (e *env) sick(i int, on bool) {
	e.t.Helper()
	p := filepath.Join(e.dir, "sick-"+strconv.Itoa(i))
	if on {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			e.t.Fatal(err)
		}
		return
	}
	if err := os.Remove(p); err != nil {
		e.t.Fatal(err)
	}
}

// Three instances share the traffic; kill -9 of one under load fails no
// request, and it comes back on a new pid with restarts = 1.
func TestInstancesSpreadAndCrash(t *testing.T) {
	e := newEnv(t)
	e.multiConfig(3, "")
	e.start()

	st := e.appStatus("web")
	if len(st.Instances) != 3 {
		t.Fatalf("%d instances in status, want 3: %+v", len(st.Instances), st.Instances)
	}
	statusPIDs := map[string]bool{}
	for _, in := range st.Instances {
		if !in.Healthy || in.PID == 0 {
			t.Fatalf("instance %d at start: %+v, want healthy with a pid", in.Instance, in)
		}
		statusPIDs[strconv.Itoa(in.PID)] = true
	}
	s := burst(t, e.url("/"), 60)
	if len(s.failures) > 0 || len(s.pids) != 3 {
		t.Fatalf("60 requests: pids %v, failures %v; want 3 pids, no failure", s.pids, s.failures)
	}
	for pid, n := range s.pids {
		if !statusPIDs[pid] {
			t.Fatalf("response from pid %s, not one of status's %v", pid, statusPIDs)
		}
		// Round robin: 20 each, give or take the health checker's timing.
		if n < 10 {
			t.Fatalf("pid %s got %d of 60 requests: %v, want them spread", pid, n, s.pids)
		}
	}
	t.Logf("60 requests over 3 instances: %v", s.instances)

	l := startLoad(t, e.url("/"), 8)
	waitFor(t, "load running", 5*time.Second, func() bool { return l.out.total() > 100 })
	victim := e.instance("web", 1)
	others := []int{e.instance("web", 0).PID, e.instance("web", 2).PID}
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %d: %v", victim.PID, err)
	}
	var back supervisor.InstanceStatus
	waitFor(t, "instance 1 restarted and healthy", 15*time.Second, func() bool {
		back = e.instance("web", 1)
		return back.PID != 0 && back.PID != victim.PID && back.Healthy
	})
	if back.Restarts != 1 {
		t.Errorf("instance 1 after one crash: restarts %d, want 1", back.Restarts)
	}
	if got := []int{e.instance("web", 0).PID, e.instance("web", 2).PID}; got[0] != others[0] || got[1] != others[1] {
		t.Errorf("instances 0 and 2: pids %v, were %v; want them untouched", got, others)
	}
	newPID := strconv.Itoa(back.PID)
	waitFor(t, "instance 1 serving again", 5*time.Second, func() bool {
		return burst(t, e.url("/"), 6).pids[newPID] > 0
	})
	got := l.finish()
	t.Logf("kill -9 of instance 1 (pid %d → %d) under load: %s", victim.PID, back.PID, got)
	if got.failures() != 0 {
		t.Fatalf("failed requests across the crash: %s", got)
	}
}

// Active health checks: an instance failing `fall` checks in a row leaves
// rotation (no request reaches it) and comes back after `rise` passes, on
// the same process, not restarted. No request fails meanwhile.
func TestInstanceHealthEjection(t *testing.T) {
	const interval, fall, rise = 100 * time.Millisecond, 3, 2
	e := newEnv(t)
	e.multiConfig(3, fmt.Sprintf("health_interval = %q\nfall = %d\nrise = %d\n", interval.String(), fall, rise))
	e.start()
	l := startLoad(t, e.url("/"), 8)
	pid1 := e.instance("web", 1).PID

	// Out after fall failures.
	start := time.Now()
	e.sick(1, true)
	waitFor(t, "instance 1 out of rotation", 10*fall*interval, func() bool { return !e.instance("web", 1).Healthy })
	t.Logf("instance 1 out %s after its checks started failing (fall × interval = %s)", time.Since(start).Round(time.Millisecond), fall*interval)
	if s := burst(t, e.url("/"), 60); len(s.failures) > 0 || s.instances["1"] != 0 || len(s.instances) != 2 {
		t.Fatalf("60 requests with instance 1 out: by instance %v, failures %v; want only 0 and 2", s.instances, s.failures)
	}
	if in := e.instance("web", 1); in.PID != pid1 {
		t.Fatalf("instance 1 pid %d after ejection, was %d: a failing check must not restart it", in.PID, pid1)
	}

	// Back after rise passes.
	start = time.Now()
	e.sick(1, false)
	waitFor(t, "instance 1 back in rotation", 10*rise*interval, func() bool { return e.instance("web", 1).Healthy })
	t.Logf("instance 1 back %s after its checks passed again (rise × interval = %s)", time.Since(start).Round(time.Millisecond), rise*interval)
	if s := burst(t, e.url("/"), 60); len(s.failures) > 0 || s.instances["1"] == 0 {
		t.Fatalf("60 requests with instance 1 back: by instance %v, failures %v", s.instances, s.failures)
	}
	if in := e.instance("web", 1); in.PID != pid1 || in.Restarts != 0 {
		t.Fatalf("instance 1 after coming back: pid %d restarts %d, want pid %d restarts 0", in.PID, in.Restarts, pid1)
	}

	got := l.finish()
	t.Logf("ejection and return of instance 1 under load: %s", got)
	if got.failures() != 0 {
		t.Fatalf("failed requests: %s", got)
	}
}

// The last instance in rotation is never ejected for failing checks alone:
// with instance 1 out, instance 0 failing too keeps serving every request.
func TestLastInstanceNotEjected(t *testing.T) {
	const interval, fall = 100 * time.Millisecond, 3
	e := newEnv(t)
	e.multiConfig(2, fmt.Sprintf("health_interval = %q\nfall = %d\nrise = 2\n", interval.String(), fall))
	e.start()
	l := startLoad(t, e.url("/"), 8)

	// Instance 1 out first: proves the checks run and eject.
	e.sick(1, true)
	waitFor(t, "instance 1 out of rotation", 10*fall*interval, func() bool { return !e.instance("web", 1).Healthy })

	// Now the only instance left fails too. Watch for five times fall ×
	// interval: every request must still be answered, by instance 0.
	e.sick(0, true)
	const window = 5 * fall * interval
	watch := time.Now().Add(window)
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	n := 0
	for time.Now().Before(watch) {
		res, err := c.Get(e.url("/"))
		if err != nil {
			t.Fatalf("request %d with every instance failing its checks: %v", n, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || res.Header.Get("X-Instance") != "0" {
			t.Fatalf("request %d with every instance failing its checks: %s from instance %q, want 200 from 0",
				n, res.Status, res.Header.Get("X-Instance"))
		}
		n++
	}
	in0 := e.instance("web", 0)
	t.Logf("%d requests in %s while the last instance failed its checks", n, window)
	if !in0.InRotation || in0.PID == 0 {
		t.Fatalf("instance 0, the last in rotation, after failing checks for %s: %+v; want it kept (in rotation, with its process)", window, in0)
	}
	if in0.Healthy || !strings.Contains(in0.HealthError, "503") {
		t.Errorf("instance 0 kept in rotation while failing its checks: %+v; want healthy false and the 503 in health_error", in0)
	}

	e.sick(0, false)
	e.sick(1, false)
	waitFor(t, "both instances healthy", 5*time.Second, func() bool {
		return e.instance("web", 0).Healthy && e.instance("web", 1).Healthy
	})
	got := l.finish()
	t.Logf("last instance failing its checks under load: %s", got)
	if got.failures() != 0 {
		t.Fatalf("failed requests: %s", got)
	}
}

// A swap of a 3-instance app under load moves traffic to 3 new processes
// with no failed request; a version whose instance 2 never gets healthy is
// refused, and the old version's 3 processes keep all the traffic.
func TestInstancesSwapUnderLoad(t *testing.T) {
	e := newEnv(t)
	e.release("v1")
	e.release("v2")
	// v3: instances 0 and 1 healthy, instance 2 never.
	d := filepath.Join(e.dir, "releases", "v3")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	hello := fmt.Sprintf(`%s -socket "$DEPLOYER_SOCKET" -version "$DEPLOYER_VERSION"`, helloBin)
	script := "#!/bin/sh\nif [ \"$DEPLOYER_INSTANCE\" = 2 ]; then\n\texec " + hello + " -unhealthy\nfi\nexec " + hello + "\n"
	if err := os.WriteFile(filepath.Join(d, "run"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	e.writeConfig(`[deployer]
listen = "%ADDR%"
state_dir = "run"
queue_timeout = "10s"
drain_timeout = "5s"

[apps.web]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
instances = 3
settle = "100ms"
ready_timeout = "2s"
stop_timeout = "5s"
`)
	e.start()
	pids := func() []int {
		var p []int
		for _, in := range e.appStatus("web").Instances {
			p = append(p, in.PID)
		}
		return p
	}

	l := startLoad(t, e.url("/"), 12)
	waitFor(t, "load running", 5*time.Second, func() bool { return l.out.total() > 100 })
	v1 := pids()
	e.mustCLI("swap", "web", "v2")
	st := e.appStatus("web")
	if st.Version != "v2" || len(st.Instances) != 3 {
		t.Fatalf("after swap to v2: version %q, %d instances", st.Version, len(st.Instances))
	}
	v2 := pids()
	for _, p := range v2 {
		for _, old := range v1 {
			if p == old || p == 0 {
				t.Fatalf("v2 pids %v, v1 pids %v: want 3 new processes", v2, v1)
			}
		}
	}
	if s := burst(t, e.url("/"), 30); len(s.failures) > 0 || s.versions["v2"] != 30 || len(s.pids) != 3 {
		t.Fatalf("30 requests after the swap: versions %v pids %v failures %v; want v2 from 3 pids", s.versions, s.pids, s.failures)
	}

	out, errOut, code := e.cli("swap", "web", "v3")
	if code != 1 {
		t.Fatalf("swap to v3 (instance 2 never healthy): exit %d, want 1\n%s%s", code, out, errOut)
	}
	t.Logf("failed swap output:\n%s%s", out, errOut)
	if st := e.appStatus("web"); st.Version != "v2" {
		t.Fatalf("after the failed swap: serving %q, want v2", st.Version)
	}
	if got := pids(); fmt.Sprint(got) != fmt.Sprint(v2) {
		t.Fatalf("after the failed swap: pids %v, want v2's %v untouched", got, v2)
	}
	if s := burst(t, e.url("/"), 30); len(s.failures) > 0 || s.versions["v2"] != 30 || len(s.pids) != 3 {
		t.Fatalf("30 requests after the failed swap: versions %v pids %v failures %v; want v2 from 3 pids", s.versions, s.pids, s.failures)
	}

	got := l.finish()
	var seen []string
	l.versions.Range(func(k, v any) bool {
		seen = append(seen, fmt.Sprintf("%v=%d", k, v.(interface{ Load() int64 }).Load()))
		return true
	})
	t.Logf("swap of 3 instances and a failed swap under load: %s (versions %s)", got, strings.Join(seen, " "))
	if got.failures() != 0 {
		t.Fatalf("failed requests: %s", got)
	}
	if _, ok := l.versions.Load("v3"); ok {
		t.Fatal("a request reached v3, which never passed its health checks")
	}
}

// A shorter health_interval applies at the reload, not after the old
// interval: from 1h to 100ms, a sick instance leaves rotation within
// a second of the edit.
func TestHealthIntervalReload(t *testing.T) {
	e := newEnv(t)
	e.multiConfig(2, "health_interval = \"1h\"\nfall = 2\n")
	e.start()
	e.sick(1, true)
	time.Sleep(500 * time.Millisecond)
	if !e.instance("web", 1).Healthy {
		t.Fatal("instance 1 left rotation with health_interval 1h: checks ran")
	}
	start := time.Now()
	e.multiConfig(2, "health_interval = \"100ms\"\nfall = 2\n")
	waitFor(t, "instance 1 out of rotation after the reload", 5*time.Second, func() bool { return !e.instance("web", 1).Healthy })
	t.Logf("instance 1 out %s after health_interval went from 1h to 100ms", time.Since(start).Round(time.Millisecond))
}

// Scaling down removes the stable paths of the instances gone: after a
// restart from 3 instances to 1, current-1.sock and current-2.sock no
// longer exist (an outer proxy finds no socket rather than a dead one),
// and current.sock serves.
func TestScaleDownRemovesStablePaths(t *testing.T) {
	e := newEnv(t)
	e.multiConfig(3, "")
	e.start()
	dir := filepath.Join(e.dir, "run", "web")
	for _, name := range []string{"current.sock", "current-1.sock", "current-2.sock"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("with 3 instances: %v", err)
		}
	}
	e.multiConfig(1, "")
	waitFor(t, "instances pending", 5*time.Second, func() bool { return len(e.appStatus("web").Pending) > 0 })
	e.mustCLI("restart", "web", "--wait-drain")
	for _, name := range []string{"current-1.sock", "current-2.sock"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s after scaling down to 1 instance: %v, want it gone", name, err)
		}
	}
	c, err := net.Dial("unix", filepath.Join(dir, "current.sock"))
	if err != nil {
		t.Fatalf("current.sock after scaling down: %v", err)
	}
	c.Close()
}
