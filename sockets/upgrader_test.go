package sockets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The Upgrader tests run the test binary again as a daemon (roleEnv names
// its role, dirEnv its socket directory), because tableflip allows one
// Upgrader per process and an upgrade starts os.Args[0] anew.
const (
	roleEnv = "SOCKETS_TEST_ROLE"
	dirEnv  = "SOCKETS_TEST_DIR"
)

// runRole plays role and returns the exit status.
func runRole(role string) int {
	var err error
	switch role {
	case "listen":
		err = roleListen(os.Getenv(dirEnv))
	case "upgrade":
		err = roleUpgrade(os.Getenv(dirEnv))
	case "failed-upgrade":
		err = roleFailedUpgrade(os.Getenv(dirEnv))
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s (pid %d): %v\n", role, os.Getpid(), err)
		return 1
	}
	return 0
}

// runDaemon runs the test binary in role and returns its combined output,
// failing the test unless it exits 0. The output is read to its end, which
// comes only when every process holding it (a new process from an upgrade
// too) has exited.
func runDaemon(t *testing.T, role, dir string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, HasParentEnv+"=") {
			env = append(env, kv)
		}
	}
	// The race detector sleeps a second at exit unless told otherwise.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(env, roleEnv+"="+role, dirEnv+"="+dir, "GORACE="+gorace)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s daemon: %v\n%s", role, err, out.String())
	}
	return out.String()
}

func TestUpgraderListenReadyStop(t *testing.T) {
	dir := socketDir(t)
	runDaemon(t, "listen", dir)
	for _, name := range []string{"stale.sock", "ctl.sock"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after Stop: %v, want it unlinked", name, err)
		}
	}
}

// roleListen creates listeners of every kind, Ready and Stop, without an
// upgrade.
func roleListen(dir string) error {
	pidFile := filepath.Join(dir, "deployer.pid")
	u, err := NewUpgrader(UpgraderOptions{PIDFile: pidFile})
	if err != nil {
		return err
	}
	if u.HasParent() {
		return errors.New("HasParent in a first process")
	}
	if _, err := NewUpgrader(UpgraderOptions{}); err == nil {
		return errors.New("second NewUpgrader succeeded")
	}

	tcp, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if err := acceptsOne(tcp, "tcp", tcp.Addr().String()); err != nil {
		return err
	}

	// A socket file whose listener is gone, as a crashed daemon leaves it.
	stale := filepath.Join(dir, "stale.sock")
	if err := makeStale(stale); err != nil {
		return err
	}
	ln, err := u.Listen("unix", stale)
	if err != nil {
		return fmt.Errorf("Listen over a stale socket: %w", err)
	}
	if err := acceptsOne(ln, "unix", stale); err != nil {
		return err
	}

	// A live one: another daemon.
	live := filepath.Join(dir, "live.sock")
	other, err := net.Listen("unix", live)
	if err != nil {
		return err
	}
	defer other.Close()
	if _, err := u.Listen("unix", live); !errors.Is(err, ErrInUse) {
		return fmt.Errorf("Listen on a live socket: %v, want ErrInUse", err)
	}

	ctl := filepath.Join(dir, "ctl.sock")
	if _, err := u.ListenUnix(ctl, 0o600); err != nil {
		return err
	}
	if fi, err := os.Stat(ctl); err != nil {
		return err
	} else if perm := fi.Mode().Perm(); perm != 0o600 {
		return fmt.Errorf("control socket mode %v, want 0600", perm)
	}

	if err := u.Ready(); err != nil {
		return err
	}
	if err := checkPIDFile(pidFile, os.Getpid()); err != nil {
		return err
	}

	u.Stop()
	select {
	case <-u.Exit():
	case <-time.After(10 * time.Second):
		return errors.New("Exit not closed after Stop")
	}
	if err := u.Upgrade(); err == nil {
		return errors.New("Upgrade after Stop succeeded")
	}
	return nil
}

