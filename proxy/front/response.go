package front

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deployer/deployer/proxy/internal/rawio"
	"github.com/deployer/deployer/proxy/internal/syntax"
)

// bufferBeforeHead is how much body a handler may write, with no
// Content-Length and without flushing, before the head goes out: a
// response that ends within it gets a Content-Length (as net/http does
// with the same 2 KiB), so small answers such as the proxy's errors keep
// HTTP/1.0 connections alive and need no chunking.
const bufferBeforeHead = 2 << 10

// writerPool holds the 4 KiB buffers responses are written through. A
// connection takes one for a response and gives it back after the final
// flush: an idle or held connection keeps none.
var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

// response is the http.ResponseWriter of a connection, reset for each
// request.
//
// The head goes out when the handler calls WriteHeader with a
// Content-Length set, or at the first Write, Flush or return that needs it;
// headers set after WriteHeader still count until then (net/http copies
// them at WriteHeader). The framing is the handler's Content-Length; else a
// computed one when the handler returns with its body in the 2 KiB
// pre-head buffer; else chunked (HTTP/1.1) or until close (HTTP/1.0).
type response struct {
	c      *conn
	header http.Header // made at the first Header call: a held request has none

	status  int
	clen    int64 // the declared length; -1: none
	written int64
	pending []byte // body written before the head
	werr    error

	// 100 Continue: sent at the first body read, unless the handler wrote
	// something first. The body may be read on another goroutine than the
	// handler's, so the flag is atomic and the write locked.
	continueMu       sync.Mutex
	canWriteContinue atomic.Bool
	sentContinue     atomic.Bool // and got it
	expect           bool        // the request expects 100-continue

	wroteHeader bool
	committed   bool // the head is in bw
	chunked     bool
	closeAfter  bool
	isHead      bool
	bodyless    bool // the status allows no body
	handlerDone bool
	hijacked    bool
	wdlSet      bool // SetWriteDeadline was used
	fieldsDate  bool // fields has a Date

	// fields: header lines WriteHeaderFields has commit write after the
	// map's; nil otherwise.
	fields []byte
}

func (w *response) reset(isHead bool) {
	clear(w.header)
	w.status, w.wroteHeader, w.committed, w.chunked, w.closeAfter = 0, false, false, false, false
	w.isHead, w.bodyless, w.clen, w.written = isHead, false, -1, 0
	w.pending = w.pending[:0]
	w.handlerDone, w.hijacked, w.werr, w.wdlSet = false, false, nil, false
	w.expect, w.fieldsDate = false, false
	w.sentContinue.Store(false)
}

func (w *response) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	return w.header
}

// sendContinue writes "100 Continue" if the request expects it and the
// handler has written nothing yet (RFC 9110 10.1.1).
func (w *response) sendContinue() {
	if !w.canWriteContinue.Load() {
		return
	}
	w.continueMu.Lock()
	defer w.continueMu.Unlock()
	if !w.canWriteContinue.Load() {
		return
	}
	w.canWriteContinue.Store(false)
	w.sentContinue.Store(true)
	bw := w.writer()
	bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	if err := bw.Flush(); err != nil {
		w.fail(err)
	}
}

// noContinue ensures no 100 Continue goes out any more.
func (w *response) noContinue() {
	if !w.canWriteContinue.Load() {
		return
	}
	w.continueMu.Lock()
	defer w.continueMu.Unlock()
	w.canWriteContinue.Store(false)
}

// continueUnsent reports whether the client is waiting for a 100 Continue
// that never came: it may or may not send its body, so the connection
// cannot be reused. Call after noContinue.
func (w *response) continueUnsent() bool {
	return w.expect && !w.sentContinue.Load()
}

func (w *response) writer() *bufio.Writer {
	c := w.c
	if c.bw == nil {
		bw := writerPool.Get().(*bufio.Writer)
		// Under c.mu: a client watch starting meanwhile releases the
		// socket only if no writer has it (startBackgroundReadLocked).
		c.mu.Lock()
		c.restoreSock()
		bw.Reset(c.sock)
		c.bw = bw
		c.mu.Unlock()
	}
	return c.bw
}

