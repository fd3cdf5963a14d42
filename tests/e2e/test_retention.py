"""funnel-retention end to end: real redis-server, the real sales daemon as
upstream (customers only come from sales' deal.won), and funnel-retention.
Every accepted type, every kind of refusal, repeat exactly once, health,
upsell, tickets, cohorts, STATS, the silence and churn timers, and kill -9
mid-stream with exact counts after the restart."""
import random
import subprocess
import threading
import time
import unittest

import funnel_e2e
from funnel_e2e import FunnelTestCase, event, wait_until


def have_sales():
    try:
        funnel_e2e.binary("funnel-sales")
        return True
    except FileNotFoundError:
        return False


class RetentionCase(FunnelTestCase):
    retention_args = []

    def setUp(self):
        if not have_sales():
            self.skipTest("funnel-sales is not built under %s" % funnel_e2e.BUILD)
        super().setUp()
        self.sales_d = self.daemon("sales")
        self.sales = self.wait_ready("sales")
        self.ret_d = self.daemon("retention", args=self.retention_args)
        self.ret = self.wait_ready("retention")
        self.deals = 0

    # -- helpers ---------------------------------------------------------
    def win(self, lead, amount, deal=None):
        """Opens and wins a deal at sales: returns the deal id."""
        self.deals += 1
        deal = deal or "D-%s-%d" % (lead, self.deals)
        self.sales.ok("PUBLISH", [event("deal.open", {"deal": deal, "lead": lead, "amount": amount}),
                                  event("deal.close", {"deal": deal, "outcome": "won"})])
        return deal

    def customer(self, cid):
        status, body = self.ret.call("GET", {"kind": "customer", "id": cid})
        return body if status == "OK" else None

    def wait_customer(self, cid, orders=1):
        return wait_until(lambda: (self.customer(cid) or {}).get("orders") == orders and self.customer(cid),
                          what="customer %s with %d orders" % (cid, orders))

    def publish(self, etype, data, **kw):
        return self.ret.call("PUBLISH", event(etype, data, **kw))

    def ok(self, etype, data, **kw):
        status, body = self.publish(etype, data, **kw)
        self.assertEqual(status, "OK", body)
        return body

    def events(self, etype=None):
        """Every event retention has published, from its outbox (REPLAY)."""
        out, nxt = [], 1
        while True:
            page = self.ret.ok("REPLAY", {"from": nxt, "limit": 1000})
            out += page["events"]
            if not page["events"]:
                break
            nxt = page["next"]
        return [e for e in out if etype is None or e["type"] == etype]

    def counters(self):
        return self.counts("retention")


