package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer/deployer/supervisor"
)

// The CI example, examples/ci/deploy.sh, run for real against a real daemon:
// "ssh HOST CMD" runs CMD on this machine and scp is cp, so everything but
// the network hop is what a CI job does.

// ciStandIns writes the stand-ins deploy.sh is run with: ssh, which drops
// its options and the destination and runs the command here, as sshd would
// hand it to the user's shell; scp, which drops "HOST:" and copies; and
// build, which makes a release whose run script starts examples/hello with
// $HELLO_FLAGS.
func ciStandIns(t *testing.T) (ssh, scp, build string) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"ssh": `#!/bin/sh
while [ $# -gt 0 ]; do
	case $1 in
	-[bcDEeFIiJLlmOopQRSWw]) shift 2 ;;
	-*) shift ;;
	*) break ;;
	esac
done
shift
exec sh -c "$*"
`,
		"scp": `#!/bin/sh
for a; do
	shift
	case $a in [!/]*:*) a=${a#*:} ;; esac
	set -- "$@" "$a"
done
exec cp "$@"
`,
		"build": `#!/bin/sh
set -e
cat >"$RELEASE_DIR/run" <<EOF
#!/bin/sh
exec $HELLO_BIN -socket "\$DEPLOYER_SOCKET" -version "\$DEPLOYER_VERSION" $HELLO_FLAGS
EOF
chmod +x "$RELEASE_DIR/run"
`,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "ssh"), filepath.Join(dir, "scp"), filepath.Join(dir, "build")
}

// deployScript is examples/ci/deploy.sh, checked with sh -n, and with
// shellcheck when it is installed.
func deployScript(t *testing.T) string {
	t.Helper()
	script, err := filepath.Abs("../../examples/ci/deploy.sh")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("sh -n deploy.sh: %v\n%s", err, out)
	}
	if _, err := exec.LookPath("shellcheck"); err != nil {
		t.Log("shellcheck is not installed: deploy.sh checked with sh -n only")
		return script
	}
	if out, err := exec.Command("shellcheck", "-s", "sh", script).CombinedOutput(); err != nil {
		t.Fatalf("shellcheck deploy.sh: %v\n%s", err, out)
	}
	return script
}

