package main

import (
	"errors"
	"net"
	"path/filepath"
	"testing"

	"github.com/deployer/deployer/supervisor"
)

// TestNoDaemonStaleSocket checks that a socket file left by a daemon that
// died (connect refused) reads as no daemon, like a missing one.
func TestNoDaemonStaleSocket(t *testing.T) {
	dir := stateDir(t)
	socket := filepath.Join(dir, "deployer.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	cl := newClient(socket)
	if up, err := cl.alive(t.Context()); up || err != nil {
		t.Errorf("alive = %v, %v; want false, nil", up, err)
	}
	_, err = cl.status(t.Context(), "")
	var noDaemon *noDaemonError
	if !errors.As(err, &noDaemon) {
		t.Errorf("status error = %v, want a noDaemonError", err)
	}
	_, _, err = cl.operate(t.Context(), "web", "swap", supervisor.SwapRequest{Version: "v2"}, nil)
	if !errors.As(err, &noDaemon) {
		t.Errorf("operate error = %v, want a noDaemonError", err)
	}
}

func TestAppPath(t *testing.T) {
	if got, want := appPath("web", "swap"), "/v1/apps/web/swap"; got != want {
		t.Errorf("appPath = %q, want %q", got, want)
	}
	if got, want := appPath("a/b c", "logs"), "/v1/apps/a%2Fb%20c/logs"; got != want {
		t.Errorf("appPath = %q, want %q", got, want)
	}
}