class TestRetention(RetentionCase):
    def test_onboarding_orders_and_repeat_once(self):
        deal = self.win("L1", 50000)
        c = self.wait_customer("L1")
        self.assertEqual((c["deal"], c["revenue"], c["ltv"], c["churned"]), (deal, 50000, 50000, False))
        self.assertEqual(c["cohort"], time.strftime("%Y-%m", time.gmtime()))
        # fresh customer, one 500.00 order, no feedback: 30+4+7.5+10+15 = 66.5 -> 67, medium
        self.assertEqual((c["health"], c["risk"]), (67, "medium"))
        onboarded = self.events("customer.onboarded")
        self.assertEqual([e["data"] for e in onboarded],
                         [{"customer": "L1", "deal": deal, "amount": 50000}])
        self.assertEqual(self.events("customer.repeat"), [])
        # the second order makes a repeat customer, once
        self.assertEqual(self.ok("customer.order", {"customer": "L1", "amount": 2000, "order": "o1"})["duplicate"],
                         False)
        self.ok("customer.order", {"customer": "L1", "amount": 3000})
        repeat = self.events("customer.repeat")
        self.assertEqual([e["data"] for e in repeat], [{"customer": "L1", "orders": 2}])
        # same order id again (new event id): a no-op, OK
        self.ok("customer.order", {"customer": "L1", "amount": 9999, "order": "o1"})
        c = self.customer("L1")
        self.assertEqual((c["orders"], c["revenue"]), (3, 55000))
        # a client order id that spells the won deal's own order key is its
        # own order, not taken for the deal's
        self.ok("customer.order", {"customer": "L1", "amount": 1, "order": "deal:" + deal})
        c = self.customer("L1")
        self.assertEqual((c["orders"], c["revenue"]), (4, 55001))
        # an expansion deal is one more order, not a new customer
        self.win("L1", 7000)
        c = self.wait_customer("L1", orders=5)
        self.assertEqual(c["revenue"], 62001)
        self.assertEqual(len(self.events("customer.onboarded")), 1)
        self.assertEqual(len(self.events("customer.repeat")), 1)
        counters = self.counters()
        self.assertEqual((counters["customers"], counters["repeat"], counters["revenue"]), (1, 1, 62001))
        # health events carry {customer, health, risk}
        health = self.events("customer.health")
        self.assertTrue(health)
        self.assertEqual(set(health[-1]["data"]), {"customer", "health", "risk"})

    def test_delivered(self):
        deal = self.win("L2", 1000)
        self.wait_customer("L2")
        self.sales.ok("PUBLISH", event("deal.deliver", {"deal": deal}))
        wait_until(lambda: self.customer("L2")["delivered"] == 1, what="delivery applied")

    def test_feedback_upsell_tickets_activity(self):
        self.win("L3", 50000)
        self.wait_customer("L3")
        ts = int(time.time() * 1000) - 60000
        self.ok("customer.feedback", {"customer": "L3", "nps": 10}, ts=ts)
        c = self.customer("L3")
        # 30+4+7.5+20+15 = 76.5 -> 77, low risk, a healthy promoter
        self.assertEqual((c["nps"], c["health"], c["risk"]), (10, 77, "low"))
        upsell = self.events("customer.upsell")
        # at: the feedback's event time (sales counts the expansion deal there)
        self.assertEqual([e["data"] for e in upsell],
                         [{"customer": "L3", "nps": 10, "health": 77, "at": ts}])
        # at most once per period (90 days by default)
        self.ok("customer.feedback", {"customer": "L3", "nps": 9})
        self.assertEqual(len(self.events("customer.upsell")), 1)
        # tickets: urgent 40 + high 25 off the tickets score
        self.ok("customer.ticket", {"customer": "L3", "ticket": "T1", "severity": "urgent", "status": "open"})
        self.ok("customer.ticket", {"customer": "L3", "ticket": "T2", "severity": "high", "status": "open"})
        c = self.customer("L3")
        self.assertEqual(c["open_tickets"], {"low": 0, "normal": 0, "high": 1, "urgent": 1})
        # 30+4+7.5+18+15*0.35 = 64.75 -> 65, medium
        self.assertEqual((c["health"], c["risk"]), (65, "medium"))
        # a ticket re-sent open with another severity moves, does not add
        self.ok("customer.ticket", {"customer": "L3", "ticket": "T2", "severity": "low", "status": "open"})
        self.assertEqual(self.customer("L3")["open_tickets"], {"low": 1, "normal": 0, "high": 0, "urgent": 1})
        self.ok("customer.ticket", {"customer": "L3", "ticket": "T1", "severity": "urgent", "status": "resolved"})
        self.ok("customer.ticket", {"customer": "L3", "ticket": "T2", "severity": "low", "status": "resolved"})
        # resolving a ticket that is not open changes no ticket count
        self.ok("customer.ticket", {"customer": "L3", "ticket": "T9", "severity": "high", "status": "resolved"})
        c = self.customer("L3")
        self.assertEqual(c["open_tickets"], {"low": 0, "normal": 0, "high": 0, "urgent": 0})
        self.assertEqual(c["health"], 75)
        self.ok("customer.activity", {"customer": "L3", "kind": "login"})
        self.assertEqual(self.customer("L3")["activities"], 1)
        # a small detractor with urgent tickets enters high risk at the
        # second one (30+4+0.15+0+15*0.2 = 37.15 -> 37), then 34; at_risk once
        self.win("L3B", 1000)
        self.wait_customer("L3B")
        self.ok("customer.feedback", {"customer": "L3B", "nps": 0})
        for t in ("T3", "T4", "T5"):
            self.ok("customer.ticket", {"customer": "L3B", "ticket": t, "severity": "urgent", "status": "open"})
        c = self.customer("L3B")
        self.assertEqual((c["health"], c["risk"]), (34, "high"))
        at_risk = self.events("customer.at_risk")
        self.assertEqual([e["data"] for e in at_risk], [{"customer": "L3B", "health": 37, "reason": "tickets"}])
        self.assertEqual(self.counters()["at_risk"], 1)
        # leaving high risk takes the customer out of the count
        for t in ("T3", "T4", "T5"):
            self.ok("customer.ticket", {"customer": "L3B", "ticket": t, "severity": "urgent", "status": "resolved"})
        self.assertEqual(self.customer("L3B")["risk"], "medium")
        self.assertEqual(self.counters()["at_risk"], 0)

    def test_validation_changes_nothing(self):
        self.win("L4", 1000)
        self.wait_customer("L4")
        before = self.counters()
        seq = self.ret.ok("PING")["seq"]
        cases = [
            ("customer.order", {"amount": 5}, "invalid", "customer"),
            ("customer.order", {"customer": "L4"}, "invalid", "amount"),
            ("customer.order", {"customer": "L4", "amount": -1}, "invalid", "amount"),
            ("customer.order", {"customer": "L4", "amount": 1.5}, "invalid", "amount"),
            ("customer.order", {"customer": "L4", "amount": "5"}, "invalid", "amount"),
            ("customer.order", {"customer": "L4", "amount": 5, "order": "bad id!"}, "invalid", "order"),
            ("customer.order", {"customer": "bad id!", "amount": 5}, "invalid", "customer"),
            ("customer.feedback", {"customer": "L4"}, "invalid", "nps"),
            ("customer.feedback", {"customer": "L4", "nps": 11}, "invalid", "nps"),
            ("customer.feedback", {"customer": "L4", "nps": -1}, "invalid", "nps"),
            ("customer.feedback", {"customer": "L4", "nps": 7.5}, "invalid", "nps"),
            ("customer.ticket", {"customer": "L4", "severity": "low", "status": "open"}, "invalid", "ticket"),
            ("customer.ticket", {"customer": "L4", "ticket": "T", "severity": "meh", "status": "open"},
             "invalid", "severity"),
            ("customer.ticket", {"customer": "L4", "ticket": "T", "severity": "low", "status": "closed"},
             "invalid", "status"),
            ("customer.ticket", {"customer": "L4", "ticket": "T", "severity": "low"}, "invalid", "status"),
            ("customer.activity", {"customer": "L4"}, "invalid", "kind"),
            ("customer.activity", {"customer": "L4", "kind": ""}, "invalid", "kind"),
            ("customer.activity", {"customer": "L4", "kind": 3}, "invalid", "kind"),
            # malformed and naming an unknown customer: invalid first
            ("customer.order", {"customer": "nobody", "amount": "x"}, "invalid", "amount"),
            # upstream types are not accepted by PUBLISH
            ("deal.won", {"deal": "D", "lead": "X", "amount": 5}, "unknown_type", "deal.won"),
            ("deal.delivered", {"deal": "D", "lead": "L4"}, "unknown_type", "deal.delivered"),
            ("customer.repeat", {"customer": "L4", "orders": 2}, "unknown_type", "customer.repeat"),
            # unknown customers
            ("customer.order", {"customer": "nobody", "amount": 5}, "not_found", "customer"),
            ("customer.feedback", {"customer": "nobody", "nps": 5}, "not_found", "customer"),
            ("customer.ticket", {"customer": "nobody", "ticket": "T", "severity": "low", "status": "open"},
             "not_found", "customer"),
            ("customer.activity", {"customer": "nobody", "kind": "login"}, "not_found", "customer"),
        ]
        for etype, data, code, field in cases:
            status, err = self.publish(etype, data)
            self.assertEqual((status, err["code"]), ("ERR", code), (etype, data, err))
            self.assertIn(field, err["message"], (etype, data, err))
        for kind_body, code in [({"kind": "customer", "id": "nobody"}, "not_found"),
                                ({"kind": "customer"}, "invalid"),
                                ({"kind": "frob"}, "invalid")]:
            status, err = self.ret.call("GET", kind_body)
            self.assertEqual((status, err["code"]), ("ERR", code), kind_body)
        after = self.counters()
        self.assertEqual(after, before)
        self.assertEqual(self.ret.ok("PING")["seq"], seq)
        c = self.customer("L4")
        self.assertEqual((c["orders"], c["revenue"], c.get("nps"), c["activities"]), (1, 1000, None, 0))

    def test_batch_all_or_nothing_and_duplicates(self):
        self.win("L5", 1000)
        self.wait_customer("L5")
        seq = self.ret.ok("PING")["seq"]
        batch = [event("customer.order", {"customer": "L5", "amount": 100}),
                 event("customer.feedback", {"customer": "L5", "nps": 9}),
                 event("customer.order", {"customer": "ghost", "amount": 100})]
        status, err = self.ret.call("PUBLISH", batch)
        self.assertEqual((status, err["code"], err["index"]), ("ERR", "not_found", 2))
        c = self.customer("L5")
        self.assertEqual((c["orders"], c.get("nps")), (1, None))
        self.assertEqual(self.counters()["repeat"], 0)
        self.assertEqual(self.ret.ok("PING")["seq"], seq)
        # a shape error later in the batch: same
        status, err = self.ret.call("PUBLISH", batch[:2] + [event("customer.feedback", {"customer": "L5"})])
        self.assertEqual((status, err["code"], err["index"]), ("ERR", "invalid", 2))
        self.assertEqual(self.customer("L5")["orders"], 1)
        # later events see earlier ones: two orders in one batch, repeat once
        good = [event("customer.order", {"customer": "L5", "amount": 100, "order": "A"}),
                event("customer.order", {"customer": "L5", "amount": 100, "order": "A"}),
                event("customer.order", {"customer": "L5", "amount": 100, "order": "B"})]
        self.assertEqual(self.ret.ok("PUBLISH", good), {"accepted": 3, "duplicates": 0})
        # the same events again: duplicates by event id, counted, no change
        self.assertEqual(self.ret.ok("PUBLISH", good), {"accepted": 0, "duplicates": 3})
        single = good[0]
        self.assertEqual(self.ret.ok("PUBLISH", single), {"id": single["id"], "duplicate": True})
        c = self.customer("L5")
        self.assertEqual((c["orders"], c["revenue"]), (3, 1200))
        self.assertEqual([e["data"] for e in self.events("customer.repeat")], [{"customer": "L5", "orders": 2}])
        counters = self.counters()
        self.assertEqual((counters["repeat"], counters["duplicates"], counters["revenue"]), (1, 4, 1200))

    def test_cohorts_and_stats(self):
        # the stage's counters are listed before the first customer
        c = self.counters()
        self.assertEqual((c["customers"], c["repeat"], c["churned"]), (0, 0, 0))
        self.assertEqual(self.ret.ok("GET", {"kind": "cohorts"}),
                         {"cohorts": [], "customers": 0, "revenue": 0, "ltv": 0})
        for lead, amount in (("C1", 10000), ("C2", 20000), ("C3", 30000)):
            self.win(lead, amount)
        wait_until(lambda: self.counters().get("customers") == 3, what="3 customers")
        self.ok("customer.order", {"customer": "C1", "amount": 5000})
        rep = self.ret.ok("GET", {"kind": "cohorts"})
        month = time.strftime("%Y-%m", time.gmtime())
        self.assertEqual(rep["customers"], 3)
        self.assertEqual(rep["revenue"], 65000)
        self.assertEqual(rep["ltv"], 21667)
        self.assertEqual(rep["cohorts"], [{
            "month": month, "customers": 3, "repeat_customers": 1, "churned": 0,
            "repeat_share": 0.3333, "churned_share": 0, "revenue": 65000, "ltv": 21667}])
        counters = self.counters()
        for name, value in (("customers", 3), ("repeat", 1), ("churned", 0), ("revenue", 65000)):
            self.assertEqual(counters[name], value, name)
        self.assertIn("at_risk", counters)
        self.assertEqual(counters["consumed"], 3)

    def test_help_bad_settings_and_clean_stop(self):
        out = subprocess.run([funnel_e2e.binary("funnel-retention"), "--help"],
                             capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 0)
        for key in ("weights/recency", "churn_days", "silence_factor", "upsell/period_days"):
            self.assertIn(key, out.stdout + out.stderr)
        for bad in ("retention/risk/high=80", "retention/weights/nps=x", "retention/churn_days=0",
                    "retention/upsell/nps=11"):
            out = subprocess.run([funnel_e2e.binary("funnel-retention"), "-c", self.topology.path,
                                  "--api", "tcp://127.0.0.1:1", "--set", bad],
                                 capture_output=True, text=True, timeout=10)
            self.assertEqual(out.returncode, 2, (bad, out.stderr))
            self.assertIn(bad.split("=")[0], out.stderr)
        self.win("Q1", 100)
        self.wait_customer("Q1")
        self.assertEqual(self.ret_d.stop(), 0)
        log = self.ret_d.output()
        self.assertNotIn("Sanitizer", log)
        self.assertNotIn("runtime error", log)


