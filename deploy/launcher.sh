#!/usr/bin/env bash
# launcher.sh — run the whole funnel on one machine (called by deploy/funnel).
#
#   up [--rate N] [--seed N] [--duration S] [--var DIR] [--detach] [--insecure]
#        start a private Redis (AOF, everysec, data in VAR/redis), the
#        services, monitor, gateway, and funnel-sim (through the gateway);
#        print the dashboard URL and the gateway token; wait.
#        Ctrl-C / SIGTERM stops the sim, then the daemons, then Redis.
#        --detach: start everything in the background and return.
#        Secure by default: CURVE keypairs in VAR/certs (clients listed in
#        VAR/clients), one Redis ACL user per service (VAR/secrets, 0600).
#        --insecure: neither (plain ZeroMQ, one passwordless Redis user).
#   down [--var DIR]           stop a set started by up (detached or not)
#   status [--var DIR]         each process up/down, PING answers, the funnel
#   logs [NAME] [--var DIR]    follow the logs (all, or one of redis, campaign,
#                              leads, sales, retention, monitor, gateway, sim)
#
# Environment: FUNNEL_BUILD (build dir, default ./build), FUNNEL_PORT_BASE
# (default 7100: campaign base+1/+2, leads +11/+12, sales +21/+22, retention
# +31/+32, monitor HTTP +40 and PUB +42, gateway +50), FUNNEL_REDIS_PORT (6390),
# FUNNEL_CONFIG (use this topology file instead of writing VAR/funnel.cfg;
# its ports must then match FUNNEL_PORT_BASE for status and the URL).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${FUNNEL_BUILD:-$ROOT/build}
DAEMONS="retention sales leads campaign monitor gateway"    # start order: downstream first
STOP_TIMEOUT=${FUNNEL_STOP_TIMEOUT:-15}

say()  { printf '\033[1mfunnel:\033[0m %s\n' "$*" >&2; }
die()  { say "error: $*"; exit 1; }
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# ---------------------------------------------------------------- options
CMD=${1:-}
[ -n "$CMD" ] || usage
shift
RATE=50 SEED=1 DURATION="" VAR="$ROOT/var" DETACH=0 LOGNAME_ARG="" INSECURE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rate)     RATE=${2:?--rate needs N}; shift 2 ;;
        --seed)     SEED=${2:?--seed needs N}; shift 2 ;;
        --duration) DURATION=${2:?--duration needs seconds}; shift 2 ;;
        --var)      VAR=${2:?--var needs a directory}; shift 2 ;;
        --detach|-d) DETACH=1; shift ;;
        --insecure) INSECURE=1; shift ;;
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

# Ports: remembered in VAR/run/ports by up, so down/status find the same set
if [ -f "$RUN/ports" ] && [ "$CMD" != up ]; then
    # shellcheck disable=SC1091
    . "$RUN/ports"
fi
BASE=${FUNNEL_PORT_BASE:-${BASE:-7100}}
REDIS_PORT=${FUNNEL_REDIS_PORT:-${REDIS_PORT:-6390}}
HTTP_PORT=$((BASE + 40))
GATEWAY_PORT=$((BASE + 50))

bin_of() {
    case "$1" in
        sim)      echo "$BUILD/services/sim/funnel-sim" ;;
        funnelctl) echo "$BUILD/services/funnelctl/funnelctl" ;;
        *)        echo "$BUILD/services/$1/funnel-$1" ;;
    esac
}
FUNNELCTL=$(bin_of funnelctl)

