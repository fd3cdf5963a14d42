#!/usr/bin/python3
"""cluster_place.py — spread the services' partitions evenly over the
primaries of a new Redis Cluster.

    deploy/cluster_place.py [--partitions N] [--services a,b,...] HOST:PORT

A partition p of service s keeps its keys under the hash tag
{funnel:s:p}; the cluster puts a tag's slot wherever CRC16 lands it, so
with 16 partitions a service's partitions fall unevenly (e.g. 30/17/17 of
64 over three primaries), and so does each node's share of the work. On a
cluster that holds no key in those slots yet, this moves each used slot
(every partition's and each service's base slot {funnel:s}) to the
primaries in turn, so each primary owns about a third of every service's
partitions. A slot that already holds keys is left where it is (moving
data is `redis-cli --cluster reshard`'s job) and reported.

The move of an empty slot is the documented one: SETSLOT IMPORTING on the
new owner, MIGRATING on the old one, then SETSLOT NODE on every primary;
the replicas learn it from their primaries. The password, if any, comes
from REDISCLI_AUTH (as redis-cli takes it). Exit 0 when every node agrees
on the new owners, 1 otherwise.
"""
import argparse
import os
import sys
import time

import redis


def connect(host, port):
    return redis.Redis(host=host, port=port, password=os.environ.get("REDISCLI_AUTH"),
                       socket_timeout=10, decode_responses=True)


def primaries(seed):
    """{node id: (host, port)} of the primaries that serve slots (CLUSTER
    SLOTS: a node just made a replica may still say master elsewhere)."""
    out = {}
    for _, _, primary, *_ in seed.execute_command("CLUSTER", "SLOTS"):
        out[primary[2]] = (primary[0] or "127.0.0.1", int(primary[1]))
    return out


def owner_map(client):
    """slot -> node id as this node sees it."""
    owners = {}
    for first, last, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
        node = primary[2] if len(primary) > 2 else None
        for slot in range(first, last + 1):
            owners[slot] = node
    return owners


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seed", help="HOST:PORT of any node")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--services", default="campaign,leads,sales,retention")
    args = parser.parse_args()
    host, _, port = args.seed.rpartition(":")
    seed = connect(host or "127.0.0.1", int(port))
    nodes = primaries(seed)
    ids = sorted(nodes, key=lambda n: nodes[n][1])
    clients = {n: connect(*nodes[n]) for n in ids}
    services = [s for s in args.services.split(",") if s]
    # Partition p of every service, then the base slots: round robin
    tags = ["{funnel:%s:%d}" % (s, p) for p in range(args.partitions) for s in services]
    tags += ["{funnel:%s}" % s for s in services]
    wanted = {}
    for i, tag in enumerate(tags):
        slot = seed.execute_command("CLUSTER", "KEYSLOT", tag)
        wanted.setdefault(slot, ids[i % len(ids)])
    # One target node at a time, waiting until every primary agrees before
    # the next: moves to two nodes at once make both bump their config
    # epoch without consensus, and the collision can give a slot back to its
    # old owner. Rounds until the map holds (a slot given back moves again).
    moved = kept = 0
    skip = set()
    for _ in range(10):
        for target in ids:
            owners = owner_map(seed)
            batch = []
            for slot, want in sorted(wanted.items()):
                source = owners.get(slot)
                if want != target or source == target or source not in clients or slot in skip:
                    continue
                if clients[source].execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) > 0:
                    kept += 1
                    skip.add(slot)
                    continue
                try:
                    clients[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING",
                                                    source)
                    clients[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING",
                                                    target)
                    # The new owner first (it bumps its epoch), then the rest
                    for n in [target, source] + [n for n in ids if n not in (target, source)]:
                        clients[n].execute_command("CLUSTER", "SETSLOT", slot, "NODE", target)
                    batch.append(slot)
                    moved += 1
                except redis.ResponseError as e:
                    print("cluster_place: slot %d: %s (again later)" % (slot, e), file=sys.stderr)
            deadline = time.monotonic() + 5
            while batch and time.monotonic() < deadline:
                if all(owner_map(c).get(s) == target for c in clients.values() for s in batch):
                    break
                time.sleep(0.1)
        time.sleep(0.5)
        maps = [owner_map(c) for c in clients.values()]
        if all(m.get(s) == t for m in maps for s, t in wanted.items() if s not in skip):
            break
    else:
        for n, c in clients.items():
            seen = owner_map(c)
            wrong = {s: seen.get(s) for s, t in wanted.items() if seen.get(s) != t}
            if wrong:
                print("cluster_place: %s:%d sees %d slot(s) elsewhere, e.g. %s" % (
                    nodes[n][0], nodes[n][1], len(wrong), list(wrong.items())[:3]),
                    file=sys.stderr)
        print("cluster_place: the primaries did not agree on the new owners", file=sys.stderr)
        return 1
    share = {n: 0 for n in ids}
    owners = owner_map(seed)
    for tag in tags[:len(tags) - len(services)]:
        share[owners[seed.execute_command("CLUSTER", "KEYSLOT", tag)]] += 1
    print("cluster_place: moved %d empty slot(s)%s; partitions per primary: %s" % (
        moved, ", kept %d holding keys" % kept if kept else "",
        ", ".join("%s:%d %d" % (nodes[n][0], nodes[n][1], share[n]) for n in ids)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
