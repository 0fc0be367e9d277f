package front

import (
	"net/http"
	"net/textproto"
	"strings"

	"github.com/deployer/deployer/proxy/internal/syntax"
)

// protoError is a request the server refuses before any handler sees it:
// the status it answers with, and why (logged at Debug, never sent).
type protoError struct {
	status int
	why    string
}

func (e *protoError) Error() string { return "front: " + e.why }

func badRequest(why string) *protoError {
	return &protoError{status: http.StatusBadRequest, why: why}
}

// Errors without detail are values, so a flood of bad requests costs no
// allocation for them.
var (
	errBareLF      = badRequest("line not ended by CRLF")
	errBareCR      = badRequest("CR not followed by LF")
	errRequestLine = badRequest("malformed request line")
	errMethod      = badRequest("invalid method")
	errTarget      = badRequest("invalid request target")
	errVersion     = badRequest("malformed HTTP version")
	errUnsupported = &protoError{status: http.StatusHTTPVersionNotSupported, why: "unsupported HTTP version"}
	errObsFold     = badRequest("obs-fold continuation line")
	errFieldName   = badRequest("invalid header field name")
	errColonSpace  = badRequest("whitespace before colon in header field")
	errFieldValue  = badRequest("invalid character in header field value")
	errNoHost      = badRequest("missing Host header")
	errManyHosts   = badRequest("more than one Host header")
	errHost        = badRequest("malformed Host header")
	errCLTE        = badRequest("both Content-Length and Transfer-Encoding")
	errCL          = badRequest("invalid Content-Length")
	errCLs         = badRequest("differing Content-Length values")
	errTE          = &protoError{status: http.StatusNotImplemented, why: "unsupported Transfer-Encoding"}
	errTE10        = badRequest("Transfer-Encoding in an HTTP/1.0 request")
	errTrailerKey  = badRequest("forbidden field named in Trailer")
	errExpect      = &protoError{status: http.StatusExpectationFailed, why: "unsupported Expect"}
	errTooLarge    = &protoError{status: http.StatusRequestHeaderFieldsTooLarge, why: "request head too large"}
)

// field is one header line: its canonical name and its value, both slices
// of the head or interned.
type field struct{ k, v string }

// reqHead is a parsed request head. Its strings are slices of the head
// text, so building an http.Request from it copies nothing.
type reqHead struct {
	method, target string
	fields         []field
	host           string
	contentLength  int64 // -1: none
	minor          uint8 // HTTP/1.minor; only 0 and 1 get this far
	chunked        bool
	close          bool // Connection: close, or HTTP/1.0 without keep-alive
	expectContinue bool
	trailer        bool // a Trailer header on a chunked request
}

