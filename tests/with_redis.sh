#!/bin/sh
# Runs a command with a private redis-server on a free loopback port in a
# temp dir; exports FUNNEL_TEST_REDIS_URL. The server is stopped afterwards.
set -eu
dir=$(mktemp -d /tmp/funnel-redis.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
    --unixsocket "$dir/redis.sock" --daemonize yes --pidfile "$dir/redis.pid" \
    --logfile "$dir/redis.log"
i=0
until redis-cli -p "$port" ping >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "redis-server did not start" >&2; exit 1; }
    sleep 0.05
done
cleanup() { kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; sleep 0.1; rm -rf "$dir"; }
trap cleanup EXIT
export FUNNEL_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
export FUNNEL_TEST_REDIS_SOCK="$dir/redis.sock"
"$@"
