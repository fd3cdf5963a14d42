"""Review tests of the shared runtime (common/runtime.lua, runtime_end.lua,
funnel_service.c, upstream.c): regressions for bugs found in review.

Two kinds:
  - TestRuntimeLua runs the runtime's Lua (prelude + small rules + end)
    directly with EVAL on a real redis-server, so the overlay can be driven
    op by op: a seeded differential test against a Python model, and cases
    for specific bugs.
  - TestReviewE2E runs funnel-testsvc daemons over real sockets.
"""
import os
import random
import threading
import time
import unittest

import msgpack
import zmq

from funnel_e2e import FunnelTestCase, event, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
COMMON = os.path.join(HERE, "..", "..", "common")

# Rules for the Lua harness: an 'op' event runs a list of overlay ops and
# emits what the reads saw; data.fail refuses the event after the ops.
HARNESS_RULES = r"""
local function run_ops (d)
    local out = {}
    for _, o in ipairs (d.ops or {}) do
        local op, k, f, v = o[1], K (o[2]), o[3], o[4]
        if op == 'hset' then st.hset (k, f, v)
        elseif op == 'hdel' then st.hdel (k, f)
        elseif op == 'hadd' then st.hadd (k, f, v)
        elseif op == 'hincr' then out[#out + 1] = tostring (st.hincr (k, f, v))
        elseif op == 'hget' then out[#out + 1] = tostring (st.hget (k, f))
        elseif op == 'hgetall' then
            local ks = {}
            for kk, vv in pairs (st.hgetall (k)) do ks[#ks + 1] = kk .. '=' .. vv end
            table.sort (ks)
            out[#out + 1] = table.concat (ks, ',')
        elseif op == 'sadd' then out[#out + 1] = tostring (st.sadd (k, f))
        elseif op == 'srem' then out[#out + 1] = tostring (st.srem (k, f))
        elseif op == 'sism' then out[#out + 1] = tostring (st.sismember (k, f))
        elseif op == 'zadd' then st.zadd (k, v, f)
        elseif op == 'zincr' then out[#out + 1] = tostring (st.zincr (k, v, f))
        elseif op == 'zrem' then st.zrem (k, f)
        elseif op == 'zscore' then out[#out + 1] = tostring (st.zscore (k, f))
        elseif op == 'set' then st.set (k, v, o[5])
        elseif op == 'get' then out[#out + 1] = tostring (st.get (k))
        elseif op == 'boom' then error ('boom')
        end
    end
    return out
end

local function op_handler (ev, d)
    local out = run_ops (d)
    if d.fail then return fail ('conflict', 'refused') end
    if d.empty then emit ('r', {}) return end
    emit ('r', { r = table.concat (out, ';') })
end
on['op'] = op_handler
consume['op'] = op_handler
"""

P = "{t}:"


def lua_script():
    parts = []
    for path in (os.path.join(COMMON, "runtime.lua"), None, os.path.join(COMMON, "runtime_end.lua")):
        if path is None:
            parts.append(HARNESS_RULES)
        else:
            with open(path) as f:
                parts.append(f.read())
    return "\n".join(parts) + "\n"


