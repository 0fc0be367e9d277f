package proxy

import (
	"errors"
	"net/url"
	"path"
	"slices"
	"strings"
	"testing"
)

// FuzzRouteLookup builds a route table from fuzzed host patterns and path
// prefixes, looks up a fuzzed request, and checks the result against
// refLookup, a brute-force matcher written from Route's doc comment:
//
//   - compileRoutes and ValidateRoutes agree; a set is accepted exactly when
//     every route is accepted alone and no two share a normalized host
//     pattern and prefix; the error wraps ErrInvalidRoute or
//     ErrDuplicateRoute; route order changes nothing;
//   - every compiled prefix is clean (no ".", ".." or empty segment), and an
//     exact ASCII host pattern is reached by a request for that very host;
//   - lookup returns what refLookup returns: the most specific matching host
//     pattern, then the longest prefix of the path on a segment boundary;
//   - stripPrefix consumes the prefix exactly once and leaves a path that
//     starts with "/"; stripURLPath keeps RawPath only as an encoding of
//     the stripped Path.
//
// Dot segments. The proxy routes on r.URL.Path: percent-decoded by
// net/url, so "%2e%2e" has become "..", and not cleaned, since http.Server
// leaves that to ServeMux, which the proxy does not use. The request target
// is therefore parsed the way net/http parses it, and routing is checked on
// the uncleaned, decoded path: "/api/../admin" goes to the "/api" route, as
// refLookup says, never to "/admin". What makes that safe to hand on: an
// app only ever gets a path that starts with its own prefix (or, stripped,
// with "/", so that resolving its dot segments stays inside the app), a
// prefix never holds a dot segment, decoding "%2e" changes no route, and a
// path without dot or empty segments routes as its cleaned form does.
func FuzzRouteLookup(f *testing.F) {
	f.Add("example.com", "/", "example.com", "/api", "*.example.com", "", "*", "/static", uint8(0b0000_1010), "a.example.com:8080", "/api/x")
	f.Add("example.com", "/api/", "*.example.com", "/api/v2", "*.api.example.com", "/", "*", "", uint8(0b0110_0001), "x.api.EXAMPLE.com.", "/api/v2/../v3")
	f.Add("Upper.Example.ORG.", "/a", "upper.example.org", "/a/", "*", "/a", "*.org", "/a/b", uint8(0b0000_1111), "UPPER.example.org", "/a/%2e%2e/b")
	f.Add("[::1]", "/", "*", "/x", "a..b", "/", "*.", "/", uint8(0b1001_0000), "[::1]:443", "/x/y?q=1")
	f.Add("h", "/p", "h", "/p/q", "h", "/p/q/r", "*", "/p", uint8(0b0000_0101), "h", "/p/q/r/../s")

	f.Fuzz(func(t *testing.T, h0, p0, h1, p1, h2, p2, h3, p3 string, flags uint8, reqHost, target string) {
		routes := []Route{
			{Host: h0, Path: p0, App: "a0", StripPath: flags&1 != 0},
			{Host: h1, Path: p1, App: "a1", StripPath: flags&2 != 0},
			{Host: h2, Path: p2, App: "a2", StripPath: flags&4 != 0},
			{Host: h3, Path: p3, App: "a3", StripPath: flags&8 != 0},
		}
		if flags&16 != 0 {
			routes[3].App = ""
		}
		// Routes derived from the request, so that lookups find something
		// more often than random strings would.
		if flags&32 != 0 {
			routes = append(routes, Route{Host: reqHost, Path: p0, App: "exact"})
		}
		if _, suffix, ok := strings.Cut(reqHost, "."); ok && flags&64 != 0 {
			routes = append(routes, Route{Host: "*." + suffix, Path: p1, App: "wild"})
		}

		table, err := compileRoutes(routes)
		if verr := ValidateRoutes(routes); (err == nil) != (verr == nil) {
			t.Fatalf("compileRoutes: %v; ValidateRoutes: %v", err, verr)
		}
		if err != nil && !errors.Is(err, ErrInvalidRoute) && !errors.Is(err, ErrDuplicateRoute) {
			t.Fatalf("compileRoutes: %v: want ErrInvalidRoute or ErrDuplicateRoute", err)
		}
		refs, refErr := refCompile(t, routes)
		if (err == nil) != (refErr == "") {
			t.Fatalf("compileRoutes: %v; reference: %s", err, refErr)
		}
		reversed := slices.Clone(routes)
		slices.Reverse(reversed)
		table2, err2 := compileRoutes(reversed)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("in order: %v; reversed: %v", err, err2)
		}
		if err != nil {
			return
		}
		for _, r := range refs {
			if p := r.prefix; p != "/" && (path.Clean(p) != p || strings.Contains(p, "/./") || strings.Contains(p, "/../")) {
				t.Errorf("compiled prefix %q is not clean", p)
			}
			// An exact pattern is matched by its own name as a Host header.
			if name := r.host; name != "*" && !strings.HasPrefix(name, "*.") && validHostHeader(r.route.Host) {
				got := table.lookup(normalizeHost(r.route.Host), r.prefix)
				if got == nil || got.app != r.route.App {
					t.Errorf("Host %q, path %q: got %v, want app %q", r.route.Host, r.prefix, got, r.route.App)
				}
			}
		}

		// A request as net/http would hand it over.
		urlPath := target
		u, uerr := url.ParseRequestURI(target)
		if uerr == nil {
			urlPath = u.Path
		}
		host := normalizeHost(reqHost)
		got := table.lookup(host, urlPath)
		if got2 := table2.lookup(host, urlPath); !sameRoute(got, got2) {
			t.Errorf("lookup(%q, %q): %v in order, %v reversed", host, urlPath, got, got2)
		}
		if !validHostHeader(reqHost) {
			return // net/http answers 400 before the proxy sees it
		}
		want := refLookup(refs, reqHost, urlPath)
		if (got == nil) != (want == nil) || got != nil && (got.app != want.route.App || got.prefix != want.prefix) {
			t.Fatalf("lookup(%q, %q) = %v, want %v", reqHost, urlPath, got, want)
		}
		if strings.Contains(strings.ToLower(target), "%2e") {
			dotted := strings.NewReplacer("%2e", ".", "%2E", ".").Replace(target)
			if v, err := url.ParseRequestURI(dotted); err == nil && uerr == nil {
				if other := table.lookup(host, v.Path); !sameRoute(got, other) {
					t.Errorf("%q routes to %v, %q to %v", target, got, dotted, other)
				}
			}
		}
		if isCleanPath(urlPath) {
			if clean := table.lookup(host, path.Clean(urlPath)); !sameRoute(got, clean) {
				t.Errorf("clean path %q routes to %v, path.Clean of it to %v", urlPath, got, clean)
			}
		}
		if got == nil {
			return
		}

		p := urlPath
		if p == "" {
			p = "/" // lookup's reading of an empty path
		}
		stripped := stripPrefix(p, got.prefix)
		switch {
		case !strings.HasPrefix(stripped, "/") && strings.HasPrefix(p, "/"):
			t.Errorf("stripPrefix(%q, %q) = %q: does not start with /", p, got.prefix, stripped)
		case got.prefix == "/" && stripped != p:
			t.Errorf("stripPrefix(%q, \"/\") = %q, want the path unchanged", p, stripped)
		case got.prefix != "/" && got.prefix+stripped != p && !(stripped == "/" && p == got.prefix):
			t.Errorf("stripPrefix(%q, %q) = %q: not the path minus the prefix once", p, got.prefix, stripped)
		}
		if uerr == nil && got.strip {
			before := *u
			stripURLPath(u, got.prefix)
			if u.Path != stripPrefix(before.Path, got.prefix) {
				t.Errorf("stripURLPath(%q): Path %q", target, u.Path)
			}
			if u.RawPath != "" {
				if dec, err := url.PathUnescape(u.RawPath); err != nil || dec != u.Path {
					t.Errorf("stripURLPath(%q): RawPath %q does not encode Path %q", target, u.RawPath, u.Path)
				}
			}
		}
	})
}

