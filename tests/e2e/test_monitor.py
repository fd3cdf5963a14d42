"""funnel-monitor end to end: real redis-server, real service daemons (or
funnel-testsvc standing in for a service when a daemon is not built), the
monitor's HTTP API, Prometheus text, SSE, its telemetry PUB, restarts, and
the dashboard rendered by a real headless Chromium."""
import http.client
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import msgpack

from funnel_e2e import BUILD, FunnelTestCase, Subscriber, event, wait_until

STAGES = ["reached", "engaged", "leads", "mql", "sql", "deals", "won", "customers", "repeat"]
SERVICES = ["campaign", "leads", "sales", "retention"]
# Which STATS counter each stage is (services/README.md)
STAGE_COUNTER = {"reached": ("campaign", "reached"), "engaged": ("campaign", "engaged"),
                 "leads": ("leads", "leads"), "mql": ("leads", "mql"), "sql": ("leads", "sql"),
                 "deals": ("sales", "deals"), "won": ("sales", "won"), "lost": ("sales", "lost"),
                 "customers": ("retention", "customers"), "repeat": ("retention", "repeat")}


def built(name):
    path = os.path.join(BUILD, "services", name, "funnel-%s" % name)
    return os.path.exists(path)


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class MonitorCase(FunnelTestCase):
    def start_monitor(self, args=None):
        self.monitor = self.daemon("monitor", args=args)
        wait_until(lambda: self.get("/api/funnel")[0] == 200, what="monitor http")
        return self.monitor

    def get(self, path, timeout=5):
        url = "http://%s%s" % (self.topology.http(), path)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def funnel(self):
        status, _, body = self.get("/api/funnel")
        self.assertEqual(status, 200)
        return json.loads(body)

    def counts(self, doc=None):
        doc = doc or self.funnel()
        return {s["name"]: s["count"] for s in doc["stages"]}

    def start_services(self, names=SERVICES):
        """Real daemons where built, else skip: the funnel needs them."""
        missing = [n for n in names if not built(n)]
        if missing:
            self.skipTest("service daemons not built: %s" % ", ".join(missing))
        for n in names:
            self.daemon(n)
        for n in names:
            self.wait_ready(n)

    def stats_counts(self):
        out = {}
        cache = {}
        for stage, (svc, counter) in STAGE_COUNTER.items():
            if svc not in cache:
                cache[svc] = self.stats(svc)
            out[stage] = cache[svc].get(counter, 0)
        return out

    def drive_funnel(self, n_contacts=6):
        """Touches on campaign and captures on leads: reached, engaged, leads."""
        camp = self.client("campaign")
        camp.ok("PUBLISH", event("campaign.upsert", {"campaign": "c1", "name": "Spring",
                                                     "channel": "social"}))
        for i in range(n_contacts):
            kind = "impression" if i % 2 else "click"
            camp.ok("PUBLISH", event("touch", {"campaign": "c1", "kind": kind,
                                               "contact": "p%d" % i}))
        leads = self.client("leads")
        for i in range(n_contacts // 2):
            leads.ok("PUBLISH", event("lead.capture", {"lead": "p%d" % i, "campaign": "c1"}))
        # A qualified lead: BANT plus a form and clicks reach SQL, then sales
        leads.ok("PUBLISH", event("lead.capture", {
            "lead": "hot", "campaign": "c1", "email": "hot@example.com",
            "attrs": {"budget": 50000, "authority": True, "need": True, "timeline_days": 30}}))
        for kind in ["form"] + ["click"] * 5:
            camp.ok("PUBLISH", event("touch", {"campaign": "c1", "kind": kind, "contact": "hot"}))

    def wait_counts_match_stats(self, timeout=15):
        def same():
            expected = self.stats_counts()
            got = self.counts()
            return got == expected and expected
        return wait_until(same, timeout, interval=0.2, what="monitor counts == STATS")


class TestMonitorAlone(MonitorCase):
    """No service running: everything shown as down, nothing breaks."""

    def setUp(self):
        super().setUp()
        self.start_monitor()

    def test_api_shape_with_services_down(self):
        doc = self.funnel()
        self.assertEqual([s["name"] for s in doc["stages"]], STAGES + ["lost"])
        for s in doc["stages"]:
            self.assertEqual(s["count"], 0)
        self.assertEqual(sorted(doc["services"]), sorted(SERVICES))
        for svc in SERVICES:
            h = doc["services"][svc]
            self.assertFalse(h["up"])
            for key in ("last_heartbeat", "seq", "lag", "events_per_s"):
                self.assertIn(key, h)
        self.assertIn("rates", doc)
        self.assertEqual(doc["lost"], 0)

    def test_metrics_exposition(self):
        status, headers, text = self.get("/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"))
        for stage in STAGES + ["lost"]:
            self.assertIn('funnel_stage_count{stage="%s"} 0\n' % stage, text)
        for svc in SERVICES:
            self.assertIn('funnel_service_up{service="%s"} 0\n' % svc, text)
        self.assertIn("# TYPE funnel_stage_latency_seconds histogram\n", text)
        self.assertIn('funnel_stage_latency_seconds_bucket{stage="won",le="+Inf"} 0\n', text)
        # Every sample line belongs to a family declared with HELP and TYPE
        families = set(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        declared = {name for name, _ in families}
        helped = set(re.findall(r"^# HELP (\S+) ", text, re.M))
        self.assertEqual(declared, helped)
        for line in text.splitlines():
            if line.startswith("#") or not line:
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
            self.assertTrue(m, line)
            name = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
            self.assertTrue(m.group(1) in declared or name in declared, line)
            float(m.group(3).replace("+Inf", "inf").replace("NaN", "nan"))
        for name, kind in families:
            if kind == "counter":
                self.assertTrue(name.endswith("_total"), name)

    def test_sse_sends_the_funnel_on_connect_and_every_second(self):
        host, port = self.topology.http().split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/events")
        r = conn.getresponse()
        self.assertEqual(r.status, 200)
        self.assertTrue(r.getheader("Content-Type").startswith("text/event-stream"))
        started = time.time()
        docs = []
        while len(docs) < 3:
            line = r.fp.readline().decode()
            if line.startswith("data: "):
                docs.append(json.loads(line[6:]))
        conn.close()
        self.assertLess(time.time() - started, 3.5)
        self.assertEqual([s["name"] for s in docs[0]["stages"]][:9], STAGES)

    def test_dashboard_is_self_contained(self):
        status, headers, html = self.get("/")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/html"))
        self.assertIn("/api/funnel", html)
        self.assertIn("/events", html)
        # Nothing from the network: no external scripts, styles, fonts or images
        self.assertIsNone(re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html))
        self.assertNotIn("@import", html)
        self.assertIsNone(re.search(r"url\(\s*['\"]?(https?:)?//", html))

    def test_unknown_path_and_method(self):
        self.assertEqual(self.get("/nope")[0], 404)
        req = urllib.request.Request("http://%s/api/funnel" % self.topology.http(), method="POST",
                                     data=b"x")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=5)
        self.assertEqual(cm.exception.code, 405)

    def test_sigterm_exits_zero_even_with_open_streams(self):
        host, port = self.topology.http().split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/events")
        conn.getresponse().fp.readline()
        self.assertEqual(self.monitor.stop(timeout=5), 0)
        conn.close()

    def test_telemetry_pub(self):
        sub = Subscriber(self.topology.pub("monitor"), b"funnel.metrics")
        try:
            topic, body = sub.recv(timeout=4)
        finally:
            sub.close()
        self.assertEqual(topic, "funnel.metrics")
        self.assertEqual([s["name"] for s in body["stages"]][:9], STAGES)
        self.assertIn("services", body)


