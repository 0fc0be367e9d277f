package proxy

import "testing"

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
