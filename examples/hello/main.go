// Command hello is the small web app deployer runs in its README, its demo
// deploy.toml and its end-to-end tests. Every response says which version,
// process and instance answered it, so a test can see exactly where traffic
// went during a swap.
//
// It listens on the unix socket given by -socket (default $DEPLOYER_SOCKET),
// else on the TCP address given by -addr (default 127.0.0.1:$PORT). Flags such
// as -fail-at-boot, -boot-delay, -crash-after and -unhealthy-file make it
// misbehave on purpose, for demos and tests of deployer's failure handling.
//
// Endpoints:
//
//	GET /                      hello line (after $GREETING, if set)
//	GET /healthz               200 ok, or 503 while unhealthy
//	GET /slow?d=3s             answers after d (at most 5m)
//	    /ws                    websocket: sends "version <v>", then echoes
//	GET /sse?n=5&interval=200ms  n server-sent events, each flushed at once
//	    /echo?id=ID            length and sha256 of the body; appends
//	                           "<method> <id> <version>" to $HELLO_RECORD
//	GET /headers               the request's headers as the app got them
//	                           (JSON: name → values), to see what a proxy sent
//
// On SIGTERM or SIGINT it stops accepting, lets in-flight requests finish
// (bounded by 30s), closes websockets with status 1001 (going away) and
// exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

const (
	// shutdownTimeout bounds how long in-flight requests may run after a
	// stop signal. The supervisor's stop_timeout is usually shorter and ends
	// with SIGKILL anyway; this bound matters when hello runs on its own.
	shutdownTimeout = 30 * time.Second

	// idleTimeout must stay above the keep-alive idle timeout of whatever
	// proxy sits in front (deployer's is 30s): otherwise the app may close a
	// pooled connection just as the proxy sends a request on it, and that
	// request fails. See PITFALLS.md, "Proxying".
	idleTimeout = 120 * time.Second

	readHeaderTimeout = 10 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// config is the parsed command line.
type config struct {
	socket   string
	addr     string
	version  string
	instance string
	greeting string
	record   string

	unhealthy     bool
	unhealthyFile string

	failAtBoot bool
	bootDelay  time.Duration
	crashAfter time.Duration
	logEvery   time.Duration
}

// errUsage marks a command-line error that has already been reported.
var errUsage = errors.New("hello: bad usage")

// parseConfig reads flags and their environment defaults. On a usage error it
// has already printed the reason to stderr and returns errUsage (or
// flag.ErrHelp for -h).
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("hello", flag.ContinueOnError)
	fs.SetOutput(stderr)

	defaultAddr := ""
	if port := getenv("PORT"); port != "" {
		defaultAddr = net.JoinHostPort("127.0.0.1", port)
	}
	defaultVersion := getenv("DEPLOYER_VERSION")
	if defaultVersion == "" {
		defaultVersion = "dev"
	}

	fs.StringVar(&cfg.socket, "socket", getenv("DEPLOYER_SOCKET"), "listen on this unix socket `path` (default $DEPLOYER_SOCKET)")
	fs.StringVar(&cfg.addr, "addr", defaultAddr, "listen on this TCP `host:port` when no socket is given (default 127.0.0.1:$PORT)")
	fs.StringVar(&cfg.version, "version", defaultVersion, "version to report (default $DEPLOYER_VERSION, else dev)")
	fs.BoolVar(&cfg.unhealthy, "unhealthy", false, "answer /healthz with 503")
	fs.StringVar(&cfg.unhealthyFile, "unhealthy-file", "", "answer /healthz with 503 while this `path` exists")
	fs.BoolVar(&cfg.failAtBoot, "fail-at-boot", false, "exit 1 before listening")
	fs.DurationVar(&cfg.bootDelay, "boot-delay", 0, "wait this long before listening")
	fs.DurationVar(&cfg.crashAfter, "crash-after", 0, "exit with status 3 this long after listening")
	fs.DurationVar(&cfg.logEvery, "log-every", 0, "print a tick line to stdout at this interval")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, errUsage // fs has printed the error and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "hello: unexpected argument %q\n", fs.Arg(0))
		return cfg, errUsage
	}
	for name, d := range map[string]time.Duration{"boot-delay": cfg.bootDelay, "crash-after": cfg.crashAfter, "log-every": cfg.logEvery} {
		if d < 0 {
			fmt.Fprintf(stderr, "hello: -%s must not be negative, got %v\n", name, d)
			return cfg, errUsage
		}
	}
	if cfg.socket == "" && cfg.addr == "" {
		fmt.Fprintln(stderr, "hello: nowhere to listen: pass -socket PATH or -addr HOST:PORT (or set DEPLOYER_SOCKET or PORT)")
		return cfg, errUsage
	}

	cfg.instance = getenv("DEPLOYER_INSTANCE")
	if cfg.instance == "" {
		cfg.instance = "0" // run on its own, hello is the only instance
	}
	cfg.greeting = getenv("GREETING")
	cfg.record = getenv("HELLO_RECORD")
	return cfg, nil
}

