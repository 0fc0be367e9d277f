package supervisor

import (
	"errors"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartProcessCapturesOutput(t *testing.T) {
	logs := newLogBuffer(100)
	before := time.Now()
	p := startTest(t, launchSpec{
		App: "web", Version: "v7", Instance: 2,
		Command: []string{"/bin/sh", "-c", `echo out1; echo err1 >&2; echo out2; printf 'no newline'`},
		Dir:     t.TempDir(),
	}, logs)
	waitDone(t, p)
	<-p.outDone // closed once the output file was read to the end: every line is in logs

	// stdout and stderr share one output file, in the order written.
	if got, want := texts(logs.Tail(100, nil)), []string{"out1", "err1", "out2", "no newline"}; !slices.Equal(got, want) {
		t.Errorf("output: got %q, want %q", got, want)
	}
	if _, err := os.Stat(p.spec.LogPath); !os.IsNotExist(err) {
		t.Errorf("output file %s left after the process ended: %v", p.spec.LogPath, err)
	}
	for _, l := range logs.Tail(100, nil) {
		if l.Version != "v7" || l.Instance != 2 {
			t.Errorf("line %q: tagged %s[%d], want v7[2]", l.Text, l.Version, l.Instance)
		}
		if l.Time.Before(before) {
			t.Errorf("line %q: time %v before the start %v", l.Text, l.Time, before)
		}
	}
}

// TestStartProcessDirAndEnv checks that the process gets exactly spec.Env
// and runs in spec.Dir.
func TestStartProcessDirAndEnv(t *testing.T) {
	dir := t.TempDir()
	logs := newLogBuffer(100)
	p := startTest(t, launchSpec{
		Command: []string{"/bin/sh", "-c", `pwd; echo "A=$A B=${B-unset}"`},
		Dir:     dir,
		Env:     []string{"A=1", "PATH=/usr/bin:/bin"},
	}, logs)
	waitDone(t, p)
	<-p.outDone
	want := []string{dir, "A=1 B=unset"}
	if got := texts(logs.Tail(100, nil)); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestStartProcessErrors(t *testing.T) {
	logs := newLogBuffer(10)
	if _, err := startProcess(launchSpec{}, logs); err == nil {
		t.Error("empty command: got no error, want one")
	}
	_, err := startProcess(launchSpec{Command: []string{"/nonexistent/app"}}, logs)
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "/nonexistent/app") {
		t.Errorf("missing program: got %v, want an error matching fs.ErrNotExist naming it", err)
	}
}

// TestStartProcessLongLine checks that a line beyond the scanner's limit
// does not leave the app blocked on a full pipe.
func TestStartProcessLongLine(t *testing.T) {
	logs := newLogBuffer(10)
	p := startShell(t, `head -c 300000 /dev/zero | tr '\0' x; echo; echo after >&2`, logs)
	waitDone(t, p)
	select {
	case <-p.outDone:
	case <-time.After(5 * time.Second):
		t.Fatal("output pipes not drained within 5s")
	}
	if got := p.exitDescription(); got != "exited with status 0" {
		t.Errorf("got %q, want %q", got, "exited with status 0")
	}
	waitLine(t, logs, "after")
}

func TestProcessOwnGroup(t *testing.T) {
	p := startShell(t, "sleep 60", newLogBuffer(10))
	pgid, err := syscall.Getpgid(p.pid)
	if err != nil {
		t.Fatal(err)
	}
	if pgid != p.pid {
		t.Errorf("process group: got %d, want its own, %d", pgid, p.pid)
	}
	if pgid == syscall.Getpgrp() {
		t.Errorf("process group %d is the test's own", pgid)
	}
}

// subreaper makes the test process adopt the orphans of its children, so
// that a test can wait4 a grandchild and learn how it died.
func subreaper(t *testing.T) {
	t.Helper()
	const prSetChildSubreaper = 36 // <linux/prctl.h>
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		t.Skipf("prctl(PR_SET_CHILD_SUBREAPER): %v", e)
	}
	t.Cleanup(func() { syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 0, 0) })
}

// reapOrphan waits for pid, an orphan adopted through subreaper, and returns
// how it ended. It kills pid at cleanup should the test end before that.
func reapOrphan(t *testing.T, pid int) syscall.WaitStatus {
	t.Helper()
	var ws syscall.WaitStatus
	done := make(chan error, 1)
	go func() {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait4(%d): %v", pid, err)
		}
	case <-time.After(10 * time.Second):
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("pid %d (in the stopped group) still running 10s later", pid)
	}
	return ws
}

