package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deployer/deployer/proxy"
)

// Reconnecting to Redis: the first retry after redisMinBackoff, doubling up
// to redisMaxBackoff.
const (
	redisMinBackoff = 100 * time.Millisecond
	redisMaxBackoff = 5 * time.Second
	// redisStartWait bounds how long a starting daemon waits for the first
	// read of the table before it serves (the cache serves meanwhile).
	redisStartWait = 2 * time.Second
)

// States of the connection to Redis, as status reports them.
const (
	RedisConnecting = "connecting"
	RedisUp         = "up"
	RedisDown       = "down"
)

// redisRoutesOptions configure a redisRoutes. Every field is needed.
type redisRoutesOptions struct {
	Config    RoutesConfig
	CacheFile string // the last table applied, for a start while Redis is down
	Listen    string // the proxy's own address: a route to it would loop
	// StateDir holds the control socket and the apps' sockets: a route
	// may not name a socket there (see loopProblem).
	StateDir string
	Proxy    *proxy.Proxy
	Logger   *slog.Logger
	// AppOptions are the proxy settings of the apps made for address routes
	// (queue_timeout, max_queued of [deployer]).
	AppOptions func() proxy.AppOptions
	// Drain is how long a replaced address route's requests may finish.
	Drain func() time.Duration
	// Publish hands the routes to the routing table (Daemon.setRedisRoutes).
	Publish func([]redisRoute)
}

// redisRoutes keeps a daemon's copy of the routes hash in Redis. A goroutine
// reads the whole hash at start, again whenever a message arrives on
// RedisRoutesChannel or on the key's keyspace channel, and every Resync as
// a safety net; each read is applied at once (redistargets.go). Requests
// never wait for Redis: the proxy routes from its own table, which keeps
// the last known routes while Redis is down or slow.
type redisRoutes struct {
	opts     redisRoutesOptions
	redis    *redis.Options
	log      *slog.Logger
	keyspace string // the keyspace channel of the routes key

	ctx       context.Context // the daemon's: health checks stop with it
	firstRead chan struct{}   // closed after the first attempt to read Redis
	firstOnce sync.Once
	done      chan struct{} // closed when run returns
	started   bool
	// The cache file is written by its own goroutine, latest table wins:
	// an fsync must not delay the next change.
	cacheQ    chan map[string]string
	cacheDone chan struct{}

	// applyMu serializes apply and setAppOptions: the proxy apps of the
	// routes in current are live while it is held.
	applyMu sync.Mutex

	// Owned by the goroutine that applies tables (run, or start before it).
	seq            uint64            // version keys of address routes
	loggedBad      map[string]bool   // field+value pairs already logged
	cached         map[string]string // what the cache file holds
	keyspaceWarned bool

	mu      sync.Mutex // guards what status reads
	current map[string]*routeEntry
	bad     map[string]badRoute // field → its value and why it is ignored
	state   string
	since   time.Time
	lastErr string
	reads   int // successful reads of the table
}

// newRedisRoutes prepares the Redis route source; start runs it.
func newRedisRoutes(o redisRoutesOptions) (*redisRoutes, error) {
	ro, err := redisOptions(o.Config.Redis)
	if err != nil {
		return nil, err
	}
	return &redisRoutes{
		opts:      o,
		redis:     ro,
		log:       o.Logger.With("redis", RedactURL(o.Config.Redis)),
		keyspace:  fmt.Sprintf("__keyspace@%d__:%s", ro.DB, RedisRoutesKey),
		firstRead: make(chan struct{}),
		done:      make(chan struct{}),
		cacheQ:    make(chan map[string]string, 1),
		cacheDone: make(chan struct{}),
		loggedBad: make(map[string]bool),
		current:   make(map[string]*routeEntry),
		state:     RedisConnecting,
		since:     time.Now(),
	}, nil
}

// start applies the cached table, then follows Redis until ctx ends. It
// returns after the first read of Redis, or after redisStartWait when Redis
// does not answer: a daemon serves either way.
func (r *redisRoutes) start(ctx context.Context) {
	r.ctx = ctx
	r.started = true
	r.loadCache()
	go r.writeCache(ctx)
	go r.run(ctx)
	select {
	case <-r.firstRead:
	case <-time.After(redisStartWait):
	case <-ctx.Done():
	}
}

// run reconnects with backoff until ctx ends. An outage is logged once,
// when it begins, and once more when Redis is back.
func (r *redisRoutes) run(ctx context.Context) {
	defer close(r.done)
	backoff := redisMinBackoff
	for {
		err := r.session(ctx, func() { backoff = redisMinBackoff })
		if ctx.Err() != nil {
			return
		}
		r.setDown(err)
		r.firstOnce.Do(func() { close(r.firstRead) })
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, redisMaxBackoff)
	}
}

