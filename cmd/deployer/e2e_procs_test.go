package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// The daemon runs with procs threads. By default ("auto") that is half the
// CPUs while steady and all of them while an app process starts (a swap to
// a version that takes 1.5 s to boot) and for a moment after. A number in
// deploy.toml is applied by a reload, without a restart; a bad value is
// refused with its line while the daemon keeps the one it has. status
// shows it. No request of the load running meanwhile fails.
func TestProcs(t *testing.T) {
	e := newEnv(t)
	e.release("v1")
	e.release("slow", "-boot-delay", "1500ms")
	e.writeConfig(basicConfigText("", ""))
	e.start("web")
	l := startLoad(t, e.url("/"), 8)
	waitFor(t, "load running", 5*time.Second, func() bool { return l.out.total() > 100 })

	plan := supervisor.Procs(supervisor.ProcsAuto) // the test process's environment and CPUs are the daemon's
	if !strings.Contains(e.logs.String(), fmt.Sprintf("procs=%d source=%s", plan.Min, plan.Source)) {
		t.Errorf("the daemon's log does not say procs %d from %s:\n%s", plan.Min, plan.Source, e.logs.String())
	}
	// v1 became healthy a moment ago: Max for 2 s, then Min.
	waitFor(t, fmt.Sprintf("procs %d (steady)", plan.Min), 5*time.Second, func() bool { return e.mustStatus().Daemon.Procs == plan.Min })
	st := e.mustStatus()
	if st.Daemon.ProcsSource != plan.Source || st.Daemon.ProcsMin != plan.Min || st.Daemon.ProcsMax != plan.Max {
		t.Errorf("status: procs %d from %q, %d..%d; want %+v", st.Daemon.Procs, st.Daemon.ProcsSource, st.Daemon.ProcsMin, st.Daemon.ProcsMax, plan)
	}

	if plan.Min < plan.Max {
		swapped := make(chan string, 1)
		go func() {
			out, errOut, code := e.cli("swap", "web", "slow")
			swapped <- fmt.Sprintf("exit %d: %s%s", code, out, errOut)
		}()
		waitFor(t, fmt.Sprintf("procs %d while slow boots", plan.Max), 3*time.Second, func() bool { return e.mustStatus().Daemon.Procs == plan.Max })
		if out := e.mustCLI("status"); !strings.Contains(out, fmt.Sprintf("procs %d of %d CPUs (auto: %d steady", plan.Max, st.Daemon.CPUs, plan.Min)) {
			t.Errorf("status while an app starts does not show procs %d (auto):\n%s", plan.Max, out)
		}
		if res := <-swapped; !strings.HasPrefix(res, "exit 0") {
			t.Fatalf("swap web slow: %s", res)
		}
		healthy := time.Now()
		waitFor(t, fmt.Sprintf("procs %d after the swap", plan.Min), 5*time.Second, func() bool { return e.mustStatus().Daemon.Procs == plan.Min })
		if d := time.Since(healthy); d < time.Second {
			t.Errorf("procs back to %d %s after the new version was healthy, want about 2 s later", plan.Min, d.Round(time.Millisecond))
		}
	} else {
		t.Logf("%d CPU: auto has nothing to move (procs %d..%d)", st.Daemon.CPUs, plan.Min, plan.Max)
	}

	// A number: applied by a reload, kept however apps start.
	other := plan.Max + 1
	e.replaceConfig(basicConfigText(fmt.Sprintf("procs = %d\n", other), ""))
	waitFor(t, fmt.Sprintf("procs %d after a reload", other), 3*time.Second, func() bool { return e.mustStatus().Daemon.Procs == other })
	if st := e.mustStatus(); st.Daemon.ProcsSource != "config" {
		t.Errorf("procs = %d: source %q, want config", other, st.Daemon.ProcsSource)
	}
	if out := e.mustCLI("status"); !strings.Contains(out, fmt.Sprintf("procs %d of ", other)) || strings.Contains(out, "auto:") {
		t.Errorf("status does not show procs %d, or shows auto:\n%s", other, out)
	}

	e.replaceConfig(basicConfigText("procs = \"half\"\n", ""))
	var cfgErr string
	waitFor(t, `config_error for procs = "half"`, 3*time.Second, func() bool {
		cfgErr = e.mustStatus().ConfigError
		return cfgErr != ""
	})
	if !strings.Contains(cfgErr, "deploy.toml:6") || !strings.Contains(cfgErr, "deployer.procs") {
		t.Errorf("config_error %q: want deploy.toml:6 and deployer.procs", cfgErr)
	}
	if st := e.mustStatus(); st.Daemon.Procs != other {
		t.Errorf("procs %d while deploy.toml is invalid, want %d kept", st.Daemon.Procs, other)
	}
	if code, body, _ := e.get("/"); code != 200 {
		t.Errorf("GET / while deploy.toml is invalid: %d %s", code, body)
	}

	// Every CPU, then back to the default.
	e.replaceConfig(basicConfigText("procs = 0\n", ""))
	waitFor(t, "procs 0: every CPU", 3*time.Second, func() bool {
		st := e.mustStatus()
		return st.ConfigError == "" && st.Daemon.ProcsSource == "all" && st.Daemon.Procs == st.Daemon.CPUs
	})
	e.replaceConfig(basicConfigText("procs = \"auto\"\n", ""))
	waitFor(t, fmt.Sprintf("procs %d (auto) again", plan.Min), 5*time.Second, func() bool {
		st := e.mustStatus()
		return st.ConfigError == "" && st.Daemon.ProcsSource == plan.Source && st.Daemon.Procs == plan.Min
	})

	got := l.finish()
	t.Logf("procs moved by a swap, three reloads and an invalid value, under load: %s", got)
	if got.failures() != 0 {
		t.Fatalf("failed requests: %s", got)
	}
}
