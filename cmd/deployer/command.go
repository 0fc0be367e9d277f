package main

import (
	"context"
	"flag"
	"io"
	"strings"
)

// A command is one verb of the command line; each is defined in its own
// cmd_*.go file by a function returning it.
type command struct {
	name string
	// args names the positional arguments for the usage line, in order. A
	// bracketed one ("[APP]") may be left out; only the first may be.
	args []string
	// flagsUsage shows the command's own flags on the usage line, e.g.
	// "[--wait-drain]"; -c and -h are left out everywhere and --json is
	// added when json is set.
	flagsUsage string
	json       bool // accepts --json
	// jsonFailure, when set, is the object the command prints with --json
	// when it ends in an error not reported yet (bad usage found after the
	// flags, deploy.toml, no daemon, the daemon's refusal), so that --json
	// always prints one object. exit still reports err on stderr.
	jsonFailure func(inv *invocation, err error) any
	// operation marks swap, rollback, restart and stop: once the request
	// may have reached the daemon, an error that is not a refusal
	// (errorCode) leaves the outcome unknown, exit 4, as opFailure says.
	operation bool

	summary string // one line for `deployer help`
	about   string // what it does, for `deployer help NAME`
	exits   string // one line per exit status
	example string

	// setup defines the command's own flags on fs and returns the function
	// that runs the command once fs is parsed. It may be nil when the
	// command has no flags of its own: then run is used.
	setup func(fs *flag.FlagSet) runFunc
	run   runFunc
}

type runFunc func(ctx context.Context, inv *invocation) error

// commands lists every command in the order `deployer help` shows them.
// It is a function, not a variable, because the help command refers back to
// the list (a package-level variable would be an initialization cycle).
func commands() []*command {
	return []*command{
		startCommand(),
		swapCommand(),
		rollbackCommand(),
		restartCommand(),
		stopCommand(),
		statusCommand(),
		pauseCommand(),
		resumeCommand(),
		logsCommand(),
		upgradeCommand(),
		shutdownCommand(),
		checkCommand(),
		routeCommand(),
		versionCommand(),
		helpCommand(),
	}
}

func lookupCommand(name string) *command {
	for _, cmd := range commands() {
		if cmd.name == name {
			return cmd
		}
	}
	return nil
}

// flagSet returns the command's flag set, with the flags every command
// shares bound to configPath and asJSON, and the function that runs it.
// Help output lists the flags of this same set, so it cannot drift.
func (cmd *command) flagSet(configPath *string, asJSON *bool) (*flag.FlagSet, runFunc) {
	fs := flag.NewFlagSet("deployer "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse errors are reported by exit, in one format
	configFlags(fs, configPath)
	if cmd.json {
		fs.BoolVar(asJSON, "json", false, "print the result as JSON instead of text")
	}
	run := cmd.run
	if cmd.setup != nil {
		run = cmd.setup(fs)
	}
	return fs, run
}

// usage is the command's one-line synopsis.
func (cmd *command) usage() string {
	parts := append([]string{"deployer", cmd.name}, cmd.args...)
	if cmd.flagsUsage != "" {
		parts = append(parts, cmd.flagsUsage)
	}
	if cmd.json {
		parts = append(parts, "[--json]")
	}
	return strings.Join(parts, " ")
}

// requiredArgs counts the positional arguments that may not be left out.
func (cmd *command) requiredArgs() int {
	n := 0
	for _, a := range cmd.args {
		if !strings.HasPrefix(a, "[") {
			n++
		}
	}
	return n
}

// checkArgs rejects a wrong number of positional arguments. Which app an
// APP argument names is checked later, against deploy.toml.
func (cmd *command) checkArgs(args []string) error {
	if n := len(args); n < cmd.requiredArgs() {
		return usageErrorf("missing %s", cmd.args[len(cmd.args)-cmd.requiredArgs()+n])
	}
	if len(args) > len(cmd.args) {
		return usageErrorf("unexpected argument %q", args[len(cmd.args)])
	}
	return nil
}
