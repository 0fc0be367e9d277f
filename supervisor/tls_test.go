package supervisor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testcert"
)

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// replaceFile puts b at path by writing a temporary file and renaming it
// over path, as mv, editors and most deploy scripts do.
func replaceFile(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, b)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// logRecorder is a slog handler that keeps what was logged.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	l.mu.Unlock()
	return nil
}

// find returns the lines logged so far that start with prefix.
func (l *logRecorder) find(prefix string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.lines {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// certFixture is a certificate store over files in a temporary directory.
type certFixture struct {
	t                 *testing.T
	ca                *testcert.CA
	dir               string
	certFile, keyFile string
	logs              *logRecorder
	store             *certStore
}

func newCertFixture(t *testing.T) *certFixture {
	t.Helper()
	dir := t.TempDir()
	return &certFixture{
		t: t, ca: testcert.NewCA(t), dir: dir,
		certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem"),
		logs: &logRecorder{},
	}
}

// open loads the files into a new store; watch starts its watching until
// the test ends.
func (f *certFixture) open() *certStore {
	f.t.Helper()
	s, err := newCertStore(f.certFile, f.keyFile, slog.New(f.logs))
	if err != nil {
		f.t.Fatal(err)
	}
	f.store = s
	return s
}

func (f *certFixture) watch() {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f.store.start(ctx)
	f.t.Cleanup(func() {
		cancel()
		f.store.wait()
	})
}

func (f *certFixture) serial() int64 { return f.store.current().Leaf.SerialNumber.Int64() }

// waitSerial waits until the store serves the leaf with serial.
func (f *certFixture) waitSerial(serial int64) {
	f.t.Helper()
	waitUntil(f.t, fmt.Sprintf("certificate %d to be served", serial), 5*time.Second, func() bool { return f.serial() == serial })
	// The store swaps the certificate in, then logs: the line may come a
	// moment after the new serial.
	waitUntil(f.t, "the reload to be logged", 5*time.Second, func() bool {
		return len(f.logs.find("INFO TLS certificate reloaded")) > 0
	})
}

// waitRefused waits until n reloads have been refused, and checks the
// certificate in use is still serial.
func (f *certFixture) waitRefused(n int, serial int64) string {
	f.t.Helper()
	var lines []string
	waitUntil(f.t, "the reload to be refused", 5*time.Second, func() bool {
		lines = f.logs.find("ERROR TLS certificate not reloaded")
		return len(lines) >= n
	})
	if got := f.serial(); got != serial {
		f.t.Fatalf("serving certificate %d after a refused reload, want %d", got, serial)
	}
	return lines[n-1]
}

func TestCertStoreLoads(t *testing.T) {
	f := newCertFixture(t)
	c, k := f.ca.Leaf(t, 7)
	writeFile(t, f.certFile, c)
	writeFile(t, f.keyFile, k)
	s := f.open()
	if got := f.serial(); got != 7 {
		t.Fatalf("serial %d, want 7", got)
	}
	cfg := s.tlsConfig()
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x, want TLS 1.2", cfg.MinVersion)
	}
	if got := strings.Join(cfg.NextProtos, ","); got != "h2,http/1.1" {
		t.Errorf("NextProtos %q, want h2,http/1.1", got)
	}
	if got, _ := cfg.GetCertificate(nil); got != s.current() {
		t.Errorf("GetCertificate returned %p, want the current certificate %p", got, s.current())
	}
}

// An expired certificate is loaded and served all the same (the operator
// may be mid-rotation), with a warning naming it.
func TestCertStoreServesExpired(t *testing.T) {
	f := newCertFixture(t)
	c, k := f.ca.LeafValid(t, 9, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	writeFile(t, f.certFile, c)
	writeFile(t, f.keyFile, k)
	s := f.open()
	if got, _ := s.tlsConfig().GetCertificate(nil); got == nil || got.Leaf.SerialNumber.Int64() != 9 {
		t.Fatalf("the expired certificate is not served: %v", got)
	}
	if lines := f.logs.find("WARN TLS certificate is not valid now"); len(lines) != 1 || !strings.Contains(lines[0], "not_after=") {
		t.Fatalf("want one warning naming the certificate, got %q\n%s", lines, f.logs)
	}
}

// A pair that cannot be used is an error naming the files and the problem.
func TestCertStoreRefusesBadPair(t *testing.T) {
	ca := testcert.NewCA(t)
	c1, k1 := ca.Leaf(t, 1)
	_, k2 := ca.Leaf(t, 2)
	for _, tt := range []struct {
		name       string
		cert, key  []byte // nil: no file
		wantInErr  []string
		wantNoFile bool
	}{
		{name: "key of another certificate", cert: c1, key: k2, wantInErr: []string{"cert.pem", "key.pem", "private key does not match public key"}},
		{name: "key not PEM", cert: c1, key: []byte("not a key"), wantInErr: []string{"key.pem", "key input"}},
		{name: "cert not PEM", cert: []byte("garbage"), key: k1, wantInErr: []string{"cert.pem", "certificate input"}},
		{name: "files switched", cert: k1, key: c1, wantInErr: []string{"cert.pem", "switched"}},
		{name: "half-written cert", cert: c1[:len(c1)/2], key: k1, wantInErr: []string{"cert.pem", "certificate input"}},
		{name: "no key file", cert: c1, key: nil, wantInErr: []string{"tls_key", "key.pem", "no such file"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
			writeFile(t, certFile, tt.cert)
			if tt.key != nil {
				writeFile(t, keyFile, tt.key)
			}
			_, err := newCertStore(certFile, keyFile, slog.New(&logRecorder{}))
			if !errors.Is(err, ErrTLSCert) {
				t.Fatalf("got %v, want ErrTLSCert", err)
			}
			for _, s := range tt.wantInErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}

// Every way certificates are put in place is seen: each step is a rotation
// to a new leaf, which the store must serve within a few seconds.
func TestCertStoreReloads(t *testing.T) {
	for _, tt := range []struct {
		name string
		// setup lays out the first pair; rotate puts the next one in place.
		setup, rotate func(f *certFixture, cert, key []byte, i int)
	}{
		{
			name:  "rename over",
			setup: plainPair,
			rotate: func(f *certFixture, c, k []byte, _ int) {
				replaceFile(f.t, f.certFile, c)
				replaceFile(f.t, f.keyFile, k)
			},
		},
		{
			name:   "written in place",
			setup:  plainPair,
			rotate: func(f *certFixture, c, k []byte, _ int) { writeFile(f.t, f.certFile, c); writeFile(f.t, f.keyFile, k) },
		},
		{
			name:   "key first, in place",
			setup:  plainPair,
			rotate: func(f *certFixture, c, k []byte, _ int) { writeFile(f.t, f.keyFile, k); writeFile(f.t, f.certFile, c) },
		},
		{
			// certbot: live/cert.pem → ../archive/certN.pem, the link replaced.
			name: "file symlinks swapped",
			setup: func(f *certFixture, c, k []byte, i int) {
				for _, d := range []string{"live", "archive"} {
					if err := os.Mkdir(filepath.Join(f.dir, d), 0o755); err != nil {
						f.t.Fatal(err)
					}
				}
				f.certFile, f.keyFile = filepath.Join(f.dir, "live", "cert.pem"), filepath.Join(f.dir, "live", "key.pem")
				archivePair(f, c, k, i)
			},
			rotate: archivePair,
		},
		{
			// Kubernetes secret volume: cert.pem → ..data/cert.pem, and
			// ..data → a directory per version, swapped by rename.
			name: "directory symlink swapped",
			setup: func(f *certFixture, c, k []byte, i int) {
				f.certFile, f.keyFile = filepath.Join(f.dir, "cert.pem"), filepath.Join(f.dir, "key.pem")
				dataPair(f, c, k, i)
				for _, n := range []string{"cert.pem", "key.pem"} {
					if err := os.Symlink(filepath.Join("..data", n), filepath.Join(f.dir, n)); err != nil {
						f.t.Fatal(err)
					}
				}
			},
			rotate: dataPair,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newCertFixture(t)
			c, k := f.ca.Leaf(t, 100)
			tt.setup(f, c, k, 0)
			f.open()
			f.watch()
			for i := 1; i <= 3; i++ {
				serial := int64(100 + i)
				c, k := f.ca.Leaf(t, serial)
				tt.rotate(f, c, k, i)
				f.waitSerial(serial)
			}
			if errs := f.logs.find("ERROR"); len(errs) > 0 {
				t.Errorf("errors logged:\n%s", strings.Join(errs, "\n"))
			}
		})
	}
}

func plainPair(f *certFixture, c, k []byte, _ int) {
	writeFile(f.t, f.certFile, c)
	writeFile(f.t, f.keyFile, k)
}

// archivePair writes archive/{cert,key}<i>.pem and points the live links at
// them, each link replaced by rename.
func archivePair(f *certFixture, c, k []byte, i int) {
	for _, p := range []struct {
		name string
		b    []byte
	}{{"cert", c}, {"key", k}} {
		target := filepath.Join(f.dir, "archive", fmt.Sprintf("%s%d.pem", p.name, i))
		writeFile(f.t, target, p.b)
		link := filepath.Join(f.dir, "live", p.name+".pem")
		if err := os.Symlink(filepath.Join("..", "archive", filepath.Base(target)), link+".tmp"); err != nil {
			f.t.Fatal(err)
		}
		if err := os.Rename(link+".tmp", link); err != nil {
			f.t.Fatal(err)
		}
	}
}

// dataPair does what the kubelet does: a new directory with both files,
// ..data_tmp pointing at it renamed over ..data, the old directory removed.
func dataPair(f *certFixture, c, k []byte, i int) {
	gen := fmt.Sprintf("..gen%d", i)
	if err := os.Mkdir(filepath.Join(f.dir, gen), 0o755); err != nil {
		f.t.Fatal(err)
	}
	writeFile(f.t, filepath.Join(f.dir, gen, "cert.pem"), c)
	writeFile(f.t, filepath.Join(f.dir, gen, "key.pem"), k)
	data := filepath.Join(f.dir, "..data")
	old, _ := os.Readlink(data)
	if err := os.Symlink(gen, data+"_tmp"); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(data+"_tmp", data); err != nil {
		f.t.Fatal(err)
	}
	if old != "" {
		os.RemoveAll(filepath.Join(f.dir, old))
	}
}

// A key that does not parse leaves the certificate in use, with an error
// naming the file; putting a good pair in place then reloads.
func TestCertStoreKeepsCertOnBadKey(t *testing.T) {
	f := newCertFixture(t)
	c, k := f.ca.Leaf(t, 1)
	plainPair(f, c, k, 0)
	f.open()
	f.watch()

	replaceFile(t, f.keyFile, []byte("-----BEGIN EC PRIVATE KEY-----\nbm9wZQ==\n-----END EC PRIVATE KEY-----\n"))
	line := f.waitRefused(1, 1)
	for _, want := range []string{f.keyFile, "error="} {
		if !strings.Contains(line, want) {
			t.Errorf("logged %q: does not say %q", line, want)
		}
	}
	// The same bad files are not tried (and logged) again by the periodic
	// look.
	if f.store.check() {
		t.Fatal("check reloaded unchanged bad files")
	}
	if n := len(f.logs.find("ERROR")); n != 1 {
		t.Errorf("%d errors logged, want 1:\n%s", n, f.logs)
	}

	c2, k2 := f.ca.Leaf(t, 2)
	replaceFile(t, f.certFile, c2)
	replaceFile(t, f.keyFile, k2)
	f.waitSerial(2)
}

// A new certificate with the old key (its key not written yet, or
// forgotten) is refused until the matching key arrives.
func TestCertStoreRefusesMismatch(t *testing.T) {
	f := newCertFixture(t)
	c, k := f.ca.Leaf(t, 1)
	plainPair(f, c, k, 0)
	f.open()
	f.watch()

	c2, k2 := f.ca.Leaf(t, 2)
	replaceFile(t, f.certFile, c2)
	line := f.waitRefused(1, 1)
	if !strings.Contains(line, "private key does not match public key") {
		t.Errorf("logged %q: does not say the key does not match", line)
	}
	replaceFile(t, f.keyFile, k2)
	f.waitSerial(2)
}

// With no event (inotify unavailable, or an event missed), the periodic
// look still finds a changed pair, and only a changed one.
func TestCertStorePeriodicLook(t *testing.T) {
	f := newCertFixture(t)
	c, k := f.ca.Leaf(t, 1)
	plainPair(f, c, k, 0)
	s := f.open()
	if s.check() {
		t.Fatal("check reloaded unchanged files")
	}
	s.recheck = 20 * time.Millisecond
	s.done = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go s.run(ctx) // no watcher: only the periodic look
	defer func() { cancel(); s.wait() }()

	c2, k2 := f.ca.Leaf(t, 2)
	replaceFile(t, f.certFile, c2)
	replaceFile(t, f.keyFile, k2)
	f.waitSerial(2)
	time.Sleep(100 * time.Millisecond) // several more looks
	if n := len(f.logs.find("INFO TLS certificate reloaded")); n != 1 {
		t.Errorf("%d reloads logged for one change, want 1:\n%s", n, f.logs)
	}
}

// tlsDaemon is a daemon with only its TLS listener started, on a free
// port, with the certificate of fixture f.
func tlsDaemon(t *testing.T, f *certFixture) (*Daemon, *publicServer) {
	t.Helper()
	cfg := loadString(t, fmt.Sprintf(`[deployer]
listen = ""
state_dir = %q
tls_listen = "127.0.0.1:0"
tls_cert = %q
tls_key = %q
queue_timeout = "100ms"

[apps.web]
command = ["./web"]
version = "v1"
`, filepath.Join(f.dir, "run"), f.certFile, f.keyFile))
	d, err := NewDaemon(cfg, DaemonOptions{Logger: slog.New(f.logs)})
	if err != nil {
		t.Fatal(err)
	}
	close(d.acceptGate) // as Run does once ready: the TLS listener accepts
	pub, err := d.startTLS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.cancel()
		pub.srv.Close()
	})
	return d, pub
}

// The TLS listener speaks HTTP/2 and HTTP/1.1 to the proxy, and a rotated
// certificate reaches new connections while an established one carries on.
func TestStartTLSServesH2AndH1(t *testing.T) {
	f := newCertFixture(t)
	c, k := f.ca.Leaf(t, 1)
	plainPair(f, c, k, 0)
	_, pub := tlsDaemon(t, f)
	url := "https://" + pub.ln.Addr().String() + "/"

	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: f.ca.ClientConfig()}}
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: f.ca.ClientConfig(), ForceAttemptHTTP2: true}}
	defer h1.CloseIdleConnections()
	defer h2.CloseIdleConnections()
	get := func(c *http.Client) *http.Response {
		t.Helper()
		res, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	// No app serves: the proxy holds the request for queue_timeout, then
	// answers 503. The proxy answered, over the protocol asked for.
	for _, tt := range []struct {
		c     *http.Client
		proto int
	}{{h1, 1}, {h2, 2}} {
		res := get(tt.c)
		if res.ProtoMajor != tt.proto || res.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("got %s %s, want HTTP/%d 503 from the proxy", res.Proto, res.Status, tt.proto)
		}
		if got := res.TLS.PeerCertificates[0].SerialNumber.Int64(); got != 1 {
			t.Errorf("certificate %d, want 1", got)
		}
	}

	c2, k2 := f.ca.Leaf(t, 2)
	replaceFile(t, f.certFile, c2)
	replaceFile(t, f.keyFile, k2)
	waitUntil(t, "a new connection to get certificate 2", 5*time.Second, func() bool {
		conn, err := tls.Dial("tcp", pub.ln.Addr().String(), f.ca.ClientConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64() == 2
	})
	// The established HTTP/2 connection still works, on its certificate.
	if res := get(h2); res.TLS.PeerCertificates[0].SerialNumber.Int64() != 1 {
		t.Errorf("established connection now shows certificate %d", res.TLS.PeerCertificates[0].SerialNumber.Int64())
	}
}

