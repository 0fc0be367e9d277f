package main

// End-to-end tests of who may use the control socket: the real daemon runs
// as root, the real CLI as other users (SysProcAttr.Credential, as
// `setpriv --reuid --regid --clear-groups` would).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/sockets"
	"github.com/deployer/deployer/supervisor"
)

const (
	nobody  = 65534 // uid and gid of nobody/nogroup
	another = 12345 // a uid and gid nobody on the machine has
)

// needRoot skips t unless it runs as root, and opens the way to the binaries
// and to e's directory for other users: os.MkdirTemp makes them 0700.
func needRoot(t *testing.T, e *env) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running the CLI as another uid needs root")
	}
	for _, dir := range []string{filepath.Dir(deployerBin), e.dir} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// authConfig writes deploy.toml: app web at v1, with keys in [deployer].
func (e *env) authConfig(keys string) {
	e.t.Helper()
	e.release("v1")
	e.release("v2")
	e.writeConfig(`[deployer]
listen = "%ADDR%"
state_dir = "run"
drain_timeout = "2s"
` + keys + `

[apps.web]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
settle = "100ms"
ready_timeout = "10s"
stop_timeout = "5s"
`)
}

// cliAs runs the deployer CLI as uid with primary group gid and exactly the
// supplementary groups given.
func (e *env) cliAs(uid, gid uint32, groups []uint32, args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	cmd := exec.Command(deployerBin, append([]string{"-c", e.config}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: append([]uint32{}, groups...)}}
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/"}
	var o, s bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &s
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running deployer %v as uid %d: %v", args, uid, err)
	}
	return o.String(), s.String(), code
}

// mustCLIAs is cliAs that fails the test unless the CLI exits 0.
func (e *env) mustCLIAs(uid, gid uint32, groups []uint32, args ...string) string {
	e.t.Helper()
	out, errOut, code := e.cliAs(uid, gid, groups, args...)
	if code != 0 {
		e.t.Fatalf("deployer %v as uid %d: exit %d\nstdout:\n%s\nstderr:\n%s", args, uid, code, out, errOut)
	}
	return out
}

func (e *env) controlSocket() string {
	return sockets.Layout{StateDir: filepath.Join(e.dir, "run")}.ControlSocket()
}

// checkPerm checks the mode and owner of path.
func checkPerm(t *testing.T, path string, typ, mode fs.FileMode, uid, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Type() != typ || fi.Mode().Perm() != mode || st.Uid != uid || st.Gid != gid {
		t.Errorf("%s: got %v owned by %d:%d, want %v%v owned by %d:%d", path, fi.Mode(), st.Uid, st.Gid, typ, mode, uid, gid)
	}
}

// wantRefused runs args as uid nobody and checks the refusal: exit 1 and msg
// on stderr.
func (e *env) wantRefused(msg string, args ...string) {
	e.t.Helper()
	out, errOut, code := e.cliAs(nobody, nobody, nil, args...)
	if code != exitFailed || !strings.Contains(errOut, msg) {
		e.t.Errorf("deployer %v as nobody: got exit %d, stderr %q, stdout %q; want exit %d and %q", args, code, errOut, out, exitFailed, msg)
	}
}

// TestE2EControlAuthDefault: without an allow-list the socket is 0600 and
// root's, so the kernel refuses everyone else's connect.
func TestE2EControlAuthDefault(t *testing.T) {
	e := newEnv(t)
	needRoot(t, e)
	e.authConfig("")
	e.start()

	checkPerm(t, e.controlSocket(), fs.ModeSocket, 0o600, 0, 0)
	checkPerm(t, filepath.Dir(e.controlSocket()), fs.ModeDir, 0o755, 0, 0)
	e.wantRefused("permission denied: cannot connect to "+e.controlSocket(), "status")
	e.wantRefused("permission denied: cannot connect to", "swap", "web", "v2")
	if got := e.appStatus("web").Version; got != "v1" {
		t.Errorf("web serves %q, want v1", got)
	}
}

// TestE2EControlAuthRefused: with an allow-list that does not name the
// caller, its connect succeeds (0666) and the daemon refuses it with 403 and
// a Warn line.
func TestE2EControlAuthRefused(t *testing.T) {
	e := newEnv(t)
	needRoot(t, e)
	e.authConfig(fmt.Sprintf("control_users = [%q]", fmt.Sprint(another)))
	e.start()

	checkPerm(t, e.controlSocket(), fs.ModeSocket, 0o666, 0, 0)
	const msg = "permission denied: uid 65534 is not allowed to control this daemon; add it to [deployer] control_users"
	e.wantRefused(msg, "status")
	e.wantRefused(msg, "swap", "web", "v2")
	e.wantRefused(msg, "pause", "web")
	for _, path := range []string{"/v1/status", "/v1/apps/web/swap", "/v1/apps/web/pause"} {
		want := fmt.Sprintf(`msg="control connection refused" uid=65534 gid=65534 pid=`)
		waitFor(t, "the daemon to log the refusal of "+path, 5*time.Second, func() bool {
			for _, l := range strings.Split(e.logs.String(), "\n") {
				if strings.Contains(l, "level=WARN") && strings.Contains(l, want) && strings.Contains(l, "path="+path) {
					return true
				}
			}
			return false
		})
	}
	st := e.appStatus("web")
	if st.Version != "v1" || st.State != supervisor.StateServing {
		t.Errorf("web: got %s %s, want v1 serving: nothing refused may take effect", st.Version, st.State)
	}
	// The listed uid is let in.
	e.mustCLIAs(another, another, nil, "status")
}

