package rawio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testsock"
)

// pair returns two connected sockets of network ("tcp" or "unix").
func pair(t testing.TB, network string) (client, server net.Conn) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s.sock")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err = net.Dial(network, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func wrap(nc net.Conn) *Conn {
	c := new(Conn)
	c.Init(nc)
	return c
}

func TestRaw(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			cl, sv := pair(t, network)
			c := wrap(sv)
			if enabled && c.rc == nil {
				t.Fatalf("a %s connection is not read raw", network)
			}

			t.Run("read and write", func(t *testing.T) {
				go cl.Write([]byte("ping"))
				buf := make([]byte, 16)
				n, err := c.Read(buf)
				if err != nil || string(buf[:n]) != "ping" {
					t.Fatalf("Read = %q, %v; want ping", buf[:n], err)
				}
				if n, err := c.Write([]byte("pong")); n != 4 || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
				if _, err := io.ReadFull(cl, buf[:4]); err != nil || string(buf[:4]) != "pong" {
					t.Fatalf("peer read %q, %v", buf[:4], err)
				}
			})

			t.Run("a read waits for the peer", func(t *testing.T) {
				go func() {
					time.Sleep(50 * time.Millisecond)
					cl.Write([]byte("late"))
				}()
				buf := make([]byte, 16)
				n, err := c.Read(buf)
				if err != nil || string(buf[:n]) != "late" {
					t.Fatalf("Read = %q, %v; want late", buf[:n], err)
				}
			})

			t.Run("deadline", func(t *testing.T) {
				c.nc.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
				defer c.nc.SetReadDeadline(time.Time{})
				_, err := c.Read(make([]byte, 16))
				var ne net.Error
				if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("Read past its deadline = %v; want a timeout", err)
				}
				c.nc.SetWriteDeadline(time.Unix(1, 0))
				defer c.nc.SetWriteDeadline(time.Time{})
				if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("Write past its deadline = %v; want a timeout", err)
				}
			})

			t.Run("a long write waits for a slow reader", func(t *testing.T) {
				// More than the socket buffers hold: the write gets EAGAIN and
				// partial writes, and must still deliver every byte once.
				want := bytes.Repeat([]byte("0123456789abcdef"), MaxRawWrite/16)
				if err := setSendBuffer(sv, 4096); err != nil {
					t.Fatal(err)
				}
				got := make(chan []byte, 1)
				go func() {
					var b bytes.Buffer
					buf := make([]byte, 1000)
					for b.Len() < len(want) {
						time.Sleep(time.Millisecond)
						n, err := cl.Read(buf)
						if err != nil {
							break
						}
						b.Write(buf[:n])
					}
					got <- b.Bytes()
				}()
				if n, err := c.Write(want); n != len(want) || err != nil {
					t.Fatalf("Write = %d, %v; want %d", n, err, len(want))
				}
				if b := <-got; !bytes.Equal(b, want) {
					t.Fatalf("the peer read %d bytes, not the %d written", len(b), len(want))
				}
			})

			t.Run("EOF", func(t *testing.T) {
				cl.Close()
				if n, err := c.Read(make([]byte, 16)); n != 0 || err != io.EOF {
					t.Fatalf("Read after the peer closed = %d, %v; want io.EOF", n, err)
				}
			})
		})
	}
}

func TestCloseInterruptsRead(t *testing.T) {
	_, sv := pair(t, "tcp")
	c := wrap(sv)
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 16))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	sv.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read interrupted by Close = %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not interrupt a blocked Read")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v; want net.ErrClosed", err)
	}
}

func TestWriteToClosedPeer(t *testing.T) {
	cl, sv := pair(t, "unix")
	c := wrap(sv)
	cl.Close()
	_, err := c.Write([]byte("x"))
	if !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("Write to a closed unix peer = %v; want EPIPE", err)
	}
}

func TestFallback(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := wrap(a)
	if c.rc != nil {
		t.Fatal("a net.Pipe has no socket, yet Init took it as one")
	}
	go b.Write([]byte("pipe"))
	buf := make([]byte, 8)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "pipe" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	go io.Copy(io.Discard, b)
	if n, err := c.Write([]byte("back")); n != 4 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
}

func setSendBuffer(nc net.Conn, n int) error {
	type buffered interface{ SetWriteBuffer(int) error }
	return nc.(buffered).SetWriteBuffer(n)
}

func BenchmarkReadWrite(b *testing.B) {
	for _, impl := range []string{"net.Conn", "rawio"} {
		b.Run(impl, func(b *testing.B) {
			cl, sv := pair(b, "unix")
			var rw io.ReadWriter = sv
			if impl == "rawio" {
				rw = wrap(sv)
			}
			go func() {
				buf := make([]byte, 64)
				for {
					n, err := cl.Read(buf)
					if err != nil {
						return
					}
					cl.Write(buf[:n])
				}
			}()
			msg := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			buf := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				rw.Write(msg)
				io.ReadFull(rw, buf[:len(msg)])
			}
		})
	}
}

func wrapRequest(nc net.Conn) *RequestConn {
	c := new(RequestConn)
	c.Init(nc)
	return c
}

