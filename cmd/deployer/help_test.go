package main

import (
	"strings"
	"testing"
)

func TestHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string // in this order
	}{
		{[]string{"help"}, []string{"usage: deployer [-c PATH] COMMAND", "start [APP]", "swap [APP] VERSION", "logs [APP]", "check", "-c, --config PATH", "Exit status:"}},
		{[]string{"-h"}, []string{"usage: deployer [-c PATH] COMMAND", "Commands:"}},
		{[]string{"--help"}, []string{"usage: deployer [-c PATH] COMMAND"}},
		{[]string{"help", "swap"}, []string{
			"usage: deployer swap [APP] VERSION [--wait-drain] [--timeout DURATION] [--json]",
			"Launch VERSION",
			"Flags:", "-c, --config PATH", "--json", "--timeout DURATION", "--wait-drain", "-h, --help",
			"Exit status:", "0  VERSION serves", "1  VERSION failed", "2  bad usage", "3  --timeout passed",
			"Example:", "deployer swap web v42",
		}},
		{[]string{"swap", "-h"}, []string{"usage: deployer swap [APP] VERSION"}},
		{[]string{"swap", "web", "--help"}, []string{"usage: deployer swap [APP] VERSION"}},
		{[]string{"-c", "nowhere.toml", "status", "-h"}, []string{"usage: deployer status [APP] [--json]"}},
		{[]string{"help", "logs"}, []string{"-f, --follow", "-n N", "(default 200)"}},
		{[]string{"help", "help"}, []string{"usage: deployer help [COMMAND]"}},
	}
	for _, tt := range tests {
		got := run(t, tt.args...)
		wantCode(t, got, exitOK)
		rest := got.stdout
		for _, want := range tt.want {
			i := strings.Index(rest, want)
			if i < 0 {
				t.Errorf("%q: stdout lacks %q (or not in order):\n%s", tt.args, want, got.stdout)
				break
			}
			rest = rest[i+len(want):]
		}
		if got.stderr != "" {
			t.Errorf("%q: stderr = %q, want nothing", tt.args, got.stderr)
		}
	}
}

// TestHelpCoversEveryCommand checks that every command has its texts and
// that the main help lists each one.
func TestHelpCoversEveryCommand(t *testing.T) {
	main := run(t, "help").stdout
	for _, cmd := range commands() {
		if !strings.Contains(main, "\n  "+cmd.name) {
			t.Errorf("help does not list %s:\n%s", cmd.name, main)
		}
	}
	for _, cmd := range commands() {
		if cmd.summary == "" || cmd.about == "" || cmd.exits == "" || cmd.example == "" {
			t.Errorf("%s: help text missing: %+v", cmd.name, cmd)
		}
		if !strings.Contains(main, "  "+cmd.name) {
			t.Errorf("help does not list %s", cmd.name)
		}
		if !strings.HasPrefix(cmd.example, "deployer ") {
			t.Errorf("%s: example %q does not start with deployer", cmd.name, cmd.example)
		}
	}
}

// TestHelpSaysWhatIsTrue checks help texts that once said otherwise: start
// launches the version that served last, not "its configured version", and
// no help points to CONTRACT.md, which is not in the repository.
func TestHelpSaysWhatIsTrue(t *testing.T) {
	start := run(t, "help", "start").stdout
	for _, want := range []string{"the version that served last", "'version' in deploy.toml when none has served yet", "edited since"} {
		if !strings.Contains(start, want) {
			t.Errorf("help start lacks %q:\n%s", want, start)
		}
	}
	if strings.Contains(start, "configured version") {
		t.Errorf("help start says an app starts at its configured version:\n%s", start)
	}
	if status := run(t, "help", "status").stdout; !strings.Contains(status, `the README's "Commands" section`) {
		t.Errorf("help status does not point to the README's Commands section:\n%s", status)
	}
	for _, cmd := range commands() {
		if help := run(t, "help", cmd.name).stdout; strings.Contains(help, "CONTRACT.md") {
			t.Errorf("help %s points to CONTRACT.md, which is not in the repository", cmd.name)
		}
	}
}
