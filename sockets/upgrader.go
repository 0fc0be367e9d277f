package sockets

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

// DefaultUpgradeTimeout is how long Upgrade waits for the new process to
// call Ready when UpgraderOptions.UpgradeTimeout is zero.
const DefaultUpgradeTimeout = tableflip.DefaultUpgradeTimeout

// HasParentEnv is the environment variable tableflip sets in the new process
// of an upgrade. Strip it from the environment of every app process: an app
// using tableflip itself would otherwise believe it has a parent to inherit
// from (PITFALLS).
const HasParentEnv = "TABLEFLIP_HAS_PARENT_7DIU3"

// staleDialTimeout bounds the connect that tells a stale socket file from a
// live daemon. A unix connect answers at once either way; the bound only
// matters for a listener whose process is stopped (SIGSTOP).
const staleDialTimeout = time.Second

// UpgraderOptions configure an Upgrader. The zero value works.
type UpgraderOptions struct {
	// PIDFile, if set, receives the daemon's pid (temp file + rename) on
	// every Ready, so systemd's PIDFile= follows the process across
	// upgrades.
	PIDFile string
	// UpgradeTimeout is how long Upgrade waits for the new process to become
	// ready before killing it. Zero means DefaultUpgradeTimeout.
	UpgradeTimeout time.Duration
}

// Upgrader hands the daemon's listeners to a new copy of its binary, so the
// daemon can replace itself without refusing a connection. It wraps
// github.com/cloudflare/tableflip; see the package documentation for the
// operational rules.
//
// A process may create only one Upgrader, and every listener the daemon
// serves on must come from its Listen.
type Upgrader struct {
	upg     *tableflip.Upgrader
	ready   atomic.Bool // Ready was called
	readyOK atomic.Bool // Ready succeeded: the old process, if any, was told
}

// NewUpgrader creates the process's Upgrader. In the new process of an
// upgrade it takes over the listeners the old process passed on. It fails if
// an Upgrader exists already in this process.
func NewUpgrader(o UpgraderOptions) (*Upgrader, error) {
	upg, err := tableflip.New(tableflip.Options{
		PIDFile:        o.PIDFile,
		UpgradeTimeout: o.UpgradeTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("sockets: upgrader: %w", err)
	}
	return &Upgrader{upg: upg}, nil
}

// Listen is the one place the daemon's listeners come from. In the new
// process of an upgrade it returns the listener the old process had for the
// same network and addr (the same strings, so keep addr exactly as
// configured); otherwise it creates one.
//
// For network "unix", when this process is not an upgrade (!HasParent), a
// stale socket file left at addr by a crashed daemon is removed first: only
// if it is a socket and a connect to it is refused. If something accepts on
// it, Listen returns an error wrapping ErrInUse: another daemon is running.
// If addr names something that is not a socket, the error wraps
// ErrNotSocket. With a parent the path is never touched, since the old
// process still serves on it (PITFALLS).
//
// Unix listeners are not unlinked when closed (the next process may serve on
// the same socket); Stop removes them when the daemon shuts down without
// upgrading.
func (u *Upgrader) Listen(network, addr string) (net.Listener, error) {
	return u.listen(network, addr, nil)
}

// ListenUnix is Listen("unix", path) for a socket that only some users may
// connect to, such as the control socket: a socket it creates gets mode perm
// before Listen returns (an inherited one keeps the mode it has). Connecting
// needs write permission on the socket file (PITFALLS). The mode is set just
// after bind, so put the socket in a directory closed to others (0700) to
// leave no window.
func (u *Upgrader) ListenUnix(path string, perm fs.FileMode) (net.Listener, error) {
	return u.listen("unix", path, func() error { return os.Chmod(path, perm) })
}

func (u *Upgrader) listen(network, addr string, afterBind func() error) (net.Listener, error) {
	if network == "unix" && !u.HasParent() {
		if err := removeStale(addr); err != nil {
			return nil, err
		}
	}
	ln, err := u.upg.ListenWithCallback(network, addr, func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, err
		}
		if afterBind != nil {
			if err := afterBind(); err != nil {
				ln.Close()
				return nil, err
			}
		}
		return ln, nil
	})
	if err != nil {
		return nil, fmt.Errorf("sockets: listen %s %s: %w", network, addr, err)
	}
	return ln, nil
}

// removeStale removes the socket file at path if no process accepts on it.
// A missing path is fine; a live socket is ErrInUse; anything else at path is
// ErrNotSocket.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sockets: listen unix %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("sockets: listen unix %s: %w", path, ErrNotSocket)
	}
	conn, err := net.DialTimeout("unix", path, staleDialTimeout)
	switch {
	case err == nil:
		conn.Close()
		return fmt.Errorf("%w: %s accepts connections: is another daemon running?", ErrInUse, path)
	case errors.Is(err, syscall.EAGAIN):
		// A full backlog: somebody listens, but does not keep up (PITFALLS).
		return fmt.Errorf("%w: %s has a full backlog: is another daemon running?", ErrInUse, path)
	case errors.Is(err, syscall.ECONNREFUSED):
		// The socket file outlived its listener.
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sockets: remove stale socket %s: %w", path, err)
		}
		return nil
	case errors.Is(err, syscall.ENOENT):
		return nil // removed meanwhile
	default:
		return fmt.Errorf("sockets: listen unix %s: probe existing socket: %w", path, err)
	}
}

