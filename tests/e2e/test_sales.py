"""funnel-sales end to end (real redis-server, the real daemon, real sockets):
every deal.* command, every refusal, the discount policy, the pipeline
report, lead.sql and customer.upsell from upstreams (a scripted upstream
speaking the wire contract, and the real funnel-leads when it is built),
the speed-to-lead timer, the stale sweep, and kill -9 during catch-up."""
import os
import random
import subprocess
import threading
import time
import unittest

import msgpack
import zmq

from funnel_e2e import BUILD, FunnelTestCase, binary, event, wait_until

PREFIX = "{funnel:sales}:"


def ev(etype, **data):
    return event(etype, data)


class FakeUpstream:
    """An upstream service as the contract defines it: a PUB with `$hb`
    heartbeats announcing its last seq, and REPLAY on a ROUTER. Events are
    added with add(); a subscriber learns of them from the heartbeat and
    fetches them by REPLAY (the gap-recovery path)."""

    def __init__(self, svc, api, pub):
        self.svc, self.api, self.pub = svc, api, pub
        self.events = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def add(self, etype, data, eid=None):
        with self.lock:
            seq = len(self.events) + 1
            self.events.append({"v": 1, "id": eid or "%s:%s-%d" % (self.svc, etype, seq),
                                "type": etype, "ts": int(time.time() * 1000),
                                "src": self.svc, "svc": self.svc, "seq": seq,
                                "data": data})
            return self.events[-1]["id"]

    def _run(self, ready):
        ctx = zmq.Context.instance()
        router = ctx.socket(zmq.ROUTER)
        pub = ctx.socket(zmq.PUB)
        for s in (router, pub):
            s.setsockopt(zmq.LINGER, 0)
        router.bind(self.api)
        pub.bind(self.pub)
        ready.set()
        next_hb = 0
        while not self.stopping.is_set():
            if router.poll(50):
                frames = router.recv_multipart()
                ident, verb = frames[0], frames[2]
                body = msgpack.unpackb(frames[3], raw=False) if len(frames) > 3 else {}
                with self.lock:
                    if verb == b"REPLAY":
                        start = max(body["from"], 1)
                        page = self.events[start - 1:start - 1 + min(body.get("limit", 1000), 1000)]
                        nxt = page[-1]["seq"] + 1 if page else body["from"]
                        reply = {"events": page, "next": nxt, "first": 1 if self.events else nxt}
                    else:
                        reply = {"svc": self.svc, "seq": len(self.events), "redis": "ok"}
                router.send_multipart([ident, b"", b"OK", msgpack.packb(reply, use_bin_type=True)])
            if time.time() >= next_hb:
                with self.lock:
                    hb = {"svc": self.svc, "seq": len(self.events), "ts": int(time.time() * 1000)}
                pub.send_multipart([b"$hb", msgpack.packb(hb)])
                next_hb = time.time() + 0.1
        router.close(0)
        pub.close(0)

    def stop(self):
        self.stopping.set()
        self.thread.join(5)


class SalesCase(FunnelTestCase):
    """sales with scripted leads and retention upstreams (started for every
    test, as a deployment would have them, so REPLAY always gets an answer)."""
    sales_args = []
    fake_leads = True

    def setUp(self):
        super().setUp()
        self.fakes = []
        if self.fake_leads:
            self.leads = FakeUpstream("leads", self.topology.api("leads"),
                                      self.topology.pub("leads"))
            self.fakes.append(self.leads)
        self.retention = FakeUpstream("retention", self.topology.api("retention"),
                                      self.topology.pub("retention"))
        self.fakes.append(self.retention)
        self.sales = self.daemon("sales", args=self.sales_args)
        self.api = self.wait_ready("sales")

    def tearDown(self):
        for f in self.fakes:
            f.stop()
        super().tearDown()

    def wait_counter(self, name, value, timeout=15):
        wait_until(lambda: self.counters().get(name, 0) == value, timeout,
                   what="%s == %d (have %r)" % (name, value, self.counters().get(name)))

    def publish(self, etype, **data):
        return self.api.ok("PUBLISH", ev(etype, **data))

    def refused(self, body):
        status, err = self.api.call("PUBLISH", body)
        self.assertEqual(status, "ERR", body)
        return err

    def deal(self, deal_id):
        return self.api.ok("GET", {"kind": "deal", "id": deal_id})

    def outputs(self, etype=None):
        events, nxt = [], 1
        while True:
            page = self.api.ok("REPLAY", {"from": nxt, "limit": 1000})
            events += page["events"]
            if not page["events"]:
                break
            nxt = page["next"]
        return [e for e in events if etype is None or e["type"] == etype]

    def counters(self):
        return self.counts("sales")


