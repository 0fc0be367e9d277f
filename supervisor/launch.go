package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/deployer/deployer/proxy"
	"github.com/deployer/deployer/sockets"
)

// failureLines is how many of a failed version's output lines a failure
// report carries.
const failureLines = 20

// launchError is a failed launch: the reason and the version's last output.
type launchError struct {
	version string
	reason  error
	output  []string
}

func (e *launchError) Error() string {
	return fmt.Sprintf("version %s: %v", e.version, e.reason)
}
func (e *launchError) Unwrap() []error { return []error{ErrLaunch, e.reason} }

// launch starts every instance of a new version and waits until all of them
// are healthy and have stayed so for the settle time. If any fails, all are
// killed and a *launchError says why.
func (a *App) launch(ctx context.Context, name string, progress progressFunc) (*version, error) {
	cfg := a.cfg.Load()
	if err := ValidVersion(name); err != nil {
		return nil, err
	}
	v := newVersion(name, cfg)
	progress("launching %s of %s (%d instance%s)", name, a.name, cfg.Instances, plural(cfg.Instances))
	ctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()

	// The first instance to fail says why; the others then fail only
	// because the launch was cancelled, which would hide the reason.
	var (
		failOnce sync.Once
		failure  error
	)
	fail := func(err error) {
		failOnce.Do(func() { failure = err })
		cancel() // one failed: none will move, stop waiting for the others
	}
	var wg sync.WaitGroup
	for _, in := range v.instances {
		p, ep, err := a.startInstance(v, in.index)
		if err != nil {
			fail(fmt.Errorf("instance %d: %w", in.index, err))
			break
		}
		in.set(p, ep, false)
		a.setStarting(v)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := waitReady(ctx, p, ep, cfg.Health, cfg.HealthTimeout, a.d.settle(cfg)); err != nil {
				if errors.Is(ctx.Err(), context.DeadlineExceeded) && !p.exited() {
					// The operation's own timeout (withTimeout) may be the
					// shorter deadline: then it is the reason, not ready_timeout.
					if cause := context.Cause(ctx); errors.Is(cause, ErrTimeout) {
						err = fmt.Errorf("%w before it was healthy (%v)", cause, err)
					} else {
						err = fmt.Errorf("not healthy within %s: %w", cfg.ReadyTimeout, err)
					}
				}
				fail(fmt.Errorf("instance %d (pid %d): %w", in.index, p.pid, err))
				return
			}
			in.setHealthy(true)
			progress("%s instance %d (pid %d) is healthy", name, in.index, p.pid)
		}()
	}
	wg.Wait()
	if err := failure; err != nil {
		a.kill(v)
		return nil, &launchError{version: name, reason: err, output: a.outputOf(v)}
	}
	v.state.Store(StateServing)
	return v, nil
}

// setStarting records v, whose processes are being launched, in the state
// file (once per process: each fork is on disk before the next): a daemon
// that crashes before v serves or fails leaves them to the one that takes
// over, which stops them (retireUnfinished) instead of letting them run on,
// no one's.
func (a *App) setStarting(v *version) {
	a.mu.Lock()
	a.starting = v
	a.mu.Unlock()
	a.d.saveState()
}

// startInstance launches the process for instance i of v on a fresh socket
// (or port).
func (a *App) startInstance(v *version, i int) (*process, endpoint, error) {
	cfg := v.cfg
	vars := Vars{App: a.name, Version: v.name, Instance: i}
	var ep endpoint
	if cfg.UsesPort() {
		port, err := freePort()
		if err != nil {
			return nil, ep, err
		}
		vars.Port = port
		ep = endpoint{network: "tcp", addr: fmt.Sprintf("127.0.0.1:%d", port)}
	} else {
		path, err := a.layout().Unique(a.name, v.name, i)
		if err != nil {
			return nil, ep, err
		}
		vars.Socket = path
		ep = endpoint{network: "unix", addr: path}
	}
	argv := make([]string, len(cfg.Command))
	for j, s := range cfg.Command {
		argv[j] = Expand(s, vars)
	}
	dir := Expand(cfg.Dir, vars)
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(a.d.cfgDir(), dir)
	}
	fileEnv, err := envFromFiles(cfg.EnvFiles, vars, a.d.cfgDir())
	if err != nil {
		return nil, ep, fmt.Errorf("env_file: %w", err)
	}
	logPath, err := a.outputPath(v.name, i)
	if err != nil {
		return nil, ep, err
	}
	spec := launchSpec{
		App: a.name, Version: v.name, Instance: i,
		Socket: vars.Socket, Port: vars.Port,
		Command: argv, Dir: dir,
		Env:     appEnv(os.Environ(), fileEnv, cfg.Env, vars, cfg.UsesPort()),
		LogPath: logPath,
	}
	started := a.d.threads.appStarting() // all CPUs while it starts (procs.go)
	p, err := startProcess(spec, a.logs)
	if err != nil {
		started()
		return nil, ep, err
	}
	p.launched = started
	a.log.Info("process started", "version", v.name, "instance", i, "pid", p.pid, "addr", ep.addr)
	return p, ep, nil
}

