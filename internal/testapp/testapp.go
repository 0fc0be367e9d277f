// Package testapp has apps for proxy benchmarks that cost next to nothing
// themselves, so that a benchmark through them measures the proxy.
package testapp

import (
	"bufio"
	"io"
	"net"
)

// FixedResponse is what ServeFixed answers.
const FixedResponse = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"ok\":true}\n"

// ServeFixed answers every request on ln's connections with FixedResponse,
// reading requests with a bufio.Reader and writing raw bytes, until ln is
// closed. Requests must have no body.
func ServeFixed(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
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
		}()
	}
}
