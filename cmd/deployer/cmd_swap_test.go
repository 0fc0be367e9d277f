package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

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
		"api still serves v2, untouched\n" +
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
	wantCode(t, got, exitUnknown)
	if got.stdout != "12:00:01 launching v2\n" {
		t.Errorf("stdout = %q", got.stdout)
	}
	want := "deployer swap: the connection to the daemon was lost before its result; the outcome is unknown: see 'deployer status web'\n"
	if got.stderr != want {
		t.Errorf("stderr = %q, want %q", got.stderr, want)
	}

	// With --json: one result for CI, outcome unknown, and nothing said
	// about traffic (the daemon may have swapped).
	got = run(t, "swap", "-c", cfg, "v2", "--json")
	wantCode(t, got, exitUnknown)
	var m map[string]any
	if err := json.Unmarshal([]byte(got.stdout), &m); err != nil {
		t.Fatalf("stdout is not one JSON result: %v\n%s", err, got.stdout)
	}
	if m["ok"] != false || m["outcome"] != supervisor.OutcomeUnknown || m["app"] != "web" || m["new_version"] != "v2" {
		t.Errorf("result = %v", m)
	}
	if _, ok := m["traffic_moved"]; ok {
		t.Errorf("result claims traffic_moved: %v", m)
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
			"restart of web to v1 failed: timed out\nweb still serves v1, untouched\n"},
		{supervisor.Result{App: "web", Op: "swap", OldVersion: "v1", NewVersion: "v2", Outcome: "timeout",
			Error: "version v2: instance 0 (pid 7): timeout 2s expired before it was healthy", Output: []string{"[0] booting"}},
			"swap of web to v2 timed out: version v2: instance 0 (pid 7): timeout 2s expired before it was healthy\n" +
				"web still serves v1, untouched\nlast output of v2:\n    [0] booting\n"},
		{supervisor.Result{App: "web", Op: "swap", OldVersion: "v1", NewVersion: "v2", Outcome: "timeout", TrafficMoved: true,
			Error: "timeout 5s expired while v1 drained"},
			"swap of web to v2 timed out: timeout 5s expired while v1 drained\nweb serves v2: traffic moved before the timeout\n"},
	}
	for _, tt := range tests {
		var b strings.Builder
		writeResult(&b, &tt.r)
		if b.String() != tt.want {
			t.Errorf("writeResult(%+v):\n%s\nwant:\n%s", tt.r, b.String(), tt.want)
		}
	}
}

// TestSwapTimeoutUsage checks that a bad --timeout is a usage error that
// never reaches the daemon.
func TestSwapTimeoutUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"swap", "v2", "--timeout", "90"}, `"90" is not a duration (write it like 90s or 5m)`},
		{[]string{"swap", "v2", "--timeout", "soon"}, `"soon" is not a duration`},
		{[]string{"swap", "v2", "--timeout=0s"}, "0s is not positive"},
		{[]string{"rollback", "--timeout", "-5s"}, "-5s is not positive"},
		{[]string{"restart", "--timeout"}, "flag needs an argument: -timeout"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			dir, cfg := writeConfig(t, "web")
			d := newFakeDaemon(t, dir)
			got := run(t, append([]string{"-c", cfg}, tt.args...)...)
			wantCode(t, got, exitUsage)
			if !strings.Contains(got.stderr, tt.want) || !strings.Contains(got.stderr, "usage: deployer "+tt.args[0]) {
				t.Errorf("stderr = %q, want %q and the usage line", got.stderr, tt.want)
			}
			if n := d.count(); n != 0 {
				t.Errorf("daemon got %d requests, want none", n)
			}
		})
	}
}

// TestSwapTimeout checks that --timeout travels in the request, and that a
// result with outcome "timeout" is reported and exits 3.
func TestSwapTimeout(t *testing.T) {
	for _, op := range []string{"swap", "rollback", "restart"} {
		t.Run(op, func(t *testing.T) {
			dir, cfg := writeConfig(t, "web")
			d := newFakeDaemon(t, dir)
			d.handle("POST /v1/apps/web/"+op, stream(
				progress(at(12, 0, 1), "launching v2 of web (1 instance)"),
				resultEvent(supervisor.Result{
					App: "web", Op: op, OldVersion: "v1", NewVersion: "v2", Outcome: "timeout",
					Error:  "version v2: instance 0 (pid 7): timeout 2s expired before it was healthy",
					Output: []string{"[0] still booting"}, DurationMS: 2000, TimeoutMS: 2000,
				}),
			))
			args := []string{op, "--timeout", "2s", "-c", cfg}
			if op == "swap" {
				args = append(args, "v2")
			}
			got := run(t, args...)
			wantCode(t, got, exitTimeout)
			var body supervisor.SwapRequest
			if err := json.Unmarshal([]byte(d.only(t).Body), &body); err != nil {
				t.Fatal(err)
			}
			if body.Timeout != "2s" {
				t.Errorf("request timeout = %q, want 2s", body.Timeout)
			}
			for _, want := range []string{op + " of web to v2 timed out: ", "web still serves v1, untouched", "    [0] still booting"} {
				if !strings.Contains(got.stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, got.stdout)
				}
			}
		})
	}
}

