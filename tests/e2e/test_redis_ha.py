"""Redis high availability, end to end through funnel-testsvc: redis/acks
(WAIT for replicas before the OK; fewer in time -> unavailable, outcome
unknown, the retry with the same ids is safe) and Sentinel (the service
finds the primary through a sentinel and follows a failover after kill -9
of the primary; with acks = 1 nothing acknowledged is lost)."""
import os
import signal
import unittest

from funnel_e2e import (FunnelTestCase, RedisNode, Sentinel, event, free_port,
                        release_ports, wait_until)


def add(key, n, eid=None):
    return event("test.add", {"key": key, "n": n}, eid)


class RedisHaCase(FunnelTestCase):
    def replica_of(self, primary_port, name="replica"):
        port = free_port()
        self.addCleanup(release_ports, [port])
        node = RedisNode(self.workdir, port, name,
                         ["--replicaof", "127.0.0.1", str(primary_port)], appendonly=True)
        self.addCleanup(node.stop)
        return node

    def redis_settings(self, url, acks, timeout_ms=300):
        """Rewrites the topology's redis section: url, acks, acks_timeout_ms."""
        with open(self.topology.path) as f:
            text = f.read()
        old = '    url = "%s"\n' % self.redis.url
        self.assertIn(old, text)
        text = text.replace(old, '    url = "%s"\n    acks = %d\n    acks_timeout_ms = %d\n'
                            % (url, acks, timeout_ms))
        with open(self.topology.path, "w") as f:
            f.write(text)

    def wait_replicated(self, primary, replicas=1):
        def online():
            with primary.client() as c:
                info = c.info("replication")
            return info.get("connected_slaves") == replicas and all(
                info["slave%d" % i]["state"] == "online" for i in range(replicas))
        wait_until(online, timeout=20, what="the replica in sync")

    def publish_until_ok(self, api, ev, timeout=30):
        """PUBLISH, retried with the same id while the answer is unavailable
        (or lost): what a careful client does around a failover."""
        def attempt():
            status, reply = api.call("PUBLISH", ev, timeout=5)
            if status == "OK":
                return reply
            self.assertEqual(reply["code"], "unavailable", reply)
            return None
        return wait_until(attempt, timeout, interval=0.2, what="PUBLISH %s" % ev["id"])


class TestAcks(RedisHaCase):
    def test_wait_for_a_replica_or_answer_outcome_unknown(self):
        replica = self.replica_of(self.redis.port)
        self.redis_settings(self.redis.url, acks=1, timeout_ms=300)
        self.wait_replicated(self.redis)
        self.daemon("alpha", "funnel-testsvc")
        api = self.wait_ready("alpha")
        first = add("k", 5)
        self.assertEqual(self.publish_until_ok(api, first), {"id": first["id"], "duplicate": False})
        # Acknowledged means on the replica too
        with replica.client() as c:
            self.assertEqual(c.get("{funnel:alpha}:seq"), b"1")

        # The replica stops acknowledging: applied on the primary, but the
        # client is told the outcome is unknown, and nothing is PUB'd
        os.kill(replica.proc.pid, signal.SIGSTOP)
        self.addCleanup(lambda: replica.proc and os.kill(replica.proc.pid, signal.SIGCONT))
        second = add("k", 7)
        for _ in range(2):          # the retry while it is still stopped, too
            status, err = api.call("PUBLISH", second, timeout=10)
            self.assertEqual(status, "ERR")
            self.assertEqual(err["code"], "unavailable")
            self.assertIn("outcome unknown: only 0 of 1 replicas acknowledged within 300 ms; "
                          "retrying with the same ids is safe", err["message"])
        # Applied once and in the outbox, but hidden until acknowledged: no
        # subscriber can consume what a failover could still take back
        with self.redis.client() as c:
            self.assertEqual(c.hlen("{funnel:alpha}:ob:0"), 2)
            self.assertEqual(c.get("{funnel:alpha}:seq"), b"2")
        events = api.ok("REPLAY", {"from": 1})["events"]
        self.assertEqual([e["seq"] for e in events], [1])
        self.assertEqual(api.ok("PING")["seq"], 1)

        os.kill(replica.proc.pid, signal.SIGCONT)
        self.assertEqual(self.publish_until_ok(api, second),
                         {"id": second["id"], "duplicate": True})
        self.assertEqual(api.ok("GET", {"kind": "counter", "id": "k"})["total"], 12)
        events = api.ok("REPLAY", {"from": 1})["events"]
        self.assertEqual([e["seq"] for e in events], [1, 2])
        wait_until(lambda: api.ok("PING")["seq"] == 2, what="PING seq 2")
        counters = self.stats("alpha")
        self.assertEqual((counters["accepted"], counters["added"]), (2, 12))
        with replica.client() as c:
            self.assertEqual(c.get("{funnel:alpha}:seq"), b"2")

    def test_acks_setting_checked(self):
        self.redis_settings(self.redis.url, acks=-1)
        d = self.daemon("alpha", "funnel-testsvc")
        self.assertEqual(d.proc.wait(10), 2)
        self.assertIn("redis/acks = -1: must be 0..64", d.output())


