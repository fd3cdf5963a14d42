"""The dashboard in a real browser: headless Chromium driven over the
DevTools protocol (tests/e2e/cdp.py), against real services and the
monitor. The page must render /api/series for its date range, follow a
change of range and of attribution model to exactly what the JSON API says,
sort its tables, drill into a campaign, fit a 400 px wide screen, and
leave screenshots in the build directory (test-artifacts/)."""
import json
import os
import time
import unittest
import urllib.error
import urllib.request

import cdp
from funnel_e2e import BUILD, FunnelTestCase, event, wait_until

DAY = 86400000
HOUR = 3600000
STAGES = ["reached", "engaged", "leads", "mql", "sql", "deals", "won", "customers", "repeat"]
ARTIFACTS = os.path.join(BUILD, "test-artifacts")


@unittest.skipUnless(cdp.chromium(), "chromium not installed (apt-get install -y chromium)")
class TestDashboard(FunnelTestCase):
    def setUp(self):
        super().setUp()
        # Money in the configured currency (monitor/currency)
        with open(self.topology.path, "w") as f:
            f.write(self.topology.text.replace('monitor\n    http',
                                               'monitor\n    currency = "EUR"\n    http'))
        for svc in ("campaign", "leads", "sales", "retention"):
            self.daemon(svc)
        for svc in ("campaign", "leads", "sales", "retention"):
            self.wait_ready(svc)
        self.daemon("monitor")
        wait_until(lambda: self.get("/api/funnel")[0] == 200, what="monitor http")
        self.scenario()

    def get(self, path):
        url = "http://%s%s" % (self.topology.http(), path)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode())

    def publish(self, svc, etype, data, ts):
        self.client(svc).ok("PUBLISH", event(etype, data, ts=ts))

    def scenario(self):
        """Traffic over the last 40 days: the 7-day and 30-day ranges differ,
        and two campaigns share contacts so attribution models differ."""
        now = int(time.time() * 1000)
        for c, ch in (("c1", "email"), ("c2", "social"), ("c3", "search")):
            self.publish("campaign", "campaign.upsert", {"campaign": c, "name": "Camp " + c,
                                                         "channel": ch}, now - 40 * DAY)
        n = 0
        for days_ago, count in ((20, 4), (3, 3), (0, 2)):
            for i in range(count):
                n += 1
                p, t = "P%d" % n, now - days_ago * DAY - (i + 1) * HOUR // 4
                self.publish("campaign", "touch", {"campaign": "c1", "kind": "click", "contact": p},
                             t - 2 * HOUR)
                if n % 2 == 0:
                    self.publish("campaign", "touch", {"campaign": "c2", "kind": "click",
                                                       "contact": p}, t - HOUR)
                self.publish("leads", "lead.capture", {"lead": p, "campaign": "c1"}, t)
                if n % 3 != 0:
                    self.publish("leads", "lead.qualify", {"lead": p, "stage": "sql"}, t + 60000)
        self.publish("campaign", "touch", {"campaign": "c3", "kind": "impression",
                                           "contact": "Q1"}, now - HOUR)
        self.publish("campaign", "touch", {"campaign": "c3", "kind": "impression",
                                           "contact": "Q2"}, now - 2 * HOUR)
        sales = self.client("sales")
        wait_until(lambda: self.stats("sales")["deals"] == 6, what="6 deals from lead.sql")
        # Two of them won (one 5 days ago, one today), one lost
        self.publish("sales", "deal.offer", {"deal": "LP1-1", "amount": 250000}, now - 19 * DAY)
        self.publish("sales", "deal.close", {"deal": "LP1-1", "outcome": "won"}, now - 5 * DAY)
        self.publish("sales", "deal.offer", {"deal": "LP8-1", "amount": 99950}, now - HOUR)
        self.publish("sales", "deal.close", {"deal": "LP8-1", "outcome": "won"}, now - HOUR // 2)
        self.publish("sales", "deal.close", {"deal": "LP2-1", "outcome": "lost"}, now - 2 * DAY)
        wait_until(lambda: self.stats("retention")["customers"] == 2, what="2 customers")
        wait_until(lambda: self.stats("campaign")["conv_won"] == 2, what="campaign saw the wins")
        self.assertIsNotNone(sales)

    # --------------------------------------------------------- helpers --
    def page_range(self, b):
        return b.eval("(() => { const d = document.getElementById('range').dataset;"
                      " return [Number(d.from), Number(d.to), d.step, d.loaded || ''] })()")

    def wait_loaded(self, b, previous=None):
        """Waits for the page's range to be loaded (and differ from previous)."""
        def ready():
            r = self.page_range(b)
            return r if r[3] and r[3] != previous else None
        return b.wait("true", 1) and wait_until(ready, 15, what="range loaded")

    def api_totals(self, start, end, step, campaign=None):
        path = "/api/series?from=%d&to=%d&step=%s" % (start, end, step)
        if campaign:
            path += "&campaign=" + campaign
        status, doc = self.get(path)
        self.assertEqual(status, 200, doc)
        t = {}
        for bucket in doc["buckets"]:
            for k, v in bucket.items():
                if k != "t":
                    t[k] = t.get(k, 0) + v
        t["deals"] -= t["expansion"]       # the page shows new deals, expansion apart
        t["won"] -= t["won_expansion"]
        return t

    def check_funnel(self, b, prefix, want):
        got = b.eval("""Object.fromEntries(%s.map((s) => {
            const e = document.getElementById('%s' + s);
            return [s, e ? [Number(e.dataset.count), e.querySelector('.count').textContent] : null]; }))"""
                     % (json.dumps(STAGES), prefix))
        for stage in STAGES:
            self.assertIsNotNone(got[stage], stage)
            self.assertEqual(got[stage][0], want[stage], "%s%s" % (prefix, stage))
            # Integer counts are shown as integers (no decimals)
            digits = got[stage][1].replace(",", "").replace("\u202f", "").replace(".", "")
            self.assertEqual(int(digits), want[stage], got[stage][1])

    def campaign_rows(self, b):
        return b.eval("""[...document.querySelectorAll('#campaigns tr[data-campaign]')].map((tr) =>
            Object.fromEntries([['id', tr.dataset.campaign]].concat(
              [...tr.querySelectorAll('td[data-key]')].map((td) =>
                [td.dataset.key, [td.dataset.value, td.textContent]]))))""")

    def select_model(self, b, model):
        b.eval("""(() => { const s = document.getElementById('model'); s.value = %s;
                  s.dispatchEvent(new Event('change', {bubbles: true})); })()""" % json.dumps(model))
        b.wait("document.getElementById('campaigns').dataset.model === %s" % json.dumps(model),
               15, "campaign table under %s" % model)

    def check_campaigns(self, b, model):
        status, report = self.get("/api/campaigns?model=" + model)
        self.assertEqual(status, 200)
        want = {r["campaign"]: r for r in report["campaigns"]}
        rows = self.campaign_rows(b)
        self.assertEqual(sorted(r["id"] for r in rows), sorted(want))
        for row in rows:
            w = want[row["id"]]
            for key in ("reach", "engaged", "leads", "mql", "sql", "won", "revenue", "spend"):
                self.assertAlmostEqual(float(row[key][0]), w[key], 6, "%s %s" % (row["id"], key))
            # Attributed figures: one decimal; money: the configured currency
            self.assertRegex(row["leads"][1], r"^\d+[.,]\d$")
            self.assertIn("€", row["revenue"][1])
        return {r["campaign"]: r["leads"] for r in report["campaigns"]}

    # ------------------------------------------------------------ test --
    def test_dashboard_follows_the_api(self):
        os.makedirs(ARTIFACTS, exist_ok=True)
        with cdp.Browser(width=1280, height=900) as b:
            # A time zone half an hour off UTC: local days do not start on UTC hours
            b.call("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
            b.navigate("http://%s/" % self.topology.http())
            b.wait("document.readyState === 'complete'", 15)
            # One code path: no browser detection in the page at all
            html = b.eval("document.documentElement.outerHTML")
            self.assertNotIn("HeadlessChrome", html)
            self.assertNotIn("navigator.userAgent", html)
            b.wait("document.getElementById('status').className === 'live'", 15, "live stream")

            # The default range (7 days, hourly) against the API
            start, end, step, loaded = self.wait_loaded(b)
            self.assertEqual(step, "hour")
            self.assertEqual(end - start + 1, 7 * DAY)
            week = self.api_totals(start, end, step)
            self.check_funnel(b, "r-", week)
            self.assertEqual(week["leads"], 5)          # 3 days ago and today
            # The chart drew a line for the shown stages, and the previous period
            self.assertTrue(b.eval("document.querySelectorAll('#trend polyline[data-series=leads]').length === 1"))
            self.assertTrue(b.eval("document.querySelectorAll('#trend polyline[data-series=\"leads-previous\"]').length === 1"))
            b.screenshot(os.path.join(ARTIFACTS, "dashboard-7d.png"))

            # 30 days, daily: other numbers, still the API's
            b.click("#range-30d")
            start, end, step, loaded = self.wait_loaded(b, loaded)
            self.assertEqual(step, "day")
            month = self.api_totals(start, end, step)
            self.check_funnel(b, "r-", month)
            self.assertEqual(month["leads"], 9)
            self.assertNotEqual(month["leads"], week["leads"])
            self.assertEqual(b.eval("Number(document.getElementById('r-revenue').dataset.value)"),
                             month["revenue"] - month["revenue_expansion"])
            # Previous period shown beside each stage
            prev = self.api_totals(2 * start - end - 1, start - 1, step)
            self.assertEqual(b.eval("Number(document.querySelector('#r-leads .delta').dataset.previous)"),
                             prev["leads"])

            # Attribution models change the campaign figures to the API's
            self.select_model(b, "first_touch")
            first = self.check_campaigns(b, "first_touch")
            self.select_model(b, "linear")
            linear = self.check_campaigns(b, "linear")
            self.assertNotEqual(first["c2"], linear["c2"])      # shared contacts

            # Sorting: by reach descending, then ascending
            b.click("#campaigns-table th[data-key=reach]")
            b.wait("document.querySelector('#campaigns-table th[data-key=reach]').getAttribute('aria-sort')"
                   " === 'descending'", 5)
            reach = [float(r["reach"][0]) for r in self.campaign_rows(b)]
            self.assertEqual(reach, sorted(reach, reverse=True))
            b.click("#campaigns-table th[data-key=reach]")
            b.wait("document.querySelector('#campaigns-table th[data-key=reach]').getAttribute('aria-sort')"
                   " === 'ascending'", 5)
            reach = [float(r["reach"][0]) for r in self.campaign_rows(b)]
            self.assertEqual(reach, sorted(reach))
            self.assertNotEqual(reach[0], reach[-1])
            b.click("#campaigns-table th[data-key=campaign]")
            b.wait("document.querySelector('#campaigns-table th[data-key=campaign]').getAttribute('aria-sort')"
                   " === 'ascending'", 5)
            self.assertEqual([r["id"] for r in self.campaign_rows(b)], ["c1", "c2", "c3"])
            # The latency table sorts too, and stays sorted as the stream re-renders it
            b.click("#latency-table th:nth-child(4)")
            b.wait("document.querySelector('#latency-table th:nth-child(4)').getAttribute('aria-sort')"
                   " === 'descending'", 5)
            time.sleep(1.2)
            samples = b.eval("[...document.querySelectorAll('#latency tr')].map((tr) =>"
                             " Number(tr.children[3].dataset.value))")
            self.assertEqual(samples, sorted(samples, reverse=True))
            self.assertGreater(samples[0], samples[-1])

            # Drill-down: c1's own funnel for the range, from the API
            b.click("#campaign-c1")
            b.wait("!document.getElementById('drill').hidden", 5)
            start, end, step, loaded = self.wait_loaded(b, loaded)
            self.assertTrue(loaded.endswith(":c1"))
            self.check_funnel(b, "d-", self.api_totals(start, end, step, "c1"))
            self.assertTrue(b.eval("document.querySelectorAll('#drill-trend polyline').length > 0"))
            b.screenshot(os.path.join(ARTIFACTS, "dashboard-30d-drill.png"))

            # Today (local midnight in UTC+05:30, so from is 30 min past a UTC
            # hour): the buckets are still UTC hours, and the page says so
            self.assertIn("UTC+05:30", b.eval("document.getElementById('tz-note').textContent"))
            b.click("#range-today")
            start, end, step, loaded = self.wait_loaded(b, loaded)
            self.assertEqual(step, "hour")
            self.assertEqual((start + 5 * HOUR + HOUR // 2) % DAY, 0)   # midnight in Kolkata
            self.check_funnel(b, "r-", self.api_totals(start, end, step))
            self.assertIn("UTC hour", b.eval("document.getElementById('range').textContent"))

            # Quarter: still exact
            b.click("#range-quarter")
            start, end, step, loaded = self.wait_loaded(b, loaded)
            self.check_funnel(b, "r-", self.api_totals(start, end, step))

            # 400 px wide: nothing wider than the screen (tables scroll inside)
            b.resize(400, 900)
            b.wait("window.innerWidth === 400", 5)
            time.sleep(0.3)
            self.assertLessEqual(b.eval("document.documentElement.scrollWidth"), 400)
            self.assertTrue(b.eval("""[...document.querySelectorAll('#range-funnel .count')].every((e) => {
                const r = e.getBoundingClientRect(); return r.right <= 400 && r.width > 0; })"""))
            b.screenshot(os.path.join(ARTIFACTS, "dashboard-400px.png"))
        for name in ("dashboard-7d.png", "dashboard-30d-drill.png", "dashboard-400px.png"):
            with open(os.path.join(ARTIFACTS, name), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


if __name__ == "__main__":
    unittest.main()
