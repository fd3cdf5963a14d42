"""Stage series on both engines: funnel-testsvc (C engine, as alpha) and
funnel-testsvc-lua (the same rules on the Lua engine, as beta) get the
same events; GET series must answer the same for every range, step and
campaign (and the same errors), and the series keys in Redis must hold the
same counts with the same expiry. Real redis-server, real daemons."""
import time
import unittest

from funnel_e2e import FunnelTestCase, event, wait_until

HOUR = 3600000
DAY = 86400000


def add(key, n, ts, eid=None):
    return event("test.add", {"key": key, "n": n}, eid, ts=ts)


class TestSeriesBothEngines(FunnelTestCase):
    def setUp(self):
        super().setUp()
        self.daemon("alpha", "funnel-testsvc")
        self.daemon("beta", "funnel-testsvc-lua", env={"FUNNEL_TESTSVC_NAME": "beta"})
        self.apis = [self.wait_ready("alpha"), self.wait_ready("beta")]

    def both(self, verb, body):
        """The same request to both engines: their two (status, reply)."""
        return [api.call(verb, body) for api in self.apis]

    def same(self, verb, body):
        c, lua = self.both(verb, body)
        self.assertEqual(c, lua, body)
        return c

    def series_keys(self, svc):
        """suffix after the prefix -> (fields, ttl) of every series key."""
        r = self.redis.client()
        prefix = "{funnel:%s}:" % svc
        out = {}
        for key in r.scan_iter(match=prefix + "ser:*", count=1000):
            key = key.decode()
            fields = {k.decode(): int(v) for k, v in r.hgetall(key).items()}
            out[key[len(prefix):]] = (fields, r.ttl(key))
        return out

    def test_same_series_on_both_engines(self):
        now = int(time.time() * 1000)
        base = now - now % DAY - 2 * DAY             # two UTC days ago, midnight
        at = lambda day, hour, minute=0: base + day * DAY + hour * HOUR + minute * 60000
        events = [
            add("c1x", 2, at(0, 1)), add("c1y", 3, at(0, 1, 59)), add("c2x", 1, at(0, 2)),
            add("c1x", -1, at(1, 5)), add("a", 4, at(1, 5, 30)), add("c:z", 1, at(1, 23, 59)),
            add("c2q", 5, at(2, 0)),
            add("old", 7, 5),                        # 1970: past every keep, no bucket
            add("fu", 1, now + 5 * 365 * DAY),       # far future: capped expiry
        ]
        for ev in events:
            self.assertEqual(self.same("PUBLISH", ev), ("OK", {"id": ev["id"], "duplicate": False}))
        # A refused batch (test.need of a missing counter): no series write on either
        refused = [add("c1x", 100, at(0, 7)), event("test.need", {"key": "none"})]
        for status, reply in self.both("PUBLISH", refused):
            self.assertEqual((status, reply["code"], reply.get("index")), ("ERR", "not_found", 1))
        # A duplicate is not counted twice
        self.assertEqual(self.same("PUBLISH", events[0])[1]["duplicate"], True)

        start, end = at(0, 0), at(2, 23)
        status, hourly = self.same("GET", {"kind": "series", "from": start, "to": end})
        self.assertEqual(status, "OK")
        self.assertEqual((hourly["step"], hourly["first"], hourly["n"]), ("hour", start, 72))
        added = hourly["series"]["added"]
        self.assertEqual((added[1], added[2], added[7]), (5, 1, 0))   # hour 7: the refused batch
        self.assertEqual((added[24 + 5], added[24 + 23], added[48]), (3, 1, 5))
        self.assertEqual(sum(added), 2 + 3 + 1 - 1 + 4 + 1 + 5)
        status, daily = self.same("GET", {"kind": "series", "from": start, "to": end,
                                          "step": "day"})
        self.assertEqual(daily["series"]["added"], [6, 4, 5])
        for campaign, want in (("c1", [5, -1, 0]), ("c2", [1, 0, 5]), ("a", [0, 4, 0]),
                               ("c:", [0, 1, 0]), ("zz", [0, 0, 0])):
            status, reply = self.same("GET", {"kind": "series", "from": start, "to": end,
                                              "step": "day", "campaign": campaign})
            self.assertEqual(reply["series"]["added"], want, campaign)
            self.same("GET", {"kind": "series", "from": start, "to": end,
                              "campaign": campaign})
        self.same("GET", {"kind": "series", "from": 0, "to": 10, "step": "day"})
        self.same("GET", {"kind": "series", "from": now + 5 * 365 * DAY,
                          "to": now + 5 * 365 * DAY + DAY})
        self.same("GET", {"kind": "series", "from": 0, "to": 2199 * HOUR})
        self.same("GET", {"kind": "series", "from": start, "to": end, "step": False,
                          "campaign": None})

        # The same refusals, word for word
        for bad in ({"step": "week"}, {"from": -1}, {"from": 1.5}, {"to": "x"},
                    {"from": 10, "to": 5}, {"campaign": "a b"}, {"campaign": 7},
                    {"to": 2200 * HOUR}, {"from": None}):
            req = dict({"kind": "series", "from": 0, "to": 1}, **bad)
            if req["from"] is None:
                del req["from"]
            status, reply = self.same("GET", req)
            self.assertEqual((status, reply["code"]), ("ERR", "invalid"), req)
        self.assertEqual(self.same("GET", {"kind": "nope"})[1]["message"],
                         "kind: unknown GET kind 'nope' (known: counter, series)")

        # In Redis: the same keys, counts and expiry (within the seconds
        # between the two commits)
        c_keys, lua_keys = self.series_keys("alpha"), self.series_keys("beta")
        self.assertEqual(sorted(c_keys), sorted(lua_keys))
        # hour and day, whole and per campaign: 6 + 7 hourly, 4 + 7 daily
        self.assertEqual(len(c_keys), 24, sorted(c_keys))
        self.assertIn("ser:d:%d:c:" % ((base + DAY) // DAY), c_keys)
        self.assertNotIn("ser:h:0", c_keys)
        for key, (fields, ttl) in c_keys.items():
            self.assertEqual(fields, lua_keys[key][0], key)
            self.assertGreater(ttl, 0, key)
            self.assertLessEqual(abs(ttl - lua_keys[key][1]), 3, key)
        # STATS counts every stage reached, old and far-future ones too
        for svc in ("alpha", "beta"):
            self.assertEqual(self.stats(svc)["added"], 2 + 3 + 1 - 1 + 4 + 1 + 5 + 7 + 1)


if __name__ == "__main__":
    unittest.main()
