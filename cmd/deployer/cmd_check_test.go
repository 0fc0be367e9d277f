package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer/deployer/internal/testcert"
)

func TestCheck(t *testing.T) {
	_, one := writeConfig(t, "web")
	got := run(t, "check", "-c", one)
	wantCode(t, got, exitOK)
	if want := one + " OK: 1 app (web), proxy on 127.0.0.1:8080\n"; got.stdout != want {
		t.Errorf("stdout = %q, want %q", got.stdout, want)
	}

	dir := stateDir(t)
	two := filepath.Join(dir, "deploy.toml")
	writeFile(t, two, fmt.Sprintf(`[deployer]
listen = ""
state_dir = %q
[apps.web]
command = ["true"]
version = "v1"
path = "/"
[apps.api]
command = ["true"]
version = "v1"
path = "/api"
`, dir))
	got = run(t, "check", "-c", two)
	wantCode(t, got, exitOK)
	if want := two + " OK: 2 apps (api, web), no built-in proxy\n"; got.stdout != want {
		t.Errorf("stdout = %q, want %q", got.stdout, want)
	}
}

// check loads the HTTPS key pair, as the daemon does when it starts: a key
// that belongs to another certificate is reported at tls_cert's line.
func TestCheckKeyPair(t *testing.T) {
	dir := stateDir(t)
	ca := testcert.NewCA(t)
	cert, key := ca.Leaf(t, 1)
	_, otherKey := ca.Leaf(t, 2)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, string(cert))
	path := filepath.Join(dir, "deploy.toml")
	writeFile(t, path, fmt.Sprintf(`[deployer]
state_dir = %q
tls_listen = "127.0.0.1:8443"
tls_cert = %q
tls_key = %q
[apps.web]
command = ["true"]
version = "v1"
`, dir, certFile, keyFile))

	writeFile(t, keyFile, string(otherKey))
	got := run(t, "check", "-c", path)
	wantCode(t, got, exitUsage)
	if want := path + ":4: deployer.tls_cert and tls_key do not load as a key pair: "; !strings.Contains(got.stderr, want) ||
		!strings.Contains(got.stderr, "private key does not match public key") {
		t.Errorf("stderr = %q, want %q and the reason", got.stderr, want)
	}

	writeFile(t, keyFile, string(key))
	got = run(t, "check", "-c", path)
	wantCode(t, got, exitOK)
}

// TestInvalidConfig checks that every command reports an invalid or
// missing deploy.toml on stderr with file:line, and exits 2 where it needs
// a valid one.
func TestInvalidConfig(t *testing.T) {
	dir := stateDir(t)
	bad := filepath.Join(dir, "deploy.toml")
	writeFile(t, bad, fmt.Sprintf(`[deployer]
state_dir = %q
drain_timeout = 5
[apps.web]
command = ["true"]
version = "v1"
colour = "blue"
`, dir))
	missing := filepath.Join(dir, "nope.toml")

	// check, start and the commands that have the daemon launch processes
	// need a valid file; those that only read or pause warn and go on, since
	// the daemon keeps its last valid config (here none runs: exit 1).
	needValid := map[string]bool{"check": true, "start": true, "swap": true, "rollback": true, "restart": true}
	for _, args := range [][]string{
		{"check"}, {"start"}, {"swap", "v2"}, {"rollback"}, {"restart", "web"},
		{"status"}, {"logs", "-f"}, {"pause"}, {"resume"}, {"stop"}, {"upgrade"}, {"shutdown"},
	} {
		got := run(t, append(args, "-c", bad)...)
		if needValid[args[0]] {
			wantCode(t, got, exitUsage)
			if strings.Contains(got.stderr, "warning") {
				t.Errorf("%q: a warning where the file is refused:\n%s", args, got.stderr)
			}
		} else {
			wantCode(t, got, exitFailed)
			if !strings.Contains(got.stderr, "warning: "+bad+" is invalid") {
				t.Errorf("%q: stderr lacks the warning:\n%s", args, got.stderr)
			}
		}
		for _, want := range []string{bad + ":3: ", bad + ":7: "} {
			if !strings.Contains(got.stderr, want) {
				t.Errorf("%q: stderr does not name %s:\n%s", args, want, got.stderr)
			}
		}
		if got.stdout != "" {
			t.Errorf("%q: stdout = %q, want nothing", args, got.stdout)
		}

		got = run(t, append(args, "-c", missing)...)
		wantCode(t, got, exitUsage)
		want := "deployer " + args[0] + ": no config file at " + missing + " (pass -c PATH or set $DEPLOYER_CONFIG)\n"
		if got.stderr != want {
			t.Errorf("%q: stderr = %q, want %q", args, got.stderr, want)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Every deploy.toml the repository ships (the root one, and each example's)
// passes `deployer check`: the docs' configs stay valid as the loader
// changes.
func TestShippedConfigsCheck(t *testing.T) {
	files, err := filepath.Glob("../../examples/*/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../deploy.toml")
	if len(files) < 6 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		got := run(t, "check", "-c", f)
		if got.code != exitOK {
			t.Errorf("deployer check -c %s: exit %d\n%s%s", f, got.code, got.stdout, got.stderr)
		}
	}
}

// check --json prints one object, valid or not: the apps when valid, every
// problem with its line when not (exit 2), nothing on stderr. It was
// refused ("flag provided but not defined").
func TestCheckJSON(t *testing.T) {
	_, good := writeConfig(t, "web")
	got := run(t, "check", "--json", "-c", good)
	wantCode(t, got, exitOK)
	var res checkResult
	if err := json.Unmarshal([]byte(got.stdout), &res); err != nil {
		t.Fatalf("stdout is not JSON: %v", err)
	}
	if !res.OK || len(res.Apps) != 1 || res.Apps[0] != "web" || res.Listen != "127.0.0.1:8080" || len(res.Problems) != 0 {
		t.Errorf("valid config: %+v", res)
	}

	bad := filepath.Join(stateDir(t), "deploy.toml")
	writeFile(t, bad, "[deployer]\nlisten = \"127.0.0.1:99999\"\n\n[apps.web]\nversion = \"v1\"\n")
	got = run(t, "check", "--json", "-c", bad)
	wantCode(t, got, exitUsage)
	res = checkResult{}
	if err := json.Unmarshal([]byte(got.stdout), &res); err != nil {
		t.Fatalf("stdout is not JSON: %v", err)
	}
	if res.OK || len(res.Problems) != 2 || got.stderr != "" {
		t.Fatalf("invalid config: %+v, stderr %q; want two problems and nothing on stderr", res, got.stderr)
	}
	if p := res.Problems[0]; p.Line != 2 || p.File != bad || !strings.Contains(p.Message, "deployer.listen") {
		t.Errorf("first problem: %+v, want deployer.listen at line 2", p)
	}
	if p := res.Problems[1]; p.Line != 4 || !strings.Contains(p.Message, "command") {
		t.Errorf("second problem: %+v, want the missing command at line 4", p)
	}
}
