// Package testapp has apps for proxy tests and benchmarks: one that costs
// next to nothing itself, so that a benchmark through it measures the proxy,
// and one that answers with exactly the bytes a test gives it.
package testapp

import (
	"bufio"
	"io"
	"net"
	"net/http"
)

// FixedResponse is what ServeFixed answers.
const FixedResponse = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"ok\":true}\n"

// ServeFixed answers every request on ln's connections with FixedResponse,
// reading requests with a bufio.Reader and writing raw bytes, until ln is
// closed. Requests must have no body.
func ServeFixed(ln net.Listener) {
	ServeConns(ln, func(conn net.Conn) {
		br := bufio.NewReader(conn)
		for {
			// A request without a body ends with an empty line.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 {
					break
				}
			}
			if _, err := io.WriteString(conn, FixedResponse); err != nil {
				return
			}
		}
	})
}

// ServeRaw answers every request on ln's connections (its body read and
// dropped) with the bytes reply returns, as they are, so that a test
// controls every byte of a response, and keeps the connection unless reply
// asks to close it. It returns when ln is closed.
func ServeRaw(ln net.Listener, reply func(req *http.Request) (raw string, closeAfter bool)) {
	ServeConns(ln, func(conn net.Conn) {
		br := bufio.NewReader(conn)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			raw, closeAfter := reply(req)
			if _, err := io.WriteString(conn, raw); err != nil || closeAfter {
				return
			}
		}
	})
}

// ServeConns runs serve on each connection ln accepts, in a goroutine of
// its own, and closes the connection when serve returns. It returns when ln
// is closed.
func ServeConns(ln net.Listener, serve func(net.Conn)) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			serve(conn)
		}()
	}
}
