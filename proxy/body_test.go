package proxy

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestReplayBody(t *testing.T) {
	big := strings.Repeat("b", maxReplayBody+1)
	tests := []struct {
		name       string
		body       string
		length     int64 // -1: unknown
		idempotent bool
		buffered   bool
	}{
		{"idempotent, known length", "hello", 5, true, true},
		{"idempotent, chunked", "hello", -1, true, true},
		{"idempotent, too long", big, int64(len(big)), true, false},
		{"idempotent, chunked too long", big, -1, true, false},
		{"not idempotent", "hello", 5, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rb, err := newReplayBody(io.NopCloser(strings.NewReader(tt.body)), tt.length, tt.idempotent, 0)
			if err != nil {
				t.Fatal(err)
			}
			if rb.buffered != tt.buffered {
				t.Fatalf("buffered = %v, want %v", rb.buffered, tt.buffered)
			}
			// A first attempt that fails before reading: still untouched.
			rb.attempt()
			rb.endAttempt()
			if !rb.untouched() {
				t.Fatal("untouched = false before any read")
			}
			// A second attempt reads the whole body.
			body, n := rb.attempt()
			if wantN := int64(len(tt.body)); tt.buffered && n != wantN || !tt.buffered && n != tt.length {
				t.Errorf("attempt length = %d, want %d", n, map[bool]int64{true: wantN, false: tt.length}[tt.buffered])
			}
			got, err := io.ReadAll(body)
			if err != nil || string(got) != tt.body {
				t.Fatalf("second attempt read %d bytes, err %v; want the whole body", len(got), err)
			}
			rb.endAttempt()
			if rb.untouched() != tt.buffered {
				t.Errorf("untouched after a read = %v, want %v", rb.untouched(), tt.buffered)
			}
			if _, err := body.Read(make([]byte, 1)); !tt.buffered && err != errAttemptOver {
				t.Errorf("read after endAttempt: %v, want errAttemptOver", err)
			}
		})
	}
	if rb, err := newReplayBody(nil, 0, false, 0); rb != nil || err != nil || !rb.untouched() {
		t.Errorf("no body: %v %v", rb, err)
	}
	short := io.NopCloser(strings.NewReader("abc"))
	if _, err := newReplayBody(short, 10, true, 0); statusFor(err) != http.StatusBadRequest {
		t.Errorf("short body: %v, want a 400 error", err)
	}
}

// MaxBody: a Content-Length over it fails before any read; a body of
// unknown length fails the read that finds the byte past it, buffered or
// streamed; a body at the limit passes whole.
func TestReplayBodyMaxBody(t *testing.T) {
	const limit = 100
	over := strings.Repeat("x", limit+1)
	at := strings.Repeat("x", limit)
	for _, tt := range []struct {
		name       string
		body       string
		length     int64
		idempotent bool
		maxBody    int64
		wantErr    bool // from newReplayBody (nothing sent)
		readErr    bool // from reading the attempt's body
	}{
		{"length over", over, limit + 1, false, limit, true, false},
		{"length over, idempotent", over, limit + 1, true, limit, true, false},
		{"length at", at, limit, false, limit, false, false},
		{"chunked over, buffered", over, -1, true, limit, true, false},
		{"chunked over, streamed", over, -1, false, limit, false, true},
		{"chunked at, streamed", at, -1, false, limit, false, false},
		{"chunked at, buffered", at, -1, true, limit, false, false},
		{"no limit", over, -1, false, 0, false, false},
		// Past maxReplayBody the buffered part counts toward the limit.
		{"chunked over, too long to buffer", strings.Repeat("y", maxReplayBody+2), -1, true, maxReplayBody + 1, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := io.NopCloser(strings.NewReader(tt.body))
			rb, err := newReplayBody(src, tt.length, tt.idempotent, tt.maxBody)
			if tt.wantErr {
				if statusFor(err) != http.StatusRequestEntityTooLarge || !strings.Contains(err.Error(), "the limit is") {
					t.Fatalf("newReplayBody: %v, want a 413 error with the limit", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := rb.attempt()
			got, err := io.ReadAll(body)
			if tt.readErr {
				if statusFor(err) != http.StatusRequestEntityTooLarge || int64(len(got)) != tt.maxBody {
					t.Errorf("read %d bytes, %v; want %d and a 413 error", len(got), err, tt.maxBody)
				}
				// Reading on fails the same way.
				if _, err := body.Read(make([]byte, 10)); !errors.Is(err, ErrBodyTooLarge) {
					t.Errorf("read after the limit: %v", err)
				}
				return
			}
			if err != nil || string(got) != tt.body {
				t.Errorf("read %d bytes, %v; want the body whole", len(got), err)
			}
		})
	}
}
