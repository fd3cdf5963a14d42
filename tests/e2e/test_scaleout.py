"""Scale-out end to end (proto/README.md section 7): two instances of leads
splitting 16 partitions, campaign and sales single; PUBLISH to the wrong
instance answers `moved` with the owner's `api`; sales receives every lead
exactly once from both instances; totals and e-mail uniqueness stay exact
across instances; moving partitions (rewrite the file, restart both leads)
loses and doubles nothing; a second process claiming an owned partition
refuses to start. Real redis-server, real daemons, real sockets."""
import json
import os
import signal
import subprocess
import threading
import time
import unittest
import urllib.error
import urllib.request

from funnel_e2e import (SERVICES, Client, Daemon, FunnelTestCase, binary, event, free_port,
                        owns_set, part_of, release_ports, wait_until)

PARTITIONS = 16


class ScaleOutCase(FunnelTestCase):
    def setUp(self):
        super().setUp()
        self.ports = []
        self.inst = {}
        for name in ("a", "b", "c", "s1", "s2"):
            api, pub = free_port(), free_port()
            self.ports += [api, pub]
            self.inst[name] = ("tcp://127.0.0.1:%d" % api, "tcp://127.0.0.1:%d" % pub)

    def tearDown(self):
        super().tearDown()
        release_ports(self.ports)

    def write_config(self, owns, path=None, sales=None):
        """The topology with leads split: owns = {instance: "ranges"} (and
        sales too when sales is given)."""
        lines = ["redis", '    url = "%s"' % self.redis.url]
        for svc in SERVICES:
            api, pub = self.topology.ports[svc]
            lines.append(svc)
            if svc == "monitor":
                lines.append('    http = "127.0.0.1:%d"' % api)
            else:
                lines.append('    api = "tcp://127.0.0.1:%d"' % api)
            lines.append('    pub = "tcp://127.0.0.1:%d"' % pub)
            split = owns if svc == "leads" else sales if svc == "sales" else None
            if split:
                lines += ["    partitions = %d" % PARTITIONS, "    lease_ms = 1000",
                          "    instances"]
                for name, ranges in split.items():
                    lines += ["        %s" % name,
                              '            api = "%s"' % self.inst[name][0],
                              '            pub = "%s"' % self.inst[name][1],
                              '            owns = "%s"' % ranges]
        path = path or self.topology.path
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n" + getattr(self, "extra", ""))
        self.owner = {}
        for name, ranges in owns.items():
            try:
                for p in owns_set(ranges):
                    self.owner[p] = name
            except ValueError:
                pass                # a malformed file on purpose
        return path

    def daemon(self, name, binary, args=None, config=None):
        d = Daemon(name, binary, config or self.topology.path, self.workdir, args=args)
        d.start()
        self.daemons.append(d)
        return d

    def client(self, endpoint):
        c = Client(endpoint)
        self.clients.append(c)
        return c

    def wait_ready(self, endpoint, daemon):
        c = self.client(endpoint)

        def up():
            self.assertTrue(daemon.running(), daemon.output()[-2000:])
            try:
                return c.call("PING", timeout=0.5)[0] == "OK"
            except TimeoutError:
                return False
        wait_until(up, timeout=20, what="%s ready" % daemon.name)
        return c

    def start_leads(self, name):
        d = self.daemon("leads-" + name, "funnel-leads", ["--instance", name])
        self.leads[name] = (d, self.wait_ready(self.inst[name][0], d))

    def start_all(self, owns, sales=None):
        self.write_config(owns, sales=sales)
        self.campaign = self.daemon("campaign", "funnel-campaign")
        self.wait_ready(self.topology.api("campaign"), self.campaign)
        self.leads = {}
        for name in owns:
            self.start_leads(name)
        if not sales:
            # A long lease: the move test pauses sales (SIGSTOP) for seconds
            self.sales = self.daemon("sales", "funnel-sales", ["--set", "sales/sla_s=0",
                                                               "--set", "sales/lease_ms=60000"])
            self.sales_api = self.wait_ready(self.topology.api("sales"), self.sales)
            return
        self.sales_instances = {}
        for name in sales:
            d = self.daemon("sales-" + name, "funnel-sales",
                            ["--set", "sales/sla_s=0", "--instance", name])
            self.sales_instances[name] = (d, self.wait_ready(self.inst[name][0], d))
        self.sales_api = self.sales_instances[next(iter(sales))][1]

    def to_sql(self, lead, email=None):
        """A lead captured and qualified to SQL, sent to its owner."""
        owner = self.owner[part_of(lead)]
        batch = [event("lead.capture", {"lead": lead, "email": email or "%s@x.io" % lead}),
                 event("lead.qualify", {"lead": lead, "stage": "sql"})]
        self.leads[owner][1].ok("PUBLISH", batch)
        return batch

    def deals(self):
        return self.sales_api.ok("STATS")["counters"].get("deals", 0)

    def settle_deals(self, n):
        wait_until(lambda: self.deals() >= n, timeout=40, what="%d deals in sales" % n)
        time.sleep(1.0)             # anything doubled would show by now
        self.assertEqual(self.deals(), n)


