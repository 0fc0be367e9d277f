package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/deployer/deployer/proxy/internal/syntax"
)

// maxResponseHead bounds a response's status line and headers.
const maxResponseHead = 1 << 20

var (
	errMalformedResponse = errors.New("proxy: malformed response from app")
	errResponseHeadLarge = errors.New("proxy: response head from app too large")
)

// response is what the proxy knows of one response head from an app.
type response struct {
	status   int
	length   int64 // body length; -1: unknown (chunked, or until the app closes)
	chunked  bool
	close    bool     // the app closes the connection after this response
	trailers []string // the trailer names the app announced
	upgrade  string   // a 101's protocol (Connection: upgrade + Upgrade)
	// header holds the end-to-end headers: the h readResponseHead was
	// given, or for an interim (1xx) response a map of its own, with every
	// header of a 101 (its Connection and Upgrade are for the client).
	// Nil when they went to fields instead.
	header http.Header

	// fields holds the end-to-end header lines of a final response,
	// "Name: value\r\n" each, when readResponseHead was given a buffer for
	// them (see fieldsWriter); declared is the Content-Length they carry
	// (-1: none) and hasDate whether they carry a Date.
	fields   []byte
	declared int64
	hasDate  bool
}

// headerField is one header line of a response head.
type headerField struct{ k, v string }

// readResponseHead reads one response head for a request with method from
// br, and stores its end-to-end headers in h, or in a map of its own for an
// interim response (1xx; see response.header). got reports whether any byte of a response arrived: until one does, the
// app has not answered, and an idempotent request may be sent again.
//
// The head is read as one string when it fits in br's buffer (nearly
// always): header names and values are slices of it, so a response head
// costs one allocation for its text and one for its values.
//
// With buf non-nil, the end-to-end headers of a final response other than a
// 101 without trailers go to res.fields, appended to buf[:0], instead of h.
func readResponseHead(br *bufio.Reader, h http.Header, method string, buf []byte) (res response, got bool, err error) {
	head, got, err := readHead(br)
	if err != nil {
		return res, got, err
	}
	line, rest, _ := strings.Cut(head, "\n")
	res.status, res.close, err = parseStatusLine(strings.TrimSuffix(line, "\r"))
	if err != nil {
		return res, true, err
	}

	// Room for the headers of nearly every response without an
	// allocation; the array is zeroed per call, so not much bigger.
	var stack [16]headerField
	fields := stack[:0]
	for rest != "" {
		line, rest, _ = strings.Cut(rest, "\n")
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold (RFC 9112 5.2): a continuation of the previous value.
			if len(fields) == 0 {
				return res, true, fmt.Errorf("%w: continuation line first", errMalformedResponse)
			}
			f := &fields[len(fields)-1]
			f.v = f.v + " " + syntax.TrimOWS(line)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if ok {
			k, ok = canonicalFieldName(k)
		}
		if !ok {
			return res, true, fmt.Errorf("%w: header line %q", errMalformedResponse, truncate(line))
		}
		fields = append(fields, headerField{k, syntax.TrimOWS(v)})
	}

	// The framing and connection headers first: they decide what else is
	// passed on.
	res.length, res.declared = -1, -1
	var connTokens []string
	haveLength := false
	for _, f := range fields {
		switch f.k {
		case "Connection":
			connTokens = append(connTokens, f.v)
		case "Content-Length":
			n, ok := parseContentLength(f.v)
			if !ok || haveLength && n != res.length {
				return res, true, fmt.Errorf("%w: Content-Length %q", errMalformedResponse, truncate(f.v))
			}
			res.length, res.declared, haveLength = n, n, true
		case "Transfer-Encoding":
			// Only one "chunked", as nginx and net/http accept: a second
			// would be chunked applied twice.
			if !strings.EqualFold(f.v, "chunked") || res.chunked {
				return res, true, fmt.Errorf("%w: unsupported Transfer-Encoding %q", errMalformedResponse, truncate(f.v))
			}
			res.chunked = true
		case "Trailer":
			for name := range strings.SplitSeq(f.v, ",") {
				if name = strings.Trim(name, " \t"); name != "" {
					res.trailers = append(res.trailers, textproto.CanonicalMIMEHeaderKey(name))
				}
			}
		}
	}
	if headerValuesContainToken(connTokens, "close") {
		res.close = true
	} else if res.close && headerValuesContainToken(connTokens, "keep-alive") {
		res.close = false // HTTP/1.0 with keep-alive
	}
	if res.chunked {
		if haveLength {
			// RFC 9112 6.3: both "ought to be handled as an error": the
			// mark of a response split or smuggled. The connection is
			// closed with the attempt, so nothing after it is read.
			return res, true, fmt.Errorf("%w: both Content-Length and Transfer-Encoding", errMalformedResponse)
		}
		res.length = -1
	}
	switch {
	case method == http.MethodHead, res.status < 200, res.status == http.StatusNoContent, res.status == http.StatusNotModified:
		if res.status != http.StatusSwitchingProtocols {
			res.length, res.chunked = 0, false
		}
	case !res.chunked && !haveLength:
		res.close = true // the body ends when the app closes the connection
	}
	if res.status == http.StatusSwitchingProtocols && headerValuesContainToken(connTokens, "Upgrade") {
		for _, f := range fields {
			if f.k == "Upgrade" {
				res.upgrade = f.v
				break
			}
		}
	}

	if buf != nil && res.status >= 200 && res.status != http.StatusSwitchingProtocols && len(res.trailers) == 0 {
		res.fields = appendFields(buf[:0], fields, connTokens, res.status, &res.hasDate)
		return res, true, nil
	}
	raw := res.status == http.StatusSwitchingProtocols
	if res.status < 200 {
		h = make(http.Header, len(fields))
	}
	res.header = h
	values := make([]string, len(fields))
	for i, f := range fields {
		if !raw && !passedOn(f.k, connTokens) {
			continue
		}
		values[i] = f.v
		if vs, ok := h[f.k]; ok {
			h[f.k] = append(vs, f.v)
		} else {
			h[f.k] = values[i : i+1 : i+1]
		}
	}
	return res, true, nil
}

