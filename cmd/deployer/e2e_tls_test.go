package main

// End-to-end tests of the HTTPS listener (tls_listen): HTTP/1.1, HTTP/2 and
// websockets through it, certificates rotated under load, swaps and a
// daemon upgrade under HTTPS load.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/deployer/deployer/internal/testcert"
)

// tlsSite is the HTTPS side of an installation: its address, the CA its
// certificates come from and where they are.
type tlsSite struct {
	t                 *testing.T
	ca                *testcert.CA
	addr              string
	certFile, keyFile string
}

// newTLSSite writes tls/cert.pem and tls/key.pem under dir, a leaf with
// serial 1.
func newTLSSite(t *testing.T, dir string) *tlsSite {
	t.Helper()
	s := &tlsSite{t: t, ca: testcert.NewCA(t), addr: freeAddr(t),
		certFile: filepath.Join(dir, "tls", "cert.pem"), keyFile: filepath.Join(dir, "tls", "key.pem")}
	if err := os.MkdirAll(filepath.Dir(s.certFile), 0o700); err != nil {
		t.Fatal(err)
	}
	c, k := s.ca.Leaf(t, 1)
	s.write(c, k, false)
	return s
}

// deployerKeys are the [deployer] lines of the HTTPS listener.
func (s *tlsSite) deployerKeys() string {
	return fmt.Sprintf("tls_listen = %q\ntls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\n", s.addr)
}

