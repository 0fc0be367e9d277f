package relayhead

import "testing"

func TestAppendRequest(t *testing.T) {
	head := "GET /a?b=1 HTTP/1.1\r\nHost: app.test\r\nconnection: keep-alive\r\nX-Forwarded-For: 10.0.0.9\r\nAccept: */*\r\n\r\n"
	got := string(AppendRequest([]byte("x"), []byte(head), []byte("127.0.0.1"), 255))
	want := "xGET /a?b=1 HTTP/1.1\r\nHost: app.test\r\nAccept: */*\r\n" +
		"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Host: app.test\r\nX-Forwarded-Proto: http\r\nX-Request-Id: ff\r\n\r\n"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestContentLength(t *testing.T) {
	for head, want := range map[string]int{
		"HTTP/1.1 200 OK\r\nContent-Length: 67\r\nContent-Type: application/json\r\n\r\n": 67,
		"HTTP/1.1 200 OK\r\ncontent-length:  5 \r\n\r\n":                                  5,
		"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n":                                      0,
	} {
		if got := ContentLength([]byte(head)); got != want {
			t.Errorf("ContentLength(%q) = %d, want %d", head, got, want)
		}
	}
}
