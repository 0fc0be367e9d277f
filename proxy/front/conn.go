package front

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deployer/deployer/proxy/internal/rawio"
)

// lingerTimeout is how long a connection the server closes after a
// response keeps reading what the client still sends: closing a socket
// with unread bytes makes the kernel send RST, which can destroy the
// response before the client reads it (net/http waits the same 500 ms).
const lingerTimeout = 500 * time.Millisecond

// conn is one client connection. Everything a request needs (the Request,
// its URL and Header map, the body reader, the ResponseWriter, the
// buffers) belongs to the connection and is reset for each request, so a
// keep-alive request allocates almost nothing: handlers must not keep the
// request, its header map or the writer once they return (net/http allows
// that; the proxy never does).
type conn struct {
	srv *Server
	rwc net.Conn
	// sock is rwc's socket, for the request's reads and the response's
	// writes. It goes back to sockPool with the read buffer while a
	// handler waits with its client watched by epoll (a held request),
	// unless a response is being written: see startBackgroundReadLocked.
	sock       *rawio.Conn
	remoteAddr string
	state      atomic.Uint64 // http.ConnState | tag<<8 (see setState)
	idles      uint64        // times the connection went idle (its goroutine's)

	br *bufio.Reader
	bw *bufio.Writer // from writerPool during a response; nil between

	// The handler phase and the background read (see context.go).
	// Guarded by mu while a handler runs; the connection's goroutine owns
	// them between requests. The one-byte fields sit together after mu:
	// the struct stays in a smaller allocation size class (see
	// TestConnSize).
	mu        sync.Mutex
	broken    atomic.Bool // a body or protocol failure: close after this response
	inHandler bool
	bodyDone  bool
	bgWanted  bool
	bgRunning bool
	bgAbort   bool
	hasByte   bool
	byteBuf   [1]byte
	rdArmed   bool // a read deadline may be set on rwc
	expect    bool // the request expects 100-continue (see serveRequest)
	bgDone    chan struct{}
	rdUntil   time.Time    // with rdArmed, the deadline set; zero: unknown
	watch     *clientWatch // the epoll watch of a waiting request (watch_linux.go)

	ctx      *reqCtx
	req      http.Request
	url      url.URL
	hdr      http.Header
	vals     []string
	fields   []field // parseHead's, reused
	prevHead string  // the last head's text, reused when the next is identical
	// body is the current request's body. One a handler was given is
	// never used again (a goroutine it left behind may still hold it, and
	// must find it closed): each request with a body gets a new one.
	body   *body
	noBody body // c.body for a request without one, never handed out
	rw     response
}

func newConn(s *Server, rwc net.Conn) *conn {
	c := &conn{srv: s, rwc: rwc, hdr: make(http.Header, 8)}
	if ra := rwc.RemoteAddr(); ra != nil {
		c.remoteAddr = ra.String()
	}
	c.noBody.c = c
	c.body = &c.noBody
	c.rw.c = c
	c.newContext()
	return c
}

// newContext gives the connection a fresh request context.
func (c *conn) newContext() {
	x := &reqCtx{c: c}
	c.mu.Lock()
	c.ctx = x
	c.mu.Unlock()
}

// setState records st in c.state: the state in the low byte; above it, for
// StateNew the unix second of the accept (see closeIdleConns), for
// StateIdle how many times the connection went idle, so that HandOver can
// tell a connection idle all along from one that served a request
// meanwhile without reading the clock twice per request.
func (c *conn) setState(st http.ConnState) {
	var tag uint64
	switch st {
	case http.StateNew:
		tag = uint64(time.Now().Unix())
	case http.StateIdle:
		c.idles++
		tag = c.idles
	}
	c.state.Store(uint64(st) | tag<<8)
	if hook := c.srv.ConnState; hook != nil {
		hook(c.rwc, st)
	}
}

func (c *conn) getState() (http.ConnState, time.Time) {
	v := c.state.Load()
	return http.ConnState(v & 0xff), time.Unix(int64(v>>8), 0)
}