// parseHead parses a request head: the request line and header lines,
// each ended by CRLF, without the empty line that ends the head. fields is
// reused for h.fields.
//
// It is strict where HTTP/1.1 parsers disagree, because every
// disagreement between two hops is a request-smuggling vector (RFC 9112
// 11.2): lines end in CRLF only; obs-fold, whitespace before a colon,
// CTLs in values, Content-Length together with Transfer-Encoding, any
// Transfer-Encoding but a single "chunked", differing or malformed
// Content-Lengths, and a missing or repeated Host on HTTP/1.1 are all
// refused. Everything it accepts, the proxy re-serializes from the parsed
// form, so the app never sees the client's own framing.
func parseHead(s string, h *reqHead, fields []field) error {
	*h = reqHead{contentLength: -1, fields: fields[:0]}
	line, rest, err := nextLine(s)
	if err != nil {
		return err
	}
	if err := parseRequestLine(line, h); err != nil {
		return err
	}
	var (
		nTE, nHost         int
		cl                 string
		connClose, connKA  bool
		pragmaNoCache      bool
		haveCacheControl   bool
		expect, expectSeen bool
	)
	for rest != "" {
		line, rest, err = nextLine(rest)
		if err != nil {
			return err
		}
		k, v, err := parseField(line)
		if err != nil {
			return err
		}
		switch k {
		case "Host":
			nHost++
			h.host = v
		case "Content-Length":
			if !validContentLength(v) {
				return errCL
			}
			if cl != "" && cl != v {
				return errCLs
			}
			cl = v
		case "Transfer-Encoding":
			nTE++
			if !strings.EqualFold(v, "chunked") {
				return errTE
			}
		case "Connection":
			connClose = connClose || hasToken(v, "close")
			connKA = connKA || hasToken(v, "keep-alive")
		case "Expect":
			expectSeen = true
			expect = strings.EqualFold(v, "100-continue")
		case "Trailer":
			h.trailer = true
			for name := range strings.SplitSeq(v, ",") {
				switch textproto.CanonicalMIMEHeaderKey(strings.Trim(name, " \t")) {
				case "Transfer-Encoding", "Trailer", "Content-Length":
					return errTrailerKey
				}
			}
		case "Pragma":
			pragmaNoCache = pragmaNoCache || v == "no-cache"
		case "Cache-Control":
			haveCacheControl = true
		}
		h.fields = append(h.fields, field{k, v})
	}

	if nHost > 1 {
		return errManyHosts
	}
	if nHost == 1 && !validHost(h.host) {
		return errHost
	}
	if h.minor == 1 && nHost == 0 && h.method != "CONNECT" {
		return errNoHost
	}
	if nTE > 0 {
		switch {
		case cl != "":
			return errCLTE
		case nTE > 1:
			return errTE
		case h.minor == 0:
			// RFC 9112 6.1: HTTP/1.0 framing is faulty with it.
			return errTE10
		}
		h.chunked = true
	} else if cl != "" {
		h.contentLength = parseDigits(cl)
	}
	h.trailer = h.trailer && h.chunked
	if h.minor == 0 {
		h.close = connClose || !connKA
	} else {
		h.close = connClose
	}
	if expectSeen {
		// As net/http: 100-continue is honoured (for HTTP/1.1 with a
		// body); any other expectation is refused with 417.
		if !expect {
			return errExpect
		}
		h.expectContinue = h.minor == 1 && (h.chunked || h.contentLength > 0)
	}
	if pragmaNoCache && !haveCacheControl {
		// As net/http's fixPragmaCacheControl (RFC 7234 5.4).
		h.fields = append(h.fields, field{"Cache-Control", "no-cache"})
	}
	return nil
}

// nextLine splits s at its first CRLF. A bare CR or LF anywhere is an
// error: lenient parsers treat it as a line end, strict ones as data.
func nextLine(s string) (line, rest string, err error) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return "", "", errBareLF // the head's last line must end with CRLF too
	}
	if i == 0 || s[i-1] != '\r' {
		return "", "", errBareLF
	}
	line = s[:i-1]
	if strings.IndexByte(line, '\r') >= 0 {
		return "", "", errBareCR
	}
	return line, s[i+1:], nil
}

// parseRequestLine parses "METHOD SP request-target SP HTTP-version" with
// exactly one space between the parts.
func parseRequestLine(line string, h *reqHead) error {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return errRequestLine
	}
	if !isToken(method) {
		return errMethod
	}
	if target == "" {
		return errTarget
	}
	for i := 0; i < len(target); i++ {
		// url.ParseRequestURI refuses CTLs; space and DEL are not
		// allowed either (RFC 3986).
		if c := target[i]; c <= ' ' || c == 0x7f {
			return errTarget
		}
	}
	if len(proto) != len("HTTP/1.1") || !strings.HasPrefix(proto, "HTTP/") || proto[6] != '.' ||
		!isDigit(proto[5]) || !isDigit(proto[7]) {
		return errVersion
	}
	switch proto {
	case "HTTP/1.1":
		h.minor = 1
	case "HTTP/1.0":
		h.minor = 0
	default:
		// Well-formed but not ours: the HTTP/2 preface ("PRI *
		// HTTP/2.0") lands here too.
		return errUnsupported
	}
	h.method, h.target = method, target
	return nil
}

