package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// head returns what writeRequestHead writes for r on route rt.
func head(t testing.TB, rt *route, r *http.Request, upType string, bodyLen int64) (string, *call) {
	t.Helper()
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	c := &call{route: rt, idNum: 0x0123456789abcdef}
	c.trusted = trusts(trustedForTests, r.RemoteAddr)
	c.writeRequestHead(bw, r, upType, bodyLen, nil)
	bw.Flush()
	return buf.String(), c
}

func TestWriteRequestHead(t *testing.T) {
	all := &route{prefix: "/"}
	r := httptest.NewRequest(http.MethodGet, "http://shop.example.com/a%2Fb/c?x=1&z=%zz", nil)
	r.RemoteAddr = "192.0.2.7:4711"
	r.Header.Set("X-Custom", "kept")
	r.Header.Set("Connection", "X-Hop, keep-alive")
	r.Header.Set("X-Hop", "dropped")
	r.Header.Set("Keep-Alive", "timeout=5")
	r.Header.Set("Te", "trailers, deflate")
	r.Header.Set("X-Forwarded-For", "forged")
	r.Header.Set("Forwarded", "for=forged")
	r.Header.Set("Proxy-Authorization", "Basic Zm9yZ2Vk")
	r.Header.Set("Proxy-Connection", "keep-alive")
	r.Header.Set("Upgrade", "h2c")
	r.Header.Set("Http2-Settings", "AAMAAABkAAQAAP__")
	r.Header.Set("Trailer", "X-T")
	r.Header.Set("Transfer-Encoding", "chunked")
	got, c := head(t, all, r, "", 0)

	line, _, _ := strings.Cut(got, "\r\n")
	// The path keeps its escaping; the query is re-encoded as Go parses it
	// (httputil.ReverseProxy's cleanQueryParams).
	if want := "GET /a%2Fb/c?x=1 HTTP/1.1"; line != want {
		t.Errorf("request line %q, want %q", line, want)
	}
	for _, want := range []string{
		"\r\nHost: shop.example.com\r\n", "\r\nX-Custom: kept\r\n", "\r\nX-Forwarded-For: 192.0.2.7\r\n",
		"\r\nX-Forwarded-Host: shop.example.com\r\n", "\r\nX-Forwarded-Proto: http\r\n",
		"\r\nX-Request-Id: efcdab8967452301\r\n", "\r\nTe: trailers\r\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("head lacks %q:\n%s", want, got)
		}
	}
	for _, unwanted := range []string{"X-Hop", "Keep-Alive", "Connection", "forged", "Content-Length", "deflate",
		"Zm9yZ2Vk", "Proxy-", "Upgrade", "h2c", "Http2-Settings", "Trailer", "Transfer-Encoding"} {
		if strings.Contains(got, unwanted) {
			t.Errorf("head has %q:\n%s", unwanted, got)
		}
	}
	if !strings.HasSuffix(got, "\r\n\r\n") {
		t.Errorf("head does not end with an empty line:\n%s", got)
	}
	if id := c.id(); id != "efcdab8967452301" {
		t.Errorf("id for logs %q, want the one sent", id)
	}
}

// trustedForTests are the trusted proxies of head: 10.0.0.0/8 and
// 2001:db8::/32.
var trustedForTests = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}

// headerLines returns the values of k in a request head, in order.
func headerLines(head, k string) []string {
	var vs []string
	for line := range strings.SplitSeq(head, "\r\n") {
		if name, v, ok := strings.Cut(line, ": "); ok && name == k {
			vs = append(vs, v)
		}
	}
	return vs
}