class TestTimers(RetentionCase):
    # churn after 0.0001 days (8.64 s) idle; silence with no gap floor
    retention_args = ["--set", "retention/churn_days=0.0001",
                      "--set", "retention/silence_min_gap_days=0",
                      "--set", "retention/silence_factor=1.5"]

    def test_silence_then_churn_then_win_back(self):
        self.win("S1", 100000)
        c = self.wait_customer("S1")
        t0 = c["first_order"]
        # second order 1 s later in event time: usual gap 1 s, next due 1.5 s after it
        self.ok("customer.order", {"customer": "S1", "amount": 100000}, ts=t0 + 1000)
        c = self.customer("S1")
        self.assertEqual((c["usual_gap_ms"], c["next_order_due"]), (1000, t0 + 2500))
        at_risk = wait_until(lambda: self.events("customer.at_risk"), what="silence at_risk")
        self.assertEqual(at_risk[0]["data"]["reason"], "overdue")
        self.assertEqual(at_risk[0]["data"]["customer"], "S1")
        self.assertGreaterEqual(at_risk[0]["ts"], t0 + 2500)
        c = self.customer("S1")
        self.assertEqual((c["overdue"], c["risk"]), (True, "high"))
        self.assertEqual(self.counters()["at_risk"], 1)
        # then the churn sweep: no activity for churn_days
        churned = wait_until(lambda: self.events("customer.churned"), timeout=15, what="churn")
        self.assertEqual(churned[0]["data"], {"customer": "S1", "days_inactive": 0})
        self.assertGreaterEqual(churned[0]["ts"], t0 + 1000 + 8640)
        counters = self.counters()
        self.assertEqual((counters["churned"], counters["at_risk"]), (1, 0))
        self.assertTrue(self.customer("S1")["churned"])
        self.assertEqual(self.ret.ok("GET", {"kind": "cohorts"})["cohorts"][0]["churned_share"], 1)
        # fired once only
        time.sleep(1.0)
        self.assertEqual(len(self.events("customer.churned")), 1)
        self.assertEqual(len(self.events("customer.at_risk")), 1)
        # a backdated event wins the customer back without moving its last
        # activity: it churns again at once, under a new event id
        self.ok("customer.activity", {"customer": "S1", "kind": "login"}, ts=t0)
        churned = wait_until(lambda: len(self.events("customer.churned")) == 2
                             and self.events("customer.churned"), what="churn again")
        self.assertNotEqual(churned[0]["id"], churned[1]["id"])
        wait_until(lambda: self.counters()["churned"] == 1, what="churned again")
        # a new order wins the customer back
        self.ok("customer.order", {"customer": "S1", "amount": 100000})
        c = self.customer("S1")
        self.assertEqual((c["churned"], c["overdue"], c["orders"]), (False, False, 3))
        counters = self.counters()
        self.assertEqual((counters["churned"], counters["won_back"]), (0, 2))


