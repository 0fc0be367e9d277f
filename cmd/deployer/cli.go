package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/deployer/deployer/sockets"
	"github.com/deployer/deployer/supervisor"
)

// Exit statuses, the same for every command (CONTRACT.md).
const (
	exitOK      = 0 // done
	exitFailed  = 1 // the operation failed, or no daemon answered
	exitUsage   = 2 // bad arguments or an invalid deploy.toml
	exitTimeout = 3 // swap, rollback, restart: --timeout passed
	exitUnknown = 4 // the daemon's answer never came: what happened is unknown
)

// defaultConfigPath is read when neither -c nor $DEPLOYER_CONFIG names a file.
const defaultConfigPath = "deploy.toml"

// configEnv names the environment variable that replaces defaultConfigPath.
const configEnv = "DEPLOYER_CONFIG"

// CLI is the deployer command line. Its zero value works: it writes to
// os.Stdout and os.Stderr and reads the environment with os.Getenv. Tests set
// the fields to capture the output and fake the environment.
type CLI struct {
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(key string) string
}

// Run runs the command line args (without the program name) and returns the
// exit status. Everything the user should see has been written when it
// returns.
func (c *CLI) Run(ctx context.Context, args []string) int {
	inv := &invocation{stdout: c.Stdout, stderr: c.Stderr, getenv: c.Getenv}
	if inv.stdout == nil {
		inv.stdout = os.Stdout
	}
	if inv.stderr == nil {
		inv.stderr = os.Stderr
	}
	if inv.getenv == nil {
		inv.getenv = os.Getenv
	}
	return inv.exit(inv.run(ctx, args))
}

// invocation is one run of the command line: what was parsed, and where the
// output goes.
type invocation struct {
	stdout, stderr io.Writer
	getenv         func(string) string

	cmd        *command // nil until the command name is known
	args       []string // positional arguments after flags are taken out
	configPath string   // -c, else $DEPLOYER_CONFIG, else defaultConfigPath
	asJSON     bool     // --json
	app        string   // APP, once resolveApp has found it
}

func (inv *invocation) run(ctx context.Context, args []string) error {
	global := flag.NewFlagSet("deployer", flag.ContinueOnError)
	global.SetOutput(io.Discard) // parse errors are reported by exit, in one format
	configFlags(global, &inv.configPath)
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeMainHelp(inv.stdout)
			return nil
		}
		return usageErrorf("%v", err)
	}
	if global.NArg() == 0 {
		return usageErrorf("no command given")
	}
	cmd := lookupCommand(global.Arg(0))
	if cmd == nil {
		return usageErrorf("unknown command %q", global.Arg(0))
	}
	inv.cmd = cmd

	fs, run := cmd.flagSet(&inv.configPath, &inv.asJSON)
	flags := permute(fs, global.Args()[1:])
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeCommandHelp(inv.stdout, cmd)
			return nil
		}
		// Parse stops at the flag it cannot take (--timeout 5), before a
		// --json after it: a CI step's bad --timeout gets its object too,
		// naming the app and version it was about.
		inv.asJSON = inv.asJSON || asksJSON(fs, flags)
		if i := slices.Index(flags, "--"); i >= 0 {
			inv.args = flags[i+1:]
		}
		return inv.failJSON(usageErrorf("%v", err))
	}
	inv.args = fs.Args()
	return inv.failJSON(inv.runParsed(ctx, run))
}

// failJSON prints the command's jsonFailure object for err with --json,
// unless err is nil or reported already, and returns err: exit reports it
// on stderr as well, as it does after unknownResult.
func (inv *invocation) failJSON(err error) error {
	if err == nil || !inv.asJSON || inv.cmd.jsonFailure == nil || reported(err) {
		return err
	}
	if werr := writeJSONValue(inv.stdout, inv.cmd.jsonFailure(inv, err)); werr != nil {
		return werr
	}
	return err
}

// asksJSON reports whether the flags that permute put ahead of "--" set
// --json to true.
func asksJSON(fs *flag.FlagSet, flags []string) bool {
	if fs.Lookup("json") == nil {
		return false
	}
	for _, f := range flags {
		switch f {
		case "--":
			return false
		case "-json", "--json", "-json=true", "--json=true":
			return true
		}
	}
	return false
}

// runParsed runs the command once its flags are parsed.
func (inv *invocation) runParsed(ctx context.Context, run runFunc) error {
	if err := inv.cmd.checkArgs(inv.args); err != nil {
		return err
	}
	if inv.configPath == "" {
		inv.configPath = inv.getenv(configEnv)
	}
	if inv.configPath == "" {
		inv.configPath = defaultConfigPath
	}
	return run(ctx, inv)
}

// configFlags defines -c and --config on fs, both setting *path. They are
// accepted before the command and again among its flags, so that
// `deployer swap web v2 -c prod.toml` works as well as `deployer -c prod.toml swap web v2`.
func configFlags(fs *flag.FlagSet, path *string) {
	const usage = "read deploy.toml from `PATH` (default $" + configEnv + ", else ./" + defaultConfigPath + ")"
	fs.StringVar(path, "config", *path, usage)
	fs.StringVar(path, "c", *path, usage)
}