// Forwarding headers are believed from trusted proxies only: X-Forwarded-For
// extended, -Host and -Proto kept, the rest passed on; from anyone else all
// dropped and set afresh.
func TestWriteRequestHeadTrustedProxies(t *testing.T) {
	type want struct{ xff, xfh, xfp, fwd, port, realIP string }
	fresh := want{xff: "", xfh: "shop.example.com", xfp: "http"}
	for _, tt := range []struct {
		name   string
		remote string
		header http.Header
		want   want
	}{
		{
			name: "untrusted: all replaced", remote: "192.0.2.7:4711",
			header: http.Header{
				"X-Forwarded-For": {"6.6.6.6"}, "X-Forwarded-Host": {"evil.example"}, "X-Forwarded-Proto": {"https"},
				"Forwarded": {"for=6.6.6.6"}, "X-Forwarded-Port": {"443"}, "X-Real-Ip": {"6.6.6.6"},
			},
			want: want{xff: "192.0.2.7", xfh: fresh.xfh, xfp: fresh.xfp},
		},
		{
			name: "untrusted, nothing sent", remote: "192.0.2.7:4711",
			want: want{xff: "192.0.2.7", xfh: fresh.xfh, xfp: fresh.xfp},
		},
		{
			name: "trusted: extended and kept", remote: "10.1.2.3:4711",
			header: http.Header{
				"X-Forwarded-For": {"203.0.113.9, 10.9.9.9"}, "X-Forwarded-Host": {"www.example.org"}, "X-Forwarded-Proto": {"https"},
				"Forwarded": {"for=203.0.113.9;proto=https"}, "X-Forwarded-Port": {"443"}, "X-Real-Ip": {"203.0.113.9"},
			},
			want: want{xff: "203.0.113.9, 10.9.9.9, 10.1.2.3", xfh: "www.example.org", xfp: "https",
				fwd: "for=203.0.113.9;proto=https", port: "443", realIP: "203.0.113.9"},
		},
		{
			name: "trusted: several X-Forwarded-For lines", remote: "10.1.2.3:4711",
			header: http.Header{"X-Forwarded-For": {"203.0.113.9", "10.9.9.9"}},
			want:   want{xff: "203.0.113.9, 10.9.9.9, 10.1.2.3", xfh: fresh.xfh, xfp: fresh.xfp},
		},
		{
			name: "trusted, empty X-Forwarded-For", remote: "10.1.2.3:4711",
			header: http.Header{"X-Forwarded-For": {""}, "X-Forwarded-Host": {""}},
			want:   want{xff: "10.1.2.3", xfh: fresh.xfh, xfp: fresh.xfp},
		},
		{
			name: "trusted, nothing sent: set", remote: "10.1.2.3:4711",
			want: want{xff: "10.1.2.3", xfh: fresh.xfh, xfp: fresh.xfp},
		},
		{
			name: "trusted IPv6 with a zone", remote: "[2001:db8::1%eth0]:4711",
			header: http.Header{"X-Forwarded-For": {"203.0.113.9"}},
			want:   want{xff: "203.0.113.9, 2001:db8::1", xfh: fresh.xfh, xfp: fresh.xfp},
		},
		{
			name: "trusted IPv4-mapped IPv6", remote: "[::ffff:10.1.2.3]:4711",
			header: http.Header{"X-Forwarded-For": {"203.0.113.9"}},
			want:   want{xff: "203.0.113.9, 10.1.2.3", xfh: fresh.xfh, xfp: fresh.xfp},
		},
		{
			name: "untrusted IPv6", remote: "[2001:db9::1]:4711",
			header: http.Header{"X-Forwarded-For": {"203.0.113.9"}},
			want:   want{xff: "2001:db9::1", xfh: fresh.xfh, xfp: fresh.xfp},
		},
		{
			name: "unix socket client: no address, never trusted", remote: "@",
			header: http.Header{"X-Forwarded-For": {"203.0.113.9"}, "Forwarded": {"for=x"}},
			want:   fresh,
		},
		{
			name: "unix socket path", remote: "/run/deployer/public.sock",
			header: http.Header{"X-Forwarded-For": {"203.0.113.9"}},
			want:   fresh,
		},
		{
			name: "a bare address", remote: "10.1.2.3",
			header: http.Header{"X-Forwarded-For": {"203.0.113.9"}},
			want:   want{xff: "203.0.113.9, 10.1.2.3", xfh: fresh.xfh, xfp: fresh.xfp},
		},
		{
			name: "trusted, but the forwarding headers named in Connection", remote: "10.1.2.3:4711",
			header: http.Header{"Connection": {"X-Forwarded-For, X-Forwarded-Host"}, "X-Forwarded-For": {"203.0.113.9"}, "X-Forwarded-Host": {"www.example.org"}},
			want:   want{xff: "10.1.2.3", xfh: fresh.xfh, xfp: fresh.xfp},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://shop.example.com/", nil)
			r.RemoteAddr = tt.remote
			for k, vs := range tt.header {
				r.Header[k] = vs
			}
			got, _ := head(t, &route{prefix: "/"}, r, "", 0)
			for _, c := range []struct{ k, want string }{
				{"X-Forwarded-For", tt.want.xff}, {"X-Forwarded-Host", tt.want.xfh}, {"X-Forwarded-Proto", tt.want.xfp},
				{"Forwarded", tt.want.fwd}, {"X-Forwarded-Port", tt.want.port}, {"X-Real-Ip", tt.want.realIP},
			} {
				vs := headerLines(got, c.k)
				if c.want == "" && len(vs) > 0 || c.want != "" && (len(vs) != 1 || vs[0] != c.want) {
					t.Errorf("%s: got %q, want %q", c.k, vs, c.want)
				}
			}
		})
	}
}

