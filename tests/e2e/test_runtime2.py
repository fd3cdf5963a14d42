"""The engine (common/funnel_engine.c) end to end through
funnel-testsvc: one writer per partition (lease + fencing), ids shaped like
keys, and Redis refusing writes (OOM, MISCONF) answered `unavailable` with
nothing half-applied, a reply lost with the connection, the lossless
outbox."""
import os
import shutil
import signal
import time
import unittest

from funnel_e2e import Client, FunnelTestCase, event, free_port, wait_until


def add(key, n, eid=None):
    return event("test.add", {"key": key, "n": n}, eid)


class TestLease(FunnelTestCase):
    def second_alpha(self, lease_ms):
        """Another instance of alpha on its own endpoints (same Redis)."""
        api = "tcp://127.0.0.1:%d" % free_port()
        pub = "tcp://127.0.0.1:%d" % free_port()
        d = self.daemon("alpha2", "funnel-testsvc",
                        args=["--api", api, "--pub", pub,
                              "--set", "alpha/lease_ms=%d" % lease_ms])
        c = Client(api)
        self.clients.append(c)
        return d, c

    def test_second_instance_cannot_write(self):
        self.daemon("alpha", "funnel-testsvc", args=["--set", "alpha/lease_ms=1000"])
        alpha = self.wait_ready("alpha")
        alpha.ok("PUBLISH", add("k", 2))
        second, client = self.second_alpha(1000)
        # It waits for the lease (up to lease_ms + 1 s), then refuses to start
        wait_until(lambda: not second.running(), timeout=15, what="second instance exits")
        self.assertEqual(second.proc.returncode, 1)
        self.assertIn("owned by another instance", second.output())
        self.assertIn("refusing to start", second.output())
        # Meanwhile and after, the owner keeps writing
        alpha.ok("PUBLISH", add("k", 2))
        self.assertEqual(alpha.ok("GET", {"kind": "counter", "id": "k"})["total"], 4)

    def test_another_partition_count_refuses_to_start(self):
        # Records are found by hash mod partitions: the data's count is
        # recorded at the first start, and another one refuses to start
        d = self.daemon("alpha", "funnel-testsvc")
        alpha = self.wait_ready("alpha")
        alpha.ok("PUBLISH", add("k", 3))
        self.assertEqual(d.stop(), 0)
        with self.redis.client() as r:
            self.assertEqual(r.get("{funnel:alpha}:partitions"), b"16")
        d = self.daemon("alpha-8", "funnel-testsvc", args=["--set", "alpha/partitions=8"])
        wait_until(lambda: not d.running(), timeout=15, what="exit on another partition count")
        self.assertEqual(d.proc.returncode, 1)
        self.assertIn("partitions = 8, but this service's data in Redis is in 16 partitions",
                      d.output())
        # The same count starts and finds its data
        self.daemon("alpha-16", "funnel-testsvc")
        alpha = self.wait_ready("alpha")
        self.assertEqual(alpha.ok("GET", {"kind": "counter", "id": "k"})["total"], 3)

    def test_paused_owner_steps_down(self):
        first = self.daemon("alpha", "funnel-testsvc", args=["--set", "alpha/lease_ms=1000"])
        alpha = self.wait_ready("alpha")
        alpha.ok("PUBLISH", add("k", 1, eid="before"))
        first.proc.send_signal(signal.SIGSTOP)          # a long GC / network pause
        try:
            second, client = self.second_alpha(1000)
            # Its lease expires unrenewed: the second instance takes over
            wait_until(lambda: client.call("PING", timeout=0.5)[1]["redis"] == "ok",
                       timeout=15, what="second instance up")
            wait_until(lambda: client.call("PUBLISH", add("k", 10, eid="new-owner"),
                                           timeout=1.0)[0] == "OK",
                       timeout=15, what="second instance writes")
        finally:
            first.proc.send_signal(signal.SIGCONT)
        # The stale one may still answer a request it had queued; any write
        # it tries now aborts (WATCH on the lease): it steps down and exits
        try:
            status, reply = alpha.call("PUBLISH", add("k", 100, eid="stale"), timeout=3.0)
        except TimeoutError:
            status = None                               # it had already stepped down
        if status is not None:
            self.assertEqual((status, reply["code"]), ("ERR", "unavailable"), reply)
        wait_until(lambda: not first.running(), timeout=10, what="stale owner exits")
        self.assertEqual(first.proc.returncode, 1)
        self.assertIn("stepping down", first.output())
        got = client.ok("GET", {"kind": "counter", "id": "k"})
        self.assertEqual(got["total"], 11)               # never the stale 100
        self.assertEqual(client.ok("PUBLISH", add("k", 100, eid="stale")),
                         {"id": "stale", "duplicate": False})