// run is the whole program; it returns the exit status. It stops gracefully
// when ctx is done.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	out := &lockedWriter{w: stdout}

	if cfg.failAtBoot {
		fmt.Fprintln(stderr, "hello: failing at boot on purpose")
		return 1
	}
	if cfg.bootDelay > 0 {
		t := time.NewTimer(cfg.bootDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			fmt.Fprintf(out, "hello %s stopped\n", cfg.version)
			return 0
		}
	}

	ln, err := listen(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "hello: %v\n", err)
		return 1
	}

	app := &server{
		version:       cfg.version,
		pid:           fmt.Sprint(os.Getpid()),
		instance:      cfg.instance,
		greeting:      cfg.greeting,
		record:        cfg.record,
		unhealthy:     cfg.unhealthy,
		unhealthyFile: cfg.unhealthyFile,
	}
	srv := &http.Server{
		Handler:           app.routes(),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	fmt.Fprintf(out, "hello %s listening on %s\n", cfg.version, ln.Addr())

	var crash <-chan time.Time
	if cfg.crashAfter > 0 {
		t := time.NewTimer(cfg.crashAfter)
		defer t.Stop()
		crash = t.C
	}
	tickCtx, stopTicks := context.WithCancel(context.Background())
	var ticks sync.WaitGroup
	if cfg.logEvery > 0 {
		ticks.Go(func() { logTicks(tickCtx, out, cfg.logEvery, cfg.version) })
	}
	defer func() {
		stopTicks()
		ticks.Wait()
	}()

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		fmt.Fprintf(stderr, "hello %s: serve: %v\n", cfg.version, err)
		return 1
	case <-crash:
		// No graceful shutdown: this imitates a crash, so in-flight requests
		// are cut just as they would be by a real one.
		fmt.Fprintf(stderr, "hello %s: crashing on purpose %v after listening\n", cfg.version, cfg.crashAfter)
		return 3
	}

	shutdown(srv, app, stderr)
	stopTicks()
	ticks.Wait()
	fmt.Fprintf(out, "hello %s stopped\n", cfg.version)
	return 0
}

// shutdown stops accepting, waits for in-flight requests (at most
// shutdownTimeout), then closes the websockets.
func shutdown(srv *http.Server, app *server, stderr io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		fmt.Fprintf(stderr, "hello %s: requests still running after %v, closing them: %v\n", app.version, shutdownTimeout, err)
		srv.Close()
	}
	// Shutdown neither closes nor waits for hijacked connections (PITFALLS:
	// "Proxying"), so websockets are closed here, after plain requests are
	// done, with a status that tells clients to reconnect.
	app.websockets.closeAll(websocket.StatusGoingAway, "server shutting down")
}

// listen opens the socket or TCP listener cfg names.
func listen(cfg config) (net.Listener, error) {
	if cfg.socket == "" {
		ln, err := net.Listen("tcp", cfg.addr)
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		return ln, nil
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.socket, Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			// hello never removes a socket path (see below), so a stale
			// one must be removed by whoever owns it.
			return nil, fmt.Errorf("listen: %w (a stale socket file? only its owner should remove it)", err)
		}
		return nil, fmt.Errorf("listen: %w", err)
	}
	// Close would otherwise unlink cfg.socket, whatever that path names by
	// then: after deployer renamed the next version's socket over it, that
	// would delete the next version's socket. Only the supervisor unlinks
	// socket paths (PITFALLS: "UNIX sockets and the swap").
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// logTicks prints "tick <n> <version>" every interval until ctx is done, so
// demos of `deployer logs -f` have something to show.
func logTicks(ctx context.Context, out io.Writer, every time.Duration, version string) {
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fmt.Fprintf(out, "tick %d %s\n", n, version)
		}
	}
}

// lockedWriter serialises writes so lines from the ticker and the main
// goroutine never interleave.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
