package supervisor

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Who may use the control socket, in two gates:
//
//  1. The kernel, at connect(2): connecting to a unix socket needs write
//     permission on its file (PITFALLS). Without control_users and
//     control_groups the socket is 0600, so only its owner (the daemon's
//     user) and root get through. With exactly one control group and no
//     control users it is 0660 with that group, so only members get
//     through. Any other allow-list makes it 0666: the kernel lets every
//     local user connect and gate 2 alone decides.
//  2. The daemon, at accept: the peer's credentials, which the kernel
//     recorded when it called connect(2) (SO_PEERCRED, SO_PEERGROUPS), are
//     checked against root, the daemon's own uid and the allow-list of the
//     config in force. A caller that fails gets one 403 answer and the
//     connection is closed; the control handler never sees it.
//
// The socket stays at <state_dir>/deployer.sock (CONTRACT.md), and state_dir
// stays 0755: nginx and other proxies must traverse it to reach the apps'
// stable sockets, so it cannot be the 0700 directory PITFALLS suggests.
// That directory only closes the window between bind(2) and chmod(2); the
// socket is bound under umask 0177 instead (listenControl), so it is never
// wider than 0600, not even for a moment. What the 0700 directory would
// also give, that no one else can replace the socket, comes from refusing a
// state_dir that anyone but root and the daemon's user may write to
// (checkStateDir).

// errPermissionDenied refuses a control connection whose peer is not
// allowed (apiStatus: 403).
var errPermissionDenied = errors.New("permission denied")

// peerCred is who connected to a unix socket, as the kernel recorded it at
// connect(2): the credentials cannot be forged, and do not change if the
// process later changes its own (or hands the connection on).
type peerCred struct {
	PID    int32
	UID    uint32
	GID    uint32   // effective gid
	Groups []uint32 // supplementary groups
}

// attrs are p's log attributes.
func (p peerCred) attrs() []any { return []any{"uid", p.UID, "gid", p.GID, "pid", p.PID} }

// readPeerCred returns the credentials of c's peer. c must be a unix socket
// connection (any net.Conn with a SyscallConn).
func readPeerCred(c net.Conn) (peerCred, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return peerCred{}, fmt.Errorf("supervisor: peer credentials: %T is not a socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return peerCred{}, fmt.Errorf("supervisor: peer credentials: %w", err)
	}
	var (
		p    peerCred
		serr error
	)
	err = raw.Control(func(fd uintptr) {
		var u *unix.Ucred
		if u, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); serr != nil {
			return
		}
		p = peerCred{PID: u.Pid, UID: u.Uid, GID: u.Gid}
		p.Groups, serr = peerGroups(int(fd))
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return peerCred{}, fmt.Errorf("supervisor: peer credentials: %w", err)
	}
	return p, nil
}

// peerGroups returns the supplementary groups of fd's peer at connect(2)
// (SO_PEERGROUPS, Linux 4.13). Unlike the Groups: line of /proc/<pid>/status
// it has no race: that pid may have exited and been reused by the time it
// is read. On a kernel without SO_PEERGROUPS the peer has no supplementary
// groups as far as the allow-list goes: control_groups then admits by
// primary group only, which fails closed.
func peerGroups(fd int) ([]uint32, error) {
	n := 64
	for {
		buf := make([]uint32, n)
		size := uint32(4 * n)
		// x/sys has no wrapper for an array-valued getsockopt.
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == 0:
			return buf[:size/4], nil
		case errno == unix.ENOPROTOOPT:
			return nil, nil
		case errno == unix.ERANGE && int(size/4) > n:
			n = int(size / 4) // the kernel said how many there are
		default:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
		}
	}
}

// controlAccess says who may use the control socket: root, the daemon's own
// uid, and the allow-list of [deployer] control_users and control_groups.
type controlAccess struct {
	self uint32   // the daemon's effective uid
	uids []uint32 // control_users
	gids []uint32 // control_groups: primary or supplementary group of the caller
}

