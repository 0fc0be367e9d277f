package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testlog"
	"github.com/deployer/deployer/supervisor"
)

// daemonConfig writes a deploy.toml whose one app, web, is this test binary
// playing fakeApp, with no built-in proxy.
func daemonConfig(t *testing.T) (dir, path string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir = stateDir(t)
	path = filepath.Join(dir, "deploy.toml")
	writeFile(t, path, fmt.Sprintf(`[deployer]
listen = ""
state_dir = %q
drain_timeout = "5s"
[apps.web]
command = [%q]
version = "v1"
env = { %s = "app" }
health = "/healthz"
ready_timeout = "20s"
stop_timeout = "5s"
`, dir, exe, roleEnv))
	return dir, path
}

// daemonProcess is `deployer start` running as a process of its own.
type daemonProcess struct {
	cmd    *exec.Cmd
	out    testlog.Buffer // its stdout and stderr
	exited chan struct{}  // closed once cmd.Wait has returned
}

// startDaemon runs `deployer start -c cfg` and waits until web serves. The
// process is killed at the end of the test if it is still running.
func startDaemon(t *testing.T, cfg string) *daemonProcess {
	t.Helper()
	d := &daemonProcess{exited: make(chan struct{})}
	d.cmd = exec.Command(os.Args[0], "start", "-c", cfg)
	d.cmd.Env = append(os.Environ(), roleEnv+"=deployer")
	d.cmd.Stdout, d.cmd.Stderr = &d.out, &d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			d.cmd.Process.Kill()
			<-d.exited
		}
		t.Logf("daemon output:\n%s", &d.out)
	})
	waitFor(t, "the daemon", 30*time.Second, func() bool {
		select {
		case <-d.exited:
			t.Fatalf("daemon exited early: %v", d.cmd.ProcessState)
		default:
		}
		var st supervisor.Status
		got := quietRun("status", "--json", "-c", cfg)
		return got.code == exitOK && json.Unmarshal([]byte(got.stdout), &st) == nil &&
			len(st.Apps) == 1 && st.Apps[0].State == supervisor.StateServing
	})
	return d
}

// wait waits for the daemon to exit and returns its exit status.
func (d *daemonProcess) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-d.exited:
	case <-time.After(time.Minute):
		t.Fatal("daemon did not exit within a minute")
	}
	return d.cmd.ProcessState.ExitCode()
}

// TestDaemon drives a real daemon through the CLI: start, swap, status,
// logs, shutdown.
func TestDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real daemon")
	}
	dir, cfg := daemonConfig(t)
	d := startDaemon(t, cfg)

	// A second start finds the daemon and asks it, instead of becoming one:
	// web serves already, which is what start asks for, so it succeeds.
	got := run(t, "start", "-c", cfg)
	if got.code != exitOK || !strings.Contains(got.stdout, "already serves v1") {
		t.Errorf("second start: exit %d, stdout %q stderr %q; want success from the running daemon", got.code, got.stdout, got.stderr)
	}

	got = run(t, "swap", "v2", "-c", cfg)
	wantCode(t, got, exitOK)
	if !strings.HasSuffix(got.stdout, "\n") || !strings.Contains(got.stdout, "swapped web v1 → v2 in ") {
		t.Errorf("swap output:\n%s", got.stdout)
	}
	got = run(t, "status", "-c", cfg)
	wantCode(t, got, exitOK)
	if !strings.HasPrefix(got.stdout, "web: v2 serving, ") || !strings.Contains(got.stdout, filepath.Join(dir, "web")) {
		t.Errorf("status:\n%s", got.stdout)
	}

	// The apps' output, tagged by the daemon: fakeApp says what it serves.
	got = run(t, "logs", "-n", "10", "-c", cfg)
	wantCode(t, got, exitOK)
	if !strings.Contains(got.stdout, "serving v2") {
		t.Errorf("logs lack v2's output:\n%s", got.stdout)
	}

	got = run(t, "shutdown", "-c", cfg)
	wantCode(t, got, exitOK)
	if got.stdout != "daemon stopped\n" {
		t.Errorf("shutdown: stdout = %q", got.stdout)
	}
	if code := d.wait(t); code != exitOK {
		t.Errorf("daemon exit status %d, want 0", code)
	}
}

// TestDaemonSignal checks that SIGTERM stops the daemon gracefully, exit 0.
func TestDaemonSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real daemon")
	}
	_, cfg := daemonConfig(t)
	d := startDaemon(t, cfg)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t); code != exitOK {
		t.Errorf("daemon exit status %d, want 0", code)
	}
	// The control socket goes with it.
	got := run(t, "status", "-c", cfg)
	wantCode(t, got, exitFailed)
}

// quietRun runs the CLI without logging, for polling.
func quietRun(args ...string) outcome {
	var stdout, stderr bytes.Buffer
	c := &CLI{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
	code := c.Run(context.Background(), args)
	return outcome{code, stdout.String(), stderr.String()}
}
