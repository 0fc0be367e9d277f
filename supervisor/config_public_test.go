package supervisor

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPublicConfig(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"cert.pem", "key.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	src := `[deployer]
metrics = "127.0.0.1:9100"
access_log = "log/access.json"
tls_listen = "127.0.0.1:8443"
tls_cert = "cert.pem"
tls_key = "key.pem"
trusted_proxies = ["10.0.0.0/8", "192.168.1.7", "::1"]
max_body = "10MiB"
read_header_timeout = "5s"
idle_timeout = "1m"
max_header_bytes = 32768
control_users = ["0", "root"]
control_groups = ["0"]

[apps.web]
command = ["./web"]
version = "v1"

[apps.upload]
command = ["./upload"]
version = "v1"
path = "/upload"
max_body = "1GB"
`
	path := filepath.Join(dir, "deploy.toml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := PublicConfig{
		Metrics:   "127.0.0.1:9100",
		AccessLog: filepath.Join(dir, "log/access.json"),
		TLSListen: "127.0.0.1:8443",
		TLSCert:   filepath.Join(dir, "cert.pem"),
		TLSKey:    filepath.Join(dir, "key.pem"),
		TrustedProxies: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("192.168.1.7/32"),
			netip.MustParsePrefix("::1/128"),
		},
		MaxBody:           10 << 20,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    32768,
		ControlUIDs:       []uint32{0, 0},
		ControlGIDs:       []uint32{0},
	}
	if !reflect.DeepEqual(cfg.Deployer.Public, want) {
		t.Errorf("public:\n got %+v\nwant %+v", cfg.Deployer.Public, want)
	}
	if got := cfg.Apps["web"].MaxBody; got != 10<<20 {
		t.Errorf("web max_body = %d, want the [deployer] default %d", got, 10<<20)
	}
	if got := cfg.Apps["upload"].MaxBody; got != 1e9 {
		t.Errorf("upload max_body = %d, want 1e9", got)
	}
}

func TestPublicConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, deployer, want string
		line                 int
	}{
		{"metrics", `metrics = "9100"`, `deployer.metrics "9100": want host:port`, 2},
		{"tls without cert", `tls_listen = ":443"`, "tls_listen needs tls_cert and tls_key", 2},
		{"cert without listen", `tls_cert = "c.pem"`, "tls_cert is set but tls_listen is not", 2},
		{"missing cert", "tls_listen = \":443\"\ntls_cert = \"nope.pem\"\ntls_key = \"nope.pem\"", "deployer.tls_cert: stat", 3},
		{"cidr", `trusted_proxies = ["10.0.0.0/33"]`, `"10.0.0.0/33" is not an address or CIDR`, 2},
		{"size unit", `max_body = "10 parsecs"`, `deployer.max_body = "10 parsecs" is not a size`, 2},
		{"size type", `max_body = true`, `must be a size such as "10MiB"`, 2},
		{"size negative", `max_body = -1`, `= -1 must not be negative`, 2},
		{"header bytes", `max_header_bytes = 10`, "max_header_bytes must be between 1KiB and 16MiB", 2},
		{"timeout", `read_header_timeout = 10`, `a duration is a string with a unit`, 2},
		{"user", `control_users = ["no-such-user-here"]`, `control_users: "no-such-user-here"`, 2},
		{"group", `control_groups = ["no-such-group-here"]`, `control_groups: "no-such-group-here"`, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "[deployer]\n" + tc.deployer + "\n\n[apps.web]\ncommand = [\"./web\"]\nversion = \"v1\"\n"
			_, err := LoadConfig(writeConfig(t, src))
			ces := configErrors(t, err)
			if len(ces) < 1 || !strings.Contains(ces[0].Msg, tc.want) || ces[0].Line != tc.line {
				t.Fatalf("got %v, want a first error at line %d containing %q", err, tc.line, tc.want)
			}
		})
	}
}
