package main

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// logs --json against a real daemon: every line of an app's output comes
// back as {"time", "version", "instance", "text"}, the version and instance
// that wrote it, and -f --json follows a swap and ends with status 0 on
// SIGINT.
func TestLogsJSONFromDaemon(t *testing.T) {
	e := newEnv(t)
	e.basicConfig("")
	e.release("v1", "-log-every", "20ms")
	e.release("v2", "-log-every", "20ms")
	e.start()
	clock := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d\d\d$`)
	tick := regexp.MustCompile(`^tick \d+ (v\d)$`)

	// check decodes one line of logs --json and returns the version.
	check := func(line string) string {
		t.Helper()
		var l jsonLogLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("logs --json line %q: %v", line, err)
		}
		if !clock.MatchString(l.Time) || l.Instance == nil || *l.Instance != 0 {
			t.Fatalf("logs --json line %q: want a time of day and instance 0", line)
		}
		if m := tick.FindStringSubmatch(l.Text); m != nil && m[1] != l.Version {
			t.Fatalf("logs --json line %q: text from %s under version %s", line, m[1], l.Version)
		}
		return l.Version
	}

	waitFor(t, "5 lines of output", 10*time.Second, func() bool {
		out, _, _ := e.cli("logs", "--json", "-n", "5")
		return strings.Count(out, "\n") == 5
	})
	out := e.mustCLI("logs", "web", "--json", "-n", "5")
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if v := check(line); v != "v1" {
			t.Fatalf("logs --json line %q: version %s before any swap", line, v)
		}
	}

	follow := exec.Command(deployerBin, "-c", e.config, "logs", "web", "-f", "--json", "-n", "1")
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { follow.Process.Kill(); follow.Wait() })
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	e.mustCLI("swap", "v2")
	deadline := time.After(10 * time.Second)
	for v := ""; v != "v2"; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("logs -f --json ended before a line of v2")
			}
			v = check(line)
		case <-deadline:
			t.Fatal("logs -f --json printed no line of v2 within 10s of the swap")
		}
	}
	follow.Process.Signal(syscall.SIGINT)
	for range lines {
	}
	if err := follow.Wait(); err != nil {
		t.Fatalf("logs -f --json, interrupted: %v, want exit 0", err)
	}
}
