"""funnel-campaign end to end (proto/campaign.md): real redis-server, the
real daemon, real sockets.

The upstream stages (leads, sales, retention) are played by UpstreamPeer,
a small outside publisher that speaks the wire contract (PUB with seq and
heartbeats, REPLAY on its API), so conversions with exact timestamps and
amounts can be fed in; TestWithRealUpstreams runs the real funnel-leads and
funnel-sales when they are built.
"""
import math
import os
import threading
import time
import unittest

import msgpack
import zmq

from funnel_e2e import BUILD, Client, FunnelTestCase, event, wait_until

DAY = 86400000
T0 = 1767225600000          # 2026-01-01, event time of the scripted touches
MODELS = ["first_touch", "last_touch", "linear", "position", "time_decay"]


class UpstreamPeer:
    """An upstream service as the contract defines it: its own thread owns a
    ROUTER (PING, REPLAY) and a PUB (events with contiguous seq, `$hb`)."""

    def __init__(self, svc, api, pub):
        self.svc = svc
        self.events = []
        self.lock = threading.Lock()
        self.pending = []
        self.running = True
        self.ctx = zmq.Context.instance()
        self.api, self.pub = api, pub
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def publish(self, etype, data, ts=None, eid=None):
        with self.lock:
            seq = len(self.events) + 1
            ev = {"v": 1, "id": eid or "%s-up-%d" % (self.svc, seq), "type": etype,
                  "ts": ts if ts is not None else int(time.time() * 1000),
                  "src": self.svc, "svc": self.svc, "seq": seq, "data": data}
            self.events.append(ev)
            self.pending.append(ev)
        return ev

    def _run(self):
        router = self.ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(self.api)
        pub = self.ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind(self.pub)
        last_hb = 0
        while self.running:
            if router.poll(20):
                frames = router.recv_multipart()
                ident, rest = frames[0], frames[1:]
                delim = [b""] if rest and rest[0] == b"" else []
                rest = rest[len(delim):]
                verb = rest[0].decode() if rest else ""
                if verb == "REPLAY":
                    req = msgpack.unpackb(rest[1], raw=False)
                    start, limit = req["from"], min(req.get("limit", 1000), 1000)
                    with self.lock:
                        evs = [e for e in self.events if e["seq"] >= start][:limit]
                        nxt = evs[-1]["seq"] + 1 if evs else start
                        body = {"events": evs, "next": nxt, "first": 1 if self.events else nxt}
                    router.send_multipart([ident] + delim + [b"OK", msgpack.packb(body)])
                else:
                    body = {"svc": self.svc, "version": "peer", "seq": len(self.events),
                            "redis": "ok", "uptime_s": 0}
                    router.send_multipart([ident] + delim + [b"OK", msgpack.packb(body)])
            with self.lock:
                out, self.pending = self.pending, []
                seq = len(self.events)
            for ev in out:
                pub.send_multipart([ev["type"].encode(), msgpack.packb(ev)])
            if time.time() - last_hb > 0.2:
                last_hb = time.time()
                pub.send_multipart([b"$hb", msgpack.packb(
                    {"svc": self.svc, "seq": seq, "ts": int(time.time() * 1000)})])
        router.close(0)
        pub.close(0)

    def stop(self):
        self.running = False
        self.thread.join(5)


def upsert(cid, channel="email", name=None, **extra):
    data = {"campaign": cid, "name": name or "Campaign " + cid, "channel": channel}
    data.update(extra)
    return event("campaign.upsert", data)


def touch(cid, kind="click", contact=None, ts=None, eid=None, **extra):
    data = {"campaign": cid, "kind": kind}
    if contact is not None:
        data["contact"] = contact
    data.update(extra)
    return event("touch", data, eid=eid, ts=ts)


class CampaignCase(FunnelTestCase):
    """The campaign daemon with peers in place of its three upstreams."""

    peers_for = ("leads", "sales", "retention")

    def setUp(self):
        super().setUp()
        self.peers = {}
        for svc in self.peers_for:
            self.peers[svc] = UpstreamPeer(svc, self.topology.api(svc), self.topology.pub(svc))
        self.start_upstreams()
        self.campaign = self.daemon("campaign")
        self.api = self.wait_ready("campaign")

    def start_upstreams(self):
        """Real upstream daemons, started before campaign (a missing upstream
        makes the runtime wait 2 s per REPLAY try, stalling the API)."""

    def tearDown(self):
        for p in self.peers.values():
            p.stop()
        super().tearDown()

    def ok(self, body):
        return self.api.ok("PUBLISH", body)

    def err(self, body):
        status, reply = self.api.call("PUBLISH", body)
        self.assertEqual(status, "ERR", (body, reply))
        return reply

    def get(self, **req):
        return self.api.ok("GET", req)

    def counters(self):
        return self.stats("campaign")

    def outputs(self):
        return self.api.ok("REPLAY", {"from": 1, "limit": 1000})["events"]

    def wait_consumed(self, n):
        wait_until(lambda: self.counters().get("consumed", 0) + self.counters().get(
            "consume_rejected", 0) >= n, timeout=10, what="%d consumed" % n)


