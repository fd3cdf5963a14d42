"""GET /api/series end to end: real redis-server, the four service daemons and
the monitor. Events are published with chosen event times across several
hours and days; every bucket the monitor returns is compared with the
expected one, whole funnel and per campaign, hourly and daily, then again
after restarting a daemon and the monitor (the counts live in Redis)."""
import json
import time
import unittest
import urllib.error
import urllib.request

from funnel_e2e import FunnelTestCase, event, wait_until

HOUR = 3600000
DAY = 86400000
FIELDS = ["reached", "engaged", "leads", "mql", "sql", "deals", "won", "customers",
          "repeat", "lost", "revenue", "expansion", "won_expansion", "revenue_expansion"]


def floor(t, step):
    return t - t % step


class SeriesCase(FunnelTestCase):
    def start_all(self):
        for svc in ("campaign", "leads", "sales", "retention"):
            self.daemon(svc)
        for svc in ("campaign", "leads", "sales", "retention"):
            self.wait_ready(svc)
        self.monitor = self.daemon("monitor")
        wait_until(lambda: self.get("/api/funnel")[0] == 200, what="monitor http")

    def get(self, path, timeout=10):
        url = "http://%s%s" % (self.topology.http(), path)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode())

    def series(self, start, end, step, campaign=None):
        path = "/api/series?from=%d&to=%d&step=%s" % (start, end, step)
        if campaign:
            path += "&campaign=" + campaign
        status, body = self.get(path)
        self.assertEqual(status, 200, body)
        return body

    def publish(self, svc, etype, data, ts):
        reply = self.client(svc).ok("PUBLISH", event(etype, data, ts=ts))
        self.assertFalse(reply["duplicate"])

    def expected(self, start, end, step, marks):
        """Buckets from the one holding start to the one holding end, with
        marks (field, t, n) added where they fall."""
        first, last = floor(start, step), floor(end, step)
        buckets = {t: dict({f: 0 for f in FIELDS}, t=t) for t in range(first, last + 1, step)}
        for field, t, n in marks:
            if first <= t <= end + step and floor(t, step) in buckets:
                buckets[floor(t, step)][field] += n
        return [buckets[t] for t in sorted(buckets)]


