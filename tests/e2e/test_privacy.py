"""Privacy end to end (proto/privacy.md): real redis-server, the four real
services and the real gateway. A person with a unique e-mail goes the whole
way (touches, SQL, a deal with notes, won, orders); lead.forget erases them:
afterwards no Redis key or value of any type, no REPLAY page of any service
and no GET holds their e-mail, name, phone or company, while every funnel
count is unchanged. Export (per service, funnelctl, gateway), idempotence,
not_found and a re-capture with the same e-mail are checked too."""
import json
import subprocess
import time
import unittest
import uuid

from funnel_e2e import binary, event, wait_until
from test_gateway import GatewayCase, Receiver

# Counters a forget (or the requests of the check itself) moves by design;
# every other STATS counter is a funnel count and must not change
MOVING = {"accepted", "duplicates", "events_out", "consumed", "consume_rejected", "forgotten",
          "commits", "commit_avg_us", "outbox_bytes", "subscribers", "timers_fired",
          "outbox_lost"}


class PrivacyCase(GatewayCase):
    def setUp(self):
        super().setUp()
        self.c = {svc: self.client(svc) for svc in ("campaign", "leads", "sales", "retention")}
        tag = uuid.uuid4().hex[:12]
        self.email = "zelda.%s@privacy-example.org" % tag
        self.name = "Zelda Quarkington%s" % tag
        self.phone = "+44 20 7946 %s" % tag[:4].translate(str.maketrans("abcdef", "123456"))
        self.company = "Quarkworks%s Ltd" % tag
        self.lead = "P%s" % tag
        self.old_email = "zq.%s@old-privacy-example.org" % tag
        self.alias = "A%s" % tag
        self.secrets = [self.email, self.old_email, self.name, self.company, "Quarkington",
                        "zelda.", "zq."]

    # -- helpers ---------------------------------------------------------
    def ok(self, svc, etype, data):
        status, body = self.c[svc].call("PUBLISH", event(etype, data))
        self.assertEqual(status, "OK", body)
        return body

    def counts(self):
        out = {}
        for svc, cl in self.c.items():
            counters = cl.ok("STATS")["counters"]
            out[svc] = {k: v for k, v in counters.items()
                        if k not in MOVING and not k.startswith("cache")}
        return out

    def replay_all(self, svc):
        events, nxt = [], 1
        while True:
            page = self.c[svc].ok("REPLAY", {"from": nxt, "limit": 1000})
            events += page["events"]
            if not page["events"]:
                return events
            nxt = page["next"]

    def leaks(self, blob):
        if isinstance(blob, bytes):
            blob = blob.decode("utf-8", "replace")
        return [s for s in self.secrets if s.lower() in blob.lower()]

    def redis_dump(self):
        """Every key and every value of every type, as (key, text) pairs."""
        r = self.redis.client()
        out = []
        for key in r.scan_iter(count=1000):
            kind = r.type(key).decode()
            if kind == "string":
                value = [r.get(key)]
            elif kind == "hash":
                value = [x for kv in r.hgetall(key).items() for x in kv]
            elif kind == "list":
                value = r.lrange(key, 0, -1)
            elif kind == "set":
                value = list(r.smembers(key))
            elif kind == "zset":
                value = [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
            else:
                value = [r.dump(key) or b""]
            out.append((key, b"\x00".join(v or b"" for v in value)))
        return out

    def funnelctl(self, *args):
        return subprocess.run([binary("funnelctl"), "-c", self.topology.path] + list(args),
                              capture_output=True, text=True, timeout=30)

    def journey(self):
        self.ok("campaign", "campaign.upsert", {"campaign": "C1", "name": "Spring", "channel": "email"})
        # First seen with an older address (it stays indexed), then in full
        self.ok("leads", "lead.capture", {"lead": self.lead, "email": self.old_email})
        self.ok("leads", "lead.capture", {
            "lead": self.lead, "email": self.email.upper(), "name": self.name, "company": self.company,
            "phone": self.phone, "title": "Chief Quark", "campaign": "C1",
            "attrs": {"budget": 500000, "authority": True, "need": True, "timeline_days": 30,
                      "region": "emea", "industry": "quarks", "note": "met " + self.name}})
        # A new id with the person's address becomes an alias (lead.merged)
        self.ok("leads", "lead.capture", {"lead": self.alias, "email": self.email})
        for kind in ["form"] + ["click"] * 5:
            self.ok("campaign", "touch", {"campaign": "C1", "kind": kind, "contact": self.lead})
        deal = "L%s-1" % self.lead
        wait_until(lambda: self.c["sales"].call("GET", {"kind": "deal", "id": deal})[0] == "OK",
                   timeout=20, what="deal opened from lead.sql")
        self.ok("sales", "deal.interaction", {"deal": deal, "kind": "call", "outcome": "positive",
                                              "text": "spoke with %s at %s" % (self.name, self.email)})
        self.ok("sales", "deal.offer", {"deal": deal, "amount": 120000})
        self.ok("sales", "deal.close", {"deal": deal, "outcome": "won", "reason": "loved by " + self.name})
        wait_until(lambda: self.c["retention"].call("GET", {"kind": "customer", "id": self.lead})[0] == "OK",
                   timeout=20, what="customer onboarded")
        self.ok("retention", "customer.order", {"customer": self.lead, "amount": 5000, "order": "O1"})
        self.ok("retention", "customer.order", {"customer": self.lead, "amount": 7000, "order": "O2"})
        # Free text about the person in leads too
        self.ok("leads", "lead.disqualify", {"lead": self.lead, "reason": "%s moved away" % self.name})
        # A second deal, lost with a reason naming the person
        self.ok("sales", "deal.open", {"deal": "Q-" + self.lead, "lead": self.lead, "amount": 100})
        self.ok("sales", "deal.close", {"deal": "Q-" + self.lead, "outcome": "lost",
                                         "reason": "%s went elsewhere" % self.name})
        return deal

    def settle(self):
        """Every consumer has applied every upstream event (seq caught up)."""
        seqs = {svc: self.c[svc].ok("PING")["seq"] for svc in self.c}
        ups = {"campaign": ["leads", "sales", "retention"], "leads": ["campaign"],
               "sales": ["leads", "retention"], "retention": ["sales", "leads"]}
        r = self.redis.client()

        def caught_up():
            for svc, upstreams in ups.items():
                ckpt = r.hgetall("{funnel:%s}:ckpt" % svc)
                for up in upstreams:
                    if int(ckpt.get(up.encode(), b"0")) < seqs[up]:
                        return False
            return True
        wait_until(caught_up, timeout=20, what="every subscriber caught up")

    def forget(self):
        # As an operator does it (README, deploy/OPERATIONS.md)
        out = self.funnelctl("publish", "leads", json.dumps({
            "v": 1, "id": "forget-" + self.lead, "type": "lead.forget", "ts": 0, "src": "ops",
            "data": {"lead": self.lead, "reason": "GDPR art. 17"}}))
        self.assertEqual(out.returncode, 0, out.stderr)
        for svc in ("campaign", "sales", "retention"):
            wait_until(lambda svc=svc: self.c[svc].ok("STATS")["counters"].get("forgotten") == 1,
                       timeout=20, what="%s applied lead.forgotten" % svc)
        self.settle()


class TestPrivacy(PrivacyCase):
    def test_erase_export_and_forgotten_for_good(self):
        deal = self.journey()
        self.settle()
        # Before: the person is everywhere, and export shows it
        before = self.redis_dump()
        self.assertTrue(any(self.leaks(k + b" " + v) for k, v in before))
        self.assertTrue([k for k, _ in before if k.endswith(b":al:" + self.alias.encode())])
        self.assertTrue([k for k, _ in before if self.old_email.encode() in k])
        self.assertTrue(self.leaks(json.dumps(self.replay_all("leads"))))
        before_export = self.funnelctl("export", self.lead)
        self.assertEqual(before_export.returncode, 0, before_export.stderr)
        doc = json.loads(before_export.stdout)
        self.assertEqual(doc["lead"], self.lead)
        self.assertTrue(doc["complete"])
        self.assertEqual(set(doc["services"]), {"campaign", "leads", "sales", "retention"})
        self.assertIn(self.email, json.dumps(doc))
        self.assertEqual(len(doc["services"]["sales"]["deals"]), 2)
        self.assertIn("c:" + self.lead, doc["services"]["retention"]["records"])
        status, _, gw = self.request("GET", "/v1/people/%s/export" % self.lead)
        self.assertEqual(status, 200, gw)
        self.assertEqual(set(gw["services"]), set(doc["services"]))
        captured = [e for e in self.replay_all("leads") if e["type"] == "lead.captured"]
        self.assertEqual(len(captured), 1)
        merged = [e for e in self.replay_all("leads") if e["type"] == "lead.merged"]
        self.assertEqual([e["data"]["alias"] for e in merged], [self.alias])
        alias_view = self.c["leads"].ok("GET", {"kind": "lead", "id": self.alias})
        self.assertEqual(alias_view["lead"], self.lead)
        counts = self.counts()
        self.assertEqual(counts["leads"]["sql"], 1)
        self.assertEqual(counts["sales"]["won"], 1)
        self.assertEqual(counts["retention"]["customers"], 1)

        # Erase
        self.forget()

        # Nothing left in Redis: every key, every value, every type
        dump = self.redis_dump()
        self.assertGreater(len(dump), 20)
        leaked = [(k, self.leaks(k + b" " + v)) for k, v in dump if self.leaks(k + b" " + v)]
        self.assertEqual(leaked, [])
        # ... nor in any REPLAY page of any service
        for svc in self.c:
            events = self.replay_all(svc)
            self.assertEqual(self.leaks(json.dumps(events)), [], svc)
        # The captured event is still there: same id and seq, redacted
        after = [e for e in self.replay_all("leads") if e["type"] == "lead.captured"]
        self.assertEqual([(e["id"], e["seq"]) for e in after],
                         [(e["id"], e["seq"]) for e in captured])
        self.assertTrue(after[0]["data"]["redacted"])
        self.assertNotIn("email", after[0]["data"])
        self.assertEqual(after[0]["data"]["lead"], self.lead)
        merged_after = [e for e in self.replay_all("leads") if e["type"] == "lead.merged"]
        self.assertEqual([(e["id"], e["seq"]) for e in merged_after],
                         [(e["id"], e["seq"]) for e in merged])
        self.assertNotIn("alias", merged_after[0]["data"])
        # The identity index entries are gone: old and new address, the alias
        keys = [k for k, _ in dump]
        self.assertFalse([k for k in keys if k.endswith(b":al:" + self.alias.encode())])
        status, body = self.c["leads"].call("GET", {"kind": "lead", "id": self.alias})
        self.assertEqual((status, body["code"]), ("ERR", "not_found"))
        # ... nor in any GET
        gets = [("leads", {"kind": "lead", "id": self.lead}),
                ("sales", {"kind": "deal", "id": deal}),
                ("sales", {"kind": "deal", "id": "Q-" + self.lead}),
                ("sales", {"kind": "pipeline"}),
                ("retention", {"kind": "customer", "id": self.lead}),
                ("campaign", {"kind": "campaign", "id": "C1"}),
                ("campaign", {"kind": "report"})]
        gets += [(svc, {"kind": "export", "lead": self.lead}) for svc in self.c]
        for svc, body in gets:
            status, reply = self.c[svc].call("GET", body)
            self.assertEqual(status, "OK", (svc, body, reply))
            self.assertEqual(self.leaks(json.dumps(reply, default=repr)), [], (svc, body))
        lead = self.c["leads"].ok("GET", {"kind": "lead", "id": self.lead})
        self.assertEqual(lead.get("profile"), {"campaign": "C1"})      # no e-mail, name...
        self.assertEqual(lead["stage"], "disqualified")
        self.assertEqual(lead["history"][-1]["reason"], "redacted")
        self.assertIn("forgotten", lead)
        out = self.funnelctl("export", self.lead)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(self.leaks(out.stdout), [])
        self.assertTrue(all(s["forgotten"] for s in json.loads(out.stdout)["services"].values()))
        status, _, gw = self.request("GET", "/v1/people/%s/export" % self.lead)
        self.assertEqual((status, self.leaks(json.dumps(gw))), (200, []))

        # Every funnel count unchanged
        self.assertEqual(self.counts(), counts)

        # Forgetting twice is a no-op; an unknown lead is not_found
        self.ok("leads", "lead.forget", {"lead": self.lead})
        self.settle()
        self.assertEqual(self.c["leads"].ok("STATS")["counters"]["forgotten"], 1)
        self.assertEqual(len([e for e in self.replay_all("leads") if e["type"] == "lead.forgotten"]), 1)
        status, body = self.c["leads"].call("PUBLISH", event("lead.forget", {"lead": "nobody-" + self.lead}))
        self.assertEqual((status, body["code"]), ("ERR", "not_found"))
        self.assertEqual(self.funnelctl("export", "nobody-" + self.lead).returncode, 1)
        status, _, body = self.request("GET", "/v1/people/nobody-%s/export" % self.lead)
        self.assertEqual((status, body["code"]), (404, "not_found"))
        # The erased id stays erased; the same e-mail later is a new lead
        status, body = self.c["leads"].call("PUBLISH", event("lead.capture", {"lead": self.lead,
                                                                              "email": self.email}))
        self.assertEqual((status, body["code"]), ("ERR", "conflict"))
        self.ok("leads", "lead.capture", {"lead": "N" + self.lead, "email": self.email})
        fresh = self.c["leads"].ok("GET", {"kind": "lead", "id": "N" + self.lead})
        self.assertEqual(fresh["lead"], "N" + self.lead)
        self.assertNotIn("alias_of", fresh)
        self.assertEqual(fresh["profile"]["email"], self.email)
        self.assertEqual(self.c["leads"].ok("STATS")["counters"]["leads"], counts["leads"]["leads"] + 1)



class TestPrivacyWebhook(PrivacyCase):
    webhook = True

    def test_webhook_replay_after_erase_is_redacted(self):
        # The subscription (start = earliest) begins after the erase: every
        # event comes from the outboxes, as rewritten
        self.assertEqual(self.gateway.stop(), 0)
        self.redis.client().delete("{funnel:gateway}:wh:crm")
        self.journey()
        self.settle()
        self.forget()
        receiver = Receiver(self.hook_port)
        receiver.start()
        try:
            self.gateway = self.start_gateway()

            def delivered():
                return [json.loads(body) for _, body in receiver.events()]

            def all_in():
                types = [e["type"] for e in delivered()]
                return "lead.forgotten" in types and "deal.won" in types
            wait_until(all_in, timeout=30, what="the journey's events POSTed")
            events = delivered()
            self.assertEqual(self.leaks(json.dumps(events)), [])
            captured = [e for e in events if e["type"] == "lead.captured"]
            self.assertTrue(captured and captured[0]["data"]["redacted"])
            self.assertEqual(captured[0]["data"]["lead"], self.lead)
        finally:
            receiver.stop()


if __name__ == "__main__":
    unittest.main()
