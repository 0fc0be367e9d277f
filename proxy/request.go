package proxy

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// writeRequestHead writes the head of r as the app gets it: the request
// line (the route's prefix stripped if asked), Host as the client sent it,
// the client's headers without hop-by-hop ones and without forwarding
// headers a client could forge, the proxy's X-Forwarded-For, -Host,
// -Proto and X-Request-Id, and the body's framing (bodyLen: 0 none, -1
// chunked). upType is the protocol the client asked to switch to, or "".
//
// The headers are those httputil.ReverseProxy with Rewrite and
// SetXForwarded sends, written straight from r's header map: nothing is
// cloned. The server already rejected invalid field names and values, so
// they are written as they are.
func (c *call) writeRequestHead(bw *bufio.Writer, r *http.Request, upType string, bodyLen int64, trailer http.Header) {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	u := r.URL
	if c.route.strip {
		stripped := *u
		stripURLPath(&stripped, c.route.prefix)
		u = &stripped
	}
	writeRequestURI(bw, u)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")

	connTokens := r.Header["Connection"]
	for k, vs := range r.Header {
		if hopOrForwarded(k) || len(connTokens) > 0 && headerValuesContainToken(connTokens, k) {
			continue
		}
		for _, v := range vs {
			writeHeaderLine(bw, k, v)
		}
	}

	// httputil.ProxyRequest.SetXForwarded: behind a unix-socket listener
	// RemoteAddr has no port, and then no X-Forwarded-For is set
	// (PITFALLS).
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		writeHeaderLine(bw, "X-Forwarded-For", ip)
	}
	writeHeaderLine(bw, "X-Forwarded-Host", r.Host)
	if r.TLS == nil {
		writeHeaderLine(bw, "X-Forwarded-Proto", "http")
	} else {
		writeHeaderLine(bw, "X-Forwarded-Proto", "https")
	}
	if vs := r.Header["X-Request-Id"]; len(vs) > 0 && vs[0] != "" {
		c.requestID = vs[0]
	} else {
		// Formatted only if a log line needs it (see call.id).
		if c.idNum == 0 {
			c.idNum = rand.Uint64() | 1
		}
		bw.WriteString("X-Request-Id: ")
		writeRequestID(bw, c.idNum)
		bw.WriteString("\r\n")
	}
	// Go issue 21096: tell apps that care about trailers that the client
	// accepts them, when it said so.
	if headerValuesContainToken(r.Header["Te"], "trailers") {
		writeHeaderLine(bw, "Te", "trailers")
	}
	if upType != "" {
		bw.WriteString("Connection: Upgrade\r\n")
		writeHeaderLine(bw, "Upgrade", upType)
	}
	switch {
	case bodyLen > 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(bodyLen, 10))
		bw.WriteString("\r\n")
	case bodyLen < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		if len(trailer) > 0 {
			bw.WriteString("Trailer: ")
			first := true
			for k := range trailer {
				if !first {
					bw.WriteString(", ")
				}
				bw.WriteString(k)
				first = false
			}
			bw.WriteString("\r\n")
		}
	case r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch:
		// As http.Transport does: these methods announce an empty body.
		bw.WriteString("Content-Length: 0\r\n")
	}
	bw.WriteString("\r\n")
}

func writeHeaderLine(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// writeRequestURI writes u's request-target: what url.URL.RequestURI
// returns, without allocating for the common case, and with the query
// cleaned as httputil.ReverseProxy cleans it.
func writeRequestURI(bw *bufio.Writer, u *url.URL) {
	if u.Opaque != "" || u.Scheme != "" && u.Path == "" {
		bw.WriteString(u.RequestURI())
		return
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	bw.WriteString(p)
	if q := cleanQueryParams(u.RawQuery); u.ForceQuery || q != "" {
		bw.WriteByte('?')
		bw.WriteString(q)
	}
}

// hopOrForwarded reports whether a request header is never passed on as
// the client sent it: hop-by-hop headers (RFC 9110 7.6.1, and those
// httputil.ReverseProxy removes), the framing the proxy writes itself, and
// the forwarding headers the proxy sets (a client cannot forge them).
func hopOrForwarded(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length", "Host",
		"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return true
	}
	return false
}

// hopByHop reports whether a response header is hop-by-hop.
func hopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// headerValuesContainToken reports whether any comma-separated element of
// values equals token, ignoring case and optional whitespace (as
// golang.org/x/net/http/httpguts.HeaderValuesContainsToken).
func headerValuesContainToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var elem string
			elem, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.Trim(elem, " \t"), token) {
				return true
			}
		}
	}
	return false
}

// upgradeType returns the protocol a request or response asks to switch to:
// its Upgrade header when its Connection header names "upgrade".
func upgradeType(h http.Header) string {
	if !headerValuesContainToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// isPrintASCII reports whether s is printable ASCII.
func isPrintASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// cleanQueryParams is httputil.ReverseProxy's: a query that Go would parse
// differently from other servers (";" separators, bad escapes) is
// re-encoded from what Go parses, so the app and the proxy agree on it.
func cleanQueryParams(s string) string {
	reencode := func(s string) string {
		v, _ := url.ParseQuery(s)
		return v.Encode()
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return reencode(s)
		case '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				return reencode(s)
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// A request id is 16 hex digits: the 8 bytes of a random number, in
// little-endian order.

// writeRequestID writes the id of n without allocating.
func writeRequestID(bw *bufio.Writer, n uint64) {
	const digits = "0123456789abcdef"
	for range 8 {
		b := byte(n)
		bw.WriteByte(digits[b>>4])
		bw.WriteByte(digits[b&0xf])
		n >>= 8
	}
}

// formatRequestID returns the id of n as a string, for logs.
func formatRequestID(n uint64) string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], n)
	return hex.EncodeToString(b[:])
}

// writeBody writes an attempt's request body after its head: n bytes, or
// chunks when n < 0 (each flushed at once, as http.Transport does, so a
// streamed upload is not held back), then the client's trailers.
//
// A failure to read the client's body is an ErrRequestBody; any other error
// is the app's connection failing.
func writeBody(bw *bufio.Writer, body io.Reader, n int64, trailer http.Header) error {
	cb := &clientBody{r: body}
	if n >= 0 {
		written, err := io.Copy(bw, io.LimitReader(cb, n))
		if cb.err != nil {
			return fmt.Errorf("%w: %w", ErrRequestBody, cb.err)
		}
		if err != nil {
			return err
		}
		if written < n {
			return fmt.Errorf("%w: %w", ErrRequestBody, io.ErrUnexpectedEOF)
		}
		return bw.Flush()
	}
	buf := getBuffer()
	defer putBuffer(buf)
	for {
		k, rerr := cb.Read(*buf)
		if k > 0 {
			bw.WriteString(strconv.FormatInt(int64(k), 16))
			bw.WriteString("\r\n")
			bw.Write((*buf)[:k])
			bw.WriteString("\r\n")
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%w: %w", ErrRequestBody, rerr)
		}
	}
	bw.WriteString("0\r\n")
	for k, vs := range trailer {
		for _, v := range vs {
			writeHeaderLine(bw, k, v)
		}
	}
	bw.WriteString("\r\n")
	return bw.Flush()
}

// clientBody remembers a failure to read the client's body, to tell it
// from a failure to write to the app.
type clientBody struct {
	r   io.Reader
	err error
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}
