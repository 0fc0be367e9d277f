package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/deployer/deployer/supervisor"
)

// usageError is bad usage: a one-line message, then the command's usage.
type usageError struct {
	msg  string
	code string // for --json (errorCode); "" is "usage"
}

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// errPermissionDenied means the kernel refused the connect to the control
// socket (its mode): the daemon never heard of the request.
var errPermissionDenied = errors.New("permission denied")

// configError is a deploy.toml that cannot be used: missing, or invalid
// (err then names file:line for each problem, one per line).
type configError struct {
	missing string // the path that does not exist, or ""
	err     error
}

func (e *configError) Error() string {
	if e.missing != "" {
		return fmt.Sprintf("no config file at %s (pass -c PATH or set $%s)", e.missing, configEnv)
	}
	return e.err.Error()
}

func (e *configError) Unwrap() error { return e.err }

// noDaemonError means nothing answers on the control socket: its path does
// not exist (ENOENT) or nothing listens on it any more (ECONNREFUSED).
type noDaemonError struct{ socket string }

func (e *noDaemonError) Error() string {
	return fmt.Sprintf("no daemon is running (nothing answers on %s); start one with 'deployer start'", e.socket)
}

// apiError is a non-2xx answer of the control API.
type apiError struct {
	status int
	body   supervisor.APIError
}

func (e *apiError) Error() string { return e.body.Error }

// errReported means the failure has been reported on stdout already (a
// failed swap's result, say); only the exit status is left to give.
var errReported = errors.New("failure reported")

// errTimeoutReported is errReported for an operation whose --timeout
// passed (cmd_swap.go): a distinct exit status, so that a CI step can tell
// "too slow" from "broken".
var errTimeoutReported = errors.New("timeout reported")

// errUnknownReported is errReported for an operation whose result never
// arrived (cmd_swap.go): neither success nor failure can be claimed.
var errUnknownReported = errors.New("unknown outcome reported")

// errConfigReported is errReported for an invalid deploy.toml whose
// problems were printed (check --json): exit status 2, as for any invalid
// file.
var errConfigReported = errors.New("invalid config reported")

// reported reports whether err has been reported on stdout already, so that
// only its exit status is left to give.
func reported(err error) bool {
	return errors.Is(err, errReported) || errors.Is(err, errTimeoutReported) ||
		errors.Is(err, errUnknownReported) || errors.Is(err, errConfigReported)
}

// errorCode names err for a JSON answer (--json), as stably as the daemon's
// API codes: the daemon's own code when it refused, else the CLI's name for
// it. refused says that the command surely started nothing: it ended
// before the daemon began an operation.
func errorCode(err error) (code string, refused bool) {
	var (
		usage    *usageError
		config   *configError
		noDaemon *noDaemonError
		api      *apiError
	)
	switch {
	case errors.As(err, &usage):
		if usage.code != "" {
			return usage.code, true
		}
		return "usage", true
	case errors.As(err, &config):
		if config.missing != "" {
			return "no_config", true
		}
		return "invalid_config", true
	case errors.As(err, &noDaemon):
		return "no_daemon", true
	case errors.Is(err, errPermissionDenied):
		return "permission_denied", true
	case errors.As(err, &api):
		// A non-2xx answer comes instead of the operation's stream.
		if api.body.Code != "" {
			return api.body.Code, true
		}
		return fmt.Sprintf("http_%d", api.status), true
	case errors.Is(err, errConnectionLost):
		return "connection_lost", false
	case errors.Is(err, errNoAnswer):
		return "no_answer", false
	}
	return "error", false
}

// exit reports err on stderr, unless it has been reported, and returns the
// exit status for it. It is the one place errors become exit statuses.
func (inv *invocation) exit(err error) int {
	if err == nil {
		return exitOK
	}
	var (
		usage    *usageError
		config   *configError
		noDaemon *noDaemonError
		api      *apiError
	)
	switch {
	case errors.Is(err, errReported):
		return exitFailed
	case errors.Is(err, errTimeoutReported):
		return exitTimeout
	case errors.Is(err, errUnknownReported):
		return exitUnknown
	case errors.Is(err, errConfigReported):
		return exitUsage
	case errors.Is(err, errConnectionLost), errors.Is(err, errNoAnswer):
		fmt.Fprintf(inv.stderr, "%s: %v\n", inv.prefix(), err)
		return exitUnknown
	case errors.As(err, &usage):
		fmt.Fprintf(inv.stderr, "%s: %s\n", inv.prefix(), usage.msg)
		fmt.Fprintf(inv.stderr, "usage: %s\n", inv.usage())
		return exitUsage
	case errors.As(err, &config):
		if config.missing != "" {
			fmt.Fprintf(inv.stderr, "%s: %v\n", inv.prefix(), config)
		} else {
			writeLines(inv.stderr, config.Error())
		}
		return exitUsage
	case errors.As(err, &noDaemon):
		fmt.Fprintf(inv.stderr, "deployer: %v\n", noDaemon)
		return exitFailed
	case errors.As(err, &api):
		fmt.Fprintf(inv.stderr, "%s: %v\n", inv.prefix(), api)
		switch api.body.Code {
		case "unknown_app", "bad_request":
			return exitUsage
		}
		return exitFailed
	}
	if _, refused := errorCode(err); !refused && inv.cmd != nil && inv.cmd.operation {
		// The request may have reached the daemon (a bad answer, an
		// interrupt, a connection closed before the answer's head): it may
		// be swapping now. Exit 1 would say the old version serves on.
		fmt.Fprintf(inv.stderr, "%s: %v; the outcome is unknown: see '%s'\n",
			inv.prefix(), err, strings.TrimSpace("deployer status "+firstOf(inv.app, inv.appArg())))
		return exitUnknown
	}
	fmt.Fprintf(inv.stderr, "%s: %v\n", inv.prefix(), err)
	return exitFailed
}

// prefix starts every error line: "deployer swap", or "deployer" before the
// command is known.
func (inv *invocation) prefix() string {
	if inv.cmd == nil {
		return "deployer"
	}
	return "deployer " + inv.cmd.name
}

func (inv *invocation) usage() string {
	if inv.cmd == nil {
		return "deployer [-c PATH] COMMAND [ARGS] (see 'deployer help')"
	}
	return inv.cmd.usage()
}

// writeLines writes s with a final newline, however many lines it holds.
func writeLines(w io.Writer, s string) {
	io.WriteString(w, strings.TrimRight(s, "\n")+"\n")
}
