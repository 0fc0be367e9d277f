// Package testredis runs a real redis-server for tests: on a free loopback
// port, without persistence, killed when the test ends.
package testredis

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testlog"
	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process (and, after RestartWith, its
// successor on the same port).
type Server struct {
	t    testing.TB
	bin  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts redis-server, or skips the test when it is not installed
// (fails instead with DEPLOYER_REQUIRE_INTEGRATION=1, as CI sets).
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server is not installed (apt-get install -y redis-server); this test runs it for real"
		if os.Getenv("DEPLOYER_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	s := &Server{t: t, bin: bin, port: freePort(t)}
	s.run(t.TempDir(), s.port)
	t.Cleanup(s.Kill)
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// run starts redis-server on port with dir as its working directory (a
// dump.rdb there is loaded) and waits until it answers.
func (s *Server) run(dir string, port int) {
	s.t.Helper()
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir)
	out := &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	if port == s.port {
		s.cmd, s.done = cmd, done
	}
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		select {
		case <-done:
			s.t.Fatalf("redis-server exited: %s", out)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on %d not answering: %s", port, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// URL is the server's redis:// URL, database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Client is a plain client of the server, closed at the end of the test.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Kill ends the server with SIGKILL: no goodbye to its clients.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// RestartWith kills the server and starts it again on the same port with
// the hash key holding fields, as a Redis restored from a backup or a
// failover would: a second server writes them into the RDB file the new
// one loads.
func (s *Server) RestartWith(key string, fields map[string]string) {
	s.t.Helper()
	s.Kill()
	dir := s.t.TempDir()
	prep := &Server{t: s.t, bin: s.bin, port: freePort(s.t)}
	prep.run(dir, prep.port)
	c := redis.NewClient(&redis.Options{Addr: prep.Addr()})
	ctx := context.Background()
	if len(fields) > 0 {
		if err := c.HSet(ctx, key, fields).Err(); err != nil {
			s.t.Fatal(err)
		}
	}
	if err := c.Save(ctx).Err(); err != nil {
		s.t.Fatal(err)
	}
	c.Close()
	prep.Kill()
	if _, err := os.Stat(filepath.Join(dir, "dump.rdb")); err != nil {
		s.t.Fatal(err)
	}
	s.run(dir, s.port)
}

// Signal sends sig to the server (SIGSTOP: a Redis that hangs).
func (s *Server) Signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}