// refRoute is a Route the reference accepted, normalized.
type refRoute struct {
	route  Route
	host   string // "*", "*.suffix" or an exact name: lower case, no trailing dot
	prefix string
}

// refCompile normalizes routes as Route's doc comment describes, taking each
// route's validity from compileRoutes of that route alone, and reports a
// duplicate host pattern and prefix. It returns "" or why the set is bad.
func refCompile(t *testing.T, routes []Route) ([]refRoute, string) {
	t.Helper()
	var refs []refRoute
	for _, r := range routes {
		one, err := compileRoutes([]Route{r})
		if err != nil {
			return nil, err.Error()
		}
		rr := refRoute{route: r, host: strings.ToLower(strings.TrimSpace(r.Host)), prefix: "/"}
		if rr.host != "*" {
			rr.host = strings.TrimSuffix(rr.host, ".")
		}
		if r.Path != "" {
			rr.prefix = path.Clean(r.Path)
		}
		// The compiled table must hold the route under the same key.
		var stored hostRoutes
		switch {
		case rr.host == "*":
			stored = one.any
		case strings.HasPrefix(rr.host, "*."):
			stored = one.wildcard[rr.host[1:]]
		default:
			stored = one.exact[rr.host]
		}
		if len(stored) != 1 || stored[0].prefix != rr.prefix || stored[0].app != r.App || stored[0].strip != r.StripPath {
			t.Fatalf("compileRoutes(%+v): stored %+v, reference host %q prefix %q", r, stored, rr.host, rr.prefix)
		}
		for _, o := range refs {
			if o.host == rr.host && o.prefix == rr.prefix {
				return nil, "duplicate " + rr.host + " " + rr.prefix
			}
		}
		refs = append(refs, rr)
	}
	return refs, ""
}