class TestScaleOut(ScaleOutCase):
    def test_split_moved_exact(self):
        self.start_all({"a": "0-7", "b": "8-15"})
        a, b = self.leads["a"][1], self.leads["b"][1]
        ping = a.ok("PING")
        self.assertEqual(ping["instance"], "a")
        leads = ["lead%d" % i for i in range(120)]
        self.assertTrue({self.owner[part_of(x)] for x in leads} == {"a", "b"})
        for x in leads:
            self.to_sql(x)

        # The wrong instance: moved, the owner's api, nothing applied
        wrong = next(x for x in ["w%d" % i for i in range(100)] if self.owner[part_of(x)] == "b")
        status, err = a.call("PUBLISH", event("lead.capture", {"lead": wrong}))
        self.assertEqual((status, err["code"], err["api"]), ("ERR", "moved", self.inst["b"][0]))
        self.assertNotIn("index", err)
        mine = next(x for x in ["m%d" % i for i in range(100)] if self.owner[part_of(x)] == "a")
        status, err = a.call("PUBLISH", [event("lead.capture", {"lead": mine}),
                                         event("lead.capture", {"lead": wrong})])
        self.assertEqual((status, err["code"], err["index"], err["api"]),
                         ("ERR", "moved", 1, self.inst["b"][0]))
        status, got = a.call("GET", {"kind": "lead", "id": mine})
        self.assertEqual((status, got["code"]), ("ERR", "not_found"))   # nothing of the batch

        # Every lead reaches sales exactly once, from both instances
        self.settle_deals(len(leads))
        for x in leads[:5]:
            d = self.sales_api.ok("GET", {"kind": "deal", "id": "L%s-1" % x})
            self.assertEqual(d["lead"], x)

        # Envelopes carry part; each instance's outbox holds only its partitions
        for name, (_, c) in self.leads.items():
            parts = c.ok("STATS")["parts"]
            self.assertEqual({int(p) for p in parts},
                             {p for p, o in self.owner.items() if o == name})
            p = next(int(p) for p, seq in parts.items() if seq > 0)
            page = c.ok("REPLAY", {"partition": p, "from": 1, "limit": 1000})
            self.assertEqual([e["seq"] for e in page["events"]],
                             list(range(1, len(page["events"]) + 1)))
            self.assertTrue(all(e["part"] == p for e in page["events"]))
            other = next(q for q, o in self.owner.items() if o != name)
            status, err = c.call("REPLAY", {"partition": other, "from": 1})
            self.assertEqual((status, err["code"]), ("ERR", "moved"))

        # Totals are service-wide from either instance
        for _, c in self.leads.values():
            self.assertEqual(c.ok("STATS")["counters"]["sql"], len(leads))
            self.assertEqual(c.ok("GET", {"kind": "reps"})["sql"], len(leads))

        # One e-mail, one lead, across instances: the second capture (its
        # lead in the other instance's partitions) becomes an alias
        x = next(x for x in ["ea%d" % i for i in range(100)] if self.owner[part_of(x)] == "a")
        y = next(y for y in ["eb%d" % i for i in range(100)] if self.owner[part_of(y)] == "b")
        a.ok("PUBLISH", event("lead.capture", {"lead": x, "email": "same@x.io"}))
        b.ok("PUBLISH", event("lead.capture", {"lead": y, "email": "same@x.io"}))
        self.assertEqual(b.ok("STATS")["counters"]["leads"], len(leads) + 1)
        self.assertEqual(b.ok("GET", {"kind": "lead", "id": y})["lead"], x)

    def test_concurrent_instances_keep_shared_data_exact(self):
        # Two clients at once, one per instance, capturing the same 60
        # e-mails under different lead ids: one lead per e-mail, the
        # global totals (partition 0, written by both) exact
        self.start_all({"a": "0-7", "b": "8-15"})
        ids = {"a": [], "b": []}
        for i in range(400):
            x = "x%d" % i
            ids[self.owner[part_of(x)]].append(x)
        n = 60
        self.assertTrue(len(ids["a"]) >= n and len(ids["b"]) >= n)
        errors = []

        def run(name):
            c = Client(self.inst[name][0])
            try:
                for i in range(n):
                    c.ok("PUBLISH", event("lead.capture", {"lead": ids[name][i],
                                                           "email": "m%d@x.io" % i}))
            except Exception as e:      # reported below, in the test's thread
                errors.append(e)
            finally:
                c.close()
        threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertFalse(any(t.is_alive() for t in threads))
        self.assertEqual(errors, [])
        a = self.leads["a"][1]
        counters = a.ok("STATS")["counters"]
        self.assertEqual(counters["leads"], n)
        self.assertEqual(counters["aliased"], n)
        self.assertEqual(a.ok("GET", {"kind": "reps"})["leads"], n)
        for i in range(n):
            la = a.ok("GET", {"kind": "lead", "id": ids["a"][i]})["lead"]
            lb = a.ok("GET", {"kind": "lead", "id": ids["b"][i]})["lead"]
            self.assertEqual(la, lb)

    def test_partition_move_loses_and_doubles_nothing(self):
        self.start_all({"a": "0-7", "b": "8-15"})
        first = ["p%d" % i for i in range(80)]
        for x in first:
            self.to_sql(x)
        self.settle_deals(len(first))
        moved = {4, 5, 6, 7}
        before = {p: s for p, s in self.leads["a"][1].ok("STATS")["parts"].items()
                  if int(p) in moved}
        self.assertTrue(any(s > 0 for s in before.values()), before)

        # Stop both, give b 4-7 as well, start both: sales runs on, but
        # paused past its heartbeat timeout so it misses live events and
        # must REPLAY the moved partitions from a first (which says moved)
        os.kill(self.sales.proc.pid, signal.SIGSTOP)
        for name in ("a", "b"):
            self.assertEqual(self.leads[name][0].stop(), 0)
        self.write_config({"a": "0-3", "b": "4-15"})
        for name in ("a", "b"):
            self.start_leads(name)
        after = self.leads["b"][1].ok("STATS")["parts"]
        for p, seq in before.items():
            self.assertEqual(after[p], seq)            # the seq continues on b
        second = ["q%d" % i for i in range(80)]
        for x in second:
            self.to_sql(x)
        # Old ones again, now to their new owners: duplicates, no new deals
        for x in first[:20]:
            owner = self.owner[part_of(x)]
            reply = self.leads[owner][1].ok("PUBLISH", [event("lead.capture", {"lead": x,
                                                              "email": "%s@x.io" % x})])
            self.assertEqual(reply["accepted"], 1)     # a new id: a merge, not a new lead
        time.sleep(4)
        os.kill(self.sales.proc.pid, signal.SIGCONT)
        self.settle_deals(len(first) + len(second))
        self.assertIn("moved from %s to %s" % (self.inst["a"][0], self.inst["b"][0]),
                      self.sales.output())
        moved_leads = [x for x in second if part_of(x) in moved]
        self.assertTrue(moved_leads)
        self.assertEqual(self.leads["b"][1].ok("STATS")["counters"]["leads"],
                         len(first) + len(second))
        # b's outbox of a moved partition: contiguous from 1, a's then b's
        p = int(next(iter(before)))
        page = self.leads["b"][1].ok("REPLAY", {"partition": p, "from": 1})
        self.assertEqual([e["seq"] for e in page["events"]],
                         list(range(1, len(page["events"]) + 1)))
        self.assertGreater(len(page["events"]), before[str(p)])

    def test_kill9_of_an_instance_loses_and_doubles_nothing(self):
        self.start_all({"a": "0-7", "b": "8-15"})
        leads = ["k%d" % i for i in range(150)]
        for i, x in enumerate(leads):
            if i == 50:
                self.leads["b"][0].kill9()
                self.start_leads("b")          # same endpoint: takes its leases over
            if i == 100:
                self.sales.kill9()
                self.sales.start()
            self.to_sql(x)
        self.sales_api = self.wait_ready(self.topology.api("sales"), self.sales)
        self.settle_deals(len(leads))
        self.assertEqual(self.leads["a"][1].ok("STATS")["counters"]["sql"], len(leads))

    def test_moved_and_refused_batches_leave_redis_unchanged(self):
        """moved: a single event (api exact, no index), a batch whose first
        events are owned (index of the first unowned one), REPLAY of an
        unowned partition; a batch over several of a's partitions failing on
        its last event: nothing of any of them in Redis. Then the same batch
        without the bad event applies in one go to every partition it spans."""
        self.write_config({"a": "0-7", "b": "8-15"})
        self.leads = {}
        for name in ("a", "b"):
            self.start_leads(name)
        a = self.leads["a"][1]
        r = self.redis.client()

        def snapshot():
            # Every key and value; leases are renewed with the same value
            return {k: r.dump(k) for k in r.keys("*")}

        def named(prefix, owner, parts=None):
            return [x for x in ("%s%d" % (prefix, i) for i in range(400))
                    if self.owner[part_of(x)] == owner
                    and (parts is None or part_of(x) in parts)]
        mine = named("m", "a")
        spread = []
        for x in mine:              # three leads in three different partitions of a
            if part_of(x) not in {part_of(y) for y in spread}:
                spread.append(x)
        spread = spread[:3]
        self.assertEqual(len({part_of(x) for x in spread}), 3)
        wrong = named("w", "b")[0]
        before = snapshot()

        status, err = a.call("PUBLISH", event("lead.capture", {"lead": wrong}))
        self.assertEqual(status, "ERR")
        self.assertEqual(set(err), {"code", "message", "api"})
        self.assertEqual((err["code"], err["api"]), ("moved", self.inst["b"][0]))
        self.assertIn("partition: %d is owned by instance 'b' at %s, not by 'a'"
                      % (part_of(wrong), self.inst["b"][0]), err["message"])

        batch = [event("lead.capture", {"lead": x, "email": "%s@x.io" % x}) for x in spread]
        status, err = a.call("PUBLISH", batch + [event("lead.capture", {"lead": wrong})])
        self.assertEqual((status, err["code"], err["index"], err["api"]),
                         ("ERR", "moved", 3, self.inst["b"][0]))

        status, err = a.call("REPLAY", {"partition": part_of(wrong), "from": 1})
        self.assertEqual(status, "ERR")
        self.assertEqual((err["code"], err["api"]), ("moved", self.inst["b"][0]))
        self.assertNotIn("index", err)
        status, err = a.call("REPLAY", {"partition": PARTITIONS, "from": 1})
        self.assertEqual((status, err["code"]), ("ERR", "invalid"))
        self.assertIn("partition: must be 0..%d" % (PARTITIONS - 1), err["message"])

        # Owned by a, three partitions, the last event fails its state check
        status, err = a.call("PUBLISH", batch + [event("lead.qualify",
                                                       {"lead": named("u", "a")[0], "stage": "sql"})])
        self.assertEqual((status, err["code"], err["index"]), ("ERR", "not_found", 3), err)
        self.assertEqual(snapshot(), before)          # nothing of any refused request

        parts_before = a.ok("STATS")["parts"]
        self.assertEqual(a.ok("PUBLISH", batch), {"accepted": 3, "duplicates": 0})
        parts_after = a.ok("STATS")["parts"]
        for x in spread:
            self.assertEqual(a.ok("GET", {"kind": "lead", "id": x})["lead"], x)
            p = str(part_of(x))
            self.assertGreater(parts_after[p], parts_before.get(p, 0))
            page = a.ok("REPLAY", {"partition": int(p), "from": 1})
            self.assertIn(x, [e["data"].get("lead") for e in page["events"]])
        self.assertNotEqual(snapshot(), before)       # the comparison can fail

    def test_a_second_owner_is_refused(self):
        self.start_all({"a": "0-7", "b": "8-15"})
        # c claims a's partitions in its own file: a holds their leases
        other = self.write_config({"c": "0-7", "b": "8-15"},
                                  path=os.path.join(self.workdir, "other.cfg"))
        c = self.daemon("leads-c", "funnel-leads", ["--instance", "c"], config=other)
        wait_until(lambda: not c.running(), timeout=20, what="c to give up")
        self.assertEqual(c.proc.returncode, 1)
        self.assertIn("owned by another instance", c.output())
        self.assertIn("refusing to start", c.output())
        self.assertTrue(self.leads["a"][0].running())
        self.leads["a"][1].ok("PING")

    def test_bad_instances_exit_2(self):
        cases = [({"a": "0-8", "b": "8-15"}, "a", "owned by both"),
                 ({"a": "0-6", "b": "8-15"}, "a", "owned by no instance"),
                 ({"a": "0-7", "b": "8-15"}, "z", "no such instance"),
                 ({"a": "0-7", "b": "8-x"}, "a", "expected partition ranges")]
        for i, (owns, name, words) in enumerate(cases):
            path = self.write_config(owns, path=os.path.join(self.workdir, "bad%d.cfg" % i))
            d = self.daemon("bad%d" % i, "funnel-leads", ["--instance", name], config=path)
            wait_until(lambda: not d.running(), timeout=10, what="exit")
            self.assertEqual(d.proc.returncode, 2, d.output())
            self.assertIn(words, d.output())
        # Out of range, a trailing comma, no --instance, --instance without
        # instances: exit 2, the line names the field and the instances
        more = [({"a": "0-7", "b": "8-16"}, "a", "leads/instances/b/owns = '8-16': expected "
                 "partition ranges of 0..15"),
                ({"a": "0-7,", "b": "8-15"}, "a", "leads/instances/a/owns = '0-7,'"),
                ({"a": "0-7", "b": "8-15"}, None, "leads/instance: instances are listed; run "
                 "one with --instance NAME (one of: a, b)"),
                ({"a": "0-7", "b": "8-15"}, "z", "leads/instance = 'z': no such instance in "
                 "leads/instances; run one with --instance NAME (one of: a, b)")]
        for i, (owns, name, words) in enumerate(more):
            path = self.write_config(owns, path=os.path.join(self.workdir, "more%d.cfg" % i))
            d = self.daemon("more%d" % i, "funnel-leads",
                            ["--instance", name] if name else [], config=path)
            wait_until(lambda: not d.running(), timeout=10, what="exit")
            self.assertEqual(d.proc.returncode, 2, d.output())
            self.assertIn(words, d.output())
        d = self.daemon("noinst", "funnel-leads", ["--instance", "a"])   # kit's file: none
        wait_until(lambda: not d.running(), timeout=10, what="exit")
        self.assertEqual(d.proc.returncode, 2, d.output())
        self.assertIn("--instance a: the [leads] section lists no instances", d.output())
        helped = subprocess.run([binary("funnel-leads"), "--help"], capture_output=True,
                                text=True, timeout=10)
        self.assertEqual(helped.returncode, 0)
        self.assertIn("--instance NAME    run instance NAME of leads/instances", helped.stdout)

    def test_two_instances_downstream_too(self):
        # leads a/b consume campaign (single); sales s1/s2 consume leads a/b
        self.start_all({"a": "0-7", "b": "8-15"}, sales={"s1": "0-9", "s2": "10-15"})
        camp = self.client(self.topology.api("campaign"))
        camp.ok("PUBLISH", event("campaign.upsert", {"campaign": "c1", "name": "C1",
                                                     "channel": "email"}))
        touches = [event("touch", {"campaign": "c1", "kind": "click", "contact": "t%d" % i})
                   for i in range(60)]
        camp.ok("PUBLISH", touches)
        leads = ["s%d" % i for i in range(100)]
        for x in leads:
            self.to_sql(x)
        self.settle_deals(len(leads))
        # each touch applied by exactly one leads instance
        wait_until(lambda: self.leads["a"][1].ok("STATS")["counters"].get("consumed") == 60,
                   timeout=30, what="60 touches consumed")
        time.sleep(1.0)
        self.assertEqual(self.leads["b"][1].ok("STATS")["counters"]["consumed"], 60)
        # each sales instance opened only the deals of its partitions
        for name, (_, c) in self.sales_instances.items():
            parts = c.ok("STATS")["parts"]
            self.assertEqual({int(p) for p in parts},
                             owns_set("0-9" if name == "s1" else "10-15"))
        for x in leads[:10]:
            d = self.sales_api.ok("GET", {"kind": "deal", "id": "L%s-1" % x})
            self.assertEqual(d["lead"], x)


