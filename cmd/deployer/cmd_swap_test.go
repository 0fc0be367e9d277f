package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/deployer/deployer/supervisor"
)

func TestSwapSuccess(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("POST /v1/apps/web/swap", stream(
		progress(at(12, 0, 1), "launching v2 (1 instance)"),
		progress(at(12, 0, 2), "v2 healthy after 0.8s"),
		resultEvent(supervisor.Result{OK: true, App: "web", Op: "swap", OldVersion: "v1", NewVersion: "v2", DurationMS: 1234}),
	))

	// Flags after the positional arguments, and --wait-drain passed on.
	got := run(t, "swap", "v2", "-c", cfg, "--wait-drain")
	wantCode(t, got, exitOK)
	want := "12:00:01 launching v2 (1 instance)\n" +
		"12:00:02 v2 healthy after 0.8s\n" +
		"swapped web v1 → v2 in 1.2s\n"
	if got.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", got.stdout, want)
	}
	var body supervisor.SwapRequest
	if err := json.Unmarshal([]byte(d.only(t).Body), &body); err != nil {
		t.Fatal(err)
	}
	if body != (supervisor.SwapRequest{Version: "v2", WaitDrain: true}) {
		t.Errorf("request body = %+v, want version v2 with wait_drain", body)
	}
}

func TestSwapFailure(t *testing.T) {
	dir, cfg := writeConfig(t, "web", "api")
	d := newFakeDaemon(t, dir)
	d.handle("POST /v1/apps/api/swap", stream(
		progress(at(9, 30, 0), "launching v3"),
		resultEvent(supervisor.Result{
			App: "api", Op: "swap", OldVersion: "v2", NewVersion: "v3",
			Error:  "v3 exited with status 1 before it was healthy",
			Output: []string{"v3/0: listening on /srv/run/api/v3-0.sock", "v3/0: panic: no DATABASE_URL"},
		}),
	))

	got := run(t, "-c", cfg, "swap", "api", "v3")
	wantCode(t, got, exitFailed)
	want := "09:30:00 launching v3\n" +
		"swap of api to v3 failed: v3 exited with status 1 before it was healthy\n" +
		"last output of v3:\n" +
		"    v3/0: listening on /srv/run/api/v3-0.sock\n" +
		"    v3/0: panic: no DATABASE_URL\n"
	if got.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", got.stdout, want)
	}
	if got.stderr != "" {
		t.Errorf("stderr = %q, want nothing: the failure is reported on stdout", got.stderr)
	}
}

func TestSwapJSON(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("POST /v1/apps/web/swap", stream(
		progress(at(12, 0, 1), "launching v2"),
		resultEvent(supervisor.Result{App: "web", Op: "swap", NewVersion: "v2", Error: "not healthy within 30s", DurationMS: 30000}),
	))

	got := run(t, "swap", "--json", "web", "v2", "-c", cfg)
	wantCode(t, got, exitFailed)
	var res supervisor.Result
	if err := json.Unmarshal([]byte(got.stdout), &res); err != nil {
		t.Fatalf("stdout is not one JSON result: %v\n%s", err, got.stdout)
	}
	if res.OK || res.Error != "not healthy within 30s" || res.NewVersion != "v2" {
		t.Errorf("result = %+v", res)
	}
	if !strings.Contains(got.stdout, "\n  \"ok\": false") {
		t.Errorf("stdout is not indented:\n%s", got.stdout)
	}
}

// TestStreamedOps checks the endpoint, body and success line of each
// streamed command.
func TestStreamedOps(t *testing.T) {
	tests := []struct {
		args     []string
		path     string
		body     string
		result   supervisor.Result
		wantLast string
	}{
		{[]string{"rollback"}, "/v1/apps/web/rollback", `{}`,
			supervisor.Result{OK: true, Op: "rollback", OldVersion: "v2", NewVersion: "v1", DurationMS: 900},
			"rolled back web v2 → v1 in 900ms"},
		{[]string{"rollback", "--wait-drain"}, "/v1/apps/web/rollback", `{"wait_drain":true}`,
			supervisor.Result{OK: true, Op: "rollback", OldVersion: "v2", NewVersion: "v1", DurationMS: 900, DrainMS: 4520, CutRequests: 2},
			"v2 drained and stopped in 4.5s, 2 requests cut at drain_timeout"},
		{[]string{"restart", "web"}, "/v1/apps/web/restart", `{}`,
			supervisor.Result{OK: true, Op: "restart", OldVersion: "v2", NewVersion: "v2", DurationMS: 61500},
			"restarted web v2 in 1m1.5s"},
		{[]string{"stop"}, "/v1/apps/web/stop", `{}`,
			supervisor.Result{OK: true, Op: "stop", OldVersion: "v2", DurationMS: 20},
			"stopped web v2 in 20ms"},
		{[]string{"stop"}, "/v1/apps/web/stop", `{}`,
			supervisor.Result{Op: "stop", Error: "v2 did not exit after SIGKILL"},
			"stop of web failed: v2 did not exit after SIGKILL"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			dir, cfg := writeConfig(t, "web")
			d := newFakeDaemon(t, dir)
			tt.result.App = "web"
			d.handle("POST "+tt.path, stream(resultEvent(tt.result)))

			got := run(t, append(tt.args, "-c", cfg)...)
			wantCode(t, got, map[bool]int{true: exitOK, false: exitFailed}[tt.result.OK])
			if r := d.only(t); strings.TrimSpace(r.Body) != tt.body {
				t.Errorf("request body = %s, want %s", r.Body, tt.body)
			}
			lines := strings.Split(strings.TrimSuffix(got.stdout, "\n"), "\n")
			if last := lines[len(lines)-1]; last != tt.wantLast {
				t.Errorf("last line = %q, want %q", last, tt.wantLast)
			}
		})
	}
}