class TestSentinel(RedisHaCase):
    def test_failover_after_kill9_loses_nothing_acknowledged(self):
        # A primary, two replicas (one is left to acknowledge after the
        # failover) and one sentinel with quorum 1
        replicas = [self.replica_of(self.redis.port, "replica-%d" % i) for i in range(2)]
        self.wait_replicated(self.redis, 2)
        sentinel = Sentinel(self.workdir, self.redis.port)
        self.addCleanup(sentinel.release)
        self.addCleanup(sentinel.stop)

        def replicas_known():
            with sentinel.client() as c:
                rows = c.execute_command("SENTINEL", "REPLICAS", "mymaster")
            ok = 0
            for row in rows:
                fields = {k.decode(): v.decode() for k, v in zip(row[::2], row[1::2])}
                ok += fields["flags"] == "slave" and fields.get("master-link-status") == "ok"
            return ok == 2
        wait_until(replicas_known, timeout=30, what="the sentinel to know the replicas")

        self.redis_settings("redis+sentinel://127.0.0.1:%d/mymaster" % sentinel.port, acks=1,
                            timeout_ms=500)
        alpha = self.daemon("alpha", "funnel-testsvc")
        api = self.wait_ready("alpha")
        self.assertIn("primary 127.0.0.1:%d" % self.redis.port, alpha.output())
        total = 0
        for i in range(20):
            self.publish_until_ok(api, add("f", i + 1, eid="f-%d" % i))
            total += i + 1

        self.redis.proc.send_signal(signal.SIGKILL)
        self.redis.proc.wait(10)
        ports = {r.port for r in replicas}
        wait_until(lambda: sentinel.primary()[1] in ports, timeout=60,
                   what="the sentinel to promote a replica")
        promoted = sentinel.primary()[1]
        # The service follows the failover: more events, each retried by
        # id until acknowledged (the other replica re-syncs meanwhile)
        for i in range(20, 30):
            self.publish_until_ok(api, add("f", i + 1, eid="f-%d" % i), timeout=60)
            total += i + 1
        self.assertIn("primary 127.0.0.1:%d" % promoted, alpha.output())
        # Every acknowledged event is there exactly once
        self.assertEqual(api.ok("GET", {"kind": "counter", "id": "f"})["total"], total)
        counters = self.stats("alpha")
        self.assertEqual((counters["accepted"], counters["added"]), (30, total))
        self.assertEqual(api.ok("PING")["seq"], 30)


    def test_sentinel_failover_command(self):
        # A graceful SENTINEL FAILOVER: the old primary becomes a replica of
        # the new one (and still acknowledges), the service reconnects
        replica = self.replica_of(self.redis.port)
        self.wait_replicated(self.redis)
        sentinel = Sentinel(self.workdir, self.redis.port)
        self.addCleanup(sentinel.release)
        self.addCleanup(sentinel.stop)

        def replica_known():
            with sentinel.client() as c:
                rows = c.execute_command("SENTINEL", "REPLICAS", "mymaster")
            return any({k.decode(): v.decode() for k, v in zip(r[::2], r[1::2])}
                       .get("master-link-status") == "ok" for r in rows)
        wait_until(replica_known, timeout=30, what="the sentinel to know the replica")
        self.redis_settings("redis+sentinel://127.0.0.1:%d/mymaster" % sentinel.port, acks=1,
                            timeout_ms=500)
        alpha = self.daemon("alpha", "funnel-testsvc")
        api = self.wait_ready("alpha")
        for i in range(10):
            self.publish_until_ok(api, add("g", 1, eid="g-%d" % i))
        with sentinel.client() as c:
            c.execute_command("SENTINEL", "FAILOVER", "mymaster")
        wait_until(lambda: sentinel.primary() == ("127.0.0.1", replica.port), timeout=60,
                   what="the failover")
        for i in range(10, 20):
            self.publish_until_ok(api, add("g", 1, eid="g-%d" % i), timeout=60)
        self.assertIn("primary 127.0.0.1:%d" % replica.port, alpha.output())
        self.assertEqual(api.ok("GET", {"kind": "counter", "id": "g"})["total"], 20)
        self.assertEqual(self.stats("alpha")["accepted"], 20)
        with replica.client() as c:
            self.assertEqual(c.execute_command("ROLE")[0], b"master")


    def test_demoted_primary_readonly_and_role_check(self):
        # The primary is demoted behind the sentinel's back while our
        # connection stays open: writes answer READONLY (nothing applied,
        # the connection is dropped), the reconnect refuses a server whose
        # ROLE is not master, and follows the sentinel once it names the
        # new primary
        replica = self.replica_of(self.redis.port)
        self.wait_replicated(self.redis)
        sentinel = Sentinel(self.workdir, self.redis.port)
        self.addCleanup(sentinel.release)
        self.addCleanup(sentinel.stop)
        self.redis_settings("redis+sentinel://127.0.0.1:%d/mymaster" % sentinel.port, acks=1,
                            timeout_ms=500)
        alpha = self.daemon("alpha", "funnel-testsvc")
        api = self.wait_ready("alpha")
        for i in range(5):
            self.publish_until_ok(api, add("h", 1, eid="h-%d" % i))
        with replica.client() as c:
            c.execute_command("REPLICAOF", "NO", "ONE")
        with self.redis.client() as c:
            c.execute_command("REPLICAOF", "127.0.0.1", str(replica.port))
        status, err = api.call("PUBLISH", add("h", 1, eid="h-5"), timeout=10)
        self.assertEqual(status, "ERR")
        self.assertEqual(err["code"], "unavailable")
        self.assertIn("READONLY", err["message"])
        wait_until(lambda: "not a primary (ROLE slave)" in alpha.output(), timeout=30,
                   what="the reconnect to refuse the demoted primary")
        self.assertIn("READONLY: the server is no longer the primary", alpha.output())
        with sentinel.client() as c:
            c.execute_command("SENTINEL", "REMOVE", "mymaster")
            c.execute_command("SENTINEL", "MONITOR", "mymaster", "127.0.0.1", str(replica.port),
                              "1")
        for i in range(5, 10):
            self.publish_until_ok(api, add("h", 1, eid="h-%d" % i), timeout=60)
        self.assertIn("primary 127.0.0.1:%d" % replica.port, alpha.output())
        self.assertEqual(api.ok("GET", {"kind": "counter", "id": "h"})["total"], 10)
        self.assertEqual(self.stats("alpha")["accepted"], 10)


if __name__ == "__main__":
    unittest.main()