// parseField parses "name: value". The name must be a token and end at
// the colon (RFC 9112 5.1: whitespace there is an error, not something to
// trim); the value loses its surrounding whitespace and must hold no CTL
// but HTAB. A line that starts with whitespace is obs-fold.
func parseField(line string) (k, v string, err error) {
	if line != "" && (line[0] == ' ' || line[0] == '\t') {
		return "", "", errObsFold
	}
	i := strings.IndexByte(line, ':')
	if i <= 0 {
		return "", "", errFieldName
	}
	name := line[:i]
	for j := 0; j < len(name); j++ {
		if c := name[j]; !syntax.TokenByte(c) {
			if c == ' ' || c == '\t' {
				return "", "", errColonSpace
			}
			return "", "", errFieldName
		}
	}
	v = syntax.TrimOWS(line[i+1:])
	for j := 0; j < len(v); j++ {
		if c := v[j]; c < ' ' && c != '\t' || c == 0x7f {
			return "", "", errFieldValue
		}
	}
	return canonicalKey(name), v, nil
}

// validContentLength reports whether v is 1 to 18 digits: anything longer
// could overflow int64 and is no body a proxy should take anyway.
func validContentLength(v string) bool {
	if v == "" || len(v) > 18 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if !isDigit(v[i]) {
			return false
		}
	}
	return true
}

func parseDigits(v string) int64 {
	var n int64
	for i := 0; i < len(v); i++ {
		n = n*10 + int64(v[i]-'0')
	}
	return n
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// validHost is net/http's check of a Host header (httpguts.ValidHostHeader):
// the characters of a host, a port and an IPv6 literal.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		if !hostTable[h[i]] {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v holds token,
// ignoring case and surrounding whitespace.
func hasToken(v, token string) bool {
	for v != "" {
		var elem string
		elem, v, _ = strings.Cut(v, ",")
		if strings.EqualFold(syntax.TrimOWS(elem), token) {
			return true
		}
	}
	return false
}

func isToken(s string) bool { return syntax.IsToken(s) }

var hostTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!$%&'()*+,-.:;=[]_~" {
		t[c] = true
	}
	return t
}()

// canonicalKey returns the canonical form of a valid field name, as
// textproto.CanonicalMIMEHeaderKey does, without allocating when the name
// is canonical already (a slice of the head) or a common one (interned).
func canonicalKey(k string) string {
	upper := true
	canonical := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			canonical = false
			break
		}
		upper = c == '-'
	}
	if canonical {
		return k
	}
	if len(k) <= maxCommonLen {
		var buf [maxCommonLen]byte
		for i := 0; i < len(k); i++ {
			c := k[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[i] = c
		}
		if ck, ok := commonHeaders[string(buf[:len(k)])]; ok {
			return ck
		}
	}
	return textproto.CanonicalMIMEHeaderKey(k)
}

const maxCommonLen = 32

// commonHeaders maps the lower-case form of common request header names to
// their canonical form: clients that send names in lower case (as HTTP/2
// taught many to) cost no allocation for them.
var commonHeaders = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cache-Control", "Connection", "Content-Encoding", "Content-Length", "Content-Type",
		"Cookie", "Dnt", "Expect", "Forwarded", "Host", "Idempotency-Key", "If-Match",
		"If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since", "Keep-Alive",
		"Origin", "Pragma", "Priority", "Proxy-Authorization", "Proxy-Connection", "Range", "Referer",
		"Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User",
		"Sec-Websocket-Extensions", "Sec-Websocket-Key", "Sec-Websocket-Protocol",
		"Sec-Websocket-Version", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Upgrade-Insecure-Requests", "User-Agent", "Via", "X-Forwarded-For", "X-Forwarded-Host",
		"X-Forwarded-Proto", "X-Real-Ip", "X-Request-Id", "X-Requested-With",
	} {
		if len(k) > maxCommonLen {
			panic("front: common header name too long: " + k)
		}
		m[strings.ToLower(k)] = k
	}
	return m
}()