func TestSwapConnectionLost(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("POST /v1/apps/web/swap", stream(progress(at(12, 0, 1), "launching v2")))

	got := run(t, "swap", "-c", cfg, "v2")
	wantCode(t, got, exitFailed)
	if got.stdout != "12:00:01 launching v2\n" {
		t.Errorf("stdout = %q", got.stdout)
	}
	if want := "deployer swap: connection to daemon lost\n"; got.stderr != want {
		t.Errorf("stderr = %q, want %q", got.stderr, want)
	}
}

// TestAPIErrors checks that a refusal before the stream prints the
// daemon's message, and that its code decides the exit status.
func TestAPIErrors(t *testing.T) {
	tests := []struct {
		status   int
		body     supervisor.APIError
		wantCode int
	}{
		{http.StatusConflict, supervisor.APIError{Error: "a swap of web is running (to v3, started 12:00:01)", Code: "swap_running"}, exitFailed},
		{http.StatusNotFound, supervisor.APIError{Error: `unknown app "web"`, Code: "unknown_app"}, exitUsage},
		{http.StatusBadRequest, supervisor.APIError{Error: "version is required", Code: "bad_request"}, exitUsage},
		{http.StatusInternalServerError, supervisor.APIError{Error: "state file: disk full", Code: "internal"}, exitFailed},
	}
	for _, tt := range tests {
		t.Run(tt.body.Code, func(t *testing.T) {
			dir, cfg := writeConfig(t, "web")
			d := newFakeDaemon(t, dir)
			d.handle("/", answer(tt.status, tt.body))

			got := run(t, "swap", "-c", cfg, "v2")
			wantCode(t, got, tt.wantCode)
			if want := "deployer swap: " + tt.body.Error + "\n"; got.stderr != want {
				t.Errorf("stderr = %q, want %q", got.stderr, want)
			}
		})
	}

	t.Run("not an APIError", func(t *testing.T) {
		dir, cfg := writeConfig(t, "web")
		d := newFakeDaemon(t, dir)
		d.handle("/", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "bad gateway", http.StatusBadGateway)
		})
		got := run(t, "restart", "-c", cfg)
		wantCode(t, got, exitFailed)
		if want := "deployer restart: bad gateway\n"; got.stderr != want {
			t.Errorf("stderr = %q, want %q", got.stderr, want)
		}
	})
}

func TestWriteResult(t *testing.T) {
	tests := []struct {
		r    supervisor.Result
		want string
	}{
		{supervisor.Result{OK: true, App: "web", Op: "swap", NewVersion: "v1", DurationMS: 1000},
			"swapped web to v1 in 1s\n"},
		{supervisor.Result{OK: true, App: "web", Op: "start", NewVersion: "v1", DurationMS: 1049},
			"started web v1 in 1s\n"},
		{supervisor.Result{App: "web", Op: "start", Error: "v1 crashed", Output: []string{"boom"}},
			"start of web failed: v1 crashed\nlast output of web:\n    boom\n"},
		{supervisor.Result{App: "web", Op: "restart", OldVersion: "v1", NewVersion: "v1", Error: "timed out"},
			"restart of web to v1 failed: timed out\n"},
	}
	for _, tt := range tests {
		var b strings.Builder
		writeResult(&b, &tt.r)
		if b.String() != tt.want {
			t.Errorf("writeResult(%+v):\n%s\nwant:\n%s", tt.r, b.String(), tt.want)
		}
	}
}