class TestSeries(SeriesCase):
    def scenario(self):
        """Publishes a small funnel over three days; returns the marks
        (field, event time, n) per campaign (None: the whole funnel)."""
        now = int(time.time() * 1000)
        base = floor(now, DAY) - 3 * DAY          # three UTC days ago, midnight
        t = lambda day, hour, minute=0: base + day * DAY + hour * HOUR + minute * 60000
        self.base, self.t = base, t
        for c in ("c1", "c2"):
            self.publish("campaign", "campaign.upsert",
                         {"campaign": c, "name": c, "channel": "email"}, t(0, 0))
        marks = []

        def mark(field, when, campaign, n=1):
            marks.append((None, field, when, n))
            if campaign:
                marks.append((campaign, field, when, n))
        # Reach and engagement: unique contacts, whole funnel and per campaign
        self.publish("campaign", "touch", {"campaign": "c1", "kind": "impression",
                                           "contact": "P1"}, t(0, 1, 5))
        mark("reached", t(0, 1, 5), "c1")
        self.publish("campaign", "touch", {"campaign": "c1", "kind": "click",
                                           "contact": "P1"}, t(0, 2, 59))
        mark("engaged", t(0, 2, 59), "c1")
        self.publish("campaign", "touch", {"campaign": "c2", "kind": "click",
                                           "contact": "P1"}, t(1, 3))
        marks += [("c2", "reached", t(1, 3), 1), ("c2", "engaged", t(1, 3), 1)]
        self.publish("campaign", "touch", {"campaign": "c2", "kind": "open",
                                           "contact": "P2"}, t(1, 23, 59))
        mark("reached", t(1, 23, 59), "c2")
        mark("engaged", t(1, 23, 59), "c2")
        # Leads: captured at one hour, qualified at another; the deal opens
        # at the qualification's time (carried on lead.sql), is won later
        self.publish("leads", "lead.capture", {"lead": "L1", "campaign": "c1"}, t(0, 4))
        mark("leads", t(0, 4), "c1")
        self.publish("leads", "lead.qualify", {"lead": "L1", "stage": "sql"}, t(1, 5, 30))
        mark("mql", t(1, 5, 30), "c1")
        mark("sql", t(1, 5, 30), "c1")
        mark("deals", t(1, 5, 30), "c1")
        self.publish("leads", "lead.capture", {"lead": "L2", "campaign": "c2"}, t(1, 6))
        mark("leads", t(1, 6), "c2")
        self.publish("leads", "lead.qualify", {"lead": "L2", "stage": "mql"}, t(2, 0))
        mark("mql", t(2, 0), "c2")
        self.publish("leads", "lead.capture", {"lead": "L3"}, t(2, 7))
        mark("leads", t(2, 7), None)
        sales = self.wait_ready("sales")
        wait_until(lambda: sales.call("GET", {"kind": "deal", "id": "LL1-1"})[0] == "OK",
                   what="deal LL1-1 opened from lead.sql")
        self.publish("sales", "deal.offer", {"deal": "LL1-1", "amount": 125000}, t(1, 9))
        self.publish("sales", "deal.close", {"deal": "LL1-1", "outcome": "won"}, t(2, 10, 1))
        mark("won", t(2, 10, 1), "c1")
        mark("revenue", t(2, 10, 1), "c1", 125000)
        mark("customers", t(2, 10, 1), "c1")
        # A deal opened by API for L2 (campaign unknown to sales: none), lost
        self.publish("sales", "deal.open", {"deal": "D2", "lead": "L2", "amount": 5000}, t(2, 11))
        mark("deals", t(2, 11), None)
        self.publish("sales", "deal.close", {"deal": "D2", "outcome": "lost"}, t(2, 12))
        mark("lost", t(2, 12), None)
        # A second order makes L1 a repeat customer at the order's time
        retention = self.wait_ready("retention")
        wait_until(lambda: retention.call("GET", {"kind": "customer", "id": "L1"})[0] == "OK",
                   what="customer L1")
        self.publish("retention", "customer.order", {"customer": "L1", "amount": 900},
                     t(2, 13, 45))
        mark("repeat", t(2, 13, 45), "c1")
        # A promoter's feedback makes an upsell due: an expansion deal opens at
        # the feedback's time, counted in deals and apart; won later
        self.publish("retention", "customer.feedback", {"customer": "L1", "nps": 10}, t(2, 15))
        wait_until(lambda: sales.call("GET", {"kind": "deal", "id": "XL1-1"})[0] == "OK",
                   what="expansion deal XL1-1 opened from customer.upsell")
        mark("deals", t(2, 15), "c1")
        mark("expansion", t(2, 15), "c1")
        self.publish("sales", "deal.offer", {"deal": "XL1-1", "amount": 5000}, t(2, 15, 30))
        self.publish("sales", "deal.close", {"deal": "XL1-1", "outcome": "won"}, t(2, 16))
        for field in ("won", "won_expansion"):
            mark(field, t(2, 16), "c1")
        for field in ("revenue", "revenue_expansion"):
            mark(field, t(2, 16), "c1", 5000)
        # An event older than the hourly keep (90 days): daily bucket only
        self.publish("campaign", "touch", {"campaign": "c1", "kind": "impression",
                                           "contact": "P9"}, base - 100 * DAY)
        self.old = base - 100 * DAY
        self.wait_applied()
        return marks

    def wait_applied(self):
        want = {"campaign": {"reached": 3}, "leads": {"leads": 3},
                "sales": {"deals": 3, "won": 2, "lost": 1, "expansion": 1},
                "retention": {"customers": 1, "repeat": 1}}
        for svc, counters in want.items():
            wait_until(lambda: all(self.stats(svc).get(k) == v for k, v in counters.items()),
                       what="%s counters %r" % (svc, counters))

    def check_all(self, marks):
        start, end = self.base - 2 * HOUR + 1234, self.t(2, 23, 59) + 59999
        for step, name in ((HOUR, "hour"), (DAY, "day")):
            for campaign in (None, "c1", "c2", "nobody"):
                got = self.series(start, end, name, campaign)
                self.assertEqual(got["step"], name)
                self.assertEqual((got["from"], got["to"]), (start, end))
                want = self.expected(start, end, step,
                                     [(f, t, n) for c, f, t, n in marks if c == campaign])
                self.assertEqual(len(got["buckets"]), len(want))
                for g, w in zip(got["buckets"], want):
                    self.assertEqual(g, w, "%s %s bucket %d" % (name, campaign, g["t"]))
        # The 100-day-old touch: in its daily bucket, not in any hourly one
        day = self.series(self.old, self.old, "day")["buckets"]
        self.assertEqual([b["reached"] for b in day], [1])
        hour = self.series(self.old, self.old, "hour")["buckets"]
        self.assertEqual([b["reached"] for b in hour], [0])

    def test_buckets_exact_across_restarts(self):
        self.start_all()
        marks = self.scenario()
        self.check_all(marks)
        # Totals agree with the stage counters (same moments counted)
        total = self.series(self.base - 101 * DAY, self.base + 3 * DAY, "day")
        sums = {f: sum(b[f] for b in total["buckets"]) for f in FIELDS}
        self.assertEqual(sums["reached"], self.stats("campaign")["reached"])
        self.assertEqual(sums["sql"], self.stats("leads")["sql"])
        self.assertEqual(sums["revenue"], self.stats("sales")["revenue"])
        # Restart a service (SIGKILL) and the monitor: still exact
        leads = [d for d in self.daemons if d.name == "leads"][0]
        leads.kill9()
        self.assertEqual(self.monitor.stop(), 0)
        leads.start()
        self.wait_ready("leads")
        self.monitor = self.daemon("monitor")
        wait_until(lambda: self.get("/api/funnel")[0] == 200, what="monitor http")
        self.check_all(marks)
        # A duplicate (same id) changes nothing
        ev = event("touch", {"campaign": "c1", "kind": "click", "contact": "P7"},
                   ts=self.t(0, 8))
        self.client("campaign").ok("PUBLISH", ev)
        self.client("campaign").ok("PUBLISH", ev)
        got = self.series(self.t(0, 8), self.t(0, 8), "hour")["buckets"]
        self.assertEqual((got[0]["reached"], got[0]["engaged"]), (1, 1))

    def test_buckets_expire(self):
        """Hourly buckets live 90 days past their end, daily ones 1096 days;
        a far-future event time cannot pin a key for longer."""
        self.start_all()
        now = int(time.time() * 1000)
        self.publish("campaign", "campaign.upsert", {"campaign": "c1", "name": "c1",
                                                     "channel": "email"}, now)
        t = now - 5 * DAY
        self.publish("campaign", "touch", {"campaign": "c1", "kind": "click", "contact": "P1"}, t)
        future = now + 3650 * DAY
        self.publish("campaign", "touch", {"campaign": "c1", "kind": "click", "contact": "P2"},
                     future)
        r = self.redis.client()
        now_s = time.time()
        for step, keep in ((HOUR, 90 * 86400), (DAY, 1096 * 86400)):
            code = "h" if step == HOUR else "d"
            for suffix in ("", ":c1"):
                key = "{funnel:campaign}:ser:%s:%d%s" % (code, t // step, suffix)
                self.assertEqual(int(r.hget(key, "reached")), 1, key)
                want = (t // step + 1) * step // 1000 + keep - now_s
                self.assertAlmostEqual(r.ttl(key), want, delta=5)
                key = "{funnel:campaign}:ser:%s:%d%s" % (code, future // step, suffix)
                self.assertEqual(int(r.hget(key, "reached")), 1, key)
                self.assertLessEqual(r.ttl(key), keep + step // 1000)
        # Every series key has a TTL
        keys = list(r.scan_iter(match="*:ser:*"))
        self.assertEqual(len(keys), 8)
        self.assertTrue(all(r.ttl(k) > 0 for k in keys))

    def test_a_service_down_is_503_not_a_hole(self):
        self.start_all()
        now = int(time.time() * 1000)
        self.assertEqual(self.get("/api/series?from=%d&to=%d" % (now - HOUR, now))[0], 200)
        [d for d in self.daemons if d.name == "retention"][0].kill9()
        status, body = self.get("/api/series?from=%d&to=%d" % (now - HOUR, now), timeout=20)
        self.assertEqual(status, 503)
        self.assertIn("retention", body["message"])


class TestSeriesParams(SeriesCase):
    def test_bad_parameters_are_400_naming_them(self):
        self.start_all()
        now = int(time.time() * 1000)
        cases = [
            ("to=%d" % now, "from"),
            ("from=-1&to=%d" % now, "from"),
            ("from=abc&to=%d" % now, "from"),
            ("from=1.5&to=%d" % now, "from"),
            ("from=%d" % now, "to"),
            ("from=0&to=99999999999999999999", "to"),
            ("from=0&to=9007199254740993", "to"),
            ("from=%d&to=%d" % (now, now - 1), "to"),
            ("from=0&to=%d&step=week" % now, "step"),
            ("from=%d&to=%d&step=hour" % (now - 2200 * HOUR, now), "to"),   # 2201 buckets
            ("from=0&to=%d&step=day" % now, "to"),                           # ~20,000 days
            ("from=0&to=1&campaign=a%20b", "campaign"),
            ("from=0&to=1&campaign=", "campaign"),
        ]
        for query, param in cases:
            status, body = self.get("/api/series?" + query)
            self.assertEqual(status, 400, query)
            self.assertEqual(body["param"], param, query)
            self.assertTrue(body["message"].startswith(param + ":"), body)
        # The largest ranges allowed: 90 days hourly, 3 years daily
        status, body = self.get("/api/series?from=%d&to=%d&step=hour" % (now - 90 * DAY, now))
        self.assertEqual(status, 200)
        self.assertEqual(len(body["buckets"]), 2161 if now % HOUR else 2160)
        status, body = self.get("/api/series?from=%d&to=%d&step=day" % (now - 1095 * DAY, now))
        self.assertEqual((status, len(body["buckets"])), (200, 1096))
        # Campaign report by model; an unknown model is a 400
        status, body = self.get("/api/campaigns?model=first_touch")
        self.assertEqual((status, body["model"]), (200, "first_touch"))
        status, body = self.get("/api/campaigns?model=nope")
        self.assertEqual((status, body["param"]), (400, "model"))

    def test_series_latency_90_days_hourly(self):
        """Reports (does not assert) the time of a 90-day hourly read."""
        self.start_all()
        now = int(time.time() * 1000)
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            status, _ = self.get("/api/series?from=%d&to=%d&step=hour" % (now - 90 * DAY, now))
            times.append((time.perf_counter() - t0) * 1000)
            self.assertEqual(status, 200)
        times.sort()
        print("\n/api/series 90 days hourly: median %.1f ms, max %.1f ms"
              % (times[len(times) // 2], times[-1]))


if __name__ == "__main__":
    unittest.main()
