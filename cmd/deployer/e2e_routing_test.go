package main

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// hostGet makes one request through the proxy with the Host header set to
// host and reports 0 on a transport error.
func hostGet(t *testing.T, c *http.Client, url, host string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	res, err := c.Do(req)
	if err != nil {
		return 0, "", http.Header{}
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header
}

// appPIDs returns the pids of app's serving instances, as X-Pid spells them.
func appPIDs(e *env, app string) map[string]bool {
	e.t.Helper()
	pids := map[string]bool{}
	for _, in := range e.appStatus(app).Instances {
		pids[strconv.Itoa(in.PID)] = true
	}
	return pids
}

// Three apps behind one listener: two on their own hosts, one under a path
// prefix of the first host with strip_path. Each request reaches the app its
// Host and path select (told apart by X-Pid and by the GREETING each app's
// env sets); an unknown host gets the proxy's own 404 naming it.
func TestRoutingManyApps(t *testing.T) {
	e := newEnv(t)
	for _, r := range []string{"a-v1", "b-v1", "api-v1"} {
		e.release(r)
	}
	app := func(name, hosts, extra string) string {
		return `
[apps.` + name + `]
command = ["./run"]
dir = "releases/{app}-{version}"
version = "v1"
env = { GREETING = "app {app}" }
hosts = ` + hosts + `
settle = "100ms"
` + extra
	}
	e.writeConfig(`[deployer]
listen = "%ADDR%"
state_dir = "run"
drain_timeout = "5s"
` + app("a", `["a.test", "exact.b.test"]`, "") +
		app("b", `["*.b.test"]`, "") +
		app("api", `["a.test"]`, "path = \"/api\"\nstrip_path = true\n"))
	e.start("a", "b", "api")

	pids := map[string]map[string]bool{}
	for _, a := range []string{"a", "b", "api"} {
		pids[a] = appPIDs(e, a)
		if len(pids[a]) != 1 {
			t.Fatalf("app %s serving pids %v, want one", a, pids[a])
		}
	}

	c := &http.Client{}
	defer c.CloseIdleConnections()
	tests := []struct {
		host, path string
		app        string // "" = the proxy's 404
		code       int
		body       string // a substring the body must contain
	}{
		{"a.test", "/", "a", 200, "app a\nhello from v1"},
		{"A.Test:8080", "/", "a", 200, "app a\n"},                    // case and port ignored
		{"a.test.", "/", "a", 200, "app a\n"},                        // trailing dot too
		{"x.b.test", "/", "b", 200, "app b\n"},                       // wildcard
		{"Deep.X.B.TEST:1", "/", "b", 200, "app b\n"},                // any depth of subdomain
		{"exact.b.test", "/", "a", 200, "app a\n"},                   // exact beats wildcard
		{"a.test", "/api", "api", 200, "app api\n"},                  // "/api" reaches the app as "/"
		{"a.test", "/api/", "api", 200, "app api\n"},                 // "/api/" too
		{"a.test", "/api/healthz", "api", 200, "ok"},                 // stripped: hello serves /healthz
		{"A.TEST:443", "/api/healthz", "api", 200, "ok"},             // path routes after the host
		{"a.test", "/apix", "a", 404, ""},                            // not a segment boundary: app a's own 404
		{"a.test", "/healthz", "a", 200, "ok"},                       // other paths of a.test: app a
		{"x.b.test", "/api/", "b", 404, ""},                          // /api is a.test's only: b's own 404
		{"unknown.test", "/", "", 404, `"unknown.test"`},             // no route
		{"b.test", "/", "", 404, `"b.test"`},                         // "*.b.test" is not "b.test"
		{"Nowhere.Example:9", "/api/", "", 404, `"nowhere.example"`}, // named as matched: lower case, no port
	}
	for _, tt := range tests {
		code, body, h := hostGet(t, c, e.url(tt.path), tt.host)
		if code != tt.code {
			t.Errorf("Host %q %s: status %d, want %d (body %q)", tt.host, tt.path, code, tt.code, body)
			continue
		}
		if !strings.Contains(body, tt.body) {
			t.Errorf("Host %q %s: body %q, want it to contain %q", tt.host, tt.path, body, tt.body)
		}
		pid := h.Get("X-Pid")
		switch {
		case tt.app == "" && pid != "":
			t.Errorf("Host %q %s: answered by pid %s, want the proxy's 404", tt.host, tt.path, pid)
		case tt.app != "" && !pids[tt.app][pid]:
			t.Errorf("Host %q %s: answered by pid %q, want app %s (pids %v)", tt.host, tt.path, pid, tt.app, pids[tt.app])
		}
	}

	// The proxy's 404 is short plain text.
	code, body, h := hostGet(t, c, e.url("/"), "unknown.test")
	if code != 404 || len(body) > 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("no route: %d %q (Content-Type %q), want a short plain-text 404", code, body, h.Get("Content-Type"))
	}
}