class TestCampaigns(CampaignCase):
    def test_upsert_get_and_update(self):
        # The monitor's stage counters are in STATS from a fresh start, as 0
        fresh = self.counters()
        self.assertEqual((fresh.get("reached"), fresh.get("engaged")), (0, 0), fresh)
        aud = {"age_min": 18, "age_max": 24, "regions": ["US", "CA"], "interests": ["Gaming"]}
        self.ok(upsert("spring", "social", name="Spring launch", platform="tiktok",
                       audience=dict(aud, colour="red"), budget=500000))
        c = self.get(kind="campaign", id="spring")
        self.assertEqual((c["campaign"], c["name"], c["channel"], c["platform"], c["status"]),
                         ("spring", "Spring launch", "social", "tiktok", "active"))
        self.assertEqual((c["budget"], c["spend"], c["reach"], c["engaged"]), (500000, 0, 0, 0))
        self.assertEqual(c["audience"], aud)
        self.assertEqual(c["segment"], "18-24/us/gaming")
        self.assertEqual(set(c["attribution"]), set(MODELS))
        # Update: absent optional fields keep their value; status changes
        self.ok(upsert("spring", "video", name="Spring v2", status="paused"))
        c = self.get(kind="campaign", id="spring")
        self.assertEqual((c["name"], c["channel"], c["status"], c["platform"], c["budget"]),
                         ("Spring v2", "video", "paused", "tiktok", 500000))
        self.assertEqual(c["audience"], aud)
        # An empty audience clears it: everyone, segment any/any/any
        self.ok(upsert("spring", "video", name="Spring v2", audience={}))
        c = self.get(kind="campaign", id="spring")
        self.assertNotIn("audience", c)
        self.assertEqual((c["segment"], c["status"]), ("any/any/any", "paused"))
        evs = self.outputs()
        self.assertEqual([e["type"] for e in evs], ["campaign.updated"] * 3)
        self.assertEqual(evs[0]["data"], {"campaign": "spring", "name": "Spring launch",
                                          "channel": "social", "status": "active",
                                          "segment": "18-24/us/gaming", "created": True})
        self.assertEqual((evs[1]["data"]["status"], evs[1]["data"]["created"]), ("paused", False))
        self.assertEqual([e["seq"] for e in evs], [1, 2, 3])
        self.assertEqual(self.counters()["campaigns"], 1)

    def test_upsert_validation_changes_nothing(self):
        self.ok(upsert("c1"))
        base = {"campaign": "c1", "name": "n", "channel": "email"}
        cases = [
            ({k: v for k, v in base.items() if k != "campaign"}, "data.campaign"),
            (dict(base, campaign="bad id!"), "data.campaign"),
            (dict(base, campaign="x" * 65), "data.campaign"),
            ({k: v for k, v in base.items() if k != "name"}, "data.name"),
            (dict(base, name=""), "data.name"),
            (dict(base, name=7), "data.name"),
            (dict(base, channel="tv"), "data.channel"),
            ({k: v for k, v in base.items() if k != "channel"}, "data.channel"),
            (dict(base, platform=""), "data.platform"),
            (dict(base, status="live"), "data.status"),
            (dict(base, budget=-1), "data.budget"),
            (dict(base, budget=1.5), "data.budget"),
            (dict(base, budget=10 ** 14), "data.budget"),
            (dict(base, audience=[]), "data.audience"),
            (dict(base, audience={"age_min": -1}), "data.audience.age_min"),
            (dict(base, audience={"age_max": 151}), "data.audience.age_max"),
            (dict(base, audience={"age_min": "18"}), "data.audience.age_min"),
            (dict(base, audience={"regions": "US"}), "data.audience.regions"),
            (dict(base, audience={"interests": [1]}), "data.audience.interests"),
            (dict(base, audience={"age_min": 30, "age_max": 20}), "data.audience.age_min"),
        ]
        for data, field in cases:
            err = self.err(event("campaign.upsert", data))
            self.assertEqual(err["code"], "invalid", (data, err))
            self.assertIn(field, err["message"], (data, err))
        # Consumed and published types are not accepted by PUBLISH
        for etype in ("lead.captured", "lead.mql", "lead.sql", "deal.won", "customer.at_risk",
                      "customer.churned", "prospect.touched", "campaign.updated"):
            err = self.err(event(etype, {"lead": "L1", "customer": "L1"}))
            self.assertEqual(err["code"], "unknown_type", etype)
            self.assertIn("type", err["message"])
        # An ended campaign cannot be reopened
        self.ok(upsert("c1", status="ended"))
        err = self.err(upsert("c1", status="active"))
        self.assertEqual(err["code"], "conflict")
        self.assertIn("status", err["message"])
        self.assertIn("ended", err["message"])
        self.ok(upsert("c1", name="still ended"))      # status absent: stays ended
        c = self.get(kind="campaign", id="c1")
        self.assertEqual((c["status"], c["name"]), ("ended", "still ended"))
        self.assertEqual(self.counters()["accepted"], 3)
        self.assertEqual(len(self.outputs()), 3)

    def test_spend(self):
        self.ok(upsert("c1", budget=1000))
        self.ok(event("campaign.spend", {"campaign": "c1", "amount": 250}))
        self.ok(event("campaign.spend", {"campaign": "c1", "amount": 0}))
        self.ok(event("campaign.spend", {"campaign": "c1", "amount": 300}))
        for data, code, field in [
                ({"campaign": "c1", "amount": -5}, "invalid", "data.amount"),
                ({"campaign": "c1", "amount": "10"}, "invalid", "data.amount"),
                ({"campaign": "c1", "amount": 2.5}, "invalid", "data.amount"),
                ({"campaign": "c1"}, "invalid", "data.amount"),
                ({"amount": 5}, "invalid", "data.campaign"),
                ({"campaign": "nope", "amount": "x"}, "invalid", "data.amount"),
                ({"campaign": "nope", "amount": 5}, "not_found", "campaign")]:
            err = self.err(event("campaign.spend", data))
            self.assertEqual(err["code"], code, (data, err))
            self.assertIn(field, err["message"])
        self.assertEqual(self.get(kind="campaign", id="c1")["spend"], 550)
        self.assertEqual(self.counters()["spend"], 550)
        report = self.get(kind="report")
        self.assertEqual(report["campaigns"][0]["spend"], 550)
        self.assertEqual(report["segments"][0]["spend"], 550)
        self.assertEqual(report["totals"]["spend"], 550)


