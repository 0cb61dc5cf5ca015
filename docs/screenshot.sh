#!/bin/sh
# docs/screenshot.sh - regenerate docs/dashboard.png, the dashboard the
# README shows: `make demo`'s history (clients/demo/demo.sh, default
# seed) in a scratch directory on free ports, the dashboard taken by
# Debian's headless chromium, then everything stopped.
#
# usage: BUILD=build sh docs/screenshot.sh [OUT.png]
# Needs a build (make), chromium and curl.
set -e
BUILD=${BUILD:-build}
OUT=${1:-docs/dashboard.png}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
tmp=$(mktemp -d)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HTTP=127.0.0.1:$port PORTS=any VAR="$tmp/demo" BUILD=$BUILD sh clients/demo/demo.sh >"$tmp/out" 2>&1 &
demo=$!
cleanup() {
	kill -TERM "$demo" 2>/dev/null || true
	wait "$demo" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
i=0
until grep -q "dashboard is at" "$tmp/out"; do
	if ! kill -0 "$demo" 2>/dev/null || [ $i -ge 1200 ]; then
		cat "$tmp/out" >&2
		exit 1
	fi
	sleep 0.1
	i=$((i + 1))
done
# the page reads /api/summary once loaded: give it time (virtual) to draw
"$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars \
	--user-data-dir="$tmp/chromium" --window-size=1200,960 --virtual-time-budget=5000 \
	--screenshot="$tmp/shot.png" "http://127.0.0.1:$port/" >/dev/null 2>&1
cp "$tmp/shot.png" "$OUT"
echo "screenshot: $OUT ($(wc -c <"$OUT") bytes)"
