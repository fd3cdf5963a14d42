"""Funnel's services on a real Redis Cluster (issue 14; the contract:
proto/wire.md "Cluster", proto/README.md section 7). Every test makes its
own cluster with redis-cli --cluster create on loopback in a temp dir and
runs the real daemons: leads and sales as TWO instances each (a owning
partitions 0-7, b 8-15), campaign and retention as one instance (main)
owning all 16. Clients route each event to the instance owning its
partition (proto/README.md section 7, "Which event goes where").

- the kit's cluster parts on their own: replicas, the primary of a key, a
  failover after kill -9, a live slot migration under writes;
- a cluster URL without instances refused; two instances start and serve;
  the layout (one instance: records under the partitions' tags; several:
  under the base tag) recorded at the first start, the other kind of
  topology on the same data refused ("cluster layout");
- 3,000 buyer journeys through campaign, leads, sales and retention on 3
  primaries: every STATS count (from every instance) and the monitor's
  funnel exact, every primary holding data, each key where the layout
  puts it;
- kill -9 of a primary under load (a partition's, then the base slot's;
  a replica each, acks = 1, min-replicas-to-write 1): every acknowledged
  event counted once;
- a leads partition's slot migrated to another primary under load;
- kill -9 of a leads instance (a and b in turn) amid batches spanning
  partitions, restarted, unacknowledged batches retried with the same ids;
  kill -9 of one instance while the other serves on.

A client here does what the contract asks of one: it retries a PUBLISH
answered `unavailable` (or not answered at all) with the same ids."""
import json
import logging
import os
import random
import threading
import time
import unittest
import urllib.request

import redis
import redis.cluster

from funnel_e2e import (Background, Client, FunnelTestCase, PortInUse, RedisCluster, event,
                        free_port, owns_set, part_of, release_ports, wait_until)

PARTITIONS = 16
BUSINESS = ["campaign", "leads", "sales", "retention"]
# Which event goes where (proto/README.md section 7): the entity id is the
# first of the service's key fields present as a string in data; none:
# partition 0
KEY_FIELDS = {"campaign": ("campaign", "lead"), "leads": ("lead", "contact"),
              "sales": ("deal", "lead", "customer"), "retention": ("customer", "lead")}
# Two instances of leads and of sales (a: 0-7, b: 8-15), campaign and
# retention one each: the layout the issue asks to run
SPLIT = {"leads": ("a", "b"), "sales": ("a", "b")}


# A partition's own keys under {funnel:<svc>:<p>} (proto/wire.md, keys):
# with several instances on a cluster, nothing else may be there
PARTITION_KINDS = {"seq", "ob", "ob_first", "ob_size", "ckpt", "subs", "id", "applied",
                   "lease"}


def partition_key_kind(key, tag):
    """"{funnel:leads:3}:ob:0" -> "ob"; "{funnel:leads:3}:lead:x" -> "lead"."""
    if not key.startswith(tag + ":"):
        return key
    return key[len(tag) + 1:].split(":", 1)[0]


def event_part(svc, e):
    for field in KEY_FIELDS[svc]:
        value = e["data"].get(field)
        if isinstance(value, str):
            return part_of(value, PARTITIONS)
    return 0


# min-replicas-to-write: a primary cut off from its replica refuses writes
# (NOREPLICAS) instead of applying what the failover would discard
SAFE_PRIMARY = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"]


