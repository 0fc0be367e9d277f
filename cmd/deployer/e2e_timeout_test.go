package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// swapJSON runs a streamed command with --json and decodes its result.
func (e *env) swapJSON(args ...string) (supervisor.Result, int, string) {
	e.t.Helper()
	out, errOut, code := e.cli(append(args, "--json")...)
	var res supervisor.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		e.t.Fatalf("deployer %v --json: exit %d, stdout is not one JSON result: %v\n%s%s", args, code, err, out, errOut)
	}
	return res, code, out + errOut
}

// processesOf lists the command lines of running processes that mention
// every one of words, /proc/*/cmdline with NULs read as spaces.
func processesOf(words ...string) []string {
	entries, _ := os.ReadDir("/proc")
	var found []string
next:
	for _, en := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", en.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		for _, w := range words {
			if !strings.Contains(cmdline, w) {
				continue next
			}
		}
		found = append(found, cmdline)
	}
	return found
}

// leftoverSockets lists what a version left under run/<app>/.
func (e *env) leftoverSockets(app, version string) []string {
	entries, _ := os.ReadDir(filepath.Join(e.dir, "run", app))
	var left []string
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), version+"-") {
			left = append(left, en.Name())
		}
	}
	return left
}

// A swap whose --timeout passes before the new version is healthy: exit 3,
// the new version's processes and socket gone, the old version serving on
// with the same pid, and no request failed meanwhile.
func TestTimeoutAbortsSwap(t *testing.T) {
	e := slowReleaseEnv(t, "20s")
	pid := e.appStatus("web").Instances[0].PID
	l := startLoad(t, e.url("/"), 4)

	start := time.Now()
	res, code, all := e.swapJSON("swap", "web", "slow", "--timeout", "1s")
	took := time.Since(start)
	if code != exitTimeout {
		t.Fatalf("swap --timeout 1s to a version booting for 20s: exit %d, want %d\n%s", code, exitTimeout, all)
	}
	if took > 6*time.Second {
		t.Errorf("swap --timeout 1s returned after %s", took)
	}
	if res.OK || res.Outcome != supervisor.OutcomeTimeout || res.TrafficMoved ||
		res.OldVersion != "v1" || res.NewVersion != "slow" || res.TimeoutMS != 1000 ||
		!strings.Contains(res.Error, "timeout 1s expired before it was healthy") {
		t.Errorf("result = %+v", res)
	}

	// The text form says the same, for a person reading the CI log.
	out, _, code := e.cli("swap", "web", "slow", "--timeout", "500ms")
	if code != exitTimeout || !strings.Contains(out, "swap of web to slow timed out: ") ||
		!strings.Contains(out, "web still serves v1, untouched") {
		t.Errorf("swap --timeout 500ms: exit %d\n%s", code, out)
	}

	st := e.appStatus("web")
	if st.Version != "v1" || len(st.Instances) != 1 || st.Instances[0].PID != pid {
		t.Errorf("after timed-out swaps: serving %s %+v, want v1 pid %d", st.Version, st.Instances, pid)
	}
	if left := processesOf(e.dir, "slow-"); len(left) != 0 {
		t.Errorf("processes of the timed-out version still run: %q", left)
	}
	if left := e.leftoverSockets("web", "slow"); len(left) != 0 {
		t.Errorf("leftover sockets of the timed-out version: %v", left)
	}
	got := l.finish()
	t.Logf("timed-out swaps under load: %s", got)
	if got.failures() != 0 || got.total() == 0 {
		t.Fatalf("requests failed while swaps timed out: %s", got)
	}

	// The app is free for the next deploy at once: the timeout released it.
	res, code, all = e.swapJSON("swap", "web", "v1", "--timeout", "20s")
	if code != exitOK || !res.OK || res.Outcome != supervisor.OutcomeOK {
		t.Fatalf("swap after the timeouts: exit %d\n%s", code, all)
	}
}

