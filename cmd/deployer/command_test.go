package main

import (
	"testing"
)

func TestCheckArgs(t *testing.T) {
	swap, status, shutdown := swapCommand(), statusCommand(), shutdownCommand()
	tests := []struct {
		cmd     *command
		args    []string
		wantErr string
	}{
		{swap, nil, "missing VERSION"},
		{swap, []string{"v2"}, ""},
		{swap, []string{"web", "v2"}, ""},
		{swap, []string{"web", "v2", "v3"}, `unexpected argument "v3"`},
		{status, nil, ""},
		{status, []string{"web"}, ""},
		{status, []string{"web", "api"}, `unexpected argument "api"`},
		{shutdown, nil, ""},
		{shutdown, []string{"now"}, `unexpected argument "now"`},
	}
	for _, tt := range tests {
		err := tt.cmd.checkArgs(tt.args)
		if got := errString(err); got != tt.wantErr {
			t.Errorf("%s %q: error %q, want %q", tt.cmd.name, tt.args, got, tt.wantErr)
		}
	}
}

func TestUsageLine(t *testing.T) {
	tests := []struct {
		cmd  *command
		want string
	}{
		{swapCommand(), "deployer swap [APP] VERSION [--wait-drain] [--timeout DURATION] [--json]"},
		{logsCommand(), "deployer logs [APP] [-f] [-n N] [--json]"},
		{statusCommand(), "deployer status [APP] [--json]"},
		{checkCommand(), "deployer check [--json]"},
	}
	for _, tt := range tests {
		if got := tt.cmd.usage(); got != tt.want {
			t.Errorf("usage = %q, want %q", got, tt.want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
