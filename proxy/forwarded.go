package proxy

import (
	"net/netip"
	"strings"
)

// Forwarding headers and trusted proxies: which client may say where a
// request came from (see writeRequestHead and Options.TrustedProxies).

// forwardingHeader reports whether k names a forwarding header, whatever
// its case and with '_' or '-': Forwarded (RFC 7239), X-Real-Ip or
// X-Forwarded-anything. It costs a byte compare for most names.
func forwardingHeader(k string) bool {
	if k == "" {
		return false
	}
	switch k[0] | 0x20 {
	case 'x':
		return len(k) > len("x-forwarded-") && equalFoldDash(k[:len("x-forwarded-")], "x-forwarded-") ||
			equalFoldDash(k, "x-real-ip")
	case 'f':
		return equalFoldDash(k, "forwarded")
	}
	return false
}

// setByProxy reports whether the proxy writes forwarding header k itself
// (from the client's when it trusts it).
func setByProxy(k string) bool {
	return k == "X-Forwarded-For" || k == "X-Forwarded-Host" || k == "X-Forwarded-Proto"
}

// equalFoldDash reports whether s equals lower, which is lower case, with
// ASCII case ignored and '_' taken for '-'.
func equalFoldDash(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '_' {
			c = '-'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// clientIP parses the client's address in a RemoteAddr: "ip:port" or
// "[ip]:port" as net/http sets it, or an address alone. text is the
// address for X-Forwarded-For, ip the same parsed: an IPv4-mapped IPv6
// address is unmapped, a zone dropped. ok is false for anything else (a
// unix socket's path, or "@"): such a client has no address. No
// allocation but for a mapped address.
func clientIP(remote string) (text string, ip netip.Addr, ok bool) {
	if text, ip, ok := clientIPv4(remote); ok {
		return text, ip, true
	}
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		ip, text = ap.Addr(), remote[:strings.LastIndexByte(remote, ':')]
	} else {
		text = remote
		if len(text) > 2 && text[0] == '[' && text[len(text)-1] == ']' {
			text = text[1 : len(text)-1]
		}
		if ip, err = netip.ParseAddr(text); err != nil {
			return "", netip.Addr{}, false
		}
	}
	if len(text) > 0 && text[0] == '[' {
		text = text[1 : len(text)-1]
	}
	if i := strings.IndexByte(text, '%'); i >= 0 {
		text, ip = text[:i], ip.WithZone("")
	}
	if ip.Is4In6() {
		ip = ip.Unmap()
		text = ip.String()
	}
	return text, ip, true
}

// clientIPv4 is clientIP's fast path for what nearly every RemoteAddr is:
// "a.b.c.d:port", in the strict form netip.ParseAddrPort accepts (decimal
// octets without leading zeros, a port of at most 65535). ok is false for
// anything else, which clientIP then parses in full.
func clientIPv4(remote string) (text string, ip netip.Addr, ok bool) {
	var a [4]byte
	i := 0
	for n := range 4 {
		v, digits := 0, 0
		for i < len(remote) && '0' <= remote[i] && remote[i] <= '9' && digits < 4 {
			v = v*10 + int(remote[i]-'0')
			i++
			digits++
		}
		if digits == 0 || digits > 3 || v > 255 || digits > 1 && remote[i-digits] == '0' {
			return "", netip.Addr{}, false
		}
		a[n] = byte(v)
		sep := byte('.')
		if n == 3 {
			sep = ':'
		}
		if i == len(remote) || remote[i] != sep {
			return "", netip.Addr{}, false
		}
		i++
	}
	text = remote[:i-1]
	port := remote[i:]
	if port == "" || len(port) > 5 {
		return "", netip.Addr{}, false
	}
	v := 0
	for j := 0; j < len(port); j++ {
		if port[j] < '0' || port[j] > '9' {
			return "", netip.Addr{}, false
		}
		v = v*10 + int(port[j]-'0')
	}
	if v > 65535 {
		return "", netip.Addr{}, false
	}
	return text, netip.AddrFrom4(a), true
}

// trusts reports whether remote, a request's RemoteAddr, is inside one of
// prefixes.
func trusts(prefixes []netip.Prefix, remote string) bool {
	if len(prefixes) == 0 {
		return false
	}
	_, ip, ok := clientIP(remote)
	if !ok {
		return false
	}
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