func (c *conn) serve() {
	hijacked := false
	defer func() {
		// Handler panics are recovered in runHandler; this is for the
		// server's own, which must not take the process down either.
		if v := recover(); v != nil {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.srv.logger().Error("front: panic serving connection", "remote", c.remoteAddr,
				"panic", fmt.Sprint(v), "stack", string(buf))
		}
		if hijacked {
			return
		}
		c.rwc.Close()
		c.setState(http.StateClosed)
		c.srv.trackConn(c, false)
		c.releaseWriter()
		c.releaseReader()
		c.releaseSock()
	}()
	c.restoreReader()
	c.armReadDeadline(time.Now().Add(c.srv.readHeaderTimeout()))

	for first := true; ; first = false {
		got, err := c.readRequest(first)
		if got {
			c.setState(http.StateActive)
		}
		if err != nil {
			var pe *protoError
			if errors.As(err, &pe) {
				c.srv.logger().Debug("front: bad request", "remote", c.remoteAddr, "status", pe.status, "error", err)
				c.writeProtoError(pe)
				c.linger()
			}
			return
		}

		keep, hij := c.serveRequest()
		if hij {
			hijacked = true
			return
		}
		if !keep {
			c.linger()
			return
		}
		c.setState(http.StateIdle)
		if c.srv.inShutdown.Load() && !c.srv.handingOver.Load() {
			// Shutdown closes idle connections at once, as net/http.
			// After HandOver, a connection whose last response did
			// not say close waits for its next request (answered with
			// Connection: close) or its grace period.
			return
		}
	}
}

// readRequest reads and parses the next request head into c.req. got
// reports whether any byte of it arrived. A head that is not complete when
// its first bytes arrive gets ReadHeaderTimeout from then (the first
// request's runs from the accept).
func (c *conn) readRequest(first bool) (got bool, err error) {
	if !first && (c.br == nil || c.br.Buffered() == 0) && !c.hasByte {
		c.armIdleDeadline()
		if c.br == nil {
			// The buffer went back to the pool while the handler
			// waited: wait for the next request without one, as
			// a held request's connection (10,000 of them after a
			// pause) would otherwise all take one at once.
			c.restoreSock()
			if _, err := c.sock.Read(c.byteBuf[:]); err != nil {
				return false, err
			}
			c.hasByte = true
		} else if _, err := c.br.Peek(1); err != nil {
			return false, err
		}
	}
	c.restoreReader()
	if first {
		if _, err := c.br.Peek(1); err != nil {
			return false, err
		}
	}
	s, err := c.readHead(first)
	if err != nil {
		return true, err
	}
	// The parsed head is needed only to build the request: it lives on
	// this frame, not in the connection (which a held request keeps).
	var h reqHead
	err = parseHead(s, &h, c.fields)
	c.fields = h.fields
	if err != nil {
		return true, err
	}
	c.expect = h.expectContinue
	return true, c.buildRequest(&h)
}

// armReadDeadline sets rwc's read deadline to t.
func (c *conn) armReadDeadline(t time.Time) {
	c.rwc.SetReadDeadline(t)
	c.rdArmed, c.rdUntil = true, t
}

// armIdleDeadline makes sure the wait for the next request ends no sooner
// than IdleTimeout from now and no later than 9/8 of it. Setting a
// deadline costs a runtime timer change (and a clock read); a keep-alive
// connection serving request after request keeps the one it set last
// until it is less than IdleTimeout away, so it sets one per IdleTimeout/8
// instead of one per request.
func (c *conn) armIdleDeadline() {
	now := time.Now()
	idle := c.srv.idleTimeout()
	if left := c.rdUntil.Sub(now); c.rdArmed && !c.rdUntil.IsZero() && left >= idle && left <= idle+idle/8 {
		return
	}
	c.armReadDeadline(now.Add(idle + idle/8))
}

