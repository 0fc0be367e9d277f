package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
)

// upgradeWriter is the ResponseWriter ReverseProxy gets for a request asking
// to switch protocols. Its Hijack returns a connection that first yields the
// bytes the server had already buffered after the request.
//
// Go issue 80875: on a 101 response, ReverseProxy copies client→backend from
// the hijacked net.Conn, never from the hijacked bufio.Reader, so bytes the
// client sent right behind the upgrade request (read ahead by the server)
// are lost — a websocket client's first frame, say.
type upgradeWriter struct {
	http.ResponseWriter
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w upgradeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w upgradeWriter) Flush() { w.FlushError() }

func (w upgradeWriter) FlushError() error {
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if brw.Reader.Buffered() > 0 {
		conn = &prereadConn{Conn: conn, r: brw.Reader}
	}
	return conn, brw, nil
}

// prereadConn reads what r holds before reading the connection. Only one
// goroutine reads it (ReverseProxy's client→backend copy).
type prereadConn struct {
	net.Conn
	r *bufio.Reader // nil once drained
}

func (c *prereadConn) Read(p []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			// With data buffered, bufio.Reader.Read copies from the
			// buffer without touching the connection.
			return c.r.Read(p)
		}
		c.r = nil
	}
	return c.Conn.Read(p)
}

// CloseWrite passes the backend's half-close to the client, which
// ReverseProxy does only if the connection has the method.
func (c *prereadConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("proxy: CloseWrite on %T: %w", c.Conn, errors.ErrUnsupported)
}
