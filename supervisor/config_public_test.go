package supervisor

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/internal/testcert"
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
		{"port out of range", `metrics = "127.0.0.1:99999"`, `deployer.metrics "127.0.0.1:99999": want host:port`, 2},
		{"metrics on listen's port", "listen = \"127.0.0.1:18941\"\nmetrics = \"127.0.0.1:18941\"",
			`deployer.metrics "127.0.0.1:18941": the same port as deployer.listen "127.0.0.1:18941"`, 3},
		{"metrics on every address, listen's port", "listen = \"127.0.0.1:18941\"\nmetrics = \":18941\"",
			`deployer.metrics ":18941": the same port as deployer.listen`, 3},
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

// CheckConfig (deployer check) loads tls_cert and tls_key as a pair and
// reports a bad one at tls_cert's line; LoadConfig (start, live reload)
// only checks that they exist.
func TestCheckConfigLoadsKeyPair(t *testing.T) {
	ca := testcert.NewCA(t)
	c1, k1 := ca.Leaf(t, 1)
	_, k2 := ca.Leaf(t, 2)
	for _, tc := range []struct {
		name      string
		cert, key []byte
		want      []string // in the error; none: valid
	}{
		{"pair", c1, k1, nil},
		{"key of another certificate", c1, k2, []string{"do not load as a key pair", "private key does not match public key", "cert.pem", "key.pem"}},
		{"not PEM", []byte("x"), []byte("x"), []string{"do not load as a key pair", "certificate input"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
			writeFile(t, certFile, tc.cert)
			writeFile(t, keyFile, tc.key)
			path := writeConfig(t, fmt.Sprintf("[deployer]\ntls_listen = \"127.0.0.1:8443\"\ntls_cert = %q\ntls_key = %q\n\n[apps.web]\ncommand = [\"./web\"]\nversion = \"v1\"\n", certFile, keyFile))
			if _, err := LoadConfig(path); err != nil {
				t.Fatalf("LoadConfig: %v (it only checks that the files exist)", err)
			}
			cfg, err := CheckConfig(path)
			if tc.want == nil {
				if err != nil || cfg.Deployer.Public.TLSCert != certFile {
					t.Fatalf("CheckConfig: %v, tls_cert %q", err, cfg.Deployer.Public.TLSCert)
				}
				return
			}
			ces := configErrors(t, err)
			if len(ces) != 1 || ces[0].Line != 3 {
				t.Fatalf("got %v, want one error at line 3 (tls_cert)", err)
			}
			for _, s := range tc.want {
				if !strings.Contains(ces[0].Msg, s) {
					t.Errorf("error %q does not say %q", ces[0].Msg, s)
				}
			}
			if strings.Contains(ces[0].Msg, ErrTLSCert.Error()) {
				t.Errorf("error %q repeats the package's sentinel text", ces[0].Msg)
			}
		})
	}
}

// CheckConfig (deployer check) refuses a pid_file in a directory that does
// not exist, at its line: the daemon would fail once ready, writing it.
// LoadConfig reads no file.
func TestCheckConfigPIDFileDir(t *testing.T) {
	path := writeConfig(t, "[deployer]\npid_file = \"no/such/dir/deployer.pid\"\n\n[apps.web]\ncommand = [\"./web\"]\nversion = \"v1\"\n")
	_, err := CheckConfig(path)
	ces := configErrors(t, err)
	if len(ces) != 1 || ces[0].Line != 2 || !strings.Contains(ces[0].Msg, `deployer.pid_file "no/such/dir/deployer.pid"`) {
		t.Fatalf("check: %v, want one error at line 2 naming pid_file", err)
	}
	if _, err := LoadConfig(path); err != nil {
		t.Errorf("LoadConfig: %v, want no error (it reads no file)", err)
	}
}
