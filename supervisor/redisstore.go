package supervisor

import (
	"context"
	"errors"
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
// Other fields of the same host (spelled "Shop.test" or "shop.test." by
// another tool) are deleted in the same transaction: the daemons apply one
// field per host, and such a field could be the one they pick.
func (s *RouteStore) Set(ctx context.Context, spec RouteSpec) error {
	return s.change(ctx, spec.Host, func(p redis.Pipeliner, others []string) {
		if len(others) > 0 {
			p.HDel(ctx, RedisRoutesKey, others...)
		}
		p.HSet(ctx, RedisRoutesKey, spec.Host, spec.Value())
		p.Publish(ctx, RedisRoutesChannel, "set "+spec.Host)
	})
}

// Remove deletes the route of host: every field that names it, however
// spelled, and announces it. removed is false when there was none.
func (s *RouteStore) Remove(ctx context.Context, host string) (removed bool, err error) {
	norm := normalizeRouteHost(host)
	var del *redis.IntCmd
	err = s.change(ctx, norm, func(p redis.Pipeliner, others []string) {
		del = p.HDel(ctx, RedisRoutesKey, append([]string{norm}, others...)...)
		p.Publish(ctx, RedisRoutesChannel, "rm "+norm)
	})
	if err != nil {
		return false, err
	}
	return del.Val() > 0, nil
}

// change runs do in a transaction with the fields of the routes hash other
// than host that name host once normalized, read under WATCH: a write by
// another client in between makes it start again (a few times).
func (s *RouteStore) change(ctx context.Context, host string, do func(p redis.Pipeliner, others []string)) error {
	var err error
	for range 5 {
		err = s.c.Watch(ctx, func(tx *redis.Tx) error {
			fields, err := tx.HKeys(ctx, RedisRoutesKey).Result()
			if err != nil {
				return err
			}
			var others []string
			for _, f := range fields {
				if f != host && normalizeRouteHost(f) == host {
					others = append(others, f)
				}
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				do(p, others)
				return nil
			})
			return err
		}, RedisRoutesKey)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
	}
	return err
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
