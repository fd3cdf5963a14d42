#!/bin/sh
# funnel-healthcheck [DAEMON [ENDPOINT]] — the container image's HEALTHCHECK.
# Without arguments it checks the daemon that is PID 1 (the container's
# command), at the --api (or --http) it was started with, "*" read as
# 127.0.0.1, else at its endpoint in the topology file. Healthy (exit 0):
# a service answers PING with redis "ok"; the monitor serves /api/funnel.
# Exit 1 otherwise. Untested in a container here (no container engine on
# the project's machines); the checks themselves are funnelctl and curl.
set -eu
CONFIG=${FUNNEL_CONFIG:-/etc/funnel/funnel.cfg}
prog=${1:-}
endpoint=${2:-}
if [ -z "$prog" ]; then
    # shellcheck disable=SC2046  # our flags have no spaces
    set -- $(tr '\0' ' ' </proc/1/cmdline)
    prog=$(basename "$1")
    while [ $# -gt 0 ]; do
        case "$1" in
            --api|--http) endpoint=${2:-}; shift ;;
            --api=*|--http=*) endpoint=${1#*=} ;;
        esac
        shift
    done
fi
endpoint=$(printf '%s' "$endpoint" | sed 's/\*/127.0.0.1/; s/0\.0\.0\.0/127.0.0.1/')
case "$prog" in
    funnel-monitor)
        # Exit 1, not curl's own code: Docker reserves 2 and reads 1 as unhealthy
        curl -fsS --max-time 3 -o /dev/null "http://${endpoint:-127.0.0.1:7140}/api/funnel" || exit 1 ;;
    funnel-campaign|funnel-leads|funnel-sales|funnel-retention)
        out=$(funnelctl -c "$CONFIG" -t 2000 -r 0 ping "${endpoint:-${prog#funnel-}}") || exit 1
        case "$out" in *'"redis":"ok"'* | *'"redis": "ok"'*) exit 0 ;; esac
        echo "funnel-healthcheck: $prog answers but its Redis is not ok: $out" >&2
        exit 1 ;;
    *)  echo "funnel-healthcheck: nothing to check for '$prog'" >&2
        exit 0 ;;
esac
