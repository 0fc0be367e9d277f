package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

var testRoutes = []Route{
	{Host: "example.com", Path: "/", App: "site"},
	{Host: "example.com", Path: "/api", App: "api", StripPath: true},
	{Host: "example.com", Path: "/api/v2/", App: "api2"},
	{Host: "*.example.com", App: "wild"},
	{Host: "*.api.example.com", App: "wildapi"},
	{Host: "Upper.Example.ORG.", App: "upper"},
	{Host: "*", Path: "/", App: "default"},
	{Host: "*", Path: "/static", App: "static", StripPath: true},
}

func TestRouteLookup(t *testing.T) {
	table, err := compileRoutes(testRoutes)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, path string
		app        string
		stripped   string // the path the app gets
	}{
		{"example.com", "/", "site", "/"},
		{"example.com", "", "site", ""},
		{"example.com:8080", "/api", "api", "/"},
		{"EXAMPLE.com", "/api/", "api", "/"},
		{"example.com", "/api/x/y", "api", "/x/y"},
		{"example.com", "/apix", "site", "/apix"},
		{"example.com", "/api/v2", "api2", "/api/v2"},
		{"example.com", "/api/v2/users", "api2", "/api/v2/users"},
		{"example.com", "/api/v20", "api", "/v20"},
		{"example.com.", "/", "site", "/"},
		{"a.example.com", "/", "wild", "/"},
		{"a.b.example.com:443", "/x", "wild", "/x"},
		{"api.example.com", "/", "wild", "/"},
		{"x.api.example.com", "/", "wildapi", "/"},
		{"x.y.API.example.com", "/", "wildapi", "/"},
		{"upper.example.org", "/", "upper", "/"},
		{"other.org", "/", "default", "/"},
		{"other.org", "/static", "static", "/"},
		{"other.org", "/static/app.js", "static", "/app.js"},
		{"other.org", "/staticx", "default", "/staticx"},
		{"notexample.com", "/", "default", "/"},
		{".example.com", "/", "default", "/"},
		{"[::1]:8080", "/", "default", "/"},
		{"127.0.0.1:80", "/", "default", "/"},
		{"", "/", "default", "/"},
	}
	for _, tt := range tests {
		t.Run(tt.host+tt.path, func(t *testing.T) {
			rt := table.lookup(normalizeHost(tt.host), tt.path)
			if rt == nil {
				t.Fatalf("lookup(%q, %q) = nil, want app %q", tt.host, tt.path, tt.app)
			}
			if rt.app != tt.app {
				t.Errorf("lookup(%q, %q) = %q, want %q", tt.host, tt.path, rt.app, tt.app)
			}
			got := tt.path
			if rt.strip {
				got = stripPrefix(tt.path, rt.prefix)
			}
			if got != tt.stripped {
				t.Errorf("path for app = %q, want %q", got, tt.stripped)
			}
		})
	}
}

