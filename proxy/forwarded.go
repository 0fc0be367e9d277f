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
