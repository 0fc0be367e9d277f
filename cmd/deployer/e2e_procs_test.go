package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// The daemon runs with procs threads: as many as the runtime chose by
// default, the number deploy.toml says once it says one (applied by a reload, without a
// restart), and a bad value is refused with its line while the daemon
// keeps the one it has. status shows it. No request of the load running
// meanwhile fails.
func TestProcs(t *testing.T) {
	e := newEnv(t)
	web := reloadApp("web", `["127.0.0.1"]`)
	e.writeConfig(reloadConfig("%ADDR%", web))
	e.start("web")
	l := startLoad(t, e.url("/"), 8)
	waitFor(t, "load running", 5*time.Second, func() bool { return l.out.total() > 100 })

	want, source := supervisor.Procs(0) // the test process's environment and CPUs are the daemon's
	if st := e.mustStatus(); st.Daemon.Procs != want || st.Daemon.CPUs < want {
		t.Fatalf("status: procs %d of %d CPUs, want %d by default", st.Daemon.Procs, st.Daemon.CPUs, want)
	}
	other := want + 1
	with := func(procs int) string {
		return strings.Replace(reloadConfig("%ADDR%", web), "[deployer]\n", fmt.Sprintf("[deployer]\nprocs = %d\n", procs), 1)
	}
	if !strings.Contains(e.logs.String(), fmt.Sprintf("procs=%d source=%s", want, source)) {
		t.Errorf("the daemon's log does not say procs %d:\n%s", want, e.logs.String())
	}

	e.replaceConfig(with(other))
	waitFor(t, fmt.Sprintf("procs %d after a reload", other), 3*time.Second, func() bool { return e.mustStatus().Daemon.Procs == other })
	if out := e.mustCLI("status"); !strings.Contains(out, fmt.Sprintf("procs %d of ", other)) {
		t.Errorf("status does not show procs %d:\n%s", other, out)
	}

	e.replaceConfig(with(-2))
	var cfgErr string
	waitFor(t, "config_error for procs = -2", 3*time.Second, func() bool {
		cfgErr = e.mustStatus().ConfigError
		return cfgErr != ""
	})
	if !strings.Contains(cfgErr, "deploy.toml:2") || !strings.Contains(cfgErr, "deployer.procs") {
		t.Errorf("config_error %q: want deploy.toml:2 and deployer.procs", cfgErr)
	}
	if st := e.mustStatus(); st.Daemon.Procs != other {
		t.Errorf("procs %d while deploy.toml is invalid, want %d kept", st.Daemon.Procs, other)
	}
	if code, body, _ := e.get("/"); code != 200 {
		t.Errorf("GET / while deploy.toml is invalid: %d %s", code, body)
	}

	// Back to the default.
	e.replaceConfig(reloadConfig("%ADDR%", web))
	waitFor(t, "procs "+strconv.Itoa(want)+" again", 3*time.Second, func() bool {
		st := e.mustStatus()
		return st.ConfigError == "" && st.Daemon.Procs == want
	})

	got := l.finish()
	t.Logf("procs changed twice and an invalid value, under load: %s", got)
	if got.failures() != 0 {
		t.Fatalf("failed requests: %s", got)
	}
}
