#!/usr/bin/env bash
# launcher.sh — run the whole funnel on one machine (called by deploy/funnel).
#
#   up [--rate N] [--seed N] [--duration S] [--var DIR] [--detach] [--insecure]
#      [--cluster]
#        start a private Redis (AOF, everysec, data in VAR/redis), the
#        services, monitor, gateway, and funnel-sim (through the gateway);
#        print the dashboard URL and the gateway token; wait.
#        Ctrl-C / SIGTERM stops the sim, then the daemons, then Redis.
#        --detach: start everything in the background and return.
#        Secure by default: CURVE keypairs in VAR/certs (clients listed in
#        VAR/clients), one Redis ACL user per service (VAR/secrets, 0600).
#        --insecure: neither (plain ZeroMQ, one passwordless Redis user).
#        --cluster: a local Redis Cluster instead of one Redis: 6 nodes
#        (redis-0..redis-5; 3 primaries with one replica each, AOF
#        everysec, data and nodes.conf in VAR/redis-cluster/node-N), the
#        services on it with redis/acks = 1: leads and sales as two
#        instances each splitting their 16 partitions (leads-a, sales-a
#        own 0-7, leads-b, sales-b 8-15), campaign and retention one
#        instance `main` owning every partition (with FUNNEL_CONFIG, one
#        process per service, <svc>/instance in that file names it).
#        Kept in VAR: a later up --cluster with the same VAR and ports
#        restarts the same cluster.
#   down [--var DIR]           stop a set started by up (detached or not)
#   status [--var DIR]         each process up/down, PING answers, the funnel
#                              (with --cluster: each node's role and keys,
#                              each instance's PING)
#   logs [NAME] [--var DIR]    follow the logs (all, or one of redis (or
#                              redis-0..redis-5), campaign, leads (or
#                              leads-a, leads-b), sales (sales-a, sales-b),
#                              retention, monitor, gateway, sim)
#
# Environment: FUNNEL_BUILD (build dir, default ./build), FUNNEL_PORT_BASE
# (default 7100: campaign base+1/+2, leads +11/+12, sales +21/+22, retention
# +31/+32, monitor HTTP +40 and PUB +42, gateway +50; with --cluster leads-b
# +13/+14 and sales-b +23/+24), FUNNEL_REDIS_PORT (6390;
# with --cluster node N listens on FUNNEL_REDIS_PORT+N and its cluster bus on
# FUNNEL_REDIS_PORT+6+N), FUNNEL_CONFIG (use this topology file instead of
# writing VAR/funnel.cfg; its ports must then match FUNNEL_PORT_BASE for
# status and the URL).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${FUNNEL_BUILD:-$ROOT/build}
DAEMONS="retention sales leads campaign monitor gateway"    # start order: downstream first
STOP_TIMEOUT=${FUNNEL_STOP_TIMEOUT:-15}

say()  { printf '\033[1mfunnel:\033[0m %s\n' "$*" >&2; }
die()  { say "error: $*"; exit 1; }
usage() { sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# ---------------------------------------------------------------- options
CMD=${1:-}
[ -n "$CMD" ] || usage
shift
RATE=50 SEED=1 DURATION="" VAR="$ROOT/var" DETACH=0 LOGNAME_ARG="" INSECURE=0 CLUSTER=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rate)     RATE=${2:?--rate needs N}; shift 2 ;;
        --seed)     SEED=${2:?--seed needs N}; shift 2 ;;
        --duration) DURATION=${2:?--duration needs seconds}; shift 2 ;;
        --var)      VAR=${2:?--var needs a directory}; shift 2 ;;
        --detach|-d) DETACH=1; shift ;;
        --insecure) INSECURE=1; shift ;;
        --cluster)  CLUSTER=1; shift ;;
        -h|--help)  usage ;;
        -*)         say "unknown option '$1'"; usage ;;
        *)          if [ "$CMD" = logs ] && [ -z "$LOGNAME_ARG" ]; then LOGNAME_ARG=$1; shift
                    else say "unexpected argument '$1'"; usage; fi ;;
    esac
done
mkdir -p "$VAR"
VAR=$(cd "$VAR" && pwd)
LOG=$VAR/log RUN=$VAR/run DATA=$VAR/redis
CERTS=$VAR/certs CLIENTS=$VAR/clients SECRETS=$VAR/secrets
# Every program of the local set has a keypair; all are allowed clients
PROGRAMS="campaign leads sales retention monitor gateway sim funnelctl"
CFG=${FUNNEL_CONFIG:-$VAR/funnel.cfg}

