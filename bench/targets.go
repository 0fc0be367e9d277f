package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// daemon is a deployer daemon the benchmark runs: the real binary, started
// with `deployer -c CFG start` as a child process, driven with its CLI.
type daemon struct {
	bin, cfg string
	addr     string // its proxy's listener
	stateDir string
	proc     *child
}

// daemonConfig is what a benchmark daemon's deploy.toml says.
type daemonConfig struct {
	Addr, StateDir, Backend, Events string
	MaxQueued                       int
	Drain                           string
	Procs                           string // procs = this; "": the key is left out (the default)
}

var deployTOML = template.Must(template.New("deploy.toml").Parse(`# Written by go run ./bench.
[deployer]
listen = "{{.Addr}}"
state_dir = "{{.StateDir}}"
queue_timeout = "60s"
max_queued = {{.MaxQueued}}
drain_timeout = "{{.Drain}}"
{{- if .Procs}}
procs = {{.Procs}}
{{- end}}

[apps.web]
command = ["{{.Backend}}", "-socket", "{socket}"{{if .Events}}, "-events", "{{.Events}}"{{end}}]
version = "v1"
settle = "0s"
ready_timeout = "10s"
health = "/healthz"
drain_timeout = "{{.Drain}}"
stop_timeout = "2s"
`))

// startDaemon writes dir/deploy.toml and starts a daemon on it, waiting
// until its app serves.
func startDaemon(ctx context.Context, cs *children, bin, dir string, cfg daemonConfig) (*daemon, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var b strings.Builder
	if err := deployTOML.Execute(&b, cfg); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "deploy.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	proc, err := startChild("deployer", filepath.Join(dir, "deployer.log"), bin, "-c", path, "start")
	if err != nil {
		return nil, err
	}
	cs.add(proc)
	d := &daemon{bin: bin, cfg: path, addr: cfg.Addr, stateDir: cfg.StateDir, proc: proc}
	if err := waitHTTP(ctx, cfg.Addr, "bench.local", 30*time.Second); err != nil {
		return nil, fmt.Errorf("deployer did not come up: %v\n%s", err, proc.tail(20))
	}
	return d, nil
}

// cli runs `deployer -c CFG args...`.
func (d *daemon) cli(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, d.bin, append([]string{"-c", d.cfg}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("deployer %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// appStatus is the part of `status --json` the benchmark reads.
type appStatus struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	State    string `json:"state"`
	InFlight int    `json:"in_flight"`
	Held     int    `json:"held"`
}

// daemonStatus is the part of `status --json` the benchmark reads.
type daemonStatus struct {
	Apps   []appStatus `json:"apps"`
	Daemon struct {
		Procs       int    `json:"procs"` // 0 from a daemon too old to say
		ProcsSource string `json:"procs_source"`
		ProcsMin    int    `json:"procs_min"`
		ProcsMax    int    `json:"procs_max"`
	} `json:"daemon"`
}

func (d *daemon) statusJSON(ctx context.Context) (daemonStatus, error) {
	var s daemonStatus
	out, err := d.cli(ctx, "status", "--json")
	if err != nil {
		return s, err
	}
	if err := decodeJSON(out, &s); err != nil {
		return s, fmt.Errorf("status --json: %v: %s", err, out)
	}
	return s, nil
}

// status is the app web's.
func (d *daemon) status(ctx context.Context) (appStatus, error) {
	s, err := d.statusJSON(ctx)
	if err != nil {
		return appStatus{}, err
	}
	for _, a := range s.Apps {
		if a.Name == "web" {
			return a, nil
		}
	}
	return appStatus{}, fmt.Errorf("status --json lists no app web: %+v", s.Apps)
}

// shutdown stops the daemon gracefully, then for good.
func (d *daemon) shutdown(ctx context.Context) {
	if d == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	d.cli(cctx, "shutdown")
	select {
	case <-d.proc.done:
	case <-time.After(10 * time.Second):
	}
	d.proc.stop(5 * time.Second)
}

// nginxConf is nginx as an equivalent reverse proxy to the app's stable
// socket: 2 workers, an upstream keep-alive pool, the same forwarding
// headers deployer sets, no access log.
var nginxConf = template.Must(template.New("nginx.conf").Parse(`# Written by go run ./bench.
worker_processes 2;
worker_rlimit_nofile 20000;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events {
    worker_connections 10000;
}
http {
    access_log off;
    client_body_temp_path {{.Dir}}/client_body_temp;
    proxy_temp_path {{.Dir}}/proxy_temp;
    fastcgi_temp_path {{.Dir}}/fastcgi_temp;
    uwsgi_temp_path {{.Dir}}/uwsgi_temp;
    scgi_temp_path {{.Dir}}/scgi_temp;
    upstream app {
        server unix:{{.Socket}};
        keepalive 64;
    }
    server {
        listen {{.Addr}} backlog=4096;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-Id $request_id;
        }
    }
}
`))

// haproxyConf is HAProxy as an equivalent reverse proxy: 2 threads, idle
// server connections reused across clients (its keep-alive pool), the same
// forwarding headers.
var haproxyConf = template.Must(template.New("haproxy.cfg").Parse(`# Written by go run ./bench.
global
    nbthread 2
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option forwardfor
    http-reuse always
frontend bench
    bind {{.Addr}}
    unique-id-format %{+X}o%pid%rt%Ts
    unique-id-header X-Request-Id
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Forwarded-Proto http
    default_backend app
backend app
    server app unix@{{.Socket}}
`))

type proxyConfig struct{ Dir, Socket, Addr string }

// startNginx runs nginx in the foreground from dir.
func startNginx(ctx context.Context, cs *children, dir, socket, addr string) (*child, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var b strings.Builder
	if err := nginxConf.Execute(&b, proxyConfig{Dir: dir, Socket: socket, Addr: addr}); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	global := "daemon off;"
	if os.Geteuid() == 0 {
		// Workers as root too: nobody could not connect to the socket.
		global += " user root;"
	}
	c, err := startChild("nginx", filepath.Join(dir, "nginx.out"), "nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf, "-g", global)
	if err != nil {
		return nil, err
	}
	cs.add(c)
	if err := waitHTTP(ctx, addr, "bench.local", 10*time.Second); err != nil {
		return nil, fmt.Errorf("nginx did not come up: %v\n%s", err, c.tail(10))
	}
	return c, nil
}

// startHAProxy runs HAProxy in the foreground.
func startHAProxy(ctx context.Context, cs *children, dir, socket, addr string) (*child, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var b strings.Builder
	if err := haproxyConf.Execute(&b, proxyConfig{Dir: dir, Socket: socket, Addr: addr}); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	c, err := startChild("haproxy", filepath.Join(dir, "haproxy.out"), "haproxy", "-db", "-f", conf)
	if err != nil {
		return nil, err
	}
	cs.add(c)
	if err := waitHTTP(ctx, addr, "bench.local", 10*time.Second); err != nil {
		return nil, fmt.Errorf("haproxy did not come up: %v\n%s", err, c.tail(10))
	}
	return c, nil
}

// groupCPUTicks sums the CPU time of every process in process group pgid.
func groupCPUTicks(pgid int) int64 {
	entries, _ := os.ReadDir("/proc")
	var total int64
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := pgidOf(pid); err != nil || g != pgid {
			continue
		}
		if t, err := cpuTicks(pid); err == nil {
			total += t
		}
	}
	return total
}

func pgidOf(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return 0, fmt.Errorf("malformed stat")
	}
	return strconv.Atoi(f[2])
}

// toolVersion returns the first line a tool prints about its version.
func toolVersion(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}