// outputPath names a fresh output file for a process of version, instance i:
// <state_dir>/<app>/log/<version>-<i>-<random>.log.
func (a *App) outputPath(version string, i int) (string, error) {
	dir := filepath.Join(a.layout().AppDir(a.name), "log")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("supervisor: output dir: %w", err)
	}
	f, err := os.CreateTemp(dir, fmt.Sprintf("%s-%d-*.log", version, i))
	if err != nil {
		return "", fmt.Errorf("supervisor: output file: %w", err)
	}
	f.Close()
	return f.Name(), nil
}

// outputOf returns v's last output lines, waiting briefly for the pipes of
// exited processes to be read to the end so the last words are there.
func (a *App) outputOf(v *version) []string {
	for _, in := range v.instances {
		if p, _, _, _ := in.snapshot(); p != nil {
			select {
			case <-p.outDone:
			case <-time.After(time.Second):
			}
		}
	}
	lines := a.logs.Tail(failureLines, func(l LogLine) bool {
		return l.Version == v.name && !l.Time.Before(v.launched)
	})
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = fmt.Sprintf("[%d] %s", l.Instance, l.Text)
	}
	return out
}

// kill ends every process of a version that never served.
func (a *App) kill(v *version) {
	v.markStopping()
	for _, in := range v.instances {
		if p, ep, _, _ := in.snapshot(); p != nil {
			p.kill()
			a.unlink(ep)
		}
	}
	v.state.Store(StateFailed)
	a.mu.Lock()
	recorded := a.starting == v
	if recorded {
		a.starting = nil
	}
	a.mu.Unlock()
	if recorded {
		a.d.saveState()
	}
}

// activate moves traffic to v: the built-in proxy first, then one rename per
// instance over the stable path for outer proxies (nginx). If a rename fails,
// the stable paths already moved are put back on old's sockets and the
// proxy on old; v, which had traffic meanwhile, is the caller's to retire
// (retireFailed).
func (a *App) activate(v, old *version) error {
	a.d.proxy.Serve(a.name, v.key, targets(v))
	for i, in := range v.instances {
		_, ep, _, _ := in.snapshot()
		if ep.network != "unix" {
			continue
		}
		if err := a.d.swapStable(ep.addr, a.layout().Stable(a.name, i)); err != nil {
			a.restoreStable(old, v, i)
			if old != nil {
				a.serveInProxy(old)
			}
			return fmt.Errorf("supervisor: moving %s to %s: %w", a.layout().Stable(a.name, i), ep.addr, err)
		}
	}
	// A version with fewer instances than the last one leaves extra stable
	// paths pointing at the old version: remove them once it is gone (drain).
	return nil
}

// retireFailed drains v, whose activation failed after it had taken
// traffic for a moment: requests the built-in proxy sent it, and
// connections an outer proxy made through a stable path already moved to
// it, finish (within drain_timeout) before its processes stop, as with a
// version a swap retired. They used to be cut at once.
func (a *App) retireFailed(v *version) {
	a.mu.Lock()
	a.beginDrainLocked(v, time.Now().Add(v.cfg.DrainTimeout))
	a.mu.Unlock()
	a.d.saveState()
	go a.drain(v, 0)
}

// restoreStable undoes the first n moves of v's activation: those stable
// paths point back at old's sockets, and those old has no instance for
// (a scale-up, or no old version) are removed, not left on v's sockets,
// which are about to go.
func (a *App) restoreStable(old, v *version, n int) {
	for i := 0; i < n; i++ {
		stable := a.layout().Stable(a.name, i)
		if old != nil && i < len(old.instances) {
			if _, ep, _, _ := old.instances[i].snapshot(); ep.network == "unix" {
				sockets.Swap(ep.addr, stable)
			}
			continue
		}
		if _, ep, _, _ := v.instances[i].snapshot(); ep.network == "unix" && sameFile(ep.addr, stable) {
			os.Remove(stable)
		}
	}
}

// sameFile reports whether paths a and b name the same file.
func sameFile(a, b string) bool {
	fa, err := os.Lstat(a)
	if err != nil {
		return false
	}
	fb, err := os.Lstat(b)
	return err == nil && os.SameFile(fa, fb)
}

// serveInProxy makes v the version the proxy sends the app's new requests
// to, each instance in rotation as the supervisor last judged it
// (proxy.Serve alone puts every one in).
func (a *App) serveInProxy(v *version) {
	a.d.proxy.Serve(a.name, v.key, targets(v))
	for _, in := range v.instances {
		if _, ep, healthy, _ := in.snapshot(); !healthy {
			a.d.proxy.SetInstance(a.name, v.key, in.index, proxy.Target{Network: ep.network, Addr: ep.addr}, false)
		}
	}
}

func targets(v *version) []proxy.Target {
	ts := make([]proxy.Target, len(v.instances))
	for i, in := range v.instances {
		_, ep, _, _ := in.snapshot()
		ts[i] = proxy.Target{Network: ep.network, Addr: ep.addr}
	}
	return ts
}

// freePort asks the kernel for a free loopback port. The app binds it a
// moment later; a collision in between fails the launch, which is reported.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("supervisor: picking a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
