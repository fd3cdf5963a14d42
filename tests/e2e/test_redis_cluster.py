"""redis_cluster (common/redis_cluster.c) against a real 3-primary Redis
Cluster: routing by slot, ASK during a slot migration, MOVED after it (a
stale client's transaction resent once). The C self-test drives the
operations; this test makes the cluster and checks its end state."""
import os
import subprocess
import unittest

from funnel_e2e import BUILD, FunnelTestCase, RedisCluster


class RedisClusterTest(FunnelTestCase):
    def test_routing_ask_and_moved(self):
        cluster = RedisCluster(self.workdir)
        self.addCleanup(cluster.release)
        self.addCleanup(cluster.stop)
        selftest = os.path.join(BUILD, "tests", "funnel_selftest")
        env = dict(os.environ, FUNNEL_TEST_REDIS_CLUSTER=cluster.url)
        out = subprocess.run([selftest, "redis_cluster"], env=env, timeout=120,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr[-4000:])
        self.assertIn(" * redis_cluster: OK", out.stdout)
        # Each node was reached through redis_store, the one connect path
        self.assertIn("redis connected", out.stderr)
        # The migrated slot really moved: both keys are on one node now,
        # and it is not the node that owned the slot at the start
        holders = []
        for i in range(cluster.count):
            with cluster.client(i) as c:
                slot = c.execute_command("CLUSTER", "KEYSLOT", "{mv}old")
                if c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 2:
                    holders.append(i)
        self.assertEqual(len(holders), 1)
        # 200 routed keys plus the transaction's two and {mv}'s two
        total = 0
        for i in range(cluster.count):
            with cluster.client(i) as c:
                total += c.dbsize()
        self.assertEqual(total, 204)
        # Every node agrees on the owner of the slot
        owners = set()
        for i in range(cluster.count):
            with cluster.client(i) as c:
                for first, last, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                    if first <= slot <= last:
                        owners.add(int(primary[1]))
        self.assertEqual(owners, {cluster.ports[holders[0]]})


    def test_engine_commits_to_a_cluster(self):
        """The engine's cluster self-test: batches spanning slots, a stop
        between the base transaction and the partitions' ones completed by
        the next sync (once), a second owner refused, a stolen lease fenced."""
        cluster = RedisCluster(self.workdir)
        self.addCleanup(cluster.release)
        self.addCleanup(cluster.stop)
        selftest = os.path.join(BUILD, "tests", "funnel_selftest")
        env = dict(os.environ, FUNNEL_TEST_REDIS_CLUSTER=cluster.url, FUNNEL_TEST_REDIS_URL="")
        out = subprocess.run([selftest, "funnel_engine"], env=env, timeout=120,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr[-4000:])
        self.assertIn(" * funnel_engine: OK", out.stdout)
        self.assertIn("partition transaction(s) of batches a stop had interrupted", out.stderr)
        self.assertIn("lease of partition", out.stderr)
        # The test's keys spread over more than one primary
        holders = 0
        for i in range(cluster.count):
            with cluster.client(i) as c:
                holders += c.dbsize() > 0
        self.assertGreater(holders, 1)

    def test_service_refuses_a_cluster_url_and_bad_urls(self):
        cases = [("redis://127.0.0.1:1,127.0.0.1:2", "(a Redis Cluster)"),
                 ("redis+sentinel://127.0.0.1:1", "missing /MASTERNAME"),
                 ("redis://127.0.0.1:1,127.0.0.1:2/3", "a Redis Cluster has only db 0")]
        for i, (url, message) in enumerate(cases):
            d = self.daemon("alpha-%d" % i, "funnel-testsvc", args=["--redis", url])
            self.assertEqual(d.proc.wait(10), 2, d.output())
            self.assertIn(message, d.output())


if __name__ == "__main__":
    unittest.main()
