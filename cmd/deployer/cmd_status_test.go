package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/deployer/deployer/supervisor"
)

// statusJSON is a daemon's answer, with a field this CLI does not know.
const statusJSON = `{"apps":[
 {"name":"api","version":"","previous":"","state":"stopped","instances":[],"in_flight":0,"held":4,"versions":[],"last_error":"v7 crashed:\nexit status 2"},
 {"name":"web","version":"v2","previous":"v1","state":"serving","instances":[
   {"instance":0,"pid":4242,"socket":"/srv/run/web/v2-0-abcdefgh.sock","version":"v2","healthy":true,"restarts":0,"cpu_percent":1.53,"rss_bytes":24536678},
   {"instance":1,"pid":4243,"socket":"/srv/run/web/v2-1-ijklmnop.sock","version":"v2","healthy":false,"restarts":3,"cpu_percent":0,"rss_bytes":1048576}],
  "in_flight":3,"held":0,"versions":[{"version":"v2","state":"serving","in_flight":1},{"version":"v1","state":"draining","in_flight":2}]}],
 "load":{"load1":0.52,"load5":0.48,"load15":0.4},"uptime_s":3600}`

func TestStatusTable(t *testing.T) {
	dir, cfg := writeConfig(t, "web", "api")
	d := newFakeDaemon(t, dir)
	d.handle("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(statusJSON)) })

	got := run(t, "status", "-c", cfg)
	wantCode(t, got, exitOK)
	want := `api: stopped, 0 in flight, 4 held
  last error: v7 crashed: exit status 2

web: v2 serving, 3 in flight, 0 held (previous v1)
  INSTANCE  VERSION  PID   HEALTHY  RESTARTS  CPU %  RSS MiB  SOCKET
  0         v2       4242  yes      0         1.5    23.4     /srv/run/web/v2-0-abcdefgh.sock
  1         v2       4243  no       3         0.0    1.0      /srv/run/web/v2-1-ijklmnop.sock
  draining v1: 2 in flight

load average: 0.52, 0.48, 0.40
`
	if got.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", got.stdout, want)
	}
	if r := d.only(t); len(r.Query) != 0 {
		t.Errorf("query = %v, want none", r.Query)
	}
}

func TestStatusJSON(t *testing.T) {
	dir, cfg := writeConfig(t, "web", "api")
	d := newFakeDaemon(t, dir)
	d.handle("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(statusJSON)) })

	got := run(t, "status", "web", "--json", "-c", cfg)
	wantCode(t, got, exitOK)
	if q := d.only(t).Query["app"]; !slices.Equal(q, []string{"web"}) {
		t.Errorf("app query = %q, want web", q)
	}
	// As received: a field this CLI does not know is kept.
	var st struct {
		supervisor.Status
		Uptime int `json:"uptime_s"`
	}
	if err := json.Unmarshal([]byte(got.stdout), &st); err != nil {
		t.Fatalf("stdout is not JSON: %v", err)
	}
	if st.Uptime != 3600 || len(st.Apps) != 2 || st.Apps[1].Instances[0].PID != 4242 {
		t.Errorf("decoded %+v", st)
	}
	if !strings.HasPrefix(got.stdout, "{\n  \"apps\": [") {
		t.Errorf("stdout is not indented:\n%s", got.stdout)
	}
}

// The daemon's build is shown, and the binary on disk when it is another
// build: an upgrade not yet run.
func TestStatusDaemonBuild(t *testing.T) {
	dir, cfg := writeConfig(t, "web")
	d := newFakeDaemon(t, dir)
	d.handle("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"apps":[],"load":{"load1":0,"load5":0,"load15":0},
 "daemon":{"pid":77,"started":"2026-11-22T04:00:00Z","binary":"/usr/local/bin/deployer",
  "build":{"version":"v1.3.0","commit":"aaaaaaaaaaaaaaaaaaaa","go":"go1.26.8"},
  "binary_build":{"version":"v1.4.0","commit":"bbbbbbbbbbbbbbbbbbbb","go":"go1.26.8"}}}`))
	})
	got := run(t, "status", "-c", cfg)
	wantCode(t, got, exitOK)
	for _, want := range []string{
		"\ndaemon: pid 77, up since ",
		"\ndaemon build: deployer v1.3.0 (commit aaaaaaaaaaaa; go1.26.8)\n",
		"\n/usr/local/bin/deployer is now another build: deployer v1.4.0 (commit bbbbbbbbbbbb; go1.26.8); 'deployer upgrade' switches to it\n",
	} {
		if !strings.Contains(got.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, got.stdout)
		}
	}
}
