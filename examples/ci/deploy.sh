#!/bin/sh
# deploy.sh VERSION — build a release, copy it to the server, swap to it with
# deployer, and roll back if the smoke test fails. Plain POSIX sh; needs ssh
# and scp (jq is used when installed, not required). See README.md beside it.
#
# Settings, from the environment:
#   DEPLOY_HOST      ssh destination of the server, e.g. deploy@app1 (required)
#   DEPLOY_APP       the app in deploy.toml (default web)
#   DEPLOY_DIR       directory on the server holding deploy.toml and releases/ (default /srv/app)
#   DEPLOY_CONFIG    deploy.toml on the server (default $DEPLOY_DIR/deploy.toml)
#   DEPLOY_TIMEOUT   deployer swap --timeout (default 5m)
#   DEPLOY_RESULT    file to write deployer's JSON result to (optional)
#   BUILD_CMD        shell command that builds the release into $RELEASE_DIR
#                    (default: go build -o "$RELEASE_DIR/bin/$DEPLOY_APP" .)
#   SMOKE_URL        URL that must answer 2xx after the swap (curl -fsS), or
#   SMOKE_CMD        shell command that must succeed after the swap; either
#                    failing rolls back (tried SMOKE_TRIES times, default 3)
#   DEPLOYER         deployer on the server (default deployer)
#   SSH, SCP         ssh and scp commands (default ssh, scp), e.g. "ssh -p 2222"
#   JQ               jq, to read deployer's JSON (default jq; sed when it is missing)
#
# Exit status:
#   0  VERSION serves (and passed the smoke test)
#   1  VERSION failed to start, or the build, copy or ssh failed: the old
#      version serves on, untouched
#   2  bad usage or settings (or deployer said so: unknown app, bad deploy.toml)
#   3  deployer swap --timeout passed before VERSION served: old version untouched
#   4  VERSION served but failed the smoke test: rolled back to the version before
#   5  VERSION failed the smoke test and the rollback failed too: look now
#   6  the swap's outcome is unknown (deployer lost its daemon, or ssh
#      dropped, before the result): look now with 'deployer status APP'
set -u

APP=${DEPLOY_APP:-web}
DIR=${DEPLOY_DIR:-/srv/app}
CONFIG=${DEPLOY_CONFIG:-$DIR/deploy.toml}
TIMEOUT=${DEPLOY_TIMEOUT:-5m}
DEPLOYER=${DEPLOYER:-deployer}
SSH=${SSH:-ssh}
SCP=${SCP:-scp}
JQ=${JQ:-jq}
SMOKE_TRIES=${SMOKE_TRIES:-3}

say() { printf '%s deploy: %s\n' "$(date -u +%H:%M:%SZ)" "$*"; }
die() {
	code=$1
	shift
	printf '%s deploy: FAILED: %s\n' "$(date -u +%H:%M:%SZ)" "$*" >&2
	exit "$code"
}

# field NAME: a top-level string or boolean field of the JSON in $result.
# deployer prints one field per line, two spaces in, so sed is enough when
# jq is missing.
field() {
	if command -v "$JQ" >/dev/null 2>&1; then
		# shellcheck disable=SC2016 # $k is jq's variable, not the shell's
		printf '%s\n' "$result" | "$JQ" -r --arg k "$1" '.[$k] | if . == null then empty else tostring end'
	else
		printf '%s\n' "$result" | sed -n \
			-e "s/^  \"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" \
			-e "s/^  \"$1\": \([^\",]*\),\{0,1\}\$/\1/p"
	fi
}

# remote CMD...: run a command on the server. Every word is one we checked
# or quoted: ssh hands the command line to the remote shell as one string.
remote() { $SSH "$DEPLOY_HOST" "$@"; }

# q WORD: WORD single-quoted for the remote shell.
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

[ $# -eq 1 ] || die 2 "usage: deploy.sh VERSION"
VERSION=$1
: "${DEPLOY_HOST:?set DEPLOY_HOST to the server, e.g. deploy@app1}"
# The same rule deployer applies, checked before anything is built.
case $VERSION in
'' | [!A-Za-z0-9]* | *[!A-Za-z0-9._+-]*)
	die 2 "version '$VERSION': use letters, digits and . _ + -, starting with a letter or digit"
	;;
