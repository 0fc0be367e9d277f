package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/deployer/deployer/proxy"
	"github.com/deployer/deployer/proxy/front"
	"github.com/deployer/deployer/sockets"
)

// DaemonOptions configure a Daemon. The zero value works: plain net.Listen,
// slog.Default, every app started.
type DaemonOptions struct {
	Logger *slog.Logger
	// Listen creates every listener the daemon opens (public and control);
	// cmd/deployer passes the tableflip-backed sockets.Upgrader's Listen.
	Listen func(network, addr string) (net.Listener, error)
	// Ready is called once the daemon's listeners are open (tableflip's Ready).
	Ready func() error
	// OnlyApp, if set, starts only that app; the others stay stopped.
	OnlyApp string
	// Upgrade starts the new daemon and waits until it is ready
	// (tableflip's Upgrade); nil: the daemon cannot upgrade itself.
	Upgrade func() error
	// ManageProcs makes the daemon set the process's GOMAXPROCS from
	// deploy.toml's procs, at start and on every reload, and move it as
	// procs = "auto" says (see Procs).
	// cmd/deployer sets it; a test running daemons in its own process
	// does not.
	ManageProcs bool
}

// Daemon is the running deployer: supervisor, control API and proxy.
type Daemon struct {
	opts   DaemonOptions
	log    *slog.Logger
	layout sockets.Layout // state_dir cannot change on a running daemon
	proxy  *proxy.Proxy
	holds  *sockets.HoldWatcher

	// mu guards the config and the app set, which a reload of deploy.toml
	// changes.
	mu        sync.RWMutex
	cfg       *Config
	apps      map[string]*App
	reloadErr string // set while deploy.toml on disk is invalid
	// removing holds the apps a reload took out of deploy.toml until their
	// processes have stopped (reload.go): shutdown waits for them too, and
	// an upgrade waits until they are gone.
	removing map[*App]struct{}
	// previous is the daemon this one took over from while it may still run
	// (set by adoptAll, read-only after): drains of TCP versions wait for it.
	previous daemonProcess

	// ctx ends when the daemon begins to shut down: no more boots or crash
	// restarts. Drains use their own deadlines.
	ctx      context.Context
	cancel   context.CancelFunc
	shutdown chan struct{}
	stopOnce sync.Once
	started  time.Time

	// Self-upgrade (upgrade.go): one at a time; bg admits background
	// actions that change apps, which stop for good once handedOver.
	upgradeMu   sync.Mutex
	bg          sync.RWMutex
	handedOver  atomic.Bool
	upgrading   atomic.Bool
	handoverC   chan struct{}
	handoverOne sync.Once

	stateMu sync.Mutex
	procs   *procSampler
	threads *threadTuner // GOMAXPROCS (procs.go)

	// Routes from Redis (redis*.go): the routing table merges deploy.toml's
	// routes and Redis's; redis is nil without [routes] redis.
	routes routeMerger
	redis  *redisRoutes

	// obs does metrics and the access log (metrics.go), from NewDaemon to
	// the end of Run; nil when neither is on.
	obs atomic.Pointer[observer]

	// adopting is set until Run has adopted what the last daemon left
	// (adoptAll): saveState writes nothing meanwhile, so that the state
	// file keeps what that daemon wrote until this one knows every app. (A
	// state written halfway, then a crash, made the next daemon start
	// afresh apps whose processes still ran.)
	adopting atomic.Bool

	// acceptGate is closed once the daemon is ready (Run): until then its
	// listeners accept nothing (gatedListener), and after an upgrade the old
	// daemon, which shares their sockets, accepts every connection. A new
	// daemon that fails before it is ready then drops none.
	acceptGate chan struct{}

	// swapStable is sockets.Swap, for a swap's move of the stable paths
	// (activate); tests make it fail.
	swapStable func(boundPath, stablePath string) error
}

