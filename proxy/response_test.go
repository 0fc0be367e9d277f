package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"reflect"
	"strings"
	"testing"

	"github.com/deployer/deployer/proxy/internal/syntax"
)

func TestReadResponseHead(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		raw     string
		status  int
		length  int64
		chunked bool
		close   bool
		header  http.Header
		rest    string // what is left in the reader: the body
	}{
		{
			name:   "content length",
			raw:    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
			status: 200, length: 5,
			header: http.Header{"Content-Type": {"text/plain"}, "Content-Length": {"5"}},
			rest:   "hello",
		},
		{
			name:   "chunked drops Transfer-Encoding",
			raw:    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			status: 200, length: -1, chunked: true,
			header: http.Header{},
			rest:   "5\r\nhello\r\n0\r\n\r\n",
		},
		{
			name:   "hop-by-hop and Connection-named headers removed",
			raw:    "HTTP/1.1 200 OK\r\nConnection: X-Hop, close\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\nContent-Length: 0\r\n\r\n",
			status: 200, length: 0, close: true,
			header: http.Header{"X-Kept": {"yes"}, "Content-Length": {"0"}},
		},
		{
			name:   "no length: until close",
			raw:    "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nbody until close",
			status: 200, length: -1, close: true,
			header: http.Header{"X-A": {"1"}},
			rest:   "body until close",
		},
		{
			name:   "HTTP/1.0 closes unless keep-alive",
			raw:    "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
			status: 200, length: 2, close: true,
			header: http.Header{"Content-Length": {"2"}},
			rest:   "ok",
		},
		{
			name:   "HTTP/1.0 with keep-alive",
			raw:    "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
			status: 200, length: 2,
			header: http.Header{"Content-Length": {"2"}},
			rest:   "ok",
		},
		{
			name:   "HEAD has no body whatever its length says",
			method: http.MethodHead,
			raw:    "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
			status: 200, length: 0,
			header: http.Header{"Content-Length": {"1234"}},
		},
		{
			name:   "304 has no body",
			raw:    "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\n\r\n",
			status: 304, length: 0,
			header: http.Header{"Etag": {`"x"`}},
		},
		{
			name:   "repeated headers, lower-case names, bare LF, obs-fold",
			raw:    "HTTP/1.1 200 OK\nset-cookie: a=1\nSet-Cookie: b=2\nX-Long: one\n  two\nContent-Length: 0\n\n",
			status: 200, length: 0,
			header: http.Header{"Set-Cookie": {"a=1", "b=2"}, "X-Long": {"one two"}, "Content-Length": {"0"}},
		},
		{
			name:   "no reason phrase",
			raw:    "HTTP/1.1 204\r\n\r\n",
			status: 204, length: 0,
			header: http.Header{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			br := bufio.NewReaderSize(strings.NewReader(tt.raw), 64)
			h := http.Header{}
			res, got, err := readResponseHead(br, h, method, nil)
			if err != nil || !got {
				t.Fatalf("readResponseHead: got=%v err=%v", got, err)
			}
			if res.status != tt.status || res.length != tt.length || res.chunked != tt.chunked || res.close != tt.close {
				t.Errorf("status %d length %d chunked %v close %v, want %d %d %v %v",
					res.status, res.length, res.chunked, res.close, tt.status, tt.length, tt.chunked, tt.close)
			}
			if !reflect.DeepEqual(h, tt.header) {
				t.Errorf("header %v, want %v", h, tt.header)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tt.rest {
				t.Errorf("left %q, want %q", rest, tt.rest)
			}
		})
	}
}

// A head longer than the read buffer is read line by line.
func TestReadResponseHeadLong(t *testing.T) {
	long := strings.Repeat("v", 10000)
	raw := "HTTP/1.1 200 OK\r\nX-Long: " + long + "\r\nContent-Length: 0\r\n\r\n"
	h := http.Header{}
	res, _, err := readResponseHead(bufio.NewReaderSize(strings.NewReader(raw), 4096), h, http.MethodGet, nil)
	if err != nil || res.status != 200 || h.Get("X-Long") != long {
		t.Fatalf("status %d, X-Long of %d bytes, err %v", res.status, len(h.Get("X-Long")), err)
	}
	huge := "HTTP/1.1 200 OK\r\nX-Huge: " + strings.Repeat("v", maxResponseHead) + "\r\n\r\n"
	if _, _, err := readResponseHead(bufio.NewReaderSize(strings.NewReader(huge), 4096), http.Header{}, http.MethodGet, nil); !errors.Is(err, errResponseHeadLarge) {
		t.Errorf("a head over %d bytes: %v, want errResponseHeadLarge", maxResponseHead, err)
	}
}

func TestReadResponseHeadErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		raw  string
		got  bool
	}{
		{"nothing", "", false},
		{"cut in the status line", "HTTP/1.1 20", true},
		{"cut in the headers", "HTTP/1.1 200 OK\r\nX-A: 1\r\n", true},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", true},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", true},
		{"status below 100", "HTTP/1.1 099 Odd\r\n\r\n", true},
		{"header without colon", "HTTP/1.1 200 OK\r\nbroken\r\n\r\n", true},
		{"space in a header name", "HTTP/1.1 200 OK\r\nX A: 1\r\n\r\n", true},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", true},
		{"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", true},
		{"unknown transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", true},
		{"length and chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n", true},
		{"chunked and length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", true},
		{"length list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", true},
		{"length too large", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, got, err := readResponseHead(bufio.NewReader(strings.NewReader(tt.raw)), http.Header{}, http.MethodGet, nil)
			if err == nil {
				t.Fatal("no error")
			}
			if got != tt.got {
				t.Errorf("got = %v, want %v (%v)", got, tt.got, err)
			}
		})
	}
}

// An interim response's headers go to a map of their own; a 101 keeps its
// Connection and Upgrade headers.
func TestReadResponseHeadInterim(t *testing.T) {
	raw := "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" +
		"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-Websocket-Accept: x\r\n\r\n"
	br := bufio.NewReader(strings.NewReader(raw))
	h := http.Header{}
	res, _, err := readResponseHead(br, h, http.MethodGet, nil)
	if err != nil || res.status != 103 || res.header.Get("Link") == "" || len(h) != 0 {
		t.Fatalf("103: status %d header %v, final header %v, err %v", res.status, res.header, h, err)
	}
	res, _, err = readResponseHead(br, h, http.MethodGet, nil)
	if err != nil || res.status != 101 || res.upgrade != "websocket" || res.header.Get("Connection") != "Upgrade" || len(h) != 0 {
		t.Fatalf("101: status %d upgrade %q header %v, err %v", res.status, res.upgrade, res.header, err)
	}
}

func BenchmarkReadResponseHead(b *testing.B) {
	raw := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 67\r\nDate: Sat, 21 Nov 2026 12:54:12 GMT\r\nX-Version: v1\r\n\r\n"
	r := strings.NewReader(raw)
	br := bufio.NewReaderSize(r, 4096)
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(raw)
		br.Reset(r)
		clear(h)
		if _, _, err := readResponseHead(br, h, http.MethodGet, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCanonicalFieldName(t *testing.T) {
	for _, k := range []string{
		"Content-Type", "content-type", "CONTENT-TYPE", "X-Request-Id", "X-Request-ID", "x", "X", "-", "a-",
		"-a", "A--b", "Www-Authenticate", "x_forwarded_for", "X-1a", "1a-b", "Etag", "ETag", "~!#$%&'*+.^_`|",
		"", "bad name", "bad\tname", "ümlaut", "content-type\x01", "Content:Type", "a\x7f",
	} {
		valid := k != ""
		for _, c := range []byte(k) {
			if !syntax.TokenByte(c) {
				valid = false
			}
		}
		got, ok := canonicalFieldName(k)
		if ok != valid || ok && got != textproto.CanonicalMIMEHeaderKey(k) {
			t.Errorf("canonicalFieldName(%q) = %q, %v; want %q, %v", k, got, ok, textproto.CanonicalMIMEHeaderKey(k), valid)
		}
	}
}

// TestHeadEnd checks headEnd against the two searches it replaced.
func TestHeadEnd(t *testing.T) {
	ref := func(buf []byte) int {
		end := -1
		if i := bytes.Index(buf, []byte("\n\r\n")); i >= 0 {
			end = i + 3
		}
		if i := bytes.Index(buf, []byte("\n\n")); i >= 0 && (end < 0 || i+2 < end) {
			end = i + 2
		}
		return end
	}
	for _, s := range []string{
		"", "\n", "\n\n", "\r\n", "\r\n\r\n", "\n\r", "\n\r\n", "a\r\nb\r\n\r\nbody\n\n", "a\nb\n\nc",
		"HTTP/1.1 200 OK\r\nA: b\r\n\r", "HTTP/1.1 200 OK\r\nA: b\r\n", "x\n\r\r\n\n", "\r\n\n", "a\r\n\r\n\n\n",
	} {
		if got, want := headEnd([]byte(s)), ref([]byte(s)); got != want {
			t.Errorf("headEnd(%q) = %d, want %d", s, got, want)
		}
	}
}

// BenchmarkReadResponseFields is BenchmarkReadResponseHead for a front end
// that takes the fields as text (fieldsWriter): no map.
func BenchmarkReadResponseFields(b *testing.B) {
	raw := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 67\r\nDate: Sat, 21 Nov 2026 12:54:12 GMT\r\nX-Version: v1\r\n\r\n"
	r := strings.NewReader(raw)
	br := bufio.NewReaderSize(r, 4096)
	h := http.Header{}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(raw)
		br.Reset(r)
		res, _, err := readResponseHead(br, h, http.MethodGet, buf)
		if err != nil || len(res.fields) == 0 || len(h) != 0 {
			b.Fatal(err, len(res.fields), len(h))
		}
		buf = res.fields
	}
}
