"""funnelctl end to end: the real binary against real daemons (funnel-testsvc
standing in under a service's name, and the real services when built):
every command, JSON <-> msgpack types, batching, retries with the same ids,
and the documented exit codes (0 ok, 1 ERR, 2 usage/invalid JSON, 3 down)."""
import json
import os
import re
import select
import subprocess
import time

from funnel_e2e import BUILD, FunnelTestCase, binary, event, free_port, wait_until


def built(name):
    return os.path.exists(os.path.join(BUILD, "services", name, "funnel-%s" % name))


class CtlCase(FunnelTestCase):
    def ctl(self, *args, stdin=None, timeout=30):
        cmd = [binary("funnelctl"), "-c", self.topology.path] + list(args)
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)

    def start_standin(self, name="campaign"):
        """funnel-testsvc under a service's name: test.add {key, n} -> test.added."""
        d = self.daemon(name, "funnel-testsvc", env={"FUNNEL_TESTSVC_NAME": name})
        self.wait_ready(name)
        return d


class TestUsage(CtlCase):
    def test_help_documents_exit_codes(self):
        out = subprocess.run([binary("funnelctl"), "--help"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0)
        for word in ("ping", "publish", "get", "stats", "replay", "tail", "top", "Exit codes"):
            self.assertIn(word, out.stdout)
        self.assertRegex(out.stdout, r"3\s+a service is unreachable")

    def test_usage_errors_exit_2(self):
        self.assertEqual(subprocess.run([binary("funnelctl")], capture_output=True).returncode, 2)
        out = self.ctl("frobnicate")
        self.assertEqual(out.returncode, 2)
        self.assertIn("unknown command", out.stderr)
        out = self.ctl("ping", "nosuch")
        self.assertEqual(out.returncode, 2)
        self.assertIn("unknown service", out.stderr)
        out = self.ctl("publish", "campaign", "{not json")
        self.assertEqual(out.returncode, 2)
        self.assertIn("invalid JSON", out.stderr)
        out = self.ctl("publish", "campaign", "[1]")
        self.assertEqual(out.returncode, 2)
        out = subprocess.run([binary("funnelctl"), "-c", "/nonexistent/funnel.cfg", "ping"],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 2)

    def test_unreachable_exit_3(self):
        started = time.time()
        out = self.ctl("-t", "300", "-r", "1", "publish", "leads",
                       json.dumps({"type": "lead.capture", "data": {"lead": "x"}}))
        self.assertEqual(out.returncode, 3, out.stderr)
        self.assertIn("unreachable", out.stderr)
        self.assertLess(time.time() - started, 5)
        out = self.ctl("-t", "200", "ping", "sales")
        self.assertEqual(out.returncode, 3)
        self.assertIn("sales: unreachable", out.stderr)
        out = self.ctl("-t", "200", "top", "--once")
        self.assertEqual(out.returncode, 3)
        self.assertIn("DOWN", out.stdout)


class TestCommands(CtlCase):
    def setUp(self):
        super().setUp()
        self.start_standin("campaign")

    def test_ping_and_stats(self):
        out = self.ctl("ping", "campaign")
        self.assertEqual(out.returncode, 0, out.stderr)
        reply = json.loads(out.stdout)
        self.assertEqual(reply["svc"], "campaign")
        self.assertEqual(reply["redis"], "ok")
        # By endpoint too, and all four: the others are down -> exit 3, null
        out = self.ctl("ping", self.topology.api("campaign"))
        self.assertEqual(json.loads(out.stdout)["svc"], "campaign")
        out = self.ctl("-t", "200", "ping")
        self.assertEqual(out.returncode, 3)
        both = json.loads(out.stdout)
        self.assertEqual(both["campaign"]["svc"], "campaign")
        self.assertIsNone(both["leads"])
        out = self.ctl("stats", "campaign")
        self.assertEqual(out.returncode, 0)
        self.assertIn("accepted", json.loads(out.stdout)["counters"])

    def test_publish_one_event_duplicate_and_generated_id(self):
        ev = event("test.add", {"key": "k1", "n": 5})
        out = self.ctl("publish", "campaign", json.dumps(ev))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout), {"id": ev["id"], "duplicate": False})
        out = self.ctl("publish", "campaign", json.dumps(ev))
        self.assertEqual(json.loads(out.stdout), {"id": ev["id"], "duplicate": True})
        # Only type and data: v, ts, src and id are filled, the id printed
        out = self.ctl("publish", "campaign", '{"type": "test.add", "data": {"key": "k1", "n": 2}}')
        self.assertEqual(out.returncode, 0, out.stderr)
        reply = json.loads(out.stdout)
        self.assertRegex(reply["id"], r"^ctl-[A-Za-z0-9._:@+-]+-\d+-\d+-1$")
        self.assertLessEqual(len(reply["id"]), 64)
        self.assertIn("generated id %s" % reply["id"], out.stderr)
        out = self.ctl("get", "campaign", "counter", "k1")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout)["total"], 7)

    def test_err_replies_exit_1_with_code_and_message(self):
        # A float stays a float through JSON -> msgpack: n must be an integer
        out = self.ctl("publish", "campaign", json.dumps(event("test.add", {"key": "k", "n": 1.5})))
        self.assertEqual(out.returncode, 1)
        self.assertRegex(out.stderr, r"campaign: ERR invalid: .*n")
        out = self.ctl("publish", "campaign", json.dumps(event("lead.sql", {"lead": "x"})))
        self.assertEqual(out.returncode, 1)
        self.assertIn("ERR unknown_type", out.stderr)
        out = self.ctl("get", "campaign", "counter", "nobody")
        self.assertEqual(out.returncode, 1)
        self.assertIn("ERR not_found", out.stderr)
        out = self.ctl("get", "campaign", '{"kind": "nope"}')
        self.assertEqual(out.returncode, 1)
        self.assertIn("ERR invalid", out.stderr)

    def test_ndjson_stdin_batched(self):
        lines = [json.dumps(event("test.add", {"key": "b", "n": 1})) for _ in range(250)]
        lines.insert(10, "")                       # blank lines are skipped
        lines.append(json.dumps([event("test.add", {"key": "b", "n": 1}) for _ in range(3)]))
        out = self.ctl("publish", "campaign", "--batch", "100", stdin="\n".join(lines) + "\n")
        self.assertEqual(out.returncode, 0, out.stderr)
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertEqual(summary, {"events": 253, "accepted": 253, "duplicates": 0, "batches": 3})
        self.assertEqual(self.client("campaign").ok("GET", {"kind": "counter", "id": "b"})["total"], 253)
        # The same input again: all duplicates, nothing changes
        out = self.ctl("publish", "campaign", "-", stdin="\n".join(lines) + "\n")
        self.assertEqual(json.loads(out.stdout)["duplicates"], 253)
        self.assertEqual(self.client("campaign").ok("GET", {"kind": "counter", "id": "b"})["total"], 253)

    def test_ndjson_errors(self):
        good = json.dumps(event("test.add", {"key": "e", "n": 1}))
        out = self.ctl("publish", "campaign", stdin=good + "\n{oops\n" + good + "\n")
        self.assertEqual(out.returncode, 2)
        self.assertIn("line 2: invalid JSON", out.stderr)
        bad = json.dumps(event("test.add", {"key": "e", "n": "many"}))
        out = self.ctl("publish", "campaign", stdin="\n".join([good, good, bad, good]) + "\n")
        self.assertEqual(out.returncode, 1)
        self.assertIn("ERR invalid", out.stderr)
        self.assertIn("line 3", out.stderr)
        self.assertEqual(self.client("campaign").call("GET", {"kind": "counter", "id": "e"})[0], "ERR")

    def test_replay_and_tail(self):
        api = self.client("campaign")
        for i in range(5):
            api.ok("PUBLISH", event("test.add", {"key": "r", "n": i + 1}))
        out = self.ctl("replay", "campaign", "--from", "2")
        self.assertEqual(out.returncode, 0, out.stderr)
        events = [json.loads(line) for line in out.stdout.splitlines()]
        self.assertEqual([e["seq"] for e in events], [2, 3, 4, 5])
        self.assertEqual(events[0]["type"], "test.added")
        out = self.ctl("replay", "campaign", "--from", "1", "--limit", "2")
        self.assertEqual(len(out.stdout.splitlines()), 2)

        tail = subprocess.Popen([binary("funnelctl"), "-c", self.topology.path, "tail", "campaign",
                                 "test.", "-n", "3", "--timeout", "20"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Keep publishing until tail has seen three (slow joiner)
            def done():
                api.ok("PUBLISH", event("test.add", {"key": "t", "n": 1}))
                return tail.poll() is not None
            wait_until(done, 15, interval=0.2, what="tail exits after 3 events")
            lines = tail.stdout.read().splitlines()
        finally:
            tail.kill()
            tail.wait()
            tail.stdout.close()
            tail.stderr.close()
        self.assertEqual(tail.returncode, 0)
        self.assertEqual(len(lines), 3)
        for line in lines:
            ev = json.loads(line)
            self.assertEqual(ev["type"], "test.added")
            self.assertEqual(ev["svc"], "campaign")
        # A prefix that matches nothing, and --timeout ends it quietly
        out = self.ctl("tail", "campaign", "nothing.", "--timeout", "1")
        self.assertEqual((out.returncode, out.stdout), (0, ""))

    def test_top_once(self):
        out = self.ctl("-t", "200", "top", "--once")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertNotIn("\033[", out.stdout)
        for stage in ("reached", "engaged", "leads", "mql", "sql", "deals", "won", "customers",
                      "repeat", "lost"):
            self.assertRegex(out.stdout, r"(?m)^%s\s+\d+" % stage)
        self.assertRegex(out.stdout, r"(?m)^campaign\s+up\s")
        self.assertRegex(out.stdout, r"(?m)^leads\s+DOWN\s")


class TestRetry(CtlCase):
    def test_publish_retries_same_ids_until_acknowledged(self):
        # Nothing listens yet: funnelctl keeps re-sending the same bytes
        ev = event("test.add", {"key": "late", "n": 4})
        proc = subprocess.Popen([binary("funnelctl"), "-c", self.topology.path, "-t", "500",
                                 "-r", "40", "publish", "campaign", json.dumps(ev)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        self.start_standin("campaign")
        out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual(json.loads(out)["id"], ev["id"])
        api = self.client("campaign")
        self.assertEqual(api.ok("GET", {"kind": "counter", "id": "late"})["total"], 4)
        self.assertEqual(api.ok("STATS")["counters"]["accepted"], 1)


class TestRealServices(CtlCase):
    """funnelctl driving the real campaign and leads daemons."""

    def setUp(self):
        super().setUp()
        names = ["campaign", "leads", "sales", "retention"]
        if not all(built(n) for n in names):
            self.skipTest("service daemons not built")
        for n in names:
            self.daemon(n)
        for n in names:
            self.wait_ready(n)

    def test_publish_get_report_and_top(self):
        stdin = "\n".join(json.dumps(e) for e in [
            {"type": "campaign.upsert", "data": {"campaign": "c9", "name": "Nine",
                                                 "channel": "email"}},
            {"type": "touch", "data": {"campaign": "c9", "kind": "open", "contact": "x1"}},
            {"type": "touch", "data": {"campaign": "c9", "kind": "impression", "contact": "x2"}},
        ]) + "\n"
        out = self.ctl("publish", "campaign", stdin=stdin)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout)["accepted"], 3)
        self.assertEqual(len(re.findall("generated id", out.stderr)), 3)
        out = self.ctl("get", "campaign", "campaign", "c9")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout)["name"], "Nine")
        out = self.ctl("get", "campaign", "report", "model=linear")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("campaigns", json.loads(out.stdout))
        out = self.ctl("publish", "leads", '{"type": "lead.capture", "data": {"lead": "x1"}}')
        self.assertEqual(out.returncode, 0, out.stderr)
        counters = self.client("campaign").ok("STATS")["counters"]
        wait_until(lambda: self.client("leads").ok("STATS")["counters"].get("leads") == 1)
        out = self.ctl("top", "--once")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"(?m)^reached\s+%d\s" % counters["reached"])
        self.assertRegex(out.stdout, r"(?m)^leads\s+1\s")
        for svc in ("campaign", "leads", "sales", "retention"):
            self.assertRegex(out.stdout, r"(?m)^%s\s+up\s" % svc)
        # An event the service does not accept: its ERR, exit 1
        out = self.ctl("publish", "leads", '{"type": "lead.sql", "data": {"lead": "x1"}}')
        self.assertEqual(out.returncode, 1)
        self.assertIn("leads: ERR unknown_type", out.stderr)