// readHead returns the next request head, without its final empty line,
// as a string whose slices the request is made of. Empty lines before a
// request line are skipped (RFC 9112 2.2). A head identical to the
// connection's previous one (the usual keep-alive client) reuses its
// string: no allocation.
func (c *conn) readHead(first bool) (string, error) {
	br := c.br
	limit := c.srv.maxHeaderBytes()
	deadlineSet := first
	var sc headScanner
	var bigHead []byte // a head longer than br's buffer
	for {
		if _, err := br.Peek(1); err != nil {
			return "", err
		}
		buf, _ := br.Peek(br.Buffered())
		end, err := sc.scan(buf)
		switch {
		case err != nil:
			return "", err
		case end == 0:
			// A leading empty line.
			br.Discard(2)
			if sc.skipped += 2; sc.skipped > limit {
				return "", errTooLarge
			}
			sc = headScanner{skipped: sc.skipped}
			continue
		case end > 0:
			if len(bigHead)+end > limit {
				return "", errTooLarge
			}
			var s string
			if len(bigHead) > 0 {
				bigHead = append(bigHead, buf[:end]...)
				s = string(bigHead[:len(bigHead)-2])
			} else if h := buf[:end-2]; string(h) == c.prevHead {
				s = c.prevHead
			} else {
				s = string(h)
				c.prevHead = s
			}
			br.Discard(end)
			return s, nil
		}
		if len(bigHead)+len(buf) > limit {
			return "", errTooLarge
		}
		if !deadlineSet {
			// The head did not come in one piece: from its first byte,
			// it has ReadHeaderTimeout to complete.
			c.armReadDeadline(time.Now().Add(c.srv.readHeaderTimeout()))
			deadlineSet = true
		}
		if len(buf) == br.Size() {
			// Longer than the buffer: collect it, and scan what follows
			// as a new piece.
			bigHead = append(bigHead, buf...)
			br.Discard(len(buf))
			sc.off = 0
			continue
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return "", err
		}
	}
}

// headScanner finds the end of a request head in successive pieces of it,
// refusing a bare LF as soon as it arrives (a lenient client's head would
// otherwise wait for a CRLFCRLF that never comes).
type headScanner struct {
	lines   int  // complete lines seen
	lineLen int  // bytes of the current line so far
	lastCR  bool // the last byte scanned was CR
	off     int  // bytes of the current piece scanned
	skipped int  // leading empty lines' bytes
}

// scan looks at buf, which either extends the piece scanned before (same
// start, more bytes) or, after the caller set off to 0, follows it. It
// returns the head's length in buf with its final CRLF, 0 for a leading
// empty line, or -1 if the end is not in buf yet.
func (sc *headScanner) scan(buf []byte) (int, error) {
	for {
		i := bytes.IndexByte(buf[sc.off:], '\n')
		if i < 0 {
			if sc.off < len(buf) {
				sc.lineLen += len(buf) - sc.off
				sc.lastCR = buf[len(buf)-1] == '\r'
				sc.off = len(buf)
			}
			return -1, nil
		}
		p := sc.off + i
		cr := sc.lastCR
		if p > 0 {
			cr = buf[p-1] == '\r'
		}
		if !cr {
			return -1, errBareLF
		}
		lineLen := sc.lineLen + i + 1 // with its CRLF
		sc.off, sc.lineLen, sc.lastCR = p+1, 0, false
		if lineLen == 2 {
			if sc.lines == 0 {
				return 0, nil
			}
			return p + 1, nil
		}
		sc.lines++
	}
}