class TestKeyShapedIds(FunnelTestCase):
    """Entity ids that look like the engine's own key names."""
    binary = "funnel-testsvc"

    def test_key_shaped_ids_do_not_collide(self):
        self.daemon("alpha", self.binary)
        api = self.wait_ready("alpha")
        ids = ["X", "X:log", "X:log:1", "X:3Alog", "counter:X", "X:", ":X",
               "mirror:X", "X:total", "a.b@c+d-e_f"]
        for i, key in enumerate(ids):
            api.ok("PUBLISH", [add(key, i + 1), add(key, 100 * (i + 1))])
        for i, key in enumerate(ids):
            got = api.ok("GET", {"kind": "counter", "id": key})
            self.assertEqual(got["total"], 101 * (i + 1), key)
        self.assertEqual(self.stats("alpha")["accepted"], 2 * len(ids))


class TestRedisRefusesWrites(FunnelTestCase):
    """OOM and MISCONF: `unavailable`, nothing half-applied, retry works."""
    binary = "funnel-testsvc"

    def snapshot(self, r):
        return {k: (r.type(k), r.dump(k)) for k in r.keys("*")
                if b"lease" not in k}

    def check_refused_then_retry(self, refuse, allow, word):
        self.daemon("alpha", self.binary)
        api = self.wait_ready("alpha")
        api.ok("PUBLISH", [add("k", 1), add("j", 1)])
        r = self.redis.client()
        before = self.snapshot(r)
        refuse(r)
        batch = [add("k", 5), add("j", 7), add("new", 1)]
        status, err = api.call("PUBLISH", batch)
        self.assertEqual((status, err["code"]), ("ERR", "unavailable"), err)
        self.assertIn(word, err["message"])
        self.assertIn("nothing was applied", err["message"])
        allow(r)
        self.assertEqual(self.snapshot(r), before)       # nothing half-applied
        self.assertEqual(api.ok("PUBLISH", batch), {"accepted": 3, "duplicates": 0})
        self.assertEqual(api.ok("GET", {"kind": "counter", "id": "k"})["total"], 6)
        self.assertEqual(api.ok("PING")["seq"], 5)

    def test_out_of_memory(self):
        self.check_refused_then_retry(
            lambda r: r.config_set("maxmemory", "1"),
            lambda r: r.config_set("maxmemory", "0"), "OOM")

    def test_failing_disk_misconf(self):
        # A snapshot that cannot be written (its dir is gone) makes Redis
        # refuse writes with MISCONF, as a failing AOF write does. Moving
        # `dir` needs Redis's protected configs: restart it allowing them.
        self.redis.stop()
        # (and stop-writes-on-bgsave-error applies only with save points)
        self.redis.start_args = ["--enable-protected-configs", "yes", "--save", "3600 1"]
        self.redis.start()
        gone = os.path.join(self.workdir, "gone")

        def refuse(r):
            os.makedirs(gone)
            r.config_set("dir", gone)
            shutil.rmtree(gone)
            r.bgsave()
            wait_until(lambda: r.info("persistence")["rdb_last_bgsave_status"] == "err",
                       timeout=10, what="bgsave failed")

        def allow(r):
            r.config_set("dir", self.redis.dir)
            r.bgsave()
            wait_until(lambda: r.info("persistence")["rdb_last_bgsave_status"] == "ok",
                       timeout=10, what="bgsave ok")

        self.check_refused_then_retry(refuse, allow, "MISCONF")


class TestRulesSettings(FunnelTestCase):
    def test_c_rules_read_their_settings(self):
        self.daemon("alpha", "funnel-testsvc", args=["--set", "alpha/n_max=5"])
        api = self.wait_ready("alpha")
        api.ok("PUBLISH", add("k", 5))
        status, err = api.call("PUBLISH", add("k", 6))
        self.assertEqual((status, err["code"]), ("ERR", "conflict"))
        self.assertIn("n_max", err["message"])

    def test_bad_setting_exits_2(self):
        d = self.daemon("alpha", "funnel-testsvc", args=["--set", "alpha/n_max=many"])
        wait_until(lambda: not d.running(), timeout=10, what="exit on a bad setting")
        self.assertEqual(d.proc.returncode, 2)

    def test_consume_batch_out_of_range_exits_2(self):
        for setting in ("alpha/consume_batch=0", "alpha/consume_batch_busy=1001"):
            d = self.daemon("alpha", "funnel-testsvc", args=["--set", setting])
            wait_until(lambda: not d.running(), timeout=10, what="exit on " + setting)
            self.assertEqual(d.proc.returncode, 2, setting)
            self.assertIn(setting.split("=")[0].replace("alpha/", "") + " = ", d.output())


class TestConsumeBatch(FunnelTestCase):
    """consume_batch bounds a live upstream batch: 300 events published at
    once reach a consumer capped at 10 per batch in at least 30 commits,
    every one applied once."""

    def test_live_batches_are_capped(self):
        self.daemon("alpha", "funnel-testsvc")
        alpha = self.wait_ready("alpha")
        self.daemon("beta", "funnel-testsvc", args=["--set", "beta/consume_batch=10"],
                    env={"FUNNEL_TESTSVC_NAME": "beta", "FUNNEL_TESTSVC_UPSTREAM": "alpha"})
        self.wait_ready("beta")
        wait_until(lambda: self.stats("alpha").get("subscribers") == 1, timeout=10,
                   what="beta registered")
        before = self.stats("beta")["commits"]
        alpha.ok("PUBLISH", [add("k", 1) for _ in range(300)])
        wait_until(lambda: self.stats("beta").get("mirrored") == 300, timeout=20,
                   what="beta mirrored 300")
        self.assertGreaterEqual(self.stats("beta")["commits"] - before, 30)


