package supervisor

import (
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The [deployer] keys of the public side: limits on what clients send,
// whose forwarding headers to trust, TLS, metrics and the access log, and
// who may use the control socket.

// Defaults of the public listener's limits.
const (
	// DefaultReadHeaderTimeout cuts a client that has not sent a whole
	// request head this long after its first byte (slowloris).
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout closes a keep-alive connection with no new
	// request for this long.
	DefaultIdleTimeout = 120 * time.Second
	// DefaultMaxHeaderBytes bounds a request line and its headers; a
	// bigger head gets 431.
	DefaultMaxHeaderBytes = 64 << 10
)

// PublicConfig is the public side of [deployer].
type PublicConfig struct {
	// Metrics is the host:port of the Prometheus endpoint (/metrics); ""
	// for none.
	Metrics string
	// AccessLog is where one JSON line per request goes: "stdout",
	// "stderr", an absolute file path, or "" for no access log.
	AccessLog string
	// TLSListen is the host:port of the HTTPS listener, "" for none; then
	// TLSCert and TLSKey (absolute) are the PEM files, read again when they
	// change.
	TLSListen, TLSCert, TLSKey string
	// TrustedProxies are the client addresses whose X-Forwarded-* headers
	// are passed on; everyone else's are replaced.
	TrustedProxies []netip.Prefix
	// MaxBody is the default request body limit of every app, in bytes
	// (413 beyond it); 0 for none.
	MaxBody           int64
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	// ControlUIDs and ControlGIDs may use the control socket besides root
	// and the daemon's own user: a caller whose uid is listed, or whose
	// primary group is listed.
	ControlUIDs []uint32
	ControlGIDs []uint32
}

// parseSize reads "10MiB", "512KB", "1GB", "100" (bytes) or an integer.
// KB, MB, GB are powers of 1000; KiB, MiB, GiB powers of 1024.
func parseSize(v any) (int64, error) {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return 0, fmt.Errorf("must not be negative")
		}
		return v, nil
	case string:
		s := strings.TrimSpace(v)
		i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
		num, unit := s, ""
		if i >= 0 {
			num, unit = s[:i], strings.TrimSpace(s[i:])
		}
		mult := map[string]float64{
			"": 1, "B": 1,
			"KB": 1e3, "MB": 1e6, "GB": 1e9,
			"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
		}[unit]
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || mult == 0 || f < 0 {
			return 0, fmt.Errorf(`is not a size: write e.g. "10MiB", "512KB" or a number of bytes`)
		}
		if f*mult > 1<<62 {
			return 0, fmt.Errorf("is too large")
		}
		return int64(f * mult), nil
	}
	return 0, fmt.Errorf("is not a size")
}

// size parses a size key, or returns def when the key is absent. Wrong
// TOML types were reported by checkKeys.
func (l *loader) size(key toml.Key, s anyValue, def int64) int64 {
	if !l.defined(key) || s.val == nil {
		return def
	}
	if n, ok := s.val.(int64); ok && n < 0 {
		return def // reported by checkKeys
	}
	if _, ok := s.val.(string); !ok {
		if _, ok := s.val.(int64); !ok {
			return def // reported by checkKeys
		}
	}
	n, err := parseSize(s.val)
	if err != nil {
		l.addf(key, "%s = %v %v", key.String(), tomlValue(s.val), err)
		return def
	}
	return n
}

