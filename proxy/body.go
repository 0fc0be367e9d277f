package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// maxReplayBody is the largest request body that is buffered so that an
// idempotent request can be sent again after its app died.
const maxReplayBody = 1 << 20

var errAttemptOver = errors.New("proxy: request body read after its attempt ended")

// replayBody hands the inbound request body to the successive attempts of
// one forward, and knows whether any of it was sent: an attempt's body
// writer may still be reading it when the attempt failed, so attempts never
// share a reader without that being settled first (see endAttempt).
//
// A nil *replayBody is a request without a body: always replayable.
type replayBody struct {
	src      io.Reader // the inbound body
	length   int64     // the inbound Content-Length; -1: unknown
	buf      []byte    // the whole body, when buffered
	buffered bool
	sent     atomic.Int64 // bytes of src handed to attempts
	cur      *attemptBody
}

// newReplayBody prepares the body of one forward. An idempotent request's
// body of at most maxReplayBody bytes is read into memory first, so the
// request can be replayed; any other body is streamed, and replaying it is
// possible only while no byte of it was read.
//
// maxBody > 0 is the app's MaxBody: a body whose Content-Length says it is
// larger fails at once (nothing is read), and one that grows past it fails
// the read that finds the extra byte, buffered or streamed, in every
// attempt, with a *bodyTooLargeError (an ErrBodyTooLarge and an
// ErrRequestBody).
func newReplayBody(body io.ReadCloser, contentLength int64, idempotent bool, maxBody int64) (*replayBody, error) {
	if body == nil || body == http.NoBody {
		return nil, nil
	}
	if maxBody > 0 && contentLength > maxBody {
		return nil, &bodyTooLargeError{limit: maxBody}
	}
	rb := &replayBody{src: body, length: contentLength}
	if maxBody > 0 && contentLength < 0 {
		// A known length was checked above, and net/http (like
		// proxy/front) never reads past it.
		rb.src = &limitedBody{r: body, left: maxBody, limit: maxBody}
	}
	if !idempotent || contentLength > maxReplayBody {
		return rb, nil
	}
	var buf []byte
	var err error
	if contentLength > 0 {
		buf = make([]byte, contentLength)
		_, err = io.ReadFull(rb.src, buf)
	} else {
		buf, err = io.ReadAll(io.LimitReader(rb.src, maxReplayBody+1))
		if err == nil && len(buf) > maxReplayBody {
			// Too long to keep: stream it. Nothing was sent yet.
			rb.src = io.MultiReader(bytes.NewReader(buf), rb.src)
			return rb, nil
		}
	}
	if err != nil {
		return nil, requestBodyError(err)
	}
	rb.buf, rb.buffered = buf, true
	return rb, nil
}

// bufferSmall reads a streamed body of known length up to inlineBodyMax
// into memory before its first attempt (such a body is written behind its
// head by the request's goroutine, not streamed by a goroutine of its own:
// reading it first costs a copy, no system call). An attempt whose write
// fails with nothing sent, on a pooled connection the app closed after it
// was checked, can then be made again instead of ending in 502, whatever
// the method. A failed read is an ErrRequestBody.
func (rb *replayBody) bufferSmall() error {
	if rb == nil || rb.buffered || rb.length <= 0 || rb.length > inlineBodyMax || rb.sent.Load() != 0 {
		return nil
	}
	buf := make([]byte, rb.length)
	n, err := io.ReadFull(rb.src, buf)
	rb.sent.Add(int64(n))
	if err != nil {
		return requestBodyError(err)
	}
	rb.buf, rb.buffered = buf, true
	return nil
}

// attempt returns the body of one attempt and its length: 0 for none, -1
// for unknown (sent chunked). A buffered body has a known length even if the
// client sent chunks: framing is hop-by-hop.
func (rb *replayBody) attempt() (io.Reader, int64) {
	switch {
	case rb == nil:
		return nil, 0
	case rb.buffered:
		if len(rb.buf) == 0 {
			return nil, 0
		}
		return bytes.NewReader(rb.buf), int64(len(rb.buf))
	default:
		rb.cur = &attemptBody{rb: rb}
		return rb.cur, rb.length
	}
}

// endAttempt ends the current attempt's use of the body: once it returns, the
// attempt can no longer read (or count) a byte. It waits for a read in
// progress, which only the body writer of a failed attempt (see
// inlineBodyMax) can be doing.
func (rb *replayBody) endAttempt() {
	if rb != nil && rb.cur != nil {
		rb.cur.detach()
		rb.cur = nil
	}
}

// untouched reports whether the body can be sent (again) in full: there is
// none, it is buffered, or no byte of it was read. Call endAttempt first.
func (rb *replayBody) untouched() bool {
	return rb == nil || rb.buffered || rb.sent.Load() == 0
}

// attemptBody is the body of one attempt's request when the body is
// streamed.
type attemptBody struct {
	rb   *replayBody
	mu   sync.Mutex // held during a read, so detach waits for it
	over bool
}

func (a *attemptBody) Read(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.over {
		return 0, errAttemptOver
	}
	n, err := a.rb.src.Read(p)
	a.rb.sent.Add(int64(n))
	return n, err
}

func (a *attemptBody) detach() {
	a.mu.Lock()
	a.over = true
	a.mu.Unlock()
}

// bodyTooLargeError is ErrBodyTooLarge with the limit, for the client's
// message. It is an ErrRequestBody too: a failure of the client's body,
// not of the app.
type bodyTooLargeError struct{ limit int64 }

func (e *bodyTooLargeError) Error() string {
	return fmt.Sprintf("%s: the limit is %d bytes", ErrBodyTooLarge, e.limit)
}

func (e *bodyTooLargeError) Unwrap() []error { return []error{ErrBodyTooLarge, ErrRequestBody} }

// requestBodyError marks err, from reading the client's body, as an
// ErrRequestBody, unless it is one already.
func requestBodyError(err error) error {
	if errors.Is(err, ErrRequestBody) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrRequestBody, err)
}

// limitedBody reads a body of unknown length (chunked, or HTTP/2) up to
// limit bytes. Unlike io.LimitReader it tells a body that ends at the limit
// from one that goes on: it reads one byte past the limit to know, and
// fails with a *bodyTooLargeError when that byte exists, returning only the
// bytes within the limit.
type limitedBody struct {
	r     io.Reader
	left  int64 // bytes still allowed
	limit int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, &bodyTooLargeError{limit: l.limit}
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n + int(l.left), &bodyTooLargeError{limit: l.limit}
	}
	return n, err
}