class TestExtValues(FunnelTestCase):
    def test_ext_anywhere_is_invalid(self):
        import msgpack
        self.daemon("alpha", "funnel-testsvc")
        api = self.wait_ready("alpha")
        ev = add("k", 1)
        ev["data"]["extra"] = msgpack.ExtType(5, b"xy")
        status, err = api.call("PUBLISH", ev)
        self.assertEqual((status, err["code"]), ("ERR", "invalid"), err)
        self.assertIn("ext", err["message"])
        status, err = api.call("PUBLISH", [add("k", 1), ev])
        self.assertEqual((status, err["code"], err["index"]), ("ERR", "invalid", 1))


if __name__ == "__main__":
    unittest.main()


class TestLosslessOutbox(FunnelTestCase):
    """A registered subscriber keeps the outbox past retention."""

    def start_beta(self):
        return self.daemon("beta", "funnel-testsvc",
                           env={"FUNNEL_TESTSVC_NAME": "beta", "FUNNEL_TESTSVC_UPSTREAM": "alpha"})

    def run_outage(self, alpha_args):
        self.daemon("alpha", "funnel-testsvc", args=alpha_args)
        alpha = self.wait_ready("alpha")
        beta = self.start_beta()
        alpha.ok("PUBLISH", [add("k", 1) for _ in range(10)])
        wait_until(lambda: self.stats("beta").get("mirrored") == 10, timeout=15,
                   what="beta mirrored 10")
        wait_until(lambda: self.stats("alpha").get("subscribers") == 1, timeout=5,
                   what="beta registered")
        beta.kill9()                    # stopped for "longer than retention"
        for _ in range(5):
            alpha.ok("PUBLISH", [add("k", 1) for _ in range(1000)])
        return alpha, beta

    def test_subscriber_stopped_past_retention_loses_nothing(self):
        alpha, beta = self.run_outage(["--set", "alpha/retention=1000"])
        # retention alone would keep only the last 1000..1999 events
        self.assertLessEqual(alpha.ok("REPLAY", {"from": 1, "limit": 1})["first"], 11)
        beta.start()
        wait_until(lambda: self.stats("beta").get("mirrored") == 5010, timeout=30,
                   what="beta caught up with no loss")
        self.assertEqual(self.stats("beta")["consumed"], 5010)
        self.assertEqual(self.stats("alpha")["outbox_lost"], 0)
        # once beta has acknowledged, the outbox goes back to its retention
        alpha.ok("PUBLISH", add("k", 1))
        wait_until(lambda: (alpha.ok("PUBLISH", add("k", 1)) and
                            alpha.ok("REPLAY", {"from": 1, "limit": 1})["first"] > 11),
                   timeout=15, what="outbox trimmed after the ack")

    def test_past_the_byte_cap_the_loss_is_loud(self):
        alpha, beta = self.run_outage(["--set", "alpha/retention=1000",
                                       "--set", "alpha/outbox_max_bytes=50000"])
        lost = self.stats("alpha")["outbox_lost"]
        self.assertGreater(lost, 0)
        log = self.daemons[0].output()
        self.assertIn("loses seqs", log)
        self.assertIn("ERROR", log)
        beta.start()
        wait_until(lambda: self.stats("beta").get("mirrored", 0) > 10, timeout=30,
                   what="beta resumed")
        self.assertIn("past the upstream's retention", beta.output())


class TestLostReply(FunnelTestCase):
    """A reply that does not come in time (Redis paused past the service's
    2 s timeout): the answer must not claim nothing was applied, and the
    retry with the same ids applies everything exactly once."""
    binary = "funnel-testsvc"

    def test_timeout_says_outcome_unknown_and_retry_is_exact(self):
        self.daemon("alpha", self.binary)
        api = self.wait_ready("alpha")
        api.ok("PUBLISH", add("k", 1))
        r = self.redis.client()
        r.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
        batch = [add("k", 10), add("k", 100)]
        status, err = api.call("PUBLISH", batch, timeout=10.0)
        self.assertEqual((status, err["code"]), ("ERR", "unavailable"), err)
        self.assertIn("outcome is unknown", err["message"])
        self.assertNotIn("nothing was applied", err["message"])
        time.sleep(1.5)                                 # the pause ends
        wait_until(lambda: api.call("PUBLISH", batch, timeout=2.0)[0] == "OK",
                   timeout=15, what="retry accepted")
        self.assertEqual(api.ok("GET", {"kind": "counter", "id": "k"})["total"], 111)
        counters = self.stats("alpha")
        self.assertEqual(counters["accepted"], 3)
