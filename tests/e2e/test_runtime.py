"""The shared runtime, end to end, through funnel-testsvc (real Redis, real
sockets): every verb, every error code, PUB and heartbeats, lossless
upstream delivery under kill -9, duplicates, and a Redis restart."""
import random
import time
import unittest

import msgpack
import zmq

from funnel_e2e import FunnelTestCase, Subscriber, event, wait_until


def add(key, n, eid=None):
    return event("test.add", {"key": key, "n": n}, eid)


class TestVerbs(FunnelTestCase):
    def setUp(self):
        super().setUp()
        self.alpha = self.daemon("alpha", "funnel-testsvc")
        self.api = self.wait_ready("alpha")

    def test_ping(self):
        reply = self.api.ok("PING")
        self.assertEqual(reply["svc"], "alpha")
        self.assertEqual(reply["redis"], "ok")
        self.assertEqual(reply["seq"], 0)
        self.assertIn("version", reply)
        self.assertGreaterEqual(reply["uptime_s"], 0)

    def test_publish_single_duplicate_and_get(self):
        ev = add("k1", 5)
        self.assertEqual(self.api.ok("PUBLISH", ev), {"id": ev["id"], "duplicate": False})
        self.assertEqual(self.api.ok("PUBLISH", ev), {"id": ev["id"], "duplicate": True})
        got = self.api.ok("GET", {"kind": "counter", "id": "k1"})
        self.assertEqual(got["total"], 5)
        counters = self.stats("alpha")
        self.assertEqual(counters["accepted"], 1)
        self.assertEqual(counters["duplicates"], 1)
        self.assertEqual(counters["added"], 5)
        self.assertEqual(self.api.ok("PING")["seq"], 1)

    def test_batch_all_or_nothing(self):
        batch = [add("b", 1), add("b", 2), add("b", 3)]
        self.assertEqual(self.api.ok("PUBLISH", batch), {"accepted": 3, "duplicates": 0})
        # Duplicates inside and across batches are skipped and counted
        again = [batch[0], add("b", 10), add("b", 10)]
        again[2]["id"] = again[1]["id"]
        self.assertEqual(self.api.ok("PUBLISH", again), {"accepted": 1, "duplicates": 2})
        self.assertEqual(self.api.ok("GET", {"kind": "counter", "id": "b"})["total"], 16)
        # A later element that fails on state: nothing of the batch applies
        bad = [add("c", 2), event("test.need", {"key": "c"}), event("test.need", {"key": "zz"})]
        status, err = self.api.call("PUBLISH", bad)
        self.assertEqual(status, "ERR")
        self.assertEqual(err["code"], "not_found")
        self.assertEqual(err["index"], 2)
        self.assertIn("key", err["message"])
        status, _ = self.api.call("GET", {"kind": "counter", "id": "c"})
        self.assertEqual(status, "ERR")
        # Later events see the effects of earlier ones: 3 then need -> conflict (odd)
        status, err = self.api.call("PUBLISH", [add("d", 3), event("test.need", {"key": "d"})])
        self.assertEqual((status, err["code"], err["index"]), ("ERR", "conflict", 1))
        self.assertEqual(self.api.ok("PUBLISH", [add("d", 4), event("test.need", {"key": "d"})]),
                         {"accepted": 2, "duplicates": 0})

    def test_errors_in_contract_order(self):
        cases = [
            (add("k", 1) | {"v": 2}, "invalid", "v"),
            ({k: v for k, v in add("k", 1).items() if k != "id"}, "invalid", "id"),
            (add("k", 1, eid="bad id!"), "invalid", "id"),
            (add("k", 1) | {"ts": "now"}, "invalid", "ts"),
            (add("k", 1) | {"src": ""}, "invalid", "src"),
            (add("k", 1) | {"data": []}, "invalid", "data"),
            (event("lead.sql", {"lead": "x"}), "unknown_type", "type"),
            (event("test.add", {"key": "k"}), "invalid", "n"),
            (event("test.add", {"key": "k", "n": "1"}), "invalid", "n"),
            (event("test.add", {"key": "k", "n": 1.5}), "invalid", "n"),
            (event("test.add", {"key": "k", "n": 10 ** 9}), "invalid", "n"),
            # malformed and naming an unknown entity: invalid, not not_found
            (event("test.need", {"key": 7}), "invalid", "key"),
            (event("test.need", {"key": "nobody"}), "not_found", "key"),
        ]
        for body, code, field in cases:
            status, err = self.api.call("PUBLISH", body)
            self.assertEqual((status, err["code"]), ("ERR", code), (body, err))
            self.assertIn(field, err["message"], err)
            self.assertNotIn("index", err)
        # unknown keys are ignored
        self.api.ok("PUBLISH", add("k", 1) | {"extra": {"a": 1}})
        # In a batch the first failing element is named
        status, err = self.api.call("PUBLISH", [add("k", 1), add("k", 1) | {"v": 9}])
        self.assertEqual((status, err["code"], err["index"]), ("ERR", "invalid", 1))
        self.assertEqual(self.api.ok("GET", {"kind": "counter", "id": "k"})["total"], 1)

    def test_garbage_never_stops_the_service(self):
        cases = [
            ([b"PUBLISH", b"\xc1"], "bad_request"),
            ([b"PUBLISH", b"\xdd\x04\x00\x00\x00\x01"], "bad_request"),
            ([b"PUBLISH", b"\xdd\xff\xff\xff\xff"], "bad_request"),
            ([b"PUBLISH", msgpack.packb("hello")], "bad_request"),
            ([b"PUBLISH", msgpack.packb([])], "invalid"),
            ([b"PUBLISH", msgpack.packb({"a": 1}) + b"\x00"], "bad_request"),
            ([b"PUBLISH"], "bad_request"),
            ([b"FROB", b""], "bad_request"),
            ([b"GET", msgpack.packb({"kind": "nope"})], "invalid"),
            ([b"GET", msgpack.packb({"id": "x"})], "invalid"),
            ([b"REPLAY", msgpack.packb({"from": -1})], "invalid"),
            ([b"REPLAY", msgpack.packb({})], "invalid"),
            ([b"PUBLISH", b"x" * (4 * 1024 * 1024 + 10)], "too_large"),
            ([b"PUBLISH", msgpack.packb([add("k", 1)] * 1001)], "too_large"),
            ([b"PUBLISH", msgpack.packb(add("k", 1) | {"pad": ["x" * 1000] * 70})], "too_large"),
            ([b"PUBLISH", msgpack.packb(add("k", 1) | {"src": "s" * 2000})], "invalid"),
        ]
        for frames, code in cases:
            reply = self.api.raw(frames)
            self.assertEqual(reply[0], b"ERR", frames[:1])
            err = msgpack.unpackb(reply[1])
            self.assertEqual(err["code"], code, (frames[0], frames[1][:20] if len(frames) > 1 else None, err))
            self.assertTrue(err["message"])
        deep = add("k", 1)
        node = deep["data"]             # level 2; 7 more is level 9
        for _ in range(7):
            node["x"] = {}
            node = node["x"]
        status, err = self.api.call("PUBLISH", deep)
        self.assertEqual((status, err["code"]), ("ERR", "invalid"))
        self.assertEqual(self.api.ok("PING")["svc"], "alpha")
        self.assertTrue(self.alpha.running())

    def test_req_socket_client(self):
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.topology.api("alpha"))
        sock.send_multipart([b"PING"])
        self.assertTrue(sock.poll(5000))
        status, body = sock.recv_multipart()
        self.assertEqual(status, b"OK")
        self.assertEqual(msgpack.unpackb(body)["svc"], "alpha")
        sock.close(0)

    def test_replay(self):
        batch = [add("r", i) for i in range(1, 11)]
        batch[0]["ts"] = 1700000000123
        self.api.ok("PUBLISH", batch)
        reply = self.api.ok("REPLAY", {"from": 1, "limit": 4})
        self.assertEqual([e["seq"] for e in reply["events"]], [1, 2, 3, 4])
        self.assertEqual(reply["next"], 5)
        self.assertEqual(reply["first"], 1)
        ev = reply["events"][0]
        self.assertEqual((ev["svc"], ev["type"], ev["v"]), ("alpha", "test.added", 1))
        self.assertTrue(ev["cause"])
        self.assertEqual((ev["cause"], ev["cause_ts"]), (batch[0]["id"], batch[0]["ts"]))
        reply = self.api.ok("REPLAY", {"from": 8, "limit": 5000})
        self.assertEqual([e["seq"] for e in reply["events"]], [8, 9, 10])
        self.assertEqual(reply["next"], 11)
        reply = self.api.ok("REPLAY", {"from": 50})
        self.assertEqual((reply["events"], reply["next"], reply["first"]), ([], 50, 1))
        # Output ids are deterministic: the same cause yields the same id
        again = self.api.ok("REPLAY", {"from": 1, "limit": 1})["events"][0]
        self.assertEqual(again["id"], ev["id"])

    def test_pub_events_and_heartbeat(self):
        sub = Subscriber(self.topology.pub("alpha"))
        topic, hb = sub.recv(3.0)
        while topic != "$hb":
            topic, hb = sub.recv(3.0)
        self.assertEqual((hb["svc"], hb["seq"]), ("alpha", 0))
        self.assertIn("ts", hb)
        self.api.ok("PUBLISH", add("p", 2))
        topic, ev = sub.recv()
        while topic == "$hb":
            topic, ev = sub.recv()
        self.assertEqual(topic, "test.added")
        self.assertEqual((ev["seq"], ev["svc"], ev["data"]), (1, "alpha", {"key": "p", "n": 2}))
        sub.close()

    def test_sigterm_exits_zero(self):
        self.api.ok("PUBLISH", add("s", 1))
        self.assertEqual(self.alpha.stop(), 0)
        self.assertIn("stopped cleanly", self.alpha.output())