class TestCommands(SalesCase):
    def test_lifecycle_happy_path(self):
        self.publish("deal.open", deal="d1", lead="lead-1", amount=100000, rep="ann")
        self.publish("deal.interaction", deal="d1", kind="call", outcome="positive")
        self.publish("deal.interaction", deal="d1", kind="demo", outcome="neutral",
                     objections=["price", "timing"], text="wants a pilot")
        for kind in ("meeting", "email", "note"):
            self.publish("deal.interaction", deal="d1", kind=kind)
        self.publish("deal.stage", deal="d1", stage="proposal")
        self.publish("deal.offer", deal="d1", amount=90000, discount_pct=10)
        self.publish("deal.stage", deal="d1", stage="commit")
        self.publish("deal.close", deal="d1", outcome="won")
        self.publish("deal.deliver", deal="d1")

        types = [e["type"] for e in self.outputs()]
        self.assertEqual(types, ["deal.opened", "deal.stage_changed", "deal.offer_made",
                                 "deal.stage_changed", "deal.won", "deal.delivered"])
        out = {e["type"]: e for e in self.outputs()}
        self.assertEqual(out["deal.opened"]["data"],
                         {"deal": "d1", "lead": "lead-1", "rep": "ann", "kind": "new",
                          "amount": 100000})
        self.assertEqual(out["deal.offer_made"]["data"],
                         {"deal": "d1", "amount": 90000, "discount_pct": 10})
        won = out["deal.won"]["data"]
        self.assertEqual((won["deal"], won["lead"], won["amount"]), ("d1", "lead-1", 90000))
        self.assertNotIn("campaign", won)
        self.assertEqual(out["deal.delivered"]["data"],
                         {"deal": "d1", "lead": "lead-1", "amount": 90000})
        for e in self.outputs():
            self.assertEqual(e["svc"], "sales")
            self.assertTrue(e["data"])

        d = self.deal("d1")
        self.assertEqual((d["status"], d["lead"], d["rep"], d["amount"], d["open_amount"]),
                         ("delivered", "lead-1", "ann", 90000, 100000))
        self.assertEqual([i["kind"] for i in d["interactions"]],
                         ["call", "demo", "meeting", "email", "note"])
        self.assertEqual(d["interactions"][1]["objections"], ["price", "timing"])
        self.assertEqual(d["interactions"][1]["text"], "wants a pilot")
        self.assertEqual(d["objections"], {"price": 1, "timing": 1})
        self.assertEqual([(o["amount"], o["discount_pct"]) for o in d["offers"]], [(90000, 10)])
        self.assertEqual([s["stage"] for s in d["stages"]], ["discovery", "proposal", "commit"])
        for s in d["stages"]:
            self.assertGreaterEqual(s["ms"], 0)
            self.assertGreater(s["since"], 0)
        self.assertEqual([h["e"] for h in d["history"]],
                         ["open"] + ["interaction"] * 5 + ["stage", "offer", "stage", "close",
                                                          "deliver"])
        self.assertIsNotNone(d["closed_at"])
        self.assertIsNotNone(d["delivered_at"])

        c = self.counters()
        self.assertEqual((c["deals"], c["won"], c.get("lost", 0), c["revenue"], c["delivered"],
                          c["interactions"], c["offers"]), (1, 1, 0, 90000, 1, 5, 1))
        self.assertEqual(c["accepted"], 11)

    def test_lost_and_won_without_offer(self):
        self.publish("deal.open", deal="a", lead="la", amount=5000)
        self.publish("deal.open", deal="b", lead="lb")
        self.publish("deal.close", deal="a", outcome="won")
        self.publish("deal.close", deal="b", outcome="lost", reason="Went with a competitor")
        won = self.outputs("deal.won")[0]["data"]
        self.assertEqual((won["deal"], won["amount"]), ("a", 5000))
        lost = self.outputs("deal.lost")[0]["data"]
        self.assertEqual(lost, {"deal": "b", "lead": "lb", "reason": "Went with a competitor"})
        self.assertEqual(self.deal("b")["lost_reason"], "Went with a competitor")
        self.assertEqual(self.deal("b")["rep"], "unassigned")
        c = self.counters()
        self.assertEqual((c["deals"], c["won"], c["lost"], c["revenue"]), (2, 1, 1, 5000))

    def test_discount_policy_and_approval(self):
        self.publish("deal.open", deal="d", lead="l", amount=10000)
        self.publish("deal.offer", deal="d", amount=7500, discount_pct=25)
        required = self.outputs("deal.approval_required")
        self.assertEqual([e["data"] for e in required],
                         [{"deal": "d", "discount_pct": 25, "max_pct": 20}])
        self.assertTrue(self.deal("d")["approval_required"])
        err = self.refused(ev("deal.close", deal="d", outcome="won"))
        self.assertEqual(err["code"], "conflict")
        self.assertIn("approval_required", err["message"])
        # closing lost needs no approval, but we approve and win instead
        self.publish("deal.approve", deal="d", by="Mary Manager")
        self.assertEqual(self.deal("d")["approved"], True)
        err = self.refused(ev("deal.approve", deal="d", by="again"))
        self.assertEqual(err["code"], "conflict")
        self.assertIn("already approved", err["message"])
        # a new offer needs its own approval
        self.publish("deal.offer", deal="d", amount=7000, discount_pct=30)
        err = self.refused(ev("deal.close", deal="d", outcome="won"))
        self.assertIn("approval_required", err["message"])
        self.publish("deal.approve", deal="d", by="Mary Manager")
        self.publish("deal.close", deal="d", outcome="won")
        self.assertEqual(self.outputs("deal.won")[0]["data"]["amount"], 7000)
        self.assertEqual(self.outputs("deal.approved")[-1]["data"]["by"], "Mary Manager")
        # at the maximum exactly: no approval needed, and approving is refused
        self.publish("deal.open", deal="e", lead="l2")
        self.publish("deal.offer", deal="e", amount=800, discount_pct=20)
        err = self.refused(ev("deal.approve", deal="e", by="x"))
        self.assertEqual(err["code"], "conflict")
        self.assertIn("needs no approval", err["message"])
        self.publish("deal.close", deal="e", outcome="won")
        c = self.counters()
        self.assertEqual((c["approvals_required"], c["approved"], c["won"]), (2, 2, 2))

    def test_invalid_fields_name_the_field_and_change_nothing(self):
        self.publish("deal.open", deal="d", lead="l")
        before = self.counters()
        seq = self.api.ok("PING")["seq"]
        cases = [
            (ev("deal.open", lead="l"), "invalid", "data.deal"),
            (ev("deal.open", deal="x y", lead="l"), "invalid", "data.deal"),
            (ev("deal.open", deal="x", lead="l" * 65), "invalid", "data.lead"),
            (ev("deal.open", deal="x", lead="l", amount=-1), "invalid", "data.amount"),
            (ev("deal.open", deal="x", lead="l", amount=1.5), "invalid", "data.amount"),
            (ev("deal.open", deal="x", lead="l", amount="100"), "invalid", "data.amount"),
            (ev("deal.open", deal="x", lead="l", rep=""), "invalid", "data.rep"),
            (ev("deal.interaction", deal="d"), "invalid", "data.kind"),
            (ev("deal.interaction", deal="d", kind="fax"), "invalid", "data.kind"),
            (ev("deal.interaction", deal="d", kind="call", outcome="great"), "invalid",
             "data.outcome"),
            (ev("deal.interaction", deal="d", kind="call", objections=["price", "color"]),
             "invalid", "data.objections"),
            (ev("deal.interaction", deal="d", kind="call", objections="price"), "invalid",
             "data.objections"),
            (ev("deal.offer", deal="d"), "invalid", "data.amount"),
            (ev("deal.offer", deal="d", amount=10, discount_pct=101), "invalid",
             "data.discount_pct"),
            (ev("deal.offer", deal="d", amount=10, discount_pct=-0.5), "invalid",
             "data.discount_pct"),
            (ev("deal.offer", deal="d", amount=10, discount_pct="5"), "invalid",
             "data.discount_pct"),
            (ev("deal.approve", deal="d"), "invalid", "data.by"),
            (ev("deal.approve", deal="d", by=""), "invalid", "data.by"),
            (ev("deal.stage", deal="d", stage="won"), "invalid", "data.stage"),
            (ev("deal.stage", deal="d"), "invalid", "data.stage"),
            (ev("deal.close", deal="d", outcome="maybe"), "invalid", "data.outcome"),
            (ev("deal.close", deal="d", outcome="lost", reason=7), "invalid", "data.reason"),
            (ev("deal.deliver"), "invalid", "data.deal"),
            (ev("deal.deliver", deal=5), "invalid", "data.deal"),
            # malformed and naming an unknown deal: invalid first
            (ev("deal.offer", deal="nobody", amount="x"), "invalid", "data.amount"),
            # consumed types are not commands
            (ev("lead.sql", lead="l", score=90, rep="ann"), "unknown_type", "lead.sql"),
            (ev("customer.upsell", customer="c", nps=9, health=90), "unknown_type",
             "customer.upsell"),
            (ev("deal.won", deal="d"), "unknown_type", "deal.won"),
        ]
        for body, code, field in cases:
            err = self.refused(body)
            self.assertEqual(err["code"], code, (body["type"], body["data"], err))
            self.assertIn(field, err["message"], err)
        self.assertEqual(self.counters(), before)
        self.assertEqual(self.api.ok("PING")["seq"], seq)
        d = self.deal("d")
        self.assertEqual((d["status"], d["stage"], d["amount"], len(d["history"])),
                         ("open", "discovery", 0, 1))

    def test_state_refusals_name_the_rule(self):
        self.publish("deal.open", deal="d", lead="l")
        cases = [
            (ev("deal.open", deal="d", lead="other"), "conflict", "already exists"),
            (ev("deal.interaction", deal="nope", kind="call"), "not_found", "deal: no deal nope"),
            (ev("deal.offer", deal="nope", amount=1), "not_found", "deal"),
            (ev("deal.approve", deal="nope", by="x"), "not_found", "deal"),
            (ev("deal.stage", deal="nope", stage="proposal"), "not_found", "deal"),
            (ev("deal.close", deal="nope", outcome="lost"), "not_found", "deal"),
            (ev("deal.deliver", deal="nope"), "not_found", "deal"),
            (ev("deal.deliver", deal="d"), "conflict", "deliver needs a won deal"),
            (ev("deal.stage", deal="d", stage="discovery"), "conflict", "already in stage"),
            (ev("deal.approve", deal="d", by="x"), "conflict", "needs no approval"),
        ]
        for body, code, text in cases:
            err = self.refused(body)
            self.assertEqual(err["code"], code, err)
            self.assertIn(text, err["message"])
        self.publish("deal.close", deal="d", outcome="lost", reason="no budget")
        for body in (ev("deal.offer", deal="d", amount=5), ev("deal.interaction", deal="d", kind="call"),
                     ev("deal.stage", deal="d", stage="commit"), ev("deal.close", deal="d", outcome="won"),
                     ev("deal.deliver", deal="d")):
            err = self.refused(body)
            self.assertEqual(err["code"], "conflict", err)
            self.assertIn("deal is lost", err["message"])
        self.publish("deal.open", deal="w", lead="l")
        self.publish("deal.close", deal="w", outcome="won")
        self.publish("deal.deliver", deal="w")
        err = self.refused(ev("deal.deliver", deal="w"))
        self.assertEqual(err["code"], "conflict")
        self.assertIn("already delivered", err["message"])
        err = self.refused(ev("deal.offer", deal="w", amount=1))
        self.assertIn("offer needs an open deal", err["message"])
        c = self.counters()
        self.assertEqual((c["deals"], c["won"], c["lost"], c["delivered"]), (2, 1, 1, 1))

    def test_batch_all_or_nothing_and_duplicates(self):
        bad = [ev("deal.open", deal="b1", lead="l"), ev("deal.interaction", deal="b1", kind="call"),
               ev("deal.offer", deal="zz", amount=5)]
        err = self.refused(bad)
        self.assertEqual((err["code"], err["index"]), ("not_found", 2))
        status, err = self.api.call("GET", {"kind": "deal", "id": "b1"})
        self.assertEqual((status, err["code"]), ("ERR", "not_found"))
        # later elements see earlier ones: close then offer is a conflict
        bad = [ev("deal.open", deal="b2", lead="l"), ev("deal.close", deal="b2", outcome="lost"),
               ev("deal.offer", deal="b2", amount=5)]
        err = self.refused(bad)
        self.assertEqual((err["code"], err["index"]), ("conflict", 2))
        # a shape error anywhere refuses the whole batch before any state
        err = self.refused([ev("deal.open", deal="b3", lead="l"), ev("deal.stage", deal="b3", stage="x")])
        self.assertEqual((err["code"], err["index"]), ("invalid", 1))
        # the same open twice in one batch: the second is a conflict
        err = self.refused([ev("deal.open", deal="b4", lead="l"), ev("deal.open", deal="b4", lead="l")])
        self.assertEqual((err["code"], err["index"]), ("conflict", 1))
        self.assertEqual(self.counters().get("deals", 0), 0)
        self.assertEqual(self.outputs(), [])

        good = [ev("deal.open", deal="b1", lead="l", amount=10), ev("deal.interaction", deal="b1", kind="call"),
                ev("deal.close", deal="b1", outcome="won")]
        self.assertEqual(self.api.ok("PUBLISH", good), {"accepted": 3, "duplicates": 0})
        again = [good[0], good[2], ev("deal.open", deal="b5", lead="l")]
        again.append(dict(again[2]))
        self.assertEqual(self.api.ok("PUBLISH", again), {"accepted": 1, "duplicates": 3})
        self.assertEqual(self.api.ok("PUBLISH", good[1]), {"id": good[1]["id"], "duplicate": True})
        c = self.counters()
        self.assertEqual((c["deals"], c["won"], c["interactions"], c["duplicates"]), (2, 1, 1, 4))
        self.assertEqual(len(self.outputs("deal.won")), 1)

    def test_pipeline_report(self):
        deals = [("p1", "ann", "discovery", 1000), ("p2", "ann", "proposal", 2000),
                 ("p3", "bob", "negotiation", 3000), ("p4", "bob", "commit", 4000),
                 ("p5", "bob", "commit", 5000)]
        for d, rep, stage, amount in deals:
            self.publish("deal.open", deal=d, lead="l" + d, rep=rep, amount=amount)
            if stage != "discovery":
                self.publish("deal.stage", deal=d, stage=stage)
        self.publish("deal.interaction", deal="p1", kind="call", objections=["price", "trust"])
        self.publish("deal.interaction", deal="p2", kind="call", objections=["price", "price"])
        self.publish("deal.offer", deal="p5", amount=4500, discount_pct=10)   # 5000 -> 4500
        for d, outcome, reason in (("w1", "won", None), ("w2", "won", None),
                                   ("x1", "lost", "Price"), ("x2", "lost", " price "),
                                   ("x3", "lost", "timing")):
            self.publish("deal.open", deal=d, lead="l", rep="cy", amount=100)
            data = {"deal": d, "outcome": outcome}
            if reason:
                data["reason"] = reason
            self.api.ok("PUBLISH", event("deal.close", data))
        p = self.api.ok("GET", {"kind": "pipeline"})
        self.assertEqual((p["open"], p["open_amount"]), (5, 1000 + 2000 + 3000 + 4000 + 4500))
        by_stage = {s["stage"]: s for s in p["stages"]}
        self.assertEqual([s["stage"] for s in p["stages"]],
                         ["discovery", "proposal", "negotiation", "commit"])
        self.assertEqual({k: (v["count"], v["amount"]) for k, v in by_stage.items()},
                         {"discovery": (1, 1000), "proposal": (1, 2000),
                          "negotiation": (1, 3000), "commit": (2, 8500)})
        # 10% of 1000 + 30% of 2000 + 60% of 3000 + 90% of 8500
        self.assertEqual(p["forecast"], 100 + 600 + 1800 + 7650)
        self.assertEqual(by_stage["commit"]["weighted"], 7650)
        self.assertEqual(by_stage["commit"]["probability"], 90)
        self.assertEqual(p["reps"], [{"rep": "ann", "count": 2, "amount": 3000},
                                     {"rep": "bob", "count": 3, "amount": 11500}])
        self.assertEqual((p["won"], p["lost"], p["revenue"]), (2, 3, 200))
        self.assertAlmostEqual(p["win_rate"], 0.4)
        self.assertGreaterEqual(p["avg_cycle_ms"], 0)
        self.assertEqual(p["top_objections"][0], {"objection": "price", "count": 2})
        self.assertEqual(p["top_objections"][1], {"objection": "trust", "count": 1})
        # a repeat within one interaction counts once in GET deal too
        self.assertEqual(self.deal("p2")["objections"], {"price": 1})
        self.assertEqual(p["lost_reasons"], [{"reason": "price", "count": 2},
                                             {"reason": "timing", "count": 1}])
        self.assertIn("avg_time_in_stage_ms", by_stage["discovery"])

    def test_get_errors(self):
        # the monitor's counters are listed before the first deal
        c = self.counters()
        self.assertEqual((c["deals"], c["won"], c["lost"]), (0, 0, 0))
        for body, code, field in (({"kind": "deal"}, "invalid", "id"),
                                  ({"kind": "deal", "id": 5}, "invalid", "id"),
                                  ({"kind": "deal", "id": "nope"}, "not_found", "nope"),
                                  ({"kind": "forecastz"}, "invalid", "kind")):
            status, err = self.api.call("GET", body)
            self.assertEqual((status, err["code"]), ("ERR", code), err)
            self.assertIn(field, err["message"])
        self.assertTrue(self.sales.running())