# Ports (and CLUSTER): remembered in VAR/run/ports by up, so down/status
# find the same set
unset SPLIT
if [ -f "$RUN/ports" ] && [ "$CMD" != up ]; then
    # shellcheck disable=SC1091
    . "$RUN/ports"
fi
# A cluster's nodes are found by their pid files even without VAR/run/ports
[ "$CMD" = up ] || [ ! -f "$RUN/redis-0.pid" ] || CLUSTER=1
# The services run as two instances each (a: partitions 0-7, b: 8-15):
# leads and sales on a cluster we write the topology for (up sets it,
# VAR/run/ports keeps it); their processes are <svc>-a and <svc>-b
if [ "$CMD" = up ]; then
    SPLIT=""
    [ "$CLUSTER" = 1 ] && [ -z "${FUNNEL_CONFIG:-}" ] && SPLIT="leads sales"
elif [ -z "${SPLIT+set}" ]; then
    SPLIT=""
    for svc in leads sales; do [ -f "$RUN/$svc-a.pid" ] && SPLIT="$SPLIT $svc"; done
fi
INSTANCES="a b"
split_svc() { case " $SPLIT " in *" $1 "*) return 0 ;; esac; return 1; }
procs_of() {                    # procs_of SVC...: the process names of those services
    local svc inst
    for svc in "$@"; do
        if split_svc "$svc"; then
            for inst in $INSTANCES; do echo "$svc-$inst"; done
        else echo "$svc"; fi
    done
}
BASE=${FUNNEL_PORT_BASE:-${BASE:-7100}}
REDIS_PORT=${FUNNEL_REDIS_PORT:-${REDIS_PORT:-6390}}
HTTP_PORT=$((BASE + 40))
GATEWAY_PORT=$((BASE + 50))
# --cluster: node N on REDIS_PORT+N, its bus on REDIS_PORT+NODES+N
NODES=6 CLUSTER_DATA=$VAR/redis-cluster
redis_names() {                 # the Redis processes of this set
    if [ "$CLUSTER" = 1 ]; then seq -f 'redis-%g' 0 $((NODES - 1)); else echo redis; fi
}
node_port() { echo $((REDIS_PORT + ${1#redis-})); }
seed_list() {
    local i out=""
    for i in $(seq 0 $((NODES - 1))); do out="$out${out:+,}127.0.0.1:$((REDIS_PORT + i))"; done
    echo "$out"
}

bin_of() {
    case "$1" in
        leads-*|sales-*) bin_of "${1%%-*}" ;;
        sim)      echo "$BUILD/services/sim/funnel-sim" ;;
        funnelctl) echo "$BUILD/services/funnelctl/funnelctl" ;;
        *)        echo "$BUILD/services/$1/funnel-$1" ;;
    esac
}
FUNNELCTL=$(bin_of funnelctl)

# True while pid runs. A zombie has ended: a detached set's processes
# belong to init once up returns, and init may reap them only later
running() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