// TestSwapNoResult: a daemon that never ends the stream is given up on
// timeoutGrace after --timeout, exit 4 (unknown), with a JSON result for CI.
func TestSwapNoResult(t *testing.T) {
	defer func(g time.Duration) { timeoutGrace = g }(timeoutGrace)
	timeoutGrace = 200 * time.Millisecond
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("POST /v1/apps/web/swap", func(w http.ResponseWriter, r *http.Request) {
		stream(progress(at(12, 0, 1), "launching v2"))(w, r)
		<-r.Context().Done()
	})
	start := time.Now()
	got := run(t, "swap", "v2", "--json", "--timeout", "100ms", "-c", cfg)
	wantCode(t, got, exitUnknown)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("gave up after %s, want about 300ms", took)
	}
	var res supervisor.Result
	if err := json.Unmarshal([]byte(got.stdout), &res); err != nil {
		t.Fatalf("stdout is not one JSON result: %v\n%s", err, got.stdout)
	}
	if res.OK || res.Outcome != supervisor.OutcomeUnknown || res.App != "web" || res.NewVersion != "v2" || res.TimeoutMS != 100 {
		t.Errorf("result = %+v", res)
	}
	if !strings.Contains(got.stderr, "outcome is unknown") {
		t.Errorf("stderr = %q", got.stderr)
	}
}

