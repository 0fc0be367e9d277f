package proxy

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand/v2"
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
//
// Forwarding headers (Forwarded, X-Real-Ip, X-Forwarded-*) are the
// client's word about where the request came from. From a client the proxy
// does not trust (c.trusted, see Options.TrustedProxies) they are all
// dropped and X-Forwarded-For, -Host and -Proto set afresh; from a trusted
// proxy they are passed on, X-Forwarded-For extended with the client's
// address, X-Forwarded-Host and -Proto kept if present. A forwarding
// header spelled with '_' for '-' is dropped from anyone: CGI-style
// servers (Rack, WSGI, PHP) read X_Forwarded_For and X-Forwarded-For as the
// same variable, and which one wins is theirs to decide.
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
		if hopByHopRequest(k) || len(connTokens) > 0 && headerValuesContainToken(connTokens, k) {
			continue
		}
		if forwardingHeader(k) && (!c.trusted || setByProxy(k) || strings.IndexByte(k, '_') >= 0) {
			continue
		}
		for _, v := range vs {
			writeHeaderLine(bw, k, v)
		}
	}

	// httputil.ProxyRequest.SetXForwarded: behind a unix-socket listener
	// RemoteAddr has no address, and then no X-Forwarded-For is set
	// (PITFALLS).
	addr, _, haveAddr := clientIP(r.RemoteAddr)
	var prior []string
	if c.trusted {
		prior = endToEnd(r.Header, connTokens, "X-Forwarded-For")
	}
	if len(prior) > 0 {
		// "a, b" from the proxy in front, then the proxy's own client.
		bw.WriteString("X-Forwarded-For: ")
		for _, v := range prior {
			if v != "" {
				bw.WriteString(v)
				bw.WriteString(", ")
			}
		}
		bw.WriteString(addr) // c.trusted: the address parsed
		bw.WriteString("\r\n")
	} else if haveAddr {
		writeHeaderLine(bw, "X-Forwarded-For", addr)
	}
	if !c.trusted || !writeValues(bw, "X-Forwarded-Host", endToEnd(r.Header, connTokens, "X-Forwarded-Host")) {
		writeHeaderLine(bw, "X-Forwarded-Host", r.Host)
	}
	if !c.trusted || !writeValues(bw, "X-Forwarded-Proto", endToEnd(r.Header, connTokens, "X-Forwarded-Proto")) {
		if r.TLS == nil {
			writeHeaderLine(bw, "X-Forwarded-Proto", "http")
		} else {
			writeHeaderLine(bw, "X-Forwarded-Proto", "https")
		}
	}
	if vs := endToEnd(r.Header, connTokens, "X-Request-Id"); len(vs) > 0 && vs[0] != "" {
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
	// accepts them, when it said so. Only "trailers": the transfer codings
	// a client accepts are for the proxy, which sends the app none.
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

// endToEnd returns the values of header k unless the client's Connection
// header names it (then it is hop-by-hop: RFC 9110 7.6.1).
func endToEnd(h http.Header, connTokens []string, k string) []string {
	vs := h[k]
	if len(vs) > 0 && len(connTokens) > 0 && headerValuesContainToken(connTokens, k) {
		return nil
	}
	return vs
}

// writeValues writes the non-empty values of header k, and reports whether
// there was one.
func writeValues(bw *bufio.Writer, k string, vs []string) bool {
	wrote := false
	for _, v := range vs {
		if v != "" {
			writeHeaderLine(bw, k, v)
			wrote = true
		}
	}
	return wrote
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

// hopByHopRequest reports whether a request header is never passed on as
// the client sent it: hop-by-hop headers (RFC 9110 7.6.1, and those
// httputil.ReverseProxy removes), HTTP2-Settings (RFC 9113 3.1: for the h2c
// upgrade the proxy never does) and the framing the proxy writes itself.
//
// Proxy-Authorization is hop-by-hop (RFC 9110 11.7.2: it is for the proxy
// that asked for it): credentials a client meant for a proxy in front are
// not the app's to see.
func hopByHopRequest(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Http2-Settings", "Content-Length", "Host":
		return true
	}
	return false
}

// hopByHop reports whether a response header is hop-by-hop. The response's
// framing (Content-Length) is decided by readResponseHead.
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

// upgradeType returns the protocol a request asks to switch to: its Upgrade
// header when its Connection header names "upgrade", without h2c.
//
// h2c is never passed on (RFC 9113 3.1 retired the upgrade; RFC 7540 3.2
// let a server ignore it): an app switching a connection to HTTP/2 behind
// the proxy's back would take it out of the proxy's hands, and the request
// smuggled in its HTTP2-Settings would be the app's to parse. The request
// is served as plain HTTP/1.1, and the client goes on with that. When the
// client offered other protocols too ("h2c, websocket"), only h2c is
// dropped: the upgrade to the others goes to the app.
func upgradeType(h http.Header) string {
	if !headerValuesContainToken(h["Connection"], "Upgrade") {
		return ""
	}
	vs := h["Upgrade"]
	if len(vs) == 1 && !headerValuesContainToken(vs, "h2c") {
		return vs[0]
	}
	var b strings.Builder
	for _, v := range vs {
		for elem := range strings.SplitSeq(v, ",") {
			elem = strings.Trim(elem, " \t")
			if elem == "" || strings.EqualFold(elem, "h2c") {
				continue
			}
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(elem)
		}
	}
	return b.String()
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
			return requestBodyError(cb.err)
		}
		if err != nil {
			return err
		}
		if written < n {
			return requestBodyError(io.ErrUnexpectedEOF)
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
			return requestBodyError(rerr)
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
