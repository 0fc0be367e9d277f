package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/coder/websocket"
)

// binDir holds the hello binary built once for the tests that run it.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hello-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var buildOnce = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(binDir, "hello")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// helloBinary returns the path of the real hello binary.
func helloBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// lines collects what run prints and hands each complete line to a test
// waiting for it.
type lines struct {
	mu   sync.Mutex
	all  strings.Builder
	part string
	ch   chan string
}

func newLines() *lines { return &lines{ch: make(chan string, 1024)} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	l.part += string(p)
	for {
		i := strings.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		select {
		case l.ch <- l.part[:i]:
		default: // nobody is waiting for that many lines; all keeps them
		}
		l.part = l.part[i+1:]
	}
	return len(p), nil
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

// waitFor returns the first line starting with prefix.
func (l *lines) waitFor(t *testing.T, ctx context.Context, prefix string) string {
	t.Helper()
	for {
		select {
		case line := <-l.ch:
			if strings.HasPrefix(line, prefix) {
				return line
			}
		case <-ctx.Done():
			t.Fatalf("no line starting with %q; output so far:\n%s", prefix, l.String())
		}
	}
}

// startRun runs the program in-process with args and env and returns its
// output and a channel with its exit status.
func startRun(ctx context.Context, args []string, env map[string]string) (stdout, stderr *lines, exit <-chan int) {
	stdout, stderr = newLines(), newLines()
	c := make(chan int, 1)
	go func() { c <- run(ctx, args, func(k string) string { return env[k] }, stdout, stderr) }()
	return stdout, stderr, c
}

func TestRunUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "nowhere to listen"},
		{[]string{"-no-such-flag"}, "flag provided but not defined"},
		{[]string{"-addr", "127.0.0.1:0", "extra"}, "unexpected argument"},
		{[]string{"-addr", "127.0.0.1:0", "-crash-after", "-1s"}, "must not be negative"},
	}
	for _, tt := range tests {
		_, stderr, exit := startRun(context.Background(), tt.args, nil)
		if code := <-exit; code != 2 {
			t.Errorf("%q: exit %d, want 2", tt.args, code)
		}
		if !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%q: stderr %q, want it to contain %q", tt.args, stderr.String(), tt.want)
		}
	}
}

// TestRunGracefulShutdown checks the order of a stop: in-flight requests run
// to their end, then websockets are closed with "going away", and the socket
// file is left for the supervisor to remove.
func TestRunGracefulShutdown(t *testing.T) {
	ctx, timeout := context.WithTimeout(context.Background(), testTimeout)
	defer timeout()
	path := filepath.Join(shortTempDir(t), "h.sock")
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	// The socket comes from the environment, as deployer passes it.
	stdout, _, exit := startRun(runCtx, nil, map[string]string{
		"DEPLOYER_SOCKET":  path,
		"DEPLOYER_VERSION": "v7",
	})
	if got, want := stdout.waitFor(t, ctx, "hello "), "hello v7 listening on "+path; got != want {
		t.Fatalf("first line %q, want %q", got, want)
	}
	client := unixClient(t, path)

	ws, _, err := websocket.Dial(ctx, "ws://hello/ws", &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	// The greeting is sent after the server tracks the connection, so once
	// it is here shutdown is bound to close this websocket.
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "version v7" {
		t.Fatalf("first websocket message %q, %v", msg, err)
	}

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://hello/sse?n=2&interval=200ms", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if first, err := br.ReadString('\n'); err != nil || first != "data: v7 1\n" {
		t.Fatalf("first event %q, %v", first, err)
	}

	stop() // as SIGTERM does

	rest, err := io.ReadAll(br)
	if err != nil {
		t.Errorf("in-flight stream cut by shutdown: %v", err)
	}
	if want := "\ndata: v7 2\n\n"; string(rest) != want {
		t.Errorf("rest of stream %q, want %q", rest, want)
	}

	_, _, err = ws.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Errorf("websocket ended with %v (status %v), want status %v", err, got, websocket.StatusGoingAway)
	}

	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("exit %d, want 0", code)
		}
	case <-ctx.Done():
		t.Fatal("run did not return after stop")
	}
	if out := stdout.String(); !strings.HasSuffix(out, "hello v7 stopped\n") {
		t.Errorf("stdout %q, want it to end with the stopped line", out)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("socket file removed by the app: %v", err)
	}
}