// childPid starts script, which must print "pid N" for a background child
// N and then "ready" once it may be signalled, and returns the process and N.
func childPid(t *testing.T, script string) (*process, int) {
	t.Helper()
	logs := newLogBuffer(10)
	p := startShell(t, script, logs)
	waitLine(t, logs, "ready")
	var pid int
	eventually(t, "the child's pid", func() bool {
		lines := logs.Tail(10, func(l LogLine) bool { return strings.HasPrefix(l.Text, "pid ") })
		if len(lines) == 0 {
			return false
		}
		var err error
		pid, err = strconv.Atoi(strings.TrimPrefix(lines[0].Text, "pid "))
		return err == nil
	})
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	return p, pid
}

// TestStopSignalsGroup checks that stop sends its signal to the whole
// process group: the shell's background child dies of that very signal, so
// it was not left to the SIGKILL at the deadline. stop returns at once, and
// does not wait out its timeout for the child's zombie, which nobody but its
// new parent reaps (here the test; in a container, an init that may reap
// late or never).
func TestStopSignalsGroup(t *testing.T) {
	subreaper(t)
	p, child := childPid(t, `sleep 60 & echo pid $!; echo ready; wait`)
	start := time.Now()
	p.stop(syscall.SIGTERM, 5*time.Second)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("stop took %v, want it to return once the group is gone, well before its 5s timeout", took)
	}
	if got, want := p.exitDescription(), "killed by SIGTERM"; got != want {
		t.Errorf("leader: got %q, want %q", got, want)
	}
	if ws := reapOrphan(t, child); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("child in the group: got wait status %#x, want killed by SIGTERM", ws)
	}
}

// TestStopEscalates checks that a group that ignores the stop signal gets
// SIGKILL, every member, once the timeout is over.
func TestStopEscalates(t *testing.T) {
	subreaper(t)
	p, child := childPid(t, `trap "" TERM; sleep 60 & echo pid $!; echo ready; wait`)
	const timeout = 300 * time.Millisecond
	start := time.Now()
	p.stop(syscall.SIGTERM, timeout)
	took := time.Since(start)
	if took < timeout {
		t.Errorf("stop returned after %v, before its timeout %v, though TERM is ignored", took, timeout)
	}
	if took > 5*time.Second {
		t.Errorf("stop took %v, want about its timeout %v", took, timeout)
	}
	if got, want := p.exitDescription(), "killed by SIGKILL"; got != want {
		t.Errorf("leader: got %q, want %q", got, want)
	}
	if ws := reapOrphan(t, child); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("child in the group: got wait status %#x, want killed by SIGKILL", ws)
	}
}

// TestStopLeftoverChild checks that a child outliving its leader (it ignores
// the signal the leader dies of) gets SIGKILL at stop's deadline.
func TestStopLeftoverChild(t *testing.T) {
	subreaper(t)
	p, child := childPid(t, `(trap "" TERM; echo ready; exec sleep 60) & echo pid $!; wait`)
	const timeout = 300 * time.Millisecond
	start := time.Now()
	p.stop(syscall.SIGTERM, timeout)
	if took := time.Since(start); took < timeout {
		t.Errorf("stop returned after %v, before its timeout %v, while a member ignoring TERM was alive", took, timeout)
	}
	if got, want := p.exitDescription(), "killed by SIGTERM"; got != want {
		t.Errorf("leader: got %q, want %q", got, want)
	}
	if ws := reapOrphan(t, child); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("leftover child: got wait status %#x, want killed by SIGKILL", ws)
	}
}

func TestStopExited(t *testing.T) {
	p := startShell(t, "exit 0", newLogBuffer(10))
	waitDone(t, p)
	start := time.Now()
	p.stop(syscall.SIGTERM, 5*time.Second)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("stop of an exited process took %v", took)
	}
}

