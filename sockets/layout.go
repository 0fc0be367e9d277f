package sockets

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MaxPathLen is the longest path a unix socket can be bound to: sun_path is
// 108 bytes including the terminating NUL.
const MaxPathLen = 107

// UniqueSuffixLen is the length of the random part of a unique socket name.
const UniqueSuffixLen = 8

// uniqueAttempts bounds how often Unique draws a new random suffix when the
// path it drew exists already. With 32 random bits a second draw is already
// unheard of; the bound only guards against a broken random source.
const uniqueAttempts = 16

// Layout names the files under a state directory. Its zero value is not
// useful; set StateDir (an absolute path, so that the paths handed to apps and
// listed in /proc/net/unix do not depend on a working directory).
//
//	<state_dir>/deployer.sock            control socket
//	<state_dir>/state.json               state file
//	<state_dir>/<app>/current.sock       stable path, instance 0
//	<state_dir>/<app>/current-<i>.sock   stable path, instance i > 0
//	<state_dir>/<app>/hold               exists exactly while <app> is paused
//	<state_dir>/<app>/<version>-<i>-<rand>.sock  unique bind path of one process
//
// The methods only compute names; they touch nothing on disk, except Unique,
// which checks that the name it returns is not taken.
type Layout struct {
	StateDir string
}

// ControlSocket is the path of the daemon's control socket.
func (l Layout) ControlSocket() string { return filepath.Join(l.StateDir, "deployer.sock") }

// StateFile is the path of the daemon's state file.
func (l Layout) StateFile() string { return filepath.Join(l.StateDir, "state.json") }

// AppDir is the directory that holds app's sockets and hold file.
func (l Layout) AppDir(app string) string { return filepath.Join(l.StateDir, app) }

// Stable is the path outer proxies dial for instance of app: current.sock for
// instance 0, current-<instance>.sock for the others. Swap points it at the
// serving version's socket.
func (l Layout) Stable(app string, instance int) string {
	if instance == 0 {
		return filepath.Join(l.AppDir(app), "current.sock")
	}
	return filepath.Join(l.AppDir(app), "current-"+strconv.Itoa(instance)+".sock")
}

// Hold is the path of app's hold file, which exists exactly while app is
// paused.
func (l Layout) Hold(app string) string { return filepath.Join(l.AppDir(app), "hold") }

// Unique returns a fresh bind path for one process of app at version,
// instance i, that does not exist yet:
// <state_dir>/<app>/<version>-<instance>-<rand>.sock, rand being
// UniqueSuffixLen lowercase hex digits from crypto/rand. Its length is
// UniqueLen(app, version, instance).
//
// A fresh name per process, even when the same version is started again
// (restart), is what keeps swaps safe: Go's UnixListener.Close unlinks the
// path it bound, whatever that path names by then (PITFALLS), so no two
// processes may ever bind the same path.
//
// It returns an error wrapping ErrBadName for an app or version that is not a
// single path element, and one wrapping ErrPathTooLong when the path would
// not fit in sun_path. Unique does not create the app directory.
func (l Layout) Unique(app, version string, instance int) (string, error) {
	if err := checkName("app", app); err != nil {
		return "", err
	}
	if err := checkName("version", version); err != nil {
		return "", err
	}
	if instance < 0 {
		return "", fmt.Errorf("%w: negative instance %d", ErrBadName, instance)
	}
	prefix := filepath.Join(l.AppDir(app), version+"-"+strconv.Itoa(instance)+"-")
	for range uniqueAttempts {
		path := prefix + randomHex() + ".sock"
		if err := CheckPath(path); err != nil {
			return "", err
		}
		_, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return path, nil
		}
		if err != nil {
			return "", fmt.Errorf("sockets: %w", err)
		}
	}
	return "", fmt.Errorf("sockets: no free unique path with prefix %s after %d attempts", prefix, uniqueAttempts)
}

// UniqueLen is the length of any path Unique returns for these arguments, so
// config validation can reject a layout whose sockets would be too long.
func (l Layout) UniqueLen(app, version string, instance int) int {
	return len(filepath.Join(l.AppDir(app), version)) +
		len("-") + len(strconv.Itoa(instance)) + len("-") + UniqueSuffixLen + len(".sock")
}

// CheckPath returns an error wrapping ErrPathTooLong, naming path and its
// length, when path is too long to bind a unix socket to. Use it for the
// control socket and the stable paths; Unique checks its own results.
func CheckPath(path string) error {
	if len(path) > MaxPathLen {
		return fmt.Errorf("%w: %s is %d bytes, at most %d fit", ErrPathTooLong, path, len(path), MaxPathLen)
	}
	return nil
}

// checkName rejects names that are not exactly one path element, since they
// would escape or alias the app directory.
func checkName(kind, name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: %s %q", ErrBadName, kind, name)
	}
	return nil
}

// randRead is crypto/rand.Read; tests replace it to force collisions.
var randRead = rand.Read

// randomHex returns UniqueSuffixLen lowercase hex digits from crypto/rand.
// Since Go 1.24 rand.Read never returns an error (it aborts the program
// instead), so there is none to handle.
func randomHex() string {
	var b [UniqueSuffixLen / 2]byte
	_, _ = randRead(b[:])
	return hex.EncodeToString(b[:])
}