class TestMonitorHelp(unittest.TestCase):
    def test_help_and_bad_flag(self):
        from funnel_e2e import binary
        out = subprocess.run([binary("funnel-monitor"), "--help"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0)
        self.assertIn("--http", out.stdout)
        out = subprocess.run([binary("funnel-monitor"), "--bogus"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 2)


class TestMonitorWithStandIn(MonitorCase):
    """funnel-testsvc under the campaign name: health, seq, lag, rates and
    heartbeats without depending on the domain services."""

    def test_health_rates_and_down_detection(self):
        svc = self.daemon("campaign", "funnel-testsvc", env={"FUNNEL_TESTSVC_NAME": "campaign"})
        api = self.wait_ready("campaign")
        self.start_monitor()
        wait_until(lambda: self.funnel()["services"]["campaign"]["up"], what="campaign up")
        for i in range(50):
            api.ok("PUBLISH", event("test.add", {"key": "k%d" % (i % 5), "n": 1}))
        seq = api.ok("PING")["seq"]

        def caught_up():
            h = self.funnel()["services"]["campaign"]
            return h["seq"] == seq and h["position"] == seq and h["lag"] == 0 and h
        h = wait_until(caught_up, what="monitor at campaign's seq")
        self.assertEqual(h["redis"], "ok")
        self.assertIsNotNone(h["last_heartbeat"])
        self.assertLess(h["heartbeat_age_ms"], 3000)
        self.assertEqual(h["counters"]["accepted"], 50)
        # The rate window saw the 50 events
        rates = []
        wait_until(lambda: rates.append(self.funnel()["rates"]["campaign"]) or max(rates) > 0,
                   what="a rate above zero")
        self.assertIn('funnel_service_up{service="campaign"} 1', self.get("/metrics")[2])
        self.assertFalse(self.funnel()["services"]["leads"]["up"])
        # Down is noticed; the counters stay as they were
        svc.stop()
        wait_until(lambda: not self.funnel()["services"]["campaign"]["up"], what="campaign down")
        self.assertEqual(self.funnel()["services"]["campaign"]["counters"]["accepted"], 50)
        # And back up: the stream goes on from the service's seq
        svc.start()
        self.wait_ready("campaign")
        api = self.client("campaign")
        api.ok("PUBLISH", event("test.add", {"key": "z", "n": 1}))
        wait_until(lambda: self.funnel()["services"]["campaign"]["position"] == seq + 1,
                   what="stream resumed after restart")


class TestMonitorFunnel(MonitorCase):
    """The real four services: exact counts equal to STATS, surviving restarts."""

    def setUp(self):
        super().setUp()
        self.start_services()
        self.start_monitor()

    def test_counts_conversion_latency_and_restarts(self):
        self.drive_funnel()
        counts = self.wait_counts_match_stats()
        self.assertGreater(counts["reached"], 0)
        self.assertGreater(counts["leads"], 0)
        doc = self.funnel()
        # Conversion between adjacent stages
        by_name = {s["name"]: s for s in doc["stages"]}
        if counts["reached"]:
            self.assertAlmostEqual(by_name["engaged"]["conversion"],
                                   counts["engaged"] / counts["reached"], places=6)
        for svc in SERVICES:
            self.assertTrue(doc["services"][svc]["up"], svc)
        # Latency from the live events (or their gap-recovery replay, which
        # can take a heartbeat, ~1 s, if they raced the monitor's first catch-up)
        lat = wait_until(lambda: {s["name"]: s for s in self.funnel()["stages"]}
                         ["reached"]["latency_ms"], what="reached latency")
        self.assertGreaterEqual(lat["p99"], lat["p50"])
        self.assertGreaterEqual(lat["p50"], 0)
        metrics = self.get("/metrics")[2]
        for stage, n in counts.items():
            self.assertIn('funnel_stage_count{stage="%s"} %d\n' % (stage, n), metrics)
        self.assertRegex(metrics, r'funnel_stage_latency_seconds_count\{stage="reached"\} [1-9]')

        # The telemetry PUB carries the same figures
        sub = Subscriber(self.topology.pub("monitor"), b"funnel.metrics")
        try:
            topic, body = sub.recv(timeout=4)
        finally:
            sub.close()
        self.assertEqual({st["name"]: st["count"] for st in body["stages"]}, counts)

        # The monitor restarted: the same exact counts straight away
        self.monitor.kill9()
        self.start_monitor()
        wait_until(lambda: self.counts() == counts, what="same counts after monitor restart")

        # A service restarted (kill -9): its counts come back exactly
        leads = self.daemons[1]
        self.assertEqual(leads.name, "leads")
        leads.kill9()
        wait_until(lambda: not self.funnel()["services"]["leads"]["up"], what="leads down")
        self.assertEqual(self.counts(), counts)      # last known counts kept while down
        leads.start()
        self.wait_ready("leads")
        wait_until(lambda: self.funnel()["services"]["leads"]["up"], what="leads back up")
        self.assertEqual(self.counts(), counts)
        # New events after all that are counted too
        self.client("leads").ok("PUBLISH", event("lead.capture", {"lead": "late-1"}))
        self.wait_counts_match_stats()
        self.assertEqual(self.counts()["leads"], counts["leads"] + 1)

    def test_sse_update_follows_a_change(self):
        host, port = self.topology.http().split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/events")
        r = conn.getresponse()

        def next_doc():
            while True:
                line = r.fp.readline().decode()
                if line.startswith("data: "):
                    return json.loads(line[6:])
        first = next_doc()
        before = {s["name"]: s["count"] for s in first["stages"]}["leads"]
        self.client("leads").ok("PUBLISH", event("lead.capture", {"lead": "sse-1"}))
        deadline = time.time() + 5
        while time.time() < deadline:
            doc = next_doc()
            if {s["name"]: s["count"] for s in doc["stages"]}["leads"] == before + 1:
                break
        else:
            self.fail("no SSE update with the new lead")
        conn.close()

    def test_dashboard_in_headless_chromium(self):
        browser = chromium()
        if not browser:
            self.skipTest("chromium not installed (apt-get install -y chromium)")
        self.drive_funnel()
        counts = self.wait_counts_match_stats()
        # The campaign report is fetched every 2 s (300 ms allowed): on a
        # loaded machine the page could otherwise see the one from before c1
        wait_until(lambda: any(r.get("campaign") == "c1"
                               for r in (self.funnel().get("campaigns") or {}).get("campaigns", [])),
                   15, what="the campaign report with c1")
        profile = tempfile.mkdtemp(prefix="funnel-chromium-")
        try:
            out = subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--user-data-dir=%s" % profile, "--virtual-time-budget=3000",
                 "--dump-dom", "http://%s/" % self.topology.http()],
                capture_output=True, text=True, timeout=90)
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        dom = out.stdout
        self.assertIn('id="funnel"', dom)
        for stage in STAGES:
            m = re.search(r'id="count-%s" data-count="(\d+)"' % stage, dom)
            self.assertTrue(m, "stage %s not rendered" % stage)
            self.assertEqual(int(m.group(1)), counts[stage], stage)
        self.assertRegex(dom, r'id="status" class="live"')
        self.assertRegex(dom, r'id="service-leads"><td>leads</td><td class="up">up')
        # The campaign report made it into the per-campaign table and the
        # channel x audience matrix
        self.assertIn('id="campaign-c1"', dom)
        self.assertRegex(dom, r'<div id="matrix"[^>]*><table>.*social')


if __name__ == "__main__":
    unittest.main()