class TestSettings(FunnelTestCase):
    def run_sales(self, *args):
        return subprocess.run([binary("funnel-sales"), "-c", self.topology.path] + list(args),
                              capture_output=True, text=True, timeout=10)

    def test_help_lists_settings(self):
        r = self.run_sales("--help")
        self.assertEqual(r.returncode, 0)
        for text in ("max_discount_pct = 20", "sla_s = 1800", "stale_days = 14",
                     "probability/commit = 90", "reps/<name>/away = 0"):
            self.assertIn(text, r.stdout)

    def test_bad_settings_exit_2(self):
        for setting in ("sales/max_discount_pct=150", "sales/max_discount_pct=lots",
                        "sales/sla_s=-1", "sales/stale_days=0", "sales/probability/commit=101",
                        "sales/reps/bad name/away=0", "sales/reps/ann/away=perhaps"):
            r = self.run_sales("--set", setting)
            self.assertEqual(r.returncode, 2, (setting, r.stderr))
            self.assertIn("sales", r.stderr)


class TestConfigured(SalesCase):
    sales_args = ["--set", "sales/max_discount_pct=30", "--set", "sales/probability/discovery=50"]

    def test_configured_maximum_and_probabilities(self):
        self.publish("deal.open", deal="d", lead="l", amount=1000)
        self.publish("deal.offer", deal="d", amount=750, discount_pct=25)
        self.assertEqual(self.api.ok("GET", {"kind": "pipeline"})["forecast"], 375)
        self.publish("deal.close", deal="d", outcome="won")
        self.assertEqual(self.counters().get("approvals_required", 0), 0)


