package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/deployer/deployer/supervisor"
)

// TestExit checks the one place errors become exit statuses and messages.
func TestExit(t *testing.T) {
	invalid := errors.Join(
		&supervisor.ConfigError{File: "deploy.toml", Line: 3, Msg: "drain_timeout: want a duration string"},
		&supervisor.ConfigError{File: "deploy.toml", Line: 7, Msg: `unknown key "colour"`},
	)
	tests := []struct {
		name       string
		err        error
		wantCode   int
		wantStderr string
	}{
		{"nil", nil, exitOK, ""},
		{"reported", errReported, exitFailed, ""},
		{"usage", usageErrorf("missing %s", "VERSION"), exitUsage,
			"deployer swap: missing VERSION\nusage: deployer swap [APP] VERSION [--wait-drain] [--timeout DURATION] [--json]\n"},
		{"invalid config", &configError{err: invalid}, exitUsage,
			"deploy.toml:3: drain_timeout: want a duration string\ndeploy.toml:7: unknown key \"colour\"\n"},
		{"missing config", &configError{missing: "deploy.toml"}, exitUsage,
			"deployer swap: no config file at deploy.toml (pass -c PATH or set $DEPLOYER_CONFIG)\n"},
		{"no daemon", fmt.Errorf("dial: %w", &noDaemonError{socket: "/run/deployer.sock"}), exitFailed,
			"deployer: no daemon is running (nothing answers on /run/deployer.sock); start one with 'deployer start'\n"},
		{"unknown app", &apiError{status: 404, body: supervisor.APIError{Error: `unknown app "db"`, Code: "unknown_app"}}, exitUsage,
			"deployer swap: unknown app \"db\"\n"},
		{"bad request", &apiError{status: 400, body: supervisor.APIError{Error: "bad version", Code: "bad_request"}}, exitUsage,
			"deployer swap: bad version\n"},
		{"swap running", &apiError{status: 409, body: supervisor.APIError{Error: "a swap of web is running", Code: "swap_running"}}, exitFailed,
			"deployer swap: a swap of web is running\n"},
		{"lost", errConnectionLost, exitUnknown, "deployer swap: connection to daemon lost\n"},
		// An operation's request may have reached the daemon: unknown.
		{"anything else", context.DeadlineExceeded, exitUnknown,
			"deployer swap: context deadline exceeded; the outcome is unknown: see 'deployer status'\n"},
		{"anything else, not an operation", context.DeadlineExceeded, exitFailed, "deployer status: context deadline exceeded\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr strings.Builder
			inv := &invocation{stderr: &stderr, cmd: swapCommand()}
			if strings.HasSuffix(tt.name, "not an operation") {
				inv.cmd = statusCommand()
			}
			if code := inv.exit(tt.err); code != tt.wantCode {
				t.Errorf("exit status %d, want %d", code, tt.wantCode)
			}
			if stderr.String() != tt.wantStderr {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr.String(), tt.wantStderr)
			}
		})
	}
}

// TestErrorCode checks the codes --json gives the errors that end a command
// before its result, and which of them surely started nothing.
func TestErrorCode(t *testing.T) {
	tests := []struct {
		err         error
		wantCode    string
		wantRefused bool
	}{
		{usageErrorf("missing VERSION"), "usage", true},
		{&usageError{msg: `unknown app "db"`, code: "unknown_app"}, "unknown_app", true},
		{&configError{err: supervisor.ErrConfig}, "invalid_config", true},
		{&configError{missing: "deploy.toml"}, "no_config", true},
		{fmt.Errorf("dial: %w", &noDaemonError{socket: "/run/deployer.sock"}), "no_daemon", true},
		{fmt.Errorf("%w: cannot connect to /run/deployer.sock", errPermissionDenied), "permission_denied", true},
		{&apiError{status: 409, body: supervisor.APIError{Error: "busy", Code: "swap_running"}}, "swap_running", true},
		{&apiError{status: 502, body: supervisor.APIError{Error: "bad gateway"}}, "http_502", true},
		{errors.New("bad answer from daemon: EOF"), "error", false},
		{errConnectionLost, "connection_lost", false},
		{fmt.Errorf("%w within 1m0s", errNoAnswer), "no_answer", false},
	}
	for _, tt := range tests {
		if code, refused := errorCode(tt.err); code != tt.wantCode || refused != tt.wantRefused {
			t.Errorf("errorCode(%v) = %q, %v; want %q, %v", tt.err, code, refused, tt.wantCode, tt.wantRefused)
		}
	}
}
