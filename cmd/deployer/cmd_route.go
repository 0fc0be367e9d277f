package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/deployer/deployer/supervisor"
)

func routeCommand() *command {
	return &command{
		name: "route",
		// The action is checked by runRoute: checkArgs assumes that only
		// the first argument may be left out, and here it may (ls).
		args:       []string{"[set|rm|ls]", "[HOST]", "[TARGET]"},
		flagsUsage: "[--force]",
		json:       true,
		summary:    "change or list the routes shared through Redis ([routes] redis)",
		about: `Change the routing table that every deployer proxy with the same
[routes] redis reads, and that they apply within milliseconds:

  deployer route set HOST TARGET   route HOST to TARGET
  deployer route rm HOST           remove HOST's route
  deployer route ls                list the table (also: deployer route)

HOST is an exact name or "*.example.com". TARGET is an app of deploy.toml,
unix:/path/to.sock, host:port (an app host elsewhere, another deployer for
instance), or several addresses separated by commas, balanced round robin.
set checks HOST and TARGET before writing, and that an app TARGET is in
deploy.toml (--force writes it anyway, for proxies whose deploy.toml
differs). rm checks HOST as set does (--force removes a field that set
would refuse, written by another tool). set and rm publish on
deployer:routes, so every proxy re-reads the table at once.
The command talks to Redis itself; no daemon needs to run here.`,
		exits: `0  done (rm of a host without a route too)
1  Redis did not answer
2  bad usage, invalid HOST or TARGET, no [routes] redis in deploy.toml`,
		example: "deployer route set www.example.com 10.0.0.5:8080,10.0.0.6:8080",
		setup: func(fs *flag.FlagSet) runFunc {
			force := fs.Bool("force", false, "set: write an app TARGET that deploy.toml does not define; rm: remove a HOST that set would refuse")
			return func(ctx context.Context, inv *invocation) error {
				return runRoute(ctx, inv, *force)
			}
		},
	}
}

func runRoute(ctx context.Context, inv *invocation, force bool) error {
	action, args := "ls", inv.args
	if len(args) > 0 {
		action, args = args[0], args[1:]
	}
	want := map[string][]string{"set": {"HOST", "TARGET"}, "rm": {"HOST"}, "ls": nil}
	names, ok := want[action]
	switch {
	case !ok:
		return usageErrorf("unknown action %q: want set, rm or ls", action)
	case len(args) < len(names):
		return usageErrorf("route %s: missing %s", action, names[len(args)])
	case len(args) > len(names):
		return usageErrorf("route %s: unexpected argument %q", action, args[len(names)])
	}
	cfg, err := inv.loadConfig()
	if err != nil {
		return err
	}
	if cfg.Routes.Redis == "" {
		return usageErrorf(`%s has no [routes] redis (add a [routes] table with redis = "redis://127.0.0.1:6379/0")`, inv.configPath)
	}
	var spec supervisor.RouteSpec
	switch action {
	case "set":
		if spec, err = supervisor.ParseRoute(args[0], args[1]); err != nil {
			return usageErrorf("%s", strings.TrimPrefix(err.Error(), "supervisor: "))
		}
		if spec.App != "" && cfg.Apps[spec.App] == nil && !force {
			return usageErrorf("app %q is not in %s (%s); --force writes it anyway", spec.App, inv.configPath, appList(cfg.AppNames()))
		}
	case "rm":
		if err := checkRouteHost(args[0]); err != nil && !force {
			return usageErrorf("%s; --force removes it anyway", strings.TrimPrefix(err.Error(), "supervisor: "))
		}
	}
	store, err := supervisor.OpenRouteStore(cfg.Routes.Redis)
	if err != nil {
		return err
	}
	defer store.Close()
	redisErr := func(err error) error {
		return fmt.Errorf("redis at %s: %w", supervisor.RedactURL(cfg.Routes.Redis), err)
	}
	switch action {
	case "set":
		if err := store.Set(ctx, spec); err != nil {
			return redisErr(err)
		}
		if inv.asJSON {
			return writeJSONValue(inv.stdout, map[string]any{"ok": true, "host": spec.Host, "target": spec.Value()})
		}
		fmt.Fprintf(inv.stdout, "%s → %s\n", spec.Host, spec.Value())
	case "rm":
		removed, err := store.Remove(ctx, args[0])
		if err != nil {
			return redisErr(err)
		}
		if inv.asJSON {
			return writeJSONValue(inv.stdout, map[string]any{"ok": true, "host": args[0], "removed": removed})
		}
		if removed {
			fmt.Fprintf(inv.stdout, "removed the route of %s\n", args[0])
		} else {
			fmt.Fprintf(inv.stdout, "%s had no route\n", args[0])
		}
	case "ls":
		table, err := store.List(ctx)
		if err != nil {
			return redisErr(err)
		}
		ls := listRoutes(table, cfg)
		if inv.asJSON {
			return writeJSONValue(inv.stdout, map[string]any{"redis": supervisor.RedactURL(cfg.Routes.Redis), "routes": ls})
		}
		return writeRoutes(inv.stdout, ls)
	}
	return nil
}

// checkRouteHost applies route set's rule for HOST to a HOST given alone, as
// rm's is: supervisor.ParseRoute checks the host before the target, so with
// a target that always parses, any error is the host's. A typo (rm
// "www.example.com:80") then says why instead of "had no route", exit 0.
func checkRouteHost(host string) error {
	_, err := supervisor.ParseRoute(host, "127.0.0.1:80")
	return err
}

// listedRoute is one entry of `route ls`.
type listedRoute struct {
	Value   string   `json:"value"`             // as stored in Redis
	App     string   `json:"app,omitempty"`     // an app of deploy.toml
	Targets []string `json:"targets,omitempty"` // the addresses
	Error   string   `json:"error,omitempty"`   // why proxies ignore it
}

// listRoutes parses the table the way the daemons do, so ls shows what they
// make of each entry.
func listRoutes(table map[string]string, cfg *supervisor.Config) map[string]listedRoute {
	out := make(map[string]listedRoute, len(table))
	for host, value := range table {
		lr := listedRoute{Value: value}
		spec, err := supervisor.ParseRoute(host, value)
		switch {
		case err != nil:
			lr.Error = strings.TrimPrefix(err.Error(), supervisor.ErrBadRoute.Error()+": ")
		case spec.App != "":
			lr.App = spec.App
			if cfg.Apps[spec.App] == nil {
				lr.Error = fmt.Sprintf("app %q is not in this deploy.toml", spec.App)
			}
		default:
			lr.Targets = strings.Split(spec.Value(), ",")
		}
		out[host] = lr
	}
	return out
}

// writeRoutes prints the table for people, sorted by host:
//
//	HOST              TARGET
//	www.example.com   10.0.0.5:8080, 10.0.0.6:8080
//	blog.example.com  blog (app)
func writeRoutes(w io.Writer, routes map[string]listedRoute) error {
	if len(routes) == 0 {
		fmt.Fprintln(w, "no routes in Redis")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tTARGET")
	for _, host := range sortedHosts(routes) {
		r := routes[host]
		target := strings.Join(r.Targets, ", ")
		switch {
		case r.Error != "":
			target = fmt.Sprintf("%q  (ignored: %s)", r.Value, r.Error)
		case r.App != "":
			target = r.App + " (app)"
		}
		fmt.Fprintf(tw, "%s\t%s\n", host, target)
	}
	return tw.Flush()
}

func sortedHosts(m map[string]listedRoute) []string {
	return slices.Sorted(maps.Keys(m))
}

// writeJSONValue prints v as indented JSON.
func writeJSONValue(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
