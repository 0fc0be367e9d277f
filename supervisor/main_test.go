package supervisor

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// appRoleEnv makes the test binary play an app process (see runApp) instead
// of running the tests, as tableflip's tests re-execute themselves.
const appRoleEnv = "SUPERVISOR_TEST_APP"

// Settings of the fake app, read from its environment.
const (
	appHealthEnv    = "SUPERVISOR_TEST_HEALTH"        // status of GET /healthz; default 200
	appWaitUSR1Env  = "SUPERVISOR_TEST_WAIT_USR1"     // "1": bind only after SIGUSR1
	appExitCheckEnv = "SUPERVISOR_TEST_EXIT_ON_CHECK" // n: exit 3 on the nth health check, unanswered
	appHangCheckEnv = "SUPERVISOR_TEST_HANG_ON_CHECK" // n: leave the nth and later health checks unanswered
)

// slowPath is a path the fake app answers after slowFor, having printed
// "slow request" when it got it.
const (
	slowPath = "/slow"
	slowFor  = 500 * time.Millisecond
)

// standInRoleEnv makes the test binary stop and kill a stand-in process
// (see TestStopStandIn), in a process group of its own.
const standInRoleEnv = "SUPERVISOR_TEST_STOP_STAND_IN"

func TestMain(m *testing.M) {
	if os.Getenv(appRoleEnv) != "" {
		os.Exit(runApp())
	}
	if os.Getenv(standInRoleEnv) != "" {
		os.Exit(stopStandIn())
	}
	os.Exit(m.Run())
}

// stopStandIn stops and kills the stand-in of a process that did not
// survive a takeover, catching the signal it would send, and says whether
// that signal reached this process.
func stopStandIn() int {
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	p := exitedProcess(launchSpec{App: "web", Version: "v0"})
	p.stop(syscall.SIGUSR2, 2*time.Second)
	p.kill()
	select {
	case <-usr2:
		fmt.Println("signalled")
	case <-time.After(500 * time.Millisecond):
		fmt.Println("not signalled")
	}
	return 0
}

// runApp is a tiny app: an HTTP server on $DEPLOYER_SOCKET answering
// /healthz. It prints "waiting" before it waits for SIGUSR1 and "listening"
// once it accepts, so tests can wait for those lines in a LogBuffer.
func runApp() int {
	path := os.Getenv("DEPLOYER_SOCKET")
	if path == "" {
		fmt.Fprintln(os.Stderr, "no DEPLOYER_SOCKET")
		return 2
	}
	status := http.StatusOK
	if s := os.Getenv(appHealthEnv); s != "" {
		status, _ = strconv.Atoi(s)
	}
	exitOn, _ := strconv.Atoi(os.Getenv(appExitCheckEnv))
	hangOn, _ := strconv.Atoi(os.Getenv(appHangCheckEnv))
	if os.Getenv(appWaitUSR1Env) == "1" {
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		fmt.Println("waiting")
		<-usr1
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Only the supervisor unlinks socket paths (PITFALLS).
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	var checks atomic.Int64
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		n := checks.Add(1)
		if exitOn > 0 && n >= int64(exitOn) {
			os.Exit(3)
		}
		if hangOn > 0 && n >= int64(hangOn) {
			<-r.Context().Done()
			return
		}
		w.WriteHeader(status)
	})
	http.HandleFunc(slowPath, func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("slow request")
		time.Sleep(slowFor)
		fmt.Fprintln(w, "slow answer from", os.Getenv("DEPLOYER_VERSION"))
	})
	fmt.Println("listening")
	err = http.Serve(l, nil)
	fmt.Fprintln(os.Stderr, err)
	return 1
}

// socketDir returns a fresh directory for unix sockets, short enough for
// sun_path (t.TempDir() paths grow with the test name).
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startTest starts spec and kills its process group at cleanup if it is
// still running.
func startTest(t *testing.T, spec launchSpec, logs *LogBuffer) *process {
	t.Helper()
	if spec.Version == "" {
		spec.Version = "v1"
	}
	p, err := startProcess(spec, logs)
	if err != nil {
		t.Fatalf("startProcess: %v", err)
	}
	t.Cleanup(func() {
		if !p.exited() {
			p.kill()
		}
	})
	return p
}

// startShell runs script with /bin/sh in its own process group.
func startShell(t *testing.T, script string, logs *LogBuffer) *process {
	t.Helper()
	return startTest(t, launchSpec{App: "web", Command: []string{"/bin/sh", "-c", script}, Env: os.Environ()}, logs)
}

// startApp re-executes the test binary as the fake app (runApp) on a fresh
// socket, with the given extra environment, and returns it with its endpoint.
func startApp(t *testing.T, logs *LogBuffer, extra map[string]string) (*process, endpoint) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sock := socketDir(t) + "/app.sock"
	env := map[string]string{appRoleEnv: "1"}
	for k, v := range extra {
		env[k] = v
	}
	vars := Vars{App: "web", Version: "v1", Socket: sock}
	p := startTest(t, launchSpec{
		App: "web", Version: "v1", Socket: sock,
		Command: []string{exe, "-test.run=^$"},
		Env:     appEnv(os.Environ(), nil, env, vars, false),
	}, logs)
	return p, endpoint{network: "unix", addr: sock}
}

// eventually fails the test unless cond holds within five seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// waitLine waits until logs holds a line with text want and returns it.
func waitLine(t *testing.T, logs *LogBuffer, want string) LogLine {
	t.Helper()
	var found LogLine
	eventually(t, fmt.Sprintf("output line %q", want), func() bool {
		lines := logs.Tail(DefaultLogLines, func(l LogLine) bool { return l.Text == want })
		if len(lines) == 0 {
			return false
		}
		found = lines[0]
		return true
	})
	return found
}

// waitDone waits until p has exited.
func waitDone(t *testing.T, p *process) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("pid %d still running after 10s", p.pid)
	}
}