func (w *response) WriteHeader(code int) {
	if w.hijacked {
		return
	}
	if code < 100 || code > 999 {
		panic("front: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if w.wroteHeader {
		return // superfluous, as net/http (which logs it)
	}
	w.noContinue()
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.writeInterim(code)
		return
	}
	w.setStatus(code)
	if vs := w.header["Content-Length"]; len(vs) > 0 {
		if n, ok := parseLength(vs[0]); ok {
			w.clen = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
	if w.clen >= 0 {
		// The framing is known: the head can go now, and the body
		// straight after it.
		w.commit()
	}
}

// setStatus records a final (or 101) response's status: its head is
// written now, and whether it may have a body.
func (w *response) setStatus(code int) {
	w.wroteHeader = true
	w.status = code
	w.bodyless = code < 200 || code == http.StatusNoContent || code == http.StatusNotModified
}

// WriteHeaderFields is WriteHeader for a final response whose header
// fields the handler has as text already: the proxy, with an app's response
// head, spares a header map that way. fields holds "Name: value\r\n" lines,
// names valid and values free of CR and LF, none hop-by-hop (Connection,
// Transfer-Encoding...); length is the Content-Length among them, -1 for
// none; hasDate reports a Date among them. They are written after the
// fields of Header(), not added to it. The head is in the connection's
// buffer when it returns: fields may be reused then.
func (w *response) WriteHeaderFields(code int, fields []byte, length int64, hasDate bool) {
	if w.hijacked || w.wroteHeader {
		return
	}
	if code < 200 || code > 999 || code == http.StatusSwitchingProtocols {
		panic("front: WriteHeaderFields code " + strconv.Itoa(code) + " is not a final response's")
	}
	w.noContinue()
	w.setStatus(code)
	if length >= 0 {
		delete(w.header, "Content-Length") // the fields' is the one
	}
	w.clen = length
	w.fields, w.fieldsDate = fields, hasDate
	w.commit()
	w.fields = nil
}

// writeInterim sends a 1xx response at once (103 Early Hints and the like,
// passed on by the proxy), with the headers set so far.
func (w *response) writeInterim(code int) {
	if w.c.req.ProtoMinor == 0 {
		return // RFC 9110 15.2: never to an HTTP/1.0 client
	}
	bw := w.writer()
	writeStatusLine(bw, w.c.req.ProtoMinor, code)
	for k, vs := range w.header {
		if k == "Content-Length" || k == "Transfer-Encoding" {
			continue
		}
		writeField(bw, k, vs)
	}
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		w.fail(err)
	}
}

func (w *response) Write(p []byte) (int, error) { return w.write(p, "") }

// WriteString spares io.WriteString a conversion (an allocation).
func (w *response) WriteString(s string) (int, error) { return w.write(nil, s) }

// write writes p, or s when p is nil.
func (w *response) write(p []byte, s string) (int, error) {
	n := len(p) + len(s)
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if n == 0 {
		return 0, nil
	}
	if w.bodyless {
		return 0, http.ErrBodyNotAllowed
	}
	if w.clen >= 0 && w.written+int64(n) > w.clen {
		w.closeAfter = true // the client must not wait for a body that won't come
		return 0, http.ErrContentLength
	}
	w.written += int64(n)
	if w.isHead {
		return n, nil
	}
	if w.werr != nil {
		return 0, w.werr
	}
	if !w.committed {
		if len(w.pending)+n <= bufferBeforeHead {
			if w.pending == nil {
				w.pending = make([]byte, 0, bufferBeforeHead)
			}
			w.pending = append(w.pending, p...)
			w.pending = append(w.pending, s...)
			return n, nil
		}
		w.commit()
	}
	return w.writeBody(p, s)
}

// writeBody writes p (or s) after the head, as a chunk when chunking.
func (w *response) writeBody(p []byte, s string) (int, error) {
	if w.werr != nil {
		return 0, w.werr
	}
	n := len(p) + len(s)
	bw := w.c.bw
	if w.chunked {
		var buf [16]byte
		bw.Write(strconv.AppendInt(buf[:0], int64(n), 16))
		bw.WriteString("\r\n")
	}
	var err error
	if p != nil {
		_, err = bw.Write(p)
	} else {
		_, err = bw.WriteString(s)
	}
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	if err != nil {
		w.fail(err)
		return 0, err
	}
	return n, nil
}

func (w *response) Flush() { w.FlushError() }

// FlushError sends what was written so far, the head included: with no
// Content-Length, the response is chunked from here on.
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit()
	}
	if w.werr != nil {
		return w.werr
	}
	if err := w.c.bw.Flush(); err != nil {
		w.fail(err)
		return err
	}
	return nil
}

// fail records a write error: the response is lost, the connection will
// be closed, and (as net/http does) the request's context is cancelled.
func (w *response) fail(err error) {
	if w.werr == nil {
		w.werr = err
	}
	w.closeAfter = true
	w.c.ctx.cancel()
}

