package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/deployer/deployer/sockets"
)

// tableflipEnv is the variable tableflip sets in a new daemon; an app that
// inherited it would believe it has a tableflip parent (PITFALLS).
const tableflipEnv = sockets.HasParentEnv

// launchSpec is everything needed to start one app process.
type launchSpec struct {
	App      string
	Version  string
	Instance int
	Socket   string // unique bind path; "" for a TCP app
	Port     int    // for a TCP app
	Command  []string
	Dir      string
	Env      []string // KEY=VALUE, already expanded
	// LogPath is the file the process's stdout and stderr go to ("" for a
	// temporary one); it is removed once the process is done.
	LogPath string
}

// process is one app process, leader of its own process group: either
// started by this daemon or adopted from an earlier one (an upgrade or a
// crash), which is why exit is detected by pidfd for adopted ones.
type process struct {
	spec       launchSpec
	pid        int
	started    time.Time
	startTicks uint64 // /proc/<pid>/stat starttime: tells a reused pid apart
	adopted    bool

	done    chan struct{} // closed once the process has exited
	exitErr error         // valid after done is closed; nil for adopted ones
	outDone chan struct{} // closed once its output was read to the end
	log     atomic.Pointer[outputLog]

	// launched, if set, is told that the start is over: waitReady calls it
	// when the process is healthy, failed its checks or exited
	// (threadTuner.appStarting).
	launched func()
}

// startProcess launches spec in its own process group (so stop can signal
// everything it spawned: `go run` for example runs the app as a child) with
// its output going to spec.LogPath, which is read line by line into logs.
//
// A file rather than a pipe: a pipe's reading end dies with the daemon, and
// an app writing to it then gets SIGPIPE (fatal to a Go program writing to
// stdout). A file outlives a daemon crash or upgrade; the next daemon reads
// on from where this one stopped.
func startProcess(spec launchSpec, logs *LogBuffer) (*process, error) {
	if len(spec.Command) == 0 {
		return nil, errors.New("supervisor: empty command")
	}
	var out *os.File
	var err error
	if spec.LogPath == "" {
		out, err = os.CreateTemp("", "deployer-*.log")
		if err == nil {
			spec.LogPath = out.Name()
		}
	} else {
		out, err = os.OpenFile(spec.LogPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	}
	if err != nil {
		return nil, fmt.Errorf("supervisor: output file: %w", err)
	}
	cmd := exec.Command(spec.Command[0], spec.Command[1:]...)
	cmd.Dir = spec.Dir
	cmd.Env = spec.Env
	// Setpgid: a group of its own. No Pdeathsig: apps must outlive the daemon
	// (upgrades and daemon crashes never restart apps).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout = out
	cmd.Stderr = out
	err = cmd.Start()
	out.Close()
	if err != nil {
		os.Remove(spec.LogPath)
		return nil, fmt.Errorf("supervisor: start %q: %w", spec.Command[0], err)
	}
	p := &process{
		spec:    spec,
		pid:     cmd.Process.Pid,
		started: time.Now(),
		done:    make(chan struct{}),
		outDone: make(chan struct{}),
	}
	p.startTicks, _ = startTicks(p.pid)
	go func() {
		p.exitErr = cmd.Wait()
		close(p.done)
	}()
	p.log.Store(followOutput(p, 0, 0, logs))
	return p, nil
}

// adoptProcess takes over a process an earlier daemon started, if pid still
// is that process: its start time must match (a pid can be reused). The
// pidfd opened first pins the process, so the check cannot race a reuse.
// Its output is read from logOffset; what ends at or before shown, the
// earlier daemon's last read, is Backlog.
func adoptProcess(spec launchSpec, pid int, ticks uint64, started time.Time, logOffset, shown int64, logs *LogBuffer) (*process, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("supervisor: pid %d is gone: %w", pid, err)
	}
	if got, err := startTicks(pid); err != nil || got != ticks {
		unix.Close(fd)
		return nil, fmt.Errorf("supervisor: pid %d is another process now", pid)
	}
	p := &process{
		spec:       spec,
		pid:        pid,
		started:    started,
		startTicks: ticks,
		adopted:    true,
		done:       make(chan struct{}),
		outDone:    make(chan struct{}),
	}
	go func() {
		// Not a child of ours: wait(2) cannot tell its end, the pidfd can
		// (readable once the process has terminated).
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err == nil || !errors.Is(err, unix.EINTR) {
				break
			}
		}
		close(p.done)
	}()
	p.log.Store(followOutput(p, logOffset, shown, logs))
	return p, nil
}