// NewDaemon prepares a daemon for cfg; Run starts it.
func NewDaemon(cfg *Config, opts DaemonOptions) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Listen == nil {
		opts.Listen = net.Listen
	}
	if opts.OnlyApp != "" && cfg.Apps[opts.OnlyApp] == nil {
		return nil, fmt.Errorf("%w: no app %q in %s", ErrUnknownApp, opts.OnlyApp, cfg.Path)
	}
	routes, err := routesOf(cfg)
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		cfg:        cfg,
		opts:       opts,
		log:        opts.Logger,
		layout:     sockets.Layout{StateDir: cfg.Deployer.StateDir},
		apps:       make(map[string]*App),
		removing:   make(map[*App]struct{}),
		shutdown:   make(chan struct{}),
		handoverC:  make(chan struct{}),
		started:    time.Now(),
		procs:      newProcSampler(),
		threads:    newThreadTuner(opts.Logger, opts.ManageProcs),
		swapStable: sockets.Swap,
		acceptGate: make(chan struct{}),
	}
	d.adopting.Store(true)
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.threads.configure(d.ctx, cfg.Deployer.Procs, false)
	d.proxy = proxy.New(d.proxyOptions(cfg))
	for _, name := range cfg.AppNames() {
		d.apps[name] = newApp(d, cfg.Apps[name])
		d.proxy.SetApp(name, appOptions(cfg, cfg.Apps[name]))
	}
	if err := d.setTOMLRoutes(routes); err != nil {
		d.cancel()
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if cfg.Routes.Redis != "" {
		if d.redis, err = d.newRedisRoutes(cfg.Routes); err != nil {
			d.cancel()
			return nil, err
		}
	}
	return d, nil
}

// appOptions are the proxy's settings for app of cfg; for nil (the address
// routes from Redis), [deployer]'s.
func appOptions(cfg *Config, app *AppConfig) proxy.AppOptions {
	o := proxy.AppOptions{
		QueueTimeout: cfg.Deployer.QueueTimeout,
		MaxQueued:    cfg.Deployer.MaxQueued,
		MaxBody:      cfg.Deployer.Public.MaxBody,
	}
	if app != nil {
		o.MaxBody = app.MaxBody
	}
	return o
}

// config returns the config in force.
func (d *Daemon) config() *Config {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cfg
}

// appList returns the apps, sorted by name.
func (d *Daemon) appList() []*App {
	d.mu.RLock()
	defer d.mu.RUnlock()
	list := make([]*App, 0, len(d.apps))
	for _, a := range d.apps {
		list = append(list, a)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].name < list[j].name })
	return list
}

// ErrUnknownApp is returned for an app name deploy.toml does not define.
var ErrUnknownApp = errors.New("supervisor: unknown app")

func (d *Daemon) cfgDir() string { return d.config().Dir }

func (d *Daemon) settle(cfg *AppConfig) time.Duration { return cfg.Settle }

