#!/usr/bin/env bash
# run_funnel_bench.sh — the whole-funnel benchmark on this machine.
#
#   bench/run_funnel_bench.sh [OPTIONS] N [BUILD]
#
# Starts a private redis-server (AOF on, appendfsync everysec, a free
# loopback port, a temp dir), writes a topology file with free ports, starts
# campaign, leads, sales and retention (and the monitor with --monitor) from
# BUILD (default ./build), runs BUILD/bench/funnel-bench-funnel with N buyer
# journeys, prints its report (a table, then one JSON line) and stops
# everything it started, whatever happens (Ctrl-C included).
#
# Options (passed to funnel-bench-funnel):
#   --batch N          events per PUBLISH batch, 1..1000 (default 1000)
#   --window N         batches in flight per service (default 4)
#   --probes N         latency samples per request kind (default 300; 0: none)
#   --probe-seconds S  time budget per latency phase (default 20)
#   --timeout S        bound on the journey phase (default 300)
#   --mem-sample K     MEMORY USAGE of every K-th key (default 1: all)
#   --drop-announcements K  test hook: act as if every K-th deal.opened or
#                      customer.onboarded were lost, so the GET fallback runs
#   --touch-ingest     only touches to campaign (N counts touches, 6 a contact)
#                      and leads' consume of the prospect.touched they make:
#                      both rates, CPU of each daemon and of Redis
#   --series           with --touch-ingest: both counters every 100 ms
# and for the script:
#   --set PATH=VALUE   a setting for the daemons (each reads its own section),
#                      e.g. --set leads/rules/sql=80; repeatable
#   --monitor          also run funnel-monitor (its RSS is reported)
#   --keep             keep the temp dir (logs, AOF, topology) and say where
#   -h, --help         this help
# Exit code: the benchmark's (0 every count exact, 1 not, 2 usage).
set -uo pipefail

usage() { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; }

args=() sets=() monitor=0 keep=0 n="" build=""
while [ $# -gt 0 ]; do
    case "$1" in
        --batch|--window|--probes|--probe-seconds|--timeout|--mem-sample|--drop-announcements)
            [ $# -ge 2 ] || { echo "run_funnel_bench: $1 needs a value" >&2; exit 2; }
            args+=("$1" "$2"); shift 2 ;;
        --set)
            [ $# -ge 2 ] || { echo "run_funnel_bench: --set needs PATH=VALUE" >&2; exit 2; }
            sets+=(--set "$2"); shift 2 ;;
        --touch-ingest|--series) args+=("$1"); shift ;;
        --monitor) monitor=1; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "run_funnel_bench: unknown option '$1' (see --help)" >&2; exit 2 ;;
        *) if [ -z "$n" ]; then n=$1; elif [ -z "$build" ]; then build=$1
           else echo "run_funnel_bench: unexpected argument '$1'" >&2; exit 2; fi
           shift ;;
    esac
done
[[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -gt 0 ] || { echo "run_funnel_bench: N (journeys) is required, > 0 (see --help)" >&2; exit 2; }
build=${build:-./build}
bench="$build/bench/funnel-bench-funnel"
svcs=(campaign leads sales retention)
[ "$monitor" = 1 ] && svcs+=(monitor)
for f in "$bench" "${svcs[@]/#/$build/services/}"; do
    case $f in */services/*) f="$f/funnel-${f##*/}" ;; esac
    [ -x "$f" ] || { echo "run_funnel_bench: $f is not built (cmake --build $build)" >&2; exit 2; }
done
command -v redis-server >/dev/null || { echo "run_funnel_bench: redis-server not found" >&2; exit 2; }

dir=$(mktemp -d /tmp/funnel-bench-funnel.XXXXXX)
declare -A pid=()
redis_pid="" bench_pid=""

# Stops what this script started, by pid: TERM, a bounded wait, then KILL.
stop_pid() {
    local p=$1 i=0
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2>/dev/null || return 0
    while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$p" 2>/dev/null; then
        echo "run_funnel_bench: pid $p did not stop in 10 s; killing it" >&2
        kill -KILL "$p" 2>/dev/null
    fi
    wait "$p" 2>/dev/null
    return 0
}
cleanup() {
    # Bounded (10 s a process, then KILL): a second signal must not cut it short
    trap '' INT TERM HUP
    trap - EXIT
    stop_pid "$bench_pid"
    local s
    for s in monitor campaign leads sales retention; do stop_pid "${pid[$s]:-}"; done
    stop_pid "$redis_pid"
    if [ "$keep" = 1 ]; then echo "run_funnel_bench: kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --dir "$dir" --save '' \
    --appendonly yes --appendfsync everysec --logfile "$dir/redis.log" &
redis_pid=$!
i=0
until redis-cli -p "$rport" ping 2>/dev/null | grep -q PONG; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 "$redis_pid" 2>/dev/null; then
        echo "run_funnel_bench: redis-server did not start (see below)" >&2
        tail -5 "$dir/redis.log" >&2
        exit 1
    fi
    sleep 0.05
done

cfg="$dir/funnel.cfg"
{
    echo "redis"
    echo "    url = \"redis://127.0.0.1:$rport/0\""
    for s in campaign leads sales retention; do
        echo "$s"
        echo "    api = \"tcp://127.0.0.1:$(free_port)\""
        echo "    pub = \"tcp://127.0.0.1:$(free_port)\""
    done
    echo "monitor"
    echo "    http = \"127.0.0.1:$(free_port)\""
    echo "    pub = \"tcp://127.0.0.1:$(free_port)\""
} >"$cfg"

pids=()
for s in retention sales leads campaign monitor; do     # downstream first
    [ "$s" != monitor ] || [ "$monitor" = 1 ] || continue
    "$build/services/$s/funnel-$s" -c "$cfg" --log-level warn ${sets[@]+"${sets[@]}"} \
        >"$dir/$s.log" 2>&1 &
    pid[$s]=$!
    pids+=(--pid "$s=${pid[$s]}")
done

"$bench" -c "$cfg" -n "$n" "${pids[@]}" ${args[@]+"${args[@]}"} &
bench_pid=$!
wait "$bench_pid"
rc=$?
bench_pid=""
for s in "${!pid[@]}"; do
    if ! kill -0 "${pid[$s]}" 2>/dev/null; then
        echo "run_funnel_bench: funnel-$s exited during the run; its log:" >&2
        tail -20 "$dir/$s.log" >&2
        rc=1
    fi
done
if [ "$rc" != 0 ]; then
    for s in "${!pid[@]}"; do
        grep -h -m 5 -E 'ERROR|WARN' "$dir/$s.log" | sed "s/^/  $s: /" >&2
    done
fi
exit "$rc"