class ClusterCase(FunnelTestCase):
    """Per test: a temp dir, a Redis Cluster (no single redis-server), a
    topology whose redis/url is the cluster's seed list."""

    primaries = 3
    replicas = 0
    node_args = ()
    node_timeout = 3000

    workdir_prefix = "funnel-e2e-cluster-"

    def setUp(self):
        self.cluster = None
        self.extra_ports = {}           # (svc, instance) -> (api, pub)
        self.owner, self.endpoints = {}, {}
        self._clients_of = {}
        super().setUp()

    def start_store(self):
        self.cluster = RedisCluster(self.workdir, self.primaries, self.replicas,
                                    self.node_args, self.node_timeout)
        return self.cluster.url

    def _kit_cleanup(self, keep=False):
        for d in getattr(self, "daemons", []):
            try:
                d.kill9()
            except Exception:
                pass
        cluster = getattr(self, "cluster", None)
        if cluster is not None:
            if keep:
                for i, node in enumerate(cluster.nodes):
                    print("---- cluster node %d (port %d) log (tail) ----\n%s"
                          % (i, cluster.ports[i], node.output()[-1500:]))
            cluster.stop()
            cluster.release()
            self.cluster = None
        release_ports([p for pair in getattr(self, "extra_ports", {}).values() for p in pair])
        self.extra_ports = {}
        super()._kit_cleanup(keep)

    def write_config(self, acks=0, lease_ms=None, instances=("main",), services=BUSINESS,
                     url=None):
        """The topology: redis/url the cluster, each service in `services`
        with partitions = 16 and `instances`: a tuple of names for every
        one of them, or {svc: names} per service (a service left out gets
        one instance, main). One name owns 0-15 at the service's own
        api/pub; two or more split 0-15 in order (a: 0-7, b: 8-15), or
        as given ({name: "ranges"}), the first at the service's api/pub,
        the others at ports of their own.
        Records who owns what (self.owner, self.endpoints)."""
        lines = ["redis", '    url = "%s"' % (url or self.cluster.url)]
        if acks:
            lines += ["    acks = %d" % acks, "    acks_timeout_ms = 2000"]
        owner, endpoints = {}, {}
        for svc in BUSINESS:
            api, pub = self.topology.ports[svc]
            lines += [svc, '    api = "tcp://127.0.0.1:%d"' % api,
                      '    pub = "tcp://127.0.0.1:%d"' % pub]
            if svc == "sales":
                lines.append("    sla_s = 0")          # no speed-to-lead timers
            if lease_ms:
                lines.append("    lease_ms = %d" % lease_ms)
            if svc not in services:
                continue
            lines.append("    partitions = %d" % PARTITIONS)
            names = instances.get(svc, ("main",)) if isinstance(instances, dict) else instances
            if not names:
                continue
            lines.append("    instances")
            share = PARTITIONS // len(names)
            endpoints[svc] = {}
            for k, name in enumerate(names):
                i_api, i_pub = (api, pub) if k == 0 else self.instance_ports(svc, name)
                if isinstance(names, dict):         # {name: "ranges"}
                    owns = names[name]
                else:
                    last = PARTITIONS - 1 if k == len(names) - 1 else (k + 1) * share - 1
                    owns = "%d-%d" % (k * share, last)
                lines += ["        %s" % name,
                          '            api = "tcp://127.0.0.1:%d"' % i_api,
                          '            pub = "tcp://127.0.0.1:%d"' % i_pub,
                          '            owns = "%s"' % owns]
                endpoints[svc][name] = "tcp://127.0.0.1:%d" % i_api
                for p in owns_set(owns):
                    owner.setdefault(svc, {})[p] = name
        http, pub = self.topology.ports["monitor"]
        lines += ["monitor", '    http = "127.0.0.1:%d"' % http,
                  '    pub = "tcp://127.0.0.1:%d"' % pub]
        with open(self.topology.path, "w") as f:
            f.write("\n".join(lines) + "\n")
        # Both at once: a load running meanwhile routes by one or the other
        self.owner, self.endpoints = owner, endpoints

    def instance_ports(self, svc, name):
        """(api, pub) of a second or later instance: reserved once per test
        (kit-locked, released at the end), the same across rewrites."""
        key = (svc, name)
        if key not in self.extra_ports:
            self.extra_ports[key] = (free_port(), free_port())
        return self.extra_ports[key]

    def daemon_name(self, svc, name):
        """The kit's name of an instance's process: the service's for a
        lone `main`, else <svc>-<name>."""
        return svc if list(self.endpoints[svc]) == ["main"] else "%s-%s" % (svc, name)

    def instance(self, svc, name):
        """The Daemon last started for instance `name` of svc."""
        return [d for d in self.daemons if d.name == self.daemon_name(svc, name)][-1]

    def instance_client(self, svc, name):
        c = Client(self.endpoints[svc][name])
        self.clients.append(c)
        return c

    def clients_of(self, svc):
        """{instance name: a client}, one per instance, made once per test."""
        cache = self.__dict__.setdefault("_clients_of", {})
        if svc not in cache or set(cache[svc]) != set(self.endpoints[svc]):
            cache[svc] = {name: self.instance_client(svc, name) for name in self.endpoints[svc]}
        return cache[svc]

    def owner_client(self, svc, p):
        """A client of the instance owning partition p of svc."""
        return self.instance_client(svc, self.owner[svc][p])

    def route(self, svc):
        """event -> the api of the instance owning its partition (the rule
        of proto/README.md section 7, as funnelctl applies it)."""
        # Looked up at each call: a rewritten topology (partitions moved)
        # routes the next PUBLISH by the new owners
        return lambda e: self.endpoints[svc][self.owner[svc][event_part(svc, e)]]

    def wait_instance(self, svc, name, timeout=30):
        """Waits until instance `name` of svc answers PING with Redis ok
        (and says it is that instance); fails at once if it exited."""
        d = self.instance(svc, name)
        c = Client(self.endpoints[svc][name])
        try:
            def up():
                self.assertTrue(d.running(), "%s exited:\n%s" % (d.name, d.output()[-3000:]))
                try:
                    status, reply = c.call("PING", timeout=0.5)
                except TimeoutError:
                    return False
                if reply.get("redis") != "ok":
                    return False
                if name != "main" or len(self.endpoints[svc]) > 1:
                    self.assertEqual(reply.get("instance"), name, reply)
                return True
            wait_until(up, timeout=timeout, what="%s ready on the cluster" % d.name)
        finally:
            c.close()

    def start(self, names):
        """Every instance of each service in names (as write_config listed
        them); returns {svc: a client of its first instance}."""
        for svc in names:
            for name in self.endpoints[svc]:
                self.daemon(self.daemon_name(svc, name), "funnel-" + svc,
                            args=["--instance", name])
        out = {}
        for svc in names:
            for name in self.endpoints[svc]:
                self.wait_instance(svc, name)
            out[svc] = self.instance_client(svc, next(iter(self.endpoints[svc])))
        return out

    def assert_counters(self, expected, timeout=120, what="the counts"):
        """Waits (bounded) until every STATS counter named in
        expected[svc] has its value in the STATS of every instance of svc
        (the counters are the service's: any instance answers the totals);
        then, a second later (anything doubled would show by then), asserts
        it still does. A failure lists each counter that differs, expected
        vs got, and the instance that said so."""
        clients = {(svc, name): Client(endpoint) for svc in expected
                   for name, endpoint in self.endpoints[svc].items()}
        self.clients += list(clients.values())

        def diff():
            out = []
            for (svc, name), c in sorted(clients.items()):
                got = c.ok("STATS", timeout=10)["counters"]
                for counter, value in sorted(expected[svc].items()):
                    if got.get(counter, 0) != value:
                        out.append("%s.%s (instance %s): expected %d, got %d"
                                   % (svc, counter, name, value, got.get(counter, 0)))
            return out
        last = [None]

        def exact():
            last[0] = diff()
            return not last[0]
        try:
            wait_until(exact, timeout=timeout, interval=0.25, what=what)
        except PortInUse:
            raise
        except AssertionError:
            self.fail("%s never became exact within %d s:\n  %s"
                      % (what, timeout, "\n  ".join(last[0] or ["(no answer)"])))
        time.sleep(1.0)
        again = diff()
        self.assertEqual(again, [], "%s changed after being exact" % what)

    def slot_keys(self, tag):
        """(every key in tag's slot, as str; the primary serving it)."""
        cl = self.cluster
        slot = cl.keyslot(tag)
        owner = cl.primary_for_slot(slot)
        with cl.client(owner) as r:
            count = r.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
            keys = r.execute_command("CLUSTER", "GETKEYSINSLOT", slot, max(count, 1))
        return [k.decode() for k in keys], owner

    def primary_dbsizes(self):
        return {i: self.cluster.dbsize(i) for i in self.cluster.primaries()}


# ---------------------------------------------------------------------------
# The client side: publishing with retries, as the contract asks


