"""Privacy end to end (proto/privacy.md): real redis-server, the four real
services and the real gateway. A person with a unique e-mail goes the whole
way (touches, SQL, a deal with notes, won, orders); lead.forget erases them:
afterwards no Redis key or value of any type, no REPLAY page of any service
and no GET holds their e-mail, name, phone or company, while every funnel
count is unchanged. Export (per service, funnelctl, gateway), idempotence,
not_found and a re-capture with the same e-mail are checked too."""
import json
import os
import subprocess
import time
import unittest
import uuid

import msgpack

from funnel_e2e import binary, event, wait_until
from test_gateway import FORMS, GatewayCase, Receiver

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

    def stop_clean(self):
        """Every daemon stops on SIGTERM with exit 0 and, under
        -DFUNNEL_SANITIZE=ON, no sanitizer report (leaks included)."""
        for d in self.daemons:
            if d.running():
                self.assertEqual(d.stop(), 0, d.name)
                self.assertNotIn("Sanitizer", d.output(), d.name)
                self.assertNotIn("runtime error", d.output(), d.name)

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
        # The export lists the outbox entries that carry the person's data
        personal = {e["seq"] for e in self.replay_all("leads")
                    if e["type"] in ("lead.captured", "lead.merged", "lead.disqualified")}
        self.assertEqual(len(personal), 3)
        self.assertTrue(personal <= set(doc["services"]["leads"]["outbox"]))
        lost = [e["seq"] for e in self.replay_all("sales") if e["type"] == "deal.lost"]
        self.assertEqual(doc["services"]["sales"]["outbox"], lost)
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
        self.assertEqual([json.loads(out.stdout)["services"][svc]["outbox"] for svc in ("leads", "sales")],
                         [[], []])
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
        self.stop_clean()



