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
// one forward, and knows whether any of it was sent: http.Transport closes a
// request's body when an attempt fails, and may still be reading it in its
// write loop after RoundTrip returned, so attempts never share a reader
// without that being settled first (see endAttempt).
//
// A nil *replayBody is a request without a body: always replayable.
type replayBody struct {
	src      io.Reader // the inbound body
	buf      []byte    // the whole body, when buffered
	buffered bool
	sent     atomic.Int64 // bytes of src handed to attempts
	cur      *attemptBody
}

// newReplayBody prepares the body of one forward. An idempotent request's
// body of at most maxReplayBody bytes is read into memory first, so the
// request can be replayed; any other body is streamed, and replaying it is
// possible only while no byte of it was read.
func newReplayBody(body io.ReadCloser, contentLength int64, idempotent bool) (*replayBody, error) {
	if body == nil || body == http.NoBody {
		return nil, nil
	}
	rb := &replayBody{src: body}
	if !idempotent || contentLength > maxReplayBody {
		return rb, nil
	}
	var buf []byte
	var err error
	if contentLength > 0 {
		buf = make([]byte, contentLength)
		_, err = io.ReadFull(body, buf)
	} else {
		buf, err = io.ReadAll(io.LimitReader(body, maxReplayBody+1))
		if err == nil && len(buf) > maxReplayBody {
			// Too long to keep: stream it. Nothing was sent yet.
			rb.src = io.MultiReader(bytes.NewReader(buf), body)
			return rb, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRequestBody, err)
	}
	rb.buf, rb.buffered = buf, true
	return rb, nil
}

// prepare sets the body of one attempt's request.
func (rb *replayBody) prepare(out *http.Request) {
	switch {
	case rb == nil:
		out.Body, out.GetBody = nil, nil
	case rb.buffered:
		// A known length, even if the client sent chunks: framing is
		// hop-by-hop.
		out.ContentLength = int64(len(rb.buf))
		out.Body, out.GetBody = nil, nil
		if len(rb.buf) > 0 {
			out.Body = io.NopCloser(bytes.NewReader(rb.buf))
			// Lets http.Transport retry on a new connection by itself.
			out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(rb.buf)), nil }
		}
	default:
		rb.cur = &attemptBody{rb: rb}
		out.Body, out.GetBody = rb.cur, nil
	}
}

// endAttempt ends the current attempt's use of the body: once it returns, the
// attempt can no longer read (or count) a byte. It waits for a read in
// progress, which only a transport write loop still sending the body of a
// failed attempt can be doing.
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

// Close does nothing. http.Transport closes a failed attempt's body, but the
// next attempt may still need the inbound body; the inbound body itself is
// closed by ReverseProxy and the server when the handler returns, which is
// when the whole forward is over.
func (a *attemptBody) Close() error { return nil }

func (a *attemptBody) detach() {
	a.mu.Lock()
	a.over = true
	a.mu.Unlock()
}
