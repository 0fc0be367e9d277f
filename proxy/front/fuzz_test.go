package front

import (
	"bufio"
	"strings"
	"testing"
)

// FuzzParseRequest feeds arbitrary heads to the head scanner and parser.
// Neither may panic, and a head they accept must pass rules checked here
// independently of the parser's code: CRLF-only lines, no obs-fold, names
// that are tokens ending at the colon, no CTL in values, one framing,
// HTTP/1.0 or 1.1, exactly one Host on 1.1 (CONNECT aside).
func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-A\r\n\r\n1\r\na\r\n0\r\nX-A: b\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
		"GET / HTTP/1.1\nHost: h\n\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET http://a.example/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"\r\n\r\nGET / HTTP/1.1\r\nhost: h\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		br := bufio.NewReaderSize(strings.NewReader(in), 64)
		head, ok := scanHead(br, 4096)
		if !ok {
			return
		}
		var h reqHead
		if err := parseHead(head, &h, nil); err != nil {
			if _, isProto := err.(*protoError); !isProto {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		checkAccepted(t, head, &h)
	})
}

// scanHead finds a head as the server does, with the same scanner.
func scanHead(br *bufio.Reader, limit int) (string, bool) {
	var sc headScanner
	var big []byte
	for {
		if _, err := br.Peek(1); err != nil {
			return "", false
		}
		buf, _ := br.Peek(br.Buffered())
		end, err := sc.scan(buf)
		switch {
		case err != nil:
			return "", false
		case end == 0:
			br.Discard(2)
			sc = headScanner{}
			continue
		case end > 0:
			big = append(big, buf[:end]...)
			if len(big) > limit {
				return "", false
			}
			return string(big[:len(big)-2]), true
		}
		if len(big)+len(buf) > limit {
			return "", false
		}
		if len(buf) == br.Size() {
			big = append(big, buf...)
			br.Discard(len(buf))
			sc.off = 0
			continue
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return "", false
		}
	}
}

func checkAccepted(t *testing.T, head string, h *reqHead) {
	t.Helper()
	if !strings.HasSuffix(head, "\r\n") {
		t.Fatalf("accepted a head not ending in CRLF: %q", head)
	}
	lines := strings.Split(strings.TrimSuffix(head, "\r\n"), "\r\n")
	for _, l := range lines {
		if strings.ContainsAny(l, "\r\n") {
			t.Fatalf("accepted a bare CR or LF: %q", head)
		}
	}
	parts := strings.Split(lines[0], " ")
	if len(parts) != 3 || parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0" {
		t.Fatalf("accepted request line %q", lines[0])
	}
	for _, c := range []byte(parts[0]) {
		if c >= 0x80 || !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) &&
			!('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			t.Fatalf("accepted method %q", parts[0])
		}
	}
	var hosts, cls, tes int
	for _, l := range lines[1:] {
		if l == "" || l[0] == ' ' || l[0] == '\t' {
			t.Fatalf("accepted field line %q", l)
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t\"(),/;<=>?@[\\]{}") {
			t.Fatalf("accepted field line %q", l)
		}
		for _, c := range []byte(value) {
			if c < ' ' && c != '\t' || c == 0x7f {
				t.Fatalf("accepted CTL in %q", l)
			}
		}
		switch strings.ToLower(name) {
		case "host":
			hosts++
		case "content-length":
			cls++
		case "transfer-encoding":
			tes++
		}
	}
	if cls > 0 && tes > 0 || tes > 1 {
		t.Fatalf("accepted ambiguous framing: %q", head)
	}
	if hosts > 1 || parts[2] == "HTTP/1.1" && hosts == 0 && parts[0] != "CONNECT" {
		t.Fatalf("accepted %d Host fields: %q", hosts, head)
	}
	if h.chunked && h.contentLength >= 0 || h.contentLength < -1 {
		t.Fatalf("framing chunked=%v length=%d", h.chunked, h.contentLength)
	}
}