// TestSwapJSONFields checks that --json prints the daemon's result as
// received, fields this CLI does not know included, and exits by outcome.
func TestSwapJSONFields(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("POST /v1/apps/web/swap", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"type":"progress","message":"launching v2"}`+"\n")
		io.WriteString(w, `{"type":"result","result":{"ok":true,"outcome":"ok","app":"web","op":"swap","old_version":"v1",`+
			`"new_version":"v2","duration_ms":900,"ready_ms":700,"switch_ms":710,"traffic_moved":true,"future":1}}`+"\n")
	})
	got := run(t, "swap", "v2", "--json", "-c", cfg)
	wantCode(t, got, exitOK)
	var m map[string]any
	if err := json.Unmarshal([]byte(got.stdout), &m); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, got.stdout)
	}
	for k, want := range map[string]any{"outcome": "ok", "old_version": "v1", "new_version": "v2",
		"ready_ms": 700.0, "switch_ms": 710.0, "traffic_moved": true, "future": 1.0} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
}

func TestPlainText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain line", "plain line"},
		{"tab\tkept", "tab\tkept"},
		{"\x1b[31merror\x1b[0m: boom", "error: boom"},
		{"progress 10%\rprogress 100%", "progress 10%progress 100%"},
		{"\x1b]0;title\x07text", "text"},
		{"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"},
		{"héllo → wörld\x00", "héllo → wörld"},
		{"cut\x1b[", "cut"},
		{"esc at end\x1b", "esc at end"},
	}
	for _, tt := range tests {
		if got := plainText(tt.in); got != tt.want {
			t.Errorf("plainText(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestSwapPlainOutput: stdout that is not a terminal gets no escape
// sequences or carriage returns from an app's output.
func TestSwapPlainOutput(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("POST /v1/apps/web/swap", stream(
		progress(at(12, 0, 1), "launching v2"),
		resultEvent(supervisor.Result{App: "web", Op: "swap", OldVersion: "v1", NewVersion: "v2",
			Error: "version v2: exited with status 1", Output: []string{"[0] \x1b[31mFATAL\x1b[0m no database\r"}}),
	))
	got := run(t, "swap", "v2", "-c", cfg)
	wantCode(t, got, exitFailed)
	if strings.ContainsAny(got.stdout, "\x1b\r") || !strings.Contains(got.stdout, "    [0] FATAL no database\n") {
		t.Errorf("stdout = %q", got.stdout)
	}
}

// TestOpJSONRefused: swap, rollback, restart and stop with --json print one
// object even when they end before a result (they printed nothing on
// stdout): "refused" with a code when they surely started nothing,
// "unknown" when the daemon may have begun. The exit status and the
// message on stderr are what they are without --json.
func TestOpJSONRefused(t *testing.T) {
	// hangUp reads the request, then closes the connection without an
	// answer: the daemon may have begun, as when it is killed there.
	hangUp := func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		c.Close()
	}
	busy := answer(http.StatusConflict, supervisor.APIError{Error: "supervisor: another operation is running on web", Code: "swap_running"})
	tests := []struct {
		name    string
		apps    []string
		daemon  http.HandlerFunc // nil: no daemon runs
		args    []string
		code    int
		want    map[string]any
		asked   bool // the daemon got the request
		invalid bool // deploy.toml has an unknown key
	}{
		{"no daemon", []string{"web"}, nil, []string{"swap", "v2"}, exitFailed,
			map[string]any{"outcome": "refused", "app": "web", "op": "swap", "new_version": "v2", "code": "no_daemon"}, false, false},
		{"another operation runs", []string{"web"}, busy, []string{"swap", "web", "v2"}, exitFailed,
			map[string]any{"outcome": "refused", "app": "web", "op": "swap", "new_version": "v2", "code": "swap_running"}, true, false},
		{"stop while another runs", []string{"web"}, busy, []string{"stop"}, exitFailed,
			map[string]any{"outcome": "refused", "app": "web", "op": "stop", "code": "swap_running"}, true, false},
		{"daemon's unknown app", []string{"web"}, answer(http.StatusNotFound, supervisor.APIError{Error: `unknown app "web"`, Code: "unknown_app"}),
			[]string{"restart"}, exitUsage, map[string]any{"outcome": "refused", "app": "web", "op": "restart", "code": "unknown_app"}, true, false},
		{"not an APIError", []string{"web"}, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "bad gateway", http.StatusBadGateway) },
			[]string{"rollback"}, exitFailed, map[string]any{"outcome": "refused", "app": "web", "op": "rollback", "code": "http_502", "error": "bad gateway"}, true, false},
		{"unknown app", []string{"web"}, busy, []string{"swap", "api", "v2"}, exitUsage,
			map[string]any{"outcome": "refused", "app": "api", "op": "swap", "new_version": "v2", "code": "unknown_app"}, false, false},
		{"APP left out of two", []string{"web", "api"}, busy, []string{"restart"}, exitUsage,
			map[string]any{"outcome": "refused", "app": "", "op": "restart", "code": "usage"}, false, false},
		{"missing VERSION", []string{"web"}, busy, []string{"swap"}, exitUsage,
			map[string]any{"outcome": "refused", "app": "", "op": "swap", "code": "usage", "error": "missing VERSION"}, false, false},
		{"bad --timeout", []string{"web"}, busy, []string{"swap", "web", "v2", "--timeout", "5"}, exitUsage,
			map[string]any{"outcome": "refused", "app": "web", "op": "swap", "new_version": "v2", "code": "usage"}, false, false},
		{"invalid deploy.toml", []string{"web"}, busy, []string{"rollback", "web"}, exitUsage,
			map[string]any{"outcome": "refused", "app": "web", "op": "rollback", "code": "invalid_config"}, false, true},
		{"bad answer", []string{"web"}, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>\n") },
			[]string{"swap", "v2"}, exitUnknown, map[string]any{"outcome": "unknown", "app": "web", "op": "swap", "new_version": "v2", "code": "error"}, true, false},
		{"closed before the answer", []string{"web"}, hangUp, []string{"swap", "v2"}, exitUnknown,
			map[string]any{"outcome": "unknown", "app": "web", "op": "swap", "new_version": "v2", "code": "connection_lost"}, true, false},
		{"stop closed before the answer", []string{"web"}, hangUp, []string{"stop", "web"}, exitUnknown,
			map[string]any{"outcome": "unknown", "app": "web", "op": "stop", "code": "connection_lost"}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, cfg := writeConfig(t, tt.apps...)
			if tt.invalid {
				b, _ := os.ReadFile(cfg)
				writeFile(t, cfg, string(b)+"colour = \"blue\"\n")
			}
			var d *fakeDaemon
			if tt.daemon != nil {
				d = newFakeDaemon(t, dir)
				d.handle("/", tt.daemon)
			}
			// --json last: it must count when a flag before it fails.
			got := run(t, append(append([]string{"-c", cfg}, tt.args...), "--json")...)
			wantCode(t, got, tt.code)
			var m map[string]any
			dec := json.NewDecoder(strings.NewReader(got.stdout))
			if err := dec.Decode(&m); err != nil || dec.More() {
				t.Fatalf("stdout is not one JSON object: %v\n%s", err, got.stdout)
			}
			if m["ok"] != false || m["error"] == "" || !strings.Contains(got.stderr, strings.SplitN(m["error"].(string), "\n", 2)[0]) {
				t.Errorf("result = %v, stderr %q: want ok false, an error, and that error on stderr", m, got.stderr)
			}
			for k, want := range tt.want {
				if m[k] != want {
					t.Errorf("%s = %v, want %v", k, m[k], want)
				}
			}
			if _, ok := m["new_version"]; ok && tt.want["new_version"] == nil {
				t.Errorf("new_version = %v, want none", m["new_version"])
			}
			if d != nil && (d.count() > 0) != tt.asked {
				t.Errorf("daemon got %d requests, want asked = %v", d.count(), tt.asked)
			}
		})
	}
}