class TestTouches(CampaignCase):
    def test_reach_and_engagement_are_exact(self):
        aud = {"age_min": 18, "age_max": 24, "regions": ["us"]}
        self.ok([upsert("a", "social", audience=aud), upsert("b", "email")])
        young = {"age": 20, "region": "US"}
        batch = [
            touch("a", "impression", "L1", attrs=young),   # L1 reached, in audience
            touch("a", "impression", "L1", attrs=young),   # again: no new reach
            touch("a", "click", "L1", attrs={"age": 40, "region": "us"}),  # engaged, out
            touch("a", "impression", "L2"),                # reached only, no attrs: out
            touch("b", "open", "L2"),                      # engaged via b
            touch("b", "form", "L3", utm={"source": "newsletter"}),
            touch("a", "impression"),                      # anonymous impressions
            touch("a", "impression"),
            touch("b", "click"),                           # anonymous, not an impression
        ]
        self.assertEqual(self.ok(batch), {"accepted": 9, "duplicates": 0})
        c = self.counters()
        self.assertEqual((c["reached"], c["engaged"], c["touches"]), (3, 3, 9))
        self.assertEqual((c["anonymous"], c["anonymous_impressions"]), (3, 2))
        a = self.get(kind="campaign", id="a")
        b = self.get(kind="campaign", id="b")
        self.assertEqual((a["reach"], a["engaged"], a["touches"]), (2, 1, 6))
        self.assertEqual((a["anonymous"], a["anonymous_impressions"], a["in_audience"]), (2, 2, 2))
        self.assertEqual((b["reach"], b["engaged"], b["anonymous"], b["in_audience"]), (2, 2, 1, 3))
        seg = {(r["channel"], r["segment"]): r for r in self.get(kind="report")["segments"]}
        self.assertEqual((seg["social", "18-24/us/any"]["reach"], seg["social", "18-24/us/any"]["engaged"]),
                         (2, 1))
        self.assertEqual(seg["email", "any/any/any"]["reach"], 2)
        # prospect.touched for identified touches only, with in_audience
        touched = [e["data"] for e in self.outputs() if e["type"] == "prospect.touched"]
        self.assertEqual(len(touched), 6)
        self.assertEqual(touched[0], {"contact": "L1", "campaign": "a", "channel": "social",
                                      "kind": "impression", "in_audience": True,
                                      "segment": "18-24/us/any", "at": batch[0]["ts"]})
        self.assertEqual([t["in_audience"] for t in touched], [True, True, False, False, True, True])
        # Replaying the batch changes nothing
        self.assertEqual(self.ok(batch), {"accepted": 0, "duplicates": 9})
        self.assertEqual(self.counters()["reached"], 3)

    def test_touch_validation_and_state(self):
        self.ok([upsert("a"), upsert("d", status="draft")])
        cases = [
            ({"kind": "click"}, "invalid", "data.campaign"),
            ({"campaign": "a"}, "invalid", "data.kind"),
            ({"campaign": "a", "kind": "poke"}, "invalid", "data.kind"),
            ({"campaign": "a", "kind": "click", "contact": ""}, "invalid", "data.contact"),
            ({"campaign": "a", "kind": "click", "contact": "a b"}, "invalid", "data.contact"),
            ({"campaign": "a", "kind": "click", "attrs": "x"}, "invalid", "data.attrs"),
            ({"campaign": "a", "kind": "click", "attrs": {"age": 200}}, "invalid", "data.attrs.age"),
            ({"campaign": "a", "kind": "click", "attrs": {"age": 2.5}}, "invalid", "data.attrs.age"),
            ({"campaign": "a", "kind": "click", "attrs": {"region": 5}}, "invalid", "data.attrs.region"),
            ({"campaign": "a", "kind": "click", "attrs": {"interests": "x"}}, "invalid",
             "data.attrs.interests"),
            ({"campaign": "a", "kind": "click", "utm": {"source": 5}}, "invalid", "data.utm.source"),
            # malformed and naming an unknown campaign: invalid first
            ({"campaign": "zz", "kind": "poke"}, "invalid", "data.kind"),
            ({"campaign": "zz", "kind": "click", "contact": "L1"}, "not_found", "campaign"),
            ({"campaign": "d", "kind": "click", "contact": "L1"}, "conflict", "draft"),
        ]
        for data, code, field in cases:
            err = self.err(event("touch", data))
            self.assertEqual(err["code"], code, (data, err))
            self.assertIn(field, err["message"], (data, err))
        c = self.counters()
        self.assertEqual((c.get("touches", 0), c.get("reached", 0), c["accepted"]), (0, 0, 2))
        # A paused or ended campaign still takes (late) touches
        self.ok(upsert("a", status="ended"))
        self.ok(touch("a", "click", "L1"))
        self.assertEqual(self.counters()["reached"], 1)

    def test_batch_all_or_nothing_and_duplicates(self):
        self.ok(upsert("a"))
        batch = [upsert("b", "social"), touch("b", "click", "L1"), touch("a", "click", "L2"),
                 touch("nope", "click", "L3")]
        err = self.err(batch)
        self.assertEqual((err["code"], err["index"]), ("not_found", 3))
        self.assertIn("nope", err["message"])
        status, _ = self.api.call("GET", {"kind": "campaign", "id": "b"})
        self.assertEqual(status, "ERR")
        self.assertEqual(self.counters().get("reached", 0), 0)
        self.assertEqual(self.get(kind="campaign", id="a")["touches"], 0)
        # A shape error later in the batch: invalid with its index, nothing applied
        err = self.err([touch("a", "click", "L2"), touch("a", "click", "L2", attrs={"age": -1})])
        self.assertEqual((err["code"], err["index"]), ("invalid", 1))
        self.assertEqual(self.get(kind="campaign", id="a")["touches"], 0)
        # Later events see earlier ones: the campaign created first takes the touch
        good = batch[:3]
        dup = touch("a", "click", "L2")
        self.assertEqual(self.ok(good + [dup, dup]), {"accepted": 4, "duplicates": 1})
        self.assertEqual(self.ok(good), {"accepted": 0, "duplicates": 3})
        self.assertEqual(self.api.ok("PUBLISH", dup), {"id": dup["id"], "duplicate": True})
        c = self.counters()
        self.assertEqual((c["reached"], c["engaged"], c["touches"], c["duplicates"]), (2, 2, 3, 5))
        self.assertEqual(self.get(kind="campaign", id="a")["reach"], 1)

    def test_get_kinds_validation(self):
        self.ok(upsert("a"))
        for req, code, field in [
                ({"kind": "campaign"}, "invalid", "id"),
                ({"kind": "campaign", "id": "bad id"}, "invalid", "id"),
                ({"kind": "campaign", "id": "zz"}, "not_found", "zz"),
                ({"kind": "report", "model": "u_shaped"}, "invalid", "model"),
                ({"kind": "report", "campaign": 5}, "invalid", "campaign"),
                ({"kind": "report", "campaign": "zz"}, "not_found", "campaign"),
                ({"kind": "recommend", "stage": "deal"}, "invalid", "stage"),
                ({"kind": "recommend", "segment": 5}, "invalid", "segment"),
                ({"kind": "recommend", "audience": {"age_min": "x"}}, "invalid", "audience.age_min"),
                ({"kind": "recommend", "model": "best"}, "invalid", "model"),
                ({"kind": "winback", "limit": 0}, "invalid", "limit"),
                ({"kind": "winback", "limit": 1001}, "invalid", "limit"),
                ({"kind": "winback", "offset": -1}, "invalid", "offset"),
                ({"kind": "lead", "id": "x"}, "invalid", "kind")]:
            status, err = self.api.call("GET", req)
            self.assertEqual((status, err["code"]), ("ERR", code), (req, err))
            self.assertIn(field, err["message"], (req, err))
        report = self.get(kind="report", campaign="a", model="position")
        self.assertEqual((report["model"], len(report["campaigns"]), len(report["segments"])),
                         ("position", 1, 1))
        self.assertEqual(self.get(kind="winback"), {"total": 0, "offset": 0, "items": []})

    def test_memory_per_contact(self):
        """Measures Redis bytes per contact (printed; bounded)."""
        self.ok([upsert("a", "social"), upsert("b", "email")])
        self.ok([touch("a", "impression", "M%d" % i, ts=T0 + i) for i in range(200)])
        self.ok([touch("b", "click", "M%d" % i, ts=T0 + 1000 + i) for i in range(200)])
        r = self.redis.client()
        # A contact's record lives in its partition: {funnel:campaign:<p>}:c:<id>
        keys = r.keys("{funnel:campaign:*}:c:M*")
        m7 = [k for k in keys if k.endswith(b"}:c:M7")][0]
        one = r.memory_usage(m7)
        total = sum(r.memory_usage(k) for k in keys)
        print("\n  contact hash, 2 touches in 2 campaigns: %d bytes (mean %.0f over %d); "
              "hash: %r" % (one, total / len(keys), len(keys), r.hgetall(m7)))
        self.assertEqual(len(keys), 200)
        self.assertLess(one, 200)


