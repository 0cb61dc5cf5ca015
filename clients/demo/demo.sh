#!/bin/sh
# clients/demo/demo.sh - `make demo`: funneld and every service on a fresh
# log under $VAR (default var/demo, emptied first), the shipped funnel.yaml,
# then 90 days of Northwind Analytics' funnel through them
# (clients/demo/demo.py), then the dashboard's URL.  Keeps running until
# Ctrl-C, like `make run`; with DEMO_EXIT=1 it stops everything once the
# history is in (tests, the screenshot script).
#
# usage: BUILD=build sh clients/demo/demo.sh [demo.py options: --leads N --seed N ...]
# HTTP (default 127.0.0.1:7480) is where the dashboard is served; PORTS=any
# puts funneld and funnel-gateway on free ports (default: their own
# 7400-7402 and 7490).
BUILD=${BUILD:-build}
VAR=${VAR:-var/demo}
HTTP=${HTTP:-127.0.0.1:7480}
RULES=${RULES:-funnel.yaml}
export BUILD VAR HTTP RULES
here=$(dirname "$0")

# start from nothing, but never empty a directory the demo did not make,
# nor one a run is using (clients/run.sh holds $VAR/run.lock)
if [ -f "$VAR/run.lock" ] && ! flock -n "$VAR/run.lock" true; then
	echo "demo: $VAR is in use by a running demo; stop it first or set VAR" >&2
	exit 1
fi
if [ -d "$VAR" ] && [ -n "$(ls -A "$VAR")" ] && [ ! -f "$VAR/.funnel-demo" ]; then
	echo "demo: $VAR exists and is not a demo's: set VAR to another directory" >&2
	exit 1
fi
rm -rf "$VAR"
mkdir -p "$VAR"
: >"$VAR/.funnel-demo"
eps=""
if [ "${PORTS:-}" = any ]; then
	eps="--ingest tcp://127.0.0.1:* --publish tcp://127.0.0.1:* --query tcp://127.0.0.1:*"
	GATEWAY_HTTP=${GATEWAY_HTTP:-127.0.0.1:0}
	export GATEWAY_HTTP
fi
# a demo log: no fsync, for speed (nothing here must survive a power cut)
# shellcheck disable=SC2086 # eps is flag pairs
SVC_ARGS="--no-sync" sh "$here/../run.sh" --no-sync $eps >"$VAR/run.log" 2>&1 &
run=$!

stop() {
	trap - INT TERM
	kill -TERM "$run" 2>/dev/null
	wait "$run" 2>/dev/null
}
trap 'stop; exit 0' INT TERM

# the services are up once funnel-metrics answers (bounded: 20 s)
ready="$VAR/funneld.ready"
i=0
until [ -f "$ready" ] && curl -s -o /dev/null "http://$HTTP/healthz"; do
	if ! kill -0 "$run" 2>/dev/null || [ $i -ge 400 ]; then
		echo "demo: the system did not start:" >&2
		cat "$VAR/run.log" >&2
		stop
		exit 1
	fi
	sleep 0.05
	i=$((i + 1))
done
ep() { sed -n "s/^$1=//p" "$ready"; }

if ! /usr/bin/python3 "$here/demo.py" --ingest "$(ep ingest)" --query "$(ep query)" \
	--scoring-view "$VAR/scoring" --routing-view "$VAR/routing" --rules "$RULES" \
	--bin "$BUILD/bin" "$@"; then
	echo "demo: the history could not be sent; the system's log is $VAR/run.log" >&2
	stop
	exit 1
fi
echo "demo: the dashboard is at http://$HTTP/"
if [ "${DEMO_EXIT:-0}" = 1 ]; then
	stop
	exit 0
fi
echo "demo: Ctrl-C stops"
wait "$run"
