package proxy

import (
	"cmp"
	"fmt"
	"path"
	"slices"
	"strings"
)

// Route sends requests whose Host matches Host and whose path has the prefix
// Path to App.
//
// Host is an exact name ("example.com"), a wildcard ("*.example.com": any name
// ending in ".example.com", such as "a.example.com" or "a.b.example.com", but
// not "example.com" itself), or "*" for any host. Matching ignores case, the
// port and a trailing dot. The most specific host pattern wins: exact, then
// the wildcard with the longest suffix, then "*". The host is chosen first,
// then the path among that host's routes, as nginx chooses a server block
// then a location: a request for a host with an exact route never falls
// through to a "*" route when none of the exact host's paths match.
//
// Path is a prefix on a segment boundary: "/api" matches "/api", "/api/" and
// "/api/x", not "/apix". "" and "/" match every path. The longest matching
// prefix wins. Paths are cleaned ("/api/" is "/api").
//
// StripPath removes the prefix before the request goes to the app: "/api/x"
// reaches it as "/x" and "/api" as "/".
type Route struct {
	Host      string // exact, "*.example.com", or "*"
	Path      string // prefix on a segment boundary; "" or "/" = everything
	App       string
	StripPath bool
}

// route is one compiled Route.
type route struct {
	host   string // the normalized pattern, for messages
	prefix string // cleaned; "/" for everything
	app    string
	strip  bool
}

// hostRoutes are the routes of one host pattern, longest prefix first.
type hostRoutes []route

// routeTable is an immutable, compiled routing table. Lookups only read maps
// and slices, so ServeHTTP can use one without locks (Proxy.routes is an
// atomic.Pointer replaced as a whole by SetRoutes).
type routeTable struct {
	exact    map[string]hostRoutes
	wildcard map[string]hostRoutes // key: the suffix with its leading dot, ".example.com"
	any      hostRoutes
}

// compileRoutes validates routes and builds their table.
func compileRoutes(routes []Route) (*routeTable, error) {
	t := &routeTable{exact: map[string]hostRoutes{}, wildcard: map[string]hostRoutes{}}
	seen := make(map[[2]string]string, len(routes))
	for i, r := range routes {
		host, err := normalizePattern(r.Host)
		if err != nil {
			return nil, fmt.Errorf("%w %d (app %q): %w", ErrInvalidRoute, i, r.App, err)
		}
		prefix, err := normalizePrefix(r.Path)
		if err != nil {
			return nil, fmt.Errorf("%w %d (app %q): %w", ErrInvalidRoute, i, r.App, err)
		}
		if r.App == "" {
			return nil, fmt.Errorf("%w %d (host %q, path %q): no app", ErrInvalidRoute, i, r.Host, r.Path)
		}
		key := [2]string{host, prefix}
		if other, dup := seen[key]; dup {
			return nil, fmt.Errorf("%w: host %q path %q is routed to %q and to %q", ErrDuplicateRoute, host, prefix, other, r.App)
		}
		seen[key] = r.App

		rt := route{host: host, prefix: prefix, app: r.App, strip: r.StripPath}
		switch {
		case host == "*":
			t.any = append(t.any, rt)
		case strings.HasPrefix(host, "*."):
			t.wildcard[host[1:]] = append(t.wildcard[host[1:]], rt)
		default:
			t.exact[host] = append(t.exact[host], rt)
		}
	}
	byLength := func(a, b route) int { return cmp.Compare(len(b.prefix), len(a.prefix)) }
	for _, rs := range t.exact {
		slices.SortFunc(rs, byLength)
	}
	for _, rs := range t.wildcard {
		slices.SortFunc(rs, byLength)
	}
	slices.SortFunc(t.any, byLength)
	return t, nil
}

