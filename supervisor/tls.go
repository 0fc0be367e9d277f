package supervisor

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// ErrTLSCert is a key pair the HTTPS listener cannot use: a file that is
// missing or unreadable, not PEM, or a key that does not match the
// certificate.
var ErrTLSCert = errors.New("supervisor: TLS certificate not usable")

const (
	// certDebounce is how long the events about the certificate files must
	// have settled before they are read: a certificate and its key written
	// one after the other are then read together.
	certDebounce = 200 * time.Millisecond
	// certMaxDelay bounds the debounce when a busy directory never settles.
	certMaxDelay = 2 * time.Second
	// certRecheck is how often the files are looked at with no event: the
	// safety net for an event missed (a watch lost with its directory, an
	// inotify instance that could not be had).
	certRecheck = time.Minute
	// maxPEMFile bounds what is read of a certificate or key file.
	maxPEMFile = 1 << 20
)

// loadTLS loads the HTTPS key pair (nil, nil without tls_listen). Run calls
// it before it listens on anything, so that a pair that does not load stops
// a new daemon before it accepts a connection.
func (d *Daemon) loadTLS() (*certStore, error) {
	pc := d.config().Deployer.Public
	if pc.TLSListen == "" {
		return nil, nil
	}
	return newCertStore(pc.TLSCert, pc.TLSKey, d.log)
}

// serveTLS listens on tls_listen and serves HTTPS with store's pair.
func (d *Daemon) serveTLS(store *certStore) (*publicServer, error) {
	pc := d.config().Deployer.Public
	l, err := d.listen("tcp", pc.TLSListen)
	if err != nil {
		return nil, fmt.Errorf("supervisor: listen %s (TLS): %w", pc.TLSListen, err)
	}
	store.start(d.ctx)
	srv := &http.Server{
		ReadHeaderTimeout: pc.ReadHeaderTimeout, // also bounds the TLS handshake
		IdleTimeout:       pc.IdleTimeout,
		MaxHeaderBytes:    pc.MaxHeaderBytes,
		// "http: TLS handshake error" lines from scanners and clients that
		// give up are routine on a public port: debug only.
		ErrorLog:  slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
		Protocols: new(http.Protocols),
	}
	// Serve (not ServeTLS) on a listener that is already TLS enables HTTP/2
	// only through the protocols asked for here and "h2" in the
	// tls.Config's NextProtos: srv.TLSConfig stays nil, so net/http sets
	// up its HTTP/2 server without touching the config in use (Go issue
	// 15908; net/http's shouldConfigureHTTP2ForServe).
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	pub := newPublicServer(tls.NewListener(l, store.tlsConfig()), d.publicHandler(), srv)
	go pub.serve()
	d.log.Info("proxy listening (TLS)", append([]any{"addr", l.Addr().String()}, certAttrs(store.current())...)...)
	return pub, nil
}

// certStore is the HTTPS listener's certificate: loaded from tls_cert and
// tls_key, handed to every new handshake, and loaded again when the files
// change. A pair that does not load (a half-written file, a key that does
// not match) is logged and the previous one stays: connections go on with
// the certificate they have, new ones get the last good one.
//
// It watches the directories of both files, and of the files their
// symlinks lead to, never the files themselves: editors and mv replace
// files, certbot swaps symlinks, and Kubernetes swaps a symlinked directory
// (..data) without any event naming the file; a watch on the old inode dies
// with it (PITFALLS: fsnotify). Any event in those directories schedules a
// look after certDebounce; the look compares each file's device, inode,
// size and mtime with what they were at the last load (or failed load) and
// loads the pair only if one changed. The same look runs every certRecheck.
type certStore struct {
	certFile, keyFile string
	log               *slog.Logger
	debounce, recheck time.Duration

	cur atomic.Pointer[tls.Certificate]
	// gen counts the certificates loaded: every session ticket carries the
	// one it was issued under, and one from before the last reload is not
	// resumed (see tlsConfig).
	gen atomic.Uint64

	// Used by the watching goroutine only, once started.
	tried pairStamp // the files when last loaded or tried
	w     *fsnotify.Watcher
	done  chan struct{} // closed when the watching goroutine returns
}

