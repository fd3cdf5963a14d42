"""Review tests of the shared runtime (funnel_service.c, funnel_engine.c,
upstream.c): regressions for bugs found in review, with funnel-testsvc
daemons over real sockets and a fake upstream."""
import threading
import time
import unittest

import msgpack
import zmq

from funnel_e2e import FunnelTestCase, event, wait_until

def added(seq, key, n):
    return {"v": 1, "id": "alpha:c%d:1" % seq, "type": "test.added", "ts": 1,
            "src": "alpha", "svc": "alpha", "seq": seq, "cause": "c%d" % seq,
            "data": {"key": key, "n": n}}


class FakeUpstream(threading.Thread):
    """Plays 'alpha' for beta: answers REPLAY from a fixed list of events."""

    def __init__(self, api, pub, events):
        super().__init__(daemon=True)
        self.ctx = zmq.Context.instance()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(api)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(pub)
        self.events = events
        self.stop_flag = False
        self.replays = 0

    def run(self):
        last_hb = 0
        while not self.stop_flag:
            if self.router.poll(50):
                frames = self.router.recv_multipart()
                ident, rest = frames[0], frames[1:]
                if rest and rest[0] == b"":
                    rest = rest[1:]
                req = msgpack.unpackb(rest[1]) if len(rest) > 1 else {}
                self.replays += 1
                frm = req.get("from", 1)
                evs = [e for e in self.events if e["seq"] >= frm][: req.get("limit", 1000)]
                body = {"events": evs, "next": evs[-1]["seq"] + 1 if evs else frm, "first": 1}
                self.router.send_multipart([ident, b"", b"OK", msgpack.packb(body)])
            if time.time() - last_hb > 0.5:
                last_hb = time.time()
                self.pub.send_multipart([b"$hb", msgpack.packb(
                    {"svc": "alpha", "seq": self.events[-1]["seq"], "ts": 1})])
        self.router.close(0)
        self.pub.close(0)


class TestReviewE2E(FunnelTestCase):
    def test_consume_handler_error_does_not_wedge_the_stream(self):
        # seq 1 has n = "abc": testsvc's consume handler refuses it (n must
        # be an integer). seqs 2 and 3 are fine and must arrive.
        events = [added(1, "bad", "abc"), added(2, "good", 5), added(3, "good", 7)]
        fake = FakeUpstream(self.topology.api("alpha"), self.topology.pub("alpha"), events)
        fake.start()
        try:
            self.daemon("beta", "funnel-testsvc",
                        env={"FUNNEL_TESTSVC_NAME": "beta", "FUNNEL_TESTSVC_UPSTREAM": "alpha"})
            beta = self.wait_ready("beta")
            wait_until(lambda: beta.call("GET", {"kind": "counter", "id": "good"})[0] == "OK",
                       timeout=8, what="beta applied seqs 2..3 after a failing seq 1")
            self.assertEqual(beta.ok("GET", {"kind": "counter", "id": "good"})["mirror"], 12)
            counters = self.stats("beta")
            self.assertEqual((counters.get("consumed"), counters.get("consume_rejected")), (2, 1))
        finally:
            fake.stop_flag = True
            fake.join(5)

    def test_replay_from_a_huge_seq_is_empty_not_internal(self):
        self.daemon("alpha", "funnel-testsvc")
        api = self.wait_ready("alpha")
        api.ok("PUBLISH", [event("test.add", {"key": "k", "n": 1}) for _ in range(3)])
        for start in (2 ** 53 + 1, 2 ** 63 + 5, 2 ** 64 - 1):
            status, reply = api.call("REPLAY", {"from": start})
            self.assertEqual(status, "OK", (start, reply))
            self.assertEqual((reply["events"], reply["next"], reply["first"]), ([], start, 1))

    def test_replay_partition_is_ignored_without_instances(self):
        """proto/wire.md, REPLAY: without instances `partition` is ignored
        (one outbox per service), whatever its value; its type is still checked."""
        self.daemon("alpha", "funnel-testsvc")
        api = self.wait_ready("alpha")
        api.ok("PUBLISH", [event("test.add", {"key": "k", "n": 1}) for _ in range(3)])
        plain = api.ok("REPLAY", {"from": 1})
        self.assertTrue(plain["events"])
        for part in (0, 5, 16, 4096):
            self.assertEqual(api.ok("REPLAY", {"from": 1, "partition": part}), plain)
        status, err = api.call("REPLAY", {"from": 1, "partition": "3"})
        self.assertEqual((status, err["code"]), ("ERR", "invalid"))


if __name__ == "__main__":
    unittest.main()
