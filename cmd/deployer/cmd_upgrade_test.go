package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/deployer/deployer/supervisor"
)

// hangUp closes the connection without an answer, as a daemon that went
// away mid-upgrade does.
func hangUp(w http.ResponseWriter, r *http.Request) {
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		conn.Close()
	}
}

func TestUpgrade(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		handler    http.HandlerFunc
		wantCode   int
		wantStdout string
		wantStderr string
	}{{
		name:       "upgraded",
		handler:    answer(http.StatusOK, supervisor.UpgradeResult{OK: true, OldPID: 123, NewPID: 456}),
		wantCode:   exitOK,
		wantStdout: "upgraded: daemon pid 123 → 456\n",
	}, {
		name: "upgraded to another build",
		handler: answer(http.StatusOK, supervisor.UpgradeResult{OK: true, OldPID: 123, NewPID: 456,
			OldBuild: supervisor.Build{Version: "v1.3.0", Commit: "aaaaaaaaaaaaaaaa", Go: "go1.26.8"},
			NewBuild: &supervisor.Build{Version: "v1.4.0", Commit: "bbbbbbbbbbbbbbbb", Go: "go1.26.8"}}),
		wantCode:   exitOK,
		wantStdout: "upgraded: daemon pid 123 → 456\nbuild: deployer v1.3.0 (commit aaaaaaaaaaaa; go1.26.8) → v1.4.0 (commit bbbbbbbbbbbb; go1.26.8)\n",
	}, {
		// The binary on disk was never replaced: worth knowing.
		name: "upgraded to the same build",
		handler: answer(http.StatusOK, supervisor.UpgradeResult{OK: true, OldPID: 123, NewPID: 456,
			OldBuild: supervisor.Build{Version: "v1.3.0", Commit: "aaaa", Go: "go1.26.8"},
			NewBuild: &supervisor.Build{Version: "v1.3.0", Commit: "aaaa", Go: "go1.26.8"}}),
		wantCode:   exitOK,
		wantStdout: "upgraded: daemon pid 123 → 456\nbuild unchanged: deployer v1.3.0 (commit aaaa; go1.26.8)\n",
	}, {
		name: "upgraded, builds that record nothing apart",
		handler: answer(http.StatusOK, supervisor.UpgradeResult{OK: true, OldPID: 123, NewPID: 456,
			OldBuild: supervisor.Build{Version: "(devel)", Go: "go1.26.8"},
			NewBuild: &supervisor.Build{Version: "(devel)", Go: "go1.26.8"}}),
		wantCode:   exitOK,
		wantStdout: "upgraded: daemon pid 123 → 456\nbuild: deployer (devel) (no commit recorded; go1.26.8), recorded the same as before\n",
	}, {
		name:       "new binary failed",
		handler:    answer(http.StatusOK, supervisor.UpgradeResult{OldPID: 123, Error: "can't start child: exec format error"}),
		wantCode:   exitFailed,
		wantStdout: "upgrade failed: can't start child: exec format error; the running daemon (pid 123) serves on\n",
	}, {
		// A daemon may answer a failed upgrade with a non-2xx status and
		// the result as its body: the error is shown all the same.
		name:       "failed with an error status",
		handler:    answer(http.StatusInternalServerError, supervisor.UpgradeResult{OldPID: 123, Error: "new daemon not ready within 10s"}),
		wantCode:   exitFailed,
		wantStderr: "deployer upgrade: new daemon not ready within 10s\n",
	}, {
		name:       "refused: previous old daemon still draining",
		handler:    answer(http.StatusConflict, supervisor.APIError{Error: "the previous upgrade's old daemon has not exited yet", Code: "upgrade_busy"}),
		wantCode:   exitFailed,
		wantStderr: "deployer upgrade: the previous upgrade's old daemon has not exited yet\n",
	}, {
		name:       "refused: swap running",
		handler:    answer(http.StatusConflict, supervisor.APIError{Error: "web: another operation is running (swap)", Code: "swap_running"}),
		wantCode:   exitFailed,
		wantStderr: "deployer upgrade: web: another operation is running (swap)\n",
	}, {
		name:       "json, upgraded",
		args:       []string{"--json"},
		handler:    answer(http.StatusOK, supervisor.UpgradeResult{OK: true, OldPID: 123, NewPID: 456}),
		wantCode:   exitOK,
		wantStdout: "{\n  \"ok\": true,\n  \"old_pid\": 123,\n  \"new_pid\": 456\n}\n",
	}, {
		name:       "json, failed",
		args:       []string{"--json"},
		handler:    answer(http.StatusOK, supervisor.UpgradeResult{OldPID: 123, Error: "boom"}),
		wantCode:   exitFailed,
		wantStdout: "{\n  \"ok\": false,\n  \"old_pid\": 123,\n  \"error\": \"boom\"\n}\n",
	}, {
		name:       "connection lost before the answer",
		handler:    hangUp,
		wantCode:   exitUnknown,
		wantStderr: "deployer upgrade: connection to daemon lost during the upgrade; 'deployer status' shows which daemon serves\n",
	}, {
		// One JSON object on stdout whatever happens: it printed none.
		name:       "json, connection lost before the answer",
		args:       []string{"--json"},
		handler:    hangUp,
		wantCode:   exitUnknown,
		wantStdout: "{\n  \"ok\": false,\n  \"outcome\": \"unknown\",\n  \"error\": \"connection to daemon lost during the upgrade; 'deployer status' shows which daemon serves\"\n}\n",
		wantStderr: "deployer upgrade: connection to daemon lost during the upgrade; 'deployer status' shows which daemon serves\n",
	}, {
		name: "not JSON",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("<html>"))
		},
		wantCode:   exitFailed,
		wantStderr: "deployer upgrade: bad answer from daemon: invalid character '<' looking for beginning of value\n",
	}, {
		name:       "failed without a reason",
		handler:    answer(http.StatusOK, supervisor.UpgradeResult{OldPID: 123}),
		wantCode:   exitFailed,
		wantStderr: "deployer upgrade: bad answer from daemon: upgrade failed without a reason\n",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, cfg := writeConfig(t, "web", "api")
			d := newFakeDaemon(t, dir)
			d.handle("POST /v1/upgrade", tt.handler)

			got := run(t, append([]string{"upgrade", "-c", cfg}, tt.args...)...)
			wantCode(t, got, tt.wantCode)
			if got.stdout != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", got.stdout, tt.wantStdout)
			}
			if got.stderr != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", got.stderr, tt.wantStderr)
			}
			if req := d.only(t); req.Body != "" {
				t.Errorf("request body = %q, want none", req.Body)
			}
		})
	}
}