// A bad pair stops startTLS before it listens: nothing is opened.
func TestStartTLSBadPair(t *testing.T) {
	f := newCertFixture(t)
	c, _ := f.ca.Leaf(t, 1)
	_, k := f.ca.Leaf(t, 2)
	plainPair(f, c, k, 0)
	cfg := loadString(t, fmt.Sprintf(`[deployer]
listen = ""
state_dir = %q
tls_listen = "127.0.0.1:0"
tls_cert = %q
tls_key = %q

[apps.web]
command = ["./web"]
version = "v1"
`, filepath.Join(f.dir, "run"), f.certFile, f.keyFile))
	listened := false
	d, err := NewDaemon(cfg, DaemonOptions{
		Logger: slog.New(f.logs),
		Listen: func(network, addr string) (net.Listener, error) {
			listened = true
			return net.Listen(network, addr)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.cancel()
	pub, err := d.startTLS()
	if !errors.Is(err, ErrTLSCert) || pub != nil {
		t.Fatalf("startTLS: %v, %v; want ErrTLSCert", pub, err)
	}
	if !strings.Contains(err.Error(), f.certFile) || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("error %q does not name the files and the problem", err)
	}
	if listened {
		t.Error("startTLS opened its listener with a bad key pair")
	}
}

// A client holding a session ticket resumes without seeing a certificate;
// after a reload it must make a full handshake and see the new one, and
// then resume again. Over TLS 1.3 and 1.2 (whose tickets come in the
// handshake itself).
func TestCertReloadEndsResumption(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			f := newCertFixture(t)
			c, k := f.ca.Leaf(t, 1)
			writeFile(t, f.certFile, c)
			writeFile(t, f.keyFile, k)
			s := f.open()

			ln, err := tls.Listen("tcp", "127.0.0.1:0", s.tlsConfig())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					conn, err := ln.Accept()
					if err != nil {
						return
					}
					conn.Write([]byte("x")) // the handshake, then a TLS 1.3 ticket with it
					conn.Close()
				}
			}()

			client := f.ca.ClientConfig()
			client.ServerName = "localhost"
			client.MaxVersion = version
			client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			dial := func() (resumed bool, serial int64) {
				t.Helper()
				conn, err := tls.Dial("tcp", ln.Addr().String(), client)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
					t.Fatal(err)
				}
				st := conn.ConnectionState()
				if st.Version != version {
					t.Fatalf("negotiated %s, want %s", tls.VersionName(st.Version), tls.VersionName(version))
				}
				return st.DidResume, st.PeerCertificates[0].SerialNumber.Int64()
			}
			want := func(what string, wantResumed bool, wantSerial int64) {
				t.Helper()
				if resumed, serial := dial(); resumed != wantResumed || serial != wantSerial {
					t.Errorf("%s: resumed %v, certificate %d; want resumed %v, certificate %d", what, resumed, serial, wantResumed, wantSerial)
				}
			}

			want("first connection", false, 1)
			want("second connection", true, 1)
			c2, k2 := f.ca.Leaf(t, 2)
			replaceFile(t, f.certFile, c2)
			replaceFile(t, f.keyFile, k2)
			if !s.check() {
				t.Fatal("the new pair was not loaded")
			}
			want("first connection after the reload", false, 2)
			want("second connection after the reload", true, 2)
		})
	}
}

// startTLS loads the key pair and serves HTTPS on tls_listen, as Run does
// in two steps (loadTLS before anything listens, serveTLS).
func (d *Daemon) startTLS() (*publicServer, error) {
	store, err := d.loadTLS()
	if err != nil || store == nil {
		return nil, err
	}
	return d.serveTLS(store)
}