// write puts a pair in place: each file written to a temporary name and
// renamed over the old one, or (inPlace) rewritten where it is.
func (s *tlsSite) write(cert, key []byte, inPlace bool) {
	s.t.Helper()
	for _, f := range []struct {
		path string
		b    []byte
	}{{s.certFile, cert}, {s.keyFile, key}} {
		if inPlace {
			if err := os.WriteFile(f.path, f.b, 0o600); err != nil {
				s.t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(f.path+".tmp", f.b, 0o600); err != nil {
			s.t.Fatal(err)
		}
		if err := os.Rename(f.path+".tmp", f.path); err != nil {
			s.t.Fatal(err)
		}
	}
}

func (s *tlsSite) url(path string) string { return "https://" + s.addr + path }

// servedSerial makes a new TLS connection and returns the serial of the
// certificate it got, 0 on an error.
func (s *tlsSite) servedSerial() int64 {
	conn, err := tls.Dial("tcp", s.addr, s.ca.ClientConfig())
	if err != nil {
		return 0
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// Kinds of HTTPS clients.
const (
	h1KeepAlive = "h1"     // HTTP/1.1, one pooled connection
	h2KeepAlive = "h2"     // HTTP/2, one connection
	h2Post      = "h2post" // HTTP/2 POSTs with a body
	freshConn   = "fresh"  // a new connection (and handshake) per request
)

// tlsLoad runs HTTPS clients until finished; every response that is not
// a 2xx over the protocol the client asked for counts as a failure.
type tlsLoad struct {
	out     *outcomes
	stop    chan struct{}
	wg      sync.WaitGroup
	serials sync.Map // serial seen by freshConn clients → *atomic.Int64
	h2      atomic.Int64
	h1      atomic.Int64
}

func newTLSLoad() *tlsLoad { return &tlsLoad{out: newOutcomes(), stop: make(chan struct{})} }

// run starts n clients of kind against url.
func (l *tlsLoad) run(kind, url string, ca *testcert.CA, n int) {
	for c := 0; c < n; c++ {
		l.wg.Go(func() {
			tr := &http.Transport{TLSClientConfig: ca.ClientConfig(), MaxIdleConnsPerHost: 1}
			wantProto := 1
			switch kind {
			case h2KeepAlive, h2Post:
				tr.ForceAttemptHTTP2 = true
				wantProto = 2
			case freshConn:
				tr.DisableKeepAlives = true
			}
			client := &http.Client{Timeout: 30 * time.Second, Transport: tr}
			defer client.CloseIdleConnections()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				var res *http.Response
				var err error
				if kind == h2Post {
					body := fmt.Sprintf("tls-%d-%d", c, i)
					res, err = client.Post(url+"echo", "text/plain", strings.NewReader(body))
				} else {
					res, err = client.Get(url)
				}
				if err == nil {
					_, err = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if err != nil {
						l.out.add("eof", fmt.Sprintf("%s: reading the body: %v", kind, err))
						continue
					}
					if res.ProtoMajor != wantProto {
						l.out.add("proto", fmt.Sprintf("%s client answered over %s", kind, res.Proto))
						continue
					}
					if res.ProtoMajor == 2 {
						l.h2.Add(1)
					} else {
						l.h1.Add(1)
					}
					if kind == freshConn && res.TLS != nil {
						serial := res.TLS.PeerCertificates[0].SerialNumber.Int64()
						n, _ := l.serials.LoadOrStore(serial, new(atomic.Int64))
						n.(*atomic.Int64).Add(1)
					}
				}
				class, detail := classify(res, err)
				if detail != "" {
					detail = kind + ": " + detail
				}
				l.out.add(class, detail)
			}
		})
	}
}

func (l *tlsLoad) finish() *outcomes {
	close(l.stop)
	l.wg.Wait()
	return l.out
}

// tlsConfig is deploy.toml with web behind both listeners.
func tlsConfig(site *tlsSite, drain string) string {
	return `[deployer]
listen = "%ADDR%"
state_dir = "run"
pid_file = "run/deployer.pid"
queue_timeout = "10s"
drain_timeout = "` + drain + `"
` + site.deployerKeys() + `
[apps.web]
command = ["./run"]
dir = "releases/{version}"
version = "v1"
settle = "100ms"
ready_timeout = "10s"
stop_timeout = "5s"
drain_timeout = "` + drain + `"
`
}

// wssDial opens a websocket through the HTTPS listener (HTTP/1.1: the
// proxy hijacks the TLS connection) and reads its greeting.
func wssDial(t *testing.T, site *tlsSite) (*websocket.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: site.ca.ClientConfig()}}
	c, _, err := websocket.Dial(ctx, "wss://"+site.addr+"/ws", &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	_, hello, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("wss greeting: %v", err)
	}
	return c, string(hello)
}

func wssEcho(c *websocket.Conn, msg string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return err
	}
	_, got, err := c.Read(ctx)
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// TestTLSCertRotationUnderLoad is issue 6's TLS claim: the certificate is
// rotated 5 times (files renamed over, or rewritten in place) under
// keep-alive HTTP/1.1 and HTTP/2 clients, HTTP/2 POSTs and clients making a
// new connection per request, with no request failed; after each rotation
// new connections get the new certificate within moments, and a websocket
// opened before the first one still echoes after the last.
func TestTLSCertRotationUnderLoad(t *testing.T) {
	e := newEnv(t)
	site := newTLSSite(t, e.dir)
	e.release("v1")
	e.release("v2")
	e.writeConfig(tlsConfig(site, "5s"))
	e.start()

	ws, hello := wssDial(t, site)
	defer ws.CloseNow()
	if hello != "version v1" {
		t.Fatalf("websocket over TLS greeted %q, want version v1", hello)
	}
	if got := site.servedSerial(); got != 1 {
		t.Fatalf("the listener serves certificate %d, want 1", got)
	}

	l := newTLSLoad()
	l.run(h1KeepAlive, site.url("/"), site.ca, 6)
	l.run(h2KeepAlive, site.url("/"), site.ca, 6)
	l.run(h2Post, site.url("/"), site.ca, 2)
	l.run(freshConn, site.url("/"), site.ca, 4)
	waitFor(t, "the load to run", 10*time.Second, func() bool { return l.out.total() > 300 })

	const rotations = 5
	var slowest time.Duration
	for i := 1; i <= rotations; i++ {
		serial := int64(1000 + i)
		c, k := site.ca.Leaf(t, serial)
		rotated := time.Now()
		site.write(c, k, i%2 == 0)
		waitFor(t, fmt.Sprintf("rotation %d: new connections to get certificate %d", i, serial), 10*time.Second, func() bool {
			return site.servedSerial() == serial
		})
		took := time.Since(rotated)
		slowest = max(slowest, took)
		t.Logf("rotation %d (%s): certificate %d served to new connections after %s", i,
			map[bool]string{true: "in place", false: "rename"}[i%2 == 0], serial, took.Round(time.Millisecond))
		if err := wssEcho(ws, fmt.Sprintf("after rotation %d", i)); err != nil {
			t.Fatalf("websocket opened before the rotations, after rotation %d: %v", i, err)
		}
		// The load runs a while on the new certificate.
		n := l.out.total()
		waitFor(t, "requests after the rotation", 10*time.Second, func() bool { return l.out.total() > n+200 })
	}
	last := int64(1000 + rotations)
	n, _ := l.serials.Load(last)
	waitFor(t, "the per-request clients to see the last certificate", 5*time.Second, func() bool {
		n, _ = l.serials.Load(last)
		return n != nil && n.(*atomic.Int64).Load() > 0
	})
	got := l.finish()
	var seen []string
	l.serials.Range(func(k, v any) bool {
		seen = append(seen, fmt.Sprintf("%d×%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	t.Logf("%d rotations under load, %d requests (%d over HTTP/2, %d over HTTP/1.1): %s", rotations, got.total(), l.h2.Load(), l.h1.Load(), got)
	t.Logf("certificates seen by new connections (serial×requests): %v; slowest rotation %s", seen, slowest.Round(time.Millisecond))
	if got.failures() != 0 {
		t.Errorf("failed requests across %d certificate rotations: %s", rotations, got)
	}
	if l.h2.Load() == 0 || l.h1.Load() == 0 {
		t.Errorf("%d HTTP/2 and %d HTTP/1.1 responses: want both", l.h2.Load(), l.h1.Load())
	}
	if got.total() < 1000 {
		t.Errorf("only %d requests made: the load did not run", got.total())
	}
	logs := e.logs.String()
	if n := strings.Count(logs, "TLS certificate reloaded"); n < rotations {
		t.Errorf("%d reloads logged, want at least %d", n, rotations)
	}
	if strings.Contains(logs, "TLS certificate not reloaded") {
		t.Errorf("a reload failed:\n%s", logs)
	}
}

// A certificate that does not load (a key of another certificate) is
// refused with an error naming the files; the listener keeps serving the
// previous one without a failed request, and a good pair put in place
// afterwards is served.
func TestTLSBadCertKeepsServing(t *testing.T) {
	e := newEnv(t)
	site := newTLSSite(t, e.dir)
	e.release("v1")
	e.writeConfig(tlsConfig(site, "5s"))
	e.start()

	l := newTLSLoad()
	l.run(h1KeepAlive, site.url("/"), site.ca, 2)
	l.run(h2KeepAlive, site.url("/"), site.ca, 2)
	l.run(freshConn, site.url("/"), site.ca, 2)
	waitFor(t, "the load to run", 10*time.Second, func() bool { return l.out.total() > 100 })

	c2, _ := site.ca.Leaf(t, 2)
	_, k3 := site.ca.Leaf(t, 3)
	site.write(c2, k3, false)
	waitFor(t, "the bad pair to be refused", 10*time.Second, func() bool {
		return strings.Contains(e.logs.String(), "TLS certificate not reloaded")
	})
	if line := logLine(e.logs.String(), "TLS certificate not reloaded"); !strings.Contains(line, site.keyFile) || !strings.Contains(line, "does not match") {
		t.Errorf("the refusal does not name the files and the problem: %s", line)
	}
	n := l.out.total()
	waitFor(t, "requests after the refusal", 10*time.Second, func() bool { return l.out.total() > n+100 })
	if got := site.servedSerial(); got != 1 {
		t.Errorf("after a refused pair new connections get certificate %d, want 1", got)
	}

	c4, k4 := site.ca.Leaf(t, 4)
	site.write(c4, k4, false)
	waitFor(t, "the good pair to be served", 10*time.Second, func() bool { return site.servedSerial() == 4 })
	got := l.finish()
	t.Logf("bad then good certificate under load, %d requests: %s", got.total(), got)
	if got.failures() != 0 {
		t.Errorf("failed requests: %s", got)
	}
}

// logLine returns the first line of logs holding s.
func logLine(logs, s string) string {
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

// A daemon whose key pair does not load refuses to start and says why.
func TestTLSBadCertRefusesStart(t *testing.T) {
	e := newEnv(t)
	site := newTLSSite(t, e.dir)
	_, k := site.ca.Leaf(t, 2)
	if err := os.WriteFile(site.keyFile, k, 0o600); err != nil {
		t.Fatal(err)
	}
	e.release("v1")
	e.writeConfig(tlsConfig(site, "5s"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, deployerBin, "-c", e.config, "start")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("deployer start with a mismatched key: %v, want exit status 1\n%s", err, stderr.String())
	}
	for _, want := range []string{site.certFile, site.keyFile, "private key does not match public key"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("start's error does not say %q:\n%s", want, stderr.String())
		}
	}
	if conn, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		conn.Close()
		t.Error("the plain listener accepts after a refused start")
	}
}

// Swaps under HTTPS load (HTTP/1.1 and HTTP/2 keep-alive clients, HTTP/2
// POSTs) fail no request.
func TestTLSSwapUnderLoad(t *testing.T) {
	e := newEnv(t)
	site := newTLSSite(t, e.dir)
	e.release("v1")
	e.release("v2")
	e.writeConfig(tlsConfig(site, "5s"))
	e.start()

	l := newTLSLoad()
	l.run(h1KeepAlive, site.url("/"), site.ca, 6)
	l.run(h2KeepAlive, site.url("/"), site.ca, 6)
	l.run(h2Post, site.url("/"), site.ca, 2)
	const swaps = 6
	for i := 0; i < swaps; i++ {
		v := []string{"v2", "v1"}[i%2]
		if out := e.mustCLI("swap", "web", v); !strings.Contains(out, "swapped web") {
			t.Fatalf("swap %d output:\n%s", i, out)
		}
		n := l.out.total()
		waitFor(t, "requests after the swap", 10*time.Second, func() bool { return l.out.total() > n+100 })
	}
	got := l.finish()
	t.Logf("%d swaps under HTTPS load, %d requests (%d over HTTP/2): %s", swaps, got.total(), l.h2.Load(), got)
	if got.failures() != 0 {
		t.Errorf("failed requests across %d swaps: %s", swaps, got)
	}
}

// `deployer upgrade` under load on both listeners: the new daemon inherits
// the HTTPS listener too, the old one lets its HTTP/2 connections go by
// GOAWAY and exits long before drain_timeout, and no request fails.
func TestTLSUpgradeUnderLoad(t *testing.T) {
	u := newUpgradeEnv(t)
	site := newTLSSite(t, u.dir)
	u.release("v1")
	u.release("v2")
	const drain = 10 * time.Second
	u.writeConfig(tlsConfig(site, drain.String()))
	u.startDaemon()

	plain := startLoad(t, u.url("/"), 4)
	l := newTLSLoad()
	l.run(h1KeepAlive, site.url("/"), site.ca, 4)
	l.run(h2KeepAlive, site.url("/"), site.ca, 4)
	l.run(h2Post, site.url("/"), site.ca, 2)
	waitFor(t, "the load to run", 10*time.Second, func() bool { return l.out.total() > 300 })

	const upgrades = 2
	for i := 0; i < upgrades; i++ {
		upgraded := time.Now()
		oldPID, newPID := u.upgrade()
		waitGone(t, fmt.Sprintf("upgrade %d: the old daemon", i), oldPID, drain+5*time.Second)
		took := time.Since(upgraded)
		t.Logf("upgrade %d: daemon %d → %d, the old one exited %s after the upgrade began", i, oldPID, newPID, took.Round(time.Millisecond))
		if took > drain/2 {
			t.Errorf("upgrade %d: the old daemon took %s to exit (drain_timeout %s): connections were held to the deadline", i, took, drain)
		}
		n := l.out.total()
		waitFor(t, "HTTPS requests after the upgrade", 10*time.Second, func() bool { return l.out.total() > n+200 })
	}
	if got := site.servedSerial(); got != 1 {
		t.Errorf("after the upgrades the HTTPS listener serves certificate %d, want 1", got)
	}
	// The new daemon watches the certificate files.
	c, k := site.ca.Leaf(t, 9)
	site.write(c, k, false)
	waitFor(t, "the new daemon to serve a rotated certificate", 10*time.Second, func() bool { return site.servedSerial() == 9 })

	got := l.finish()
	gotPlain := plain.finish()
	t.Logf("%d upgrades: HTTPS %d requests (%d over HTTP/2): %s", upgrades, got.total(), l.h2.Load(), got)
	t.Logf("%d upgrades: HTTP %d requests: %s", upgrades, gotPlain.total(), gotPlain)
	if got.failures() != 0 {
		t.Errorf("failed HTTPS requests across %d upgrades: %s", upgrades, got)
	}
	if gotPlain.failures() != 0 {
		t.Errorf("failed HTTP requests across %d upgrades: %s", upgrades, gotPlain)
	}
	if logs := u.daemonLog(); strings.Count(logs, "cut=0") < upgrades {
		t.Errorf("an old daemon cut requests at its hand-over:\n%s", logs)
	}
}
