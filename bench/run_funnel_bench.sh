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
#   --cluster          the services on a 3-primary Redis Cluster instead (no
#                      replicas, AOF everysec, each node with its own free
#                      port and bus port, made by redis-cli --cluster
#                      create); each service runs as --instances instances
#                      (default 2); Redis figures are summed over the nodes
#   --instances K      each service as K instances a, b, c... (started with
#                      --instance NAME), each owning a contiguous Kth of the
#                      partitions (a 0-7, b 8-15); the bench sends each event
#                      to its partition's owner. Default 2 with --cluster,
#                      none (one unnamed instance) on one Redis; 1: one
#                      instance `a` owning them all (on a cluster, the
#                      records under each partition's tag; with 2+, under
#                      the service's base tag, read under WATCH)
#   --partitions N     with instances: each service's partitions (default
#                      16; more spread the work over the nodes more evenly)
#   --compare          run twice in this one invocation, one Redis with one
#                      instance a service, then --cluster (--instances
#                      applies to it), with the same other options, and end
#                      with a table of both: journeys/s, each daemon's and
#                      each instance's CPU, each redis-server's CPU and share
#   --keep             keep the temp dir (logs, AOF, topology) and say where
#   -h, --help         this help
# Each redis-server's CPU (the one, or every node's) is its /proc utime+stime
# over the journeys, like the daemons' (--redis-pid of funnel-bench-funnel).
# Exit code: the benchmark's (0 every count exact, 1 not, 2 usage); with
# --compare 0 only when both runs are.
set -uo pipefail

usage() { sed -n '2,55p' "$0" | sed 's/^# \{0,1\}//'; }

args=() sets=() monitor=0 keep=0 n="" build="" cluster=0 compare=0 parts=16 all=("$@")
instances=""
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
        --cluster) cluster=1; shift ;;
        --partitions)
            [[ "${2:-}" =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] ||
                { echo "run_funnel_bench: --partitions needs N >= 1" >&2; exit 2; }
            parts=$2; shift 2 ;;
        --instances)
            [[ "${2:-}" =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 26 ] ||
                { echo "run_funnel_bench: --instances needs K, 1..26" >&2; exit 2; }
            instances=$2; shift 2 ;;
        --compare) compare=1; shift ;;
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
[ -n "$instances" ] || { [ "$cluster" = 1 ] && instances=2; }
[ -z "$instances" ] || [ "$instances" -le "$parts" ] ||
    { echo "run_funnel_bench: --instances $instances > --partitions $parts" >&2; exit 2; }

# --compare: this script twice, one after the other on the same machine,
# then both JSON lines side by side
if [ "$compare" = 1 ]; then
    [ "$cluster" = 0 ] || { echo "run_funnel_bench: --compare runs --cluster itself" >&2; exit 2; }
    # The single side: one instance; --instances K is the cluster's
    rest=() single=() skip=0
    for a in "${all[@]}"; do
        [ "$a" = --compare ] && continue
        rest+=("$a")
        if [ "$skip" = 1 ]; then skip=0; continue; fi
        if [ "$a" = --instances ]; then skip=1; continue; fi
        single+=("$a")
    done
    out=$(mktemp -d /tmp/funnel-bench-compare.XXXXXX)
    trap 'rm -rf "$out"' EXIT
    rc=0
    echo "== single Redis, one instance a service ==" >&2
    "$0" "${single[@]}" | tee "$out/single" || rc=1
    echo "== Redis Cluster, 3 primaries, ${instances:-2} instances a service ==" >&2
    "$0" --cluster "${rest[@]}" | tee "$out/cluster" || rc=1
    /usr/bin/python3 - "$out/single" "$out/cluster" <<'PY' || rc=1
import json, sys
runs = []
for path in sys.argv[1:]:
    lines = [l for l in open(path) if l.startswith('{"bench"')]
    runs.append(json.loads(lines[-1]) if lines else {"ok": False})
def label(r, where):
    if "instances" not in r:
        return where            # a failed run says nothing of its topology
    return "%s, %d inst." % (where, max(r["instances"].values()))
names = [label(runs[0], "one Redis"), label(runs[1], "3 primaries")]
print("\nSingle Redis vs Redis Cluster (same options, one after the other)")
print("  %-28s %16s %22s" % ("", *names))
def row(label, fmt, get):
    vals = []
    for r in runs:
        try:
            vals.append(fmt % get(r))
        except (KeyError, TypeError, ValueError):
            vals.append("-")
    print("  %-28s %16s %22s" % (label, *vals))