// Ready tells the old process, if any, that this one serves now, and writes
// the PID file. It must be called once every listener has been created with
// Listen: inherited listeners not asked for by then are closed (and their
// unix socket paths removed).
func (u *Upgrader) Ready() error {
	err := u.upg.Ready()
	// tableflip counts the process ready even when writing the PID file or
	// telling the parent failed.
	u.ready.Store(true)
	if err != nil {
		return fmt.Errorf("sockets: ready: %w", err)
	}
	u.readyOK.Store(true)
	return nil
}

// Upgrade starts a new process from the binary at os.Args[0] with the same
// arguments, hands it the listeners and blocks until it calls Ready, fails,
// or UpgradeTimeout passes (then it is killed). On success Exit is already
// closed when Upgrade returns: this process must stop accepting, drain and
// exit. On failure this process goes on serving untouched.
//
// It fails while the previous old process is still alive ("parent hasn't
// exited"), before this process called Ready, and after Stop.
func (u *Upgrader) Upgrade() error {
	for attempt := 1; ; attempt++ {
		err := u.upg.Upgrade()
		if err == nil {
			// tableflip answers the request before it closes Exit; wait
			// the moment, so callers can rely on Exit.
			<-u.upg.Exit()
			return nil
		}
		// tableflip's loop learns of Ready by a select that may pick our
		// request first, and then refuses it as "not ready" although Ready
		// has returned. Ask again once it has had a moment to notice.
		if u.ready.Load() && err.Error() == notReadyMsg && attempt < notReadyAttempts {
			time.Sleep(time.Millisecond)
			continue
		}
		if err.Error() == parentRunningMsg {
			return fmt.Errorf("%w: %w", ErrParentRunning, err)
		}
		return fmt.Errorf("sockets: upgrade: %w", err)
	}
}

// parentRunningMsg is tableflip's (unexported) refusal while the process an
// earlier upgrade replaced has not exited yet.
const parentRunningMsg = "parent hasn't exited"

// ErrParentRunning refuses an upgrade while the daemon the previous upgrade
// replaced is still finishing its requests: tableflip allows one old
// process at a time.
var ErrParentRunning = errors.New("sockets: the daemon replaced by the previous upgrade has not exited yet")

// notReadyMsg is the text of tableflip v1.2.3's unexported errNotReady.
const notReadyMsg = "process is not ready yet"

// notReadyAttempts bounds the retries of Upgrade after a spurious "not
// ready": a few milliseconds are plenty for tableflip's loop to notice Ready.
const notReadyAttempts = 100

// Exit is closed when this process should exit: after a successful Upgrade,
// or after Stop.
func (u *Upgrader) Exit() <-chan struct{} { return u.upg.Exit() }

// Stop prevents further upgrades and closes Exit. Called before any upgrade
// succeeded, it means the daemon shuts down for good: the unix sockets of its
// listeners are then unlinked. It is safe to call more than once.
//
// In the new process of an upgrade that has not told the old one it is
// ready, Stop does nothing: this process failed to start, the old one
// serves on, on the same socket paths, which must stay (tableflip's Stop
// would unlink them).
func (u *Upgrader) Stop() {
	if u.upg.HasParent() && !u.readyOK.Load() {
		return
	}
	u.upg.Stop()
}

// HasParent reports whether this process was started by an upgrade, and so
// inherits its listeners from an old process that is still draining.
func (u *Upgrader) HasParent() bool { return u.upg.HasParent() }

// WaitForParent blocks until the old process of an upgrade has exited, or ctx
// is done. It returns nil at once without a parent.
func (u *Upgrader) WaitForParent(ctx context.Context) error {
	if err := u.upg.WaitForParent(ctx); err != nil {
		return fmt.Errorf("sockets: wait for old process: %w", err)
	}
	return nil
}

// AddFile hands f (a dup of it) to the next process of an upgrade under name,
// which retrieves it with File: a pidfd of an app process, say, since the new
// daemon cannot wait(2) for apps it did not start (PITFALLS). A dup shares
// the file offset.
func (u *Upgrader) AddFile(name string, f *os.File) error {
	if err := u.upg.AddFile(name, f); err != nil {
		return fmt.Errorf("sockets: pass file %s: %w", name, err)
	}
	return nil
}

// File returns the file the old process passed under name, or nil if it
// passed none. The caller owns (and closes) the returned file. Files not taken
// before Ready are closed by Ready.
func (u *Upgrader) File(name string) (*os.File, error) {
	f, err := u.upg.File(name)
	if err != nil {
		return nil, fmt.Errorf("sockets: inherited file %s: %w", name, err)
	}
	return f, nil
}