// commit decides the framing and writes the head into bw, followed by the
// body bytes buffered so far.
func (w *response) commit() {
	w.committed = true
	c := w.c
	r := &c.req
	h := w.Header() // the map the head is written from, and setLength writes to
	_, hasTrailer := h["Trailer"]

	switch {
	case w.bodyless || w.isHead:
		// No body, whatever the headers say. A HEAD answer keeps the
		// handler's Content-Length, or gets the length it wrote.
		if w.isHead && w.clen < 0 && w.handlerDone && w.written > 0 && !hasTrailer {
			w.clen = w.written
			w.setLength(w.written)
		}
	case w.clen >= 0:
	case w.handlerDone && !hasTrailer:
		w.clen = int64(len(w.pending))
		w.setLength(w.clen)
	case r.ProtoMinor >= 1:
		w.chunked = true
	default:
		w.closeAfter = true // HTTP/1.0 body of unknown length: it ends at close
	}
	if w.status == http.StatusNoContent || w.status < 200 {
		delete(h, "Content-Length")
	}

	if r.Close || c.srv.inShutdown.Load() || c.broken.Load() {
		w.closeAfter = true
	}
	if w.handlerDone && (w.continueUnsent() && !c.body.done() || c.body.tooMuchLeft()) {
		// The body left unread will not be drained (see body.finish):
		// say so now.
		w.closeAfter = true
	}
	conn, hasConn := h["Connection"]
	if hasConn && headerHasToken(conn, "close") {
		w.closeAfter = true
	}

	bw := w.writer()
	writeStatusLine(bw, r.ProtoMinor, w.status)
	writeConn := !hasConn
	for k, vs := range h {
		switch {
		case k == "Transfer-Encoding":
			continue // the server frames the response
		case k == "Connection":
			if w.closeAfter && !headerHasToken(vs, "close") {
				writeConn = true
				continue
			}
		case strings.HasPrefix(k, http.TrailerPrefix):
			continue
		}
		writeField(bw, k, vs)
	}
	bw.Write(w.fields)
	if _, ok := h["Date"]; !ok && !w.fieldsDate {
		bw.Write(dateLine())
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if writeConn {
		switch {
		case w.closeAfter && r.ProtoMinor >= 1:
			bw.WriteString("Connection: close\r\n")
		case !w.closeAfter && r.ProtoMinor == 0:
			bw.WriteString("Connection: keep-alive\r\n")
		}
	}
	bw.WriteString("\r\n")
	if len(w.pending) > 0 {
		p := w.pending
		w.pending = w.pending[:0]
		w.writeBody(p, "")
	}
}

// setLength sets the Content-Length header the server computed. The
// string is the one allocation of such a response.
func (w *response) setLength(n int64) {
	w.Header()["Content-Length"] = []string{strconv.FormatInt(n, 10)}
}

// finish completes the response after the handler returned: the head if
// nothing forced it out, the last chunk and trailers, and the flush. It
// reports whether the connection can serve another request.
func (w *response) finish() bool {
	w.handlerDone = true
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit()
	}
	if w.chunked && w.werr == nil {
		w.writeTrailers()
	}
	if w.clen >= 0 && !w.isHead && !w.bodyless && w.written != w.clen {
		// Short of its Content-Length: the client is waiting for bytes
		// that will not come. Closing is the only way to keep it in step.
		w.closeAfter = true
	}
	if w.werr == nil {
		if w.c.bw.Buffered() > 0 {
			// The response's last bytes go out with the others of
			// this scheduling round (see rawio.Yield).
			rawio.Yield()
		}
		if err := w.c.bw.Flush(); err != nil {
			w.fail(err)
		}
	}
	if w.wdlSet {
		w.c.rwc.SetWriteDeadline(time.Time{})
	}
	return !w.closeAfter && w.werr == nil
}

// writeTrailers ends a chunked body: the last chunk, then the trailers the
// handler announced in its Trailer header and those it set with
// http.TrailerPrefix.
func (w *response) writeTrailers() {
	bw := w.c.bw
	bw.WriteString("0\r\n")
	h := w.Header()
	if announced, ok := h["Trailer"]; ok {
		for _, list := range announced {
			for name := range strings.SplitSeq(list, ",") {
				k := http.CanonicalHeaderKey(strings.Trim(name, " \t"))
				if vs, ok := h[k]; ok && k != "" && !forbiddenTrailer(k) {
					writeField(bw, k, vs)
				}
			}
		}
	}
	for k, vs := range h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && name != "" && !forbiddenTrailer(name) {
			writeField(bw, name, vs)
		}
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		w.fail(err)
	}
}