// accessOf is the access cfg grants.
func accessOf(cfg *Config) controlAccess {
	return controlAccess{
		self: uint32(os.Geteuid()),
		uids: cfg.Deployer.Public.ControlUIDs,
		gids: cfg.Deployer.Public.ControlGIDs,
	}
}

// check returns nil if p may use the control socket, else an error matching
// errPermissionDenied that tells the caller how to get access.
func (a controlAccess) check(p peerCred) error {
	if p.UID == 0 || p.UID == a.self || slices.Contains(a.uids, p.UID) || slices.Contains(a.gids, p.GID) {
		return nil
	}
	for _, g := range p.Groups {
		if slices.Contains(a.gids, g) {
			return nil
		}
	}
	return fmt.Errorf("%w: uid %d is not allowed to control this daemon; add it to [deployer] control_users (or one of its groups to control_groups)", errPermissionDenied, p.UID)
}

// refusedTimeout bounds how long a refused connection may take to send its
// request and read the answer.
const refusedTimeout = 5 * time.Second

// refusedReadLimit bounds what is read from a refused connection: its
// request head, then what is left of its body before the close. It is
// net/http's DefaultMaxHeaderBytes, and well above any control request
// (maxControlBody); a client sending more may see a reset.
const refusedReadLimit = 1 << 20

// controlListener admits to the control API only connections whose peer
// passes the access check of the config in force; the others get their 403
// from refuse and never reach the http.Server.
type controlListener struct {
	net.Listener
	// allow returns nil for a peer that may use the control API, else an
	// error matching errPermissionDenied (controlAccess.check).
	allow func(peerCred) error
	log   *slog.Logger
	// refusals bounds the WARN lines refused connections make.
	refusals refusalLog
	// answering holds a token per refused connection being answered;
	// Accept (one goroutine: the server's accept loop) makes it at the
	// first refusal with maxAnswering slots (0: maxRefusedAnswering).
	answering    chan struct{}
	maxAnswering int
}

// maxRefusedAnswering bounds the refused connections answered at once. Each
// costs a goroutine and a read buffer for up to refusedTimeout; a caller
// who may connect but not control (a 0666 socket) and opens connections in
// a loop would otherwise make the daemon hold as many as it can open in
// that time. Beyond the bound a refused connection is closed unanswered
// (the client sees the connection end) and counted in the log.
const maxRefusedAnswering = 64

// Refused control connections are logged one by one up to
// refusedLogBurst per refusedLogWindow; beyond that they are counted and
// the count logged in one line when the window ends, so that a local
// script retrying in a loop cannot flood the daemon's log.
const (
	refusedLogBurst  = 10
	refusedLogWindow = time.Minute
)

// refusalLog is that bound; its zero value uses the constants above.
type refusalLog struct {
	burst  int           // 0: refusedLogBurst
	window time.Duration // 0: refusedLogWindow

	mu      sync.Mutex
	start   time.Time // of the current window
	logged  int       // lines logged in it
	dropped int       // refusals not logged one by one, not yet reported
}

// warn logs one refusal with attrs, or counts it.
func (r *refusalLog) warn(log *slog.Logger, attrs []any) {
	burst, window := cmp.Or(r.burst, refusedLogBurst), cmp.Or(r.window, refusedLogWindow)
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.start) >= window {
		r.reportLocked(log, window) // a flush that has not run yet
		r.start, r.logged = now, 0
	}
	if r.logged < burst {
		r.logged++
		log.Warn("control connection refused", attrs...)
		return
	}
	if r.dropped == 0 {
		time.AfterFunc(r.start.Add(window).Sub(now), func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.reportLocked(log, window)
		})
	}
	r.dropped++
}

func (r *refusalLog) reportLocked(log *slog.Logger, window time.Duration) {
	if r.dropped > 0 {
		log.Warn("control connections refused, not logged one by one", "count", r.dropped, "within", window.String())
		r.dropped = 0
	}
}