// permute moves the flags in args ahead of the positional arguments and
// separates them with "--", so that `swap web v2 --json` parses like
// `swap --json web v2`: flag.FlagSet.Parse stops at the first non-flag.
// A flag that takes a value keeps the argument after it. Everything after a
// "--" of the user's stays positional; a lone "-" is positional too.
func permute(fs *flag.FlagSet, args []string) []string {
	var flags, positional []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			positional = append(positional, arg)
			continue
		}
		flags = append(flags, arg)
		name := strings.TrimLeft(arg, "-")
		if strings.Contains(name, "=") {
			continue
		}
		// An unknown flag takes no value here: Parse reports it as unknown
		// before it would matter.
		if f := fs.Lookup(name); f != nil && !isBoolFlag(f) {
			if i+1 == len(args) {
				// The value is missing: end with the flag, so that Parse
				// says so instead of taking "--" for its value.
				return flags
			}
			i++
			flags = append(flags, args[i])
		}
	}
	return append(append(flags, "--"), positional...)
}

// isBoolFlag reports whether f is set by its mere presence (-json), the way
// the flag package itself decides it.
func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// loadConfig reads the deploy.toml this invocation names.
func (inv *invocation) loadConfig() (*supervisor.Config, error) {
	return inv.loadConfigBy(supervisor.LoadConfig)
}

// loadConfigBy reads deploy.toml with load (supervisor.LoadConfig or
// CheckConfig) and turns its errors into the CLI's.
func (inv *invocation) loadConfigBy(load func(string) (*supervisor.Config, error)) (*supervisor.Config, error) {
	cfg, err := load(inv.configPath)
	if err == nil {
		return cfg, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		// Only say the file is missing when it is: a validation error could
		// wrap ErrNotExist for some other path.
		if _, statErr := os.Stat(inv.configPath); errors.Is(statErr, os.ErrNotExist) {
			return nil, &configError{missing: inv.configPath}
		}
	}
	if errors.Is(err, supervisor.ErrConfig) {
		return nil, &configError{err: err}
	}
	return nil, err
}

// loadConfigForDaemon reads deploy.toml for a command that only reads from
// or pauses a running daemon (status, logs, pause, stop, upgrade...). If the
// file is invalid, the daemon runs on its last valid config, so the command
// goes on with what it needs from the file (the state directory and app
// names), after a warning naming the problems: an operator must reach the
// daemon while the file is broken.
func (inv *invocation) loadConfigForDaemon() (*supervisor.Config, error) {
	cfg, err := inv.loadConfig()
	var ce *configError
	if err == nil || !errors.As(err, &ce) || ce.err == nil {
		return cfg, err
	}
	peek, perr := supervisor.PeekConfig(inv.configPath)
	if perr != nil {
		return nil, err
	}
	fmt.Fprintf(inv.stderr, "deployer: warning: %s is invalid (a running daemon keeps its last valid config):\n%v\n", inv.configPath, ce.err)
	return peek, nil
}

// daemonApp reads deploy.toml for a command that talks to a running daemon
// about one app, and resolves APP: the config, the app, and the arguments
// after it. An invalid file is a warning (loadConfigForDaemon).
func (inv *invocation) daemonApp() (*supervisor.Config, string, []string, error) {
	return inv.appBy(inv.loadConfigForDaemon)
}

// launchApp is daemonApp for a command that has the daemon launch processes
// (swap, rollback, restart): an invalid deploy.toml is refused, exit 2. The
// daemon would launch them with its last valid config, not with the settings
// the file shows, and report success: `restart` said "restarted web v2"
// with the old command and environment.
func (inv *invocation) launchApp() (*supervisor.Config, string, []string, error) {
	return inv.appBy(inv.loadConfig)
}

// appBy reads deploy.toml with load and resolves APP.
func (inv *invocation) appBy(load func() (*supervisor.Config, error)) (*supervisor.Config, string, []string, error) {
	cfg, err := load()
	if err != nil {
		return nil, "", nil, err
	}
	app, rest, err := inv.resolveApp(cfg)
	if err != nil {
		return nil, "", nil, err
	}
	return cfg, app, rest, nil
}

// optionalApp resolves APP for a command where leaving it out means every
// app: "" then.
func (inv *invocation) optionalApp(cfg *supervisor.Config) (string, error) {
	if len(inv.args) == 0 {
		return "", nil
	}
	app, _, err := inv.resolveApp(cfg)
	return app, err
}

// resolveApp returns the APP argument, filled in when deploy.toml defines
// exactly one app and it was left out, and the arguments after it. The
// command's argument count has been checked already.
func (inv *invocation) resolveApp(cfg *supervisor.Config) (app string, rest []string, err error) {
	names := cfg.AppNames()
	if app = inv.appArg(); app != "" {
		if _, ok := cfg.Apps[app]; !ok {
			return "", nil, &usageError{
				msg:  fmt.Sprintf("unknown app %q: %s defines %s", app, inv.configPath, appList(names)),
				code: "unknown_app", // the daemon's code for it
			}
		}
		inv.app = app
		return app, inv.args[1:], nil
	}
	switch len(names) {
	case 0:
		return "", nil, usageErrorf("%s defines no app", inv.configPath)
	case 1:
		inv.app = names[0]
		return names[0], inv.args, nil
	}
	return "", nil, usageErrorf("APP is required: %s defines several apps: %s", inv.configPath, strings.Join(names, ", "))
}

// appArg returns the APP given on the command line, or "" when it was left
// out. The command's argument count has been checked already.
func (inv *invocation) appArg() string {
	if len(inv.args) > inv.cmd.requiredArgs() {
		return inv.args[0]
	}
	return ""
}

// appList names the apps for an error message.
func appList(names []string) string {
	switch len(names) {
	case 0:
		return "no app"
	case 1:
		return "only " + names[0]
	}
	return strings.Join(names, ", ")
}

// client returns a client of the daemon that cfg describes.
func (inv *invocation) client(cfg *supervisor.Config) *client {
	return newClient(sockets.Layout{StateDir: cfg.Deployer.StateDir}.ControlSocket())
}