// Run serves until ctx is done or a shutdown is requested, then drains,
// stops the apps and returns.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.cancel()
	cfg := d.config()
	if err := os.MkdirAll(cfg.Deployer.StateDir, 0o755); err != nil {
		return fmt.Errorf("supervisor: state dir: %w", err)
	}
	// The TLS key pair is loaded before anything listens: a pair that does
	// not load stops this daemon before it accepts a connection it would
	// drop (after an upgrade, the old daemon serves on).
	tlsStore, err := d.loadTLS()
	if err != nil {
		return err
	}
	ctrlL, err := d.listenControl()
	if err != nil {
		return err
	}
	defer ctrlL.Close()
	ctrl := &http.Server{Handler: d.controlHandler(), ReadHeaderTimeout: 10 * time.Second}
	defer ctrl.Close()

	// Redis routes (or their cache) are in the table before the proxy
	// accepts: a new daemon after an upgrade must not answer 404 for them.
	if d.redis != nil {
		d.redis.start(d.ctx)
	}
	// Metrics and the access log are up before the first request.
	stopObserving, err := d.startObservability()
	if err != nil {
		return err
	}
	defer stopObserving()
	var pubs []*publicServer
	if tlsStore != nil {
		pub, err := d.serveTLS(tlsStore)
		if err != nil {
			return err
		}
		pubs = append(pubs, pub)
	}
	if addr := cfg.Deployer.Listen; addr != "" {
		l, err := d.listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("supervisor: listen %s: %w", addr, err)
		}
		pub := newFrontServer(l, d.publicHandler(), &front.Server{
			ReadHeaderTimeout: cfg.Deployer.Public.ReadHeaderTimeout,
			IdleTimeout:       cfg.Deployer.Public.IdleTimeout,
			MaxHeaderBytes:    cfg.Deployer.Public.MaxHeaderBytes,
			Logger:            d.log,
		})
		go pub.serve()
		pubs = append(pubs, pub)
		d.log.Info("proxy listening", "addr", l.Addr().String())
	}

	holds, err := sockets.NewHoldWatcher(d.layout, func(app string, held bool) {
		if a, err := d.app(app); err == nil {
			a.setPaused(held)
		}
	}, d.log)
	if err != nil {
		return fmt.Errorf("supervisor: watching hold files: %w", err)
	}
	defer holds.Close()
	d.holds = holds
	for _, a := range d.appList() {
		if err := holds.Add(a.name); err != nil {
			return fmt.Errorf("supervisor: app dir of %s: %w", a.name, err)
		}
	}
	if err := d.watchConfig(d.ctx); err != nil {
		return fmt.Errorf("supervisor: watching %s: %w", cfg.Path, err)
	}
	// Processes a previous daemon left (it upgraded to this one, or it
	// crashed) are adopted, not started again; requests meanwhile are held.
	boot := d.adoptAll()
	d.adopting.Store(false)
	d.saveState()
	if d.opts.Ready != nil {
		if err := d.opts.Ready(); err != nil {
			return fmt.Errorf("supervisor: ready: %w", err)
		}
	}
	close(d.acceptGate)
	// Control calls are served only now, with every app adopted or about to
	// boot. After an upgrade the old daemon shares the control socket and
	// answered every call until here: a swap accepted by this one before
	// its apps were adopted would have acted on apps it did not know yet.
	go ctrl.Serve(ctrlL)
	d.log.Info("deployer started", "config", cfg.Path, "control", d.layout.ControlSocket(), "pid", os.Getpid(), "build", CurrentBuild().String())
	for _, a := range boot {
		if d.opts.OnlyApp == "" || d.opts.OnlyApp == a.name {
			go d.boot(a)
		}
	}
	// An edit of deploy.toml made since it was read (while the previous
	// daemon upgraded to this one, say: it left the edit to this one) was
	// seen by no watch: apply it now.
	d.reloadIfChanged()

	select {
	case <-ctx.Done():
	case <-d.shutdown:
	case <-d.handoverC:
		return d.finishHandover(ctrl, pubs)
	}
	// An upgrade under way ends first, and none starts after: one that
	// succeeded leaves the new daemon serving, so this one only hands over
	// (its apps' operation locks are the upgrade's for good).
	d.upgradeMu.Lock()
	defer d.upgradeMu.Unlock()
	if d.handedOver.Load() {
		d.log.Warn("shutdown asked for during an upgrade that succeeded: the new daemon serves on ('deployer shutdown' stops it)")
		return d.finishHandover(ctrl, pubs)
	}
	d.log.Info("shutting down: draining")
	d.cancel()
	var wg sync.WaitGroup
	for _, pub := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Bounded by the longest drain: in-flight requests finish (or are
			// cut by the apps' drains below); hijacked connections are tracked
			// by the proxy, not by Shutdown (PITFALLS).
			sctx, cancel := context.WithTimeout(context.Background(), d.maxDrain()+5*time.Second)
			defer cancel()
			pub.srv.Shutdown(sctx)
		}()
	}
	for _, a := range d.appList() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.shutdown()
		}()
	}
	// Apps removed from deploy.toml whose processes are still draining:
	// their drain ends within drain_timeout, and no process is left behind.
	for _, a := range d.removingApps() {
		wg.Go(a.shutdown)
	}
	if d.redis != nil {
		wg.Go(func() { d.redis.shutdown(d.config().Deployer.DrainTimeout) })
	}
	wg.Wait()
	d.saveState()
	// Nothing serves any more: the stable paths and the control socket go,
	// so an outer proxy or a client finds no socket rather than one that
	// nobody accepts on.
	for _, a := range d.appList() {
		for i := 0; i < MaxInstances; i++ {
			sockets.Unlink(d.layout.Stable(a.name, i))
		}
	}
	sockets.Unlink(d.layout.ControlSocket())
	d.log.Info("deployer stopped")
	return nil
}

// finishHandover ends a daemon that upgraded to a new one: it stops
// accepting (the new daemon accepts on the same sockets), lets its own
// in-flight requests and upgraded connections finish within the longest
// drain_timeout, cutting what is left then, and leaves the apps alone.
// tableflip refuses the next upgrade until this process has exited, so the
// deadline is hard.
func (d *Daemon) finishHandover(ctrl *http.Server, pubs []*publicServer) error {
	d.cancel() // health checks, restarts, reloads: the new daemon's now
	// The longest drain_timeout, and the deadline of every version still
	// draining (launched, and so bound, by an earlier deploy.toml): no
	// process is stopped here, so no stop_timeout on top.
	deadline := d.config().Deployer.DrainTimeout
	for _, a := range d.config().Apps {
		deadline = max(deadline, a.DrainTimeout)
	}
	for _, a := range d.appList() {
		a.mu.Lock()
		for v := range a.draining {
			deadline = max(deadline, time.Until(v.drainDeadline))
		}
		a.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The control request that asked for the upgrade gets its answer.
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		defer scancel()
		ctrl.Shutdown(sctx)
	}()
	// Requests still arriving on connections this daemon accepted are
	// forwarded as before, each answer closing its connection; retiring the
	// versions now would hold them, with nothing to serve them. Once those
	// connections are gone and nothing is in flight (websockets included),
	// or at the deadline, everything is retired, cutting what is left.
	var hw sync.WaitGroup
	for _, pub := range pubs {
		hw.Go(func() { pub.handOver(ctx) })
	}
	hw.Wait()
	for d.inFlight() > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
			continue
		}
		break
	}
	cut := 0
	var mu sync.Mutex
	for _, app := range d.proxy.Apps() { // the apps and Redis address routes
		for key := range d.proxy.Stats(app).InFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := d.proxy.Retire(ctx, app, key)
				mu.Lock()
				cut += n
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	d.log.Info("handed over: old daemon exits", "cut", cut)
	return nil
}

