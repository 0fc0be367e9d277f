package supervisor

import (
	"bytes"
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

	"github.com/redis/go-redis/v9"
)

// redisServer is a real redis-server on a free loopback port, started by
// the test, without persistence: restartWith gives it a table to start with.
type redisServer struct {
	t    *testing.T
	bin  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
	out  *bytes.Buffer
}

// startRedis starts redis-server, or skips the test when it is not installed
// (fails instead with DEPLOYER_REQUIRE_INTEGRATION=1).
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server is not installed (apt-get install -y redis-server); this test runs it for real"
		if os.Getenv("DEPLOYER_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	s := &redisServer{t: t, bin: bin, port: redisFreePort(t)}
	s.run(t.TempDir(), s.port)
	t.Cleanup(s.kill)
	return s
}

func redisFreePort(t *testing.T) int {
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
func (s *redisServer) run(dir string, port int) {
	s.t.Helper()
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	if port == s.port {
		s.cmd, s.done, s.out = cmd, done, out
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

func (s *redisServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

func (s *redisServer) url() string { return "redis://" + s.addr() + "/0" }

// client is a plain client of the server, closed at the end of the test.
func (s *redisServer) client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.addr()})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// kill ends the server with SIGKILL: no goodbye to its clients.
func (s *redisServer) kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// restartWith kills the server and starts it again on the same port holding
// routes, as a Redis restored from a backup or a failover would: the data
// is written by a second server into an RDB file the new one loads.
func (s *redisServer) restartWith(routes map[string]string) {
	s.t.Helper()
	s.kill()
	dir := s.t.TempDir()
	port := redisFreePort(s.t)
	prep := &redisServer{t: s.t, bin: s.bin, port: port}
	prep.run(dir, port)
	c := redis.NewClient(&redis.Options{Addr: prep.addr()})
	ctx := context.Background()
	if len(routes) > 0 {
		if err := c.HSet(ctx, RedisRoutesKey, routes).Err(); err != nil {
			s.t.Fatal(err)
		}
	}
	if err := c.Save(ctx).Err(); err != nil {
		s.t.Fatal(err)
	}
	c.Close()
	prep.kill()
	if _, err := os.Stat(filepath.Join(dir, "dump.rdb")); err != nil {
		s.t.Fatal(err)
	}
	s.run(dir, s.port)
}

// signal sends sig to the server (SIGSTOP: a Redis that hangs).
func (s *redisServer) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}