class TestScaleOutPrivacy(ScaleOutCase):
    """lead.forget with two leads instances (per-partition outboxes): the
    person's index names (partition, seq); the erase, applied by the owner
    of the lead's partition, redacts its own outbox entries and the one in
    the other instance's partition (lead.merged of an alias captured
    there); REPLAY of both partitions is clean afterwards."""

    def replay_all(self, client, part):
        page = client.ok("REPLAY", {"partition": part, "from": 1, "limit": 1000})
        return page["events"]

    def test_erase_redacts_both_instances_outboxes(self):
        self.start_all({"a": "0-7", "b": "8-15"})
        a, b = self.leads["a"][1], self.leads["b"][1]
        x = next(x for x in ["px%d" % i for i in range(100)] if self.owner[part_of(x)] == "a")
        y = next(y for y in ["py%d" % i for i in range(100)] if self.owner[part_of(y)] == "b")
        px, py = part_of(x), part_of(y)
        email = "%s@secret.example" % x
        a.ok("PUBLISH", event("lead.capture", {"lead": x, "email": email,
                                               "company": "Secret Co", "region": "emea"}))
        # The same e-mail under y, at y's owner: an alias of x, its
        # lead.merged in b's partition py, x's data
        b.ok("PUBLISH", event("lead.capture", {"lead": y, "email": email}))
        self.assertEqual(b.ok("GET", {"kind": "lead", "id": y})["lead"], x)

        captured = [e for e in self.replay_all(a, px)
                    if e["type"] == "lead.captured" and e["data"]["lead"] == x]
        merged = [e for e in self.replay_all(b, py)
                  if e["type"] == "lead.merged" and e["data"]["lead"] == x]
        self.assertEqual((len(captured), len(merged)), (1, 1))
        self.assertEqual(captured[0]["data"]["email"], email)
        self.assertEqual(merged[0]["data"]["alias"], y)

        # The export (from either instance) lists [part, seq] pairs
        for c in (a, b):
            outbox = c.ok("GET", {"kind": "export", "lead": x})["outbox"]
            self.assertEqual(outbox, [[px, captured[0]["seq"]], [py, merged[0]["seq"]]])

        a.ok("PUBLISH", event("lead.forget", {"lead": x}))

        # Each partition's outbox: same seqs and ids, the person's data gone
        after_x = {e["seq"]: e for e in self.replay_all(a, px)}
        after_y = {e["seq"]: e for e in self.replay_all(b, py)}
        ex, ey = after_x[captured[0]["seq"]], after_y[merged[0]["seq"]]
        self.assertEqual((ex["id"], ey["id"]), (captured[0]["id"], merged[0]["id"]))
        self.assertTrue(ex["data"]["redacted"] and ey["data"]["redacted"])
        for field in ("email", "company", "region"):
            self.assertNotIn(field, ex["data"])
        self.assertNotIn("alias", ey["data"])
        for events in (after_x.values(), after_y.values()):
            text = json.dumps(list(events))
            self.assertNotIn(email, text)
            self.assertNotIn("Secret Co", text)
        for c in (a, b):
            self.assertEqual(c.ok("GET", {"kind": "export", "lead": x})["outbox"], [])
        # Nothing else written into b's outbox: its seqs are what they were
        self.assertEqual(sorted(after_y), list(range(1, len(after_y) + 1)))
        self.assertEqual(b.ok("STATS")["parts"][str(py)], len(after_y))