class TestRuntimeLua(FunnelTestCase):
    def setUp(self):
        super().setUp()
        self.r = self.redis.client()
        self.script = self.r.register_script(lua_script())
        self.rt = msgpack.packb({"retention": 100000, "dedup_ttl": 691200, "rules": {}})
        self.seq = 0

    def run_mode(self, mode, extra):
        return self.script(keys=[P + "seq"],
                           args=[mode, str(int(time.time() * 1000)), "t", self.rt] + extra)

    def consume(self, events, last=None):
        """events: list of data maps; each gets the next upstream seq."""
        args = ["up", str(last if last is not None else self.seq + len(events))]
        for d in events:
            self.seq += 1
            args += ["ev-%d" % self.seq, "op", "1", "up", str(self.seq), msgpack.packb(d)]
        return self.run_mode("consume", args)

    def publish(self, events):
        args = ["1", ""]      # a batch, no certificate name
        for i, d in enumerate(events):
            args += ["p-%d-%d" % (time.time_ns(), i), "op", "1", "e2e", "0", msgpack.packb(d)]
        return self.run_mode("publish", args)

    # -- differential test of the overlay against a model -------------------

    def model_apply(self, state, ops):
        """Applies ops to a deep copy of state; returns (new state, reads)."""
        h = {k: dict(v) for k, v in state["h"].items()}
        s = {k: set(v) for k, v in state["s"].items()}
        z = {k: dict(v) for k, v in state["z"].items()}
        g = dict(state["g"])
        out = []
        for o in ops:
            op, k = o[0], o[1]
            f = o[2] if len(o) > 2 else None
            v = o[3] if len(o) > 3 else None
            hk = h.setdefault(k, {})
            if op == "hset":
                hk[f] = str(v)
            elif op == "hdel":
                hk.pop(f, None)
            elif op == "hadd":
                hk[f] = str(int(hk.get(f, 0)) + v)
            elif op == "hincr":
                hk[f] = str(int(hk.get(f, 0)) + v)
                out.append(hk[f])
            elif op == "hget":
                out.append(hk.get(f, "nil"))
            elif op == "hgetall":
                out.append(",".join(sorted("%s=%s" % kv for kv in hk.items())))
            elif op == "sadd":
                out.append("false" if f in s.setdefault(k, set()) else "true")
                s[k].add(f)
            elif op == "srem":
                out.append("true" if f in s.setdefault(k, set()) else "false")
                s[k].discard(f)
            elif op == "sism":
                out.append("true" if f in s.setdefault(k, set()) else "false")
            elif op == "zadd":
                z.setdefault(k, {})[f] = v
            elif op == "zincr":
                z.setdefault(k, {})[f] = z.get(k, {}).get(f, 0) + v
                out.append(str(z[k][f]))
            elif op == "zrem":
                z.setdefault(k, {}).pop(f, None)
            elif op == "zscore":
                sc = z.get(k, {}).get(f)
                out.append("nil" if sc is None else str(sc))
            elif op == "set":
                g[k] = str(v)
            elif op == "get":
                out.append(g.get(k, "nil"))
        return {"h": h, "s": s, "z": z, "g": g}, out

    def random_ops(self, rng):
        ops = []
        for _ in range(rng.randint(1, 8)):
            kind = rng.choice("hhhhhhsszzg")
            f = rng.choice(["f1", "f2", "f3"])
            if kind == "h":
                op = rng.choice(["hset", "hdel", "hadd", "hadd", "hincr", "hget", "hgetall"])
                ops.append([op, rng.choice(["h1", "h2"]), f, rng.randint(-3, 9)])
            elif kind == "s":
                ops.append([rng.choice(["sadd", "srem", "sism"]), "s1", f])
            elif kind == "z":
                ops.append([rng.choice(["zadd", "zincr", "zrem", "zscore"]), "z1", f,
                            rng.randint(-3, 9)])
            else:
                ops.append([rng.choice(["set", "get"]), "g1", None, rng.randint(0, 9)])
        return ops

    def redis_state(self):
        h = {k: {f.decode(): v.decode() for f, v in self.r.hgetall(P + k).items()}
             for k in ("h1", "h2")}
        s = {"s1": {m.decode() for m in self.r.smembers(P + "s1")}}
        z = {"z1": {m.decode(): int(sc) for m, sc in self.r.zrange(P + "z1", 0, -1, withscores=True)}}
        g = {}
        if self.r.exists(P + "g1"):
            g["g1"] = self.r.get(P + "g1").decode()
        return {"h": h, "s": s, "z": z, "g": g}

    @staticmethod
    def normal(state):
        return {"h": {k: v for k, v in state["h"].items() if v and k in ("h1", "h2")},
                "s": {k: v for k, v in state["s"].items() if v},
                "z": {k: v for k, v in state["z"].items() if v},
                "g": state["g"]}

    def test_overlay_matches_model_with_rollbacks(self):
        rng = random.Random(20240611)
        state = {"h": {}, "s": {}, "z": {}, "g": {}}
        out_seq = 0
        for call in range(60):
            events, expected_reads = [], []
            for _ in range(rng.randint(1, 6)):
                ops = self.random_ops(rng)
                refuse = rng.random() < 0.35
                events.append({"ops": ops, "fail": refuse})
                new, reads = self.model_apply(state, ops)
                if not refuse:
                    state = new
                    expected_reads.append(";".join(reads))
            self.consume(events)
            got = self.outbox_entries(out_seq + 1)
            got_reads = [msgpack.unpackb(entry["data"])["r"] for entry in got]
            self.assertEqual(got_reads, expected_reads, "call %d: %r" % (call, events))
            out_seq += len(got)
            self.assertEqual(self.normal(self.redis_state()), self.normal(state),
                             "call %d: %r" % (call, events))

    def outbox_entries(self, start):
        """The outbox from seq start, through the script's replay mode."""
        reply = self.run_mode("replay", [str(start), "1000"])
        entries = []
        for i in range(3, len(reply), 2):
            eid, etype, cause, ts, cause_ts, data = reply[i + 1].split(b"\0", 5)
            entries.append({"seq": reply[i], "id": eid, "type": etype, "cause": cause,
                            "ts": int(ts), "cause_ts": int(cause_ts or 0), "data": data})
        return entries

    # -- specific bugs --------------------------------------------------------

    def test_rolled_back_set_with_ttl_leaves_no_expiry(self):
        # An earlier event sets g1 (no ttl); a later one sets it with a ttl
        # and is refused: the key must not get the refused event's expiry.
        self.consume([{"ops": [["set", "g1", None, 1]]},
                      {"ops": [["set", "g1", None, 2, 60]], "fail": True}])
        self.assertEqual(self.r.get(P + "g1"), b"1")
        self.assertEqual(self.r.ttl(P + "g1"), -1)
        # A key only read, then set with a ttl by a refused event: untouched
        self.r.set(P + "g2", "keep")
        self.consume([{"ops": [["get", "g2"], ["set", "g2", None, 3, 60]], "fail": True}])
        self.assertEqual(self.r.ttl(P + "g2"), -1)

    def test_empty_data_is_packed_as_a_map(self):
        # cmsgpack packs an empty Lua table as an array (0x90): an output
        # event whose data is {} would go out with "data": [] (not a map,
        # so every subscriber's envelope check drops it).
        reply = self.publish([{"empty": True}])
        self.assertEqual(reply[0], b"ok")
        entry = self.outbox_entries(1)[0]
        self.assertEqual(entry["data"], b"\x80")
        self.assertTrue(reply[-1].endswith(b"\0\x80"), reply[-1])

    def test_consume_handler_error_is_rejected_not_fatal(self):
        # A Lua error in a consume handler must not fail the whole call (the
        # C side would rewind and replay the same page forever): the event
        # is counted as rejected and passed over, like a refusal.
        reply = self.consume([{"ops": [["hadd", "h1", "f1", 1]]},
                              {"ops": [["hadd", "h1", "f1", 100], ["boom", "x"]]},
                              {"ops": [["hadd", "h1", "f1", 2]]}])
        self.assertEqual(reply[0], b"ok")
        summary = msgpack.unpackb(reply[1])
        self.assertEqual((summary["applied"], summary["rejected"], summary["ckpt"]), (2, 1, 3))
        self.assertIn("boom", summary["errors"][0])
        self.assertEqual(self.r.hget(P + "h1", "f1"), b"3")
        self.assertEqual(self.r.hget(P + "ckpt", "up"), b"3")
        self.assertEqual(len(self.outbox_entries(1)), 2)

    def test_replay_from_beyond_2_53(self):
        self.publish([{"ops": []}, {"ops": []}])
        for start in (2 ** 53 + 1, 2 ** 64 - 1):
            reply = self.run_mode("replay", [str(start), "10"])
            self.assertEqual(reply[0], b"ok")
            self.assertEqual(len(reply), 3)


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
        # seq 1 has n = "abc": testsvc's consume handler does arithmetic on
        # it and raises a Lua error. seqs 2 and 3 are fine and must arrive.
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


if __name__ == "__main__":
    unittest.main()
