package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResponseReader(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" +
		"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n" +
		"HTTP/1.1 204 No Content\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close"
	rr := newResponseReader(strings.NewReader(raw))
	for i, want := range []struct {
		status int
		close  bool
	}{{200, false}, {503, false}, {204, false}, {200, true}} {
		status, err := rr.read()
		if err != nil || status != want.status || rr.close != want.close {
			t.Fatalf("response %d: status %d close %v err %v, want %d %v", i, status, rr.close, err, want.status, want.close)
		}
	}
	if _, err := rr.read(); err != io.EOF {
		t.Errorf("after the last response: %v, want EOF", err)
	}
	if _, err := newResponseReader(strings.NewReader("garbage\r\n")).read(); err == nil {
		t.Error("a bad status line read without error")
	}
}

func TestSummarize(t *testing.T) {
	s := summarize([]float64{5, 1, 4, 2, 3})
	if s.N != 5 || s.Median != 3 || s.Max != 5 {
		t.Errorf("summarize = %+v", s)
	}
	if s := summarize(nil); s.N != 0 {
		t.Errorf("summarize(nil) = %+v", s)
	}
}

func TestDecodeJSON(t *testing.T) {
	var v struct {
		OK bool `json:"ok"`
	}
	out := "warning: something\n{\n  \"ok\": true\n}\n"
	if err := decodeJSON([]byte(out), &v); err != nil || !v.OK {
		t.Errorf("decodeJSON: %v %+v", err, v)
	}
	if err := decodeJSON([]byte("no json"), &v); err == nil {
		t.Error("decodeJSON of text without an object succeeded")
	}
}

func TestSwapLatency(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "v7-123"), []byte("healthy 1000000\nfirst 3500000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ms, ok := swapLatency(dir, "v7"); !ok || ms != 2.5 {
		t.Errorf("swapLatency = %v %v, want 2.5 ms", ms, ok)
	}
	if _, ok := swapLatency(dir, "v8"); ok {
		t.Error("a version that recorded nothing has a latency")
	}
}