class Publisher:
    """PUBLISH of fixed-id batches, each split by owner (`route`: an
    endpoint, or event -> the endpoint of the instance owning its
    partition, ClusterCase.route) into one PUBLISH per instance, in order;
    each retried with the same ids while the answer is ERR `unavailable`
    or none comes (a daemon killed, a failover settling, a slot
    migrating), until OK; any other ERR fails (`moved` too: the topology
    is fixed, so the route disagreeing with the service is a bug).
    Records, per batch, the summed OK replies and when the last came."""

    def __init__(self, route, deadline_s=120, reply_s=10):
        self.route = route if callable(route) else (lambda e, endpoint=route: endpoint)
        self.deadline_s = deadline_s
        self.reply_s = reply_s
        self.acked = []             # (batch index, reply, time of the OK)
        self.first_try = {}         # batch index -> time of its first PUBLISH
        self.acked_ids = set()
        self.retries = 0
        self.unavailable = []       # messages seen (a few)
        self.timeouts = 0
        self.shares = 0             # PUBLISHes acknowledged (a batch: one per owner)
        self.current = None         # the endpoint a PUBLISH is waiting on, if any
        self.follow_moved = False   # partitions moving: ERR moved sends the share again
        self.moved = []             # the moved replies followed

    def split(self, batch):
        """[(endpoint, events)] in order of first appearance."""
        out = {}
        for e in batch:
            out.setdefault(self.route(e), []).append(e)
        return list(out.items())

    def publish(self, index, batch):
        self.first_try[index] = time.time()
        deadline = time.time() + self.deadline_s
        total = {"accepted": 0, "duplicates": 0}
        work = self.split(batch)
        while work:
            endpoint, share = work.pop(0)
            n = self.publish_share(index, endpoint, share, deadline)
            if n is None:
                # moved (follow_moved): the route changed meanwhile; the
                # share again, split by the route as it is now
                work = self.split(share) + work
                continue
            total["accepted"] += n["accepted"]
            total["duplicates"] += n["duplicates"]
        self.acked.append((index, total, time.time()))
        self.acked_ids.update(e["id"] for e in batch)
        return total

    def publish_share(self, index, endpoint, batch, deadline):
        client = Client(endpoint)
        try:
            while True:
                if time.time() > deadline:
                    raise AssertionError(
                        "batch %d (ids %s..) not acknowledged by %s within %d s; %d retries, "
                        "last unavailable: %r" % (index, batch[0]["id"], endpoint,
                                                  self.deadline_s, self.retries,
                                                  self.unavailable[-3:]))
                try:
                    self.current = endpoint
                    status, reply = client.call("PUBLISH", batch if len(batch) > 1 else batch[0],
                                                timeout=self.reply_s)
                    self.current = None
                except TimeoutError:
                    self.timeouts += 1
                    self.retries += 1
                    continue                    # the same ids again
                if status == "OK":
                    if len(batch) == 1:
                        n = {"accepted": 0 if reply["duplicate"] else 1,
                             "duplicates": 1 if reply["duplicate"] else 0}
                    else:
                        n = reply
                    if n["accepted"] + n["duplicates"] != len(batch):
                        raise AssertionError("batch %d at %s: reply %r for %d events"
                                             % (index, endpoint, reply, len(batch)))
                    self.shares += 1
                    return n
                if reply.get("code") == "moved" and self.follow_moved:
                    self.moved.append(reply)
                    time.sleep(0.05)
                    return None
                if reply.get("code") != "unavailable":
                    raise AssertionError("batch %d at %s: ERR %r" % (index, endpoint, reply))
                if len(self.unavailable) < 50:
                    self.unavailable.append(reply.get("message"))
                self.retries += 1
                time.sleep(0.05)
        finally:
            client.close()

    def run(self, batches, stop=None):
        """Publishes batches in order; with `stop` (an Event), ends before
        the first batch after it is set. Returns how many were sent."""
        for i, batch in enumerate(batches):
            if stop is not None and stop.is_set():
                return i
            self.publish(i, batch)
        return len(batches)


def sql_batches(names, per_batch):
    """Leads captured and qualified to SQL by hand (lead.qualify), with
    ids fixed by the lead: `per_batch` leads (2 events each) a batch, so a
    batch spans several partitions. Each becomes a deal in sales."""
    batches = []
    for k in range(0, len(names), per_batch):
        batch = []
        for x in names[k:k + per_batch]:
            batch.append(event("lead.capture", {"lead": x, "email": "%s@x.io" % x},
                               eid="%s:cap" % x))
            batch.append(event("lead.qualify", {"lead": x, "stage": "sql"}, eid="%s:sql" % x))
        batches.append(batch)
    return batches


def lead_names(prefix, n):
    return ["%s%d" % (prefix, i) for i in range(n)]


class SqlLoadCase(ClusterCase):
    """Leads and sales on the cluster; a load of SQL leads into leads."""

    def stop_after_30_more(self, pub, stop, load, after):
        """Once 30 more batches are acknowledged (the load goes on after
        what just happened), stops the load; the batches sent."""
        acked = len(pub.acked)
        wait_until(lambda: len(pub.acked) >= acked + 30, timeout=90,
                   what="30 more batches acknowledged after " + after)
        stop.set()
        return load.join(180)

    def check_sql_load(self, names, publishers, c):
        """Every lead sent is acknowledged and counted exactly once in
        leads and, downstream, in sales (one deal each); each partition's
        outbox is contiguous from 1."""
        n = len(names)
        ids = {"%s:cap" % x for x in names} | {"%s:sql" % x for x in names}
        acked_ids = set().union(*(p.acked_ids for p in publishers))
        unacked = sorted(ids - acked_ids)
        self.assertEqual(unacked[:10], [], "%d ids sent, never acknowledged" % len(unacked))
        self.assertEqual(acked_ids, ids)
        replies = [r for p in publishers for _, r, _ in p.acked]
        self.assert_counters({
            "leads": {"accepted": 2 * n, "leads": n, "sql": n, "qualified_manually": n},
            "sales": {"consumed": n, "deals": n, "consume_rejected": 0},
        }, what="leads and sales counts")
        self.assertLessEqual(sum(r["accepted"] for r in replies), 2 * n)
        stats = c["leads"].ok("STATS")
        self.assertGreaterEqual(stats["counters"]["duplicates"],
                                sum(r["duplicates"] for r in replies))
        for x in names:
            # Any instance answers GET (records are the service's); each
            # lead asked of the instance that does NOT own it where there
            # are two
            owner = self.owner["leads"][part_of(x)]
            other = next((n for n in self.endpoints["leads"] if n != owner), owner)
            lead = self.clients_of("leads")[other].ok("GET", {"kind": "lead", "id": x})
            self.assertEqual((lead["lead"], lead["stage"]), (x, "sql"), x)
            deal = c["sales"].ok("GET", {"kind": "deal", "id": "L%s-1" % x})
            self.assertEqual(deal["lead"], x)
        # Nothing lost from any partition's outbox, nothing doubled; each
        # instance's STATS lists exactly the partitions it owns
        parts = {}
        for name, client in self.clients_of("leads").items():
            mine = client.ok("STATS")["parts"]
            self.assertEqual(sorted(int(p) for p in mine),
                             sorted(p for p, o in self.owner["leads"].items() if o == name),
                             "leads instance %s's parts" % name)
            parts.update(mine)
        self.assertEqual(sorted(int(p) for p in parts), list(range(PARTITIONS)))
        captured = {}
        for p, last in parts.items():
            owner = self.clients_of("leads")[self.owner["leads"][int(p)]]
            events = []
            while len(events) < last:
                page = owner.ok("REPLAY", {"partition": int(p), "from": len(events) + 1,
                                           "limit": 1000})
                if not page["events"]:
                    break
                events += page["events"]
            self.assertEqual([e["seq"] for e in events], list(range(1, last + 1)),
                             "partition %s's outbox" % p)
            self.assertTrue(all(e["part"] == int(p) for e in events), "partition %s" % p)
            for e in events:
                if e["type"] == "lead.captured":
                    captured[e["data"]["lead"]] = captured.get(e["data"]["lead"], 0) + 1
        missing = sorted(set(names) - set(captured))
        doubled = sorted(x for x, k in captured.items() if k > 1)
        self.assertEqual((missing[:10], doubled[:10], len(captured)), ([], [], n),
                         "lead.captured in the outboxes: (missing, doubled, leads)")


# ---------------------------------------------------------------------------
# The kit's cluster on its own (no Funnel daemon)