// The --json output is the answer as received, so fields a newer daemon
// adds are not lost, and it decodes as the result object.
func TestUpgradeJSONKeepsUnknownFields(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("POST /v1/upgrade", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"ok":true,"old_pid":7,"new_pid":8,"took_ms":412}`))
	})
	got := run(t, "upgrade", "--json", "-c", cfg)
	wantCode(t, got, exitOK)
	var res map[string]any
	if err := json.Unmarshal([]byte(got.stdout), &res); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, got.stdout)
	}
	if res["ok"] != true || res["old_pid"] != 7.0 || res["new_pid"] != 8.0 || res["took_ms"] != 412.0 {
		t.Errorf("--json = %v", res)
	}
}

func TestUpgradeUsage(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)

	got := run(t, "upgrade", "now", "-c", cfg)
	wantCode(t, got, exitUsage)
	if want := "deployer upgrade: unexpected argument \"now\"\nusage: deployer upgrade [--json]\n"; got.stderr != want {
		t.Errorf("stderr = %q, want %q", got.stderr, want)
	}
	if n := d.count(); n != 0 {
		t.Errorf("daemon got %d requests on bad usage", n)
	}
}

func TestUpgradeNoDaemon(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	got := run(t, "upgrade", "-c", cfg)
	wantCode(t, got, exitFailed)
	want := "deployer: no daemon is running (nothing answers on " + dir + "/deployer.sock); start one with 'deployer start'\n"
	if got.stderr != want {
		t.Errorf("stderr = %q, want %q", got.stderr, want)
	}
}

func TestUpgradeHelp(t *testing.T) {
	got := run(t, "help", "upgrade")
	wantCode(t, got, exitOK)
	for _, want := range []string{
		"usage: deployer upgrade [--json]",
		"binary now on disk",
		"by rename", "ETXTBSY",
		"old daemon serves on",
		"SIGHUP",
		"Exit status:", "0  the new daemon serves", "1  the new binary failed", "2  bad usage",
		"Example:", "deployer -c /srv/app/deploy.toml upgrade",
	} {
		if !strings.Contains(got.stdout, want) {
			t.Errorf("help upgrade lacks %q:\n%s", want, got.stdout)
		}
	}
	if main := run(t, "help").stdout; !strings.Contains(main, "  upgrade ") {
		t.Errorf("help does not list upgrade:\n%s", main)
	}
}
