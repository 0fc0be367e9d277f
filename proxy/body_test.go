package proxy

import (
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
			rb, err := newReplayBody(io.NopCloser(strings.NewReader(tt.body)), tt.length, tt.idempotent)
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
	if rb, err := newReplayBody(nil, 0, false); rb != nil || err != nil || !rb.untouched() {
		t.Errorf("no body: %v %v", rb, err)
	}
	short := io.NopCloser(strings.NewReader("abc"))
	if _, err := newReplayBody(short, 10, true); statusFor(err) != http.StatusBadRequest {
		t.Errorf("short body: %v, want a 400 error", err)
	}
}
