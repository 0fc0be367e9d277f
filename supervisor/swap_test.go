package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A swap whose move of the stable path fails leaves the old version
// serving, still watched: a process of it that crashed while the swap
// moved its paths is restarted. Its crash watcher (and health loop) used
// to see the old version as retiring for that moment and quit for good.
func TestFailedActivationKeepsOldWatched(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := loadString(t, fmt.Sprintf(`
[deployer]
listen = ""
state_dir = %q
[apps.web]
command = [%q, "-test.run=^$"]
version = "v1"
health = "/healthz"
health_interval = "50ms"
[apps.web.env]
%s = "1"
`, socketDir(t), exe, appRoleEnv))
	d := runDaemon(t, cfg, DaemonOptions{})
	d.waitReady(t)
	a, err := d.app("web")
	if err != nil {
		t.Fatal(err)
	}
	var old *version
	eventually(t, "v1 to serve", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		old = a.serving
		return old != nil
	})
	crashed, _, _, _ := old.instances[0].snapshot()

	// The move fails after v1's process crashed and its crash watcher and
	// health loop had time to look at v1.
	d.swapStable = func(string, string) error {
		syscall.Kill(crashed.pid, syscall.SIGKILL)
		<-crashed.done
		time.Sleep(300 * time.Millisecond) // 6 health intervals
		return errors.New("test: the stable path cannot be replaced")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := a.Swap(ctx, "swap", "v2", false, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || res.TrafficMoved || !strings.Contains(res.Error, "cannot be replaced") {
		t.Fatalf("swap: %+v, want it failed by the move", res)
	}
	a.mu.Lock()
	serving, lastErr := a.serving, a.lastErr
	a.mu.Unlock()
	if serving != old {
		t.Fatalf("after the failed swap %v serves, want v1", serving.name)
	}
	if !strings.Contains(lastErr, "cannot be replaced") {
		t.Errorf("the app's last error is %q, want the failed move", lastErr)
	}

	eventually(t, "v1's crashed process to be restarted and in rotation", func() bool {
		p, _, healthy, _ := old.instances[0].snapshot()
		return p != crashed && !p.exited() && healthy
	})
}
