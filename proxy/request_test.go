package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// head returns what writeRequestHead writes for r on route rt.
func head(t testing.TB, rt *route, r *http.Request, upType string, bodyLen int64) (string, *call) {
	t.Helper()
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	c := &call{route: rt, idNum: 0x0123456789abcdef}
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
	for _, unwanted := range []string{"X-Hop", "Keep-Alive", "Connection", "forged", "Content-Length", "deflate"} {
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