class TestPrivacyContract(PrivacyCase):
    """Each sentence of the contract's privacy section, its error cases."""

    def state(self):
        """The Redis dump once every consumer caught up, less the REPLAY
        subscriber registry (:subs, written as subscribers come and go)."""
        self.settle()
        return sorted((k, v) for k, v in self.redis_dump() if not k.endswith(b":subs"))

    def test_refusals_are_precise_and_change_nothing(self):
        self.ok("leads", "lead.capture", {"lead": self.lead, "email": self.email, "name": self.name})
        before = self.state()
        seq = self.c["leads"].ok("PING")["seq"]
        bad = [({}, "invalid", "data.lead"), ({"lead": 5}, "invalid", "data.lead"),
               ({"lead": ""}, "invalid", "data.lead"), ({"lead": "a b"}, "invalid", "data.lead"),
               ({"lead": [self.lead]}, "invalid", "data.lead"),
               ({"lead": self.lead, "reason": 5}, "invalid", "data.reason"),
               ({"lead": self.lead, "reason": ""}, "invalid", "data.reason"),
               ({"lead": self.lead, "reason": "x" * 201}, "invalid", "data.reason"),
               ({"lead": "nobody-" + self.lead, "reason": 5}, "invalid", "data.reason"),
               ({"lead": "nobody-" + self.lead}, "not_found", "lead: no lead nobody-")]
        for data, code, named in bad:
            status, body = self.c["leads"].call("PUBLISH", event("lead.forget", data))
            self.assertEqual((status, body["code"]), ("ERR", code), data)
            self.assertTrue(body["message"].startswith(named), (data, body))
        # lead.forgotten is leads' output: no service takes it by PUBLISH
        for svc in self.c:
            status, body = self.c[svc].call("PUBLISH", event("lead.forgotten", {"lead": self.lead}))
            self.assertEqual((status, body["code"]), ("ERR", "unknown_type"), svc)
        # In a batch, a refused element refuses the forget before it too
        status, body = self.c["leads"].call("PUBLISH", [
            event("lead.forget", {"lead": self.lead}), event("lead.forget", {"lead": 7})])
        self.assertEqual((status, body["code"], body["index"]), ("ERR", "invalid", 1))
        self.assertEqual(self.state(), before)
        self.assertEqual(self.c["leads"].ok("PING")["seq"], seq)
        self.assertEqual(self.c["leads"].ok("GET", {"kind": "lead", "id": self.lead})
                         ["profile"]["email"], self.email)

        # Export: every service, the same checks; unknown only in leads
        for svc in self.c:
            for body in ({"kind": "export"}, {"kind": "export", "lead": 5},
                         {"kind": "export", "lead": "a b"}, {"kind": "export", "lead": "x" * 65},
                         {"kind": "export", "id": self.lead}):
                status, reply = self.c[svc].call("GET", body)
                self.assertEqual((status, reply["code"]), ("ERR", "invalid"), (svc, body))
                self.assertTrue(reply["message"].startswith("lead:"), (svc, reply))
            status, reply = self.c[svc].call("GET", {"kind": "export", "lead": "nobody-" + self.lead})
            if svc == "leads":
                self.assertEqual((status, reply["code"]), ("ERR", "not_found"))
            else:
                self.assertEqual((status, reply["records"], reply["forgotten"]), ("OK", {}, False))
        # The gateway: 400 for what is not an id, 404 unknown, 401 no token
        for path, code in (("/v1/people/%s/export" % ("x" * 65), 400), ("/v1/people//export", 400),
                           ("/v1/people/a%20b/export", 400), ("/v1/people/nobody/export", 404)):
            status, _, body = self.request("GET", path)
            self.assertEqual((status, body["code"]), (code, {400: "invalid", 404: "not_found"}[code]),
                             path)
        status, _, body = self.request("GET", "/v1/people/%s/export" % self.lead, token=None)
        self.assertEqual(status, 401)
        # A webform's token is public: it may capture, not read a person
        status, _, body = self.request("GET", "/v1/people/%s/export" % self.lead, token=FORMS)
        self.assertEqual((status, body["code"]), (403, "forbidden"))
        self.assertIn("lead.forget", body["message"])
        out = self.funnelctl("export", "a b")
        self.assertEqual(out.returncode, 1)
        self.assertIn("invalid", out.stderr)
        self.assertEqual(self.state(), before)
        self.stop_clean()

    def test_forget_twice_and_a_forgotten_lead_takes_no_commands(self):
        self.ok("leads", "lead.capture", {"lead": self.lead, "email": self.email})
        first = event("lead.forget", {"lead": self.lead, "reason": "asked by mail"})
        self.assertEqual(self.c["leads"].ok("PUBLISH", first), {"id": first["id"], "duplicate": False})
        # The same event again: a duplicate; a new event: OK, nothing more
        self.assertEqual(self.c["leads"].ok("PUBLISH", first), {"id": first["id"], "duplicate": True})
        seq = self.c["leads"].ok("PING")["seq"]
        again = event("lead.forget", {"lead": self.lead})
        self.assertEqual(self.c["leads"].ok("PUBLISH", again), {"id": again["id"], "duplicate": False})
        self.assertEqual(self.c["leads"].ok("PING")["seq"], seq)
        self.assertEqual(self.c["leads"].ok("STATS")["counters"]["forgotten"], 1)
        # Nothing personal can be attached to the forgotten lead again (the
        # erase, a no-op now, could not reach it): conflict, nothing stored
        before = self.state()
        for etype, data in (("lead.capture", {"lead": self.lead, "name": "Zelda Again"}),
                            ("lead.qualify", {"lead": self.lead, "stage": "mql", "by": "Bob Quarkington"}),
                            ("lead.disqualify", {"lead": self.lead, "reason": "Quarkington left"})):
            status, body = self.c["leads"].call("PUBLISH", event(etype, data))
            self.assertEqual((status, body["code"]), ("ERR", "conflict"), etype)
            self.assertIn("was forgotten", body["message"])
        self.assertEqual(self.state(), before)
        self.assertEqual(self.leaks(json.dumps(self.c["leads"].ok(
            "GET", {"kind": "export", "lead": self.lead}))), [])

    def test_campaign_keeps_no_detail_of_a_forgotten_contact(self):
        """After the erase, campaign counts a forgotten contact's touches but
        records no touch history or conversion for it again (the erase, a
        no-op now, could not reach them); reach is counted once."""
        self.ok("campaign", "campaign.upsert", {"campaign": "C1", "name": "Spring", "channel": "email"})
        never = "N" + self.lead          # known to leads, never touched before the erase
        self.ok("leads", "lead.capture", {"lead": self.lead, "email": self.email})
        self.ok("leads", "lead.capture", {"lead": never})
        self.ok("campaign", "touch", {"campaign": "C1", "kind": "click", "contact": self.lead})
        self.settle()
        reached = self.c["campaign"].ok("STATS")["counters"]["reached"]
        self.ok("leads", "lead.forget", {"lead": self.lead})
        self.ok("leads", "lead.forget", {"lead": never})
        self.settle()

        def record(lead):
            reply = self.c["campaign"].ok("GET", {"kind": "export", "lead": lead})
            self.assertTrue(reply["forgotten"])
            return reply["records"].get("c:" + lead, {})
        for _ in range(2):
            for lead in (self.lead, never):
                self.ok("campaign", "touch", {"campaign": "C1", "kind": "click", "contact": lead})
        # A conversion (a won deal) is counted, without a record or credit
        won = self.c["campaign"].ok("STATS")["counters"].get("conv_won", 0)
        self.ok("sales", "deal.open", {"deal": "D" + self.lead, "lead": self.lead, "amount": 100})
        self.ok("sales", "deal.close", {"deal": "D" + self.lead, "outcome": "won"})
        wait_until(lambda: self.c["campaign"].ok("STATS")["counters"].get("conv_won", 0) == won + 1,
                   timeout=20, what="campaign counted the won deal")
        self.settle()
        for lead in (self.lead, never):
            self.assertEqual([f for f in record(lead) if f[0] in "hx"], [], lead)
        # reached: the forgotten contact not again, the other one once
        self.assertEqual(self.c["campaign"].ok("STATS")["counters"]["reached"], reached + 1)

    def test_sales_stores_no_free_text_about_a_forgotten_lead(self):
        """Deal commands for a forgotten lead still work (counts move as
        usual), but interaction texts and close reasons are not stored."""
        self.ok("leads", "lead.capture", {"lead": self.lead, "email": self.email})
        self.ok("leads", "lead.forget", {"lead": self.lead})
        self.settle()
        deal = "D" + self.lead
        self.ok("sales", "deal.open", {"deal": deal, "lead": self.lead, "amount": 100})
        self.ok("sales", "deal.interaction", {"deal": deal, "kind": "call",
                                              "text": "spoke with " + self.name})
        self.ok("sales", "deal.close", {"deal": deal, "outcome": "lost",
                                        "reason": self.name + " went elsewhere"})
        self.settle()
        self.assertEqual(self.c["sales"].ok("STATS")["counters"]["lost"], 1)
        self.assertEqual([k for k, v in self.redis_dump() if self.leaks(k + b" " + v)], [])
        lost = [e for e in self.replay_all("sales") if e["type"] == "deal.lost"]
        self.assertEqual([e["data"]["reason"] for e in lost], ["redacted"])
        view = self.c["sales"].ok("GET", {"kind": "deal", "id": deal})
        self.assertEqual(self.leaks(json.dumps(view)), [])