// TestE2EControlAuthUser: a uid in control_users controls the daemon, an
// upgrade keeps it so, and versions that are path tricks are refused.
func TestE2EControlAuthUser(t *testing.T) {
	u := newUpgradeEnv(t)
	needRoot(t, u.env)
	u.configure("2s", "")
	b, err := os.ReadFile(u.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(u.config, bytes.Replace(b, []byte("[deployer]\n"), []byte("[deployer]\ncontrol_users = [\"65534\"]\n"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	u.startDaemon()

	checkPerm(t, u.controlSocket(), fs.ModeSocket, 0o666, 0, 0)
	u.mustCLIAs(nobody, nobody, nil, "status")
	u.mustCLIAs(nobody, nobody, nil, "swap", "web", "v2")
	if got := u.appStatus("web").Version; got != "v2" {
		t.Errorf("after a swap by nobody web serves %q, want v2", got)
	}

	// Path tricks: the CLI refuses them itself (exit 2), the API with 400.
	for _, v := range []string{"../v1", "a/b", "..", "-v"} {
		if out, errOut, code := u.cli("swap", "web", v); code != exitUsage {
			t.Errorf("swap web %q: got exit %d (%s%s), want %d", v, code, out, errOut, exitUsage)
		}
	}
	for _, tt := range []struct {
		path, body string
		status     int
	}{
		{"/v1/apps/web/swap", `{"version":"../../../tmp/x"}`, http.StatusBadRequest},
		{"/v1/apps/web/swap", `{"version":"a/b"}`, http.StatusBadRequest},
		{"/v1/apps/web/swap", `{"version":"v2","wait_drian":true}`, http.StatusBadRequest},
		{"/v1/apps/%2E%2E/swap", `{"version":"v2"}`, http.StatusBadRequest},
		{"/v1/apps/web/swap", `{"version":"` + strings.Repeat("v", 70<<10) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		status, apiErr := postControl(t, u.controlSocket(), tt.path, tt.body)
		if status != tt.status || apiErr.Error == "" {
			t.Errorf("POST %s %.40s: got %d %+v, want %d with an error", tt.path, tt.body, status, apiErr, tt.status)
		}
	}
	if _, err := os.Stat(filepath.Join(u.dir, "x")); err == nil {
		t.Error("a file appeared outside state_dir")
	}

	// The new daemon of an upgrade inherits the socket, and its allow-list
	// holds as before.
	_, newPID := u.upgrade()
	checkPerm(t, u.controlSocket(), fs.ModeSocket, 0o666, 0, 0)
	var st supervisor.Status
	if err := json.Unmarshal([]byte(u.mustCLIAs(nobody, nobody, nil, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Daemon.PID != newPID {
		t.Errorf("nobody's status answered by pid %d, want the new daemon's %d", st.Daemon.PID, newPID)
	}
}

// TestE2EControlAuthGroup: one control group makes the socket 0660 with that
// group: its members get in, by primary or supplementary group; the kernel
// refuses everyone else.
func TestE2EControlAuthGroup(t *testing.T) {
	e := newEnv(t)
	needRoot(t, e)
	e.authConfig(fmt.Sprintf("control_groups = [%q]", fmt.Sprint(nobody)))
	e.start()

	checkPerm(t, e.controlSocket(), fs.ModeSocket, 0o660, 0, nobody)
	e.mustCLIAs(nobody, nobody, nil, "status")
	e.mustCLIAs(another, another, []uint32{nobody}, "pause", "web")
	e.mustCLIAs(another, another, []uint32{nobody}, "resume", "web")
	if _, errOut, code := e.cliAs(another, another, nil, "status"); code != exitFailed || !strings.Contains(errOut, "permission denied") {
		t.Errorf("status as uid %d outside the group: got exit %d, %q; want exit %d, permission denied", another, code, errOut, exitFailed)
	}
}

// postControl sends a control request as this process (root) and returns
// the status and, for an error, the APIError.
func postControl(t *testing.T, socket, path, body string) (int, supervisor.APIError) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	defer c.CloseIdleConnections()
	res, err := c.Post("http://deployer"+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer res.Body.Close()
	var e supervisor.APIError
	if res.StatusCode/100 != 2 {
		json.NewDecoder(res.Body).Decode(&e)
	}
	return res.StatusCode, e
}