// An exact host with no matching path does not fall through to "*": the host
// is chosen first, then the path (as nginx picks a server, then a location).
func TestRouteLookupNoMatch(t *testing.T) {
	table, err := compileRoutes([]Route{
		{Host: "admin.example.com", Path: "/admin", App: "admin"},
		{Host: "*.example.com", Path: "/wild", App: "wild"},
		{Host: "*", Path: "/", App: "default"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ host, path string }{
		{"admin.example.com", "/"},
		{"admin.example.com", "/administrator"},
		{"a.example.com", "/"},
	} {
		if rt := table.lookup(normalizeHost(tt.host), tt.path); rt != nil {
			t.Errorf("lookup(%q, %q) = %q, want no route", tt.host, tt.path, rt.app)
		}
	}
	empty, _ := compileRoutes(nil)
	if rt := empty.lookup("example.com", "/"); rt != nil {
		t.Errorf("empty table: lookup = %q, want nil", rt.app)
	}
}

func TestCompileRoutesErrors(t *testing.T) {
	tests := []struct {
		name   string
		routes []Route
		want   error
	}{
		{"duplicate", []Route{{Host: "a.com", Path: "/x", App: "a"}, {Host: "a.com", Path: "/x", App: "b"}}, ErrDuplicateRoute},
		{"duplicate after normalizing", []Route{{Host: "A.com", Path: "/x/", App: "a"}, {Host: "a.com.", Path: "/x", App: "b"}}, ErrDuplicateRoute},
		{"duplicate root", []Route{{Host: "*", App: "a"}, {Host: "*", Path: "/", App: "b"}}, ErrDuplicateRoute},
		{"empty host", []Route{{Host: "", App: "a"}}, ErrInvalidRoute},
		{"only a dot", []Route{{Host: ".", App: "a"}}, ErrInvalidRoute},
		{"star inside", []Route{{Host: "a*.com", App: "a"}}, ErrInvalidRoute},
		{"star without dot", []Route{{Host: "*example.com", App: "a"}}, ErrInvalidRoute},
		{"bare wildcard", []Route{{Host: "*.", App: "a"}}, ErrInvalidRoute},
		{"two stars", []Route{{Host: "*.*.com", App: "a"}}, ErrInvalidRoute},
		{"port", []Route{{Host: "example.com:8080", App: "a"}}, ErrInvalidRoute},
		{"empty label", []Route{{Host: "a..com", App: "a"}}, ErrInvalidRoute},
		{"relative path", []Route{{Host: "*", Path: "api", App: "a"}}, ErrInvalidRoute},
		{"query in path", []Route{{Host: "*", Path: "/a?b", App: "a"}}, ErrInvalidRoute},
		{"no app", []Route{{Host: "*"}}, ErrInvalidRoute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compileRoutes(tt.routes)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "proxy: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestSetRoutesKeepsTableOnError(t *testing.T) {
	p := New(Options{Logger: testLogger(t)})
	if err := p.SetRoutes([]Route{{Host: "*", App: "a"}}); err != nil {
		t.Fatal(err)
	}
	err := p.SetRoutes([]Route{{Host: "*", App: "b"}, {Host: "*", App: "c"}})
	if !errors.Is(err, ErrDuplicateRoute) {
		t.Fatalf("got %v, want ErrDuplicateRoute", err)
	}
	if rt := p.routes.Load().lookup("x", "/"); rt == nil || rt.app != "a" {
		t.Fatalf("after a failed SetRoutes the table changed: %+v", rt)
	}
}

func TestNormalizeHost(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"example.com", "example.com"},
		{"Example.COM:8080", "example.com"},
		{"example.com.", "example.com"},
		{"example.com.:80", "example.com"},
		{"[::1]:8080", "[::1]"},
		{"[::1]", "[::1]"},
		{"", ""},
	} {
		if got := normalizeHost(tt.in); got != tt.want {
			t.Errorf("normalizeHost(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestStripURLPath(t *testing.T) {
	for _, tt := range []struct {
		path, raw, prefix string
		wantPath, wantRaw string
	}{
		{"/api/x", "", "/api", "/x", ""},
		{"/api", "", "/api", "/", ""},
		{"/api/", "", "/api", "/", ""},
		{"/x", "", "/", "/x", ""},
		{"/api/a b", "/api/a%20b", "/api", "/a b", "/a%20b"},
		{"/api/a/b", "/api/a%2Fb", "/api", "/a/b", "/a%2Fb"},
		{"/a b/x", "/a%20b/x", "/a b", "/x", ""},
	} {
		u := &url.URL{Path: tt.path, RawPath: tt.raw}
		stripURLPath(u, tt.prefix)
		if u.Path != tt.wantPath || u.RawPath != tt.wantRaw {
			t.Errorf("strip %q from (%q, %q) = (%q, %q), want (%q, %q)",
				tt.prefix, tt.path, tt.raw, u.Path, u.RawPath, tt.wantPath, tt.wantRaw)
		}
	}
}

// The proxy end to end: a stripped prefix reaches the app without it, the
// escaped form preserved; no route is a 404 naming the host.
func TestServeHTTPRouting(t *testing.T) {
	f := newFixture(t, AppOptions{})
	f.p.SetApp("api", AppOptions{})
	if err := f.p.SetRoutes([]Route{
		{Host: "*", App: "web"},
		{Host: "*", Path: "/api", App: "api", StripPath: true},
		{Host: "only.example", Path: "/x", App: "web"},
		{Host: "*", Path: "/ghost", App: "ghost"},
	}); err != nil {
		t.Fatal(err)
	}
	echoPath := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.URL.EscapedPath(), r.URL.RawQuery)
	})
	f.p.Serve("web", "v1", []Target{startBackend(t, text("web"))})
	f.p.Serve("api", "v1", []Target{startBackend(t, echoPath)})

	tests := []struct {
		host, path string
		status     int
		body       string
	}{
		{"", "/", 200, "web"},
		{"", "/apix", 200, "web"},
		{"", "/api", 200, "/ "},
		{"", "/api/users/a%2Fb?q=1", 200, "/users/a%2Fb q=1"},
		{"only.example", "/x/y", 200, "web"},
		{"only.example:8080", "/y", 404, `proxy: no route for host "only.example"` + "\n"},
		{"", "/ghost", 503, "proxy: unknown app ghost\n"},
	}
	for _, tt := range tests {
		req := mustRequest(t, http.MethodGet, f.url+tt.path, nil)
		if tt.host != "" {
			req.Host = tt.host
		}
		status, body := f.do(t, req)
		if status != tt.status || body != tt.body {
			t.Errorf("GET %s%s = %d %q, want %d %q", tt.host, tt.path, status, body, tt.status, tt.body)
		}
	}
}

func BenchmarkRouteLookup(b *testing.B) {
	var routes []Route
	for i := range 50 {
		routes = append(routes,
			Route{Host: fmt.Sprintf("app%d.example.com", i), Path: "/", App: "a"},
			Route{Host: fmt.Sprintf("app%d.example.com", i), Path: fmt.Sprintf("/api/v%d", i), App: "b"},
		)
	}
	routes = append(routes, Route{Host: "*.example.com", App: "wild"}, Route{Host: "*", App: "any"})
	table, err := compileRoutes(routes)
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct{ name, host, path string }{
		{"exact", "app42.example.com:8080", "/api/v42/users/7"},
		{"wildcard", "www.example.com", "/index.html"},
		{"any", "other.org", "/"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if table.lookup(normalizeHost(c.host), c.path) == nil {
					b.Fatal("no route")
				}
			}
		})
	}
}