// buildRequest makes c.req from h, reusing the connection's request,
// URL, Header map and value slices.
func (c *conn) buildRequest(h *reqHead) error {
	r := &c.req
	// An empty request with the context: WithContext is inlined and its
	// copy stays on the stack, so this allocates nothing, and the
	// connection keeps no template request (304 bytes) for it.
	*r = *(&http.Request{}).WithContext(c.ctx)
	r.Method = h.method
	r.RequestURI = h.target
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, int(h.minor)
	if h.minor == 0 {
		r.Proto = "HTTP/1.0"
	}
	r.RemoteAddr = c.remoteAddr
	r.Close = h.close
	if err := c.parseURL(h.method, h.target); err != nil {
		return err
	}
	r.URL = &c.url
	r.Host = c.url.Host
	if r.Host == "" {
		r.Host = h.host
	}

	hdr := c.hdr
	clear(hdr)
	if cap(c.vals) < len(h.fields) {
		// Room for a few more on the connection's later requests;
		// sized to this head, so that a held request with a short
		// head keeps a short slice.
		c.vals = make([]string, len(h.fields)+len(h.fields)/2+2)
	}
	vals := c.vals[:len(h.fields)]
	for i, f := range h.fields {
		switch f.k {
		case "Host", "Transfer-Encoding":
			continue // in r.Host and r.TransferEncoding, as net/http
		}
		vals[i] = f.v
		if vs, ok := hdr[f.k]; ok {
			if f.k == "Content-Length" {
				continue // repeated, and equal: once is enough
			}
			hdr[f.k] = append(vs, f.v)
		} else {
			hdr[f.k] = vals[i : i+1 : i+1]
		}
	}
	r.Header = hdr

	switch {
	case h.chunked:
		r.ContentLength = -1
		r.TransferEncoding = chunkedTE
		c.body = &body{c: c}
		c.body.reset(true, 0)
		r.Body = c.body
	case h.contentLength > 0:
		r.ContentLength = h.contentLength
		c.body = &body{c: c}
		c.body.reset(false, h.contentLength)
		r.Body = c.body
	default:
		r.Body = http.NoBody
		c.body = &c.noBody
		c.body.reset(false, 0)
	}
	if h.trailer {
		// As net/http: the announced names move from Header to Trailer,
		// with values once the body is read.
		t := make(http.Header)
		for _, v := range hdr["Trailer"] {
			for name := range strings.SplitSeq(v, ",") {
				if name = strings.Trim(name, " \t"); name != "" {
					t[http.CanonicalHeaderKey(name)] = nil
				}
			}
		}
		delete(hdr, "Trailer")
		if len(t) > 0 {
			r.Trailer = t
		}
	}
	if r.Body != http.NoBody && c.rdArmed {
		// The body is read without a deadline, as net/http's server
		// (with no ReadTimeout) does.
		c.rwc.SetReadDeadline(time.Time{})
		c.rdArmed = false
	}
	return nil
}

var chunkedTE = []string{"chunked"}

// parseURL sets c.url from a request target as http.ReadRequest would. An
// origin-form path of characters that need no escaping (nearly all) is
// taken as it is; anything else goes through url.ParseRequestURI.
func (c *conn) parseURL(method, target string) error {
	if target[0] == '/' {
		i := 1
		for i < len(target) && pathSafe[target[i]] {
			i++
		}
		if i == len(target) {
			c.url = url.URL{Path: target}
			return nil
		}
		if target[i] == '?' {
			q := target[i+1:]
			c.url = url.URL{Path: target[:i], RawQuery: q, ForceQuery: q == ""}
			return nil
		}
	}
	raw := target
	// As net/http: "CONNECT host:port" carries only an authority.
	authority := method == "CONNECT" && target[0] != '/'
	if authority {
		raw = "http://" + target
	}
	u, err := url.ParseRequestURI(raw)
	if err != nil {
		return errTarget
	}
	if authority {
		u.Scheme = ""
	}
	c.url = *u
	return nil
}

// pathSafe: bytes that url.URL keeps as they are in a path (no RawPath).
var pathSafe = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-_.~$&+,/:;=@" {
		t[c] = true
	}
	return t
}()

// serveRequest runs the handler on c.req and completes its response. keep
// reports whether the connection may serve another request; hijacked that
// it is the handler's now.
func (c *conn) serveRequest() (keep, hijacked bool) {
	r := &c.req
	c.rw.reset(r.Method == http.MethodHead)
	if c.expect {
		c.rw.expect = true
		c.rw.canWriteContinue.Store(true)
	}
	c.mu.Lock()
	c.inHandler, c.bodyDone, c.bgWanted = true, r.Body == http.NoBody, false
	c.mu.Unlock()

	panicked, abort := c.runHandler()

	c.stopBackgroundRead()
	if c.ctx.used() || c.ctx.Err() != nil {
		c.ctx.cancel()
		c.newContext()
	}
	if c.rw.hijacked {
		c.body.abandon()
		return false, true
	}
	if panicked {
		c.rw.noContinue()
		c.body.finish(false)
		if !abort && !c.rw.committed && c.rw.werr == nil {
			c.releaseWriter()
			c.writeProtoError(&protoError{status: http.StatusInternalServerError})
		}
		return false, false
	}
	c.rw.noContinue()
	unsent := c.rw.continueUnsent()
	keep = c.rw.finish()
	c.releaseWriter()
	// Drain what the handler left of the body, unless the client is
	// still waiting for a 100 Continue (it may never send it).
	keep = c.body.finish(!unsent) && keep && !c.broken.Load()
	return keep, false
}