// TestRunTCP checks the fallback to 127.0.0.1:$PORT and the tick lines.
func TestRunTCP(t *testing.T) {
	ctx, timeout := context.WithTimeout(context.Background(), testTimeout)
	defer timeout()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	stdout, _, exit := startRun(runCtx, []string{"-version", "v4", "-log-every", "1ms"}, map[string]string{
		"PORT":              "0",
		"DEPLOYER_INSTANCE": "1",
		"GREETING":          "hi",
	})
	addr := strings.TrimPrefix(stdout.waitFor(t, ctx, "hello "), "hello v4 listening on ")
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("listening on %q, want 127.0.0.1:PORT", addr)
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("hi\nhello from v4 (pid %d, instance 1)\n", os.Getpid()); string(body) != want {
		t.Errorf("GET / = %q, want %q", body, want)
	}
	stdout.waitFor(t, ctx, "tick 2 v4")

	stop()
	if code := <-exit; code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	// No tick may follow the stopped line.
	if out := stdout.String(); !strings.HasSuffix(out, "\nhello v4 stopped\n") {
		t.Errorf("stdout does not end with the stopped line:\n%s", out)
	}
}

// TestBinarySIGTERM runs the real binary the way deployer does and stops it
// with SIGTERM.
func TestBinarySIGTERM(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	path := filepath.Join(shortTempDir(t), "h.sock")
	cmd := exec.CommandContext(ctx, helloBinary(t), "-socket", path, "-version", "v2")
	cmd.Env = append(os.Environ(), "DEPLOYER_INSTANCE=1", "GREETING=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		cmd.Wait()
		t.Fatalf("no output; stderr:\n%s", stderr.String())
	}
	if got, want := sc.Text(), "hello v2 listening on "+path; got != want {
		t.Errorf("first line %q, want %q", got, want)
	}

	resp, err := unixClient(t, path).Get("http://hello/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("hello from v2 (pid %d, instance 1)\n", cmd.Process.Pid); string(body) != want {
		t.Errorf("GET / = %q, want %q", body, want)
	}
	if got := resp.Header.Get("X-Pid"); got != fmt.Sprint(cmd.Process.Pid) {
		t.Errorf("X-Pid %q, want %d", got, cmd.Process.Pid)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v; stderr:\n%s", err, stderr.String())
	}
	if want := "hello v2 stopped"; last != want {
		t.Errorf("last line %q, want %q", last, want)
	}
}

func TestBinaryFailures(t *testing.T) {
	tests := []struct {
		flags      []string
		wantExit   int
		wantStderr string
		wantSocket bool
	}{
		{[]string{"-fail-at-boot"}, 1, "hello: failing at boot on purpose\n", false},
		{[]string{"-crash-after", "1ms"}, 3, "crashing on purpose", true},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		path := filepath.Join(shortTempDir(t), "h.sock")
		cmd := exec.CommandContext(ctx, helloBinary(t), append([]string{"-socket", path}, tt.flags...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()

		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.ExitCode() != tt.wantExit {
			t.Errorf("%q: got %v, want exit status %d", tt.flags, err, tt.wantExit)
		}
		if !strings.Contains(stderr.String(), tt.wantStderr) {
			t.Errorf("%q: stderr %q, want it to contain %q", tt.flags, stderr.String(), tt.wantStderr)
		}
		if _, err := os.Lstat(path); (err == nil) != tt.wantSocket {
			t.Errorf("%q: socket exists = %v, want %v", tt.flags, err == nil, tt.wantSocket)
		}
	}
}
