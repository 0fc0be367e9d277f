package sockets

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// swapTempPrefix starts the name of the temporary link Swap renames over the
// stable path. The leading dot keeps it out of casual listings; an orphan can
// only be left by a crash between link and rename, and is harmless.
const swapTempPrefix = ".swap-"

// Swap makes stablePath name the socket bound at boundPath, atomically, and
// leaves boundPath in place: the proxy keeps dialing a version by its unique
// bound path, and /proc/net/unix reports that version's connections under the
// bound name anyway.
//
// It hard-links boundPath to a fresh temporary name in stablePath's directory
// and renames that name over stablePath: one rename(2), which replaces the old
// name atomically, so a connect to stablePath finds either the old socket or
// the new one, never nothing. The classic two-rename recipe (current→old,
// new→current) leaves a window in which connects fail with ENOENT (PITFALLS);
// renaming boundPath itself would lose the bound name. link(2) works on a
// socket inode and a connect through the new name reaches the listener, so the
// listener does not care which of its names is used.
//
// The old socket keeps accepting on its inode after its name is taken, and
// its accepted connections survive; stopping it is the caller's business.
// boundPath must name a socket (ErrNotSocket otherwise) on the same file
// system as stablePath. Swapping a socket onto a stable path that already
// names it does nothing and succeeds. On failure stablePath is unchanged and
// no temporary name is left behind.
func Swap(boundPath, stablePath string) error {
	bound, err := os.Lstat(boundPath)
	if err != nil {
		return fmt.Errorf("sockets: swap: %w", err)
	}
	if bound.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("sockets: swap: %w: %s", ErrNotSocket, boundPath)
	}
	// rename(2) of two links to the same inode does nothing and succeeds,
	// which would leave the temporary name behind: catch that case first.
	if cur, err := os.Lstat(stablePath); err == nil && os.SameFile(bound, cur) {
		return nil
	}

	tmp, err := linkTemp(boundPath, filepath.Dir(stablePath))
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, stablePath); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("sockets: swap: %w", err)
	}
	// Same case as above, lost to a concurrent Swap of the same socket
	// between the check and the rename.
	if left, err := os.Lstat(tmp); err == nil && os.SameFile(bound, left) {
		_ = os.Remove(tmp)
	}
	return nil
}

// linkTemp hard-links target to a fresh ".swap-<rand>" name in dir and
// returns that name. A name taken by a concurrent Swap is skipped.
func linkTemp(target, dir string) (string, error) {
	for range uniqueAttempts {
		tmp := filepath.Join(dir, swapTempPrefix+randomHex())
		err := os.Link(target, tmp)
		if err == nil {
			return tmp, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("sockets: swap: %w", err)
		}
	}
	return "", fmt.Errorf("sockets: swap: no free temporary name in %s after %d attempts", dir, uniqueAttempts)
}

// Unlink removes the socket at path. A missing path is not an error; a path
// that names something other than a socket is left alone and reported with
// ErrNotSocket, so a wrong path in a state file cannot delete user data.
//
// Only the supervisor unlinks socket paths (the contract): apps must not, and
// the supervisor does so only after the version bound there has stopped.
func Unlink(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sockets: unlink: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("sockets: unlink: %w: %s", ErrNotSocket, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sockets: unlink: %w", err)
	}
	return nil
}