// session is one connection to Redis: subscribe, read the table, then
// re-read on every message and every Resync, until something fails. The
// subscription is made before the first read, so no change can slip
// between them.
func (r *redisRoutes) session(ctx context.Context, connected func()) error {
	c := redis.NewClient(r.redis)
	defer c.Close()
	ps := c.Subscribe(ctx)
	defer ps.Close()
	// A blocked receive does not see ctx end; closing the subscription
	// wakes it.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()

	channels := []string{RedisRoutesChannel, r.keyspace}
	if err := ps.Subscribe(ctx, channels...); err != nil {
		return fmt.Errorf("SUBSCRIBE: %w", err)
	}
	for confirmed := 0; confirmed < len(channels); {
		msg, err := ps.ReceiveTimeout(ctx, redisTimeout)
		if err != nil {
			return fmt.Errorf("SUBSCRIBE: %w", err)
		}
		if _, ok := msg.(*redis.Subscription); ok {
			confirmed++
		}
	}
	if r.opts.Config.KeyspaceEvents {
		r.enableKeyspaceEvents(ctx, c)
	}
	raw, err := r.read(ctx, c)
	if err != nil {
		return err
	}
	r.setUp(raw)
	r.apply(raw)
	connected()
	r.firstOnce.Do(func() { close(r.firstRead) })

	resync := r.opts.Config.Resync
	next := time.Now().Add(resync)
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, max(time.Until(next), time.Millisecond))
		if ctx.Err() != nil {
			return nil
		}
		if isTimeout(err) {
			// A subscription whose connection died silently would
			// never deliver again: the PING sent at the last resync
			// must have been answered by now.
			if pinged {
				return errors.New("subscription: PING not answered")
			}
			if err := r.reread(ctx, c); err != nil {
				return err
			}
			if err := ps.Ping(ctx); err != nil {
				return fmt.Errorf("subscription: %w", err)
			}
			pinged = true
			next = time.Now().Add(resync)
			continue
		}
		if err != nil {
			return fmt.Errorf("subscription: %w", err)
		}
		switch msg.(type) {
		case *redis.Message:
			if err := r.reread(ctx, c); err != nil {
				return err
			}
		case *redis.Pong:
			pinged = false
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// reread reads the whole routes hash and applies it. The table is small and
// a read is one round trip, so every change re-reads everything: nothing
// can be missed or applied out of order.
func (r *redisRoutes) reread(ctx context.Context, c *redis.Client) error {
	raw, err := r.read(ctx, c)
	if err != nil {
		return err
	}
	r.apply(raw)
	return nil
}

func (r *redisRoutes) read(ctx context.Context, c *redis.Client) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	raw, err := c.HGetAll(ctx, RedisRoutesKey).Result()
	if err != nil {
		return nil, fmt.Errorf("HGETALL %s: %w", RedisRoutesKey, err)
	}
	r.mu.Lock()
	r.reads++
	r.mu.Unlock()
	return raw, nil
}

// enableKeyspaceEvents adds K (keyspace channel) and h (hash commands) to
// the server's notify-keyspace-events, keeping the flags other software
// set. Many managed Redis refuse CONFIG: then plain HSETs are seen at the
// next resync, and `deployer route set` (which publishes) at once.
func (r *redisRoutes) enableKeyspaceEvents(ctx context.Context, c *redis.Client) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	const param = "notify-keyspace-events"
	cur, err := c.ConfigGet(ctx, param).Result()
	if err == nil {
		flags := cur[param]
		add := ""
		if !strings.Contains(flags, "K") {
			add += "K"
		}
		if !strings.ContainsAny(flags, "hA") {
			add += "h"
		}
		if add != "" {
			err = c.ConfigSet(ctx, param, flags+add).Err()
		}
	}
	if err != nil && !r.keyspaceWarned {
		r.keyspaceWarned = true
		r.log.Warn("cannot turn on keyspace notifications; plain HSETs take effect at the next resync, `deployer route set` at once",
			"error", err, "resync", r.opts.Config.Resync)
	}
}

func (r *redisRoutes) setDown(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastErr = err.Error()
	if r.state == RedisDown {
		return // logged when the outage began
	}
	r.state, r.since = RedisDown, time.Now()
	r.log.Warn("redis unreachable: serving the last known routes, retrying", "error", err, "hosts", len(r.current))
}