// Accept returns the next admitted connection.
func (l *controlListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p, err := readPeerCred(c)
		if err == nil {
			err = l.allow(p)
		}
		if err == nil {
			return c, nil
		}
		if l.answering == nil {
			l.answering = make(chan struct{}, cmp.Or(l.maxAnswering, maxRefusedAnswering))
		}
		select {
		case l.answering <- struct{}{}:
			go func() {
				defer func() { <-l.answering }()
				l.refuse(c, p, err)
			}()
		default:
			// Logged before the close, as refuse logs before it answers.
			l.refusals.warn(l.log, append(p.attrs(), "answered", false))
			c.Close()
		}
	}
}

// refuse answers the request on c with an APIError for err, logs one line
// with who it was, and closes c.
func (l *controlListener) refuse(c net.Conn, p peerCred, err error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(refusedTimeout))
	attrs := p.attrs()
	rd := bufio.NewReader(io.LimitReader(c, refusedReadLimit))
	if req, rerr := http.ReadRequest(rd); rerr == nil {
		attrs = append(attrs, "method", req.Method, "path", req.URL.Path)
	}
	if !errors.Is(err, errPermissionDenied) {
		// No credentials (cannot happen on a unix socket): refused all the
		// same, and the reason logged.
		attrs = append(attrs, "error", err)
		err = fmt.Errorf("%w: the daemon could not tell who you are", errPermissionDenied)
	}
	l.refusals.warn(l.log, attrs)

	status, code := apiStatus(err)
	body, _ := json.Marshal(APIError{Error: err.Error(), Code: code})
	body = append(body, '\n')
	resp := &http.Response{
		StatusCode:    status,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Close:         true,
	}
	if resp.Write(c) != nil {
		return
	}
	// Closing a unix socket with unread bytes in its queue marks the peer
	// ECONNRESET (af_unix.c, unix_release_sock), and a client might see the
	// reset rather than the answer: signal the end, then read what is left
	// of the request (a swap's body) until the client closes.
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, rd)
}

// controlSocketPerm returns the mode the control socket gets under p, and
// the group to give it (-1: leave it).
func controlSocketPerm(p PublicConfig) (fs.FileMode, int) {
	switch {
	case len(p.ControlUIDs) == 0 && len(p.ControlGIDs) == 0:
		return 0o600, -1
	case len(p.ControlUIDs) == 0 && len(p.ControlGIDs) == 1:
		return 0o660, int(p.ControlGIDs[0])
	}
	return 0o666, -1
}

// setControlSocketPerm gives the control socket at path the mode and group
// of controlSocketPerm. It runs on every daemon start, an upgrade's new
// daemon included: the socket file is then inherited, and the allow-list
// of deploy.toml may have changed since it was created. If the group
// cannot be set (a daemon not running as root may only give its own
// groups), the socket is made 0666 and the peer check alone decides:
// groupErr says why.
func setControlSocketPerm(path string, p PublicConfig) (groupErr, err error) {
	// chmod follows symlinks: make sure path is the socket. Nobody else can
	// swap it for a link in between, since checkStateDir made sure nobody
	// else may write to its directory.
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("supervisor: control socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return nil, fmt.Errorf("supervisor: control socket: %s is not a socket", path)
	}
	mode, gid := controlSocketPerm(p)
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			groupErr = fmt.Errorf("group %d: %w", gid, err)
			mode = 0o666
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		return nil, fmt.Errorf("supervisor: control socket: %w", err)
	}
	return groupErr, nil
}

// checkStateDir refuses a state_dir that anyone but root and the daemon's
// user could write to: they could replace the control socket with their
// own (and the CLI would send them its swaps) or the apps' sockets.
func checkStateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("supervisor: state dir: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if euid := uint32(os.Geteuid()); st.Uid != 0 && st.Uid != euid {
		return fmt.Errorf("supervisor: state_dir %s belongs to uid %d, not to the daemon's user (uid %d) or root: its owner could replace the control socket; chown it", dir, st.Uid, euid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("supervisor: state_dir %s is writable by group or others (mode %04o): they could replace the control socket and the apps' sockets; run chmod go-w %s", dir, uint32(fi.Mode().Perm()), dir)
	}
	return nil
}
