#!/bin/sh
# clients/run.sh - run the whole system on the embedded defaults: funneld
# with its log in var/funnel on loopback ports 7400-7402, then every
# service that is built (funnel-scoring, ...) with its view under var/ and
# the shared rules file funnel.yaml, and funnel-gateway on
# http://127.0.0.1:7490 (its lead id key in var/gateway.key).  Ctrl-C (or
# SIGTERM) stops the services first, then funneld, each with SIGTERM so
# they finish the batch in hand.
#
# usage: BUILD=build sh clients/run.sh [extra funneld flags]
# VAR (default var) moves every data directory; RULES (default
# funnel.yaml) names the rules file; HTTP (default funnel-metrics' own,
# 127.0.0.1:7480) where the dashboard is served; GATEWAY_HTTP (default
# funnel-gateway's own, 127.0.0.1:7490) where the forms are; SVC_ARGS more
# flags for every service (e.g. --no-sync).  The run stops, naming the
# reason, when the rules file has a mistake or a service does not start.
BUILD=${BUILD:-build}
VAR=${VAR:-var}
RULES=${RULES:-funnel.yaml}
BIN="$BUILD/bin"

mkdir -p "$VAR"
# One run per VAR: a second one must not remove or overwrite the ready
# files of the one running.  The lock (flock(1) on $VAR/run.lock, which
# holds the pid of the run) lasts as long as this shell and its children.
lock="$VAR/run.lock"
exec 9>>"$lock"
if ! flock -n 9; then
	holder=$(cat "$lock" 2>/dev/null || echo unknown)
	# another VAR alone would not do: the ports are the same
	echo "run: $VAR is in use by another run (pid $holder): stop it first (Ctrl-C where it runs, or kill $holder)" >&2
	exit 1
fi
echo $$ >"$lock"

# A mistake in the rules file stops the run before anything starts, naming
# the line (each service checks its own section), so that no service
# records a file another one refuses.
for svc in scoring routing gateway; do
	[ -x "$BIN/funnel-$svc" ] || continue
	"$BIN/funnel-$svc" check "$RULES" >/dev/null || {
		echo "run: $RULES has a mistake (the line above); nothing was started" >&2
		exit 1
	}
done
ready="$VAR/funneld.ready"
rm -f "$ready"
# Personal data is sealed from the first event (PROTOCOL.md §21): the
# master key is made once, beside the data directory and never inside it
# (a copy of the data directory alone cannot read it).
master="$VAR/master.key"
if [ ! -s "$master" ]; then
	(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$master.new" &&
		mv "$master.new" "$master") || { echo "run: cannot write $master" >&2; exit 1; }
fi
"$BIN/funneld" --data "$VAR/funnel" --master-key "$master" --ready-file "$ready" "$@" &
daemon=$!
services=""

# Stops the services, then funneld; the caller exits.
stop() {
	trap - INT TERM
	for pid in $services; do kill -TERM "$pid" 2>/dev/null; done
	for pid in $services; do wait "$pid" 2>/dev/null; done
	kill -TERM "$daemon" 2>/dev/null
	wait "$daemon" 2>/dev/null
}
trap 'stop; exit 0' INT TERM

# funneld writes its ready file once it serves (bounded wait: 10 s)
i=0
while [ ! -f "$ready" ]; do
	if ! kill -0 "$daemon" 2>/dev/null || [ $i -ge 200 ]; then
		echo "run: funneld did not start (see the lines above)" >&2
		kill -TERM "$daemon" 2>/dev/null
		exit 1
	fi
	sleep 0.05
	i=$((i + 1))
done
ep() { sed -n "s/^$1=//p" "$ready"; }
eps="--ingest $(ep ingest) --publish $(ep publish) --query $(ep query)"

# Each service writes its ready file once it follows the log (the gateway:
# once it serves); "name pid ready-file" per line, for the wait below.
started=""
for svc in scoring routing metrics; do
	[ -x "$BIN/funnel-$svc" ] || continue
	http=""
	[ "$svc" = metrics ] && [ -n "$HTTP" ] && http="--http $HTTP"
	rm -f "$VAR/$svc.ready"
	# shellcheck disable=SC2086 # eps, http and SVC_ARGS are flag lists
	"$BIN/funnel-$svc" --rules "$RULES" --view "$VAR/$svc" --ready-file "$VAR/$svc.ready" \
		$eps $http $SVC_ARGS &
	services="$services $!"
	started="$started
funnel-$svc $! $VAR/$svc.ready"
done

if [ -x "$BIN/funnel-gateway" ]; then
	rm -f "$VAR/gateway.ready"
	gwhttp=""
	[ -n "$GATEWAY_HTTP" ] && gwhttp="--http $GATEWAY_HTTP"
	# shellcheck disable=SC2086 # eps and gwhttp are flag pairs
	"$BIN/funnel-gateway" --rules "$RULES" --lead-key "$VAR/gateway.key" \
		--ready-file "$VAR/gateway.ready" $eps $gwhttp &
	services="$services $!"
	started="$started
funnel-gateway $! $VAR/gateway.ready"
fi

# A service that stops at start (a mistake in the rules file, a port in
# use) stops the whole run: half a system that, say, scores nothing must
# not look like a running one.  Bounded: 20 s per service.
echo "$started" | while read -r name pid file; do
	[ -n "$name" ] || continue
	i=0
	while [ ! -f "$file" ]; do
		if ! kill -0 "$pid" 2>/dev/null || [ $i -ge 400 ]; then
			echo "run: $name did not start (see the lines above); stopping" >&2
			exit 1
		fi
		sleep 0.05
		i=$((i + 1))
	done
done || { stop; exit 1; }

echo "run: funneld ($(ep ingest), $(ep publish), $(ep query)) and services:$services; Ctrl-C stops"
wait "$daemon"
stop
exit 0