class TestScaleOutWebhooks(ScaleOutCase):
    """A webhook subscription while leads runs as two instances: each
    partition followed on its own (seq from 1, REPLAY from its owner),
    positions kept per partition across a gateway restart."""

    def test_webhook_follows_both_instances(self):
        import test_gateway     # its Receiver (a module import: no test classes here)
        hook_port, http_port = free_port(), free_port()
        self.ports += [hook_port, http_port]
        receiver = test_gateway.Receiver(hook_port)
        receiver.start()
        self.addCleanup(receiver.stop)
        tokens = os.path.join(self.workdir, "tokens")
        with open(tokens, "w") as f:
            f.write("tok-0123456789abcdef-xyz admin *\n")
        self.extra = ('gateway\n    http = "127.0.0.1:%d"\n    tokens = "%s"\n'
                      'webhooks\n    crm\n        url = "http://127.0.0.1:%d/hook"\n'
                      '        types = "lead.captured"\n        secret = "s"\n'
                      '        start = "earliest"\n' % (http_port, tokens, hook_port))
        self.start_all({"a": "0-7", "b": "8-15"})

        def start_gateway(name):
            gw = self.daemon(name, "funnel-gateway")
            wait_until(lambda: "webhook crm: leads:15 from seq" in gw.output()
                       or not gw.running(), timeout=20, what="webhook started")
            self.assertTrue(gw.running(), gw.output()[-2000:])
            return gw

        def captured():
            out = []
            for headers, body in receiver.events():
                envelope = json.loads(body)
                if envelope["type"] == "lead.captured":
                    out.append((headers, envelope))
            return out

        def settle(leads):
            wait_until(lambda: {e["data"]["lead"] for _, e in captured()} >= set(leads),
                       timeout=40, what="%d leads delivered" % len(leads))
            time.sleep(1.0)         # anything doubled would show by now
            got = captured()
            ids = [e["id"] for _, e in got]
            self.assertEqual(len(ids), len(set(ids)), "an event delivered twice")
            self.assertEqual(sorted(e["data"]["lead"] for _, e in got), sorted(leads))
            last = {}
            for headers, e in got:
                # part as the service sends it, and seq order per partition
                self.assertEqual(e["part"], part_of(e["data"]["lead"]))
                self.assertEqual(headers["X-Funnel-Part"], str(e["part"]))
                self.assertEqual(headers["X-Funnel-Seq"], "leads:%d" % e["seq"])
                self.assertGreater(e["seq"], last.get(e["part"], 0))
                last[e["part"]] = e["seq"]
            return last

        gw = start_gateway("gateway")
        first = ["wh%d" % i for i in range(60)]
        self.assertEqual({self.owner[part_of(x)] for x in first}, {"a", "b"})
        for x in first:
            self.to_sql(x)
        last = settle(first)
        self.assertEqual(gw.stop(), 0)
        # Positions per (subscription, service, partition) in Redis; the
        # services without instances keep their one field
        stored = {k.decode(): int(v) for k, v in
                  self.redis.client().hgetall("{funnel:gateway}:wh:crm").items()}
        self.assertIn("campaign", stored)
        self.assertNotIn("leads", stored)
        for p, seq in last.items():
            self.assertGreaterEqual(stored["leads:%d" % p], seq)

        # Events while the gateway is down, then a restart: delivered from
        # the stored positions, the first ones not again
        second = ["wi%d" % i for i in range(60)]
        for x in second:
            self.to_sql(x)
        # ...with a new subscription too: start = latest takes each
        # partition's seq from its owner's STATS "parts", so it POSTs nothing
        self.extra += ('    late\n        url = "http://127.0.0.1:%d/hook"\n'
                       '        types = "lead."\n        secret = "s"\n' % hook_port)
        self.write_config({"a": "0-7", "b": "8-15"})
        gw2 = start_gateway("gateway2")
        settle(first + second)
        for name, (_, c) in self.leads.items():
            for p, seq in c.ok("STATS")["parts"].items():
                wait_until(lambda: "webhook late: leads:%s from seq %d (new, latest)"
                           % (p, seq + 1) in gw2.output(), timeout=10, what="late at %s" % p)
        self.assertEqual(len(receiver.events()), len(first) + len(second))


