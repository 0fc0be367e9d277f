package supervisor

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer/deployer/sockets"
)

// TestSocketPathLimit checks the exact boundary: a unique path of 107 bytes
// fits, 108 does not.
func TestSocketPathLimit(t *testing.T) {
	// <state>/web/v1-0-XXXXXXXX.sock is the longest path: len(state) + 23.
	for _, n := range []int{sockets.MaxPathLen, sockets.MaxPathLen + 1} {
		state := "/" + strings.Repeat("s", n-23-1)
		src := "[deployer]\nstate_dir = \"" + state + "\"\n" + app
		_, err := LoadConfig(writeConfig(t, src))
		if n <= sockets.MaxPathLen && err != nil {
			t.Errorf("unique path of %d bytes: got %v, want no error", n, err)
		}
		if n > sockets.MaxPathLen && err == nil {
			t.Errorf("unique path of %d bytes: got no error, want one", n)
		}
	}
}

func TestSocketPathsMirrorLayout(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{controlSocket("/s"), "/s/deployer.sock"},
		{stableSocket("/s", "web", 0), "/s/web/current.sock"},
		{stableSocket("/s", "web", 12), "/s/web/current-12.sock"},
		{uniqueSocket("/s", "web", "v2", 3), "/s/web/v2-3-XXXXXXXX.sock"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal
		ok   bool
	}{
		{"SIGTERM", syscall.SIGTERM, true},
		{"term", syscall.SIGTERM, true},
		{"SigInt", syscall.SIGINT, true},
		{"QUIT", syscall.SIGQUIT, true},
		{"sighup", syscall.SIGHUP, true},
		{"USR1", syscall.SIGUSR1, true},
		{"SIGUSR2", syscall.SIGUSR2, true},
		{"KILL", syscall.SIGKILL, true},
		{"SIGWINCH", syscall.SIGWINCH, true},
		{"SIGSTOP", 0, false},
		{"15", 0, false},
		{"", 0, false},
		{"SIG", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseSignal(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseSignal(%q): got %v, %v, want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestSettle covers the settle key, the one duration that may be "0s".
func TestSettle(t *testing.T) {
	tests := []struct {
		name string
		keys string // lines after app's, which ends on line 4
		want time.Duration
	}{
		{"absent", "", DefaultSettle},
		{"zero", "settle = \"0s\"\n", 0},
		{"set", "settle = \"2s\"\n", 2 * time.Second},
		{"below ready_timeout", "ready_timeout = \"1s\"\nsettle = \"999ms\"\n", 999 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := loadString(t, app+tt.keys)
			if got := cfg.Apps["web"].Settle; got != tt.want {
				t.Errorf("Settle: got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSettleErrors(t *testing.T) {
	tests := []struct {
		name string
		keys string // lines after app's, which ends on line 4
		want problem
	}{
		{"longer than ready_timeout", "settle = \"2s\"\nready_timeout = \"1s\"\n",
			problem{5, "apps.web.settle (2s) must be shorter than ready_timeout (1s)"}},
		{"equal to ready_timeout", "ready_timeout = \"1s\"\nsettle = \"1s\"\n",
			problem{6, "apps.web.settle (1s) must be shorter than ready_timeout (1s)"}},
		// Left out, settle is DefaultSettle: the problem is at the key the
		// file does set, not at line 0.
		{"default longer than ready_timeout", "ready_timeout = \"300ms\"\n",
			problem{5, "apps.web.settle (500ms, the default) must be shorter than ready_timeout (300ms)"}},
		{"bare number", "settle = 1\n",
			problem{5, `apps.web.settle = 1: a duration is a string with a unit, write "1s"`}},
		{"no unit", "settle = \"1\"\n",
			problem{5, `apps.web.settle = "1" is not a duration`}},
		{"negative", "settle = \"-1s\"\n",
			problem{5, `apps.web.settle = "-1s" must not be negative`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, app+tt.keys))
			got := configErrors(t, err)
			if len(got) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(got), err)
			}
			if got[0].Line != tt.want.line {
				t.Errorf("got line %d, want %d: %s", got[0].Line, tt.want.line, got[0].Msg)
			}
			if !strings.Contains(got[0].Msg, tt.want.msg) {
				t.Errorf("got %q, want it to contain %q", got[0].Msg, tt.want.msg)
			}
		})
	}
}
