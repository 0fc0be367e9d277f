// Package sockets knows the on-disk socket layout under <state_dir>, the atomic
// swap of a version's socket onto the stable path, waiting for a socket to
// appear, counting live connections to a bound path, and the one place the
// daemon's own listeners are created.
//
// It is a leaf: it imports nothing of deployer's.
package sockets

import (
	"context"
	"errors"
)

// MaxPathLen is the longest path a unix socket can be bound to: sun_path is
// 108 bytes including the terminating NUL.
const MaxPathLen = 107

// ErrPathTooLong is returned for a socket path longer than MaxPathLen.
var ErrPathTooLong = errors.New("sockets: path too long for a unix socket")

// Layout names the files under a state directory. Its zero value is not
// useful; set StateDir (an absolute path).
//
//	<state_dir>/deployer.sock            control socket
//	<state_dir>/state.json               state file
//	<state_dir>/<app>/current.sock       stable path, instance 0
//	<state_dir>/<app>/current-<i>.sock   stable path, instance i > 0
//	<state_dir>/<app>/hold               exists exactly while <app> is paused
//	<state_dir>/<app>/<version>-<i>-<rand>.sock  unique bind path of one process
type Layout struct {
	StateDir string
}

// UniqueSuffixLen is the length of the random part of a unique socket name.
const UniqueSuffixLen = 8

func (l Layout) ControlSocket() string               { panic("todo") }
func (l Layout) StateFile() string                   { panic("todo") }
func (l Layout) AppDir(app string) string            { panic("todo") }
func (l Layout) Stable(app string, instance int) string { panic("todo") }
func (l Layout) Hold(app string) string              { panic("todo") }

// Unique returns a fresh bind path for one process of app at version,
// instance i, that does not exist yet. Its length is UniqueLen(app, version, i).
func (l Layout) Unique(app, version string, instance int) (string, error) { panic("todo") }

// UniqueLen is the length of any path Unique returns for these arguments, so
// config validation can reject a layout whose sockets would be too long.
func (l Layout) UniqueLen(app, version string, instance int) int { panic("todo") }

// Swap makes stablePath name the socket bound at boundPath, atomically.
func Swap(boundPath, stablePath string) error { panic("todo") }

// WaitForSocket blocks until path exists and is a socket, or ctx is done.
func WaitForSocket(ctx context.Context, path string) error { panic("todo") }

// Connections counts live connections accepted (or waiting in the backlog)
// on the listener that was bound at path, whatever name it has now.
func Connections(path string) (int, error) { panic("todo") }