// --json results of a swap that works and of one that fails carry the
// outcome, both versions, the durations and, on failure, the output.
func TestTimeoutJSONResults(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.release("sick", "-unhealthy")
	e.start()

	res, code, all := e.swapJSON("swap", "web", "v2", "--timeout", "20s", "--wait-drain")
	if code != exitOK || !res.OK || res.Outcome != supervisor.OutcomeOK || !res.TrafficMoved ||
		res.App != "web" || res.Op != "swap" || res.OldVersion != "v1" || res.NewVersion != "v2" ||
		res.ReadyMS <= 0 || res.SwitchMS < res.ReadyMS || res.DrainMS <= 0 || res.DurationMS < res.SwitchMS ||
		res.TimeoutMS <= 0 {
		t.Errorf("good swap: exit %d, %+v\n%s", code, res, all)
	}

	res, code, all = e.swapJSON("swap", "web", "sick", "--timeout", "1m")
	if code != exitFailed || res.OK || res.Outcome != supervisor.OutcomeFailed || res.TrafficMoved ||
		res.OldVersion != "v2" || res.NewVersion != "sick" || res.Error == "" || len(res.Output) == 0 {
		t.Errorf("sick swap: exit %d, %+v\n%s", code, res, all)
	}
	if st := e.appStatus("web"); st.Version != "v2" {
		t.Errorf("after the failed swap: serving %s, want v2", st.Version)
	}
}

// A timeout that passes after traffic moved, while --wait-drain waits for
// a slow request on the old version: exit 3, but the new version serves
// and the slow request still ends well.
func TestTimeoutAfterTrafficMoved(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("drain_timeout = \"20s\"\n")
	e.start()
	slow := getInBackground(e.url("/slow?d=4s"))
	waitFor(t, "the slow request to be in flight", 5*time.Second, func() bool {
		return e.appStatus("web").InFlight == 1
	})

	res, code, all := e.swapJSON("swap", "web", "v2", "--wait-drain", "--timeout", "1500ms")
	if code != exitTimeout || res.OK || res.Outcome != supervisor.OutcomeTimeout || !res.TrafficMoved ||
		!strings.Contains(res.Error, "while v1 drained") {
		t.Errorf("swap --wait-drain --timeout with a slow request: exit %d, %+v\n%s", code, res, all)
	}
	if st := e.appStatus("web"); st.Version != "v2" {
		t.Errorf("after the timeout: serving %s, want v2", st.Version)
	}
	if r := <-slow; r.err != nil || r.code != 200 || r.version != "v1" {
		t.Errorf("slow request across the timed-out drain: %+v", r)
	}
}

// --timeout travels with the request: a CLI killed mid-swap leaves the
// daemon to enforce it. The slow version's processes and socket are gone
// by the timeout, v1 serves on with the same pid, and the app is free for
// the next swap.
func TestTimeoutHoldsWithoutTheCLI(t *testing.T) {
	e := slowReleaseEnv(t, "20s")
	pid := e.appStatus("web").Instances[0].PID
	cli := exec.Command(deployerBin, "-c", e.config, "swap", "web", "slow", "--timeout", "2s")
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slow version to be launched", 5*time.Second, func() bool { return len(processesOf(e.dir, "slow-")) > 0 })
	start := time.Now()
	cli.Process.Kill()
	cli.Wait()

	waitFor(t, "the daemon to stop the slow version at its --timeout", 6*time.Second, func() bool {
		return len(processesOf(e.dir, "slow-")) == 0 && len(e.leftoverSockets("web", "slow")) == 0
	})
	t.Logf("the slow version gone %s after its CLI was killed", time.Since(start).Round(time.Millisecond))
	if st := e.appStatus("web"); st.Version != "v1" || st.Instances[0].PID != pid {
		t.Fatalf("after the timeout: serving %s pid %d, want v1 pid %d", st.Version, st.Instances[0].PID, pid)
	}
	res, code, all := e.swapJSON("swap", "web", "v1", "--timeout", "20s")
	if code != exitOK || !res.OK {
		t.Fatalf("swap after the abandoned one: exit %d\n%s", code, all)
	}
}

// slowReleaseEnv is a running daemon serving web v1, with a release "slow"
// that takes bootDelay to listen (ready_timeout 30s): with 20s, a swap to it
// is still starting when a --timeout of a few seconds passes.
func slowReleaseEnv(t *testing.T, bootDelay string) *env {
	t.Helper()
	e := newEnv(t)
	e.release("v1")
	e.release("slow", "-boot-delay", bootDelay)
	e.writeConfig(`[deployer]
listen = "%ADDR%"
state_dir = "run"

[apps.web]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
settle = "100ms"
ready_timeout = "30s"
`)
	e.start()
	return e
}
