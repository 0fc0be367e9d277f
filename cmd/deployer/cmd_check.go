package main

import (
	"context"
	"encoding/json"
	"errors"
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
Nothing is started and no daemon is asked.

With --json it prints one object on stdout instead, valid or not:
{"ok", "config", "apps", "listen", "redis_routes",
 "problems": [{"file", "line", "message"}]} (line 0: not known).`,
		exits: `0  deploy.toml is valid
2  it is not, or bad usage`,
		example: "deployer -c /srv/web/deploy.toml check --json | jq -r '.problems[] | \"\\(.line): \\(.message)\"'",
		json:    true,
		run:     runCheck,
	}
}

// checkResult is what check --json prints: one object, valid or not.
type checkResult struct {
	OK       bool           `json:"ok"`
	Config   string         `json:"config"`
	Apps     []string       `json:"apps"`
	Listen   string         `json:"listen"`
	Redis    bool           `json:"redis_routes"`
	Problems []checkProblem `json:"problems"`
}

// checkProblem is one problem of an invalid deploy.toml; line is 0 when
// it is not known.
type checkProblem struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Message string `json:"message"`
}

func runCheck(_ context.Context, inv *invocation) error {
	cfg, err := inv.loadConfigBy(supervisor.CheckConfig)
	if inv.asJSON {
		return printCheckJSON(inv, cfg, err)
	}
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

// printCheckJSON prints check's result as one JSON object on stdout; an
// invalid file still exits 2 (errReportedConfig), with the problems in it.
func printCheckJSON(inv *invocation, cfg *supervisor.Config, err error) error {
	res := checkResult{Config: inv.configPath, Apps: []string{}, Problems: []checkProblem{}}
	var ce *configError
	switch {
	case err == nil:
		res.OK = true
		res.Apps = cfg.AppNames()
		res.Listen = cfg.Deployer.Listen
		res.Redis = cfg.Routes.Redis != ""
	case !errors.As(err, &ce):
		return err // not about the file's content
	case ce.missing != "":
		res.Problems = append(res.Problems, checkProblem{File: ce.missing, Message: ce.Error()})
	default:
		for _, e := range configProblems(ce.err) {
			res.Problems = append(res.Problems, checkProblem{File: e.File, Line: e.Line, Message: e.Msg})
		}
		if len(res.Problems) == 0 {
			res.Problems = append(res.Problems, checkProblem{File: inv.configPath, Message: ce.err.Error()})
		}
	}
	out, jerr := json.MarshalIndent(res, "", "  ")
	if jerr != nil {
		return jerr
	}
	fmt.Fprintf(inv.stdout, "%s\n", out)
	if !res.OK {
		return errConfigReported
	}
	return nil
}

// configProblems lists the ConfigErrors in err (errors.Join'ed).
func configProblems(err error) []*supervisor.ConfigError {
	var out []*supervisor.ConfigError
	var walk func(error)
	walk = func(err error) {
		if e, ok := err.(*supervisor.ConfigError); ok {
			out = append(out, e)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			if e := u.Unwrap(); e != nil {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}