class TestClusterKit(ClusterCase):
    replicas = 1
    node_args = SAFE_PRIMARY
    node_timeout = 2000

    def test_replicas_failover_and_migration(self):
        cl = self.cluster
        self.assertEqual(cl.count, 6)
        primaries = cl.primaries()
        self.assertEqual(len(primaries), 3)
        for p in primaries:
            self.assertEqual(cl.role(p), "master")
            self.assertEqual(len(cl.replicas_of(p)), 1)
            self.assertEqual(cl.role(cl.replicas_of(p)[0]), "slave")
        for i in range(cl.count):
            with cl.client(i) as c:
                self.assertEqual(c.config_get("min-replicas-to-write")["min-replicas-to-write"],
                                 "1")
        # The primary of a key is where it is written
        key = "{funnel:leads:3}:probe"
        owner = cl.primary_for_key(key)
        with cl.client(owner) as c:
            c.set(key, "x")
        other = next(p for p in primaries if p != owner)
        with cl.client(other) as c:
            with self.assertRaises(redis.ResponseError) as e:
                c.get(key)
            self.assertIn("MOVED %d" % cl.keyslot(key), str(e.exception))

        # kill -9 of that primary: its replica is promoted, keeps the key
        replica = cl.replicas_of(owner)[0]
        t = time.time()
        promoted = cl.fail_over(owner)
        took = time.time() - t
        self.assertEqual(promoted, replica)
        self.assertEqual(cl.primary_for_key(key), replica)
        with cl.client(replica) as c:
            self.assertEqual(c.get(key), b"x")
        # Restarted, the old primary rejoins as the new one's replica
        cl.restart(owner)
        cl.wait_settled()
        self.assertEqual(cl.role(owner), "slave")
        self.assertEqual(cl.replicas_of(replica), [owner])

        # A slot migrated while a cluster client keeps incrementing its
        # keys (ASK/TRYAGAIN followed by redis-py): every increment lands
        slot = cl.keyslot(key)
        keys = ["{funnel:leads:3}:k%d" % i for i in range(300)]
        with cl.client(replica) as c:
            for k in keys:
                c.set(k, 0)
        # redis-py logs every ASK/MOVED it follows as an exception
        logging.getLogger("redis.cluster").setLevel(logging.CRITICAL)
        rc = redis.cluster.RedisCluster(host="127.0.0.1", port=cl.ports[replica],
                                        socket_timeout=10)
        self.addCleanup(rc.close)
        stop = threading.Event()
        done = {}

        def writer():
            n = 0
            while not stop.is_set():
                k = keys[n % len(keys)]
                rc.incr(k)
                done[k] = done.get(k, 0) + 1
                n += 1
            return n
        target = next(p for p in cl.primaries() if p != replica)
        w = Background(writer)
        moved = Background(cl.migrate_slot, slot, target, 10, 0.02).join(120)
        stop.set()
        w.join(30)
        self.assertEqual(moved, len(keys) + 1)
        self.assertEqual(cl.primary_for_slot(slot), target)
        with cl.client(target) as c:
            self.assertEqual(c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot), moved)
            for k in keys:
                self.assertEqual(int(c.get(k)), done.get(k, 0), k)
        with cl.client(replica) as c:
            self.assertEqual(c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot), 0)
        cl.wait_settled()

        # The quick way: kill -9 and CLUSTER FAILOVER TAKEOVER on the replica
        backup = cl.replicas_of(target)[0]
        t = time.time()
        self.assertEqual(cl.fail_over(target, takeover=True), backup)
        self.assertLess(time.time() - t, 10)     # no node timeout, no election delay
        self.assertEqual(cl.primary_for_slot(slot), backup)
        with cl.client(backup) as c:
            self.assertEqual(int(c.get(keys[0])), done.get(keys[0], 0))
        cl.restart(target)
        cl.wait_settled()
        self.assertEqual(cl.replicas_of(backup), [target])
        print("\n(the cluster's own failover in %.1f s)" % took)


# ---------------------------------------------------------------------------
# Refusals


class TestRefusals(ClusterCase):
    def test_cluster_url_needs_instances_and_one_layout(self):
        # No instances listed: every service refuses, exit 2, one line
        self.write_config(instances=())
        for svc in BUSINESS:
            d = self.daemon(svc)
            self.assertEqual(d.proc.wait(15), 2, d.output())
            self.assertIn("must list its instances", d.output())
        # Nothing was written to the cluster
        self.assertEqual(sum(self.primary_dbsizes().values()), 0)
        cl = self.cluster

        def layout(svc):
            with cl.client(cl.primary_for_key("{funnel:%s}" % svc)) as r:
                return r.get("{funnel:%s}:layout" % svc)

        # Two instances of leads start and serve: each takes the events of
        # its partitions, says `moved` for the other's, and either one
        # answers GET of any lead
        self.write_config(instances={"leads": ("a", "b"), "retention": ("main",)},
                          services=["leads", "retention"])
        self.start(["leads"])
        a, b = (self.instance_client("leads", n) for n in ("a", "b"))
        xa = next(x for x in lead_names("ra", 100) if self.owner["leads"][part_of(x)] == "a")
        xb = next(x for x in lead_names("rb", 100) if self.owner["leads"][part_of(x)] == "b")
        a.ok("PUBLISH", event("lead.capture", {"lead": xa, "email": "%s@x.io" % xa}))
        b.ok("PUBLISH", event("lead.capture", {"lead": xb, "email": "%s@x.io" % xb}))
        wrong = next(x for x in lead_names("rw", 100) if self.owner["leads"][part_of(x)] == "b")
        status, err = a.call("PUBLISH", event("lead.capture", {"lead": wrong}))
        self.assertEqual((status, err.get("code"), err.get("api")),
                         ("ERR", "moved", self.endpoints["leads"]["b"]), err)
        for c in (a, b):
            for x in (xa, xb):
                self.assertEqual(c.ok("GET", {"kind": "lead", "id": x})["lead"], x)
            self.assertEqual(c.ok("STATS")["counters"]["leads"], 2)
        self.assertEqual(layout("leads"), b"shared")
        # Retention with one instance: its first start records the other
        # layout
        self.start(["retention"])
        self.assertEqual(layout("retention"), b"partitioned")
        for d in list(self.daemons):
            if d.running():
                self.assertEqual(d.stop(), 0, d.output()[-2000:])

        # The same data, the other kind of topology: refused, exit 1, one
        # line naming the cluster layout and the instances; nothing changed
        def refused(svc, name):
            d = self.daemon("%s-%s-refused" % (svc, name), "funnel-" + svc,
                            args=["--instance", name])
            self.assertEqual(d.proc.wait(30), 1, d.output()[-2000:])
            line = [l for l in d.output().splitlines() if "cluster layout" in l]
            self.assertTrue(line, d.output()[-2000:])
            self.assertIn("instances", line[0])
            return line[0]
        self.write_config(instances={"leads": ("main",), "retention": ("a", "b")},
                          services=["leads", "retention"])
        one = refused("leads", "main")
        several = [refused("retention", n) for n in ("a", "b")]
        self.assertEqual((layout("leads"), layout("retention")), (b"shared", b"partitioned"))
        # ...and the right topology again: both start
        self.write_config(instances={"leads": ("a", "b"), "retention": ("main",)},
                          services=["leads", "retention"])
        self.start(["leads", "retention"])
        self.assertEqual(self.instance_client("leads", "b").ok("STATS")["counters"]["leads"], 2)
        print("\n(refused: %s | %s)" % (one.strip(), several[0].strip()))
        # The whole line, as proto/wire.md ("Cluster") gives it: nothing cut
        for line in [one] + several:
            self.assertIn("one or several instances on a cluster is fixed for the life of the "
                          "data: refusing to start", line)


