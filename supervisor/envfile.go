package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// An app's env_file entries name files of environment variables read at
// every launch of one of its processes, so that secrets stay out of
// deploy.toml and a changed file takes effect at the next swap or restart.
//
// The format is close to systemd's EnvironmentFile and to .env files, with
// rules of its own where those two differ (an unquoted # is literal, an
// "export " prefix is allowed):
//
//	# a comment; blank lines are ignored
//	DATABASE_URL=postgres://app@db/app
//	export API_KEY=abc123        (an "export " prefix is allowed)
//	GREETING="hi\nthere"         (double quotes: \\ \" \n \t \r \$ escapes)
//	PATTERN='a\b$c'              (single quotes: literal)
//
// An unquoted value is the rest of the line, trailing spaces removed, taken
// literally (a # in it is part of the value). After a closing quote only
// spaces and a # comment may follow. Values are never expanded: no $VAR and
// no placeholders. A key set twice keeps the last value.

// maxEnvFileSize bounds an env file: the environment of a process is
// limited (ARG_MAX) and anything this large is not an env file.
const maxEnvFileSize = 1 << 20

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// envFilePlaceholders are the placeholders an env_file path may hold: those
// known before the process has a socket or a port.
var envFilePlaceholders = []string{"{app}", "{version}", "{instance}"}

// unknownEnvFilePlaceholders returns the placeholders in an env_file path
// that it may not hold.
func unknownEnvFilePlaceholders(path string) []string {
	var bad []string
	for _, p := range placeholderRE.FindAllString(path, -1) {
		if !slices.Contains(envFilePlaceholders, p) {
			bad = append(bad, p)
		}
	}
	return bad
}

// EnvFileError is a problem in an env file, with its line (0: the file as a
// whole).
type EnvFileError struct {
	File string
	Line int
	Msg  string
}

func (e *EnvFileError) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Msg
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// readEnvFile reads the env file at path, named as name in errors, and
// returns its variables as KEY=VALUE in file order.
func readEnvFile(path, name string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		// The file is named as configured; the absolute path adds nothing.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &EnvFileError{File: name, Msg: err.Error()}
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxEnvFileSize+1))
	if err != nil {
		return nil, &EnvFileError{File: name, Msg: err.Error()}
	}
	if len(src) > maxEnvFileSize {
		return nil, &EnvFileError{File: name, Msg: fmt.Sprintf("larger than %d bytes: not an env file", maxEnvFileSize)}
	}
	return parseEnvFile(src, name)
}

// parseEnvFile parses the contents of an env file (see the format above).
func parseEnvFile(src []byte, name string) ([]string, error) {
	var vars []string
	for i, line := range bytes.Split(src, []byte("\n")) {
		problem := func(format string, args ...any) error {
			return &EnvFileError{File: name, Line: i + 1, Msg: fmt.Sprintf(format, args...)}
		}
		s := strings.TrimSuffix(string(line), "\r")
		t := strings.TrimLeft(s, " \t")
		if t == "" || t[0] == '#' {
			continue
		}
		if rest, ok := strings.CutPrefix(t, "export "); ok {
			t = strings.TrimLeft(rest, " \t")
		}
		key, raw, ok := strings.Cut(t, "=")
		if !ok {
			return nil, problem("want KEY=VALUE, found no =")
		}
		if !envKeyRE.MatchString(key) {
			if strings.TrimRight(key, " \t") != key {
				return nil, problem("space before =: write KEY=VALUE")
			}
			// The text is not quoted: a broken line may hold a secret.
			return nil, problem("the text before = is not a variable name: letters, digits and _, not starting with a digit")
		}
		if strings.HasPrefix(key, "DEPLOYER_") {
			return nil, problem("%s: the DEPLOYER_ variables are set by deployer", key)
		}
		val, err := envValue(raw)
		if err != "" {
			return nil, problem("%s: %s", key, err)
		}
		if strings.ContainsRune(val, 0) {
			return nil, problem("%s: the value holds a NUL byte", key)
		}
		vars = append(vars, key+"="+val)
	}
	return vars, nil
}

// envValue decodes the text after "=", or says what is wrong with it.
func envValue(raw string) (string, string) {
	if raw == "" || (raw[0] != '"' && raw[0] != '\'') {
		return strings.TrimRight(raw, " \t"), ""
	}
	q := raw[0]
	var b strings.Builder
	i := 1
	for ; i < len(raw) && raw[i] != q; i++ {
		c := raw[i]
		if q == '"' && c == '\\' && i+1 < len(raw) {
			i++
			switch raw[i] {
			case 'n':
				c = '\n'
			case 't':
				c = '\t'
			case 'r':
				c = '\r'
			case '\\', '"', '$':
				c = raw[i]
			default:
				return "", fmt.Sprintf(`unknown escape \%c in a double-quoted value (known: \\ \" \n \t \r \$)`, raw[i])
			}
		}
		b.WriteByte(c)
	}
	if i == len(raw) {
		return "", fmt.Sprintf("no closing %c (a value spans one line; write \\n for a newline inside double quotes)", q)
	}
	if after := strings.TrimLeft(raw[i+1:], " \t"); after != "" && after[0] != '#' {
		// Not quoted: it is part of what was meant as the value.
		return "", fmt.Sprintf("text after the closing %c (only a # comment may follow a quoted value)", q)
	}
	return b.String(), ""
}

// envFromFiles reads an app's env files for one process, in order: KEY=VALUE
// entries, later files overriding earlier ones as they come later in the
// environment. Relative paths are relative to dir (deploy.toml's).
func envFromFiles(files []string, v Vars, dir string) ([]string, error) {
	var env []string
	for _, f := range files {
		name := Expand(f, v)
		path := name
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		vars, err := readEnvFile(path, name)
		if err != nil {
			return nil, err
		}
		env = append(env, vars...)
	}
	return env, nil
}
