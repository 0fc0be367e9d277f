package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testlog"
)

func TestControlAccessCheck(t *testing.T) {
	a := controlAccess{self: 1000, uids: []uint32{1001}, gids: []uint32{2001}}
	tests := []struct {
		name string
		peer peerCred
		ok   bool
	}{
		{"root", peerCred{UID: 0, GID: 0}, true},
		{"the daemon's own uid", peerCred{UID: 1000, GID: 1000}, true},
		{"listed uid", peerCred{UID: 1001, GID: 1001}, true},
		{"listed primary group", peerCred{UID: 1002, GID: 2001}, true},
		{"listed supplementary group", peerCred{UID: 1002, GID: 1002, Groups: []uint32{3000, 2001}}, true},
		{"another uid", peerCred{UID: 1002, GID: 1002}, false},
		{"another uid, unlisted groups", peerCred{UID: 1002, GID: 1002, Groups: []uint32{1000, 3000}}, false},
		// A group of the daemon's user is not the daemon's user.
		{"the daemon's gid only", peerCred{UID: 65534, GID: 1000}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.check(tt.peer)
			if (err == nil) != tt.ok {
				t.Fatalf("check(%+v): got %v, want allowed=%v", tt.peer, err, tt.ok)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, errPermissionDenied) {
				t.Errorf("got %v, want errPermissionDenied", err)
			}
			want := fmt.Sprintf("permission denied: uid %d is not allowed to control this daemon; add it to [deployer] control_users", tt.peer.UID)
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("got %q, want it to start with %q", err, want)
			}
		})
	}
	// Without an allow-list: root and the daemon's user only.
	if err := (controlAccess{self: 1000}).check(peerCred{UID: 1001, GID: 0}); err == nil {
		t.Error("empty allow-list: uid 1001 with gid 0 allowed, want refused")
	}
}

