"""Stage series on the engine, through funnel-testsvc's wire API: events
at chosen times (old, far future, a refused batch, a duplicate); GET
series must answer the expected buckets for every range, step and
campaign (and refuse bad requests), and the series keys in Redis must hold
those counts with a bounded expiry. Real redis-server, a real daemon.
(test_series.py checks the four stages' series through the monitor.)"""
import time
import unittest

from funnel_e2e import FunnelTestCase, event

HOUR = 3600000
DAY = 86400000


def add(key, n, ts, eid=None):
    return event("test.add", {"key": key, "n": n}, eid, ts=ts)


class TestSeriesEngine(FunnelTestCase):
    def setUp(self):
        super().setUp()
        self.daemon("alpha", "funnel-testsvc")
        self.api = self.wait_ready("alpha")

    def ok(self, verb, body):
        """(status, reply) of a request that must succeed."""
        status, reply = self.api.call(verb, body)
        self.assertEqual(status, "OK", (body, reply))
        return status, reply

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

    def test_series_buckets_keys_and_refusals(self):
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
            self.assertEqual(self.ok("PUBLISH", ev), ("OK", {"id": ev["id"], "duplicate": False}))
        # A refused batch (test.need of a missing counter): no series write
        refused = [add("c1x", 100, at(0, 7)), event("test.need", {"key": "none"})]
        status, reply = self.api.call("PUBLISH", refused)
        self.assertEqual((status, reply["code"], reply.get("index")), ("ERR", "not_found", 1))
        # A duplicate is not counted twice
        self.assertEqual(self.ok("PUBLISH", events[0])[1]["duplicate"], True)

        start, end = at(0, 0), at(2, 23)
        status, hourly = self.ok("GET", {"kind": "series", "from": start, "to": end})
        self.assertEqual((hourly["step"], hourly["first"], hourly["n"]), ("hour", start, 72))
        added = hourly["series"]["added"]
        self.assertEqual((added[1], added[2], added[7]), (5, 1, 0))   # hour 7: the refused batch
        self.assertEqual((added[24 + 5], added[24 + 23], added[48]), (3, 1, 5))
        self.assertEqual(sum(added), 2 + 3 + 1 - 1 + 4 + 1 + 5)
        status, daily = self.ok("GET", {"kind": "series", "from": start, "to": end,
                                          "step": "day"})
        self.assertEqual(daily["series"]["added"], [6, 4, 5])
        for campaign, want in (("c1", [5, -1, 0]), ("c2", [1, 0, 5]), ("a", [0, 4, 0]),
                               ("c:", [0, 1, 0]), ("zz", [0, 0, 0])):
            status, reply = self.ok("GET", {"kind": "series", "from": start, "to": end,
                                            "step": "day", "campaign": campaign})
            self.assertEqual(reply["series"]["added"], want, campaign)
            status, reply = self.ok("GET", {"kind": "series", "from": start, "to": end,
                                            "campaign": campaign})
            self.assertEqual(sum(reply["series"]["added"]), sum(want), campaign)
        # 1970: before every keep, so nothing; the far future: the 1 event
        status, reply = self.ok("GET", {"kind": "series", "from": 0, "to": 10, "step": "day"})
        self.assertEqual(reply["series"]["added"], [0])
        status, reply = self.ok("GET", {"kind": "series", "from": now + 5 * 365 * DAY,
                                        "to": now + 5 * 365 * DAY + DAY})
        self.assertEqual(sum(reply["series"]["added"]), 1)
        status, reply = self.ok("GET", {"kind": "series", "from": 0, "to": 2199 * HOUR})
        self.assertEqual(reply["n"], 2200)                  # the largest range
        status, reply = self.ok("GET", {"kind": "series", "from": start, "to": end,
                                        "step": False, "campaign": None})
        self.assertEqual(reply["series"]["added"], added)   # defaults: hourly, whole funnel

        # Refusals
        for bad in ({"step": "week"}, {"from": -1}, {"from": 1.5}, {"to": "x"},
                    {"from": 10, "to": 5}, {"campaign": "a b"}, {"campaign": 7},
                    {"to": 2200 * HOUR}, {"from": None}):
            req = dict({"kind": "series", "from": 0, "to": 1}, **bad)
            if req["from"] is None:
                del req["from"]
            status, reply = self.api.call("GET", req)
            self.assertEqual((status, reply["code"]), ("ERR", "invalid"), req)
        status, reply = self.api.call("GET", {"kind": "nope"})
        self.assertEqual((status, reply["message"]),
                         ("ERR", "kind: unknown GET kind 'nope' (known: counter, series)"))

        # In Redis: the keys, their counts, a bounded expiry
        keys = self.series_keys("alpha")
        # hour and day, whole and per campaign: 6 + 7 hourly, 4 + 7 daily
        self.assertEqual(len(keys), 24, sorted(keys))
        self.assertIn("ser:d:%d:c:" % ((base + DAY) // DAY), keys)
        self.assertNotIn("ser:h:0", keys)
        hourly_keep, daily_keep = 90 * 86400, 1096 * 86400
        for key, (fields, ttl) in keys.items():
            keep = hourly_keep if key.startswith("ser:h:") else daily_keep
            self.assertGreater(ttl, 0, key)
            self.assertLessEqual(ttl, keep + 86400, key)
        self.assertEqual(sum(sum(f.values()) for k, (f, _) in keys.items()
                             if k.startswith("ser:d:") and k.count(":") == 2),
                         2 + 3 + 1 - 1 + 4 + 1 + 5 + 1)  # whole funnel, daily, without 1970
        # STATS counts every stage reached, old and far-future ones too
        self.assertEqual(self.stats("alpha")["added"], 2 + 3 + 1 - 1 + 4 + 1 + 5 + 7 + 1)


if __name__ == "__main__":
    unittest.main()