pid_of() {                      # pid from VAR/run/NAME.pid if that process lives
    local f=$RUN/$1.pid pid
    [ -f "$f" ] || return 1
    pid=$(cat "$f" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# redis-cli as the admin once the default user has a password (the
# password goes in the environment, never in argv); harmless before
rcli() {
    if [ -s "$SECRETS/redis-admin.pass" ]; then
        REDISCLI_AUTH=$(cat "$SECRETS/redis-admin.pass") redis-cli --no-auth-warning -p "$REDIS_PORT" "$@"
    else
        redis-cli -p "$REDIS_PORT" "$@"
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
# answers with Redis ok; the reply (JSON) goes to stdout.
ping_svc() {
    local svc=$1 out
    if [ -x "$FUNNELCTL" ]; then
        # The file goes by FUNNEL_CONFIG, and no options: funnelctl 0.1.0
        # misreads its command when given options together with -c
        out=$(FUNNEL_CONFIG=$CFG timeout 5 "$FUNNELCTL" ping "$svc" 2>/dev/null) || return 1
    else
        local port
        case $svc in campaign) port=$((BASE+1));; leads) port=$((BASE+11));;
                     sales) port=$((BASE+21));; retention) port=$((BASE+31));; esac
        out=$(/usr/bin/python3 -c "$PY_PING" "$port" 2>/dev/null) || return 1
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

