// Package syntax holds the bits of HTTP/1.1 grammar that both the proxy
// (reading an app's responses) and proxy/front (reading clients' requests)
// check, so the two agree on what a token and a field value's whitespace
// are.
package syntax

import "strings"

// TokenByte reports whether c may appear in a token (tchar, RFC 9110
// 5.6.2): field names, methods, transfer codings.
func TokenByte(c byte) bool { return c < 0x80 && tokenTable[c] }

// IsToken reports whether s is a non-empty token.
func IsToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !TokenByte(s[i]) {
			return false
		}
	}
	return true
}

// TrimOWS removes the optional whitespace (spaces and tabs) around a field
// value. strings.Trim would build a set on every call.
func TrimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// SafeValue returns field value v as it may be written in a head: a CR or
// LF in it (which would end the line and let the rest pass as a field of
// its own) made a space, as net/http does. v itself when it has none, which
// costs no allocation.
func SafeValue(v string) string {
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' {
			return crlfToSpace.Replace(v)
		}
	}
	return v
}

var crlfToSpace = strings.NewReplacer("\r", " ", "\n", " ")

var tokenTable = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()