class TestAttribution(CampaignCase):
    def setUp(self):
        super().setUp()
        self.ok([upsert("A", "email"), upsert("B", "social"), upsert("C", "search")])

    def credit(self, cid, model, field):
        return self.get(kind="campaign", id=cid)["attribution"][model][field]

    def test_five_models_and_report(self):
        # L1: A at day 0, B at day 1, C at day 2; captured at day 3, won at day 4
        self.ok([touch("A", "click", "L1", ts=T0), touch("B", "click", "L1", ts=T0 + DAY),
                 touch("C", "click", "L1", ts=T0 + 2 * DAY)])
        leads, sales = self.peers["leads"], self.peers["sales"]
        leads.publish("lead.captured", {"lead": "L1"}, ts=T0 + 3 * DAY)
        sales.publish("deal.won", {"deal": "D1", "lead": "L1", "amount": 1000}, ts=T0 + 4 * DAY)
        self.wait_consumed(2)
        self.ok(event("campaign.spend", {"campaign": "A", "amount": 200}))
        expect = {
            "first_touch": {"A": 1, "B": 0, "C": 0},
            "last_touch": {"A": 0, "B": 0, "C": 1},
            "linear": {"A": 1 / 3, "B": 1 / 3, "C": 1 / 3},
            "position": {"A": 0.4, "B": 0.2, "C": 0.4},
        }
        w = [2 ** (-(3 - d) / 7) for d in range(3)]
        expect["time_decay"] = {c: w[i] / sum(w) for i, c in enumerate("ABC")}
        for model in MODELS:
            for cid in "ABC":
                self.assertAlmostEqual(self.credit(cid, model, "leads"), expect[model][cid],
                                       places=5, msg=(model, cid))
            # Revenue is split in whole cents summing to the deal's amount
            self.assertEqual(sum(self.credit(c, model, "revenue") for c in "ABC"), 1000, model)
            total_leads = sum(self.credit(c, model, "leads") for c in "ABC")
            self.assertAlmostEqual(total_leads, 1.0, places=6)
        w = [2 ** (-(4 - d) / 7) for d in range(3)]
        self.assertAlmostEqual(self.credit("A", "time_decay", "won"), w[0] / sum(w), places=5)
        self.assertEqual(self.credit("A", "first_touch", "revenue"), 1000)
        self.assertEqual(self.credit("B", "position", "revenue"), 200)
        report = self.get(kind="report", model="first_touch")
        rows = {r["campaign"]: r for r in report["campaigns"]}
        a = rows["A"]
        self.assertEqual((a["leads"], a["won"], a["revenue"], a["spend"]), (1, 1, 1000, 200))
        self.assertEqual((a["cost_per_lead"], a["cost_per_acquisition"], a["roi"]), (200, 200, 4))
        self.assertNotIn("cost_per_lead", rows["B"])      # no leads: no ratio
        seg = {r["channel"]: r for r in report["segments"]}
        self.assertEqual((seg["email"]["leads"], seg["email"]["revenue"], seg["search"]["leads"]),
                         (1, 1000, 0))
        t = report["totals"]
        self.assertEqual((t["reached"], t["leads"], t["won"], t["revenue"], t["unattributed"]),
                         (1, 1, 1, 1000, 0))
        only = self.get(kind="report", campaign="C", model="last_touch")
        self.assertEqual([r["campaign"] for r in only["campaigns"]], ["C"])
        self.assertEqual(only["campaigns"][0]["leads"], 1)
        self.assertEqual([r["channel"] for r in only["segments"]], ["search"])

    def test_late_touch_reattributes(self):
        self.ok(touch("B", "click", "L2", ts=T0 + 10 * DAY))
        self.peers["leads"].publish("lead.sql", {"lead": "L2", "score": 80, "rep": "r1"},
                                    ts=T0 + 20 * DAY)
        self.wait_consumed(1)
        c = self.counters()
        # Stages are cumulative: sql also counts lead and mql, once each
        self.assertEqual((c["conv_lead"], c["conv_mql"], c["conv_sql"]), (1, 1, 1))
        self.assertEqual(self.credit("B", "first_touch", "sql"), 1)
        # A touch stamped before the conversion arrives late: credit moves
        self.ok(touch("A", "open", "L2", ts=T0 + 5 * DAY))
        for stage in ("leads", "mql", "sql"):
            self.assertEqual(self.credit("A", "first_touch", stage), 1, stage)
            self.assertEqual(self.credit("B", "first_touch", stage), 0, stage)
            self.assertEqual(self.credit("B", "last_touch", stage), 1, stage)
            self.assertAlmostEqual(self.credit("A", "linear", stage), 0.5)
        self.assertEqual(self.counters()["reattributed"], 3)
        # A touch after the conversion changes nothing already credited
        self.ok(touch("C", "click", "L2", ts=T0 + 30 * DAY))
        self.assertEqual(self.credit("C", "last_touch", "sql"), 0)
        self.assertEqual(self.counters()["reattributed"], 3)
        # A later mql for the same lead is not a second conversion
        self.peers["leads"].publish("lead.mql", {"lead": "L2", "score": 50}, ts=T0 + 40 * DAY)
        self.wait_consumed(2)
        self.assertEqual(self.counters()["conv_mql"], 1)
        for model in MODELS:
            self.assertAlmostEqual(sum(self.credit(x, model, "sql") for x in "ABC"), 1.0, places=6)

    def test_conversion_without_touches_then_late_touch(self):
        self.peers["leads"].publish("lead.captured", {"lead": "L9"}, ts=T0 + DAY)
        self.wait_consumed(1)
        self.assertEqual(self.counters()["unattributed"], 1)
        self.assertEqual(self.get(kind="report")["totals"]["unattributed"], 1)
        self.ok(touch("C", "visit", "L9", ts=T0))
        self.assertEqual(self.counters()["unattributed"], 0)
        for model in MODELS:
            self.assertEqual(self.credit("C", model, "leads"), 1, model)

    def test_recommend_ranks_channels_per_segment(self):
        genz = {"age_min": 18, "age_max": 24, "regions": ["us"]}
        self.ok([upsert("tt", "social", audience=genz), upsert("em", "email", audience=genz),
                 upsert("vd", "video", audience=genz), upsert("old", "email")])
        batch = []
        for i in range(20):
            batch.append(touch("tt", "click", "S%d" % i, ts=T0 + i))
            batch.append(touch("em", "open", "E%d" % i, ts=T0 + i))
        batch.append(touch("vd", "click", "V0", ts=T0))
        batch.append(touch("old", "click", "O0", ts=T0))
        self.ok(batch)
        leads = self.peers["leads"]
        for i in range(12):       # social converts 12 of 20, email 2 of 20
            leads.publish("lead.sql", {"lead": "S%d" % i, "score": 90, "rep": "r"}, ts=T0 + DAY)
        for i in range(2):
            leads.publish("lead.sql", {"lead": "E%d" % i, "score": 90, "rep": "r"}, ts=T0 + DAY)
        leads.publish("lead.sql", {"lead": "V0", "score": 90, "rep": "r"}, ts=T0 + DAY)
        leads.publish("lead.sql", {"lead": "O0", "score": 90, "rep": "r"}, ts=T0 + DAY)
        self.wait_consumed(16)
        self.ok(event("campaign.spend", {"campaign": "tt", "amount": 6000}))
        rec = self.get(kind="recommend", segment="18-24/us/any")
        self.assertEqual((rec["segment"], rec["stage"], rec["model"]), ("18-24/us/any", "sql", "linear"))
        chans = [r["channel"] for r in rec["channels"]]
        # video's 1 of 1 is luck, not evidence: it ranks below social
        self.assertEqual(chans, ["social", "video", "email"])
        self.assertEqual(rec["best"], "social")
        social = rec["channels"][0]
        self.assertEqual((social["trials"], social["successes"], social["rank"]), (20, 12, 1))
        self.assertEqual((social["alpha"], social["beta"]), (13, 9))
        self.assertAlmostEqual(social["mean"], 13 / 22, places=5)
        sd = math.sqrt(13 * 9 / (22 ** 2 * 23))
        self.assertAlmostEqual(social["lower"], 13 / 22 - 1.645 * sd, places=5)
        self.assertEqual(social["cost_per_conversion"], 500)
        self.assertIn("search", rec["untried"])
        # The same segment from an audience; other segments are apart
        by_aud = self.get(kind="recommend", audience=genz, stage="lead")
        self.assertEqual((by_aud["segment"], by_aud["best"]), ("18-24/us/any", "social"))
        allseg = self.get(kind="recommend")
        email = [r for r in allseg["channels"] if r["channel"] == "email"][0]
        self.assertEqual((allseg["segment"], email["trials"], email["successes"]), ("all", 21, 3))

    def test_winback_audience(self):
        ret, sales = self.peers["retention"], self.peers["sales"]
        ret.publish("customer.at_risk", {"customer": "K1", "health": 35, "reason": "silent"}, ts=T0)
        ret.publish("customer.churned", {"customer": "K2", "days_inactive": 120}, ts=T0 + 1)
        ret.publish("customer.at_risk", {"customer": "K3", "health": 20, "reason": "tickets"}, ts=T0 + 2)
        ret.publish("customer.churned", {"customer": "K1", "days_inactive": 95}, ts=T0 + 3)
        ret.publish("customer.at_risk", {"customer": "K1", "health": 30, "reason": "x"}, ts=T0 + 4)
        ret.publish("customer.at_risk", {"customer": "bad id"}, ts=T0 + 5)
        self.wait_consumed(6)
        wb = self.get(kind="winback")
        self.assertEqual(wb["total"], 3)
        items = {i["customer"]: i for i in wb["items"]}
        self.assertEqual([i["customer"] for i in wb["items"]], ["K1", "K3", "K2"])
        self.assertEqual((items["K1"]["state"], items["K1"]["days_inactive"], items["K1"]["since"]),
                         ("churned", 95, T0))                # churned stays churned
        self.assertEqual((items["K3"]["state"], items["K3"]["health"], items["K3"]["reason"]),
                         ("at_risk", 20, "tickets"))
        page = self.get(kind="winback", limit=2)
        self.assertEqual((len(page["items"]), page["next_offset"]), (2, 2))
        page = self.get(kind="winback", limit=2, offset=2)
        self.assertEqual([i["customer"] for i in page["items"]], ["K2"])
        self.assertNotIn("next_offset", page)
        # Winning a deal again takes a customer out
        sales.publish("deal.won", {"deal": "D7", "lead": "K3", "amount": 10}, ts=T0 + 10)
        self.wait_consumed(7)
        c = self.counters()
        self.assertEqual((c["winback"], c["won_back"], c["consume_rejected"]), (2, 1, 1))
        self.assertEqual(self.get(kind="winback")["total"], 2)