// newCertStore loads the pair; it fails with ErrTLSCert.
func newCertStore(certFile, keyFile string, log *slog.Logger) (*certStore, error) {
	s := &certStore{certFile: certFile, keyFile: keyFile, log: log, debounce: certDebounce, recheck: certRecheck}
	s.tried, _ = stampPair(certFile, keyFile)
	c, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	s.cur.Store(c)
	s.warnValidity(c)
	return s, nil
}

// current returns the certificate new handshakes get.
func (s *certStore) current() *tls.Certificate { return s.cur.Load() }

// tlsConfig is the listener's: TLS 1.2 and up, HTTP/2 offered first, and
// the certificate read at each handshake, so a reload needs no new
// listener and leaves established connections alone.
//
// A client that resumes a session skips the certificate: it keeps the
// identity it verified when the session began. So that a rotation (a key
// replaced because it leaked, a name added or dropped) reaches every new
// connection, each session ticket records the certificate generation it
// was issued under, and a ticket from before the last reload is declined:
// that client makes a full handshake and gets the new certificate. Ticket
// keys stay crypto/tls's own, rotated by it. (A handshake under way during
// the reload itself may get its ticket tagged with the new generation
// while it used the old certificate: a window of one handshake.)
func (s *certStore) tlsConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cur.Load(), nil
		},
	}
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		ss.Extra = append(ss.Extra, certGenTag(s.gen.Load()))
		return cfg.EncryptTicket(cs, ss)
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := cfg.DecryptTicket(identity, cs)
		if ss == nil || err != nil {
			return ss, err // not ours, or too old for crypto/tls: a full handshake
		}
		tag := certGenTag(s.gen.Load())
		if !slices.ContainsFunc(ss.Extra, func(e []byte) bool { return bytes.Equal(e, tag) }) {
			return nil, nil // issued under an earlier certificate
		}
		return ss, nil
	}
	return cfg
}

// certGenTag is the entry a session ticket's Extra holds for certificate
// generation gen.
func certGenTag(gen uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("deployer-cert-gen:"), gen)
}

// start watches the files until ctx ends. Without inotify (out of
// instances or watches) the periodic look still runs: it is logged, not
// fatal.
func (s *certStore) start(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Error("TLS certificate files not watched: looking every "+s.recheck.String()+" only", "error", err)
	} else {
		s.w = w
		s.syncWatches()
	}
	s.done = make(chan struct{})
	go s.run(ctx)
}

// wait returns once the watching has ended (its ctx is done), if it
// started.
func (s *certStore) wait() {
	if s.done != nil {
		<-s.done
	}
}

func (s *certStore) run(ctx context.Context) {
	defer close(s.done)
	var events <-chan fsnotify.Event
	var errs <-chan error
	if s.w != nil {
		defer s.w.Close()
		events, errs = s.w.Events, s.w.Errors
	}
	tick := time.NewTicker(s.recheck)
	defer tick.Stop()
	// Go 1.23 timers: Stop and Reset leave no stale tick in the channel.
	look := time.NewTimer(time.Hour)
	look.Stop()
	defer look.Stop()
	var first time.Time // of the events not looked at yet; zero: none
	schedule := func() {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		look.Reset(min(s.debounce, first.Add(certMaxDelay).Sub(now)))
	}
	for {
		// fsnotify's Events is unbuffered on Linux: this loop only
		// schedules, the look happens on the timer (PITFALLS).
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			schedule()
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				schedule() // events were lost: look anyway
				continue
			}
			s.log.Warn("watching the TLS certificate files", "error", err)
		case <-look.C:
			first = time.Time{}
			s.check()
		case <-tick.C:
			s.check()
		}
	}
}

