// Command rawrelay is a measuring stick for the benchmark, not a proxy: it
// shows what a Go front end that does not go through net/http's server can
// forward on this machine. It accepts HTTP/1.1 keep-alive connections,
// relays each request head to a pooled unix-socket connection to the app
// (with the forwarding headers deployer adds) and relays the response head
// and its Content-Length body back, as bytes, with no per-request
// goroutine hand-offs, header maps or allocations beyond a few.
//
// It handles only what the benchmark sends (GET without a body, answers
// with Content-Length) and none of deployer's guarantees: no holding, no
// retries, no draining, no upgrades, no error answers. Its figure in the
// table is the ceiling a lean front end could reach, for comparison with
// net/http's; see BENCHMARKS.md.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/deployer/deployer/bench/internal/relayhead"
)

func main() {
	socket := flag.String("socket", "", "the app's unix socket")
	addr := flag.String("addr", "127.0.0.1:8081", "address to listen on")
	flag.Parse()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rawrelay:", err)
		os.Exit(1)
	}
	p := &pool{socket: *socket}
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "rawrelay:", err)
			os.Exit(1)
		}
		go serve(c, p)
	}
}

// pool keeps idle connections to the app.
type pool struct {
	socket string
	mu     sync.Mutex
	idle   []*appConn
}

type appConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func (p *pool) get() (*appConn, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		a := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return a, nil
	}
	p.mu.Unlock()
	c, err := net.Dial("unix", p.socket)
	if err != nil {
		return nil, err
	}
	return &appConn{c, bufio.NewReaderSize(c, 4096), bufio.NewWriterSize(c, 4096)}, nil
}

func (p *pool) put(a *appConn) {
	p.mu.Lock()
	p.idle = append(p.idle, a)
	p.mu.Unlock()
}

// readHead returns the next head in br (up to its empty line), unconsumed.
func readHead(br *bufio.Reader) ([]byte, error) {
	if _, err := br.Peek(1); err != nil {
		return nil, err
	}
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			return buf[:i+4], nil
		}
		if len(buf) == br.Size() {
			return nil, bufio.ErrBufferFull
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil, err
		}
	}
}

func serve(c net.Conn, p *pool) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 4096)
	bw := bufio.NewWriterSize(c, 4096)
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	ip := []byte(host)
	var id uint64
	for {
		head, err := readHead(br)
		if err != nil {
			return
		}
		a, err := p.get()
		if err != nil {
			return
		}
		id++
		a.bw.Write(relayhead.AppendRequest(a.bw.AvailableBuffer(), head, ip, id))
		br.Discard(len(head))
		if err := a.bw.Flush(); err != nil {
			return
		}
		rhead, err := readHead(a.br)
		if err != nil {
			return
		}
		length := relayhead.ContentLength(rhead)
		bw.Write(rhead)
		a.br.Discard(len(rhead))
		body, err := a.br.Peek(length)
		if err != nil {
			return
		}
		bw.Write(body)
		a.br.Discard(length)
		p.put(a)
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return
			}
		}
	}
}