// TestReadPeerCred checks the credentials of a real connection: this
// process's own.
func TestReadPeerCred(t *testing.T) {
	path := filepath.Join(socketDir(t), "c.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := readPeerCred(s)
	if err != nil {
		t.Fatal(err)
	}
	if p.UID != uint32(os.Geteuid()) || p.GID != uint32(os.Getegid()) || p.PID != int32(os.Getpid()) {
		t.Errorf("got uid %d gid %d pid %d, want %d %d %d", p.UID, p.GID, p.PID, os.Geteuid(), os.Getegid(), os.Getpid())
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	var want []uint32
	for _, g := range groups {
		want = append(want, uint32(g))
	}
	got := slices.Clone(p.Groups)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("groups: got %v, want %v", got, want)
	}
	if _, err := readPeerCred(fakeConn{}); err == nil {
		t.Error("readPeerCred of a conn without an fd: got no error")
	}
}

type fakeConn struct{ net.Conn }

// serveControl serves a 200 behind a controlListener that admits what
// allow admits, and returns an HTTP client for it and the log.
func serveControl(t *testing.T, allow func(peerCred) error) (*http.Client, *testlog.Buffer) {
	t.Helper()
	c, logs, _ := serveControlWith(t, allow, func(*controlListener) {})
	return c, logs
}

// serveControlWith is serveControl with the listener set up by configure
// before it serves; it also returns the socket's path.
func serveControlWith(t *testing.T, allow func(peerCred) error, configure func(*controlListener)) (*http.Client, *testlog.Buffer, string) {
	t.Helper()
	path := filepath.Join(socketDir(t), "deployer.sock")
	inner, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	l := &controlListener{Listener: inner, allow: allow, log: slog.New(slog.NewTextHandler(logs, nil))}
	configure(l)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		writeJSON(w, http.StatusOK, struct{}{})
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	t.Cleanup(c.CloseIdleConnections)
	return c, logs, path
}

// getStatus calls GET /v1/status through c and returns the status code.
func getStatus(t *testing.T, c *http.Client) int {
	t.Helper()
	res, err := c.Get("http://deployer/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// refuseAll refuses every caller as it would uid 4242 of a daemon run by
// someone else.
func refuseAll(p peerCred) error {
	return controlAccess{self: p.UID + 1}.check(peerCred{UID: 4242, GID: 4343})
}

func TestControlListenerRefuses(t *testing.T) {
	c, logs := serveControl(t, refuseAll)
	// A swap with a body bigger than a socket buffer: the answer must
	// still arrive whole, not as a reset.
	body := `{"version":"v2","pad":"` + strings.Repeat("x", 300<<10) + `"}`
	res, err := c.Post("http://deployer/v1/apps/web/swap", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("status: got %d, want 403", res.StatusCode)
	}
	var got APIError
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := "permission denied: uid 4242 is not allowed to control this daemon; add it to [deployer] control_users"
	if got.Code != "permission_denied" || !strings.HasPrefix(got.Error, want) {
		t.Errorf("got %+v, want code permission_denied and %q", got, want)
	}
	// refuse logs before it answers.
	line := logs.String()
	for _, w := range []string{"level=WARN", `msg="control connection refused"`, fmt.Sprintf("pid=%d", os.Getpid()), "method=POST", "path=/v1/apps/web/swap"} {
		if !strings.Contains(line, w) {
			t.Errorf("log %q lacks %q", line, w)
		}
	}
	if n := strings.Count(line, "\n"); n != 1 {
		t.Errorf("got %d log lines, want 1:\n%s", n, line)
	}
}

// A loop of refused calls logs the first few one by one, then one line
// with the count when the window ends, then one by one again.
func TestControlListenerRefusalLogBounded(t *testing.T) {
	const window = time.Second
	c, logs, _ := serveControlWith(t, refuseAll, func(l *controlListener) { l.refusals.burst, l.refusals.window = 3, window })
	call := func() {
		t.Helper()
		if code := getStatus(t, c); code != http.StatusForbidden {
			t.Fatalf("status %d, want 403", code)
		}
	}
	count := func(msg string) int { return strings.Count(logs.String(), `msg="`+msg+`"`) }
	start := time.Now()
	for range 12 {
		call()
	}
	if time.Since(start) > window {
		t.Skipf("12 refused calls took %s, longer than the %s window: too slow a machine to tell", time.Since(start), window)
	}
	// refuse logs before it answers, so the lines are there.
	if got := count("control connection refused"); got != 3 {
		t.Fatalf("%d lines one by one, want 3:\n%s", got, logs)
	}
	waitUntil(t, "the count to be logged", 5*time.Second, func() bool {
		return count("control connections refused, not logged one by one") == 1
	})
	if !strings.Contains(logs.String(), "count=9 within=1s") {
		t.Errorf("the count line does not say count=9 within=1s:\n%s", logs)
	}
	call()
	if got := count("control connection refused"); got != 4 {
		t.Errorf("after the window: %d lines one by one, want 4:\n%s", got, logs)
	}
}

// Refused connections are answered a bounded number at a time: with both
// slots taken by callers who send nothing, the next is closed unanswered
// and logged; once the slots are free, refusals are answered again.
func TestControlListenerRefusalsBounded(t *testing.T) {
	c, logs, path := serveControlWith(t, refuseAll, func(l *controlListener) { l.maxAnswering = 2 })
	var silent []net.Conn
	for range 2 {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		silent = append(silent, conn)
	}
	// The listener accepts in order: once a third connection is closed,
	// the two silent ones hold both slots.
	third, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	third.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := third.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("third connection: read %d bytes, %v; want it closed unanswered (EOF)", n, err)
	}
	if !strings.Contains(logs.String(), "answered=false") {
		t.Errorf("the unanswered refusal was not logged:\n%s", logs)
	}
	for _, conn := range silent {
		conn.Close()
	}
	waitUntil(t, "a refused call answered 403 again", 5*time.Second, func() bool {
		res, err := c.Get("http://deployer/v1/status")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusForbidden
	})
}

func TestControlListenerAdmits(t *testing.T) {
	c, logs := serveControl(t, func(p peerCred) error { return accessOf(&Config{}).check(p) })
	for range 2 {
		if code := getStatus(t, c); code != http.StatusOK {
			t.Fatalf("status: got %d, want 200 (the daemon's own user)", code)
		}
	}
	if logs.String() != "" {
		t.Errorf("admitted connection logged: %s", logs)
	}
}

// TestListenControlPerm checks the control socket's mode and group for each
// kind of allow-list, and that a daemon taking over an existing socket (an
// upgrade) sets them again.
func TestListenControlPerm(t *testing.T) {
	tests := []struct {
		name  string
		keys  string
		mode  fs.FileMode
		group int // -1: not checked
	}{
		{"no allow-list", "", 0o600, -1},
		{"users", `control_users = ["12345"]`, 0o666, -1},
		{"one group", `control_groups = ["12346"]`, 0o660, 12346},
		{"two groups", `control_groups = ["12346", "12347"]`, 0o666, -1},
		{"users and a group", `control_users = ["12345"]` + "\n" + `control_groups = ["12346"]`, 0o666, -1},
	}
	if os.Geteuid() != 0 {
		tests[2].mode, tests[2].group = 0o666, -1 // only root may give any group
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stateDir := socketDir(t)
			cfg := loadString(t, fmt.Sprintf("[deployer]\nstate_dir = %q\n%s\n[apps.web]\ncommand = [\"/bin/false\"]\nversion = \"v1\"\n", stateDir, tt.keys))
			d, err := NewDaemon(cfg, DaemonOptions{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			l, err := d.listenControl()
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			checkSocketPerm(t, d.layout.ControlSocket(), tt.mode, tt.group)

			// Taken over with another allow-list, as by an upgrade.
			if _, err := setControlSocketPerm(d.layout.ControlSocket(), PublicConfig{}); err != nil {
				t.Fatal(err)
			}
			checkSocketPerm(t, d.layout.ControlSocket(), 0o600, -1)
		})
	}
}

func checkSocketPerm(t *testing.T, path string, mode fs.FileMode, group int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != mode {
		t.Errorf("%s: got mode %v, want socket %v", path, fi.Mode(), mode)
	}
	if gid := fi.Sys().(*syscall.Stat_t).Gid; group >= 0 && gid != uint32(group) {
		t.Errorf("%s: got group %d, want %d", path, gid, group)
	}
}

func TestSetControlSocketPermRefusesNonSocket(t *testing.T) {
	dir := socketDir(t)
	target := filepath.Join(dir, "secret")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "deployer.sock")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := setControlSocketPerm(link, PublicConfig{ControlUIDs: []uint32{1}}); err == nil {
		t.Error("got no error for a symlink, want one")
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
		t.Errorf("the link's target became %v", fi.Mode())
	}
}

func TestCheckStateDir(t *testing.T) {
	tests := []struct {
		mode  fs.FileMode
		owner int // -1: this process's
		ok    bool
	}{
		{0o755, -1, true},
		{0o700, -1, true},
		{0o750, -1, true},
		{0o775, -1, false},
		{0o757, -1, false},
		{0o777 | fs.ModeSticky, -1, false},
		{0o755, 12345, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v owner %d", tt.mode, tt.owner), func(t *testing.T) {
			dir := socketDir(t)
			if err := os.Chmod(dir, tt.mode); err != nil {
				t.Fatal(err)
			}
			if tt.owner >= 0 {
				if os.Geteuid() != 0 {
					t.Skip("chown needs root")
				}
				if err := os.Chown(dir, tt.owner, -1); err != nil {
					t.Fatal(err)
				}
			}
			err := checkStateDir(dir)
			if (err == nil) != tt.ok {
				t.Errorf("got %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestValidVersionPathTricks: a version becomes part of a file name
// (sockets.Layout.Unique, the output log), so it must be one harmless path
// element.
func TestValidVersionPathTricks(t *testing.T) {
	for _, v := range []string{
		"", ".", "..", "../x", "../../etc/passwd", "a/b", "/abs", "v1/", "a\\b",
		"v1\x00", "\x00", "-rf", "--help", ".hidden", "_x", "+x",
		"v1\n", "v\t1", "v\x7f", "v 1", "v1;rm", "v1$x", "é",
		strings.Repeat("a", 65),
	} {
		if err := ValidVersion(v); err == nil || !errors.Is(err, ErrInvalidVersion) {
			t.Errorf("ValidVersion(%q): got %v, want ErrInvalidVersion", v, err)
		}
	}
	for _, v := range []string{"v1", "1", "v1.2.3", "1.2.3+build.4", "2025-01-02_abc", "v..1", strings.Repeat("a", 64)} {
		if err := ValidVersion(v); err != nil {
			t.Errorf("ValidVersion(%q): %v", v, err)
		}
	}
}

func TestControlRequestValidation(t *testing.T) {
	d := newTestDaemon(t)
	tests := []struct {
		name, method, target, body string
		status                     int
		code                       string
	}{
		{"app name dot dot, escaped", "POST", "/v1/apps/%2E%2E/pause", "", 400, "bad_request"},
		{"app name dot", "POST", "/v1/apps/%2E/pause", "", 400, "bad_request"},
		{"app name escaped slash", "POST", "/v1/apps/a%2F..%2Fb/pause", "", 400, "bad_request"},
		{"app name upper case", "GET", "/v1/apps/WEB/logs", "", 400, "bad_request"},
		{"app name too long", "GET", "/v1/status?app=" + strings.Repeat("a", 33), "", 400, "bad_request"},
		{"status app with a slash", "GET", "/v1/status?app=web/../x", "", 400, "bad_request"},
		{"version with a dot dot", "POST", "/v1/apps/web/swap", `{"version":"../x"}`, 400, "bad_request"},
		{"version with a slash", "POST", "/v1/apps/web/start", `{"version":"a/b"}`, 400, "bad_request"},
		{"version dot", "POST", "/v1/apps/web/swap", `{"version":"."}`, 400, "bad_request"},
		{"version NUL", "POST", "/v1/apps/web/swap", `{"version":"v\u0000"}`, 400, "bad_request"},
		{"version leading dash", "POST", "/v1/apps/web/swap", `{"version":"-v"}`, 400, "bad_request"},
		{"unknown field", "POST", "/v1/apps/web/swap", `{"version":"v2","wait_drian":true}`, 400, "bad_request"},
		{"two values", "POST", "/v1/apps/web/swap", `{"version":"v2"}{"version":"../x"}`, 400, "bad_request"},
		{"trailing garbage", "POST", "/v1/apps/web/swap", `{"version":"v2"} x`, 400, "bad_request"},
		{"array body", "POST", "/v1/apps/web/swap", `[]`, 400, "bad_request"},
		{"body too large", "POST", "/v1/apps/web/swap", `{"version":"v2","timeout":"` + strings.Repeat("1", 70<<10) + `"}`, 413, "too_large"},
		{"status by POST", "POST", "/v1/status", "", 405, "method_not_allowed"},
		{"shutdown by GET", "GET", "/v1/shutdown", "", 405, "method_not_allowed"},
		{"logs by DELETE", "DELETE", "/v1/apps/web/logs", "", 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(t, d, tt.method, tt.target, tt.body)
			var got APIError
			decode(t, w, tt.status, &got)
			if got.Code != tt.code || got.Error == "" {
				t.Errorf("got %+v, want code %q and a message", got, tt.code)
			}
			if tt.status == 405 && w.Header().Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
	// A body with only whitespace is no body; pause takes none.
	var st AppStatus
	decode(t, do(t, d, "POST", "/v1/apps/web/pause", " \n"), http.StatusOK, &st)
}
