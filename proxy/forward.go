package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxReplays bounds how often an idempotent request is sent again after its
// app died before answering: a request that kills every instance it reaches
// must not take the app down forever.
const maxReplays = 3

// maxStale bounds how often a request goes again at once, on the same
// instance, after a pooled connection the app had closed: beyond, as if the
// instance failed (another one, or a backoff).
const maxStale = 3

// inlineBodyMax is the largest request body the request's own goroutine
// writes before reading the response. A larger or streamed body is written
// by a goroutine of its own while the response is read, so an app that
// answers before reading all of it (413, say) is heard instead of both sides
// waiting on full socket buffers.
const inlineBodyMax = 64 << 10

// attemptError is an attempt that failed before the app's response head was
// read: whether it may be made again depends on what reached the app.
type attemptError struct {
	err         error
	nothingSent bool // no byte of the request reached the connection
	got         bool // some bytes of a response arrived
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// forward sends r to an instance of its app and copies the response to w.
//
// This is deployer's own HTTP/1.1 forwarder, in place of
// httputil.ReverseProxy and http.Transport: the request's goroutine writes
// the request on a pooled connection and reads the response from it itself,
// with no transport goroutines to hand it over, no cloned request or
// headers, and the response head written to the client together with a
// small body in one write. It keeps ReverseProxy's rules: hop-by-hop headers
// removed both ways, X-Forwarded-* set, 1xx passed on, trailers, upgrades,
// ErrAbortHandler when a response breaks off midway.
//
// A failed connect sent nothing, so the request goes back to the gate and
// tries another ready instance, or waits for a change. A request whose
// bytes never reached the app is sent again; so is an idempotent request
// whose app failed before any response byte, if its body can be sent again.
// Any other failure is answered (502), as is a client that left (499) or a
// cut by Retire.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, c *call) {
	upType := upgradeType(r.Header)
	if upType != "" && !isPrintASCII(upType) {
		p.writeError(w, r, c, fmt.Errorf("%w: client tried to switch to invalid protocol %q", ErrBadRequest, upType))
		return
	}
	c.trusted = trusts(p.trusted, r.RemoteAddr)
	idempotent := isIdempotent(r)
	body, err := newReplayBody(r.Body, r.ContentLength, idempotent, c.b.maxBody.Load())
	if err != nil {
		p.writeError(w, r, c, err)
		return
	}
	if body != nil {
		c.waited = true // reading a body to buffer it can take long
	}
	// A client that leaves aborts its request, so that the app sees it go
	// too (as with http.Transport): see call.watchClient.
	defer c.unwatchClient()

	replays, stale := 0, 0
	for {
		v, in, err := c.b.acquire(c)
		if err != nil {
			p.writeError(w, r, c, err)
			return
		}
		c.lastVersion = v.name
		slot := in.pool.acquireSlot(c)
		if !slot && c.client.Err() != nil {
			// It left while waiting for a slot: nothing goes to the app.
			c.b.finish(c)
			p.writeError(w, r, c, fmt.Errorf("%w: while waiting for a connection slot", ErrClientGone))
			return
		}
		releaseSlot := func() {
			if slot {
				slot = false
				in.pool.releaseSlot()
			}
		}
		if err := body.bufferSmall(); err != nil {
			releaseSlot()
			c.b.finish(c)
			p.writeError(w, r, c, err)
			return
		}
		// A request that cannot be sent again must not go out on a
		// connection the app has closed: check a reused one first.
		now := c.now()
		bc, reused, err := in.pool.get(c.client, !idempotent, now)
		var idleSince time.Time
		if reused {
			idleSince = bc.idleSince
		}
		if err == nil && !c.attach(bc) {
			bc.close()
			err = c.aborted()
		}
		if err == nil && !reused && c.client.Err() != nil {
			// It left while the connect waited (a TCP app's accept
			// queue full): nothing goes to the app.
			c.detach()
			bc.close()
			err = c.client.Err()
		}
		if err != nil {
			releaseSlot()
			c.b.finish(c)
			if cause := c.aborted(); cause != nil {
				p.writeError(w, r, c, cause)
				return
			}
			if c.client.Err() != nil {
				p.writeError(w, r, c, fmt.Errorf("%w: while connecting to the app", ErrClientGone))
				return
			}
			// Nothing was sent (a *dialError): try another instance.
			c.avoid = append(c.avoid, in)
			c.waited = true
			continue
		}

		res, err := c.send(bc, r, body, upType, w, now)
		releaseSlot()
		if err == nil {
			p.respond(w, r, c, bc, res, upType)
			return
		}
		c.detach()
		bc.close()
		c.b.finish(c)
		if cause := c.aborted(); cause != nil {
			p.writeError(w, r, c, fmt.Errorf("%w: %w", cause, err))
			return
		}
		ae := (*attemptError)(nil)
		if !errors.As(err, &ae) {
			p.writeError(w, r, c, err)
			return
		}
		body.endAttempt()
		again := body.untouched() && (ae.nothingSent || idempotent && !ae.got)
		// A reused connection the app closed between two requests is not
		// the app dying on this one: like http.Transport, try again
		// without counting it.
		if !again || !reused && replays >= maxReplays {
			p.writeError(w, r, c, err)
			return
		}
		if reused && stale < maxStale {
			// The app closed it while it sat idle, by an idle timeout of
			// its own shorter than ours: the connections idle as long are
			// closed too. Drop them and go again at once, the instance
			// being fine (no backoff: with one instance, each dead pooled
			// connection would cost a request a backoff).
			stale++
			in.pool.closeIdleSince(idleSince)
			continue
		}
		if !reused {
			replays++
		}
		c.avoid = append(c.avoid, in)
		c.waited = true
	}
}