// setUp marks Redis up after a first read of raw, which is applied next.
func (r *redisRoutes) setUp(raw map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.state {
	case RedisDown:
		r.log.Info("redis is back: reading the routes again", "down_for", time.Since(r.since).Round(time.Millisecond), "hosts", len(raw))
		if len(raw) == 0 && len(r.current) > 0 {
			r.log.Warn("the redis routes table is empty after the outage: Redis may have restarted without its data; its routes go")
		}
	case RedisConnecting:
		r.log.Info("routes from redis", "hosts", len(raw))
	}
	r.state, r.since = RedisUp, time.Now()
}

// routesCache is the cache file: the table last applied. A daemon that
// starts (after an upgrade, a crash, a reboot) while Redis is down serves
// these routes instead of none.
type routesCache struct {
	Written time.Time         `json:"written"`
	Routes  map[string]string `json:"routes"`
}

func (r *redisRoutes) loadCache() {
	b, err := os.ReadFile(r.opts.CacheFile)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			r.log.Warn("reading the routes cache", "file", r.opts.CacheFile, "error", err)
		}
		return
	}
	var c routesCache
	if err := json.Unmarshal(b, &c); err != nil {
		r.log.Warn("ignoring a corrupt routes cache", "file", r.opts.CacheFile, "error", err)
		return
	}
	r.cached = c.Routes
	r.apply(c.Routes)
	r.log.Info("routes from the cache until redis answers", "hosts", len(c.Routes), "written", c.Written)
}

// saveCache hands the routes in force to writeCache when they changed.
// Only the goroutine that applies tables calls it.
func (r *redisRoutes) saveCache(routes map[string]string) {
	if maps.Equal(routes, r.cached) {
		return
	}
	r.cached = routes
	select {
	case <-r.cacheQ: // not written yet: replaced by the newer table
	default:
	}
	r.cacheQ <- routes
}

// writeCache writes each table saveCache hands it, and the last one
// pending when ctx ends.
func (r *redisRoutes) writeCache(ctx context.Context) {
	defer close(r.cacheDone)
	write := func(routes map[string]string) {
		b, _ := json.MarshalIndent(routesCache{Written: time.Now().UTC(), Routes: routes}, "", "  ")
		if err := writeFileAtomic(r.opts.CacheFile, b, 0o600); err != nil {
			r.log.Warn("writing the routes cache", "file", r.opts.CacheFile, "error", err)
		}
	}
	for {
		select {
		case routes := <-r.cacheQ:
			write(routes)
		case <-ctx.Done():
			<-r.done // no more tables
			select {
			case routes := <-r.cacheQ:
				write(routes)
			default:
			}
			return
		}
	}
}

// RoutesStatus is the "routes" object of status --json while deploy.toml
// has [routes] redis.
type RoutesStatus struct {
	Redis     string             `json:"redis"` // connecting, up, down
	URL       string             `json:"url"`   // password hidden
	Since     time.Time          `json:"since"` // of the state
	Hosts     int                `json:"hosts"` // Redis routes in the routing table
	LastError string             `json:"last_error,omitempty"`
	Reads     int                `json:"reads"` // successful reads of the table
	Routes    []RedisRouteStatus `json:"routes"`
}

// RedisRouteStatus is one host of the Redis table.
type RedisRouteStatus struct {
	Host    string              `json:"host"`
	Target  string              `json:"target"`        // what serves (canonical), or the bad value
	App     string              `json:"app,omitempty"` // the deploy.toml app it routes to
	Targets []RouteTargetStatus `json:"targets,omitempty"`
	Error   string              `json:"error,omitempty"` // why the value or the route is ignored
}

type RouteTargetStatus struct {
	Target  string `json:"target"`
	Healthy bool   `json:"healthy"` // in rotation
}

// status reports the source; problems are the routing table's reasons for
// leaving hosts out (Daemon.routeProblems).
func (r *redisRoutes) status(problems map[string]string) *RoutesStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := &RoutesStatus{Redis: r.state, URL: RedactURL(r.opts.Config.Redis), Since: r.since.UTC(), LastError: r.lastErr, Reads: r.reads, Routes: []RedisRouteStatus{}}
	for _, h := range sortedKeys(r.current) {
		e := r.current[h]
		rs := RedisRouteStatus{Host: h, Target: e.spec.Value(), App: e.spec.App, Error: problems[h]}
		for i, t := range e.spec.Targets {
			rs.Targets = append(rs.Targets, RouteTargetStatus{Target: targetString(t), Healthy: e.ready[i]})
		}
		if rs.Error == "" {
			st.Hosts++
		}
		st.Routes = append(st.Routes, rs)
	}
	for _, field := range sortedKeys(r.bad) {
		st.Routes = append(st.Routes, RedisRouteStatus{Host: field, Target: r.bad[field].value, Error: r.bad[field].reason})
	}
	return st
}
