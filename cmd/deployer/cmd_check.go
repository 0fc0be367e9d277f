package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/deployer/deployer/supervisor"
)

func checkCommand() *command {
	return &command{
		name:    "check",
		summary: "validate deploy.toml and exit",
		about: `Validate deploy.toml: syntax, unknown keys, values, socket path lengths,
host and path conflicts, and that tls_cert and tls_key load as a key pair
(as the daemon does at start; its live reload only checks that they exist).
Every problem found is printed on stderr with file:line where known.
Nothing is started and no daemon is asked.`,
		exits: `0  deploy.toml is valid
2  it is not, or bad usage`,
		example: "deployer -c /srv/web/deploy.toml check",
		run:     runCheck,
	}
}

func runCheck(_ context.Context, inv *invocation) error {
	cfg, err := inv.loadConfigBy(supervisor.CheckConfig)
	if err != nil {
		return err
	}
	names := cfg.AppNames()
	apps := fmt.Sprintf("%d apps", len(names))
	if len(names) == 1 {
		apps = "1 app"
	}
	proxy := "no built-in proxy"
	if cfg.Deployer.Listen != "" {
		proxy = "proxy on " + cfg.Deployer.Listen
	}
	if len(names) > 0 {
		apps += " (" + strings.Join(names, ", ") + ")"
	}
	if cfg.Routes.Redis != "" {
		apps += ", routes from Redis"
	}
	fmt.Fprintf(inv.stdout, "%s OK: %s, %s\n", inv.configPath, apps, proxy)
	return nil
}