esac
[ ${#VERSION} -le 64 ] || die 2 "version '$VERSION' is longer than 64 characters"
case $APP in '' | *[!a-z0-9_-]*) die 2 "DEPLOY_APP '$APP': lowercase letters, digits, - and _ only" ;; esac

# 1. Build into a fresh local directory.
RELEASE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/release.XXXXXX") || die 1 "mktemp failed"
trap 'rm -rf "$RELEASE_DIR"' EXIT
export RELEASE_DIR VERSION DEPLOY_APP="$APP"
say "building $APP $VERSION"
sh -c "${BUILD_CMD:-go build -o \"\$RELEASE_DIR/bin/\$DEPLOY_APP\" .}" || die 1 "build of $VERSION failed"

# 2. Copy it to releases/VERSION on the server: first under a temporary
# name, then one mv, so that deployer never starts a half-copied release.
# A version that is already there is not copied again: versions are
# immutable (it may be serving), and this makes a re-run of a job safe.
dest="$DIR/releases/$VERSION"
incoming="$DIR/releases/.incoming-$VERSION-$$"
if remote "test -d $(q "$dest")"; then
	say "releases/$VERSION is already on $DEPLOY_HOST: not copied again"
else
	say "copying $VERSION to $DEPLOY_HOST:$dest"
	remote "mkdir -p $(q "$DIR/releases")" || die 1 "cannot reach $DEPLOY_HOST or create $DIR/releases"
	# scp -r SRC HOST:DEST with DEST missing creates DEST with SRC's contents.
	# (rsync -a --delete "$RELEASE_DIR/" "$DEPLOY_HOST:$incoming/" does the same.)
	$SCP -r "$RELEASE_DIR" "$DEPLOY_HOST:$incoming" || die 1 "copy to $DEPLOY_HOST failed"
	remote "mv $(q "$incoming") $(q "$dest")" || die 1 "could not move the release into place on $DEPLOY_HOST"
fi

# 3. Swap. deployer prints one JSON object; its exit status says what
# happened (0 ok, 1 failed, 2 usage, 3 timed out, 4 unknown: the daemon's
# result never came), ssh's 255 that the connection failed, perhaps
# halfway.
say "swapping $APP to $VERSION (timeout $TIMEOUT)"
result=$(remote "$(q "$DEPLOYER") -c $(q "$CONFIG") swap $(q "$APP") $(q "$VERSION") --json --timeout $(q "$TIMEOUT")")
status=$?
[ -n "${DEPLOY_RESULT:-}" ] && printf '%s\n' "$result" >"$DEPLOY_RESULT"
[ -n "$result" ] && printf '%s\n' "$result"
reason=$(field error)
old=$(field old_version)
case $status in
0) ;;
1)
	# The new version never took traffic: there is nothing to roll back.
	die 1 "$APP $VERSION did not start (${reason:-see above}); ${old:-the old version} serves on, untouched"
	;;
2) die 2 "deployer refused the swap: ${reason:-see above}" ;;
3)
	if [ "$(field traffic_moved)" = true ]; then
		say "warning: $reason"
	else
		die 3 "$APP $VERSION was not serving within $TIMEOUT; ${old:-the old version} serves on, untouched"
	fi
	;;
4) die 6 "the outcome of the swap of $APP to $VERSION is unknown (${reason:-no result from deployer}): check 'deployer status $APP' on $DEPLOY_HOST" ;;
255) die 6 "ssh to $DEPLOY_HOST failed during the swap; it may or may not have run: check 'deployer status $APP' there" ;;
*) die 1 "deployer swap exited $status: ${reason:-see above}" ;;
esac
ms=$(field duration_ms)
say "$APP now serves $VERSION (was ${old:-nothing}), swapped in $((${ms:-0} / 1000)).$((${ms:-0} % 1000 / 100))s"

# 4. Smoke test. Health checks passed already; this is the test of what
# health cannot see (a page, a query, a login). The old version is still
# draining and `deployer rollback` brings it back with no downtime.
smoke() {
	if [ -n "${SMOKE_CMD:-}" ]; then
		sh -c "$SMOKE_CMD"
	elif [ -n "${SMOKE_URL:-}" ]; then
		curl -fsS -o /dev/null --max-time 10 "$SMOKE_URL"
	fi
}
if [ -n "${SMOKE_CMD:-}${SMOKE_URL:-}" ]; then
	try=1
	until smoke; do
		if [ "$try" -ge "$SMOKE_TRIES" ]; then
			say "smoke test failed $try times: rolling $APP back to ${old:-the previous version}"
			result=$(remote "$(q "$DEPLOYER") -c $(q "$CONFIG") rollback $(q "$APP") --json --timeout $(q "$TIMEOUT")")
			rstatus=$?
			[ -n "$result" ] && printf '%s\n' "$result"
			if [ "$rstatus" -eq 0 ]; then
				die 4 "$APP $VERSION failed its smoke test; rolled back to $(field new_version)"
			fi
			die 5 "$APP $VERSION failed its smoke test and the rollback failed (exit $rstatus: $(field error)); $VERSION may still serve"
		fi
		try=$((try + 1))
		sleep 2
	done
	say "smoke test passed"
fi
say "deployed $APP $VERSION"
