// Package relayhead is the HTTP/1.1 head handling the benchmark's
// measuring sticks (bench/rawrelay, bench/epollrelay) share: the request
// head as the app gets it, and the answer's length. It handles what the
// benchmark sends, nothing more (see those commands).
package relayhead

import (
	"bytes"
	"strconv"
)

// AppendRequest appends head, a request head up to and including its empty
// line, to dst the way deployer forwards it: the client's Connection and
// X-Forwarded-For dropped, X-Forwarded-For (ip), X-Forwarded-Host (the
// Host), X-Forwarded-Proto and X-Request-Id (id, in hex) added.
func AppendRequest(dst, head, ip []byte, id uint64) []byte {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	dst = append(dst, line...)
	dst = append(dst, "\r\n"...)
	var host []byte
	for len(rest) > 2 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		k, v, _ := bytes.Cut(h, []byte(":"))
		switch {
		case bytes.EqualFold(k, []byte("Connection")), bytes.EqualFold(k, []byte("X-Forwarded-For")):
			continue
		case bytes.EqualFold(k, []byte("Host")):
			host = bytes.TrimSpace(v)
		}
		dst = append(dst, h...)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "X-Forwarded-For: "...)
	dst = append(dst, ip...)
	dst = append(dst, "\r\nX-Forwarded-Host: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\nX-Forwarded-Proto: http\r\nX-Request-Id: "...)
	dst = strconv.AppendUint(dst, id, 16)
	return append(dst, "\r\n\r\n"...)
}

// ContentLength returns the Content-Length of a response head, 0 when it
// has none.
func ContentLength(head []byte) int {
	length := 0
	for rest := head; len(rest) > 2; {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if k, v, ok := bytes.Cut(h, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			for _, d := range bytes.TrimSpace(v) {
				length = length*10 + int(d-'0')
			}
		}
	}
	return length
}