class TestBoundedHistory(CampaignCase):
    def test_touches_falling_off_a_full_history_keep_conversions_exact(self):
        """history_max 3: a conversion keeps the credits of touches that
        later fall off the history, and a late touch re-attributes it by
        the difference, so every model still sums to exactly one lead."""
        self.campaign.stop()
        self.campaign = self.daemon("campaign", args=["--set", "campaign/history_max=3"])
        self.api = self.wait_ready("campaign")
        self.ok([upsert("A", "email"), upsert("B", "social"), upsert("C", "search"),
                 upsert("D", "video"), upsert("E", "event")])
        self.ok([touch("A", "click", "H1", ts=T0 + 1), touch("B", "click", "H1", ts=T0 + 2),
                 touch("C", "click", "H1", ts=T0 + 3)])
        self.peers["leads"].publish("lead.captured", {"lead": "H1"}, ts=T0 + 10)
        self.wait_consumed(1)

        def credits(model):
            return {c: self.get(kind="campaign", id=c)["attribution"][model]["leads"] for c in "ABCDE"}
        self.assertEqual(credits("first_touch")["A"], 1)
        # D comes after the conversion and pushes A out of the history: the
        # conversion keeps A's credit
        self.ok(touch("D", "click", "H1", ts=T0 + 20))
        self.assertEqual(credits("first_touch"), {"A": 1, "B": 0, "C": 0, "D": 0, "E": 0})
        # E is late (before the conversion): re-attributed over the history
        # as it is now (C, E; D is after the conversion), by the difference
        self.ok(touch("E", "click", "H1", ts=T0 + 5))
        self.assertEqual(credits("first_touch"), {"A": 0, "B": 0, "C": 1, "D": 0, "E": 0})
        self.assertEqual(credits("last_touch"), {"A": 0, "B": 0, "C": 0, "D": 0, "E": 1})
        for model in MODELS:
            self.assertAlmostEqual(sum(credits(model).values()), 1.0, places=6, msg=model)
        self.assertEqual(self.counters()["reattributed"], 1)


