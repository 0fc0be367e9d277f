package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/supervisor"
)

// Failed swaps leave the old version serving, untouched, with zero failed
// requests, and report the reason and the new version's last output.
func TestFailedSwaps(t *testing.T) {
	e := newEnv(t)
	e.release("v1")
	e.release("boot", "-fail-at-boot")
	e.release("sick", "-unhealthy")
	e.release("crashy", "-crash-after", "300ms")
	e.writeConfig(`[deployer]
listen = "%ADDR%"
state_dir = "run"

[apps.web]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
settle = "1s"
ready_timeout = "3s"
`)
	e.start()
	pid := e.appStatus("web").Instances[0].PID
	l := startLoad(t, e.url("/"), 16)

	cases := []struct {
		version, reason, output string
	}{
		{"boot", "exited with status 1", "failing at boot on purpose"},
		{"sick", "not healthy within 3s", "listening"},
		{"crashy", "exited with status 3", ""},
	}
	for _, c := range cases {
		out, errOut, code := e.cli("swap", "web", c.version)
		all := out + errOut
		if code != 1 {
			t.Errorf("swap to %s: exit %d, want 1\n%s", c.version, code, all)
			continue
		}
		if !strings.Contains(all, c.reason) || !strings.Contains(all, c.output) {
			t.Errorf("swap to %s: output lacks %q / %q:\n%s", c.version, c.reason, c.output, all)
		}
		st := e.appStatus("web")
		if st.Version != "v1" || st.Instances[0].PID != pid {
			t.Errorf("after failed swap to %s: serving %s pid %d, want v1 pid %d", c.version, st.Version, st.Instances[0].PID, pid)
		}
	}
	// --json carries the same result for CI.
	out, _, code := e.cli("swap", "web", "boot", "--json")
	var res supervisor.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 || res.OK || res.Error == "" || len(res.Output) == 0 {
		t.Errorf("swap --json of a failing version: exit %d, %+v (%v)\n%s", code, res, err, out)
	}
	got := l.finish()
	t.Logf("failed swaps under load: %s", got)
	if got.failures() != 0 {
		t.Fatalf("requests failed while swaps failed: %s", got)
	}
	// No leftover sockets of the failed versions.
	entries, _ := os.ReadDir(filepath.Join(e.dir, "run", "web"))
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), "boot-") || strings.HasPrefix(en.Name(), "sick-") || strings.HasPrefix(en.Name(), "crashy-") {
			t.Errorf("leftover socket %s", en.Name())
		}
	}
}

// A second swap while one is running is refused with a clear message.
func TestConcurrentSwapRefused(t *testing.T) {
	e := slowReleaseEnv(t, "2s")
	first := make(chan int, 1)
	go func() {
		_, _, code := e.cli("swap", "web", "slow")
		first <- code
	}()
	waitFor(t, "the first swap to be launching", 5*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(e.dir, "run", "web"))
		entries, _ := os.ReadDir(filepath.Join(e.dir, "run", "web"))
		_ = err
		for _, en := range entries {
			if strings.HasPrefix(en.Name(), "slow-") {
				return false // bound: too late
			}
		}
		return strings.Contains(e.logs.String(), "launching slow")
	})
	out, errOut, code := e.cli("swap", "web", "v1")
	if code != 1 || !strings.Contains(out+errOut, "another operation is running") {
		t.Fatalf("second swap: exit %d\n%s%s", code, out, errOut)
	}
	if code := <-first; code != 0 {
		t.Fatalf("first swap exit %d", code)
	}
	// And rollback goes back to v1.
	e.mustCLI("rollback", "web")
	if st := e.appStatus("web"); st.Version != "v1" || st.Previous != "slow" {
		t.Fatalf("after rollback: version %s previous %s", st.Version, st.Previous)
	}
}

// Config errors: each bad input gives its message and exit 2; nothing starts.
func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name, config, want string
	}{
		{"unknown key", "[apps.web]\ncommand = [\"x\"]\nversion = \"v1\"\ncomand = 1\n", "deploy.toml:4"},
		{"bare duration", "[deployer]\ndrain_timeout = 5\n[apps.web]\ncommand = [\"x\"]\nversion = \"v1\"\n", `"5s"`},
		{"missing command", "[apps.web]\nversion = \"v1\"\n", "command"},
		{"long socket path", "[deployer]\nstate_dir = \"/tmp/" + strings.Repeat("a", 100) + "\"\n[apps.web]\ncommand = [\"x\"]\nversion = \"v1\"\n", "107"},
		{"duplicate route", "[apps.a]\ncommand = [\"x\"]\nversion = \"v1\"\n[apps.b]\ncommand = [\"x\"]\nversion = \"v1\"\n", "both serve"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.writeConfig(c.config)
			for _, cmd := range []string{"check", "start"} {
				out, errOut, code := e.cli(cmd)
				if code != 2 || !strings.Contains(errOut, c.want) {
					t.Errorf("deployer %s: exit %d, stderr lacks %q:\n%s%s", cmd, code, c.want, out, errOut)
				}
			}
			if _, err := os.Stat(filepath.Join(e.dir, "run")); !os.IsNotExist(err) {
				t.Errorf("state dir created by an invalid config: %v", err)
			}
		})
	}
}