func TestExitDescription(t *testing.T) {
	tests := []struct {
		script string
		want   string
	}{
		{"exit 0", "exited with status 0"},
		{"exit 3", "exited with status 3"},
		{"kill -KILL $$", "killed by SIGKILL"},
		{"kill -INT $$", "killed by SIGINT"},
		{"kill -ALRM $$", "killed by signal 14 (alarm clock)"},
	}
	for _, tt := range tests {
		t.Run(tt.script, func(t *testing.T) {
			p := startShell(t, tt.script, newLogBuffer(10))
			waitDone(t, p)
			if got := p.exitDescription(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("running", func(t *testing.T) {
		p := startShell(t, "sleep 60", newLogBuffer(10))
		if got, want := p.exitDescription(), "still running"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
		p.kill()
		if got, want := p.exitDescription(), "killed by SIGKILL"; got != want {
			t.Errorf("after kill: got %q, want %q", got, want)
		}
	})
}

func TestAppEnv(t *testing.T) {
	base := []string{
		"HOME=/home/app",
		"TABLEFLIP_HAS_PARENT_7DIU3=yes",
		"DEPLOYER_SOCKET=/run/old.sock",
		"DEPLOYER_VERSION=v0",
		"DEPLOYER_CONFIG=/etc/deploy.toml",
		"PORT=1234",
	}
	extra := map[string]string{"GREETING": "hi from {app} {version}/{instance}", "HOME": "/srv"}
	// An env file's variables: over the daemon's, under the config's env.
	files := []string{"HOME=/from-file", "SECRET=s3 {app}", "PORT=999"}
	tests := []struct {
		name string
		tcp  bool
		want map[string]string
	}{
		{"socket", false, map[string]string{
			"HOME":              "/srv",
			"PORT":              "999",      // not deployer's: a socket app gets the env file's over the daemon's
			"SECRET":            "s3 {app}", // an env file's values are never expanded
			"GREETING":          "hi from web v2/1",
			"DEPLOYER_APP":      "web",
			"DEPLOYER_VERSION":  "v2",
			"DEPLOYER_INSTANCE": "1",
			"DEPLOYER_SOCKET":   "/run/web/v2-1-abcdefgh.sock",
		}},
		{"tcp", true, map[string]string{
			"HOME":              "/srv",
			"PORT":              "41234", // deployer's {port}, whatever the env file says
			"SECRET":            "s3 {app}",
			"GREETING":          "hi from web v2/1",
			"DEPLOYER_APP":      "web",
			"DEPLOYER_VERSION":  "v2",
			"DEPLOYER_INSTANCE": "1",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Vars{App: "web", Version: "v2", Instance: 1}
			if tt.tcp {
				v.Port = 41234
			} else {
				v.Socket = "/run/web/v2-1-abcdefgh.sock"
			}
			env := appEnv(slices.Clone(base), files, extra, v, tt.tcp)
			// HOME is in base, the env file and extra: the config's value
			// must come last, since exec keeps the last of duplicate keys.
			if d, f, c := slices.Index(env, "HOME=/home/app"), slices.Index(env, "HOME=/from-file"), slices.Index(env, "HOME=/srv"); !(d < f && f < c) {
				t.Errorf("HOME: the daemon's at %d, the env file's at %d, the config's at %d: want them in that order in %q", d, f, c, env)
			}
			got := make(map[string]string)
			for _, kv := range env {
				k, v, _ := strings.Cut(kv, "=")
				got[k] = v
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if tableflipEnv != "TABLEFLIP_HAS_PARENT_7DIU3" {
		t.Errorf("tableflipEnv is %q, want tableflip v1.2.3's TABLEFLIP_HAS_PARENT_7DIU3", tableflipEnv)
	}
}

// The stand-in for a process that was gone when a daemon took over has no
// process group: stopping or killing it signals nothing. (It has pid 0, and
// kill(-0, sig) is the daemon's own group: a drain of an adopted version
// with a dead instance sent stop_signal, then SIGKILL, to the daemon.) Run
// in a child in a group of its own, so that a regression kills only it.
func TestStopStandIn(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), standInRoleEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "not signalled" {
		t.Fatalf("stopping and killing a stand-in: %v, output %q; want it to signal nothing", err, out)
	}
}

// A leader that exited long ago (an instance that crashed, kept as its
// version's process until the version is stopped) has a pid the kernel may
// give to a new process once the group is empty. Stopping the dead process
// must not signal the group of whatever holds the number now: stop sent
// stop_signal to -pid, then SIGKILL when groupAlive saw the new group
// alive. Needs root to steer the pid allocator (ns_last_pid).
func TestStopDeadLeaderSparesReusedPID(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: /proc/sys/kernel/ns_last_pid makes the kernel reuse a pid at once")
	}
	logs := newLogBuffer(DefaultLogLines)
	dead := startShell(t, "exit 3", logs)
	<-dead.done // reaped: the pid is free
	// Start times are in clock ticks (10ms): a process given the number
	// within the same tick could not be told apart, where a real reuse
	// takes the pid counter's whole round.
	time.Sleep(30 * time.Millisecond)
	var other *process
	for try := 0; try < 50 && other == nil; try++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(dead.pid-1)), 0); err != nil {
			t.Skipf("cannot steer the pid allocator: %v", err)
		}
		p := startShell(t, "exec sleep 30", logs)
		if p.pid == dead.pid {
			other = p
		} else {
			p.kill()
		}
	}
	if other == nil {
		t.Skip("the kernel gave the pid to another process 50 times in a row")
	}
	t.Cleanup(other.kill)
	dead.stop(syscall.SIGTERM, 300*time.Millisecond)
	dead.kill()
	select {
	case <-other.done:
		t.Fatalf("stopping the exited pid %d ended the process that holds the number now (%s)", dead.pid, other.exitDescription())
	case <-time.After(time.Second):
	}
}