REPS = ["--set", "sales/reps/ann/away=0", "--set", "sales/reps/bob/away=0",
        "--set", "sales/reps/cy/away=1"]


class TestFromUpstreams(SalesCase):
    sales_args = ["--set", "sales/sla_s=1.5", "--set", "sales/stale_days=0.00003"] + REPS

    def test_lead_sql_opens_one_deal_per_qualification(self):
        self.leads.add("lead.captured", {"lead": "acme"})
        first = self.leads.add("lead.sql", {"lead": "acme", "score": 80, "rep": "ann",
                                            "campaign": "spring"})
        # the same qualification event sent again under a new seq: no second deal
        self.leads.add("lead.sql", {"lead": "acme", "score": 80, "rep": "ann"}, eid=first)
        self.leads.add("lead.scored", {"lead": "acme", "score": 81, "delta": 1})
        self.leads.add("lead.sql", {"lead": "beta", "score": 70, "rep": "bob"})
        self.leads.add("lead.sql", {"lead": "acme", "score": 85, "rep": "ann"})  # recycled
        self.leads.add("lead.sql", {"score": 1})                                # malformed
        self.wait_counter("deals", 3)
        self.assertEqual(self.counters()["consume_rejected"], 1)
        self.assertEqual(self.counters()["sql_duplicates"], 1)
        acme1, acme2, beta = self.deal("Lacme-1"), self.deal("Lacme-2"), self.deal("Lbeta-1")
        self.assertEqual((acme1["lead"], acme1["rep"], acme1["source"], acme1["campaign"]),
                         ("acme", "ann", "sql", "spring"))
        self.assertEqual(acme2["campaign"], "spring")          # remembered per lead
        self.assertEqual(beta["rep"], "bob")
        opened = [e["data"] for e in self.outputs("deal.opened")]
        self.assertEqual([o["deal"] for o in opened], ["Lacme-1", "Lbeta-1", "Lacme-2"])
        # a deal opened by hand for a known lead gets the lead's rep and campaign
        self.publish("deal.open", deal="manual", lead="acme")
        manual = self.deal("manual")
        self.assertEqual((manual["rep"], manual["campaign"], manual["source"]),
                         ("ann", "spring", "api"))
        # answered quickly: no breach for acme; won carries the campaign
        self.publish("deal.interaction", deal="Lacme-1", kind="call")
        self.publish("deal.interaction", deal="Lacme-2", kind="email")
        self.publish("deal.close", deal="Lacme-1", outcome="won")
        won = self.outputs("deal.won")[0]["data"]
        self.assertEqual((won["deal"], won["lead"], won["amount"], won["campaign"]),
                         ("Lacme-1", "acme", 0, "spring"))
        # beta was not answered: breached and re-assigned to another available rep
        breach = wait_until(lambda: self.outputs("deal.sla_breached"), what="sla breach")
        self.assertEqual([b["data"] for b in breach],
                         [{"deal": "Lbeta-1", "lead": "beta", "rep": "bob", "new_rep": "ann"}])
        d = self.deal("Lbeta-1")
        self.assertEqual((d["rep"], d["sla_breached"]), ("ann", True))
        self.assertFalse(self.deal("Lacme-2")["sla_breached"])
        c = self.counters()
        self.assertEqual((c["sla_breached"], c["reassigned"]), (1, 1))
        p = self.api.ok("GET", {"kind": "pipeline"})
        self.assertEqual([(r["rep"], r["count"]) for r in p["reps"]], [("ann", 3)])
        # the stale sweep reports deals without interaction, once per idle spell
        wait_until(lambda: {e["data"]["deal"] for e in self.outputs("deal.stalled")} ==
                   {"Lacme-2", "Lbeta-1", "manual"}, what="stalled deals")
        time.sleep(0.5)
        self.assertEqual(len(self.outputs("deal.stalled")), 3)
        self.assertTrue(self.deal("Lbeta-1")["stalled"])
        self.publish("deal.interaction", deal="Lbeta-1", kind="call")
        self.assertFalse(self.deal("Lbeta-1")["stalled"])
        wait_until(lambda: len(self.outputs("deal.stalled")) == 4, what="stalled again")

    def test_upsell_opens_expansion_deal(self):
        self.leads.add("lead.sql", {"lead": "cust1", "score": 90, "rep": "bob"})
        self.wait_counter("deals", 1)
        self.publish("deal.interaction", deal="Lcust1-1", kind="call")
        self.publish("deal.close", deal="Lcust1-1", outcome="won")
        self.retention.add("customer.upsell", {"customer": "cust1", "nps": 9, "health": 90})
        self.retention.add("customer.upsell", {"customer": "cust1", "nps": 10, "health": 95})
        self.retention.add("customer.upsell", {"customer": "stranger", "nps": 8, "health": 70})
        self.wait_counter("deals", 3)
        self.wait_counter("upsell_skipped", 1)
        x = self.deal("Xcust1-1")
        self.assertEqual((x["kind"], x["lead"], x["rep"], x["source"]),
                         ("expansion", "cust1", "bob", "upsell"))
        self.assertEqual(self.deal("Xstranger-1")["rep"], "ann")   # from the pool
        self.publish("deal.offer", deal="Xcust1-1", amount=25000)
        self.publish("deal.close", deal="Xcust1-1", outcome="won")
        won = self.outputs("deal.won")[-1]["data"]
        self.assertEqual((won["deal"], won["amount"], won["kind"]), ("Xcust1-1", 25000, "expansion"))
        c = self.counters()
        self.assertEqual((c["deals"], c["expansion"], c["won"], c["revenue"]), (3, 2, 2, 25000))
        # once that one is closed, the next upsell opens a new expansion deal
        self.retention.add("customer.upsell", {"customer": "cust1", "nps": 10, "health": 99})
        self.wait_counter("deals", 4)
        self.assertEqual(self.deal("Xcust1-2")["kind"], "expansion")


