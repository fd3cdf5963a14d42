#!/usr/bin/env bash
# redis-users.sh — one Redis ACL user per Funnel service (proto/security.md).
#
#   redis-users.sh PORT SECRETS_DIR [SERVICE...]
#
# For each service (default: campaign leads sales retention) makes the user
# funnel-<svc>, allowed only its own keys ({funnel:<svc>}:*) and the commands
# the runtime uses (reads, writes, connection, transactions, WAIT, ROLE and
# CLUSTER SLOTS; nothing else @dangerous, no @admin), with a random password kept in SECRETS_DIR/redis-<svc>.pass
# (mode 0600; an existing file is reused). Then the default user gets a
# password too (SECRETS_DIR/redis-admin.pass): no process can use Redis
# without one. Passwords go to redis-cli on stdin or in REDISCLI_AUTH,
# never in argv (ps shows argv to every local user).
# Re-running is safe: users are reset to exactly these rules.
set -euo pipefail
PORT=${1:?usage: redis-users.sh PORT SECRETS_DIR [SERVICE...]}
SECRETS=${2:?usage: redis-users.sh PORT SECRETS_DIR [SERVICE...]}
shift 2
SERVICES=${*:-campaign leads sales retention}
umask 077
mkdir -p "$SECRETS"
chmod 700 "$SECRETS"

secret() {                      # secret FILE: the password in FILE, made if missing
    [ -s "$1" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$1"
    chmod 600 "$1"
    cat "$1"
}

ADMIN_FILE=$SECRETS/redis-admin.pass
# On a re-run the default user has a password already: use it then
admin_cli() {
    if redis-cli -p "$PORT" ping 2>&1 | grep -q NOAUTH; then
        REDISCLI_AUTH=$(cat "$ADMIN_FILE") redis-cli --no-auth-warning -p "$PORT" "$@"
    else
        redis-cli -p "$PORT" "$@"
    fi
}

commands=""
for svc in $SERVICES; do
    pass=$(secret "$SECRETS/redis-$svc.pass")
    # '~' patterns are globs: the braces of the hash tag are literal; the
    # partitions are {funnel:<svc>:<p>}. No @scripting: nothing runs scripts
    commands+="ACL SETUSER funnel-$svc reset on >$pass ~{funnel:$svc}:* ~{funnel:$svc:*}:* resetchannels"
    commands+=" +@read +@write +@connection +@transaction +wait +role -@dangerous -@admin"
    # The slot map, for a client of a Redis Cluster (any Redis 7 knows the
    # command, so the rule is the same on a single server)
    commands+=" +cluster|slots"$'\n'
done
admin=$(secret "$ADMIN_FILE")
commands+="ACL SETUSER default on resetpass >$admin"$'\n'
out=$(printf '%s' "$commands" | admin_cli 2>&1)
if echo "$out" | grep -qiE 'err|denied|noauth'; then
    echo "redis-users.sh: $out" >&2
    exit 1
fi