# ---------------------------------------------------------------- start
write_config() {
    [ -z "${FUNNEL_CONFIG:-}" ] || { say "using topology $CFG (FUNNEL_CONFIG)"; return; }
    cat >"$CFG" <<EOF
# Written by deploy/funnel up: a private, loopback-only demo topology.
# (Set FUNNEL_CONFIG=FILE to run your own file instead; see deploy/topology.cfg.)
redis
    url = "redis://127.0.0.1:$REDIS_PORT/0"
$(security_section)
campaign
    api = "tcp://127.0.0.1:$((BASE + 1))"
    pub = "tcp://127.0.0.1:$((BASE + 2))"
$(redis_user_keys campaign)
leads
    api = "tcp://127.0.0.1:$((BASE + 11))"
    pub = "tcp://127.0.0.1:$((BASE + 12))"
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
    api = "tcp://127.0.0.1:$((BASE + 21))"
    pub = "tcp://127.0.0.1:$((BASE + 22))"
$(redis_user_keys sales)
    reps
        ana
        ben
        chloe
        dev
retention
    api = "tcp://127.0.0.1:$((BASE + 31))"
    pub = "tcp://127.0.0.1:$((BASE + 32))"
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

wait_ready() {                  # wait_ready SVC: PING ok within 20 s
    local svc=$1
    for _ in $(seq 100); do
        if [ "$svc" = monitor ]; then
            http_get /api/funnel >/dev/null && return 0
        elif [ "$svc" = gateway ]; then
            http_get /v1/health "$GATEWAY_PORT" >/dev/null && return 0
        else
            ping_svc "$svc" >/dev/null && return 0
        fi
        pid_of "$svc" >/dev/null || { log_tail "$svc"; die "funnel-$svc exited at start"; }
        sleep 0.2
    done
    log_tail "$svc"; die "funnel-$svc did not answer within 20 s"
}

# Stops one process: SIGTERM, wait, then SIGKILL. Returns 1 if it had to kill.
stop_one() {
    local name=$1 pid
    pid=$(pid_of "$name") || { rm -f "$RUN/$name.pid"; return 0; }
    if [ "$name" = redis ]; then
        # SHUTDOWN flushes the AOF before exiting
        rcli shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    for _ in $(seq $((STOP_TIMEOUT * 10))); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$RUN/$name.pid"; return 0; }
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
    for name in gateway monitor campaign leads sales retention; do
        if pid=$(pid_of "$name"); then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for name in gateway monitor campaign leads sales retention; do
        stop_one "$name" || rc=1
    done
    stop_one redis || rc=1
    rm -f "$RUN/ports" "$RUN/launcher.pid"
    return $rc
}

cmd_up() {
    for name in redis $DAEMONS sim; do
        pid=$(pid_of "$name") && die "$name is already running (pid $pid); deploy/funnel down first"
    done
    for svc in campaign leads sales retention sim; do
        [ -x "$(bin_of "$svc")" ] || die "$(bin_of "$svc") is not built (deploy/funnel build)"
    done
    local with_monitor=1 with_gateway=1
    [ -x "$(bin_of monitor)" ] || { with_monitor=0; say "funnel-monitor is not built: no dashboard"; }
    [ -x "$(bin_of gateway)" ] || { with_gateway=0; say "funnel-gateway is not built: no HTTP ingest"; }
    for p in $((BASE+1)) $((BASE+2)) $((BASE+11)) $((BASE+12)) $((BASE+21)) $((BASE+22)) \
             $((BASE+31)) $((BASE+32)) "$HTTP_PORT" $((BASE+42)) "$GATEWAY_PORT"; do
        port_busy "$p" && die "port $p is in use; set FUNNEL_PORT_BASE to another base"
    done
    mkdir -p "$LOG" "$RUN" "$DATA"
    printf 'BASE=%s\nREDIS_PORT=%s\n' "$BASE" "$REDIS_PORT" >"$RUN/ports"
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

    say "redis on 127.0.0.1:$REDIS_PORT (AOF everysec, data in $DATA)"
    start_redis
    if [ "$INSECURE" = 1 ]; then
        say "--insecure: no CURVE, one passwordless Redis user"
    elif [ -n "${FUNNEL_CONFIG:-}" ]; then
        say "FUNNEL_CONFIG: its own security section applies (see proto/security.md)"
    else
        "$ROOT/deploy/redis-users.sh" "$REDIS_PORT" "$SECRETS" campaign leads sales retention gateway ||
            die "cannot create the Redis users"
        say "redis: one ACL user per service, passwords in $SECRETS (mode 0600)"
        say "CURVE on: keypairs in $CERTS, allowed clients in $CLIENTS"
    fi
    local svc
    for svc in $DAEMONS; do
        [ "$svc" = monitor ] && [ $with_monitor = 0 ] && continue
        [ "$svc" = gateway ] && [ $with_gateway = 0 ] && continue
        start_bg "$svc" "$(bin_of "$svc")" -c "$CFG"
    done
    for svc in $DAEMONS; do
        [ "$svc" = monitor ] && [ $with_monitor = 0 ] && continue
        [ "$svc" = gateway ] && [ $with_gateway = 0 ] && continue
        wait_ready "$svc"
        say "$svc up (log $LOG/$svc.log)"
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
        for svc in $DAEMONS redis; do
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
    for name in sim $DAEMONS redis; do pid_of "$name" >/dev/null && any=1; done
    if [ $any = 0 ]; then
        say "nothing running under $VAR"
        rm -f "$RUN/ports" "$RUN/launcher.pid"
        return 0
    fi
    if stop_all; then say "stopped"; else say "stopped (some had to be killed)"; return 1; fi
}

cmd_status() {
    local rc=0 name pid state
    for name in redis $DAEMONS sim; do
        if pid=$(pid_of "$name"); then
            state="up (pid $pid)"
            case $name in
                redis) if [ "$(rcli ping 2>/dev/null)" = PONG ]; then
                           state="$state, PING ok, port $REDIS_PORT"
                       else state="$state, no PING answer"; rc=1; fi ;;
                monitor) if http_get /api/funnel >/dev/null; then
                           state="$state, http://127.0.0.1:$HTTP_PORT/"
                         else state="$state, HTTP not answering"; rc=1; fi ;;
                gateway) if http_get /v1/health "$GATEWAY_PORT" >/dev/null; then
                           state="$state, http://127.0.0.1:$GATEWAY_PORT/v1/"
                         else state="$state, HTTP not answering"; rc=1; fi ;;
                sim) ;;
                *) if reply=$(ping_svc "$name"); then state="$state, PING $reply"
                   else state="$state, no PING answer (or Redis down)"; rc=1; fi ;;
            esac
        else
            state=down
            [ "$name" = sim ] || rc=1
        fi
        printf '%-10s %s\n' "$name" "$state"
    done
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
        [ -f "$LOG/$LOGNAME_ARG.log" ] || die "no log $LOG/$LOGNAME_ARG.log (names: redis $DAEMONS sim)"
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
