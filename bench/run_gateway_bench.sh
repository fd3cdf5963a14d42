#!/bin/sh
# The gateway's figures, side by side in one run on this machine: a private
# redis-server, funnel-leads and funnel-gateway; lead.capture events
#   1. batches of 100: direct PUBLISH vs POST /v1/events (1 and 8 connections)
#   2. single-event requests, kept-alive, from 8 connections
#   3. webhook delivery: the backlog of leads' output POSTed to a receiver
# Usage: bench/run_gateway_bench.sh [EVENTS] [BUILD_DIR]  (defaults 20000, ./build)
set -eu
events=${1:-20000}
build=${2:-./build}
dir=$(mktemp -d /tmp/funnel-gwbench.XXXXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(port); api=$(port); pub=$(port); http=$(port); hook=$(port)
# The services not run here get free ports: nothing reaches another set
others=""
for svc in campaign sales retention; do
    others="$others
$svc
    api = \"tcp://127.0.0.1:$(port)\"
    pub = \"tcp://127.0.0.1:$(port)\""
done
token=bench-token-0123456789abcdef
bench=$build/bench/gateway-bench
redis-server --port "$rport" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
echo "$token bench *" > "$dir/tokens"
cat > "$dir/funnel.cfg" <<CFG
redis
    url = "redis://127.0.0.1:$rport/0"
leads
    api = "tcp://127.0.0.1:$api"
    pub = "tcp://127.0.0.1:$pub"
gateway
    http = "127.0.0.1:$http"
    tokens = "$dir/tokens"
CFG
printf '%s\n' "$others" >> "$dir/funnel.cfg"
sleep 0.3
"$build/services/leads/funnel-leads" -c "$dir/funnel.cfg" --log-level error &
svc=$!
gw=""
cleanup() {
    [ -z "$gw" ] || { kill "$gw" 2>/dev/null; wait "$gw" 2>/dev/null; }
    kill "$svc" 2>/dev/null; wait "$svc" 2>/dev/null
    kill "$(cat "$dir/redis.pid")"; rm -rf "$dir"
}
trap cleanup EXIT
start_gateway() {
    "$build/services/gateway/funnel-gateway" -c "$dir/funnel.cfg" --log-level error "$@" &
    gw=$!
    sleep 0.5
}
start_gateway ${gateway_args:-}
echo "gateway-bench: $events events per line, lead.capture, on $(nproc) cores"
run=$$
"$bench" direct "tcp://127.0.0.1:$api" "$events" 100 1 "${run}a"
"$bench" http "127.0.0.1:$http" "$token" "$events" 100 1 "${run}b"
"$bench" direct "tcp://127.0.0.1:$api" "$events" 100 8 "${run}c"
"$bench" http "127.0.0.1:$http" "$token" "$events" 100 8 "${run}d"
"$bench" http "127.0.0.1:$http" "$token" "$events" 1 8 "${run}e"
"$bench" direct "tcp://127.0.0.1:$api" "$events" 1 8 "${run}f"
# Webhooks: every lead.* event published so far, from the start
kill "$gw"; wait "$gw" 2>/dev/null || true; gw=""
backlog=$(redis-cli -p "$rport" get '{funnel:leads}:seq')
cat >> "$dir/funnel.cfg" <<CFG
webhooks
    bench
        url = "http://127.0.0.1:$hook/hook"
        types = "lead."
        secret = "bench-secret"
        start = earliest
CFG
"$bench" receive "$hook" "$backlog" &
receiver=$!
sleep 0.3
start_gateway ${gateway_args:-}
wait "$receiver" || echo "webhook: receiver did not get all $backlog events"