func TestUpgraderUpgrade(t *testing.T) {
	out := runDaemon(t, "upgrade", socketDir(t))
	t.Log(out)
	if !strings.Contains(out, "new process: ok") {
		t.Errorf("the new process did not finish cleanly:\n%s", out)
	}
}

// failEnv says how the new process of roleFailedUpgrade fails: "start" (it
// stops before Ready), "ready" (its Ready fails: no directory for the PID
// file).
const failEnv = "SOCKETS_TEST_FAIL"

// An upgrade whose new process fails leaves the old one serving on its
// socket's path: the new process's Stop must not unlink what it inherited.
// (It did, and the CLI then found no daemon while the old one served on.)
func TestUpgraderFailedUpgrade(t *testing.T) {
	for _, how := range []string{"start", "ready"} {
		t.Run(how, func(t *testing.T) {
			t.Setenv(failEnv, how)
			out := runDaemon(t, "failed-upgrade", socketDir(t))
			if !strings.Contains(out, "old process: serves on") {
				t.Errorf("after the failed upgrade:\n%s", out)
			}
		})
	}
}

// roleFailedUpgrade is the old daemon of an upgrade whose new process fails
// (see failEnv), and that new process.
func roleFailedUpgrade(dir string) error {
	sock := filepath.Join(dir, "public.sock")
	o := UpgraderOptions{UpgradeTimeout: 30 * time.Second}
	if os.Getenv(HasParentEnv) != "" && os.Getenv(failEnv) == "ready" {
		o.PIDFile = filepath.Join(dir, "missing", "deployer.pid")
	}
	u, err := NewUpgrader(o)
	if err != nil {
		return err
	}
	if u.HasParent() {
		// As the daemon does: listen, maybe Ready, and Stop on the way out.
		if _, err := u.Listen("unix", sock); err != nil {
			return err
		}
		if os.Getenv(failEnv) == "ready" {
			if err := u.Ready(); err == nil {
				return errors.New("Ready succeeded with no directory for the PID file")
			}
		}
		u.Stop()
		time.Sleep(200 * time.Millisecond) // what Stop does, it does by now
		return errors.New("the new process fails, as the test wants")
	}
	ln, err := u.Listen("unix", sock)
	if err != nil {
		return err
	}
	defer serveRole('P', ln)()
	if err := u.Ready(); err != nil {
		return err
	}
	if err := u.Upgrade(); err == nil {
		return errors.New("the upgrade to a failing process succeeded")
	}
	if b, err := readByte(sock); err != nil || b != 'P' {
		return fmt.Errorf("after the failed upgrade: %q, %v; want this process to answer on %s", b, err, sock)
	}
	fmt.Println("old process: serves on")
	return nil
}

// roleUpgrade is the old daemon of an upgrade when started by the test, and
// the new one when started by Upgrade. A client connects in a loop through
// the whole upgrade: no connect may fail, and in the end the new process
// answers.
func roleUpgrade(dir string) error {
	pidFile := filepath.Join(dir, "deployer.pid")
	sock := filepath.Join(dir, "public.sock")
	u, err := NewUpgrader(UpgraderOptions{PIDFile: pidFile, UpgradeTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	if u.HasParent() {
		return newProcess(u, sock, pidFile)
	}

	ln, err := u.Listen("unix", sock)
	if err != nil {
		return err
	}
	tcp, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	stopServing := serveRole('P', ln, tcp)
	if err := u.Ready(); err != nil {
		return err
	}

	var (
		mu         sync.Mutex
		fromOld    int
		fromNew    int
		clientErrs []error
	)
	stopClient := make(chan struct{})
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		for {
			select {
			case <-stopClient:
				return
			default:
			}
			b, err := readByte(sock)
			mu.Lock()
			if err != nil {
				clientErrs = append(clientErrs, err)
			} else if b == 'C' {
				fromNew++
			} else {
				fromOld++
			}
			mu.Unlock()
		}
	}()
	defer func() { close(stopClient); <-clientDone }()

	if err := u.Upgrade(); err != nil {
		return err
	}
	select {
	case <-u.Exit():
	default:
		return errors.New("Exit not closed after a successful Upgrade")
	}
	if err := u.Upgrade(); err == nil {
		return errors.New("a second Upgrade succeeded")
	}
	// What the daemon does after Exit: stop accepting. The listening socket
	// lives on in the new process.
	stopServing()

	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		old, n, errs := fromOld, fromNew, clientErrs
		mu.Unlock()
		if len(errs) > 0 {
			return fmt.Errorf("%d connects failed during the upgrade, first: %w", len(errs), errs[0])
		}
		if n >= 20 {
			fmt.Printf("old process: %d answers from the old process, %d from the new, no error\n", old, n)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d answers from the new process", n)
		}
		time.Sleep(time.Millisecond) // pacing the check, not synchronising
	}
	if b, err := readByteTCP(tcp.Addr().String()); err != nil || b != 'C' {
		return fmt.Errorf("tcp after upgrade: %q, %v; want the new process", b, err)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return err
	}
	if pid, _ := strconv.Atoi(string(data)); pid == os.Getpid() || pid <= 0 {
		return fmt.Errorf("PID file holds %q, want the new process's pid", data)
	}
	return nil
}

