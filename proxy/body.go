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
func newReplayBody(body io.ReadCloser, contentLength int64, idempotent bool) (*replayBody, error) {
	if body == nil || body == http.NoBody {
		return nil, nil
	}
	rb := &replayBody{src: body, length: contentLength}
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