# ---------------------------------------------------------------------------
# 3,000 buyer journeys through the four services


CAMPAIGNS = 8
TOUCHES = 6
# STATS counters each journey adds (bench/funnel_bench_funnel.c's table):
# 6 touches and a capture with BANT attributes reach SQL; sales opens the
# deal, an offer and close/won; retention onboards the customer, whose
# second order makes a repeat customer
PER_JOURNEY = {
    "campaign": {"accepted": 6, "consumed": 4, "touches": 6, "reached": 1, "engaged": 1,
                 "conv_lead": 1, "conv_mql": 1, "conv_sql": 1, "conv_won": 1,
                 "consume_rejected": 0},
    "leads": {"accepted": 1, "consumed": 6, "leads": 1, "mql": 1, "sql": 1,
              "consume_rejected": 0},
    "sales": {"accepted": 2, "consumed": 1, "deals": 1, "won": 1, "offers": 1,
              "consume_rejected": 0},
    "retention": {"accepted": 1, "consumed": 1, "customers": 1, "repeat": 1,
                  "consume_rejected": 0},
}
JOURNEYS = int(os.environ.get("FUNNEL_E2E_JOURNEYS", "3000"))


class Journeys:
    """The events of n buyer journeys (bench/bench_journey.c's, ids fixed
    by journey and step)."""

    def __init__(self, run, n):
        self.run, self.n = run, n

    def lead(self, j):
        return "%s.j%d" % (self.run, j)

    def campaign(self, k):
        return "%s.c%d" % (self.run, k)

    def upserts(self):
        return [event("campaign.upsert", {"campaign": self.campaign(k), "name": "Bench %d" % k,
                                          "channel": "email", "status": "active",
                                          "budget": 10000000},
                      eid="%s:upsert" % self.campaign(k)) for k in range(CAMPAIGNS)]

    def touches(self):
        return [event("touch", {"campaign": self.campaign(j % CAMPAIGNS),
                                "kind": "form" if t == 0 else "click", "contact": self.lead(j)},
                      eid="%s:t%d" % (self.lead(j), t))
                for j in range(self.n) for t in range(TOUCHES)]

    def captures(self):
        return [event("lead.capture", {
            "lead": self.lead(j), "email": "j%d.%s@bench.example.com" % (j, self.run),
            "name": "Buyer %d" % j, "campaign": self.campaign(j % CAMPAIGNS),
            "attrs": {"budget": 500000, "authority": True, "need": True, "timeline_days": 30,
                      "region": "us"}}, eid="%s:cap" % self.lead(j)) for j in range(self.n)]

    def closes(self):
        out = []
        for j in range(self.n):
            deal = "L%s-1" % self.lead(j)       # proto/sales.md: the deal of a lead.sql
            out.append(event("deal.offer", {"deal": deal, "amount": 250000, "discount_pct": 10},
                             eid="%s:offer" % deal))
            out.append(event("deal.close", {"deal": deal, "outcome": "won"},
                             eid="%s:close" % deal))
        return out

    def orders(self):
        return [event("customer.order", {"customer": self.lead(j), "amount": 120000,
                                         "order": "o2"}, eid="%s:order" % self.lead(j))
                for j in range(self.n)]


def chunks(events, size):
    return [events[k:k + size] for k in range(0, len(events), size)]