// passedOn reports whether header k of a response goes on to the client:
// not hop-by-hop, and not named by its Connection header (connTokens).
func passedOn(k string, connTokens []string) bool {
	return !hopByHop(k) && (len(connTokens) == 0 || !headerValuesContainToken(connTokens, k))
}

// appendFields appends the end-to-end fields of a final response to b as
// header lines, as the map path would have them written: hop-by-hop ones
// and a 204's Content-Length left out, a CR in a value made a space.
func appendFields(b []byte, fields []headerField, connTokens []string, status int, hasDate *bool) []byte {
	for _, f := range fields {
		if !passedOn(f.k, connTokens) {
			continue
		}
		switch f.k {
		case "Content-Length":
			if status == http.StatusNoContent {
				continue
			}
		case "Date":
			*hasDate = true
		}
		b = append(b, f.k...)
		b = append(b, ": "...)
		b = append(b, syntax.SafeValue(f.v)...)
		b = append(b, "\r\n"...)
	}
	return b
}

// readHead returns the next response head from br without its final empty
// line, consumed from br.
func readHead(br *bufio.Reader) (head string, got bool, err error) {
	if _, err := br.Peek(1); err != nil {
		return "", false, err
	}
	for {
		buf := peekAll(br)
		if end := headEnd(buf); end >= 0 {
			head = string(buf[:end])
			br.Discard(end)
			return head, true, nil
		}
		if len(buf) >= br.Size() {
			return readLongHead(br)
		}
		// Wait for more of the head.
		if _, err := br.Peek(len(buf) + 1); err != nil && headEnd(peekAll(br)) < 0 {
			return "", true, err
		}
	}
}

// peekAll returns what br has buffered.
func peekAll(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// readLongHead reads a head that does not fit in br's buffer, line by line,
// up to maxResponseHead bytes.
func readLongHead(br *bufio.Reader) (string, bool, error) {
	var head []byte
	for {
		line, err := br.ReadSlice('\n')
		if len(head)+len(line) > maxResponseHead {
			return "", true, errResponseHeadLarge
		}
		head = append(head, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", true, err
		}
		if len(line) <= 2 && (string(line) == "\n" || string(line) == "\r\n") {
			return string(head[:len(head)-len(line)]), true, nil
		}
	}
}

// headEnd returns the length of the head in buf, its final empty line
// included, or -1 when buf does not hold all of it yet. Lines end in CRLF,
// or a bare LF from lenient apps.
func headEnd(buf []byte) int {
	// One pass over the line ends: the body behind a head (in the same
	// buffer) is not scanned.
	for i := 0; ; {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		if i < len(buf) && buf[i] == '\n' {
			return i + 1
		}
		if i+1 < len(buf) && buf[i] == '\r' && buf[i+1] == '\n' {
			return i + 2
		}
	}
}

// parseContentLength parses a Content-Length value: digits only (no sign,
// no list), as RFC 9110 8.6 has it; strconv.ParseInt would take "+5".
func parseContentLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseStatusLine parses "HTTP/1.1 200 OK". close is true for HTTP/1.0
// (unless its headers ask for keep-alive).
func parseStatusLine(line string) (status int, close bool, err error) {
	proto, rest, ok := strings.Cut(line, " ")
	if !ok || len(proto) != len("HTTP/1.1") || !strings.HasPrefix(proto, "HTTP/1.") {
		return 0, false, fmt.Errorf("%w: status line %q", errMalformedResponse, truncate(line))
	}
	if len(rest) < 3 || len(rest) > 3 && rest[3] != ' ' {
		return 0, false, fmt.Errorf("%w: status line %q", errMalformedResponse, truncate(line))
	}
	for i := range 3 {
		c := rest[i]
		if c < '0' || c > '9' {
			return 0, false, fmt.Errorf("%w: status line %q", errMalformedResponse, truncate(line))
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 {
		return 0, false, fmt.Errorf("%w: status %d", errMalformedResponse, status)
	}
	return status, proto == "HTTP/1.0", nil
}

// canonicalFieldName returns k in canonical form
// (textproto.CanonicalMIMEHeaderKey) and reports whether it is a valid
// field name: a token (RFC 9110 5.1). An app's header names nearly always
// come canonical already: one pass checks both and returns k itself.
func canonicalFieldName(k string) (string, bool) {
	if k == "" {
		return "", false
	}
	upper := true // the next letter must be upper case
	canonical := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !syntax.TokenByte(c) {
			return "", false
		}
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			canonical = false
		}
		upper = c == '-'
	}
	if !canonical {
		return textproto.CanonicalMIMEHeaderKey(k), true
	}
	return k, true
}

// truncate shortens an app's text for an error message.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