// refLookup is the route for a Host header and a URL path by brute force:
// the host patterns matching the host, the most specific of them (exact,
// then the longest wildcard suffix, then "*"), then that pattern's longest
// prefix of the path on a segment boundary.
func refLookup(refs []refRoute, hostHeader, urlPath string) *refRoute {
	host := hostHeader
	if strings.HasPrefix(host, "[") && strings.Contains(host, "]") {
		host = host[:strings.Index(host, "]")+1]
	} else if i := strings.LastIndex(host, ":"); i >= 0 {
		host = host[:i]
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if urlPath == "" {
		urlPath = "/"
	}

	best, bestRank := "", -1 // the chosen pattern; rank: -1 none, 0 "*", n wildcard suffix length, maxInt exact
	for _, r := range refs {
		rank := -1
		switch {
		case r.host == "*":
			rank = 0
		case strings.HasPrefix(r.host, "*."):
			suffix := r.host[1:]
			if strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
				rank = len(suffix)
			}
		case r.host == host:
			rank = int(^uint(0) >> 1)
		}
		if rank > bestRank {
			best, bestRank = r.host, rank
		}
	}
	var match *refRoute
	for i, r := range refs {
		if r.host != best || bestRank < 0 {
			continue
		}
		if r.prefix == "/" || urlPath == r.prefix || strings.HasPrefix(urlPath, r.prefix+"/") {
			if match == nil || len(r.prefix) > len(match.prefix) {
				match = &refs[i]
			}
		}
	}
	return match
}

func sameRoute(a, b *route) bool {
	return a == nil && b == nil || a != nil && b != nil && a.app == b.app && a.prefix == b.prefix
}

// isCleanPath reports whether p has no ".", ".." or empty segment (a final
// "/" aside).
func isCleanPath(p string) bool {
	return strings.HasPrefix(p, "/") && (p == "/" || path.Clean(p) == strings.TrimSuffix(p, "/"))
}

// validHostHeader reports whether net/http accepts h as a Host header
// (golang.org/x/net/http/httpguts.ValidHostHeader, which it vendors): only
// these ASCII bytes, so the proxy never sees any other host.
func validHostHeader(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!$%&'()*+,-.:;=[]_~", c) >= 0) {
			return false
		}
	}
	return true
}