class TestJourneys(ClusterCase):
    def drive_journeys(self, n):
        """n journeys, step by step; returns (their events, seconds to
        every deal, seconds in all) once every count is exact."""
        c = self.start(BUSINESS)
        jr = Journeys("cj%d" % random.randrange(10 ** 6), n)
        self.journey_lead = jr.lead
        t0 = time.time()

        def send(svc, events, size=500):
            pub = Publisher(self.route(svc), deadline_s=60)
            pub.run(chunks(events, size))
            return pub
        send("campaign", jr.upserts())
        # Touches (campaign) and captures (leads) side by side
        loads = [Background(send, "campaign", jr.touches()),
                 Background(send, "leads", jr.captures())]
        for b in loads:
            b.join(300)
        self.assert_counters({"sales": {"deals": n}}, timeout=180, what="%d deals opened" % n)
        t1 = time.time()
        send("sales", jr.closes())
        self.assert_counters({"retention": {"customers": n}}, timeout=180,
                             what="%d customers onboarded" % n)
        send("retention", jr.orders())
        expected = {svc: {k: v * n for k, v in per.items()} for svc, per in PER_JOURNEY.items()}
        expected["campaign"]["accepted"] += CAMPAIGNS
        self.assert_counters(expected, timeout=180, what="every count of %d journeys" % n)
        took = time.time() - t0
        # Spot checks through GET: a deal won, a repeat customer
        for j in (0, n // 2, n - 1):
            for sales in self.clients_of("sales").values():
                deal = sales.ok("GET", {"kind": "deal", "id": "L%s-1" % jr.lead(j)})
                self.assertEqual((deal["lead"], deal["status"]), (jr.lead(j), "won"))
            customer = c["retention"].ok("GET", {"kind": "customer", "id": jr.lead(j)})
            self.assertEqual(customer["orders"], 2)
        return t1 - t0, took

    def test_journeys_through_four_services_exact(self):
        self.write_config(instances=SPLIT)
        n = JOURNEYS
        to_deals, took = self.drive_journeys(n)

        # The funnel as the monitor shows it (from the services' STATS)
        self.daemon("monitor")
        url = "http://%s/api/funnel" % self.topology.http()
        stages = {s: n for s in ("reached", "engaged", "leads", "mql", "sql", "deals", "won",
                                 "customers", "repeat")}
        stages["lost"] = 0

        def funnel():
            with urllib.request.urlopen(url, timeout=5) as r:
                return {st["name"]: st["count"] for st in json.loads(r.read())["stages"]}
        last = [None]

        def exact():
            last[0] = funnel()
            return last[0] == stages
        try:
            wait_until(exact, timeout=30, interval=0.25, what="the monitor's funnel")
        except PortInUse:
            raise
        except AssertionError:
            self.fail("the monitor's funnel: expected %r, got %r" % (stages, last[0]))

        # The data really spread: every primary holds keys; every partition
        # of leads, sales and retention has keys on the primary serving its
        # tag's slot, and each primary serves some of them (campaign's
        # entities are its 8 campaigns: a few partitions only). Where
        # the layout puts them (MI_CONTRACT, proto/wire.md "Cluster"):
        # retention (one instance) keeps its records under the partition's
        # tag; leads and sales (two instances) keep only each partition's
        # outbox, seq, checkpoints, dedup ids, applied marker and lease
        # there, their records under the base tag {funnel:<svc>}, every
        # partition's records present
        sizes = self.primary_dbsizes()
        self.assertEqual(len(sizes), self.primaries)
        self.assertTrue(all(v > 0 for v in sizes.values()), sizes)
        cl = self.cluster
        for svc in ["leads", "sales", "retention"]:
            shared = len(self.endpoints[svc]) > 1
            holders = {}
            for p in range(PARTITIONS):
                tag = "{funnel:%s:%d}" % (svc, p)
                keys, owner = self.slot_keys(tag)
                self.assertGreater(len(keys), 0, "%s partition %d: no keys on its node %d"
                                   % (svc, p, owner))
                kinds = {partition_key_kind(k, tag) for k in keys}
                if shared:
                    records = kinds - PARTITION_KINDS
                    self.assertEqual(records, set(), "%s partition %d: keys other than the "
                                     "partition's own under its tag: %r"
                                     % (svc, p, [k for k in keys if partition_key_kind(k, tag)
                                                 in records][:5]))
                    self.assertIn("ob", kinds, "%s partition %d: no outbox" % (svc, p))
                    self.assertIn("id", kinds, "%s partition %d: no dedup ids" % (svc, p))
                else:
                    self.assertTrue(kinds - PARTITION_KINDS, "%s partition %d: no records "
                                    "under its tag: %r" % (svc, p, sorted(kinds)))
                holders[owner] = holders.get(owner, 0) + 1
            self.assertEqual(len(holders), self.primaries,
                             "%s's partitions are on %r only" % (svc, holders))
            base = "{funnel:%s}" % svc
            keys, owner = self.slot_keys(base)
            by_part = {}
            for k in keys:
                rest = k[len(base) + 1:]
                head = rest.split(":", 1)[0]
                if head.isdigit():
                    by_part.setdefault(int(head), set()).add(rest.split(":")[1])
            if shared:
                self.assertEqual(sorted(by_part), list(range(PARTITIONS)),
                                 "%s: partitions with records under %s on node %d"
                                 % (svc, base, owner))
            else:
                self.assertEqual(by_part, {}, "%s (one instance): records under %s: %r"
                                 % (svc, base, sorted(by_part)))
        # Spot checks of where records are: a lead (kind l), a deal (d, in
        # its lead's partition), a customer (c), each in exactly one
        # partition's key, in the layout of its service
        for j in (0, n - 1):
            x = self.journey_lead(j)
            for svc, kind, entity in (("leads", "l", x), ("sales", "d", "L%s-1" % x),
                                      ("retention", "c", x)):
                found = []
                for p in range(PARTITIONS):
                    key = ("{funnel:%s}:%d:%s:%s" % (svc, p, kind, entity)
                           if len(self.endpoints[svc]) > 1
                           else "{funnel:%s:%d}:%s:%s" % (svc, p, kind, entity))
                    with cl.client(cl.primary_for_key(key)) as r:
                        if r.exists(key):
                            found.append(key)
                self.assertEqual(len(found), 1, "%s %s: keys %r" % (kind, entity, found))
        print("\n(%d journeys: %.1f s to every deal, %.1f s in all; keys per primary %s)"
              % (n, to_deals, took, sizes))


# ---------------------------------------------------------------------------
# kill -9 of a primary under load


class TestPrimaryKilled(SqlLoadCase):
    replicas = 1
    node_args = SAFE_PRIMARY
    node_timeout = 2000

    def test_kill9_of_a_partitions_primary(self):
        """The primary of partition 3's slot (and of a few others)."""
        self.kill9_under_load("{funnel:leads:3}")

    def test_kill9_of_the_base_slots_primary(self):
        """The primary of leads' base slot: its stats, lease and the
        intents of every batch spanning slots."""
        self.kill9_under_load("{funnel:leads}")

    def kill9_under_load(self, tag):
        # A lease longer than the failover (about 4 s with a 2 s node
        # timeout): the instance keeps its partitions through it
        self.write_config(acks=1, lease_ms=15000, services=["leads", "sales"], instances=SPLIT)
        c = self.start(["leads", "sales"])
        cl = self.cluster
        victim = cl.primary_for_key(tag)
        on_victim = [p for p in range(PARTITIONS)
                     if cl.primary_for_key("{funnel:leads:%d}" % p) == victim]
        names = lead_names("fk", 1500)
        batches = sql_batches(names, 5)
        # The load covers the victim's partitions
        self.assertTrue({part_of(x) for x in names} >= set(on_victim))
        pub = Publisher(self.route("leads"), deadline_s=90)
        stop = threading.Event()
        load = Background(pub.run, batches, stop)
        wait_until(lambda: len(pub.acked) >= 30, timeout=60, what="30 batches acknowledged")
        killed_at = time.time()
        promoted = cl.fail_over(victim)
        promoted_at = time.time()
        # The old primary back, as a replica of the promoted one: its slots
        # can take writes again (min-replicas-to-write 1, acks = 1)
        cl.restart(victim)
        cl.wait_settled()
        sent = self.stop_after_30_more(pub, stop, load, "the failover")
        names = names[:sent * 5]
        self.assertEqual(cl.primary_for_key(tag), promoted)
        # The load went on through the failover: some batch was in flight
        # while the victim's slots had no primary (answered `unavailable`
        # and retried, or held by the service until the promotion)
        spanning = [i for i, _, at in pub.acked
                    if pub.first_try[i] <= promoted_at and at >= killed_at]
        self.assertTrue(spanning, "no batch was in flight during the failover")
        held = max(at - pub.first_try[i] for i, _, at in pub.acked)
        self.check_sql_load(names, [pub], c)
        print("\n(primary of %s, %d of leads' partitions: %d leads in %d batches; failover "
              "%.1f s; %d retries, %d without reply, longest wait for an OK %.1f s; first "
              "unavailable: %r)" % (tag, len(on_victim), len(names), sent,
                                    promoted_at - killed_at, pub.retries, pub.timeouts, held,
                                    pub.unavailable[:1]))


# ---------------------------------------------------------------------------
# A leads partition's slot migrated under load


class TestSlotMigration(SqlLoadCase):
    def test_partition_slot_migrated_under_load(self):
        self.write_config(services=["leads", "sales"], instances=SPLIT)
        c = self.start(["leads", "sales"])
        cl = self.cluster
        tag = "{funnel:leads:3}"
        slot = cl.keyslot(tag)
        source = cl.primary_for_slot(slot)
        target = next(p for p in cl.primaries() if p != source)
        # Every batch holds a lead of partition 3 (instance a's: its outbox,
        # seq and dedup ids under the moving tag, its records under the
        # base tag, the layout of several instances) and 3 others;
        # alongside, a second client publishes leads whose partitions (the
        # lead's and its e-mail's) are all other than 3
        candidates = lead_names("mg", 8000)
        p3 = [x for x in candidates if part_of(x) == 3][:300]
        rest = [x for x in candidates if part_of(x) != 3]
        names = []
        for k in range(len(p3)):
            names += [p3[k]] + rest[3 * k:3 * k + 3]
        batches = sql_batches(names, 4)
        away = [x for x in lead_names("ot", 3000)
                if part_of(x) != 3 and part_of("%s@x.io" % x) != 3][:600]
        pub = Publisher(self.route("leads"), deadline_s=90)
        other = Publisher(self.route("leads"), deadline_s=90)
        stop = threading.Event()
        load = Background(pub.run, batches, stop)
        other_load = Background(other.run, sql_batches(away, 2), stop)
        # Keys in the slot before it moves (partition 3's leads so far)
        wait_until(lambda: len(pub.acked) >= 60, timeout=60, what="60 batches acknowledged")
        with cl.client(source) as r:
            before = r.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
        self.assertGreater(before, 0)
        started = time.time()
        moved = cl.migrate_slot(slot, target, batch=3, pause=0.1, timeout=120)
        ended = time.time()
        acked_before = len(pub.acked)
        wait_until(lambda: len(pub.acked) >= acked_before + 20, timeout=60,
                   what="20 more batches acknowledged after the migration")
        stop.set()
        names = names[:load.join(180) * 4] + away[:other_load.join(180) * 2]
        # The load ran through the migration: some batch (each one writes
        # partition 3) was in flight while the slot moved. It may have been
        # answered OK only after the move (a transaction over keys split
        # between the nodes gets TRYAGAIN until the last key has moved, and
        # the contract lets PUBLISH answer `unavailable` meanwhile): how
        # many batches got OK during the move is reported, not required
        overlapping = [i for i, _, at in pub.acked if pub.first_try[i] <= ended and at >= started]
        self.assertTrue(overlapping, "no batch was in flight while the slot moved (%.2f s)"
                        % (ended - started))
        during = [i for i, _, at in pub.acked if started <= at <= ended]
        other_during = [i for i, _, at in other.acked if started <= at <= ended]
        self.check_sql_load(names, [pub, other], c)
        # Every key of the partition is on the new node, none elsewhere
        self.assertEqual(cl.primary_for_slot(slot), target)
        for i in range(cl.count):
            with cl.client(i) as r:
                count = r.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
                keys = r.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10)
            if i == target:
                self.assertGreaterEqual(count, before)
                self.assertTrue(all(k.startswith(tag.encode()) for k in keys), keys)
            else:
                self.assertEqual(count, 0, "node %d still holds keys of slot %d: %r"
                                 % (i, slot, keys))
        print("\n(%d leads; slot %d: %d keys moved in %.1f s; batches answered OK meanwhile: "
              "%d writing partition 3, %d not; %d + %d retries; first unavailable: %r)"
              % (len(names), slot, moved, ended - started, len(during), len(other_during),
                 pub.retries, other.retries, (pub.unavailable + other.unavailable)[:1]))


