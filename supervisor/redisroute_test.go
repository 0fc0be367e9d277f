package supervisor

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/deployer/deployer/proxy"
	"github.com/deployer/deployer/sockets"
)

func TestParseRoute(t *testing.T) {
	unix := func(p string) proxy.Target { return proxy.Target{Network: "unix", Addr: p} }
	tcp := func(a string) proxy.Target { return proxy.Target{Network: "tcp", Addr: a} }
	tests := []struct {
		host, value string
		want        RouteSpec
		wantValue   string
		wantErr     string
	}{
		{"www.example.com", "web", RouteSpec{Host: "www.example.com", App: "web"}, "web", ""},
		{"WWW.Example.COM.", " web ", RouteSpec{Host: "www.example.com", App: "web"}, "web", ""},
		{"*.example.com", "10.0.0.5:8080", RouteSpec{Host: "*.example.com", Targets: []proxy.Target{tcp("10.0.0.5:8080")}}, "10.0.0.5:8080", ""},
		{"a.test", "unix:/srv/run/web/current.sock", RouteSpec{Host: "a.test", Targets: []proxy.Target{unix("/srv/run/web/current.sock")}}, "unix:/srv/run/web/current.sock", ""},
		{"a.test", "app1.internal:80 , [::1]:9000,unix:/x//y.sock", RouteSpec{Host: "a.test", Targets: []proxy.Target{
			tcp("app1.internal:80"), tcp("[::1]:9000"), unix("/x/y.sock")}}, "app1.internal:80,[::1]:9000,unix:/x/y.sock", ""},
		{"*", "web", RouteSpec{}, "", `host "*": a Redis route names a host`},
		{"", "web", RouteSpec{}, "", "must not be empty"},
		{"a b.test", "web", RouteSpec{}, "", "not a host name"},
		{"a.test:80", "web", RouteSpec{}, "", "no port allowed"},
		{"a.*.test", "web", RouteSpec{}, "", "the only wildcards"},
		{"a.test", "", RouteSpec{}, "", "empty target"},
		{"a.test", "1.2.3.4:80,", RouteSpec{}, "", "empty target in the list"},
		{"a.test", "web,api", RouteSpec{}, "", `app "web" in a list`},
		{"a.test", "web,1.2.3.4:80", RouteSpec{}, "", `app "web" in a list`},
		{"a.test", "unix:run/web.sock", RouteSpec{}, "", "must be absolute"},
		{"a.test", "unix:/" + strings.Repeat("x", 120), RouteSpec{}, "", "more than the 107"},
		{"a.test", "1.2.3.4:0", RouteSpec{}, "", "not a number from 1 to 65535"},
		{"a.test", "1.2.3.4:http", RouteSpec{}, "", "not a number from 1 to 65535"},
		{"a.test", ":8080", RouteSpec{}, "", "no host before the port"},
		{"a.test", "http://1.2.3.4:80", RouteSpec{}, "", "a URL"},
		{"a.test", "bad*host:80", RouteSpec{}, "", "not a host name or IP address"},
		{"a.test", "Web", RouteSpec{}, "", "want an app name"},
		{"a.test", strings.Repeat("1.2.3.4:80,", 64) + "1.2.3.4:80", RouteSpec{}, "", "65 targets, at most 64"},
	}
	for _, tt := range tests {
		got, err := ParseRoute(tt.host, tt.value)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrBadRoute) {
				t.Errorf("ParseRoute(%q, %q): error %v, want ErrBadRoute with %q", tt.host, tt.value, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRoute(%q, %q): %v", tt.host, tt.value, err)
			continue
		}
		if got.Host != tt.want.Host || got.App != tt.want.App || !slices.Equal(got.Targets, tt.want.Targets) {
			t.Errorf("ParseRoute(%q, %q) = %+v, want %+v", tt.host, tt.value, got, tt.want)
		}
		if v := got.Value(); v != tt.wantValue {
			t.Errorf("ParseRoute(%q, %q).Value() = %q, want %q", tt.host, tt.value, v, tt.wantValue)
		}
	}
}

func TestIsListenAddr(t *testing.T) {
	tests := []struct {
		listen, target string
		want           bool
	}{
		{"127.0.0.1:8080", "127.0.0.1:8080", true},
		{"127.0.0.1:8080", "localhost:8080", true},
		{"localhost:8080", "127.0.0.1:8080", true},
		{"0.0.0.0:8080", "127.0.0.1:8080", true},
		{":8080", "localhost:8080", true},
		{"127.0.0.1:8080", "127.0.0.1:8081", false},
		{"127.0.0.1:8080", "10.0.0.5:8080", false},
		{"10.0.0.5:8080", "10.0.0.6:8080", false},
		{"", "127.0.0.1:8080", false},
		// Spellings of the same address.
		{"127.0.0.1:8080", "LOCALHOST:8080", true},
		{"127.0.0.1:8080", "[::ffff:127.0.0.1]:8080", true},
		{"0.0.0.0:8080", "LocalHost.:8080", true},
		{"[::1]:8080", "[0:0:0:0:0:0:0:1]:8080", true},
	}
	for _, tt := range tests {
		if got := isListenAddr(tt.listen, proxy.Target{Network: "tcp", Addr: tt.target}); got != tt.want {
			t.Errorf("isListenAddr(%q, %q) = %v, want %v", tt.listen, tt.target, got, tt.want)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://127.0.0.1:6379/0":            "redis://127.0.0.1:6379/0",
		"redis://:s3cret@10.0.0.1:6379/2":     "redis://:xxxxx@10.0.0.1:6379/2",
		"rediss://user:s3cret@cache.internal": "rediss://user:xxxxx@cache.internal",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// A unix target in state_dir (the control socket, an app's sockets), or
// leading there through a symbolic or hard link, is refused.
func TestInDir(t *testing.T) {
	state, elsewhere := socketDir(t), socketDir(t)
	ctl := sockets.Layout{StateDir: state}.ControlSocket()
	l, err := net.Listen("unix", ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	symlink, hardlink := filepath.Join(elsewhere, "sym.sock"), filepath.Join(elsewhere, "hard.sock")
	if err := os.Symlink(ctl, symlink); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(ctl, hardlink); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		ctl:                                 true,
		filepath.Join(state, "web/v1.sock"): true,
		state + "/../" + filepath.Base(state) + "/deployer.sock": true,
		symlink:                              true,
		hardlink:                             true,
		filepath.Join(elsewhere, "app.sock"): false,
		state + "-other/app.sock":            false,
	} {
		if got := inDir(state, path); got != want {
			t.Errorf("inDir(state_dir, %s) = %v, want %v", path, got, want)
		}
	}
}