func tomlValue(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

// public validates the public-side keys of [deployer].
func (l *loader) public(raw rawDeployer, dir string) PublicConfig {
	p := PublicConfig{
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		MaxHeaderBytes:    DefaultMaxHeaderBytes,
	}
	key := func(k string) toml.Key { return toml.Key{"deployer", k} }
	hostPort := func(k, v string) string {
		if v == "" {
			return ""
		}
		if !validHostPort(v) {
			l.addf(key(k), `deployer.%s %q: want host:port such as "127.0.0.1:9100" (a port from 0 to 65535), or "" for none`, k, v)
		}
		return v
	}
	abs := func(path string) string {
		if path != "" && !filepath.IsAbs(path) {
			return filepath.Join(dir, path)
		}
		return path
	}
	p.Metrics = hostPort("metrics", raw.Metrics)
	switch raw.AccessLog {
	case "", "stdout", "stderr":
		p.AccessLog = raw.AccessLog
	default:
		p.AccessLog = abs(raw.AccessLog)
	}

	p.TLSListen = hostPort("tls_listen", raw.TLSListen)
	p.TLSCert, p.TLSKey = abs(raw.TLSCert), abs(raw.TLSKey)
	switch {
	case p.TLSListen != "" && (p.TLSCert == "" || p.TLSKey == ""):
		l.addf(key("tls_listen"), "deployer.tls_listen needs tls_cert and tls_key (PEM files)")
	case p.TLSListen == "" && (p.TLSCert != "" || p.TLSKey != ""):
		k := "tls_cert"
		if p.TLSCert == "" {
			k = "tls_key"
		}
		l.addf(key(k), "deployer.%s is set but tls_listen is not: set tls_listen (e.g. \"0.0.0.0:443\") to serve HTTPS", k)
	}
	present := 0
	for _, k := range []string{"tls_cert", "tls_key"} {
		path := p.TLSCert
		if k == "tls_key" {
			path = p.TLSKey
		}
		if path == "" || p.TLSListen == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			l.addf(key(k), "deployer.%s: %v", k, err)
			continue
		}
		present++
	}
	if l.readFiles && present == 2 {
		if _, err := loadKeyPair(p.TLSCert, p.TLSKey); err != nil {
			l.addf(key("tls_cert"), "deployer.tls_cert and tls_key do not load as a key pair: %s",
				strings.TrimPrefix(err.Error(), ErrTLSCert.Error()+": "))
		}
	}

	for _, s := range raw.TrustedProxies {
		pfx, err := parsePrefix(s)
		if err != nil {
			l.addf(key("trusted_proxies"), "deployer.trusted_proxies: %q is not an address or CIDR such as \"10.0.0.0/8\"", s)
			continue
		}
		p.TrustedProxies = append(p.TrustedProxies, pfx)
	}

	p.MaxBody = l.size(key("max_body"), raw.MaxBody, 0)
	p.ReadHeaderTimeout = l.duration(key("read_header_timeout"), raw.ReadHeaderTimeout, p.ReadHeaderTimeout)
	p.IdleTimeout = l.duration(key("idle_timeout"), raw.IdleTimeout, p.IdleTimeout)
	if n := l.size(key("max_header_bytes"), raw.MaxHeaderBytes, int64(p.MaxHeaderBytes)); n < 1024 || n > 16<<20 {
		l.addf(key("max_header_bytes"), "deployer.max_header_bytes must be between 1KiB and 16MiB, not %d bytes", n)
	} else {
		p.MaxHeaderBytes = int(n)
	}

	for _, u := range raw.ControlUsers {
		id, err := lookupID(u, func(name string) (string, error) {
			usr, err := user.Lookup(name)
			if err != nil {
				return "", err
			}
			return usr.Uid, nil
		})
		if err != nil {
			l.addf(key("control_users"), "deployer.control_users: %v", err)
			continue
		}
		p.ControlUIDs = append(p.ControlUIDs, id)
	}
	for _, g := range raw.ControlGroups {
		id, err := lookupID(g, func(name string) (string, error) {
			grp, err := user.LookupGroup(name)
			if err != nil {
				return "", err
			}
			return grp.Gid, nil
		})
		if err != nil {
			l.addf(key("control_groups"), "deployer.control_groups: %v", err)
			continue
		}
		p.ControlGIDs = append(p.ControlGIDs, id)
	}
	return p
}

// parsePrefix reads a CIDR, or a single address as a /32 or /128.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		return pfx.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// lookupID resolves a user or group given by number or by name.
func lookupID(s string, byName func(string) (string, error)) (uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	id, err := byName(s)
	if err != nil {
		return 0, fmt.Errorf("%q: %v", s, err)
	}
	n, err := strconv.ParseUint(id, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q: id %q is not a number", s, id)
	}
	return uint32(n), nil
}
