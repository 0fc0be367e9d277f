package supervisor

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
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

// A write of deploy.toml that stalls halfway leaves a file that parses
// with the apps after the cut missing. The watch applied it after its
// 150ms debounce and drained those apps until the rest arrived. An edit
// that takes an app or a route away now waits until the file has stayed
// the same for removeSettle; one that only adds or changes applies as
// soon as before.
func TestReloadHalfWrittenFile(t *testing.T) {
	stateDir := socketDir(t)
	head := func(queue string) string {
		return fmt.Sprintf("[deployer]\nlisten = \"\"\nstate_dir = %q\nqueue_timeout = %q\n[apps.web]\ncommand = [\"/bin/false\"]\nversion = \"v1\"\nhosts = [\"web.test\"]\n",
			stateDir, queue)
	}
	const tail = "[apps.api]\ncommand = [\"/bin/false\"]\nversion = \"v1\"\nhosts = [\"api.test\"]\n"
	path := filepath.Join(t.TempDir(), "deploy.toml")
	write := func(src string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(head("11s") + tail)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	d := runDaemon(t, cfg, DaemonOptions{})
	d.waitReady(t)
	time.Sleep(300 * time.Millisecond) // past the start's own look at the file
	api, err := d.app("api")
	if err != nil {
		t.Fatal(err)
	}
	kept := func(when string) {
		t.Helper()
		if a, err := d.app("api"); err != nil || a != api || len(d.removingApps()) > 0 {
			t.Fatalf("%s: app api was removed (app %p, was %p, err %v; removing %d)", when, a, api, err, len(d.removingApps()))
		}
	}

	// The first half, with a new queue_timeout; the rest 600ms later.
	write(head("12s"))
	time.Sleep(600 * time.Millisecond)
	kept("600ms into a half-written file")
	if got := d.config().Deployer.QueueTimeout; got != 11*time.Second {
		t.Fatalf("the half-written file was applied: queue_timeout %v", got)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(tail); err != nil {
		t.Fatal(err)
	}
	f.Close()
	eventually(t, "the whole file to be applied", func() bool { return d.config().Deployer.QueueTimeout == 12*time.Second })
	kept("after the whole file")

	// An edit that only changes a setting applies within the debounce.
	start := time.Now()
	write(head("13s") + tail)
	eventually(t, "queue_timeout 13s", func() bool { return d.config().Deployer.QueueTimeout == 13*time.Second })
	if took := time.Since(start); took >= removeSettle {
		t.Errorf("a change that takes nothing away took %v, as long as removeSettle", took)
	}

	// A removal meant as one is applied once the file stays the same.
	start = time.Now()
	write(head("14s"))
	eventually(t, "app api to be removed", func() bool { _, err := d.app("api"); return err != nil })
	if took := time.Since(start); took < removeSettle {
		t.Errorf("the removal applied after %v, before the file had stayed the same for %v", took, removeSettle)
	}
	if got := d.config().Deployer.QueueTimeout; got != 14*time.Second {
		t.Errorf("queue_timeout %v after the removal, want 14s", got)
	}
}

// takenAway names the apps an edit removes and the routes it removes from
// the apps it keeps; a route moved to another app, an added one, or an
// invalid file take nothing away.
func TestTakenAway(t *testing.T) {
	stateDir := socketDir(t)
	conf := func(apps string) string {
		return fmt.Sprintf("[deployer]\nlisten = \"\"\nstate_dir = %q\n%s", stateDir, apps)
	}
	app := func(name string, hosts ...string) string {
		return fmt.Sprintf("[apps.%s]\ncommand = [\"/bin/false\"]\nversion = \"v1\"\nhosts = [\"%s\"]\n", name, strings.Join(hosts, `", "`))
	}
	path := filepath.Join(t.TempDir(), "deploy.toml")
	if err := os.WriteFile(path, []byte(conf(app("web", "a.test", "b.test")+app("api", "api.test"))), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDaemon(cfg, DaemonOptions{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.cancel)
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"the same", conf(app("web", "a.test", "b.test") + app("api", "api.test")), nil},
		{"an app added", conf(app("web", "a.test", "b.test") + app("api", "api.test") + app("new", "new.test")), nil},
		{"an app removed", conf(app("web", "a.test", "b.test")), []string{"app api"}},
		{"a host removed", conf(app("web", "a.test") + app("api", "api.test")), []string{"route b.test/ to web"}},
		{"a host moved", conf(app("web", "a.test") + app("api", "api.test", "b.test")), nil},
		{"invalid", conf("[apps.web]\ncommand = 3\n"), nil},
	} {
		got := d.takenAway([]byte(tc.src))
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: takenAway = %q, want %q", tc.name, got, tc.want)
		}
	}
}