// inFlight counts the proxy's requests in flight, upgraded ones included.
func (d *Daemon) inFlight() int {
	n := 0
	for _, app := range d.proxy.Apps() {
		for _, c := range d.proxy.Stats(app).InFlight {
			n += c
		}
	}
	return n
}

// listenControl opens <state_dir>/deployer.sock: created under a tight umask
// so it is never reachable by others, not even for a moment, then given the
// mode the allow-list needs (0600 without one), and wrapped so that only
// allowed callers reach the control API (controlauth.go).
func (d *Daemon) listenControl() (net.Listener, error) {
	if err := checkStateDir(d.layout.StateDir); err != nil {
		return nil, err
	}
	path := d.layout.ControlSocket()
	old := syscall.Umask(0o177)
	l, err := d.listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("supervisor: control socket: %w", err)
	}
	groupErr, err := setControlSocketPerm(path, d.config().Deployer.Public)
	if err != nil {
		l.Close()
		return nil, err
	}
	if groupErr != nil {
		d.log.Warn("control socket is mode 0666: its group could not be set; the uid and group check alone admits callers", "error", groupErr)
	}
	// The allow-list of the config in force, read at each connection.
	allow := func(p peerCred) error { return accessOf(d.config()).check(p) }
	return &controlListener{Listener: l, allow: allow, log: d.log}, nil
}

// boot starts an app at daemon start, retrying with backoff while its
// version fails: a database that is not up yet should not need an operator.
func (d *Daemon) boot(a *App) {
	backoff := time.Second
	for {
		a.booting.Store(true)
		res, err := a.Start(d.ctx, "", func(format string, args ...any) {
			d.log.Info(fmt.Sprintf(format, args...), "app", a.name)
		})
		a.booting.Store(false)
		if err != nil || res.OK || d.ctx.Err() != nil {
			return // started, or someone else is operating on it
		}
		d.log.Error("start failed", "app", a.name, "version", res.NewVersion, "error", res.Error, "retry_in", backoff)
		for _, l := range res.Output {
			d.log.Error("  output: "+l, "app", a.name)
		}
		select {
		case <-time.After(backoff):
		case <-d.ctx.Done():
			return
		}
		if a.stoppedByUser() {
			return
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func (d *Daemon) maxDrain() time.Duration {
	cfg := d.config()
	m := cfg.Deployer.DrainTimeout
	for _, a := range cfg.Apps {
		m = max(m, a.DrainTimeout+a.StopTimeout)
	}
	return m
}

// requestShutdown makes Run return after a graceful stop.
func (d *Daemon) requestShutdown() {
	d.stopOnce.Do(func() { close(d.shutdown) })
}

func (d *Daemon) app(name string) (*App, error) {
	d.mu.RLock()
	a := d.apps[name]
	d.mu.RUnlock()
	if a == nil {
		return nil, fmt.Errorf("%w %q (apps: %v)", ErrUnknownApp, name, d.config().AppNames())
	}
	return a, nil
}

// listen opens a listener with opts.Listen that accepts nothing before the
// daemon is ready (see acceptGate).
func (d *Daemon) listen(network, addr string) (net.Listener, error) {
	l, err := d.opts.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return &gatedListener{Listener: l, open: d.acceptGate, closed: make(chan struct{})}, nil
}

// gatedListener's Accept waits until open is closed (or the listener is).
// Connections wait in the kernel's backlog meanwhile, or are accepted by
// another process sharing the socket.
type gatedListener struct {
	net.Listener
	open      <-chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func (l *gatedListener) Accept() (net.Conn, error) {
	select {
	case <-l.open:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	return l.Listener.Accept()
}

func (l *gatedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}
