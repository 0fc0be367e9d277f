package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// deploy.toml as a symbolic link is followed by the watch: an edit of its
// target in another directory, and the swap Kubernetes makes of a
// ConfigMap (a new directory, then one rename of the ..data link), are
// applied. Neither was: the watch saw only events naming deploy.toml in
// its own directory.
func TestReloadFollowsSymlinks(t *testing.T) {
	stateDir := socketDir(t)
	conf := func(queue string) string {
		return fmt.Sprintf("[deployer]\nlisten = \"\"\nstate_dir = %q\nqueue_timeout = %q\n[apps.web]\ncommand = [\"/bin/false\"]\nversion = \"v1\"\n",
			stateDir, queue)
	}
	write := func(t *testing.T, path, src string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	symlink := func(t *testing.T, target, link string) {
		t.Helper()
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	applied := func(t *testing.T, d *runningDaemon, queue string) {
		t.Helper()
		want, _ := time.ParseDuration(queue)
		eventually(t, "queue_timeout "+queue+" to be applied", func() bool { return d.config().Deployer.QueueTimeout == want })
	}

	// start runs a daemon on the config at path, whose queue_timeout is
	// queue, and returns it once past its start's own look at the file
	// (reloadIfChanged), so that only the watch can apply what follows.
	start := func(t *testing.T, path, queue string) *runningDaemon {
		t.Helper()
		cfg, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		d := runDaemon(t, cfg, DaemonOptions{})
		d.waitReady(t)
		applied(t, d, queue)
		time.Sleep(300 * time.Millisecond)
		return d
	}

	t.Run("target in another directory", func(t *testing.T) {
		dir, elsewhere := t.TempDir(), t.TempDir()
		target := filepath.Join(elsewhere, "real.toml")
		write(t, target, conf("11s"))
		link := filepath.Join(dir, "deploy.toml")
		symlink(t, target, link)
		d := start(t, link, "11s")
		write(t, target, conf("12s"))
		applied(t, d, "12s")
	})

	t.Run("ConfigMap", func(t *testing.T) {
		dir := t.TempDir()
		os.Mkdir(filepath.Join(dir, "..v1"), 0o755)
		write(t, filepath.Join(dir, "..v1", "deploy.toml"), conf("21s"))
		symlink(t, "..v1", filepath.Join(dir, "..data"))
		symlink(t, "..data/deploy.toml", filepath.Join(dir, "deploy.toml"))
		d := start(t, filepath.Join(dir, "deploy.toml"), "21s")
		// What the kubelet does: the new files in a new directory, a
		// temporary link to it renamed over ..data, the old directory gone.
		os.Mkdir(filepath.Join(dir, "..v2"), 0o755)
		write(t, filepath.Join(dir, "..v2", "deploy.toml"), conf("22s"))
		symlink(t, "..v2", filepath.Join(dir, "..data_tmp"))
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(filepath.Join(dir, "..v1"))
		applied(t, d, "22s")
		if strings.Contains(d.config().Path, "..v") {
			t.Errorf("the config's path is %s, want the link's", d.config().Path)
		}
	})
}

// An edit seen while an upgrade (or a start's own look at the file) holds
// the reload lock is applied once the lock is free: the watch looks again.
// It was dropped, and applied only by the next edit or start.
func TestReloadDeferredEditApplied(t *testing.T) {
	cfg := loadString(t, fmt.Sprintf("[deployer]\nlisten = \"\"\nstate_dir = %q\nqueue_timeout = \"31s\"\n[apps.web]\ncommand = [\"/bin/false\"]\nversion = \"v1\"\n", socketDir(t)))
	d := runDaemon(t, cfg, DaemonOptions{})
	d.waitReady(t)
	time.Sleep(300 * time.Millisecond) // past the start's own look at the file
	d.upgradeMu.Lock()                 // as an upgrade does
	src := strings.Replace(string(cfg.src), `"31s"`, `"32s"`, 1)
	if err := os.WriteFile(cfg.Path, []byte(src), 0o644); err != nil {
		d.upgradeMu.Unlock()
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the watch saw it, and its reload had to wait
	d.upgradeMu.Unlock()
	eventually(t, "the edit made during the upgrade to be applied", func() bool {
		return d.config().Deployer.QueueTimeout == 32*time.Second
	})
}