pid_of() {                      # pid from VAR/run/NAME.pid if that process lives
    local f=$RUN/$1.pid pid
    [ -f "$f" ] || return 1
    pid=$(cat "$f" 2>/dev/null) || return 1
    [ -n "$pid" ] && running "$pid" || return 1
    echo "$pid"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# redis-cli as the admin once the default user has a password (the
# password goes in the environment, never in argv); harmless before
rcli() { pcli "$REDIS_PORT" "$@"; }
pcli() {                        # pcli PORT ARGS...: the same on any node
    local port=$1; shift
    if [ -s "$SECRETS/redis-admin.pass" ]; then
        REDISCLI_AUTH=$(cat "$SECRETS/redis-admin.pass") redis-cli --no-auth-warning -p "$port" "$@"
    else
        redis-cli -p "$port" "$@"
    fi
}

PY_PING='
import sys, json, zmq, msgpack
s = zmq.Context().socket(zmq.DEALER); s.setsockopt(zmq.LINGER, 0)
s.connect("tcp://127.0.0.1:%s" % sys.argv[1]); s.send_multipart([b"", b"PING"])
if not s.poll(700): sys.exit(1)
f = s.recv_multipart()
if f[1] != b"OK": sys.exit(1)
print(json.dumps(msgpack.unpackb(f[2], raw=False)))'

# PING a service: funnelctl if built, else Python with pyzmq. True when it
# answers with Redis ok (a service run as instances: every instance, or
# the one named as $2); the reply (JSON) goes to stdout.
PY_PICK='
import json, sys
reply = json.load(sys.stdin)
inst = sys.argv[1]
if inst:
    reply = reply.get("instances", {}).get(inst)
    if not reply:
        sys.exit(1)
    print(json.dumps(reply))
else:
    print(json.dumps(reply))
    for one in reply.get("instances", {}).values():
        if not one or one.get("redis") != "ok":
            sys.exit(1)'
ping_svc() {
    local svc=$1 inst=${2:-} out
    if [ -x "$FUNNELCTL" ]; then
        # The file goes by FUNNEL_CONFIG, and no options: funnelctl 0.1.0
        # misreads its command when given options together with -c. With
        # instances it PINGs each: {"instances": {name: reply}}
        out=$(FUNNEL_CONFIG=$CFG timeout 5 "$FUNNELCTL" ping "$svc" 2>/dev/null) || return 1
        out=$(echo "$out" | /usr/bin/python3 -c "$PY_PICK" "$inst" 2>/dev/null) || return 1
    else
        local port
        case $svc in campaign) port=$((BASE+1));; leads) port=$((BASE+11));;
                     sales) port=$((BASE+21));; retention) port=$((BASE+31));; esac
        [ "$inst" = b ] && port=$((port + 2))
        out=$(/usr/bin/python3 -c "$PY_PING" "$port" 2>/dev/null) || return 1
        if [ -z "$inst" ] && split_svc "$svc"; then
            ping_svc "$svc" b >/dev/null || return 1
        fi
    fi
    echo "$out"
    echo "$out" | grep -q '"redis": *"ok"'
}

http_get() {                    # body of GET path on the monitor (or port $2), or fail
    /usr/bin/python3 -c '
import sys, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:%s%s" % (sys.argv[1], sys.argv[2]), timeout=2).read().decode())
' "${2:-$HTTP_PORT}" "$1" 2>/dev/null
}

# ---------------------------------------------------------------- security
# CURVE keypairs for every program (kept across runs), and the public half
# of each in CLIENTS: the list of who may connect (proto/security.md)
make_certs() {
    local name
    mkdir -p "$CERTS" "$CLIENTS"
    chmod 700 "$CERTS"
    for name in $PROGRAMS; do
        [ -f "$CERTS/$name.cert_secret" ] ||
            "$FUNNELCTL" keygen "$name" --dir "$CERTS" >/dev/null ||
            die "cannot make a certificate for $name"
        cp "$CERTS/$name.cert" "$CLIENTS/$name.cert"
    done
}

# The lines a service's section gets for its own Redis user
redis_user_keys() {
    [ "$INSECURE" = 1 ] && return 0
    printf '    redis_user = "funnel-%s"\n    redis_password_file = "%s"\n' "$1" "$SECRETS/redis-$1.pass"
}

security_section() {
    [ "$INSECURE" = 1 ] && return 0
    printf 'security\n    curve = 1\n    certs = "%s"\n    clients = "%s"\n' "$CERTS" "$CLIENTS"
}

# A service's endpoints: api/pub; on a cluster, instances: `main` owning
# every partition, or for a split service (SPLIT) a at these ports owning
# 0-7 and b two ports up owning 8-15 (proto/README.md section 7)
endpoint_keys() {
    local svc=$1 api="tcp://127.0.0.1:$(($2))" pub="tcp://127.0.0.1:$(($3))"
    if [ "$CLUSTER" = 1 ] && split_svc "$svc"; then
        printf '    partitions = 16\n    instances\n'
        printf '        a\n            api = "%s"\n            pub = "%s"\n            owns = "0-7"\n' "$api" "$pub"
        printf '        b\n            api = "tcp://127.0.0.1:%d"\n            pub = "tcp://127.0.0.1:%d"\n            owns = "8-15"\n' $(($2 + 2)) $(($3 + 2))
    elif [ "$CLUSTER" = 1 ]; then
        printf '    partitions = 16\n    instances\n        main\n'
        printf '            api = "%s"\n            pub = "%s"\n            owns = "0-15"\n' "$api" "$pub"
    else
        printf '    api = "%s"\n    pub = "%s"\n' "$api" "$pub"
    fi
}

