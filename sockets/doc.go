// Package sockets knows the on-disk socket layout under <state_dir>, the atomic
// swap of a version's socket onto the stable path, waiting for a socket to
// appear, counting live connections to a bound path, the pause ("hold") files,
// and the one place the daemon's own listeners are created.
//
// It is a leaf: it imports nothing of deployer's.
//
// # The layout
//
// Every app process binds a unique path (Layout.Unique) and is health-checked
// there. Swap then makes the stable path (Layout.Stable) name the same socket
// with a single rename(2), so a connect to the stable path never fails because
// of a swap. Because every version has its own bind path, Go's
// UnixListener.Close unlinking "its" path can never delete another version's
// socket, and /proc/net/unix lets Connections count the live connections of an
// old version exactly, even when an outer proxy such as nginx dials the stable
// path. Only the supervisor unlinks socket paths (Unlink).
//
// # Self-upgrade (Upgrader)
//
// The daemon replaces itself with the binary now on disk through
// github.com/cloudflare/tableflip: the new process inherits every listener
// created with Upgrader.Listen, so no connection is refused during the
// upgrade, and the apps keep running. Operational notes:
//
//   - Never run the daemon under "go run" if you mean to upgrade it: the new
//     process is started from os.Args[0], and go run's temporary binary is
//     gone by then ("can't start process: no such file or directory"). Build
//     it: go build -o bin/deployer ./cmd/deployer.
//   - Replace the binary with a rename (install(1), mv from the same file
//     system), never by writing into it: the running daemon's executable is
//     busy (ETXTBSY), and a half-written binary might be started.
//   - Only one Upgrader may exist per process, and every listener of the
//     daemon (public HTTP and control socket) must come from Upgrader.Listen:
//     a listener bound directly races the old process and gets EADDRINUSE.
//   - An upgrade is refused with "parent hasn't exited" while the previous
//     old process still runs: after Exit is closed the old process must stop
//     accepting, drain with a hard deadline and exit.
//   - The new process inherits TABLEFLIP_HAS_PARENT_7DIU3=yes in its
//     environment (HasParentEnv): strip it from every app process launched.
//   - Under systemd: PIDFile= set to the same path as UpgraderOptions.PIDFile,
//     ExecReload=/bin/kill -HUP $MAINPID, not Type=forking; consider
//     KillMode=mixed so a stop does not kill the apps before the daemon has
//     drained them.
//
// # inotify instances
//
// WaitForSocket uses one inotify instance per call and HoldWatcher one per
// watcher. Linux limits them per user (fs.inotify.max_user_instances, often
// 128); when none is left WaitForSocket falls back to polling.
package sockets
