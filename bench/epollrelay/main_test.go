//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestRelay runs a loop (then two sharing one listening socket, -shared)
// in front of a real app on a unix socket and sends it keep-alive GETs from
// concurrent clients: every answer must be the app's, for that request,
// with the forwarding headers added and the client's own Connection header
// not passed on.
func TestRelay(t *testing.T) {
	dir, err := os.MkdirTemp("", "er")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "app.sock")
	al, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s xff=%s xfh=%s xfp=%s id=%s conn=%q",
			r.Method, r.URL.RequestURI(), r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"),
			r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Request-Id"), r.Header.Get("Connection"))
	})}
	go app.Serve(al)
	t.Cleanup(func() { app.Close() })

	for _, loops := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d loops", loops), func(t *testing.T) {
			l, err := newLoop(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, socket, -1)
			if err != nil {
				t.Fatal(err)
			}
			addr, err := l.addr()
			if err != nil {
				t.Fatal(err)
			}
			l.shared = loops > 1
			go l.run() // runs until the test binary exits
			if loops > 1 {
				l2, err := newLoop(addr, socket, l.lfd)
				if err != nil {
					t.Fatal(err)
				}
				go l2.run()
			}
			relay(t, addr)
		})
	}
}

// relay sends keep-alive GETs to a relay at addr from concurrent clients
// and checks every answer.
func relay(t *testing.T, addr *net.TCPAddr) {
	const clients, each = 8, 200
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Go(func() {
			conn, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(conn)
			for i := range each {
				path := fmt.Sprintf("/c%d/r%d?q=%d", c, i, i)
				// Every tenth request sent in two writes: the head arrives in parts.
				req := "GET " + path + " HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n"
				if i%10 == 0 {
					if _, err := io.WriteString(conn, req[:9]); err != nil {
						errs <- err
						return
					}
					time.Sleep(time.Millisecond)
					req = req[9:]
				}
				if _, err := io.WriteString(conn, req); err != nil {
					errs <- err
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- fmt.Errorf("client %d request %d: %v", c, i, err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					errs <- err
					return
				}
				want := "GET " + path + " xff=127.0.0.1 xfh=app.test xfp=http id=" + strconv.FormatUint(uint64(i+1), 16) + ` conn=""`
				if resp.StatusCode != 200 || string(body) != want {
					errs <- fmt.Errorf("client %d request %d: %d %q, want 200 %q", c, i, resp.StatusCode, body, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