// send writes r on bc and reads the response head, passing interim 1xx
// responses on to the client. A failure before the response head is an
// *attemptError, unless the client's body could not be read. now is the
// current time (see call.now).
func (c *call) send(bc *backendConn, r *http.Request, body *replayBody, upType string, w http.ResponseWriter, now time.Time) (response, error) {
	rd, n := body.attempt()
	bc.written = 0
	bc.call = c
	// Most answers come long before this; a request still waiting for its
	// app then starts watching its client (see connReader).
	if c.watchStop == nil {
		bc.armWatch(now)
	}
	var trailer http.Header
	if n < 0 {
		trailer = r.Trailer
	}
	c.writeRequestHead(bc.bw, r, upType, n, trailer)
	var err error
	switch {
	case rd == nil:
		err = bc.flushRequest()
	case n > 0 && n <= inlineBodyMax:
		err = writeBody(bc.bw, rd, n, nil)
	default:
		// The head goes now, so the app can answer before the body is
		// all there.
		if err = bc.bw.Flush(); err == nil {
			done := make(chan error, 1)
			bc.bodyDone = done
			go func() {
				err := writeBody(bc.bw, rd, n, trailer)
				if errors.Is(err, ErrRequestBody) {
					// The client's body broke off or grew past MaxBody:
					// the app is left waiting for the rest of a request
					// that will never be whole. Stop waiting for its
					// answer; the connection is closed, never reused.
					bc.abort()
				}
				done <- err
			}()
		}
	}
	if err != nil {
		if errors.Is(err, ErrRequestBody) {
			return response{}, err
		}
		return response{}, &attemptError{err: err, nothingSent: bc.written == 0}
	}
	h := w.Header()
	var fields []byte // for a fieldsWriter: see readResponseHead
	if _, ok := w.(fieldsWriter); ok {
		if fields = bc.fields; fields == nil {
			fields = make([]byte, 0, 512)
		}
	}
	for {
		res, got, err := readResponseHead(bc.br, h, r.Method, fields)
		if err != nil {
			if berr := bc.stopBody(); errors.Is(berr, ErrRequestBody) {
				return response{}, berr
			}
			return response{}, &attemptError{err: err, nothingSent: bc.written == 0, got: got}
		}
		if res.status >= 200 || res.status == http.StatusSwitchingProtocols {
			if res.fields != nil {
				bc.fields = res.fields // the buffer, grown, for the next response
			}
			return res, nil
		}
		// 100 Continue is the server's to send: it does when the body is
		// read. Others (103 Early Hints) go to the client, as
		// httputil.ReverseProxy passes them on.
		if res.status != http.StatusContinue {
			writeInterim(w, res)
		}
	}
}

