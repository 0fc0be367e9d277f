package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// redisTimeout bounds one Redis command or connect. Redis on the network
// path of a request would be slow; it never is: routes are cached, and a
// slow Redis only delays the next change.
const redisTimeout = time.Second

// redisOptions parses a [routes] redis URL into client options for
// deployer's use: short timeouts, no retries of its own (the callers retry
// with backoff), a small pool.
func redisOptions(rawURL string) (*redis.Options, error) {
	quietRedis.Do(func() { redis.SetLogger(redisLogger{}) })
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("supervisor: routes.redis: %w", err)
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout = redisTimeout, redisTimeout, redisTimeout
	o.MaxRetries = -1
	o.DialerRetries = 1
	o.PoolSize = 2
	// Managed Redis may refuse CLIENT SETINFO and the maintenance
	// handshake; neither is needed.
	o.DisableIdentity = true
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return o, nil
}

// RouteStore reads and writes the routes hash, for `deployer route`. Every
// change is published on RedisRoutesChannel, so every daemon re-reads the
// table at once, whether or not the server sends keyspace notifications.
type RouteStore struct {
	c *redis.Client
}

// OpenRouteStore returns a store for the Redis at rawURL. It does not
// connect yet.
func OpenRouteStore(rawURL string) (*RouteStore, error) {
	o, err := redisOptions(rawURL)
	if err != nil {
		return nil, err
	}
	o.MaxRetries = 1
	return &RouteStore{c: redis.NewClient(o)}, nil
}

// Close closes the store's connections.
func (s *RouteStore) Close() error { return s.c.Close() }

// Set routes spec's host to its target (spec.Value()), then announces it.
func (s *RouteStore) Set(ctx context.Context, spec RouteSpec) error {
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, RedisRoutesKey, spec.Host, spec.Value())
		p.Publish(ctx, RedisRoutesChannel, "set "+spec.Host)
		return nil
	})
	return err
}

// Remove deletes the route of host, spelled as given or normalized, and
// announces it. removed is false when there was none.
func (s *RouteStore) Remove(ctx context.Context, host string) (removed bool, err error) {
	fields := []string{normalizeRouteHost(host)}
	if host != fields[0] {
		fields = append(fields, host) // written by hand, not normalized
	}
	var del *redis.IntCmd
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.HDel(ctx, RedisRoutesKey, fields...)
		p.Publish(ctx, RedisRoutesChannel, "rm "+fields[0])
		return nil
	})
	if err != nil {
		return false, err
	}
	return del.Val() > 0, nil
}

// List returns the routes hash as it is: host → value, valid or not.
func (s *RouteStore) List(ctx context.Context) (map[string]string, error) {
	return s.c.HGetAll(ctx, RedisRoutesKey).Result()
}

var quietRedis sync.Once

// redisLogger sends go-redis's own messages (one per failed dial, say) to
// slog at debug level: deployer reports outages itself, once each.
type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}
