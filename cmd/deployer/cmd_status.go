package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/deployer/deployer/supervisor"
)

func statusCommand() *command {
	return &command{
		name:    "status",
		args:    []string{"[APP]"},
		json:    true,
		summary: "show every app's version, state, instances, requests and the host load",
		about: `Show each app (or only APP): the version serving and its state, requests
in flight and held, each instance's pid, socket, health, restarts, CPU and
memory, the versions still draining, and the host's load average.

With --json the daemon's answer is printed as it is: one object
{"apps":[...],"load":{...}}; the README's "Commands" section lists its
fields.

Unlike the other commands, status does not insist on APP when deploy.toml
defines several apps: leaving it out shows them all.`,
		exits: `0  the status was shown
1  no daemon is running
` + configWarnExit,
		example: "deployer status --json | jq '.apps[].version'",
		run:     runStatus,
	}
}

func runStatus(ctx context.Context, inv *invocation) error {
	cfg, err := inv.loadConfigForDaemon()
	if err != nil {
		return err
	}
	app, err := inv.optionalApp(cfg)
	if err != nil {
		return err
	}
	raw, err := inv.client(cfg).status(ctx, app)
	if err != nil {
		return err
	}
	if inv.asJSON {
		return writeIndented(inv.stdout, raw)
	}
	var st supervisor.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("bad answer from daemon: %w", err)
	}
	return writeStatus(inv.stdout, &st)
}

// writeStatus prints st for people: a block per app, then the load.
//
//	web: v2 serving, 3 in flight, 0 held (previous v1)
//	  INSTANCE  VERSION  PID   HEALTHY  RESTARTS  CPU %  RSS MiB  SOCKET
//	  0         v2       4242  yes      0         1.5    23.4     /srv/run/web/v2-0-x1y2z3w4.sock
//	  draining v1: 2 in flight
//
//	load average: 0.52, 0.48, 0.40
func writeStatus(w io.Writer, st *supervisor.Status) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, a := range st.Apps {
		fmt.Fprintf(tw, "%s: %s, %d in flight, %d held", a.Name, strings.TrimSpace(a.Version+" "+a.State), a.InFlight, a.Held)
		if a.Previous != "" {
			fmt.Fprintf(tw, " (previous %s)", a.Previous)
		}
		fmt.Fprintln(tw)
		if a.LastError != "" {
			fmt.Fprintf(tw, "  last error: %s\n", oneLine(a.LastError))
		}
		if len(a.Pending) > 0 {
			fmt.Fprintf(tw, "  pending: %s changed in deploy.toml; takes effect at the next swap or restart\n", strings.Join(a.Pending, ", "))
		}
		if len(a.Instances) > 0 {
			fmt.Fprintln(tw, "  INSTANCE\tVERSION\tPID\tHEALTHY\tRESTARTS\tCPU %\tRSS MiB\tSOCKET")
			for _, in := range a.Instances {
				fmt.Fprintf(tw, "  %d\t%s\t%d\t%s\t%d\t%.1f\t%.1f\t%s\n",
					in.Instance, in.Version, in.PID, yesNo(in.Healthy), in.Restarts,
					in.CPU, float64(in.RSS)/(1<<20), in.Socket)
			}
		}
		for _, v := range a.Versions {
			if v.State == supervisor.StateDraining {
				fmt.Fprintf(tw, "  draining %s: %d in flight\n", v.Version, v.InFlight)
			}
		}
		fmt.Fprintln(tw)
	}
	if r := st.Routes; r != nil {
		fmt.Fprintf(tw, "routes from redis (%s): %s, %d hosts", r.URL, r.Redis, r.Hosts)
		if r.LastError != "" {
			fmt.Fprintf(tw, ", last error: %s", oneLine(r.LastError))
		}
		fmt.Fprintln(tw)
		for _, rt := range r.Routes {
			switch {
			case rt.Error != "":
				fmt.Fprintf(tw, "  %s\t%s\tignored: %s\n", rt.Host, rt.Target, oneLine(rt.Error))
			default:
				fmt.Fprintf(tw, "  %s\t%s\n", rt.Host, rt.Target)
			}
		}
		fmt.Fprintln(tw)
	}
	if st.ConfigError != "" {
		fmt.Fprintf(tw, "deploy.toml is invalid; the daemon runs on its last valid config:\n  %s\n\n", strings.ReplaceAll(st.ConfigError, "\n", "\n  "))
	}
	fmt.Fprintf(tw, "load average: %.2f, %.2f, %.2f\n", st.Load.Load1, st.Load.Load5, st.Load.Load15)
	if st.Daemon.PID != 0 {
		fmt.Fprintf(tw, "daemon: pid %d, up since %s", st.Daemon.PID, st.Daemon.Started.Local().Format("2006-01-02 15:04:05"))
		if st.Daemon.Procs > 0 {
			fmt.Fprintf(tw, ", procs %d of %d CPUs", st.Daemon.Procs, st.Daemon.CPUs)
			if st.Daemon.ProcsSource == "auto" && st.Daemon.ProcsMin < st.Daemon.ProcsMax {
				fmt.Fprintf(tw, " (auto: %d steady, %d while an app starts or the daemon is busy)", st.Daemon.ProcsMin, st.Daemon.ProcsMax)
			}
		}
		fmt.Fprintln(tw)
		if st.Daemon.Build.Version != "" {
			fmt.Fprintf(tw, "daemon build: deployer %s\n", st.Daemon.Build)
		}
		if b := st.Daemon.BinaryBuild; b != nil {
			fmt.Fprintf(tw, "%s is now another build: deployer %s; 'deployer upgrade' switches to it\n", st.Daemon.Binary, b)
		}
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// oneLine keeps a multi-line error from breaking the table's layout.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