class TestCrash(CampaignCase):
    def test_kill9_mid_stream_exact_counts(self):
        self.ok([upsert("c%d" % i, ["email", "social", "search"][i % 3]) for i in range(6)])
        batches = []
        n = 0
        for b in range(40):
            batch = []
            for _ in range(25):
                contact = "P%d" % (n % 300) if n % 7 else None
                kind = "impression" if n % 3 == 0 else "click"
                batch.append(touch("c%d" % (n % 6), kind, contact, ts=T0 + n))
                n += 1
            batches.append(batch)
        leads = self.peers["leads"]
        acked = [0]

        def publisher():
            # An outside system: each batch is retried with the same ids until OK
            client = Client(self.topology.api("campaign"))
            for batch in batches:
                while True:
                    try:
                        if client.call("PUBLISH", batch, timeout=1.0)[0] == "OK":
                            break
                    except TimeoutError:
                        pass
                acked[0] += 1
            client.close()

        thread = threading.Thread(target=publisher)
        thread.start()
        for i in range(10):
            leads.publish("lead.captured", {"lead": "P%d" % (i * 7 + 1)}, ts=T0 + 100000)
        for when in (8, 25):
            wait_until(lambda: acked[0] >= when, timeout=20, what="%d batches acked" % when)
            self.campaign.kill9()          # mid-stream: the publisher is sending
            leads.publish("lead.sql", {"lead": "P%d" % when, "score": 1, "rep": "r"},
                          ts=T0 + 200000)
            self.campaign.start()
        thread.join(60)
        self.assertFalse(thread.is_alive())
        self.api = self.wait_ready("campaign")
        # Retrying everything once more applies nothing new
        for batch in batches[:5]:
            self.assertEqual(self.api.ok("PUBLISH", batch)["accepted"], 0)
        self.wait_consumed(12)
        # Expected values computed independently
        contacts, engaged, per = set(), set(), {}
        anon = anon_imp = 0
        for batch in batches:
            for ev in batch:
                d = ev["data"]
                if "contact" not in d:
                    anon += 1
                    anon_imp += d["kind"] == "impression"
                    continue
                contacts.add(d["contact"])
                per.setdefault(d["campaign"], [set(), set()])[0].add(d["contact"])
                if d["kind"] != "impression":
                    engaged.add(d["contact"])
                    per[d["campaign"]][1].add(d["contact"])
        c = self.counters()
        self.assertEqual((c["reached"], c["engaged"]), (len(contacts), len(engaged)))
        self.assertEqual((c["anonymous"], c["anonymous_impressions"]), (anon, anon_imp))
        self.assertEqual(c["touches"], 1000)
        self.assertEqual(c["accepted"], 6 + 1000)
        # P8 was captured before its sql, P25 goes straight to sql (counts lead too)
        self.assertEqual((c["conv_lead"], c["conv_mql"], c["conv_sql"]), (11, 2, 2))
        for cid, (reach, eng) in per.items():
            got = self.get(kind="campaign", id=cid)
            self.assertEqual((got["reach"], got["engaged"]), (len(reach), len(eng)), cid)
        report = self.get(kind="report", model="position")
        self.assertEqual(report["totals"]["reached"], len(contacts))
        # Every conversion is credited exactly once under every model
        for model in MODELS:
            rows = self.get(kind="report", model=model)["campaigns"]
            self.assertAlmostEqual(sum(r["leads"] for r in rows), 11, places=5, msg=model)
            self.assertAlmostEqual(sum(r["sql"] for r in rows), 2, places=5, msg=model)
        # Outputs are contiguous: 6 campaign.updated + one prospect.touched per identified touch
        seqs, nxt = [], 1
        while True:
            page = self.api.ok("REPLAY", {"from": nxt, "limit": 1000})
            seqs += [e["seq"] for e in page["events"]]
            if not page["events"]:
                break
            nxt = page["next"]
        self.assertEqual(seqs, list(range(1, 6 + 1000 - anon + 1)))

    def test_sigterm_exits_zero_and_help(self):
        self.ok(upsert("c1"))
        self.assertEqual(self.campaign.stop(), 0)
        import subprocess
        from funnel_e2e import binary
        out = subprocess.run([binary("funnel-campaign"), "--help"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0)
        for key in ("history_max", "conversions_max", "half_life_days", "prior_alpha",
                    "recommend_stage"):
            self.assertIn(key, out.stdout)
        bad = subprocess.run([binary("funnel-campaign"), "-c", self.topology.path,
                              "--set", "campaign/history_max=0"], capture_output=True, text=True,
                             timeout=10)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("history_max", bad.stderr + bad.stdout)


def built(name):
    return os.path.exists(os.path.join(BUILD, "services/%s/funnel-%s" % (name, name)))


@unittest.skipUnless(built("leads") and built("sales"), "funnel-leads or funnel-sales not built")
class TestWithRealUpstreams(CampaignCase):
    """campaign -> leads -> sales -> campaign with the real daemons: leads
    consumes prospect.touched, its lead.captured and sales' deal.won come
    back as conversions."""

    peers_for = ("retention",)

    def start_upstreams(self):
        self.daemon("leads")
        self.daemon("sales")

    def test_touch_then_capture_is_attributed(self):
        leads = self.wait_ready("leads")
        self.ok([upsert("A", "social"), touch("A", "form", "R1", ts=T0)])
        leads.ok("PUBLISH", event("lead.capture", {"lead": "R1", "email": "r1@example.com"}))
        wait_until(lambda: self.counters().get("conv_lead") == 1, timeout=10,
                   what="lead.captured consumed")
        self.assertEqual(self.get(kind="campaign", id="A")["attribution"]["first_touch"]["leads"], 1)
        sales = self.wait_ready("sales")
        sales.ok("PUBLISH", event("deal.open", {"deal": "DR1", "lead": "R1", "amount": 7000}))
        sales.ok("PUBLISH", event("deal.close", {"deal": "DR1", "outcome": "won"}))
        wait_until(lambda: self.counters().get("conv_won") == 1, timeout=10,
                   what="deal.won consumed")
        a = self.get(kind="campaign", id="A")["attribution"]["position"]
        self.assertEqual((a["won"], a["revenue"]), (1, 7000))


if __name__ == "__main__":
    unittest.main()
