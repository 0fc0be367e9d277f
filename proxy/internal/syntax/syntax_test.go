package syntax

import (
	"strings"
	"testing"
)

func TestTokenByte(t *testing.T) {
	const tchar = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	for c := 0; c < 256; c++ {
		want := strings.IndexByte(tchar, byte(c)) >= 0
		if got := TokenByte(byte(c)); got != want {
			t.Errorf("TokenByte(%#x) = %v, want %v", c, got, want)
		}
	}
	for s, want := range map[string]bool{"": false, "GET": true, "X-Request-Id": true, "a b": false, "a:b": false, "ü": false} {
		if got := IsToken(s); got != want {
			t.Errorf("IsToken(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestTrimOWS(t *testing.T) {
	for _, v := range []string{"", " ", "\t", "a", " a", "a ", " \ta b\t ", "\t\t", "a\r", " \x00 "} {
		if got, want := TrimOWS(v), strings.Trim(v, " \t"); got != want {
			t.Errorf("TrimOWS(%q) = %q, want %q", v, got, want)
		}
	}
}

func TestSafeValue(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "",
		"plain value":             "plain value",
		"a\rb":                    "a b",
		"a\nb":                    "a b",
		"x\r\nSet-Cookie: evil=1": "x  Set-Cookie: evil=1",
	} {
		if got := SafeValue(in); got != want {
			t.Errorf("SafeValue(%q) = %q, want %q", in, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { SafeValue("no line breaks here") }); n != 0 {
		t.Errorf("SafeValue of a clean value: %v allocations, want 0", n)
	}
}
