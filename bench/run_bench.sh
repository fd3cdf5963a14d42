#!/bin/sh
# Runs the benchmark side by side on this machine: a private redis-server,
# one funnel-testsvc, then service vs raw vs decode figures.
# Usage: bench/run_bench.sh [EVENTS] [BUILD_DIR]   (defaults 200000, ./build)
# rounds=N bench/run_bench.sh ... alternates service and raw N times (3).
# curve=1 bench/run_bench.sh ...: a second service with security/curve = 1
# (its own Redis db) runs in each round too, and CURVE vs plain is printed.
set -eu
events=${1:-200000}
build=${2:-./build}
dir=$(mktemp -d /tmp/funnel-bench.XXXXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(port); api=$(port); pub=$(port); capi=$(port); cpub=$(port)
# pin=1: Redis on core 0, everything else on core 1 (less scheduling noise,
# but the service then shares one core with the client and ZeroMQ's threads)
pin0=""; pin1=""
if [ "${pin:-0}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    pin0="taskset -c 0"; pin1="taskset -c 1"
fi
$pin0 redis-server --port "$rport" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
cat > "$dir/funnel.cfg" <<CFG
redis
    url = "redis://127.0.0.1:$rport/0"
alpha
    api = "tcp://127.0.0.1:$api"
    pub = "tcp://127.0.0.1:$pub"
CFG
csvc=""
if [ "${curve:-0}" = 1 ]; then
    for name in alpha bench; do
        "$build/services/funnelctl/funnelctl" keygen "$name" --dir "$dir/certs" >/dev/null
    done
    mkdir -p "$dir/clients" && cp "$dir/certs/bench.cert" "$dir/clients/"
    cat > "$dir/curve.cfg" <<CFG
redis
    url = "redis://127.0.0.1:$rport/1"
security
    curve = 1
    certs = "$dir/certs"
    clients = "$dir/clients"
alpha
    api = "tcp://127.0.0.1:$capi"
    pub = "tcp://127.0.0.1:$cpub"
CFG
fi
sleep 0.3
$pin1 "$build/tests/testsvc/funnel-testsvc" -c "$dir/funnel.cfg" --log-level warn &
svc=$!
if [ "${curve:-0}" = 1 ]; then
    $pin1 "$build/tests/testsvc/funnel-testsvc" -c "$dir/curve.cfg" --log-level warn &
    csvc=$!
fi
cleanup() { kill $svc $csvc 2>/dev/null; wait $svc $csvc 2>/dev/null; kill "$(cat "$dir/redis.pid")"; rm -rf "$dir"; }
trap cleanup EXIT
sleep 0.5
echo "funnel-bench: $events events, batches of 1000, on $(nproc) cores, ${rounds:=3} rounds"
i=0
while [ $i -lt "$rounds" ]; do
    $pin1 "$build/bench/funnel-bench" service "tcp://127.0.0.1:$api" "$events"
    if [ -n "$csvc" ]; then
        $pin1 "$build/bench/funnel-bench" service "tcp://127.0.0.1:$capi" "$events" \
            "$dir/certs/bench.cert" "$dir/certs/alpha.cert"
    fi
    $pin1 "$build/bench/funnel-bench" raw "redis://127.0.0.1:$rport/0" "$events"
    i=$((i + 1))
done | tee "$dir/results"
awk '/^service:/ { s[++ns] = $8 } /^raw:/ { r[++nr] = $8 } /^service-curve:/ { c[++nc] = $8 }
     END { for (i = 1; i <= ns; i++) { t = s[i] / r[i]; printf "round %d: service/raw = %.0f%%\n", i, 100 * t; sum += t }
           printf "mean service/raw = %.0f%%\n", 100 * sum / ns
           for (i = 1; i <= nc; i++) { t = c[i] / s[i]; printf "round %d: curve/plain = %.0f%%\n", i, 100 * t; csum += t }
           if (nc) printf "mean curve/plain = %.0f%% (CURVE on the API socket, same Redis)\n", 100 * csum / nc }' "$dir/results"
$pin1 "$build/bench/funnel-bench" decode 1000000
echo "redis memory: $(redis-cli -p "$rport" info memory | grep used_memory_human)"