redis_section() {
    if [ "$CLUSTER" = 1 ]; then
        # Every node is a seed; acks = 1: an OK waits for the replica, so a
        # failover loses nothing acknowledged (proto/wire.md)
        printf '    url = "redis://%s"\n    acks = 1\n' "$(seed_list)"
    else
        printf '    url = "redis://127.0.0.1:%s/0"\n' "$REDIS_PORT"
    fi
}

# ---------------------------------------------------------------- start
write_config() {
    [ -z "${FUNNEL_CONFIG:-}" ] || { say "using topology $CFG (FUNNEL_CONFIG)"; return; }
    cat >"$CFG" <<EOF
# Written by deploy/funnel up: a private, loopback-only demo topology.
# (Set FUNNEL_CONFIG=FILE to run your own file instead; see deploy/topology.cfg.)
redis
$(redis_section)
$(security_section)
campaign
$(endpoint_keys campaign BASE+1 BASE+2)
$(redis_user_keys campaign)
leads
$(endpoint_keys leads BASE+11 BASE+12)
$(redis_user_keys leads)
    reps
        ana
            region = "us"
            capacity = 1000
        ben
            region = "uk"
            capacity = 1000
        chloe
            region = "de"
            capacity = 1000
        dev
            capacity = 1000
sales
$(endpoint_keys sales BASE+21 BASE+22)
$(redis_user_keys sales)
    reps
        ana
        ben
        chloe
        dev
retention
$(endpoint_keys retention BASE+31 BASE+32)
$(redis_user_keys retention)
    # Demo time scale: a simulated customer who goes quiet for ~5 minutes
    # churns (the default is 90 days)
    churn_days = 0.0035
monitor
    http = "127.0.0.1:$HTTP_PORT"
    pub = "tcp://127.0.0.1:$((BASE + 42))"
gateway
    http = "127.0.0.1:$GATEWAY_PORT"
    tokens = "$VAR/gateway.tokens"
$(redis_user_keys gateway)
EOF
    # One token for every type, made once per VAR (kept across runs)
    [ -f "$VAR/gateway.tokens" ] || (umask 077; printf '%s demo *\n' \
        "demo-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" >"$VAR/gateway.tokens")
}

STARTED=""                      # names started by this run, for cleanup

start_bg() {                    # start_bg NAME CMD...: own session, log, pid file
    local name=$1; shift
    # setsid: Ctrl-C reaches only this script, which then stops the set in order
    setsid "$@" >>"$LOG/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN/$name.pid"
    STARTED="$STARTED $name"
}

log_tail() { say "last lines of $LOG/$1.log:"; tail -n 15 "$LOG/$1.log" >&2 || true; }

start_redis() {
    port_busy "$REDIS_PORT" && die "port $REDIS_PORT is in use (another Redis?); set FUNNEL_REDIS_PORT"
    command -v redis-server >/dev/null || die "redis-server not found (deploy/funnel deps installs it)"
    start_bg redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DATA" \
        --appendonly yes --appendfsync everysec --save "" --daemonize no \
        --logfile "" --protected-mode yes
    local _
    for _ in $(seq 100); do
        [ "$(rcli ping 2>/dev/null)" = PONG ] && return 0
        pid_of redis >/dev/null || { log_tail redis; die "redis-server exited"; }
        sleep 0.1
    done
    log_tail redis; die "redis-server did not answer PING in 10 s"
}

# --cluster: six nodes, made into a cluster once (nodes.conf then keeps it:
# a later up restarts the same cluster with its data)
cluster_info() { pcli "$1" cluster info 2>/dev/null | tr -d '\r'; }

cluster_settled() {             # every node: state ok, all slots, all nodes known
    local name info
    for name in $(redis_names); do
        info=$(cluster_info "$(node_port "$name")")
        case $info in *cluster_state:ok*) ;; *) return 1 ;; esac
        case $info in *cluster_slots_ok:16384*) ;; *) return 1 ;; esac
        case $info in *cluster_known_nodes:$NODES*) ;; *) return 1 ;; esac
    done
}

replicas_good() {               # every primary has its replica within the lag
    local name info
    for name in $(redis_names); do
        info=$(pcli "$(node_port "$name")" info replication 2>/dev/null | tr -d '\r')
        case $info in *role:master*) ;; *) continue ;; esac
        case $info in *min_slaves_good_slaves:0*|*connected_slaves:0*) return 1 ;; esac
    done
}

