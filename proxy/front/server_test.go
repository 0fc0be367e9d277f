package front

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// echo answers with what the server made of the request, as JSON.
type echoed struct {
	Method, URI, Path, RawPath, RawQuery, Host, Proto, Body, RemoteAddr string
	Header, Trailer                                                     http.Header
	ContentLength                                                       int64
	TransferEncoding                                                    []string
	Close                                                               bool
}

func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		json.NewEncoder(w).Encode(echoed{
			Method: r.Method, URI: r.RequestURI, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery,
			Host: r.Host, Proto: r.Proto, Body: string(b), RemoteAddr: r.RemoteAddr,
			Header: r.Header, Trailer: r.Trailer, ContentLength: r.ContentLength,
			TransferEncoding: r.TransferEncoding, Close: r.Close,
		})
	})
}

func TestRequestAsNetHTTP(t *testing.T) {
	_, addr := startServer(t, echoHandler(), nil)
	tests := []struct {
		name, req string
	}{
		{"simple", "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nX-Multi: 1\r\nX-Multi: 2\r\n\r\n"},
		{"lowercase names", "GET / HTTP/1.1\r\nhost: example.com\r\nuser-agent: t\r\nx-weird-NAME: v\r\n\r\n"},
		{"escaped path", "GET /a%20b/c%2Fd?q=%41 HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"absolute form", "GET http://other.example:8080/p?q HTTP/1.1\r\nHost: ignored\r\n\r\n"},
		{"force query", "GET /p? HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"star", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"http/1.0 no host", "GET /old HTTP/1.0\r\n\r\n"},
		{"body", "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"},
		{"chunked with trailer", "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n"},
		{"values trimmed", "GET / HTTP/1.1\r\nHost: h\r\nX-A:   spaced \t\r\nX-Empty:\r\n\r\n"},
		{"pragma", "GET / HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n"},
		{"repeated equal content-length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"},
		{"connection close", "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"},
		{"utf-8 value", "GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9\r\n\r\n"},
		{"non-ascii path", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := http.ReadRequest(newReader(tt.req))
			if err != nil {
				t.Fatalf("net/http refuses the request: %v", err)
			}
			wantBody, _ := io.ReadAll(want.Body)

			cl := dial(t, addr)
			cl.send(tt.req)
			res, body := cl.get(want.Method)
			if res.StatusCode != 200 {
				t.Fatalf("status %d: %s", res.StatusCode, body)
			}
			var got echoed
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			check := func(what string, got, want any) {
				t.Helper()
				if g, w := fmt.Sprint(got), fmt.Sprint(want); g != w {
					t.Errorf("%s: got %s, want %s", what, g, w)
				}
			}
			check("Method", got.Method, want.Method)
			check("RequestURI", got.URI, want.RequestURI)
			check("Path", got.Path, want.URL.Path)
			check("RawPath", got.RawPath, want.URL.RawPath)
			check("RawQuery", got.RawQuery, want.URL.RawQuery)
			check("Host", got.Host, want.Host)
			check("Proto", got.Proto, want.Proto)
			check("Body", got.Body, string(wantBody))
			check("ContentLength", got.ContentLength, want.ContentLength)
			check("TransferEncoding", got.TransferEncoding, want.TransferEncoding)
			check("Close", got.Close, want.Close)
			delete(want.Header, "Host") // the server does that after ReadRequest
			check("Header", got.Header, want.Header)
			check("Trailer", got.Trailer, want.Trailer)
			if !strings.HasPrefix(got.RemoteAddr, "127.0.0.1:") {
				t.Errorf("RemoteAddr = %q", got.RemoteAddr)
			}
		})
	}
}

// TestRejections sends each kind of hostile or malformed request on a
// fresh connection and checks the status and that the connection is
// closed, with nothing of the request read as another one.
func TestRejections(t *testing.T) {
	var served atomic.Int64
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, "served "+r.URL.Path)
	}), func(s *Server) { s.MaxHeaderBytes = 4 << 10 })

	const host = "Host: h\r\n"
	smuggled := "GET /smuggled HTTP/1.1\r\n" + host + "\r\n"
	tests := []struct {
		name   string
		req    string
		status int
		served bool // the handler ran (the error is in the body)
	}{
		{"CL and TE", "POST / HTTP/1.1\r\n" + host + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, 400, false},
		{"TE and CL", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + smuggled, 400, false},
		{"TE gzip", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip\r\n\r\n", 501, false},
		{"TE gzip, chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, false},
		{"TE chunked twice", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, false},
		{"TE xchunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: xchunked\r\n\r\n", 501, false},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, false},
		{"CL differ", "POST / HTTP/1.1\r\n" + host + "Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 400, false},
		{"CL list", "POST / HTTP/1.1\r\n" + host + "Content-Length: 4, 4\r\n\r\nabcd", 400, false},
		{"CL sign", "POST / HTTP/1.1\r\n" + host + "Content-Length: +4\r\n\r\nabcd", 400, false},
		{"CL negative", "POST / HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\n", 400, false},
		{"CL hex", "POST / HTTP/1.1\r\n" + host + "Content-Length: 0x4\r\n\r\nabcd", 400, false},
		{"CL overflow", "POST / HTTP/1.1\r\n" + host + "Content-Length: 99999999999999999999999\r\n\r\n", 400, false},
		{"CL empty", "POST / HTTP/1.1\r\n" + host + "Content-Length:\r\n\r\n", 400, false},
		{"obs-fold", "GET / HTTP/1.1\r\n" + host + "X-A: a\r\n b\r\n\r\n", 400, false},
		{"obs-fold tab", "GET / HTTP/1.1\r\n" + host + "X-A: a\r\n\tb\r\n\r\n", 400, false},
		{"space before colon", "GET / HTTP/1.1\r\n" + host + "Content-Length : 5\r\n\r\nhello", 400, false},
		{"tab before colon", "GET / HTTP/1.1\r\n" + host + "X-A\t: 5\r\n\r\n", 400, false},
		{"bad name char", "GET / HTTP/1.1\r\n" + host + "X(A): 1\r\n\r\n", 400, false},
		{"empty name", "GET / HTTP/1.1\r\n" + host + ": 1\r\n\r\n", 400, false},
		{"no colon", "GET / HTTP/1.1\r\n" + host + "X-A 1\r\n\r\n", 400, false},
		{"NUL in value", "GET / HTTP/1.1\r\n" + host + "X-A: a\x00b\r\n\r\n", 400, false},
		{"CTL in value", "GET / HTTP/1.1\r\n" + host + "X-A: a\x01b\r\n\r\n", 400, false},
		{"DEL in value", "GET / HTTP/1.1\r\n" + host + "X-A: a\x7fb\r\n\r\n", 400, false},
		{"bare CR in value", "GET / HTTP/1.1\r\n" + host + "X-A: a\rb\r\n\r\n", 400, false},
		{"bare LF line", "GET / HTTP/1.1\n" + host + "\r\n", 400, false},
		{"bare LF head", "GET / HTTP/1.1\nHost: h\n\n", 400, false},
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400, false},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, false},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, false},
		{"host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, false},
		{"bad method", "G(T / HTTP/1.1\r\n" + host + "\r\n", 400, false},
		{"two spaces", "GET  / HTTP/1.1\r\n" + host + "\r\n", 400, false},
		{"tab separator", "GET\t/ HTTP/1.1\r\n" + host + "\r\n", 400, false},
		{"missing version", "GET /\r\n" + host + "\r\n", 400, false},
		{"lower-case version", "GET / http/1.1\r\n" + host + "\r\n", 400, false},
		{"version garbage", "GET / HTTP/1.1x\r\n" + host + "\r\n", 400, false},
		{"target with space", "GET /a b HTTP/1.1\r\n" + host + "\r\n", 400, false},
		{"target not a path", "GET a/b HTTP/1.1\r\n" + host + "\r\n", 400, false},
		{"target bad escape", "GET /a%zz HTTP/1.1\r\n" + host + "\r\n", 400, false},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, false},
		{"HTTP/0.9 style", "GET / HTTP/0.9\r\n" + host + "\r\n", 505, false},
		{"HTTP/1.2", "GET / HTTP/1.2\r\n" + host + "\r\n", 505, false},
		{"HTTP/3.0", "GET / HTTP/3.0\r\n" + host + "\r\n", 505, false},
		{"expect other", "POST / HTTP/1.1\r\n" + host + "Expect: magic\r\nContent-Length: 1\r\n\r\nx", 417, false},
		{"trailer names framing", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n", 400, false},
		{"head too large", "GET / HTTP/1.1\r\n" + host + "X-Big: " + strings.Repeat("a", 5000) + "\r\n\r\n", 431, false},
		{"many headers", "GET / HTTP/1.1\r\n" + host + strings.Repeat("X-A: b\r\n", 1000) + "\r\n", 431, false},
		{"long request line", "GET /" + strings.Repeat("a", 8000) + " HTTP/1.1\r\n" + host + "\r\n", 431, false},

		// Body errors reach the handler mid-read: it answers 400 and the
		// connection is closed, whatever follows.
		{"chunk size not hex", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" + smuggled, 400, true},
		{"chunk size empty", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n" + smuggled, 400, true},
		{"chunk size overflow", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1000000000000000000\r\nabc\r\n0\r\n\r\n" + smuggled, 400, true},
		{"chunk size signed", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n" + smuggled, 400, true},
		{"chunk size 0x", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n" + smuggled, 400, true},
		{"chunk missing CRLF", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n" + smuggled, 400, true},
		{"chunk data too long", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n" + smuggled, 400, true},
		{"chunk LF only", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n" + smuggled, 400, true},
		{"chunk line too long", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3;" + strings.Repeat("x", 5000) + "\r\nabc\r\n0\r\n\r\n" + smuggled, 400, true},
		{"chunk ext CTL", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3;a\x00\r\nabc\r\n0\r\n\r\n" + smuggled, 400, true},
		{"chunk ext no semicolon", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3 x\r\nabc\r\n0\r\n\r\n" + smuggled, 400, true},
		{"bad trailer", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX Bad: 1\r\n\r\n" + smuggled, 400, true},
		{"trailer obs-fold", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-A: 1\r\n 2\r\n\r\n" + smuggled, 400, true},
		{"trailer content-length", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 9\r\n\r\n" + smuggled, 400, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := served.Load()
			cl := dial(t, addr)
			cl.send(tt.req)
			res, body := cl.get("GET")
			if res.StatusCode != tt.status {
				t.Errorf("status %d (%q), want %d", res.StatusCode, body, tt.status)
			}
			if !cl.closed() {
				t.Error("connection not closed")
			}
			if n := served.Load() - before; n != 0 && !tt.served || n > 1 {
				t.Errorf("handler ran %d times", n)
			}
		})
	}
}

func newReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