class TestKill9(RetentionCase):
    def test_kill9_mid_stream_exact_counts(self):
        rng = random.Random(11)
        leads = ["K%d" % i for i in range(60)]
        revenue = 0
        # customers arrive from sales while retention is killed twice
        for i in range(0, 60, 10):
            batch = []
            for lead in leads[i:i + 10]:
                amount = rng.randint(1, 5000)
                revenue += amount
                batch += [event("deal.open", {"deal": "D" + lead, "lead": lead, "amount": amount}),
                          event("deal.close", {"deal": "D" + lead, "outcome": "won"})]
            self.sales.ok("PUBLISH", batch)
            if i in (10, 30):
                self.ret_d.kill9()
                time.sleep(rng.random() * 0.2)
                self.ret_d.start()
        self.ret = self.wait_ready("retention")
        wait_until(lambda: self.counters().get("customers") == 60, timeout=20, what="60 customers")
        # orders published directly, retention killed mid-stream; the client
        # retries an unanswered batch with the same ids after the restart
        orders = {}
        batches = []
        for b in range(20):
            batch = []
            for _ in range(10):
                lead = rng.choice(leads[:40])
                amount = rng.randint(1, 900)
                orders[lead] = orders.get(lead, 0) + 1
                revenue += amount
                batch.append(event("customer.order", {"customer": lead, "amount": amount,
                                                      "order": "O%d" % len(batches) + "-%d" % len(batch)}))
            batches.append(batch)
        kills = []

        def kill_and_restart():
            self.ret_d.kill9()
            kills.append(time.time())
            self.ret_d.start()
        killers = [threading.Timer(delay, kill_and_restart) for delay in (0.15, 0.6)]
        for k in killers:
            k.start()
        for batch in batches:
            while True:
                try:
                    self.ret.ok("PUBLISH", batch, timeout=1.0)
                    break
                except (TimeoutError, AssertionError):
                    # no reply (killed) or not ready yet: retry, same ids
                    time.sleep(0.05)
            time.sleep(0.04)
        done = time.time()
        for k in killers:
            k.join()
        self.assertEqual(len(kills), 2)
        self.assertLess(max(kills), done, "both kills came mid-stream")
        self.ret = self.wait_ready("retention")
        # a batch applied before a kill and resent after: all duplicates
        self.assertEqual(self.ret.ok("PUBLISH", batches[4]), {"accepted": 0, "duplicates": 10})
        repeat = len(orders)  # every ordering customer now has two orders or more
        counters = self.counters()
        self.assertEqual(counters["customers"], 60)
        self.assertEqual(counters["repeat"], repeat)
        self.assertEqual(counters["revenue"], revenue)
        self.assertEqual(counters["consumed"], 60)
        self.assertEqual(counters["accepted"], 200)
        self.assertEqual(len(self.events("customer.onboarded")), 60)
        self.assertEqual(sorted(e["data"]["customer"] for e in self.events("customer.repeat")),
                         sorted(lead for lead in orders))
        seqs = [e["seq"] for e in self.events()]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        for lead in leads:
            self.assertEqual(self.customer(lead)["orders"], 1 + orders.get(lead, 0), lead)


if __name__ == "__main__":
    unittest.main()