// A forwarding header spelled with '_' is dropped from anyone: CGI-style
// servers would read it as the real one.
func TestWriteRequestHeadDropsUnderscoreForwarding(t *testing.T) {
	for _, remote := range []string{"192.0.2.7:1", "10.1.2.3:1"} {
		r := httptest.NewRequest(http.MethodGet, "http://shop.example.com/", nil)
		r.RemoteAddr = remote
		r.Header["X_forwarded_for"] = []string{"6.6.6.6"}
		r.Header["X_real_ip"] = []string{"6.6.6.6"}
		r.Header["X-Forwarded_proto"] = []string{"https"}
		r.Header["X_custom"] = []string{"kept"}
		got, _ := head(t, &route{prefix: "/"}, r, "", 0)
		if strings.Contains(got, "6.6.6.6") || strings.Contains(got, "https") || !strings.Contains(got, "X_custom: kept") {
			t.Errorf("from %s:\n%s", remote, got)
		}
	}
}

// h2c is never an upgrade the proxy forwards; other protocols offered with
// it are.
func TestUpgradeType(t *testing.T) {
	for _, tt := range []struct {
		connection string
		upgrade    []string
		want       string
	}{
		{"Upgrade", []string{"websocket"}, "websocket"},
		{"keep-alive, upgrade", []string{"websocket"}, "websocket"},
		{"close", []string{"websocket"}, ""},
		{"Upgrade, HTTP2-Settings", []string{"h2c"}, ""},
		{"Upgrade", []string{"H2C"}, ""},
		{"Upgrade", []string{"h2c, websocket"}, "websocket"},
		{"Upgrade", []string{"websocket , h2c"}, "websocket"},
		{"Upgrade", []string{"h2c", "websocket"}, "websocket"},
		{"Upgrade", []string{"foo", "bar"}, "foo, bar"},
	} {
		h := http.Header{"Connection": {tt.connection}, "Upgrade": tt.upgrade}
		if got := upgradeType(h); got != tt.want {
			t.Errorf("Connection %q, Upgrade %q: %q, want %q", tt.connection, tt.upgrade, got, tt.want)
		}
	}
}

func TestWriteRequestHeadFraming(t *testing.T) {
	all := &route{prefix: "/"}
	for _, tt := range []struct {
		method  string
		bodyLen int64
		want    string // a line the head has, "" for none of these
	}{
		{"GET", 0, ""},
		{"POST", 0, "Content-Length: 0"},
		{"PUT", 12, "Content-Length: 12"},
		{"POST", -1, "Transfer-Encoding: chunked"},
	} {
		got, _ := head(t, all, httptest.NewRequest(tt.method, "/", nil), "", tt.bodyLen)
		for _, line := range []string{"Content-Length: 0", "Content-Length: 12", "Transfer-Encoding: chunked"} {
			if has := strings.Contains(got, "\r\n"+line+"\r\n"); has != (line == tt.want) {
				t.Errorf("%s with body length %d: has %q = %v", tt.method, tt.bodyLen, line, has)
			}
		}
	}
}