func TestCIDeployScript(t *testing.T) {
	script := deployScript(t)
	ssh, scp, build := ciStandIns(t)
	e := newEnv(t)
	e.release("v1")
	e.writeConfig(`[deployer]
listen = "%ADDR%"
state_dir = "run"
drain_timeout = "2s"

[apps.web]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
settle = "100ms"
ready_timeout = "3s"
`)
	e.start()
	l := startLoad(t, e.url("/"), 2)
	resultFile := filepath.Join(t.TempDir(), "result.json")

	// deploy runs deploy.sh VERSION with hello started with flags, and
	// returns its output, exit status and deployer's result.
	deploy := func(version, flags string, settings ...string) (string, int, supervisor.Result) {
		t.Helper()
		os.Remove(resultFile)
		cmd := exec.Command("sh", script, version)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "DEPLOY") && !strings.HasPrefix(kv, "SMOKE_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env,
			"DEPLOY_HOST=deploy@app1", "DEPLOY_APP=web", "DEPLOY_DIR="+e.dir, "DEPLOY_TIMEOUT=20s",
			"DEPLOY_RESULT="+resultFile, "DEPLOYER="+deployerBin, "SSH="+ssh, "SCP="+scp,
			"BUILD_CMD=sh "+build, "HELLO_BIN="+helloBin, "HELLO_FLAGS="+flags)
		cmd.Env = append(cmd.Env, settings...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("deploy.sh %s: %v", version, err)
		}
		t.Logf("deploy.sh %s → exit %d\n%s", version, code, out)
		var res supervisor.Result
		if b, err := os.ReadFile(resultFile); err == nil {
			if err := json.Unmarshal(b, &res); err != nil {
				t.Errorf("deploy.sh %s: DEPLOY_RESULT is not deployer's JSON result: %v\n%s", version, err, b)
			}
		}
		return string(out), code, res
	}
	serving := func(want string) supervisor.AppStatus {
		t.Helper()
		st := e.appStatus("web")
		if st.Version != want {
			t.Fatalf("serving %s (previous %s), want %s", st.Version, st.Previous, want)
		}
		return st
	}

	// A good version swaps in.
	out, code, res := deploy("v2", "")
	if code != 0 || res.Outcome != supervisor.OutcomeOK || res.NewVersion != "v2" || !strings.Contains(out, "deployed web v2") {
		t.Fatalf("deploying a good v2: exit %d, result %+v", code, res)
	}
	pid := serving("v2").Instances[0].PID

	// A version that fails its health check never takes traffic: exit 1,
	// v2 serves on with the same process, and there was nothing to roll back.
	// (And the JSON is read with sed, as on a machine without jq.)
	out, code, res = deploy("v3", "-unhealthy", "JQ=no-jq-here")
	if code != 1 || res.Outcome != supervisor.OutcomeFailed || len(res.Output) == 0 ||
		!strings.Contains(out, "v2 serves on, untouched") || strings.Contains(out, "rolling") {
		t.Errorf("deploying an unhealthy v3: exit %d, result %+v", code, res)
	}
	if st := serving("v2"); st.Instances[0].PID != pid || st.Previous != "v1" {
		t.Errorf("after the failed v3: pid %d previous %s, want pid %d previous v1", st.Instances[0].PID, st.Previous, pid)
	}

	// A version too slow for DEPLOY_TIMEOUT: exit 3, v2 untouched.
	out, code, res = deploy("v4", "-boot-delay 20s", "DEPLOY_TIMEOUT=1s")
	if code != 3 || res.Outcome != supervisor.OutcomeTimeout || res.TrafficMoved || !strings.Contains(out, "v2 serves on, untouched") {
		t.Errorf("deploying a v4 slower than the timeout: exit %d, result %+v", code, res)
	}
	if st := serving("v2"); st.Instances[0].PID != pid {
		t.Errorf("after the timed-out v4: pid %d, want %d", st.Instances[0].PID, pid)
	}

	// A version that is healthy but fails the smoke test is rolled back.
	smoke := "SMOKE_URL=" + e.url("/no-such-page")
	if _, err := exec.LookPath("curl"); err != nil {
		t.Log("curl is not installed: the smoke test is SMOKE_CMD=false")
		smoke = "SMOKE_CMD=false"
	}
	out, code, _ = deploy("v5", "", smoke, "SMOKE_TRIES=2")
	if code != 4 || !strings.Contains(out, "rolled back to v2") {
		t.Errorf("deploying a v5 that fails its smoke test: exit %d", code)
	}
	if st := serving("v2"); st.Previous != "v5" {
		t.Errorf("after the rollback: previous %s, want v5", st.Previous)
	}

	// Deploying a version already on the server again does not copy it
	// again, and works: a re-run CI job.
	out, code, _ = deploy("v5", "")
	if code != 0 || !strings.Contains(out, "releases/v5 is already on") {
		t.Errorf("deploying v5 again: exit %d", code)
	}
	serving("v5")

	// deployer's result never came (its daemon was killed mid-swap: the
	// CLI exits 4, TestSwapConnectionLost): deploy.sh claims nothing, exit 6.
	lost := filepath.Join(t.TempDir(), "deployer-lost")
	stub := "#!/bin/sh\necho '{\"ok\": false, \"outcome\": \"unknown\", \"app\": \"web\", \"op\": \"swap\", " +
		"\"error\": \"the connection to the daemon was lost before its result; the outcome is unknown\"}'\nexit 4\n"
	if err := os.WriteFile(lost, []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	out, code, _ = deploy("v6", "", "DEPLOYER="+lost)
	if code != 6 || !strings.Contains(out, "outcome of the swap of web to v6 is unknown") || strings.Contains(out, "untouched") {
		t.Errorf("deploying v6 with the daemon's result lost: exit %d, want 6", code)
	}

	// The other two endings, with a stand-in deployer that answers swap and
	// rollback as told. A swap whose --timeout passed after traffic moved
	// (exit 3, traffic_moved) is a served version: a warning, then the
	// smoke test, which passes here.
	standIn := func(name, swapJSON string, swapExit int, rollbackJSON string, rollbackExit int) string {
		path := filepath.Join(t.TempDir(), name)
		script := fmt.Sprintf("#!/bin/sh\ncase $3 in\nswap) echo '%s'; exit %d ;;\nrollback) echo '%s'; exit %d ;;\nesac\nexit 9\n",
			swapJSON, swapExit, rollbackJSON, rollbackExit)
		if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	late := standIn("deployer-late", `{"ok": false, "outcome": "timeout", "app": "web", "op": "swap", "old_version": "v5", "new_version": "v7", "traffic_moved": true, "duration_ms": 1500, "error": "--timeout passed while v5 drained: v7 serves all new traffic"}`, 3, "", 9)
	out, code, _ = deploy("v7", "", "DEPLOYER="+late, "SMOKE_CMD=true")
	if code != 0 || !strings.Contains(out, "warning: --timeout passed while v5 drained") || !strings.Contains(out, "smoke test passed") ||
		!strings.Contains(out, "deployed web v7") {
		t.Errorf("deploying v7 whose swap timed out after traffic moved: exit %d, want 0 after the smoke test", code)
	}
	// A smoke test that fails, and a rollback that fails too: exit 5.
	stuck := standIn("deployer-stuck", `{"ok": true, "outcome": "ok", "app": "web", "op": "swap", "old_version": "v5", "new_version": "v8", "traffic_moved": true, "duration_ms": 900}`, 0,
		`{"ok": false, "outcome": "failed", "app": "web", "op": "rollback", "error": "v5 failed its health check"}`, 1)
	out, code, _ = deploy("v8", "", "DEPLOYER="+stuck, "SMOKE_CMD=false", "SMOKE_TRIES=1")
	if code != 5 || !strings.Contains(out, "rolling web back to v5") ||
		!strings.Contains(out, "the rollback failed (exit 1: v5 failed its health check); v8 may still serve") {
		t.Errorf("deploying v8 whose smoke test and rollback fail: exit %d, want 5", code)
	}

	// Bad input is refused before anything is built.
	if _, code, _ = deploy("-v6", ""); code != 2 {
		t.Errorf("deploy.sh -v6: exit %d, want 2", code)
	}

	entries, _ := os.ReadDir(filepath.Join(e.dir, "releases"))
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), ".incoming") {
			t.Errorf("leftover %s in releases/", en.Name())
		}
	}
	got := l.finish()
	t.Logf("deploys under load: %s", got)
	if got.failures() != 0 {
		t.Fatalf("requests failed during the deploys: %s", got)
	}
}
