package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// upgrade completes a 101 Switching Protocols: it checks the app switched
// to the protocol the client asked for, hijacks the client's connection,
// writes the 101 to it and copies bytes both ways until either side is
// done. The call stays in flight, counted as upgraded, until then; an abort
// (a Retire deadline, the client leaving) closes both connections.
func (p *Proxy) upgrade(w http.ResponseWriter, r *http.Request, c *call, bc *backendConn, res response, reqType string) {
	defer bc.close()
	bc.finishBody()
	if !strings.EqualFold(reqType, res.upgrade) || !isPrintASCII(res.upgrade) {
		c.detach()
		p.writeError(w, r, c, fmt.Errorf("proxy: app switched to protocol %q when %q was requested", res.upgrade, reqType))
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		c.detach()
		p.writeError(w, r, c, fmt.Errorf("proxy: switching protocols: %w", err))
		return
	}
	defer conn.Close()
	c.status = http.StatusSwitchingProtocols
	c.b.markUpgraded(c)
	if !c.attachClient(conn) {
		return
	}

	// The 101 as the app sent it, with what a wrapping handler set on w
	// that the app did not.
	bw := brw.Writer
	bw.WriteString("HTTP/1.1 101 ")
	bw.WriteString(http.StatusText(http.StatusSwitchingProtocols))
	bw.WriteString("\r\n")
	for k, vs := range res.header {
		for _, v := range vs {
			writeHeaderLine(bw, k, v)
		}
	}
	for k, vs := range w.Header() {
		if _, ok := res.header[k]; ok || hopByHop(k) {
			continue
		}
		for _, v := range vs {
			writeHeaderLine(bw, k, v)
		}
	}
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		return
	}

	// Go issue 80875: bytes the client sent right behind its upgrade
	// request may already sit in the server's read buffer; they go first.
	var fromClient io.Reader = conn
	if brw.Reader.Buffered() > 0 {
		fromClient = &prereadConn{Conn: conn, r: brw.Reader}
	}
	// Likewise bytes the app sent right behind its 101 sit in bc.br.
	// One side failing ends both, as in httputil.ReverseProxy; one side
	// ending is passed on as a half-close, and the other may go on.
	closeBoth := func() {
		conn.Close()
		bc.conn.Close()
	}
	errc := make(chan error, 1)
	go func() {
		err := copyHalf(bc.conn, fromClient)
		if err != nil {
			closeBoth()
		}
		errc <- err
	}()
	if err := copyHalf(conn, bc.br); err != nil {
		closeBoth()
	}
	<-errc
}

// copyHalf copies src to dst until src ends, then half-closes dst so its
// peer sees the end too. A dst that cannot half-close ends the copy with an
// error, which closes both connections.
func copyHalf(dst net.Conn, src io.Reader) error {
	buf := getBuffer()
	defer putBuffer(buf)
	if _, err := io.CopyBuffer(writerOnly{dst}, readerOnly{src}, *buf); err != nil {
		return err
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errCopyDone
}

var errCopyDone = errors.New("proxy: upgraded connection copy complete")

// readerOnly and writerOnly hide ReaderFrom and WriterTo, so that
// io.CopyBuffer uses the pooled buffer.
type readerOnly struct{ io.Reader }

type writerOnly struct{ io.Writer }

// prereadConn reads what r holds before reading the connection. Only one
// goroutine reads it (the client→app copy).
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