class TestKill9(SalesCase):
    sales_args = ["--set", "sales/sla_s=0"]

    def test_kill9_during_lead_sql_catch_up(self):
        rng = random.Random(11)
        leads = ["lead%d" % i for i in range(3000)]
        expected = {}
        for i in range(6000):
            if i % 2:
                self.leads.add("lead.scored", {"lead": rng.choice(leads), "score": 5, "delta": 5})
            else:
                lead = rng.choice(leads)
                expected[lead] = expected.get(lead, 0) + 1
                self.leads.add("lead.sql", {"lead": lead, "score": 80, "rep": "ann"})
        total = sum(expected.values())
        r = self.redis.client()
        kills, done = 0, 0
        for _ in range(4):
            # kill as soon as the catch-up has moved on, then start again
            try:
                wait_until(lambda: int(r.hget(PREFIX + "stats", "deals") or 0) > done,
                           timeout=10, interval=0.005)
            except AssertionError:
                pass
            self.sales.kill9()
            kills += 1
            done = int(r.hget(PREFIX + "stats", "deals") or 0)
            if done >= total:
                break
            self.sales.start()
        if not self.sales.running():
            self.sales.start()
        self.api = self.wait_ready("sales")
        self.wait_counter("deals", total, timeout=30)
        c = self.counters()
        self.assertEqual(c["consumed"], total)
        opened = self.outputs("deal.opened")
        ids = [e["data"]["deal"] for e in opened]
        self.assertEqual(len(ids), total)
        self.assertEqual(len(set(ids)), total)
        want = {"L%s-%d" % (lead, n) for lead, k in expected.items() for n in range(1, k + 1)}
        self.assertEqual(set(ids), want)
        self.assertEqual([e["seq"] for e in opened], list(range(1, total + 1)))
        p = self.api.ok("GET", {"kind": "pipeline"})
        self.assertEqual(p["open"], total)
        self.assertGreaterEqual(kills, 1)


