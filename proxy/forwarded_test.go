package proxy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestClientIP(t *testing.T) {
	for _, tt := range []struct {
		remote, text, ip string
	}{
		{"192.0.2.1:80", "192.0.2.1", "192.0.2.1"},
		{"[2001:db8::1]:80", "2001:db8::1", "2001:db8::1"},
		{"[fe80::1%eth0]:80", "fe80::1", "fe80::1"},
		{"[::ffff:192.0.2.1]:80", "192.0.2.1", "192.0.2.1"},
		{"192.0.2.1", "192.0.2.1", "192.0.2.1"},
		{"[2001:db8::1]", "2001:db8::1", "2001:db8::1"},
		{"2001:db8::1", "2001:db8::1", "2001:db8::1"},
		{"@", "", ""},
		{"", "", ""},
		{"/run/public.sock", "", ""},
		{"example.com:80", "", ""},
	} {
		text, ip, ok := clientIP(tt.remote)
		if text != tt.text || ok != (tt.ip != "") || ok && ip.String() != tt.ip {
			t.Errorf("clientIP(%q) = %q, %v, %v; want %q, %s", tt.remote, text, ip, ok, tt.text, tt.ip)
		}
	}
}

func TestForwardingHeader(t *testing.T) {
	for k, want := range map[string]bool{
		"Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Prefix": true, "X-Real-Ip": true,
		"x_forwarded_for": true, "FORWARDED": true, "X_Real_IP": true,
		"X-Forwarded-": false, "X-Forwarded": false, "Forwarded-For": false, "X-Custom": false, "": false,
	} {
		if got := forwardingHeader(k); got != want {
			t.Errorf("forwardingHeader(%q) = %v, want %v", k, got, want)
		}
	}
}

// TestClientIPv4 checks the fast path against netip.ParseAddrPort: what it
// accepts, netip must accept with the same address.
func TestClientIPv4(t *testing.T) {
	for _, remote := range []string{
		"192.0.2.1:80", "0.0.0.0:0", "255.255.255.255:65535", "1.2.3.4:00080", "10.0.0.1:65536",
		"256.1.1.1:80", "01.2.3.4:80", "1.2.3:80", "1.2.3.4.5:80", "1.2.3.4", "1.2.3.4:", "1.2.3.4:+80",
		"1.2.3.4:123456", "1..3.4:80", ".1.2.3:80", "1.2.3.4 :80", "0001.2.3.4:80", "[1.2.3.4]:80",
		"1.2.3.4:80x", "127.0.0.1:4711", "::1", "@",
	} {
		text, ip, ok := clientIPv4(remote)
		ap, err := netip.ParseAddrPort(remote)
		if ok && (err != nil || ap.Addr() != ip || text != ap.Addr().String()) {
			t.Errorf("clientIPv4(%q) = %q, %v; netip: %v, %v", remote, text, ip, ap, err)
		}
		wantOK := err == nil && ap.Addr().Is4()
		if ok != wantOK {
			t.Errorf("clientIPv4(%q) ok = %v, want %v (netip: %v)", remote, ok, wantOK, err)
		}
	}
}

// FuzzClientIPv4: whatever the fast path accepts, netip.ParseAddrPort
// accepts as the same IPv4 address, and every IPv4 "addr:port" that netip
// accepts with a port of at most 5 digits the fast path takes too.
func FuzzClientIPv4(f *testing.F) {
	for _, s := range []string{"192.0.2.1:80", "01.2.3.4:80", "1.2.3.4:65536", "[::1]:80", "1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, remote string) {
		text, ip, ok := clientIPv4(remote)
		ap, err := netip.ParseAddrPort(remote)
		if ok && (err != nil || ap.Addr() != ip || text != ap.Addr().String()) {
			t.Fatalf("clientIPv4(%q) = %q, %v; netip: %v, %v", remote, text, ip, ap, err)
		}
		if !ok && err == nil && ap.Addr().Is4() && len(remote)-strings.LastIndexByte(remote, ':') <= 6 {
			t.Fatalf("clientIPv4(%q) refused what netip takes: %v", remote, ap)
		}
	})
}
