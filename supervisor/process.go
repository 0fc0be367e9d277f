package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

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
}

// process is one running app process, leader of its own process group.
type process struct {
	spec    launchSpec
	cmd     *exec.Cmd
	pid     int
	started time.Time

	done    chan struct{} // closed once the process has exited and been reaped
	exitErr error         // valid after done is closed
	outDone chan struct{} // closed once its output pipes hit EOF
}

// startProcess launches spec in its own process group (so stop can signal
// everything it spawned: `go run` for example runs the app as a child) and
// copies its output line by line into logs.
func startProcess(spec launchSpec, logs *LogBuffer) (*process, error) {
	if len(spec.Command) == 0 {
		return nil, errors.New("supervisor: empty command")
	}
	cmd := exec.Command(spec.Command[0], spec.Command[1:]...)
	cmd.Dir = spec.Dir
	cmd.Env = spec.Env
	// Setpgid: a group of its own. No Pdeathsig: apps must outlive the daemon
	// (upgrades and daemon crashes never restart apps).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	// Our own pipes rather than StdoutPipe: Wait must not close them while
	// lines are still buffered, and grandchildren may hold them open.
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("supervisor: output pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("supervisor: output pipe: %w", err)
	}
	cmd.Stdout = outW
	cmd.Stderr = errW
	if err := cmd.Start(); err != nil {
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		return nil, fmt.Errorf("supervisor: start %q: %w", spec.Command[0], err)
	}
	outW.Close()
	errW.Close()

	p := &process{
		spec:    spec,
		cmd:     cmd,
		pid:     cmd.Process.Pid,
		started: time.Now(),
		done:    make(chan struct{}),
		outDone: make(chan struct{}),
	}
	copied := make(chan struct{}, 2)
	go p.copyLines(outR, "stdout", logs, copied)
	go p.copyLines(errR, "stderr", logs, copied)
	go func() {
		<-copied
		<-copied
		close(p.outDone)
	}()
	go func() {
		p.exitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) copyLines(r io.ReadCloser, stream string, logs *LogBuffer, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for sc.Scan() {
		logs.Add(LogLine{Time: time.Now(), Version: p.spec.Version, Instance: p.spec.Instance, Stream: stream, Text: sc.Text()})
	}
	if err := sc.Err(); err != nil && !errors.Is(err, os.ErrClosed) {
		// A line longer than the buffer: keep reading the rest rather than
		// leaving the app blocked on a full pipe.
		io.Copy(io.Discard, r)
	}
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
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	// The signal goes to the group even when the leader already died (a
	// crash): what it left behind deserves the same graceful stop.
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
	for groupAlive(p.pid) {
		select {
		case <-deadline.C:
			syscall.Kill(-p.pid, syscall.SIGKILL)
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// kill ends the whole group at once.
func (p *process) kill() {
	syscall.Kill(-p.pid, syscall.SIGKILL)
	<-p.done
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
// tableflip's marker and stale DEPLOYER_* values, then the config's env, then
// the DEPLOYER_* variables describing this process.
func appEnv(base []string, extra map[string]string, v Vars, tcp bool) []string {
	env := make([]string, 0, len(base)+len(extra)+5)
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if k == tableflipEnv || strings.HasPrefix(k, "DEPLOYER_") || (tcp && k == "PORT") {
			continue
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