# ---------------------------------------------------------------------------
# kill -9 of the leads daemon amid batches spanning partitions


class TestDaemonKilled(SqlLoadCase):
    def pending_intents(self, r, owner=None):
        """Fields of leads' intents hash (proto/wire.md "Cluster": field
        <id>:<slot>); with owner, only those of slots holding a partition
        that instance owns (the fields of its batches)."""
        fields = [f.decode() for f in r.hkeys("{funnel:leads}:intents")]
        if owner is None:
            return len(fields)
        slots = {self.cluster.keyslot("{funnel:leads:%d}" % p)
                 for p, o in self.owner["leads"].items() if o == owner}
        return sum(1 for f in fields if int(f.rsplit(":", 1)[1]) in slots)

    def half_applied(self, r, owner):
        """Intents of owner's slots not applied yet: the id (<token>.<n>)
        newer than the `applied` of that slot's partitions (a commit
        caught between its base transaction and another group's)."""
        def key(i):
            token, _, n = i.partition(".")
            return (int(token), int(n or 0))
        out = 0
        cl = self.cluster
        for f in r.hkeys("{funnel:leads}:intents"):
            ident, _, slot = f.decode().rpartition(":")
            parts = [p for p, o in self.owner["leads"].items()
                     if o == owner and cl.keyslot("{funnel:leads:%d}" % p) == int(slot)]
            for p in parts:
                marker = "{funnel:leads:%d}:applied" % p
                with cl.client(cl.primary_for_key(marker)) as c:
                    applied = c.get(marker)
                if applied is None or key(applied.decode()) < key(ident):
                    out += 1
                    break
        return out

    def test_kill9_of_leads_amid_spanning_batches(self):
        self.write_config(lease_ms=2000, services=["leads", "sales"], instances=SPLIT)
        c = self.start(["leads", "sales"])
        # 25 leads a batch: 50 events over most of the 16 partitions, split
        # between the two instances: each share still spans several
        # partitions (slots) of its instance
        names = lead_names("dk", 4000)
        batches = sql_batches(names, 25)
        owner = self.owner["leads"]
        for b in batches:
            for name in ("a", "b"):
                mine = {part_of(e["data"]["lead"]) for e in b} & \
                    {p for p, o in owner.items() if o == name}
                self.assertGreater(len(mine), 2, "a batch's share for %s: partitions %r"
                                   % (name, mine))
        cl = self.cluster
        intents = cl.client(cl.primary_for_key("{funnel:leads}"))
        self.addCleanup(intents.close)
        pub = Publisher(self.route("leads"), deadline_s=90, reply_s=3)
        load = Background(pub.run, batches)
        # Kills at random moments of the load, instance a then b in turn
        # (the other one serving on), until one has landed inside a commit
        # spanning slots (its intent still in Redis after the kill: some
        # slots applied, others not) and one has cut a PUBLISH off (its
        # batch retried), and at least 4 in all
        kills, caught, half = 0, 0, 0
        killed = {"a": 0, "b": 0}
        rnd = random.Random(14)
        while kills < 4 or ((caught == 0 or pub.retries == 0) and kills < 16):
            goal = len(pub.acked) + 5
            wait_until(lambda: len(pub.acked) >= goal or not load.is_alive(), timeout=90,
                       what="5 batches acknowledged before kill %d" % (kills + 1))
            if not load.is_alive():
                break
            name = "ab"[kills % 2]
            leads = self.instance("leads", name)
            # While a PUBLISH waits on that instance (a batch's share for
            # the other would only queue until the restart)
            endpoint = self.endpoints["leads"][name]
            wait_until(lambda: pub.current == endpoint or not load.is_alive(), timeout=30,
                       interval=0.001, what="a PUBLISH at leads %s" % name)
            time.sleep(rnd.uniform(0, 0.002))       # a share commits in a few ms
            leads.kill9()
            kills += 1
            killed[name] += 1
            caught += self.pending_intents(intents, name) > 0
            half += self.half_applied(intents, name) > 0
            leads.start()
            self.wait_instance("leads", name)
        sent = load.join(240)
        self.assertEqual(sent, len(batches))
        self.assertGreaterEqual(kills, 4, "the load ended before the fourth kill")
        self.assertGreater(caught, 0, "none of %d kills landed inside a commit spanning slots"
                           % kills)
        self.assertGreater(pub.retries, 0, "no batch was retried: no kill landed amid the load")
        self.check_sql_load(names, [pub], c)
        # No intent left behind once idle
        wait_until(lambda: self.pending_intents(intents) == 0, timeout=10,
                   what="{funnel:leads}:intents empty")
        print("\n(%d leads in %d batches of 50 events; %d kills (a %d, b %d), %d with the "
              "killed instance's intents in Redis, %d of them half applied; %d retries, %d "
              "without reply)" % (len(names), len(batches), kills, killed["a"], killed["b"],
                                  caught, half, pub.retries, pub.timeouts))

    def test_kill9_of_one_instance_while_the_other_serves(self):
        """kill -9 of leads instance a under load; b goes on acknowledging
        its own leads while a is down; a restarted takes its partitions
        back: every count exact, every outbox contiguous."""
        self.write_config(lease_ms=2000, services=["leads", "sales"], instances=SPLIT)
        c = self.start(["leads", "sales"])
        owner = self.owner["leads"]
        names = lead_names("ok", 6000)
        mine = {n: [x for x in names if owner[part_of(x)] == n][:2000] for n in ("a", "b")}
        pubs = {n: Publisher(self.route("leads"), deadline_s=90, reply_s=3) for n in mine}
        stop = threading.Event()
        loads = {n: Background(pubs[n].run, sql_batches(mine[n], 4), stop) for n in mine}
        wait_until(lambda: all(len(p.acked) >= 20 for p in pubs.values()), timeout=60,
                   what="20 batches acknowledged by each instance")
        a = self.instance("leads", "a")
        a.kill9()
        down_at = time.time()
        b_before = len(pubs["b"].acked)
        a_before = len(pubs["a"].acked)
        # b serves on while a is down (its leads, its partitions), a down
        # past its lease (2 s): a's partitions' leases expire meanwhile
        wait_until(lambda: len(pubs["b"].acked) >= b_before + 20, timeout=30,
                   what="20 of b's batches acknowledged while a is down")
        time.sleep(max(0.0, down_at + 3.0 - time.time()))
        self.assertFalse(a.running())
        self.assertLessEqual(len(pubs["a"].acked), a_before + 1,
                             "a's batches acknowledged while a was down")
        a.start()
        self.wait_instance("leads", "a")
        up_at = time.time()
        wait_until(lambda: len(pubs["a"].acked) >= a_before + 20, timeout=60,
                   what="20 more of a's batches acknowledged after its restart")
        stop.set()
        sent = {n: loads[n].join(180) for n in loads}
        done = mine["a"][:sent["a"] * 4] + mine["b"][:sent["b"] * 4]
        b_meanwhile = [i for i, _, at in pubs["b"].acked if down_at <= at <= up_at]
        self.assertGreaterEqual(len(b_meanwhile), 20, "b's batches acknowledged while a was down")
        # a's load was held, not refused: a batch sent while a was down
        # (queued by ZeroMQ, or retried on no reply) acknowledged after
        held = [i for i, _, at in pubs["a"].acked
                if pubs["a"].first_try[i] <= up_at and at >= up_at]
        self.assertTrue(held, "no batch of a's was in flight while a was down")
        self.check_sql_load(done, list(pubs.values()), c)
        print("\n(%d + %d leads; a down %.1f s, meanwhile %d batches acknowledged by b; "
              "%d retries for a)" % (sent["a"] * 4, sent["b"] * 4, up_at - down_at,
                                     len(b_meanwhile), pubs["a"].retries))