class TestStrictCommandLine(CtlCase):
    """Numbers parsed strictly, options before or after the command, no
    escape codes into a pipe, one error prefix."""

    def bare(self, *args, timeout=30):
        """funnelctl without the kit's leading -c."""
        return subprocess.run([binary("funnelctl")] + list(args), capture_output=True,
                              text=True, timeout=timeout)

    def assertUsage(self, out, option):
        self.assertEqual(out.returncode, 2, (out.stdout, out.stderr))
        self.assertIn(option, out.stderr)
        self.assertEqual(out.stdout, "")

    def test_bad_numbers_exit_2_naming_the_option(self):
        # Nothing needs to run: the values are refused before any call
        cases = [(("replay", "campaign", "--from", "abc"), "replay --from"),
                 (("replay", "campaign", "--limit", "abc"), "replay --limit"),
                 (("replay", "campaign", "--from", "-3"), "replay --from"),
                 (("replay", "campaign", "--limit"), "replay --limit"),
                 (("tail", "campaign", "-n", "3x"), "tail -n"),
                 (("tail", "campaign", "--timeout", "soon"), "tail --timeout"),
                 (("top", "--interval", "1e3"), "top --interval"),
                 (("publish", "campaign", "--batch", "0x10"), "publish --batch"),
                 (("-t", "abc", "ping"), "--timeout"),
                 (("ping", "-r", "-1"), "--retries"),
                 (("ping", "--timeout=0"), "--timeout")]
        for args, option in cases:
            with self.subTest(args=args):
                self.assertUsage(self.ctl(*args), option)

    def test_options_after_the_command(self):
        self.start_standin("campaign")
        # The kit's topology given after the command, not the defaults
        out = self.bare("ping", "campaign", "-c", self.topology.path, "-t", "2000")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout)["svc"], "campaign")
        out = self.bare("--pretty", "ping", "campaign", "--config=%s" % self.topology.path)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("\n  ", out.stdout)
        # Long and short options mixed, on both sides
        out = self.bare("-t", "2000", "stats", "campaign", "--config", self.topology.path, "-p")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("counters", json.loads(out.stdout))

    def test_one_error_prefix(self):
        outs = [self.bare("frobnicate"), self.bare("--bogus", "ping"),
                self.bare("ping", "-c", "/nonexistent/funnel.cfg"),
                self.ctl("replay", "campaign", "--from", "x"),
                self.ctl("-t", "200", "-r", "0", "ping", "leads"),
                self.ctl("ping", "nosuch")]
        for out in outs:
            self.assertNotEqual(out.returncode, 0)
            lines = out.stderr.splitlines()
            self.assertTrue(lines, out)
            for line in lines:
                self.assertTrue(line.startswith("funnelctl: "), line)

    def test_top_into_a_pipe_has_no_escape_codes(self):
        self.start_standin("campaign")
        proc = subprocess.Popen([binary("funnelctl"), "-c", self.topology.path, "-t", "300",
                                 "top", "--interval", "100"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = b""
        try:
            # Read until three frames are in, then stop it as Ctrl-C would
            deadline = time.time() + 20
            while out.count(b"Funnel  ") < 3 and time.time() < deadline:
                if select.select([proc.stdout], [], [], 0.5)[0]:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    out += chunk
            proc.terminate()
            rest, err = proc.communicate(timeout=30)
            out += rest
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        text = out.decode()
        self.assertEqual(proc.returncode, 0, err)
        self.assertGreaterEqual(text.count("Funnel  "), 3, text)
        self.assertNotIn("\033", text)
        self.assertRegex(text, r"(?m)^campaign\s+up\s")