// runHandler calls the handler, recovering a panic: http.ErrAbortHandler
// silently (the proxy aborts a response that broke off that way), anything
// else logged with its stack.
func (c *conn) runHandler() (panicked, abort bool) {
	defer func() {
		if v := recover(); v != nil {
			panicked = true
			if v == http.ErrAbortHandler {
				abort = true
				return
			}
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.srv.logger().Error("front: panic serving request", "remote", c.remoteAddr,
				"method", c.req.Method, "path", c.url.Path, "panic", fmt.Sprint(v), "stack", string(buf))
		}
	}()
	h := c.srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	h.ServeHTTP(&c.rw, &c.req)
	return false, false
}

// bodyEOF is called by the body reader once the body is read to its end:
// a background read waiting for that may start. Called with c.body.mu
// held.
func (c *conn) bodyEOF() {
	c.mu.Lock()
	c.bodyDone = true
	c.startBackgroundReadLocked()
	c.mu.Unlock()
}

// readerPool holds the connections' 4 KiB read buffers. A connection
// gives its buffer back while its handler waits with nothing buffered (see
// startBackgroundReadLocked) and when it closes.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

// releaseReader gives c's read buffer back to the pool. Only when nothing
// is buffered (or the connection is done), and only by the goroutine that
// owns c.br then.
func (c *conn) releaseReader() {
	if c.br != nil {
		c.br.Reset(nil)
		readerPool.Put(c.br)
		c.br = nil
	}
}

// restoreReader gives c a read buffer if it has none, and the socket
// reader it reads from.
func (c *conn) restoreReader() {
	c.restoreSock()
	if c.br == nil {
		c.br = readerPool.Get().(*bufio.Reader)
		c.br.Reset(c)
	}
}

// sockPool holds the connections' socket readers and writers while they
// wait with their requests held.
var sockPool = sync.Pool{New: func() any { return new(rawio.Conn) }}

// restoreSock gives c its socket reader and writer if it has none. Called
// by the connection's goroutine between requests, or with c.mu held.
func (c *conn) restoreSock() {
	if c.sock == nil {
		c.sock = sockPool.Get().(*rawio.Conn)
		c.sock.Init(c.rwc)
	}
}

// releaseSock gives c.sock back to the pool, when no read or write can use
// it until restoreSock: see startBackgroundReadLocked.
func (c *conn) releaseSock() {
	if c.sock != nil {
		c.sock.Init(nil)
		sockPool.Put(c.sock)
		c.sock = nil
	}
}

func (c *conn) releaseWriter() {
	if c.bw != nil {
		c.bw.Reset(nil)
		writerPool.Put(c.bw)
		c.bw = nil
	}
}

// writeProtoError answers a request the server refused, and says it
// closes the connection.
func (c *conn) writeProtoError(pe *protoError) {
	text := http.StatusText(pe.status)
	var b []byte
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(pe.status), 10)
	b = append(b, ' ')
	b = append(b, text...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(text)+5), 10)
	b = append(b, "\r\n\r\n"...)
	b = strconv.AppendInt(b, int64(pe.status), 10)
	b = append(b, ' ')
	b = append(b, text...)
	b = append(b, '\n')
	c.rwc.SetWriteDeadline(time.Now().Add(c.srv.readHeaderTimeout()))
	c.rwc.Write(b)
}

// linger half-closes the connection and reads what the client still sends
// for up to lingerTimeout (or maxDrain bytes), so that closing it does not
// reset a response the client has not read yet.
func (c *conn) linger() {
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.rwc.SetReadDeadline(time.Now().Add(lingerTimeout))
	var buf [4096]byte
	for n := 0; n < maxDrain; {
		k, err := c.rwc.Read(buf[:])
		n += k
		if err != nil {
			return
		}
	}
}