// fieldsWriter is a ResponseWriter that takes a final response's header
// fields as text (proxy/front's): the app's head goes to the client without
// a header map in between. fields holds "Name: value\r\n" lines with
// canonical names, no CR or LF in a value and no hop-by-hop field; length is
// the Content-Length among them, -1 for none; hasDate reports a Date among
// them. The fields are written after those set in Header() (a wrapping
// handler's), and are not added to it; the head is written before
// WriteHeaderFields returns, so fields may be reused after it.
type fieldsWriter interface {
	WriteHeaderFields(code int, fields []byte, length int64, hasDate bool)
}

// writeInterim passes an interim response on to the client.
func writeInterim(w http.ResponseWriter, res response) {
	// Headers set before the interim response (by a wrapping handler) stay
	// for the final one.
	h := w.Header()
	saved := h.Clone()
	clear(h)
	for k, vs := range res.header {
		h[k] = vs
	}
	w.WriteHeader(res.status)
	clear(h)
	for k, vs := range saved {
		h[k] = vs
	}
}

// respond copies the response whose head send read to the client, and puts
// bc back in its pool if the app keeps it open and everything was read.
func (p *Proxy) respond(w http.ResponseWriter, r *http.Request, c *call, bc *backendConn, res response, upType string) {
	if res.status == http.StatusSwitchingProtocols {
		p.upgrade(w, r, c, bc, res, upType)
		return
	}
	h := w.Header()
	if len(res.trailers) > 0 {
		h["Trailer"] = []string{strings.Join(res.trailers, ", ")}
	}
	c.status = res.status
	if res.fields != nil {
		w.(fieldsWriter).WriteHeaderFields(res.status, res.fields, res.declared, res.hasDate)
	} else {
		w.WriteHeader(res.status)
	}
	err := copyBody(w, bc, res, &c.bytes)
	bodyErr := bc.finishBody()
	broken := c.detach()
	if err != nil {
		bc.close()
		// As httputil.ReverseProxy (Go issue 23643): a response that
		// broke off midway must not reach the client as a whole one.
		panic(http.ErrAbortHandler)
	}
	// Bytes already behind the response were sent unasked (a HEAD answered
	// with a body, a response split in two): read as the answer to the
	// next request, they would give it someone else's response.
	if res.close || broken || bodyErr != nil || bc.br.Buffered() > 0 {
		bc.close()
		return
	}
	bc.pool.put(bc)
}