// normalizePattern lower-cases a host pattern, drops a trailing dot, and
// rejects what can never match a normalized request host.
func normalizePattern(p string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(p))
	if h == "*" {
		return h, nil
	}
	wildcard := strings.HasPrefix(h, "*.")
	name := strings.TrimSuffix(strings.TrimPrefix(h, "*."), ".")
	switch {
	case wildcard && name == "":
		return "", fmt.Errorf("host pattern %q: nothing after \"*.\"", p)
	case name == "":
		return "", fmt.Errorf("empty host pattern %q", p)
	case strings.Contains(name, "*"):
		return "", fmt.Errorf("host pattern %q: \"*\" only as \"*\" or a leading \"*.\"", p)
	case strings.ContainsAny(name, "/ \t"):
		return "", fmt.Errorf("host pattern %q: not a host name", p)
	case strings.HasPrefix(name, ".") || strings.Contains(name, ".."):
		return "", fmt.Errorf("host pattern %q: empty label", p)
	case hostWithoutPort(name) != name:
		return "", fmt.Errorf("host pattern %q: ports are ignored when matching; leave it out", p)
	}
	if wildcard {
		return "*." + name, nil
	}
	return name, nil
}

// normalizePrefix cleans a path prefix; "" means "/".
func normalizePrefix(p string) (string, error) {
	if p == "" {
		return "/", nil
	}
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("path %q: must start with \"/\"", p)
	}
	if strings.ContainsAny(p, "?#") {
		return "", fmt.Errorf("path %q: a prefix has no query or fragment", p)
	}
	return path.Clean(p), nil
}

// lookup returns the route for a normalized host (see normalizeHost) and a
// request path, or nil.
func (t *routeTable) lookup(host, urlPath string) *route {
	if urlPath == "" {
		urlPath = "/"
	}
	rs := t.hostRoutes(host)
	for i := range rs {
		if hasPathPrefix(urlPath, rs[i].prefix) {
			return &rs[i]
		}
	}
	return nil
}

// hostRoutes returns the routes of the most specific pattern matching host.
func (t *routeTable) hostRoutes(host string) hostRoutes {
	if rs, ok := t.exact[host]; ok {
		return rs
	}
	if len(t.wildcard) > 0 {
		// Suffixes from the longest: the first match is the most specific
		// wildcard. Index 0 is skipped: a wildcard needs a non-empty label.
		for i := 1; i < len(host); i++ {
			if host[i] == '.' {
				if rs, ok := t.wildcard[host[i:]]; ok {
					return rs
				}
			}
		}
	}
	return t.any
}

// hasPathPrefix reports whether p starts with prefix on a segment boundary.
func hasPathPrefix(p, prefix string) bool {
	if prefix == "/" {
		return true
	}
	return strings.HasPrefix(p, prefix) && (len(p) == len(prefix) || p[len(prefix)] == '/')
}

// stripPrefix removes prefix from p (which hasPathPrefix matched), keeping a
// leading "/".
func stripPrefix(p, prefix string) string {
	if prefix == "/" {
		return p
	}
	if rest := p[len(prefix):]; rest != "" {
		return rest
	}
	return "/"
}

// normalizeHost turns a Host header into the form patterns are stored in:
// no port, lower case, no trailing dot. It does not allocate for a host that
// is already lower case.
func normalizeHost(h string) string {
	h = strings.TrimSuffix(hostWithoutPort(h), ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// hostWithoutPort drops ":port" from a host, IPv6 literals ("[::1]:80")
// included.
func hostWithoutPort(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i >= 0 {
			return h[:i+1]
		}
		return h
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		return h[:i]
	}
	return h
}

// ValidateRoutes reports whether SetRoutes would accept routes, without
// changing anything: for checking a config before applying it.
func ValidateRoutes(routes []Route) error {
	_, err := compileRoutes(routes)
	return err
}

// SetRoutes replaces the routing table with routes, atomically: a request
// sees either the old table or the new one. Routes are validated first; on
// an error (ErrInvalidRoute, ErrDuplicateRoute) the table is unchanged. A
// route may name an app not configured yet: its requests get 503 until
// SetApp or Serve.
func (p *Proxy) SetRoutes(routes []Route) error {
	t, err := compileRoutes(routes)
	if err != nil {
		return err
	}
	p.routes.Store(t)
	return nil
}