// echoServer answers every read on sv with what it read, at once.
func echoServer(sv net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := sv.Read(buf)
		if err != nil {
			return
		}
		if _, err := sv.Write(buf[:n]); err != nil {
			return
		}
	}
}

func TestWriteRead(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			cl, sv := pair(t, network)
			go echoServer(sv)
			c := wrapRequest(cl)
			if enabled && c.rc == nil {
				t.Fatalf("a %s connection is not read raw", network)
			}
			// Many round trips: an answer that arrives between the
			// write and the wait must wake the wait every time.
			buf := make([]byte, 64)
			done := make(chan error, 1)
			go func() {
				for i := range 20000 {
					q := []byte("request " + strconv.Itoa(i))
					nq, nr, err := c.WriteRead(q, buf)
					if err == nil && nr < len(q) {
						var more int
						more, err = io.ReadFull(&c.Conn, buf[nr:len(q)])
						nr += more
					}
					if err != nil || nq != len(q) || string(buf[:nr]) != string(q) {
						done <- fmt.Errorf("round %d: WriteRead = %d, %q, %v", i, nq, buf[:nr], err)
						return
					}
				}
				done <- nil
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("a WriteRead never saw its answer")
			}
		})
	}
}

func TestWriteReadLongRequest(t *testing.T) {
	// A request the socket cannot take at once: the write finishes
	// outside the read, which then reads the answer as usual.
	cl, sv := pair(t, "unix")
	if err := setSendBuffer(cl, 4096); err != nil {
		t.Fatal(err)
	}
	q := bytes.Repeat([]byte("x"), MaxRawWrite)
	go func() {
		if _, err := io.ReadFull(sv, make([]byte, len(q))); err == nil {
			sv.Write([]byte("done"))
		}
	}()
	c := wrapRequest(cl)
	buf := make([]byte, 16)
	nq, nr, err := c.WriteRead(q, buf)
	if err != nil || nq != len(q) || string(buf[:nr]) != "done" {
		t.Fatalf("WriteRead = %d, %q, %v; want %d, done", nq, buf[:nr], err, len(q))
	}
}

func TestWriteReadErrors(t *testing.T) {
	t.Run("peer gone", func(t *testing.T) {
		cl, sv := pair(t, "unix")
		sv.Close()
		nq, _, err := wrapRequest(cl).WriteRead([]byte("GET"), make([]byte, 16))
		if nq != 0 || !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("WriteRead to a closed peer = %d, %v; want 0, EPIPE", nq, err)
		}
	})
	t.Run("deadline passed", func(t *testing.T) {
		cl, sv := pair(t, "unix")
		cl.SetReadDeadline(time.Unix(1, 0))
		nq, _, err := wrapRequest(cl).WriteRead([]byte("GET"), make([]byte, 16))
		if nq != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("WriteRead past the read deadline = %d, %v; want 0 written, a timeout", nq, err)
		}
		sv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, _ := sv.Read(make([]byte, 16)); n != 0 {
			t.Fatalf("the peer got %d bytes of a request that was not to be written", n)
		}
	})
	t.Run("no answer in time", func(t *testing.T) {
		cl, sv := pair(t, "unix")
		cl.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		nq, _, err := wrapRequest(cl).WriteRead([]byte("GET"), make([]byte, 16))
		if nq != 3 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("WriteRead without an answer = %d, %v; want 3 written, a timeout", nq, err)
		}
		if _, err := io.ReadFull(sv, make([]byte, 3)); err != nil {
			t.Fatalf("the peer did not get the request: %v", err)
		}
	})
	t.Run("peer closes instead of answering", func(t *testing.T) {
		cl, sv := pair(t, "tcp")
		go func() {
			io.ReadFull(sv, make([]byte, 3))
			sv.Close()
		}()
		_, nr, err := wrapRequest(cl).WriteRead([]byte("GET"), make([]byte, 16))
		if nr != 0 || err != io.EOF {
			t.Fatalf("WriteRead answered by a close = %d, %v; want io.EOF", nr, err)
		}
	})
}

// TestWriteReadYields: on one thread, a goroutine that is ready to run
// when WriteRead begins runs before the request is written (see Yield).
func TestWriteReadYields(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	cl, sv := pair(t, "unix")
	c := wrapRequest(cl)
	seen := make(chan int, 1)
	go func() {
		// Ready, not running, when WriteRead starts: the only thread
		// is the test's.
		n, err := testsock.Unread(sv)
		if err != nil {
			t.Error(err)
		}
		seen <- n
		echoServer(sv)
	}()
	q := []byte("GET / HTTP/1.1\r\n\r\n")
	p := make([]byte, 64)
	if _, nr, err := c.WriteRead(q, p); err != nil || string(p[:nr]) != string(q) {
		t.Fatalf("WriteRead: %q, %v", p[:nr], err)
	}
	if n := <-seen; n != 0 {
		t.Errorf("the goroutine ready before WriteRead found %d bytes of the request already written, want 0: WriteRead did not yield first", n)
	}
}