def _local_ports(pid):
    """The local TCP ports of pid's sockets (to find its Redis connections)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with open("/proc/%d/net/%s" % (pid, table)) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


class TestPrivacyKill9(PrivacyCase):
    def test_kill9_before_the_erase_commits_then_retry(self):
        """leads is killed after it read the person's outbox index and
        entries, before its MULTI/EXEC ran (held by CLIENT PAUSE WRITE):
        nothing of the erase is applied; the retry with the same id does
        it all, once, and the consumers apply lead.forgotten once."""
        self.ok("leads", "lead.capture", {"lead": self.lead, "email": self.email, "name": self.name})
        self.ok("leads", "lead.disqualify", {"lead": self.lead, "reason": self.name + " moved"})
        self.settle()
        leads_d = [d for d in self.daemons if d.name == "leads"][0]
        before = sorted((k, v) for k, v in self.redis_dump() if not k.endswith(b":subs"))
        r = self.redis.client()
        ports = _local_ports(leads_d.proc.pid)
        forget = event("lead.forget", {"lead": self.lead}, eid="forget-k9-" + self.lead)
        inflight = self.client("leads")

        def lranges():
            return r.info("commandstats").get("cmdstat_lrange", {}).get("calls", 0)
        read_before = lranges()

        def blocked_exec():
            # The erase read the person's index (LRANGE pi:<lead>) and its
            # commit (MULTI ... EXEC) waits in the query buffer behind the
            # paused write
            return lranges() > read_before and [
                c for c in r.client_list()
                if int(c["addr"].rsplit(":", 1)[1]) in ports and "b" in c["flags"]
                and int(c["qbuf"]) > 0]
        r.execute_command("CLIENT", "PAUSE", 20000, "WRITE")
        try:
            inflight.sock.send_multipart([b"", b"PUBLISH", msgpack.packb(forget)])
            wait_until(blocked_exec, timeout=10, what="leads' commit held by the pause")
            leads_d.kill9()
            # Redis has dropped the connection (and its queued EXEC) before
            # the pause ends
            wait_until(lambda: not [c for c in r.client_list()
                                    if int(c["addr"].rsplit(":", 1)[1]) in ports],
                       timeout=10, what="leads' connections closed")
        finally:
            r.execute_command("CLIENT", "UNPAUSE")
        after = sorted((k, v) for k, v in self.redis_dump() if not k.endswith(b":subs"))
        self.assertEqual(after, before)                 # nothing half-applied
        leads_d.start()
        self.c["leads"] = self.wait_ready("leads", timeout=30)
        self.assertEqual(self.c["leads"].ok("PUBLISH", forget), {"id": forget["id"], "duplicate": False})
        self.settle()
        # retention counts only customers it knows; this person is none
        self.assertEqual([self.c[svc].ok("STATS")["counters"].get("forgotten")
                          for svc in ("leads", "campaign", "sales")], [1, 1, 1])
        self.assertEqual([k for k, v in self.redis_dump() if self.leaks(k + b" " + v)], [])
        events = self.replay_all("leads")
        self.assertEqual(self.leaks(json.dumps(events)), [])
        self.assertEqual([e["type"] for e in events].count("lead.forgotten"), 1)
        self.assertEqual(self.c["leads"].ok("PUBLISH", forget), {"id": forget["id"], "duplicate": True})
        self.stop_clean()


class TestPrivacyRedelivery(PrivacyCase):
    def test_consumers_apply_lead_forgotten_again_as_a_no_op(self):
        """Each consumer of lead.forgotten, killed and restarted with its
        checkpoint moved back before it (as if the commit had been lost),
        applies it again without changing anything."""
        self.journey()
        self.settle()
        self.forget()
        fseq = [e["seq"] for e in self.replay_all("leads") if e["type"] == "lead.forgotten"][0]
        consumers = ("campaign", "sales", "retention")
        forgotten = [self.c[svc].ok("STATS")["counters"]["forgotten"] for svc in consumers]
        self.assertEqual(forgotten, [1, 1, 1])
        moving = (b":subs", b":ckpt", b":stats", b":lease", b":fence")

        def state():
            return sorted((k, v) for k, v in self.redis_dump()
                          if not k.endswith(moving) and not k.startswith(b"{funnel:gateway}"))
        before = state()
        r = self.redis.client()
        for svc in consumers:
            d = [d for d in self.daemons if d.name == svc][0]
            d.kill9()
            r.hset("{funnel:%s}:ckpt" % svc, "leads", fseq - 1)
            d.start()
            self.c[svc] = self.wait_ready(svc, timeout=30)
        wait_until(lambda: all(int(r.hget("{funnel:%s}:ckpt" % svc, "leads") or 0) >= fseq
                               for svc in consumers), timeout=20, what="lead.forgotten applied again")
        self.settle()
        self.assertEqual([self.c[svc].ok("STATS")["counters"]["forgotten"] for svc in consumers],
                         forgotten)
        after = state()
        self.assertEqual([k for k, _ in after], [k for k, _ in before])
        self.assertEqual([kv for kv in after if kv not in before], [])
        self.stop_clean()


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