# ---------------------------------------------------------------------------
# Partitions moved between the instances of leads


class TestPartitionsMoved(SqlLoadCase):
    def test_partitions_moved_from_a_killed_instance(self):
        """a owning 0-7 and b 8-15 under load; kill -9 of a while a PUBLISH
        waits on it (a batch's intent possibly stored, not all applied);
        the file rewritten (a 0-3, b 4-15), b stopped and both started:
        b completes a's pending intents of 4-7 and carries their seqs on,
        the load follows `moved` to the new owner, sales (subscribed to
        both instances) follows the partitions; every count exact, every
        outbox contiguous."""
        self.write_config(lease_ms=2000, services=["leads", "sales"], instances=SPLIT)
        c = self.start(["leads", "sales"])
        moving = {4, 5, 6, 7}
        # Each batch: a lead of the moving partitions and 4 others, so
        # every share for a holds one (the retry after the move meets
        # `moved`)
        candidates = lead_names("mv", 12000)
        p47 = [x for x in candidates if part_of(x) in moving][:600]
        rest = [x for x in candidates if part_of(x) not in moving]
        names = []
        for k in range(len(p47)):
            names += [p47[k]] + rest[4 * k:4 * k + 4]
        batches = sql_batches(names, 5)
        pub = Publisher(self.route("leads"), deadline_s=120, reply_s=3)
        pub.follow_moved = True
        stop = threading.Event()
        load = Background(pub.run, batches, stop)
        wait_until(lambda: len(pub.acked) >= 40, timeout=60, what="40 batches acknowledged")
        a_api = self.endpoints["leads"]["a"]
        wait_until(lambda: pub.current == a_api, timeout=30, interval=0.001,
                   what="a PUBLISH at leads a")
        time.sleep(random.uniform(0, 0.02))
        self.instance("leads", "a").kill9()
        cl = self.cluster

        def seqs():
            out = {}
            for p in moving:
                key = "{funnel:leads:%d}:seq" % p
                with cl.client(cl.primary_for_key(key)) as r:
                    out[p] = int(r.get(key) or 0)
            return out
        before = seqs()
        self.assertEqual(self.instance("leads", "b").stop(), 0)
        self.write_config(lease_ms=2000, services=["leads", "sales"],
                          instances={"leads": {"a": "0-3", "b": "4-15"}, "sales": ("a", "b")})
        for name in ("a", "b"):
            self.daemon(self.daemon_name("leads", name), "funnel-leads",
                        args=["--instance", name])
        for name in ("a", "b"):
            self.wait_instance("leads", name, timeout=60)
        moved_at = time.time()
        sent = self.stop_after_30_more(pub, stop, load, "the move")
        names = names[:sent * 5]
        b_parts = self.instance_client("leads", "b").ok("STATS")["parts"]
        for p in moving:
            self.assertGreaterEqual(b_parts[str(p)], before[p], "partition %d's seq on b" % p)
        self.assertTrue(pub.moved, "the load never met `moved` after the move")
        self.check_sql_load(names, [pub], c)
        intents = cl.client(cl.primary_for_key("{funnel:leads}"))
        self.addCleanup(intents.close)
        wait_until(lambda: intents.hlen("{funnel:leads}:intents") == 0, timeout=10,
                   what="{funnel:leads}:intents empty")
        completed = sum("batches a stop had interrupted" in d.output()
                        for d in self.daemons if d.name.startswith("leads"))
        print("\n(%d leads in %d batches; seqs of 4-7 before the move %r, on b %r; %d moved "
              "replies followed; %d retries; %d leads log(s) completing interrupted batches; "
              "%.1f s from the restart to the end)"
              % (len(names), sent, before, {p: b_parts[str(p)] for p in sorted(moving)},
                 len(pub.moved), pub.retries, completed, time.time() - moved_at))


if __name__ == "__main__":
    unittest.main()