// check loads the pair if either file changed since the last try, and
// reports whether the certificate in use was replaced.
func (s *certStore) check() bool {
	if s.w != nil {
		s.syncWatches()
	}
	st, err := stampPair(s.certFile, s.keyFile)
	if st == s.tried {
		return false // unchanged, or failed the same way as last time
	}
	s.tried = st
	if err != nil {
		s.log.Error("TLS certificate not reloaded: keeping the one in use", "cert", s.certFile, "key", s.keyFile, "error", err)
		return false
	}
	c, err := loadKeyPair(s.certFile, s.keyFile)
	if err != nil {
		s.log.Error("TLS certificate not reloaded: keeping the one in use", "cert", s.certFile, "key", s.keyFile, "error", err)
		return false
	}
	s.cur.Store(c)
	s.gen.Add(1) // tickets issued from now on are resumed; older ones not
	s.log.Info("TLS certificate reloaded", certAttrs(c)...)
	s.warnValidity(c)
	return true
}

// syncWatches watches the directories of both files and of what their
// symlinks lead to now (watchFileDirs).
func (s *certStore) syncWatches() { watchFileDirs(s.w, s.log, s.certFile, s.keyFile) }

// warnValidity logs a certificate outside its validity period: it is
// served all the same (the operator may be mid-rotation), but clients will
// refuse it.
func (s *certStore) warnValidity(c *tls.Certificate) {
	now := time.Now()
	if leaf := c.Leaf; leaf != nil && (now.After(leaf.NotAfter) || now.Before(leaf.NotBefore)) {
		s.log.Warn("TLS certificate is not valid now", certAttrs(c)...)
	}
}

// certAttrs are the log attributes that tell certificates apart.
func certAttrs(c *tls.Certificate) []any {
	if c == nil || c.Leaf == nil {
		return nil
	}
	return []any{
		"subject", c.Leaf.Subject.String(),
		"dns", c.Leaf.DNSNames,
		"serial", c.Leaf.SerialNumber.Text(16),
		"not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339),
	}
}

// loadKeyPair reads and parses a PEM certificate (chain) and its key,
// checking that the key belongs to the certificate. Errors wrap ErrTLSCert
// and name the file at fault where one is.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := readPEMFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("%w: tls_cert: %w", ErrTLSCert, err)
	}
	keyPEM, err := readPEMFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: tls_key: %w", ErrTLSCert, err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// X509KeyPair's messages say "certificate input" or "key input".
		return nil, fmt.Errorf("%w: tls_cert %s, tls_key %s: %w", ErrTLSCert, certFile, keyFile, err)
	}
	if c.Leaf == nil { // GODEBUG x509keypairleaf=0
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: tls_cert %s: %w", ErrTLSCert, certFile, err)
		}
	}
	return &c, nil
}

func readPEMFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // *PathError: names the file
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxPEMFile {
		return nil, fmt.Errorf("%s: larger than %d bytes: not a PEM file", path, maxPEMFile)
	}
	return b, nil
}

// fileStamp tells whether a file changed: a replaced file (rename, symlink
// swap) has a new inode, a rewritten one a new mtime or size.
type fileStamp struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

type pairStamp struct {
	cert, key fileStamp
	err       string // why a file could not be looked at; "" if both could
}

// stampPair stats both files, following symlinks. A file that cannot be
// stat'ed has a zero stamp, and the error is in both the result (so that
// the same failure is logged once) and err.
func stampPair(certFile, keyFile string) (pairStamp, error) {
	var st pairStamp
	var errs []error
	for _, f := range []struct {
		path string
		to   *fileStamp
	}{{certFile, &st.cert}, {keyFile, &st.key}} {
		fi, err := os.Stat(f.path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		*f.to = fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			f.to.dev, f.to.ino = uint64(sys.Dev), sys.Ino
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		st.err = err.Error()
	}
	return st, err
}