func TestWriteRequestHeadKeepsRequestIDAndUpgrades(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/chat", nil)
	r.Header.Set("X-Request-Id", "from-client")
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	got, c := head(t, &route{prefix: "/"}, r, "websocket", 0)
	if strings.Count(got, "X-Request-Id") != 1 || !strings.Contains(got, "X-Request-Id: from-client\r\n") || c.id() != "from-client" {
		t.Errorf("request id not kept once:\n%s", got)
	}
	if !strings.Contains(got, "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n") {
		t.Errorf("upgrade headers not passed on:\n%s", got)
	}
}

func TestWriteRequestURIQuery(t *testing.T) {
	for target, want := range map[string]string{
		"/p?a=1&b=2": "/p?a=1&b=2",
		"/p?a=1;b=2": "/p",
		"/p?":        "/p?",
		"/":          "/",
		"*":          "*",
	} {
		r := httptest.NewRequest(http.MethodOptions, target, nil)
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		writeRequestURI(bw, r.URL)
		bw.Flush()
		if buf.String() != want {
			t.Errorf("%s: wrote %q, want %q", target, buf.String(), want)
		}
	}
}

func TestWriteRequestHeadStripsPrefix(t *testing.T) {
	api := &route{prefix: "/api", strip: true}
	for path, want := range map[string]string{
		"/api":            "GET / HTTP/1.1",
		"/api/users?id=7": "GET /users?id=7 HTTP/1.1",
		"/api/a%20b":      "GET /a%20b HTTP/1.1",
	} {
		got, _ := head(t, api, httptest.NewRequest(http.MethodGet, path, nil), "", 0)
		if line, _, _ := strings.Cut(got, "\r\n"); line != want {
			t.Errorf("%s: request line %q, want %q", path, line, want)
		}
	}
}

func TestHeaderValuesContainToken(t *testing.T) {
	for _, tt := range []struct {
		values []string
		token  string
		want   bool
	}{
		{[]string{"keep-alive, Upgrade"}, "upgrade", true},
		{[]string{"close"}, "upgrade", false},
		{[]string{"a", " trailers "}, "trailers", true},
		{[]string{"trailersx"}, "trailers", false},
		{nil, "close", false},
	} {
		if got := headerValuesContainToken(tt.values, tt.token); got != tt.want {
			t.Errorf("%q contains %q = %v, want %v", tt.values, tt.token, got, tt.want)
		}
	}
}

func BenchmarkWriteRequestHead(b *testing.B) {
	r := httptest.NewRequest(http.MethodGet, "http://app.example.com/api/v1/items?page=2", nil)
	r.Header.Set("User-Agent", "bench/1.0")
	r.Header.Set("Accept", "*/*")
	r.Header.Set("Accept-Encoding", "gzip")
	bw := bufio.NewWriterSize(&bytes.Buffer{}, 4096)
	c := &call{route: &route{prefix: "/"}, idNum: 42}
	b.ReportAllocs()
	for b.Loop() {
		c.writeRequestHead(bw, r, "", 0, nil)
		bw.Reset(&bytes.Buffer{})
	}
}

// BenchmarkWriteRequestHeadTrusted is a request from a trusted proxy: its
// X-Forwarded-For extended, its -Proto kept. No allocation more than for
// any other client (the one here is the benchmark's own buffer).
func BenchmarkWriteRequestHeadTrusted(b *testing.B) {
	r := httptest.NewRequest(http.MethodGet, "http://app.example.com/api/v1/items?page=2", nil)
	r.RemoteAddr = "10.1.2.3:4711"
	r.Header.Set("User-Agent", "bench/1.0")
	r.Header.Set("X-Forwarded-For", "203.0.113.9")
	r.Header.Set("X-Forwarded-Proto", "https")
	bw := bufio.NewWriterSize(&bytes.Buffer{}, 4096)
	c := &call{route: &route{prefix: "/"}, idNum: 42}
	b.ReportAllocs()
	for b.Loop() {
		c.trusted = trusts(trustedForTests, r.RemoteAddr)
		c.writeRequestHead(bw, r, "", 0, nil)
		bw.Reset(&bytes.Buffer{})
	}
}
