package supervisor

import (
	"log/slog"
	"path/filepath"
	"slices"

	"github.com/fsnotify/fsnotify"
)

// watchFileDirs makes w watch the directories of files and of what their
// symbolic links lead to now (certbot's live/ links lead to archive/, a
// Kubernetes ConfigMap's file to its ..data directory), and drops watches
// on directories no longer involved. Watching directories, not files, sees
// a file that is replaced (PITFALLS: fsnotify). A directory that cannot be
// watched now (it is being replaced) is tried again at the next call.
func watchFileDirs(w *fsnotify.Watcher, log *slog.Logger, files ...string) {
	want := make([]string, 0, 2*len(files))
	for _, p := range files {
		want = append(want, filepath.Dir(p))
		if r, err := filepath.EvalSymlinks(p); err == nil {
			want = append(want, filepath.Dir(r))
		}
	}
	for _, dir := range w.WatchList() {
		if !slices.Contains(want, dir) {
			w.Remove(dir)
		}
	}
	for _, dir := range want {
		// Add is a no-op for a directory already watched, and watches anew
		// one that was replaced.
		if err := w.Add(dir); err != nil {
			log.Debug("watching a directory", "dir", dir, "error", err)
		}
	}
}