class TestRetention(FunnelTestCase):
    def test_outbox_keeps_at_least_retention_events(self):
        self.daemon("alpha", "funnel-testsvc", args=["--set", "alpha/retention=1500"])
        api = self.wait_ready("alpha")
        for b in range(5):
            api.ok("PUBLISH", [add("t", 1) for _ in range(1000)])
        head = api.ok("PING")["seq"]
        self.assertEqual(head, 5000)
        reply = api.ok("REPLAY", {"from": 1, "limit": 10})
        first = reply["first"]
        # whole buckets of 1000 are dropped: at least 1500 kept, at most 2499
        self.assertLessEqual(first, head - 1500 + 1)
        self.assertGreater(first, head - 2500 + 1)
        self.assertEqual(reply["events"][0]["seq"], first)
        self.assertEqual([e["seq"] for e in reply["events"]], list(range(first, first + 10)))
        tail = api.ok("REPLAY", {"from": 4995})
        self.assertEqual(([e["seq"] for e in tail["events"]], tail["next"]),
                         (list(range(4995, 5001)), 5001))


class TestDelivery(FunnelTestCase):
    """alpha -> beta: beta mirrors alpha's counters, exactly once."""

    def start_beta(self):
        d = self.daemon("beta", "funnel-testsvc",
                        env={"FUNNEL_TESTSVC_NAME": "beta", "FUNNEL_TESTSVC_UPSTREAM": "alpha"})
        return d

    def test_kill9_subscriber_mid_stream(self):
        self.daemon("alpha", "funnel-testsvc")
        alpha = self.wait_ready("alpha")
        beta = self.start_beta()
        rng = random.Random(7)
        keys = ["k%d" % i for i in range(20)]
        expected = {}
        sent = 0
        for batch_no in range(60):
            batch = []
            for _ in range(50):
                k, n = rng.choice(keys), rng.randint(1, 9)
                expected[k] = expected.get(k, 0) + n
                batch.append(add(k, n))
            alpha.ok("PUBLISH", batch)
            sent += len(batch)
            if batch_no % 10 == 5:
                beta.kill9()
                time.sleep(rng.random() * 0.2)
                beta.start()
        beta_api = self.wait_ready("beta")
        wait_until(lambda: self.stats("beta").get("mirrored", 0) == sum(expected.values()),
                   timeout=20, what="beta caught up")
        for k, total in expected.items():
            got = beta_api.ok("GET", {"kind": "counter", "id": k})
            self.assertEqual(got["mirror"], total, k)
        self.assertEqual(self.stats("beta")["consumed"], sent)
        # beta's own outputs are contiguous
        seqs = [e["seq"] for e in beta_api.ok("REPLAY", {"from": 1})["events"]]
        self.assertEqual(seqs, list(range(1, min(1000, sent) + 1)))

    def test_kill9_publisher_and_retry_same_ids(self):
        alpha_d = self.daemon("alpha", "funnel-testsvc")
        alpha = self.wait_ready("alpha")
        self.start_beta()
        events = [add("x", 1) for _ in range(300)]
        alpha.ok("PUBLISH", events[:100])
        alpha_d.kill9()
        alpha_d.start()
        alpha = self.wait_ready("alpha")
        # the client retries everything with the same ids: nothing doubles
        reply = alpha.ok("PUBLISH", events[:200])
        self.assertEqual(reply, {"accepted": 100, "duplicates": 100})
        alpha.ok("PUBLISH", events[200:])
        beta = self.wait_ready("beta")
        wait_until(lambda: self.stats("beta").get("mirrored") == 300, timeout=20,
                   what="beta mirrored 300")
        self.assertEqual(beta.ok("GET", {"kind": "counter", "id": "x"})["mirror"], 300)
        self.assertEqual(alpha.ok("GET", {"kind": "counter", "id": "x"})["total"], 300)

    def test_redis_restart_is_ridden_out(self):
        self.daemon("alpha", "funnel-testsvc")
        alpha = self.wait_ready("alpha")
        self.start_beta()
        alpha.ok("PUBLISH", [add("y", 1) for _ in range(10)])
        self.redis.stop()
        status, err = alpha.call("PUBLISH", add("y", 1))
        self.assertEqual((status, err["code"]), ("ERR", "unavailable"))
        self.assertEqual(alpha.ok("PING")["redis"], "down")
        self.redis.start()
        wait_until(lambda: alpha.call("PUBLISH", add("y", 1, eid="after-restart"))[0] == "OK",
                   timeout=15, what="publish after redis restart")
        beta = self.wait_ready("beta")
        wait_until(lambda: self.stats("beta").get("mirrored") == 11, timeout=20,
                   what="beta mirrored 11")
        self.assertEqual(beta.ok("GET", {"kind": "counter", "id": "y"})["mirror"], 11)


if __name__ == "__main__":
    unittest.main()
