package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseEnvFile(t *testing.T) {
	src := "# secrets of web\n" +
		"\n" +
		"DATABASE_URL=postgres://app@db/app?sslmode=require\n" +
		"  export API_KEY=abc#123   \n" + // an unquoted # is part of the value; trailing spaces go
		"EMPTY=\n" +
		"GREETING=\"hi\\n\\\"there\\\" \\\\ \\$HOME\"   # a comment\n" +
		"PATTERN='a\\b$c \"x\"'\n" +
		"WINDOWS=crlf\r\n" +
		"SPACED=  leading kept\n" +
		"API_KEY=second\n" // a key set twice: both kept, in order; the last wins in the environment
	got, err := parseEnvFile([]byte(src), "web.env")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"DATABASE_URL=postgres://app@db/app?sslmode=require",
		"API_KEY=abc#123",
		"EMPTY=",
		"GREETING=hi\n\"there\" \\ $HOME",
		`PATTERN=a\b$c "x"`,
		"WINDOWS=crlf",
		"SPACED=  leading kept",
		"API_KEY=second",
	}
	if !slices.Equal(got, want) {
		t.Errorf("parsed\n%q\nwant\n%q", got, want)
	}

	for _, tc := range []struct {
		src  string
		line int
		msg  string
	}{
		{"A=1\nnot a variable\n", 2, "want KEY=VALUE, found no ="},
		{"A =1\n", 1, `space before =: write KEY=VALUE`},
		{"1A=1\n", 1, `the text before = is not a variable name`},
		{"A-B=1\n", 1, `the text before = is not a variable name`},
		{"TOKEN: s3cr3t=1\n", 1, `the text before = is not a variable name`},
		{"DEPLOYER_APP=x\n", 1, "DEPLOYER_APP: the DEPLOYER_ variables are set by deployer"},
		{"A=\"open\n", 1, `A: no closing " (a value spans one line`},
		{"A='open\n", 1, "A: no closing '"},
		{"A=\"s3cr3t\" s3cr3t\n", 1, `A: text after the closing " (only a # comment may follow`},
		{"A=\"\\q\"\n", 1, `A: unknown escape \q`},
		{"A=x\x00y\n", 1, "A: the value holds a NUL byte"},
	} {
		_, err := parseEnvFile([]byte(tc.src), "web.env")
		var ee *EnvFileError
		if !errors.As(err, &ee) || ee.Line != tc.line || !strings.Contains(ee.Msg, tc.msg) || !strings.HasPrefix(err.Error(), "web.env:") {
			t.Errorf("%q: %v, want web.env:%d: …%s…", tc.src, err, tc.line, tc.msg)
		}
		// Errors end up in logs, swap output and status: never a value.
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%q: the error %q shows the line's text", tc.src, err)
		}
	}
}

// Env files are found relative to deploy.toml's directory, with their
// placeholders expanded, read in order; a missing or oversized one is an
// error naming it as configured.
func TestEnvFromFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "common.env"), []byte("A=common\nB=common\n"))
	if err := os.MkdirAll(filepath.Join(dir, "web", "v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "web", "v2", "1.env"), []byte("B=instance\n"))
	v := Vars{App: "web", Version: "v2", Instance: 1}
	got, err := envFromFiles([]string{"common.env", "{app}/{version}/{instance}.env"}, v, dir)
	if want := []string{"A=common", "B=common", "B=instance"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("envFromFiles: %q, %v; want %q", got, err, want)
	}
	if _, err := envFromFiles([]string{"{app}/missing.env"}, v, dir); err == nil || err.Error() != "web/missing.env: no such file or directory" {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.env")
	writeFile(t, big, []byte("A="+strings.Repeat("x", maxEnvFileSize)+"\n"))
	if _, err := envFromFiles([]string{big}, v, dir); err == nil || !strings.Contains(err.Error(), "not an env file") {
		t.Errorf("oversized file: %v", err)
	}
}

// deployer check reads the env files of the configured version and reports
// a problem at env_file's line with the env file's own line; a start or a
// reload leaves that to each launch (a file may be written by then).
func TestCheckConfigReadsEnvFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "good.env"), []byte("A=1\n"))
	writeFile(t, filepath.Join(dir, "v1.env"), []byte("A=1\nbroken line\n"))
	for _, tc := range []struct {
		name, envFile string
		want          string // in the error; "": valid
	}{
		{"good", `"good.env"`, ""},
		{"a bad line", `["good.env", "{version}.env"]`, `apps.web.env_file: v1.env:2: want KEY=VALUE, found no =`},
		{"missing", `"{app}-secrets.env"`, `apps.web.env_file: web-secrets.env: no such file or directory`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "deploy.toml")
			writeFile(t, path, []byte("[apps.web]\ncommand = [\"./web\"]\nversion = \"v1\"\nenv_file = "+tc.envFile+"\n"))
			if _, err := LoadConfig(path); err != nil {
				t.Fatalf("LoadConfig: %v (it does not read env files)", err)
			}
			_, err := CheckConfig(path)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckConfig: %v", err)
				}
				return
			}
			ces := configErrors(t, err)
			if len(ces) != 1 || ces[0].Line != 4 || ces[0].Msg != tc.want {
				t.Fatalf("CheckConfig: %v; want deploy.toml:4: %s", err, tc.want)
			}
		})
	}
}

// env_file takes one path or several.
func TestEnvFileKey(t *testing.T) {
	for src, want := range map[string][]string{
		`env_file = "secrets.env"`:               {"secrets.env"},
		`env_file = ["common.env", "{app}.env"]`: {"common.env", "{app}.env"},
		`env = { A = "1" }`:                      nil,
	} {
		cfg, err := LoadConfig(writeConfig(t, "[apps.web]\ncommand = [\"./web\"]\nversion = \"v1\"\n"+src+"\n"))
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if got := cfg.Apps["web"].EnvFiles; !slices.Equal(got, want) {
			t.Errorf("%s: EnvFiles %q, want %q", src, got, want)
		}
	}
}
