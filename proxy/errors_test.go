package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestStatusFor(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{&routeError{host: "x"}, 404},
		{fmt.Errorf("%w: web", ErrQueueTimeout), 503},
		{fmt.Errorf("%w: web", ErrQueueFull), 503},
		{&appError{err: ErrUnknownApp, app: "web"}, 503},
		{fmt.Errorf("%w: web", ErrAppRemoved), 503},
		{fmt.Errorf("%w: %w", ErrClientGone, context.Canceled), StatusClientClosedRequest},
		{fmt.Errorf("%w: %w", ErrCut, context.Canceled), 502},
		{fmt.Errorf("%w: unexpected EOF", ErrRequestBody), 400},
		{&bodyTooLargeError{limit: 10}, 413},
		{fmt.Errorf("%w: %w", ErrRequestBody, &bodyTooLargeError{limit: 10}), 413},
		{fmt.Errorf("%w: method PRI", ErrBadRequest), 400},
		{io.EOF, 502},
		{syscall.ECONNRESET, 502},
		{context.Canceled, 502},
	}
	for _, tt := range tests {
		if got := statusFor(tt.err); got != tt.want {
			t.Errorf("statusFor(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestClassify(t *testing.T) {
	gone, leave := context.WithCancel(context.Background())
	leave()
	mk := func(client context.Context, cause error) *call {
		c := &call{client: client}
		if cause != nil {
			c.abort(cause)
		}
		return c
	}
	tests := []struct {
		name string
		c    *call
		err  error
		want error
	}{
		{"client left", mk(gone, nil), context.Canceled, ErrClientGone},
		{"aborted: client left", mk(context.Background(), ErrClientGone), os.ErrDeadlineExceeded, ErrClientGone},
		{"cut by Retire", mk(context.Background(), ErrCut), os.ErrDeadlineExceeded, ErrCut},
		{"backend error", mk(context.Background(), nil), io.EOF, io.EOF},
		{"no call", nil, io.EOF, io.EOF},
	}
	for _, tt := range tests {
		if got := classify(tt.c, tt.err); !errors.Is(got, tt.want) {
			t.Errorf("%s: classify = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestWriteError(t *testing.T) {
	p := New(Options{Logger: testLogger(t)})
	for _, tt := range []struct {
		err        error
		status     int
		retryAfter bool
		body       string
	}{
		{fmt.Errorf("%w: app web: paused for 30s", ErrQueueTimeout), 503, true, "proxy: queue timeout: app web: paused for 30s\n"},
		{&routeError{host: "a.example"}, 404, false, "proxy: no route for host \"a.example\"\n"},
		{&dialError{target: Target{"unix", "/secret/path.sock"}, err: syscall.ECONNREFUSED}, 502, false, "proxy: bad gateway\n"},
	} {
		rec := httptest.NewRecorder()
		p.writeError(rec, httptest.NewRequest(http.MethodGet, "/", nil), nil, tt.err)
		if rec.Code != tt.status || rec.Body.String() != tt.body {
			t.Errorf("%v: got %d %q, want %d %q", tt.err, rec.Code, rec.Body, tt.status, tt.body)
		}
		if got := rec.Header().Get("Retry-After") != ""; got != tt.retryAfter {
			t.Errorf("%v: Retry-After present = %v, want %v", tt.err, got, tt.retryAfter)
		}
		if strings.Contains(rec.Body.String(), "/secret") {
			t.Errorf("%v: body leaks a socket path", tt.err)
		}
	}
}

// A 413 says the limit; a 400 or 413 to an HTTP/1 client closes its
// connection (the rest of its bytes are not a request); over HTTP/2 the
// stream's end is enough.
func TestWriteErrorClosesAfterBodyErrors(t *testing.T) {
	p := New(Options{Logger: testLogger(t)})
	for _, tt := range []struct {
		err    error
		proto  int
		status int
		body   string
		close  bool
	}{
		{&bodyTooLargeError{limit: 1 << 20}, 1, 413, "proxy: request body too large: the limit is 1048576 bytes\n", true},
		{fmt.Errorf("%w: %w", ErrRequestBody, io.ErrUnexpectedEOF), 1, 400, "proxy: reading request body: unexpected EOF\n", true},
		{&bodyTooLargeError{limit: 5}, 2, 413, "proxy: request body too large: the limit is 5 bytes\n", false},
		{fmt.Errorf("%w: app web: paused for 1s", ErrQueueTimeout), 1, 503, "proxy: queue timeout: app web: paused for 1s\n", false},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.ProtoMajor = tt.proto
		rec := httptest.NewRecorder()
		p.writeError(rec, r, nil, tt.err)
		if rec.Code != tt.status || rec.Body.String() != tt.body {
			t.Errorf("%v: got %d %q, want %d %q", tt.err, rec.Code, rec.Body, tt.status, tt.body)
		}
		if got := rec.Header().Get("Connection") == "close"; got != tt.close {
			t.Errorf("%v over HTTP/%d: Connection: close = %v, want %v", tt.err, tt.proto, got, tt.close)
		}
	}
}