func forbiddenTrailer(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// Hijack hands the connection over to the handler, with a reader that
// holds what the client sent after the request head (Go issue 80875: a
// websocket frame sent with the upgrade request) and a writer holding a
// head written but not flushed yet. The server forgets the connection: it
// neither closes it nor waits for it.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.handlerDone {
		return nil, nil, http.ErrHijacked
	}
	c := w.c
	w.noContinue()
	c.stopBackgroundRead()
	c.restoreReader()
	if c.hasByte {
		// Move the background read's byte into the reader, where the
		// hijacker looks for early bytes.
		c.br.Peek(c.br.Buffered() + 1)
	}
	if c.rdArmed {
		c.rwc.SetReadDeadline(time.Time{})
		c.rdArmed = false
	}
	bw := w.writer()
	if w.committed && w.werr == nil {
		if err := bw.Flush(); err != nil {
			return nil, nil, err
		}
	}
	w.hijacked = true
	c.bw = nil // the hijacker's now
	c.setState(http.StateHijacked)
	c.srv.trackConn(c, false)
	return c.rwc, bufio.NewReadWriter(c.br, bw), nil
}

// SetReadDeadline and SetWriteDeadline serve http.ResponseController.
func (w *response) SetReadDeadline(t time.Time) error {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	w.c.rdArmed, w.c.rdUntil = true, time.Time{} // re-armed before the next request either way
	return w.c.rwc.SetReadDeadline(t)
}

func (w *response) SetWriteDeadline(t time.Time) error {
	w.wdlSet = true
	return w.c.rwc.SetWriteDeadline(t)
}

// EnableFullDuplex serves http.ResponseController: this server never
// stops a handler from reading its request body while it writes the
// response, so there is nothing to enable.
func (w *response) EnableFullDuplex() error { return nil }

// writeField writes one header's lines. A name that is not a token is
// skipped and CR or LF in a value become spaces, as net/http does, so no
// handler can split the response.
func writeField(bw *bufio.Writer, k string, vs []string) {
	if !isToken(k) {
		return
	}
	for _, v := range vs {
		bw.WriteString(k)
		bw.WriteString(": ")
		bw.WriteString(syntax.SafeValue(v))
		bw.WriteString("\r\n")
	}
}

func headerHasToken(vs []string, token string) bool {
	for _, v := range vs {
		if hasToken(v, token) {
			return true
		}
	}
	return false
}

// parseLength parses a Content-Length a handler set.
func parseLength(v string) (int64, bool) {
	v = strings.Trim(v, " \t")
	if !validContentLength(v) {
		return 0, false
	}
	return parseDigits(v), true
}

// statusLines holds " 200 OK\r\n" and the like, for every code with a
// name; the protocol goes before.
var statusLines = func() (t [600]string) {
	for code := range t {
		if text := http.StatusText(code); text != "" {
			t[code] = " " + strconv.Itoa(code) + " " + text + "\r\n"
		}
	}
	return t
}()

// writeStatusLine answers in the request's protocol version, as net/http.
func writeStatusLine(bw *bufio.Writer, minor, code int) {
	if minor == 0 {
		bw.WriteString("HTTP/1.0")
	} else {
		bw.WriteString("HTTP/1.1")
	}
	if code < len(statusLines) && statusLines[code] != "" {
		bw.WriteString(statusLines[code])
		return
	}
	var buf [8]byte
	bw.WriteByte(' ')
	bw.Write(strconv.AppendInt(buf[:0], int64(code), 10))
	bw.WriteString(" status code ")
	bw.Write(strconv.AppendInt(buf[:0], int64(code), 10))
	bw.WriteString("\r\n")
}

// dateLine returns "Date: ...\r\n" for now. It is formatted once per second
// and shared.
func dateLine() []byte {
	now := time.Now()
	sec := now.Unix()
	if d := dateCache.Load(); d != nil && d.sec == sec {
		return d.line
	}
	line := append([]byte("Date: "), now.UTC().AppendFormat(nil, http.TimeFormat)...)
	line = append(line, "\r\n"...)
	dateCache.Store(&cachedDate{sec: sec, line: line})
	return line
}

type cachedDate struct {
	sec  int64
	line []byte
}

var dateCache atomic.Pointer[cachedDate]