@unittest.skipUnless(os.path.exists(os.path.join(BUILD, "services/leads/funnel-leads")),
                     "funnel-leads is not built")
class TestWithLeadsDaemon(SalesCase):
    sales_args = ["--set", "sales/sla_s=0"]
    fake_leads = False

    def test_manual_sql_opens_a_deal_and_survives_kill9(self):
        # leads' own upstream, scripted so that leads never waits on it
        self.fakes.append(FakeUpstream("campaign", self.topology.api("campaign"),
                                       self.topology.pub("campaign")))
        self.daemon("leads")
        leads = self.wait_ready("leads")
        n = 300
        for i in range(n):
            leads.ok("PUBLISH", [event("lead.capture", {"lead": "p%d" % i, "email": "p%d@x.io" % i}),
                                 event("lead.qualify", {"lead": "p%d" % i, "stage": "sql"})])
            if i == n // 3:
                self.sales.kill9()
            if i == n // 2:
                self.sales.start()
        self.api = self.wait_ready("sales")
        wait_until(lambda: self.counters().get("deals", 0) == n, timeout=30,
                   what="deals from lead.sql")
        time.sleep(0.3)
        self.assertEqual(self.counters()["deals"], n)
        self.assertEqual(self.stats("leads").get("sql"), n)
        d = self.deal("Lp7-1")
        self.assertEqual((d["lead"], d["source"]), ("p7", "sql"))
        self.assertTrue(d["rep"])


if __name__ == "__main__":
    unittest.main()