class TestClientsRoute(ScaleOutCase):
    def test_gateway_routes_by_partition(self):
        http_port, api_port = free_port(), free_port()
        self.ports += [http_port, api_port]
        tokens = os.path.join(self.workdir, "tokens")
        with open(tokens, "w") as f:
            f.write("tok-0123456789abcdef-xyz admin *\n")
        self.extra = ('gateway\n    http = "127.0.0.1:%d"\n    tokens = "%s"\n'
                      '    api = "tcp://127.0.0.1:%d"\n' % (http_port, tokens, api_port))
        self.start_all({"a": "0-7", "b": "8-15"})
        gw = self.daemon("gateway", "funnel-gateway")

        def call(method, path, body=None):
            req = urllib.request.Request("http://127.0.0.1:%d%s" % (http_port, path),
                                         method=method,
                                         data=json.dumps(body).encode() if body else None,
                                         headers={"Authorization": "Bearer tok-0123456789abcdef-xyz",
                                                  "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        def up():
            self.assertTrue(gw.running(), gw.output()[-2000:])
            try:
                return call("GET", "/v1/health")[0] == 200
            except OSError:
                return False
        wait_until(up, timeout=20, what="gateway up")
        xa = next(x for x in ["ga%d" % i for i in range(100)] if self.owner[part_of(x)] == "a")
        xb = next(x for x in ["gb%d" % i for i in range(100)] if self.owner[part_of(x)] == "b")
        for x in (xa, xb):
            status, body = call("POST", "/v1/events", event("lead.capture", {"lead": x}))
            self.assertEqual(status, 200, body)
        # One request, two instances: refused whole (it would not be atomic)
        ya = next(x for x in ["gc%d" % i for i in range(100)] if self.owner[part_of(x)] == "a")
        status, body = call("POST", "/v1/events", [event("lead.capture", {"lead": ya}),
                                                   event("lead.capture", {"lead": xb})])
        self.assertEqual((status, body["code"], body["index"]), (400, "invalid", 1), body)
        status, body = call("GET", "/v1/leads/lead?id=%s" % ya)
        self.assertEqual(status, 404, body)
        status, body = call("GET", "/v1/leads/lead?id=%s" % xb)
        self.assertEqual((status, body["lead"]), (200, xb))
        self.assertEqual(self.leads["b"][1].ok("GET", {"kind": "lead", "id": xb})["lead"], xb)

    def ctl(self, *args, stdin=None):
        return subprocess.run([binary("funnelctl"), "-c", self.topology.path] + list(args),
                              input=stdin, capture_output=True, text=True, timeout=60)

    def test_funnelctl_monitor_and_sim_route_by_partition(self):
        self.start_all({"a": "0-7", "b": "8-15"})
        # funnelctl: a batch over both instances, split by owner
        batch = [event("lead.capture", {"lead": "c%d" % i, "email": "c%d@x.io" % i})
                 for i in range(40)]
        out = self.ctl("publish", "leads", json.dumps(batch))
        self.assertEqual(out.returncode, 0, out.stderr)
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertEqual((summary["accepted"], summary["duplicates"]), (40, 0))
        one = event("lead.capture", {"lead": "single1"})
        out = self.ctl("publish", "leads", json.dumps(one))
        self.assertEqual(out.returncode, 0, out.stderr)
        # stats: one reply per instance
        out = self.ctl("stats", "leads")
        self.assertEqual(out.returncode, 0, out.stderr)
        stats = json.loads(out.stdout)["instances"]
        self.assertEqual(set(stats), {"a", "b"})
        self.assertEqual(stats["a"]["counters"]["leads"], 41)
        # replay of a partition, asked of the wrong instance first: followed
        p = next(q for q, o in self.owner.items() if o == "b")
        out = self.ctl("replay", "leads", "--partition", str(p))
        self.assertEqual(out.returncode, 0, out.stderr)
        for line in out.stdout.splitlines():
            self.assertEqual(json.loads(line)["part"], p)

        # The monitor: counts from either instance's STATS, service wide
        mon = self.daemon("monitor", "funnel-monitor")
        url = "http://%s/api/funnel" % self.topology.http()

        def leads_stage():
            self.assertTrue(mon.running(), mon.output()[-2000:])
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    stages = json.loads(r.read())["stages"]
            except OSError:
                return None
            return {st["name"]: st["count"] for st in stages}.get("leads")
        wait_until(lambda: leads_stage() == 41, timeout=20, what="monitor leads = 41")
        # ... and each instance's partitions and seqs
        with urllib.request.urlopen(url, timeout=5) as r:
            instances = json.loads(r.read())["services"]["leads"]["instances"]
        self.assertEqual(set(instances), {"a", "b"})
        self.assertTrue(instances["a"]["up"] and instances["b"]["up"])
        self.assertEqual({int(p) for p in instances["b"]["parts"]},
                         {p for p, o in self.owner.items() if o == "b"})
        for name in ("a", "b"):
            self.assertEqual(instances[name]["seq"],
                             sum(self.leads[name][1].ok("STATS")["parts"].values()))

        # The simulator: events to their owners, none refused as moved
        for svc in ("retention",):
            d = self.daemon(svc, "funnel-" + svc)
            self.wait_ready(self.topology.api(svc), d)
        sim = self.daemon("sim", "funnel-sim", ["--rate", "300", "--duration", "4"])
        wait_until(lambda: not sim.running(), timeout=60, what="sim done")
        self.assertEqual(sim.proc.returncode, 0, sim.output()[-2000:])
        self.assertNotIn("moved", sim.output())
        captured = sum(self.leads[n][1].ok("STATS")["parts"].get(str(q), 0)
                       for n in ("a", "b") for q in range(PARTITIONS))
        self.assertGreater(captured, 41)


if __name__ == "__main__":
    unittest.main()