start_cluster() {
    command -v redis-server >/dev/null || die "redis-server not found (deploy/funnel deps installs it)"
    local name port dir made=0 fresh=0 _
    for name in $(redis_names); do
        port=$(node_port "$name")
        port_busy "$port" && die "port $port is in use (another Redis?); set FUNNEL_REDIS_PORT"
        port_busy $((port + NODES)) && die "port $((port + NODES)) (cluster bus) is in use; set FUNNEL_REDIS_PORT"
        dir=$CLUSTER_DATA/node-${name#redis-}
        if [ -s "$dir/nodes.conf" ]; then
            made=$((made + 1))
            grep -q "127.0.0.1:$port@$((port + NODES)).*myself" "$dir/nodes.conf" ||
                die "$dir/nodes.conf is a cluster made on other ports: use its FUNNEL_REDIS_PORT, or remove $CLUSTER_DATA"
        fi
    done
    [ $made = 0 ] || [ $made = $NODES ] ||
        die "$CLUSTER_DATA has $made of $NODES nodes.conf files; remove $CLUSTER_DATA to make a new cluster"
    [ $made = 0 ] && fresh=1
    for name in $(redis_names); do
        port=$(node_port "$name")
        dir=$CLUSTER_DATA/node-${name#redis-}
        mkdir -p "$dir"
        # min-replicas-*: a primary cut off from its replica refuses writes
        # (set on every node: a promoted replica keeps the rule)
        start_bg "$name" redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
            --appendonly yes --appendfsync everysec --save "" --daemonize no \
            --logfile "" --protected-mode yes \
            --cluster-enabled yes --cluster-port $((port + NODES)) \
            --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 5000 \
            --min-replicas-to-write 1 --min-replicas-max-lag 10
    done
    for name in $(redis_names); do
        port=$(node_port "$name")
        for _ in $(seq 100); do
            [ "$(pcli "$port" ping 2>/dev/null)" = PONG ] && break
            pid_of "$name" >/dev/null || { log_tail "$name"; die "redis-server $name exited"; }
            sleep 0.1
        done
        [ "$(pcli "$port" ping 2>/dev/null)" = PONG ] || { log_tail "$name"; die "$name did not answer PING in 10 s"; }
    done
    if [ $fresh = 1 ]; then
        local nodes=()
        for name in $(redis_names); do nodes+=("127.0.0.1:$(node_port "$name")"); done
        redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
            >>"$LOG/cluster-create.log" 2>&1 ||
            { tail -n 15 "$LOG/cluster-create.log" >&2; die "redis-cli --cluster create failed"; }
        for _ in $(seq 300); do cluster_settled && break; sleep 0.1; done
        # CRC16 alone spreads 16 partitions a service unevenly: a third each
        "$ROOT/deploy/cluster_place.py" "${nodes[0]}" >>"$LOG/cluster-create.log" 2>&1 ||
            { tail -n 5 "$LOG/cluster-create.log" >&2; die "placing the partitions failed"; }
        say "$(tail -n 1 "$LOG/cluster-create.log")"
    fi
    for _ in $(seq 300); do
        cluster_settled && replicas_good && return 0
        sleep 0.1
    done
    for name in $(redis_names); do
        say "$name: $(cluster_info "$(node_port "$name")" | grep -E 'cluster_state|known_nodes' | tr '\n' ' ')"
    done
    die "the cluster did not settle in 30 s (cluster_state:ok, every replica in sync)"
}

# Per-service ACL users on every node, the same passwords (one SECRETS);
# masterauth so a replica (and a primary after a failover) can still sync
cluster_users() {
    local name port
    for name in $(redis_names); do
        "$ROOT/deploy/redis-users.sh" "$(node_port "$name")" "$SECRETS" \
            campaign leads sales retention gateway || return 1
    done
    for name in $(redis_names); do
        port=$(node_port "$name")
        # On stdin: never in argv
        printf 'CONFIG SET masterauth %s\n' "$(cat "$SECRETS/redis-admin.pass")" |
            pcli "$port" | grep OK >/dev/null || return 1
    done
}

wait_ready() {                  # wait_ready NAME: PING ok within 20 s (NAME: a process)
    local name=$1 svc=${1%%-*} inst=""
    [ "$svc" = "$name" ] || inst=${name#*-}
    for _ in $(seq 100); do
        if [ "$svc" = monitor ]; then
            http_get /api/funnel >/dev/null && return 0
        elif [ "$svc" = gateway ]; then
            http_get /v1/health "$GATEWAY_PORT" >/dev/null && return 0
        else
            ping_svc "$svc" "$inst" >/dev/null && return 0
        fi
        pid_of "$name" >/dev/null || { log_tail "$name"; die "$name exited at start"; }
        sleep 0.2
    done
    log_tail "$name"; die "$name did not answer within 20 s"
}

# Stops one process: SIGTERM, wait, then SIGKILL. Returns 1 if it had to kill.
stop_one() {
    local name=$1 pid
    pid=$(pid_of "$name") || { rm -f "$RUN/$name.pid"; return 0; }
    if [ "$name" = redis ]; then
        # SHUTDOWN flushes the AOF before exiting
        rcli shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    elif [ "${name#redis-}" != "$name" ]; then
        pcli "$(node_port "$name")" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    for _ in $(seq $((STOP_TIMEOUT * 10))); do
        running "$pid" || { rm -f "$RUN/$name.pid"; return 0; }
        sleep 0.1
    done
    say "$name (pid $pid) did not stop in ${STOP_TIMEOUT}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$RUN/$name.pid"
    return 1
}

# The order matters: no new input, then the services (each finishes what it
# accepted), then Redis last so nothing they write is refused.
stop_all() {
    local rc=0 name pid
    stop_one sim || rc=1
    for name in $(procs_of gateway monitor campaign leads sales retention); do
        if pid=$(pid_of "$name"); then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for name in $(procs_of gateway monitor campaign leads sales retention); do
        stop_one "$name" || rc=1
    done
    # Replicas first (with --cluster): were a primary to stop first, its
    # replica would try to take over
    local order=redis role
    if [ "$CLUSTER" = 1 ]; then
        order=""
        for name in $(redis_names); do
            role=$(pcli "$(node_port "$name")" role 2>/dev/null | head -n 1)
            if [ "$role" = master ]; then order="$order $name"; else order="$name $order"; fi
        done
    fi
    for name in $order; do stop_one "$name" || rc=1; done
    rm -f "$RUN/ports" "$RUN/launcher.pid"
    return $rc
}

cmd_up() {
    for name in redis $(CLUSTER=1 redis_names) $DAEMONS $(SPLIT="leads sales" procs_of leads sales) sim; do
        pid=$(pid_of "$name") && die "$name is already running (pid $pid); deploy/funnel down first"
    done
    for svc in campaign leads sales retention sim; do
        [ -x "$(bin_of "$svc")" ] || die "$(bin_of "$svc") is not built (deploy/funnel build)"
    done
    local with_monitor=1 with_gateway=1
    [ -x "$(bin_of monitor)" ] || { with_monitor=0; say "funnel-monitor is not built: no dashboard"; }
    [ -x "$(bin_of gateway)" ] || { with_gateway=0; say "funnel-gateway is not built: no HTTP ingest"; }
    local split_ports=""
    split_svc leads && split_ports="$((BASE+13)) $((BASE+14))"
    split_svc sales && split_ports="$split_ports $((BASE+23)) $((BASE+24))"
    for p in $((BASE+1)) $((BASE+2)) $((BASE+11)) $((BASE+12)) $((BASE+21)) $((BASE+22)) \
             $((BASE+31)) $((BASE+32)) "$HTTP_PORT" $((BASE+42)) "$GATEWAY_PORT" $split_ports; do
        port_busy "$p" && die "port $p is in use; set FUNNEL_PORT_BASE to another base"
    done
    mkdir -p "$LOG" "$RUN"
    [ "$CLUSTER" = 1 ] || mkdir -p "$DATA"
    printf 'BASE=%s\nREDIS_PORT=%s\nCLUSTER=%s\nSPLIT="%s"\n' "$BASE" "$REDIS_PORT" "$CLUSTER" "$SPLIT" \
        >"$RUN/ports"
    if [ "$INSECURE" = 1 ]; then
        rm -f "$SECRETS/redis-admin.pass"      # this Redis will have no password
    elif [ -z "${FUNNEL_CONFIG:-}" ]; then
        [ -x "$FUNNELCTL" ] || die "$FUNNELCTL is not built (it makes the certificates)"
        make_certs
    fi
    write_config

    # From here on, any failure or signal stops what was started
    trap 'say "stopping"; stop_all; exit 0' INT TERM
    trap 'rc=$?; if [ $rc -ne 0 ] && [ -n "$STARTED" ]; then say "start failed; stopping what started"; stop_all || true; fi' EXIT

    if [ "$CLUSTER" = 1 ]; then
        say "redis cluster: $NODES nodes on 127.0.0.1:$REDIS_PORT-$((REDIS_PORT + NODES - 1)), 3 primaries with a replica each (AOF everysec, data in $CLUSTER_DATA)"
        start_cluster
        say "redis cluster: state ok, every primary's replica in sync"
    else
        say "redis on 127.0.0.1:$REDIS_PORT (AOF everysec, data in $DATA)"
        start_redis
    fi
    if [ "$INSECURE" = 1 ]; then
        say "--insecure: no CURVE, one passwordless Redis user"
    elif [ -n "${FUNNEL_CONFIG:-}" ]; then
        say "FUNNEL_CONFIG: its own security section applies (see proto/security.md)"
    elif [ "$CLUSTER" = 1 ]; then
        cluster_users || die "cannot create the Redis users on every node"
        say "redis: one ACL user per service on every node, passwords in $SECRETS (mode 0600)"
        say "CURVE on: keypairs in $CERTS, allowed clients in $CLIENTS"
    else
        "$ROOT/deploy/redis-users.sh" "$REDIS_PORT" "$SECRETS" campaign leads sales retention gateway ||
            die "cannot create the Redis users"
        say "redis: one ACL user per service, passwords in $SECRETS (mode 0600)"
        say "CURVE on: keypairs in $CERTS, allowed clients in $CLIENTS"
    fi
    local svc name
    for svc in $DAEMONS; do
        [ "$svc" = monitor ] && [ $with_monitor = 0 ] && continue
        [ "$svc" = gateway ] && [ $with_gateway = 0 ] && continue
        case $svc in
            # On a cluster each service runs its instances (endpoint_keys:
            # leads and sales a and b, the others main; a FUNNEL_CONFIG
            # file names its own with <svc>/instance)
            campaign|leads|sales|retention) [ "$CLUSTER" = 1 ] && [ -z "${FUNNEL_CONFIG:-}" ] && {
                if split_svc "$svc"; then
                    for name in $(procs_of "$svc"); do
                        start_bg "$name" "$(bin_of "$svc")" -c "$CFG" --instance "${name#*-}"
                    done
                else
                    start_bg "$svc" "$(bin_of "$svc")" -c "$CFG" --instance main
                fi
                continue; } ;;
        esac
        start_bg "$svc" "$(bin_of "$svc")" -c "$CFG"
    done
    for name in $(procs_of $DAEMONS); do
        [ "$name" = monitor ] && [ $with_monitor = 0 ] && continue
        [ "$name" = gateway ] && [ $with_gateway = 0 ] && continue
        wait_ready "$name"
        say "$name up (log $LOG/$name.log)"
    done
    local sim_args=(-c "$CFG" --rate "$RATE" --seed "$SEED")
    [ -n "$DURATION" ] && sim_args+=(--duration "$DURATION")
    [ $with_gateway = 1 ] && sim_args+=(--via-gateway)     # HTTP/JSON, as an integrator would
    start_bg sim "$(bin_of sim)" "${sim_args[@]}"
    say "simulated traffic: $RATE events/s, seed $SEED${DURATION:+, for ${DURATION}s} (log $LOG/sim.log)"
    if [ $with_monitor = 1 ]; then
        say "dashboard: http://127.0.0.1:$HTTP_PORT/   (JSON /api/funnel, Prometheus /metrics)"
    fi
    if [ $with_gateway = 1 ]; then
        say "gateway: http://127.0.0.1:$GATEWAY_PORT/v1/events, token: $(cut -d' ' -f1 "$VAR/gateway.tokens" | head -n 1)"
    fi
    trap - EXIT

    if [ $DETACH = 1 ]; then
        say "running in the background; deploy/funnel status | logs | down"
        return 0
    fi
    echo $$ >"$RUN/launcher.pid"
    say "Ctrl-C stops everything"
    # Show the sim's progress lines here as they come
    tail -n 0 -F "$LOG/sim.log" 2>/dev/null &
    local tail_pid=$!
    trap 'kill $tail_pid 2>/dev/null || true; say "stopping"; if stop_all; then say "stopped"; exit 0; else exit 1; fi' INT TERM
    local sim_done=0
    while true; do
        sleep 1 &
        wait $! || true
        for svc in $(procs_of $DAEMONS) $(redis_names); do
            [ "$svc" = monitor ] && [ $with_monitor = 0 ] && continue
            [ "$svc" = gateway ] && [ $with_gateway = 0 ] && continue
            if ! pid_of "$svc" >/dev/null; then
                kill $tail_pid 2>/dev/null || true
                say "$svc stopped unexpectedly"
                log_tail "$svc"
                stop_all || true
                exit 1
            fi
        done
        if [ $sim_done = 0 ] && ! pid_of sim >/dev/null; then
            sim_done=1
            say "the simulation has ended; the services keep running (Ctrl-C stops them)"
        fi
    done
}

cmd_down() {
    local pid
    if pid=$(pid_of launcher); then
        # A foreground launcher: let it stop its set in order
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq $((STOP_TIMEOUT * 30))); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    local any=0
    for name in sim $(procs_of $DAEMONS) $(redis_names); do pid_of "$name" >/dev/null && any=1; done
    if [ $any = 0 ]; then
        say "nothing running under $VAR"
        rm -f "$RUN/ports" "$RUN/launcher.pid"
        return 0
    fi
    if stop_all; then say "stopped"; else say "stopped (some had to be killed)"; return 1; fi
}

# One cluster node: port, role (master/slave), keys; "" if it does not answer
node_state() {
    local port=$1 role keys
    role=$(pcli "$port" role 2>/dev/null | head -n 1)
    keys=$(pcli "$port" dbsize 2>/dev/null)
    [ -n "$role" ] && [ -n "$keys" ] || return 1
    [ "$role" = master ] || role=replica
    echo "port $port, $role, $keys keys"
}

cmd_status() {
    local rc=0 name pid state
    for name in $(redis_names) $(procs_of $DAEMONS) sim; do
        if pid=$(pid_of "$name"); then
            state="up (pid $pid)"
            case $name in
                redis) if [ "$(rcli ping 2>/dev/null)" = PONG ]; then
                           state="$state, PING ok, port $REDIS_PORT"
                       else state="$state, no PING answer"; rc=1; fi ;;
                redis-*) if info=$(node_state "$(node_port "$name")"); then state="$state, $info"
                         else state="$state, no answer"; rc=1; fi ;;
                monitor) if http_get /api/funnel >/dev/null; then
                           state="$state, http://127.0.0.1:$HTTP_PORT/"
                         else state="$state, HTTP not answering"; rc=1; fi ;;
                gateway) if http_get /v1/health "$GATEWAY_PORT" >/dev/null; then
                           state="$state, http://127.0.0.1:$GATEWAY_PORT/v1/"
                         else state="$state, HTTP not answering"; rc=1; fi ;;
                sim) ;;
                *-*) if reply=$(ping_svc "${name%%-*}" "${name#*-}"); then state="$state, PING $reply"
                     else state="$state, no PING answer (or Redis down)"; rc=1; fi ;;
                *) if reply=$(ping_svc "$name"); then state="$state, PING $reply"
                   else state="$state, no PING answer (or Redis down)"; rc=1; fi ;;
            esac
        else
            state=down
            [ "$name" = sim ] || rc=1
        fi
        printf '%-10s %s\n' "$name" "$state"
    done
    if [ "$CLUSTER" = 1 ]; then
        state=$(cluster_info "$REDIS_PORT" | grep -E '^cluster_(state|slots_ok|known_nodes):' |
                tr '\n' ' ')
        printf '%-10s %s\n' cluster "${state:-no answer}"
        case $state in *cluster_state:ok*) ;; *) rc=1 ;; esac
    fi
    if body=$(http_get /api/funnel); then
        echo "$body" | /usr/bin/python3 -c '
import json, sys
f = json.load(sys.stdin)
print("funnel     " + "  ".join("%s %s" % (s["name"], s["count"]) for s in f.get("stages", [])))'
    fi
    return $rc
}

cmd_logs() {
    [ -d "$LOG" ] || die "no logs under $LOG"
    if [ -n "$LOGNAME_ARG" ]; then
        [ -f "$LOG/$LOGNAME_ARG.log" ] || die "no log $LOG/$LOGNAME_ARG.log (names: $(redis_names | tr '\n' ' ')$(procs_of $DAEMONS | tr '\n' ' ')sim)"
        exec tail -n 50 -F "$LOG/$LOGNAME_ARG.log"
    fi
    exec tail -n 10 -F "$LOG"/*.log
}

case "$CMD" in
    up)     cmd_up ;;
    down)   cmd_down ;;
    status) cmd_status ;;
    logs)   cmd_logs ;;
    *)      say "unknown command '$CMD'"; usage ;;
esac
