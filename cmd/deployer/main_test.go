package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"testing"
)

// roleEnv makes the test binary play another part than the tests, the way
// tableflip's tests re-execute themselves: "deployer" runs main (a real
// daemon process, for `deployer start` with real signals and a real
// tableflip upgrader, of which a process may have only one), and "app" is
// an app that daemon supervises.
const roleEnv = "DEPLOYER_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "deployer":
		main()
	case "app":
		if err := fakeApp(); err != nil {
			fmt.Fprintln(os.Stderr, "fake app:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	cleanup, err := buildBinaries()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// fakeApp serves on $DEPLOYER_SOCKET, answering its version on every path,
// until SIGTERM.
func fakeApp() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("unix", os.Getenv("DEPLOYER_SOCKET"))
	if err != nil {
		return err
	}
	// The path may have been renamed over the stable one: only the
	// supervisor unlinks (PITFALLS.md).
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	version := os.Getenv("DEPLOYER_VERSION")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, version)
	})}
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
	}()
	fmt.Println("serving", version)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
