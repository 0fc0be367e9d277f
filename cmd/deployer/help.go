package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

func helpCommand() *command {
	return &command{
		name:    "help",
		args:    []string{"[COMMAND]"},
		summary: "show this help, or a command's",
		about:   "Show what COMMAND does, its flags, exit statuses and an example; without COMMAND, list the commands.",
		exits: `0  the help was shown
2  unknown command`,
		example: "deployer help swap",
		run: func(_ context.Context, inv *invocation) error {
			if len(inv.args) == 0 {
				writeMainHelp(inv.stdout)
				return nil
			}
			cmd := lookupCommand(inv.args[0])
			if cmd == nil {
				return usageErrorf("unknown command %q", inv.args[0])
			}
			writeCommandHelp(inv.stdout, cmd)
			return nil
		},
	}
}

func writeMainHelp(w io.Writer) {
	fmt.Fprint(w, `deployer supervises web apps and swaps their versions with no request
refused or dropped.

usage: deployer [-c PATH] COMMAND [ARGS] [FLAGS]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, cmd := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", strings.Join(append([]string{cmd.name}, cmd.args...), " "), cmd.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
APP may be left out when deploy.toml defines exactly one app.
Flags may come before or after the arguments. Every command that reports
something accepts --json.

Flags of every command:
`)
	global := flag.NewFlagSet("deployer", flag.ContinueOnError)
	configFlags(global, new(string))
	writeFlags(w, global)
	fmt.Fprint(w, `
Exit status: 0 done; 1 failed, or no daemon is running; 2 bad usage or an
invalid deploy.toml; 3 (swap, rollback, restart) --timeout passed; 4 the
daemon's answer was lost (the connection dropped): the outcome is unknown.

Run 'deployer help COMMAND' for a command's flags, exit statuses and an example.
`)
}

func writeCommandHelp(w io.Writer, cmd *command) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n\nFlags:\n", cmd.usage(), cmd.about)
	fs, _ := cmd.flagSet(new(string), new(bool))
	writeFlags(w, fs)
	fmt.Fprintf(w, "\nExit status:\n")
	for _, line := range strings.Split(cmd.exits, "\n") {
		fmt.Fprintf(w, "  %s\n", line)
	}
	fmt.Fprintf(w, "\nExample:\n  %s\n", cmd.example)
}

// shortFlags maps each one-letter alias to the flag it stands for, so that
// help shows "-c, --config PATH" once rather than as two flags.
var shortFlags = map[string]string{"c": "config", "f": "follow"}

// writeFlags lists the flags defined on fs, and -h.
func writeFlags(w io.Writer, fs *flag.FlagSet) {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := shortFlags[f.Name]; ok {
			return
		}
		value, usage := flag.UnquoteUsage(f)
		spec := "--" + f.Name
		switch {
		case len(f.Name) == 1:
			spec = "-" + f.Name
		case fs.Lookup(aliasOf(f.Name)) != nil:
			spec = "-" + aliasOf(f.Name) + ", " + spec
		default:
			spec = "    " + spec // aligns with "-c, --config"
		}
		if value != "" {
			spec += " " + value
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			usage += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\n", spec, usage)
	})
	fmt.Fprintf(tw, "  -h, --help\tshow this help\n")
	tw.Flush()
}

// aliasOf returns the one-letter alias of flag name, or "".
func aliasOf(name string) string {
	for short, long := range shortFlags {
		if long == name {
			return short
		}
	}
	return ""
}