row("every count exact", "%s", lambda r: r["ok"])
row("journeys/s", "%.0f", lambda r: r["journeys_per_s"])
row("applied events/s", "%.0f", lambda r: r["events_per_s"]["total"])
for svc in ["campaign", "leads", "sales", "retention", "monitor"]:
    if any(svc in r.get("daemon_cpu_pct", {}) for r in runs):
        row("%s CPU %%" % svc, "%.1f", lambda r, s=svc: r["daemon_cpu_pct"][s])
row("daemons CPU % (all)", "%.1f", lambda r: sum(r["daemon_cpu_pct"].values()))
row("conflicts (batches re-run)", "%d", lambda r: sum(r["conflicts"].values()))
row("Redis CPU us/applied event", "%.2f", lambda r: r["redis_cpu_us_per_event"])
row("redis-server CPU % (all)", "%.1f", lambda r: sum(r["redis_proc_cpu_pct"].values()))
for r, name in zip(runs, names):
    procs = r.get("redis_proc_cpu_pct", {})
    total = sum(procs.values())
    print("  redis-server CPU %% (%s): %s" % (name, ", ".join(
        "%s %.1f (%.0f%% of all)" % (k, v, 100 * v / total if total else 0)
        for k, v in procs.items()) or "-"))
for r, name in zip(runs, names):
    inst = r.get("daemon_instance_cpu_pct", {})
    if any("@" in k for k in inst):
        sent = r.get("published_by_instance", {})
        print("  daemon CPU %% per instance (%s): %s" % (name, ", ".join(
            "%s %.1f%s" % (k, v, " [%d PUBLISHed]" % sent[k] if k in sent else "")
            for k, v in inst.items())))
sys.exit(0 if all(r.get("ok") for r in runs) else 1)
PY
    exit "$rc"