// newProcess is the new daemon of roleUpgrade: it takes over the listeners,
// serves until the old process has exited, and says so.
func newProcess(u *Upgrader, sock, pidFile string) error {
	ln, err := u.Listen("unix", sock)
	if err != nil {
		return err
	}
	tcp, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	stop := serveRole('C', ln, tcp)
	defer stop()
	if err := u.Ready(); err != nil {
		return err
	}
	if err := checkPIDFile(pidFile, os.Getpid()); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := u.WaitForParent(ctx); err != nil {
		return err
	}
	fmt.Println("new process: ok")
	return nil
}

// serveRole answers every connection on lns with b; the returned function
// closes the listeners and waits for the accept loops.
func serveRole(b byte, lns ...net.Listener) func() {
	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte{b})
				c.Close()
			}
		})
	}
	return func() {
		for _, ln := range lns {
			ln.Close()
		}
		wg.Wait()
	}
}

func readByteTCP(addr string) (byte, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	_, err = c.Read(b[:])
	return b[0], err
}

// acceptsOne checks that ln accepts a connection made to addr.
func acceptsOne(ln net.Listener, network, addr string) error {
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		return err
	}
	return s.Close()
}

func checkPIDFile(path string, want int) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if got, err := strconv.Atoi(string(data)); err != nil || got != want {
		return fmt.Errorf("PID file holds %q, want %d", data, want)
	}
	return nil
}

// makeStale leaves a socket file at path with no listener behind it.
func makeStale(path string) error {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	ln.SetUnlinkOnClose(false)
	return ln.Close()
}

func TestRemoveStale(t *testing.T) {
	dir := socketDir(t)

	stale := filepath.Join(dir, "stale.sock")
	if err := makeStale(stale); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dir, "live.sock")
	listenUnix(t, live)
	full := filepath.Join(dir, "full.sock")
	fillBacklog(t, full)
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, path string
		want       error
		remains    bool
	}{
		{"missing", filepath.Join(dir, "missing.sock"), nil, false},
		{"stale", stale, nil, false},
		{"live", live, ErrInUse, true},
		{"full backlog", full, ErrInUse, true},
		{"regular file", regular, ErrNotSocket, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := removeStale(tt.path)
			if !isErr(err, tt.want) {
				t.Fatalf("removeStale: %v, want %v", err, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), tt.path) {
				t.Errorf("error %q does not name the path", err)
			}
			_, statErr := os.Lstat(tt.path)
			if remains := statErr == nil; remains != tt.remains {
				t.Errorf("path remains: %v, want %v", remains, tt.remains)
			}
		})
	}
}

// fillBacklog binds a listener at path with a backlog of one connection and
// fills it, so that further connects fail with EAGAIN.
func fillBacklog(t *testing.T, path string) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	for {
		c, err := net.Dial("unix", path)
		if errors.Is(err, syscall.EAGAIN) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
}
