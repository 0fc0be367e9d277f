package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/deployer/deployer/supervisor"
)

func versionCommand() *command {
	return &command{
		name:    "version",
		json:    true,
		summary: "print which deployer this binary is: version, commit, Go",
		about: `Print this binary's build: its version (a release set at build time, the
module version of 'go install', or "(devel)" for a build from a checkout),
the commit it was built from and whether the tree had uncommitted changes
(when built from a git checkout), and the Go toolchain. No daemon is asked:
'deployer status' shows the running daemon's build, and says when the binary
on disk is another one (what 'deployer upgrade' would switch to).`,
		exits:   `0  always`,
		example: "deployer version --json",
		run: func(_ context.Context, inv *invocation) error {
			b := supervisor.CurrentBuild()
			if inv.asJSON {
				out, err := json.Marshal(b)
				if err != nil {
					return err
				}
				return writeIndented(inv.stdout, out)
			}
			fmt.Fprintf(inv.stdout, "deployer %s\n", b)
			return nil
		},
	}
}
