#!/bin/sh
# render.sh renders nginx.conf.tmpl into DIR/nginx.conf, filling in the
# fields Dir, Socket and Listen as Go's text/template would.
#
#   usage: render.sh DIR [SOCKET [LISTEN]]
#
# DIR     where nginx.conf goes and nginx keeps its pid, logs and temp files
#         (created if missing)
# SOCKET  the app's stable socket (default: run/web/current.sock next to this
#         script, as examples/nginx/deploy.toml lays it out)
# LISTEN  nginx's address (default: 127.0.0.1:8080)
#
# It prints the path of the rendered file.
set -eu

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
	echo "usage: $0 DIR [SOCKET [LISTEN]]" >&2
	exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
dir=$(cd "$1" && pwd)
socket=${2:-$here/run/web/current.sock}
listen=${3:-127.0.0.1:8080}

# nginx resolves a relative unix: path against its own working directory,
# not the caller's: make it absolute now.
case $socket in
/*) ;;
*) socket=$(pwd)/$socket ;;
esac

# Escape what is special on the replacement side of sed's s|||.
escape() { printf '%s\n' "$1" | sed 's/[\\|&]/\\&/g'; }

# Render to a temp file and rename, so a running nginx reloading its config
# never reads a half-written one.
sed -e "s|{{\.Dir}}|$(escape "$dir")|g" \
	-e "s|{{\.Socket}}|$(escape "$socket")|g" \
	-e "s|{{\.Listen}}|$(escape "$listen")|g" \
	"$here/nginx.conf.tmpl" >"$dir/nginx.conf.tmp"
mv "$dir/nginx.conf.tmp" "$dir/nginx.conf"
echo "$dir/nginx.conf"