// startTicks reads a process's start time, in clock ticks since boot.
func startTicks(pid int) (uint64, error) {
	f := readStat(pid)
	if len(f) < 20 {
		return 0, fmt.Errorf("supervisor: no /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitDescription says how the process ended, for humans.
func (p *process) exitDescription() string {
	if !p.exited() {
		return "still running"
	}
	var ee *exec.ExitError
	if errors.As(p.exitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + signalName(ws.Signal())
		}
		return "exited with status " + strconv.Itoa(ee.ExitCode())
	}
	if p.exitErr != nil {
		return p.exitErr.Error()
	}
	if p.adopted {
		return "exited (adopted from an earlier daemon: its status is unknown)"
	}
	return "exited with status 0"
}

// signalName names sig the way kill -l does ("SIGKILL"). Signal.String is
// strsignal(3)'s description, which read "killed by killed".
func signalName(sig syscall.Signal) string {
	for name, s := range stopSignals {
		if s == sig {
			return "SIG" + name
		}
	}
	return fmt.Sprintf("signal %d (%s)", int(sig), sig)
}

// stop sends sig to the process group, then SIGKILL to the group after
// timeout. It returns once the leader has exited; group members that outlive
// it get SIGKILL at the same deadline. (PITFALLS: cmd.Cancel/WaitDelay kill
// only the leader.)
func (p *process) stop(sig syscall.Signal, timeout time.Duration) {
	if p.pid <= 0 {
		// A stand-in for a process that was gone when a daemon took over
		// (exitedProcess): there is no group. kill(-0) would signal the
		// daemon's own.
		return
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	// The signal goes to the group even when the leader already died (a
	// crash): what it left behind deserves the same graceful stop. Unless
	// the group is gone and its number is another process's now.
	if p.groupReused() {
		return
	}
	syscall.Kill(-p.pid, sig)
	if !p.exited() {
		select {
		case <-p.done:
		case <-deadline.C:
			syscall.Kill(-p.pid, syscall.SIGKILL)
			<-p.done
			return
		}
	}
	// The leader is gone; children it left in the group get the rest of the
	// timeout, then SIGKILL.
	for !p.groupReused() && groupAlive(p.pid) {
		select {
		case <-deadline.C:
			if !p.groupReused() {
				syscall.Kill(-p.pid, syscall.SIGKILL)
			}
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// kill ends the whole group at once.
func (p *process) kill() {
	if p.pid > 0 && !p.groupReused() { // not a stand-in (see stop), nor a number reused
		syscall.Kill(-p.pid, syscall.SIGKILL)
	}
	<-p.done
}

// groupReused reports whether the leader has exited and its pid now names
// another process. The kernel does not give out a pid that still numbers a
// process group with members, so the group is then empty, and a signal to
// -pid would reach the group of whatever holds the number now (an instance
// that crashed hours before its version is stopped, say). A pid that names
// no process at all may still number the group its leader left behind.
// Start times count clock ticks (10ms): a reuse within the tick the leader
// started in, which takes the pid counter's whole round, is not seen.
func (p *process) groupReused() bool {
	if !p.exited() || p.startTicks == 0 {
		return false
	}
	ticks, err := startTicks(p.pid)
	return err == nil && ticks != p.startTicks
}

// groupAlive reports whether a process of group pgid still runs. kill(2)
// succeeds on zombies too, and a member orphaned by the leader's exit stays
// a zombie until its new parent reaps it: late with some container inits,
// never when deployer is PID 1 itself. Zombies hold nothing, so they do not
// count; /proc says which members are zombies.
func groupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) != nil {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true // cannot tell zombies apart: trust kill
	}
	group := strconv.Itoa(pgid)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// f[0] is the state (Z zombie, X dead), f[2] the process group.
		if f := readStat(pid); len(f) > 2 && f[2] == group && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}

// appEnv builds an app process's environment: the daemon's own, without
// tableflip's marker and stale DEPLOYER_* values, then the env files'
// variables (KEY=VALUE, in order), then the config's env, then the DEPLOYER_*
// variables describing this process. A key set twice takes its last value
// (os/exec keeps the last of duplicates).
func appEnv(base, files []string, extra map[string]string, v Vars, tcp bool) []string {
	env := make([]string, 0, len(base)+len(files)+len(extra)+5)
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if k == tableflipEnv || strings.HasPrefix(k, "DEPLOYER_") || (tcp && k == "PORT") {
			continue
		}
		env = append(env, kv)
	}
	for _, kv := range files {
		if k, _, _ := strings.Cut(kv, "="); tcp && k == "PORT" {
			continue // the supervisor's {port}
		}
		env = append(env, kv)
	}
	for k, val := range extra {
		env = append(env, k+"="+Expand(val, v))
	}
	env = append(env,
		"DEPLOYER_APP="+v.App,
		"DEPLOYER_VERSION="+v.Version,
		"DEPLOYER_INSTANCE="+strconv.Itoa(v.Instance),
	)
	if tcp {
		env = append(env, "PORT="+strconv.Itoa(v.Port))
	} else {
		env = append(env, "DEPLOYER_SOCKET="+v.Socket)
	}
	return env
}