fi
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
redis_pids=() bench_pid="" started=()

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
    local k
    for ((k = ${#started[@]} - 1; k >= 0; k--)); do stop_pid "${pid[${started[k]}]}"; done
    local p
    for p in ${redis_pids[@]+"${redis_pids[@]}"}; do stop_pid "$p"; done
    if [ "$keep" = 1 ]; then echo "run_funnel_bench: kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Every port of the run is drawn at once, all sockets held together, so no
# two are the same (one drawn at a time, the kernel may hand a released
# port out again: with two instances a service the run needs 24, and a
# daemon then failed to bind, or another got its traffic). take_port sets
# port to the next one (no subshell, so the index advances).
# 3 nodes and their buses, the monitor's 2, an api and a pub an instance
pool=($(python3 -c '
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))' $((8 + 8 * ${instances:-1}))))
[ "${#pool[@]}" -gt 0 ] || { echo "run_funnel_bench: no free loopback ports" >&2; exit 1; }
pool_next=0
take_port() {
    port=${pool[pool_next]}
    pool_next=$((pool_next + 1))
}

# One redis-server on a free port: AOF everysec, as the launcher's. Sets
# node_pid, node_port; exits if it does not answer PING.
start_redis() {
    local d=$1 i=0; shift
    mkdir -p "$d"
    take_port
    node_port=$port
    redis-server --port "$node_port" --bind 127.0.0.1 --dir "$d" --save '' \
        --appendonly yes --appendfsync everysec --logfile "$d/redis.log" "$@" &
    node_pid=$!
    redis_pids+=("$node_pid")          # stopped by cleanup, whatever happens next
    until redis-cli -p "$node_port" ping 2>/dev/null | grep -q PONG; do
        i=$((i + 1))
        if [ $i -gt 100 ] || ! kill -0 "$node_pid" 2>/dev/null; then
            echo "run_funnel_bench: redis-server did not start (see below)" >&2
            tail -5 "$d/redis.log" >&2
            exit 1
        fi
        sleep 0.05
    done
}

redis_args=()
if [ "$cluster" = 0 ]; then
    start_redis "$dir"
    redis_args+=(--redis-pid "redis=$node_pid")
    redis_url="redis://127.0.0.1:$node_port/0"
else
    seeds=()
    for i in 0 1 2; do
        take_port
        start_redis "$dir/node-$i" --cluster-enabled yes --cluster-port "$port" \
            --cluster-config-file "$dir/node-$i/nodes.conf" --cluster-node-timeout 5000
        redis_args+=(--redis-pid "redis-$i=$node_pid")
        seeds+=("127.0.0.1:$node_port")
    done
    redis-cli --cluster create "${seeds[@]}" --cluster-replicas 0 --cluster-yes \
        >"$dir/cluster-create.log" 2>&1 ||
        { echo "run_funnel_bench: redis-cli --cluster create failed" >&2; tail -5 "$dir/cluster-create.log" >&2; exit 1; }
    i=0
    for s in "${seeds[@]}"; do
        until redis-cli -p "${s##*:}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; do
            i=$((i + 1))
            [ $i -lt 300 ] || { echo "run_funnel_bench: the cluster did not settle in 30 s" >&2; exit 1; }
            sleep 0.1
        done
    done
    # CRC16 alone spreads 16 partitions a service unevenly: a third each
    "$(dirname "$0")/../deploy/cluster_place.py" --partitions "$parts" "${seeds[0]}" >&2 ||
        { echo "run_funnel_bench: placing the partitions failed" >&2; exit 1; }
    redis_url="redis://$(IFS=,; echo "${seeds[*]}")"
    # Where the partitions of each service landed: a node's share of
    # the Redis work follows its share of them (slots are hashed, not
    # balanced per service)
    /usr/bin/python3 - "$parts" "${seeds[@]}" >&2 <<'PY' || true
import sys, redis
parts = int(sys.argv[1])
ports = [int(s.rsplit(":", 1)[1]) for s in sys.argv[2:]]     # redis-0, redis-1, ...
c = redis.Redis(host="127.0.0.1", port=ports[0], socket_timeout=5)
ranges = [(first, last, int(primary[1]))
          for first, last, primary, *_ in c.execute_command("CLUSTER", "SLOTS")]
def node(key):
    slot = c.execute_command("CLUSTER", "KEYSLOT", key)
    return next(ports.index(p) for a, b, p in ranges if a <= slot <= b)
count = [0] * len(ports)
for svc in ("campaign", "leads", "sales", "retention"):
    for part in range(parts):
        count[node("{funnel:%s:%d}" % (svc, part))] += 1
print("run_funnel_bench: base slots on " + ", ".join(
    "%s redis-%d" % (svc, node("{funnel:%s}" % svc))
    for svc in ("campaign", "leads", "sales", "retention")))
print("run_funnel_bench: partitions (4 services x %d) per node: " % parts +
      ", ".join("redis-%d %d" % (i, n) for i, n in enumerate(count)))
PY
fi

cfg="$dir/funnel.cfg"
names=(a b c d e f g h i j k l m n o p q r s t u v w x y z)
{
    echo "redis"
    echo "    url = \"$redis_url\""
    for s in campaign leads sales retention; do
        echo "$s"
        if [ -n "$instances" ]; then
            # Instance k of K owns the kth contiguous slice of the partitions
            # (per-partition outboxes under {funnel:<svc>:<p>}; on a cluster
            # with one instance the records too, with several the records
            # under the service's base tag {funnel:<svc>})
            echo "    partitions = $parts"
            echo "    instances"
            for ((k = 0; k < instances; k++)); do
                echo "        ${names[k]}"
                take_port; echo "            api = \"tcp://127.0.0.1:$port\""
                take_port; echo "            pub = \"tcp://127.0.0.1:$port\""
                echo "            owns = \"$((k * parts / instances))-$(((k + 1) * parts / instances - 1))\""
            done
        else
            take_port; echo "    api = \"tcp://127.0.0.1:$port\""
            take_port; echo "    pub = \"tcp://127.0.0.1:$port\""
        fi
    done
    echo "monitor"
    take_port; echo "    http = \"127.0.0.1:$port\""
    take_port; echo "    pub = \"tcp://127.0.0.1:$port\""
} >"$cfg"

# Every daemon by label: "leads", or "leads@a" per instance; started lists
# them in start order (cleanup stops them the other way round)
pids=() started=()
for s in retention sales leads campaign monitor; do     # downstream first
    [ "$s" != monitor ] || [ "$monitor" = 1 ] || continue
    each=("")
    [ -n "$instances" ] && [ "$s" != monitor ] && each=("${names[@]:0:instances}")
    for inst in "${each[@]}"; do
        label=$s instance=()
        [ -n "$inst" ] && label="$s@$inst" instance=(--instance "$inst")
        "$build/services/$s/funnel-$s" -c "$cfg" --log-level warn ${instance[@]+"${instance[@]}"} \
            ${sets[@]+"${sets[@]}"} >"$dir/$label.log" 2>&1 &
        pid[$label]=$!
        started+=("$label")
        pids+=(--pid "$label=${pid[$label]}")
    done
done

"$bench" -c "$cfg" -n "$n" "${pids[@]}" "${redis_args[@]}" ${args[@]+"${args[@]}"} &
bench_pid=$!
wait "$bench_pid"
rc=$?
bench_pid=""
for s in "${started[@]}"; do
    if ! kill -0 "${pid[$s]}" 2>/dev/null; then
        echo "run_funnel_bench: funnel-$s exited during the run; its log:" >&2
        tail -20 "$dir/$s.log" >&2
        rc=1
    fi
done
if [ "$rc" != 0 ]; then
    for s in "${started[@]}"; do
        grep -h -m 5 -E 'ERROR|WARN' "$dir/$s.log" | sed "s/^/  $s: /" >&2
    done
fi
exit "$rc"
