package supervisor

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/deployer/deployer/proxy"
	"github.com/deployer/deployer/sockets"
)

// The Redis schema of shared routes, readable and writable with redis-cli:
//
//	HSET routes <host> <target>      # an app of deploy.toml, unix:/path.sock, host:port,
//	                                 # or several addresses separated by commas
//	PUBLISH deployer:routes <note>   # "re-read the table now" (deployer route set/rm send it)
const (
	RedisRoutesKey     = "routes"
	RedisRoutesChannel = "deployer:routes"
)

// MaxRouteTargets bounds the addresses of one Redis route, as instances
// bounds the processes of an app.
const MaxRouteTargets = MaxInstances

// ErrBadRoute is matched by every error ParseRoute returns.
var ErrBadRoute = errors.New("supervisor: invalid route")

// RouteSpec is one parsed entry of the Redis routes hash: a host and either
// an app of deploy.toml or the addresses requests for the host go to, round
// robin.
type RouteSpec struct {
	Host    string         // normalized: lower case, no trailing dot
	App     string         // an app name; "" when Targets are given
	Targets []proxy.Target // unix sockets and TCP host:port addresses
}

// Value is the canonical form of the target, as `deployer route set` stores
// it: the app name, or the addresses separated by commas without spaces.
func (s RouteSpec) Value() string {
	if s.App != "" {
		return s.App
	}
	parts := make([]string, len(s.Targets))
	for i, t := range s.Targets {
		parts[i] = targetString(t)
	}
	return strings.Join(parts, ",")
}

// targetString spells t the way the schema does.
func targetString(t proxy.Target) string {
	if t.Network == "unix" {
		return "unix:" + t.Addr
	}
	return t.Addr
}

// ParseRoute parses one field and value of the routes hash. The host is an
// exact name or "*.domain" (a catch-all "*" is refused: an entry in a shared
// store should not be able to take every unrouted host). The value is an app
// name, or one or more of unix:/absolute/path.sock and host:port separated by
// commas. Errors match ErrBadRoute.
func ParseRoute(host, value string) (RouteSpec, error) {
	h := normalizeRouteHost(host)
	if h == "*" {
		return RouteSpec{}, fmt.Errorf(`%w: host "*": a Redis route names a host or "*.domain"; route every other host in deploy.toml`, ErrBadRoute)
	}
	if problem := hostProblem(h); problem != "" {
		return RouteSpec{}, fmt.Errorf("%w: host %q: %s", ErrBadRoute, host, problem)
	}
	spec := RouteSpec{Host: h}
	value = strings.TrimSpace(value)
	if value == "" {
		return RouteSpec{}, fmt.Errorf("%w: host %q: empty target", ErrBadRoute, host)
	}
	parts := strings.Split(value, ",")
	if len(parts) > MaxRouteTargets {
		return RouteSpec{}, fmt.Errorf("%w: host %q: %d targets, at most %d", ErrBadRoute, host, len(parts), MaxRouteTargets)
	}
	var apps []string
	for _, p := range parts {
		t, app, err := parseTarget(strings.TrimSpace(p))
		switch {
		case err != nil:
			return RouteSpec{}, fmt.Errorf("%w: host %q: %v", ErrBadRoute, host, err)
		case app != "":
			apps = append(apps, app)
		default:
			spec.Targets = append(spec.Targets, t)
		}
	}
	switch {
	case len(apps) == 1 && len(parts) == 1:
		spec.App = apps[0]
	case len(apps) > 0:
		return RouteSpec{}, fmt.Errorf("%w: host %q: app %q in a list: a list balances between addresses; an app is named alone", ErrBadRoute, host, apps[0])
	}
	return spec, nil
}

// parseTarget parses one element of a route's value: an address, or an app
// name (app != "").
func parseTarget(s string) (t proxy.Target, app string, err error) {
	const want = "want an app name, unix:/path/to.sock or host:port"
	switch {
	case s == "":
		return t, "", fmt.Errorf("empty target in the list (%s)", want)
	case strings.HasPrefix(s, "unix:"):
		path := strings.TrimPrefix(s, "unix:")
		switch {
		case !filepath.IsAbs(path):
			return t, "", fmt.Errorf("%q: a socket path must be absolute", s)
		case len(path) > sockets.MaxPathLen:
			return t, "", fmt.Errorf("%q: socket path is %d bytes, more than the %d a unix socket allows", s, len(path), sockets.MaxPathLen)
		}
		return proxy.Target{Network: "unix", Addr: filepath.Clean(path)}, "", nil
	case strings.Contains(s, "://"):
		return t, "", fmt.Errorf("%q: a URL; write host:port, without a scheme", s)
	case strings.Contains(s, ":"):
		h, port, err := net.SplitHostPort(s)
		if err != nil {
			return t, "", fmt.Errorf("%q: %s", s, want)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return t, "", fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
		}
		if h == "" {
			return t, "", fmt.Errorf("%q: no host before the port", s)
		}
		if net.ParseIP(h) == nil {
			if problem := hostProblem(h); problem != "" || strings.Contains(h, "*") {
				return t, "", fmt.Errorf("%q: host %q is not a host name or IP address", s, h)
			}
		}
		return proxy.Target{Network: "tcp", Addr: net.JoinHostPort(h, port)}, "", nil
	case appNameRE.MatchString(s):
		return t, s, nil
	}
	return t, "", fmt.Errorf("%q: %s", s, want)
}

// normalizeRouteHost is the form the proxy stores host patterns in: lower
// case, no surrounding space, no trailing dot.
func normalizeRouteHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}

// redisURLProblem says what is wrong with a [routes] redis URL, or "".
func redisURLProblem(u string) string {
	if u == "" {
		return ""
	}
	if _, err := redis.ParseURL(u); err != nil {
		return strings.TrimPrefix(err.Error(), "redis: ") + ` (want e.g. "redis://127.0.0.1:6379/0")`
	}
	return ""
}

// RedactURL hides the password of a Redis URL, for logs and status.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}