// copyBody copies the response body from bc to w. It flushes w whenever the
// next read from the app may block, so the client never waits for bytes the
// app already sent (server-sent events, long polls), and a response that
// arrived whole goes out in one write with its head. It adds the bytes
// written to *written.
func copyBody(w http.ResponseWriter, bc *backendConn, res response, written *int64) error {
	if res.length == 0 {
		return nil
	}
	br := bc.br
	fw := flusher(w)
	dirty := true // the head is not flushed yet
	var buf *[]byte
	defer func() {
		if buf != nil {
			putBuffer(buf)
		}
	}()
	// waitFlush flushes w when the next read from br may block.
	waitFlush := func() error {
		if dirty && br.Buffered() == 0 {
			dirty = false
			return fw()
		}
		return nil
	}

	if !res.chunked {
		remaining := res.length // -1: until the app closes
		for remaining != 0 {
			if err := waitFlush(); err != nil {
				return err
			}
			if br.Buffered() == 0 {
				if _, err := br.Peek(1); err != nil {
					if remaining < 0 && err == io.EOF {
						return nil
					}
					return unexpectedEOF(err)
				}
			}
			chunk := peekAll(br)
			if remaining >= 0 && int64(len(chunk)) > remaining {
				chunk = chunk[:remaining]
			}
			n, err := w.Write(chunk)
			*written += int64(n)
			if err != nil {
				return err
			}
			br.Discard(len(chunk))
			dirty = true
			if remaining > 0 {
				remaining -= int64(len(chunk))
			}
			if remaining != 0 && br.Buffered() == 0 {
				// A large body: read it in big pieces straight past br.
				if buf == nil {
					buf = getBuffer()
				}
				if err := waitFlush(); err != nil {
					return err
				}
				want := *buf
				if remaining > 0 && int64(len(want)) > remaining {
					want = want[:remaining]
				}
				k, err := br.Read(want)
				if k > 0 {
					n, werr := w.Write(want[:k])
					*written += int64(n)
					if werr != nil {
						return werr
					}
					dirty = true
					if remaining > 0 {
						remaining -= int64(k)
					}
				}
				if err != nil {
					if remaining < 0 && err == io.EOF {
						return nil
					}
					if remaining != 0 {
						return unexpectedEOF(err)
					}
				}
			}
		}
		return nil
	}

	cr := httputil.NewChunkedReader(br)
	buf = getBuffer()
	for {
		if err := waitFlush(); err != nil {
			return err
		}
		k, err := cr.Read(*buf)
		if k > 0 {
			n, werr := w.Write((*buf)[:k])
			*written += int64(n)
			if werr != nil {
				return werr
			}
			dirty = true
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return unexpectedEOF(err)
		}
	}
	return copyTrailers(w, br, res.trailers)
}

// copyTrailers reads the trailer section that ends a chunked body and sets
// the trailers on w: announced ones as themselves, others with
// http.TrailerPrefix, as httputil.ReverseProxy does.
func copyTrailers(w http.ResponseWriter, br *bufio.Reader, announced []string) error {
	if b, err := br.Peek(2); err == nil && string(b) == "\r\n" {
		br.Discard(2)
		return nil
	}
	trailers, err := textproto.NewReader(br).ReadMIMEHeader()
	if err != nil {
		return unexpectedEOF(err)
	}
	if len(trailers) == 0 {
		return nil
	}
	// Force chunking: net/http would otherwise compute a Content-Length
	// for a short body and send no trailers (as httputil.ReverseProxy).
	if err := flusher(w)(); err != nil {
		return err
	}
	h := w.Header()
	for k, vs := range trailers {
		if !slices.Contains(announced, k) {
			k = http.TrailerPrefix + k
		}
		h[k] = append(h[k], vs...)
	}
	return nil
}

// unexpectedEOF turns an EOF before the end of a body into
// io.ErrUnexpectedEOF.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// flusher returns w's Flush. The server's ResponseWriter has one; a wrapper
// is reached through http.ResponseController.
func flusher(w http.ResponseWriter) func() error {
	switch f := w.(type) {
	case interface{ FlushError() error }:
		return f.FlushError
	default:
		return http.NewResponseController(w).Flush
	}
}

// isIdempotent reports whether a request may be sent again after its app
// died before answering: GET, HEAD, OPTIONS, TRACE, or any request carrying
// an Idempotency-Key (the same rule as http.Transport's own retries).
func isIdempotent(r *http.Request) bool {
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := r.Header["Idempotency-Key"]
	_, xkey := r.Header["X-Idempotency-Key"]
	return key || xkey
}

// bufferPool recycles the 32 KiB buffers that large bodies and upgraded
// connections are copied through (PITFALLS: one per request otherwise).
var bufferPool = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

func getBuffer() *[]byte { return bufferPool.Get().(*[]byte) }

func putBuffer(b *[]byte) { bufferPool.Put(b) }
