"""funnel-gateway end to end: real redis-server, the four real services, the
real gateway over HTTP (Python's http.client as the client), and a real
HTTP receiver for webhooks that goes away for a while and comes back."""
import hashlib
import hmac
import http.client
import http.server
import json
import os
import signal
import socket
import threading
import time

from funnel_e2e import Client, FunnelTestCase, RedisCluster, free_port, wait_until

SERVICES = ["campaign", "leads", "sales", "retention"]
ADMIN = "admin-token-0123456789abcdef"
FORMS = "forms-token-0123456789abcdef"
SECRET = "whsec-e2e-secret"


class Receiver:
    """A webhook endpoint: records every POST (headers, body) in arrival
    order; stop() closes the listener and every open connection."""

    def __init__(self, port):
        self.port = port
        self.received = []
        self.lock = threading.Lock()
        self.server = None
        self.conns = set()

    def start(self):
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with owner.lock:
                    owner.conns.add(self.connection)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with owner.lock:
                    owner.received.append((dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        deadline = time.time() + 10
        while True:
            try:
                self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()
        self.thread.join(10)

    def events(self):
        with self.lock:
            return list(self.received)


class GatewayCase(FunnelTestCase):
    webhook = False
    gateway_settings = ""

    def setUp(self):
        super().setUp()
        try:
            self.start_all()
        except BaseException:
            self.tearDown()         # unittest skips it when setUp fails
            raise

    def own_port(self):
        """A free port that the topology has not given to a service."""
        taken = {p for pair in self.topology.ports.values() for p in pair}
        while True:
            port = free_port()
            if port not in taken and port not in getattr(self, "_own", set()):
                self._own = getattr(self, "_own", set()) | {port}
                return port

    def start_all(self):
        self.http_port = self.own_port()
        self.hook_port = self.own_port()
        self.api_port = self.own_port()
        self.tokens = os.path.join(self.workdir, "tokens")
        with open(self.tokens, "w") as f:
            f.write("# e2e tokens\n%s admin *\n%s webforms lead.capture,touch\n" % (ADMIN, FORMS))
        extra = ("gateway\n    http = \"127.0.0.1:%d\"\n    tokens = \"%s\"\n"
                 "    api = \"tcp://127.0.0.1:%d\"\n"
                 "    cors_origins = \"https://shop.example, https://www.example\"\n"
                 "    call_timeout_ms = 1500\n    max_body = 100000\n%s"
                 % (self.http_port, self.tokens, self.api_port, self.gateway_settings))
        if self.webhook:
            extra += ("webhooks\n    crm\n        url = \"http://127.0.0.1:%d/hook\"\n"
                      "        types = \"lead.,deal.won\"\n        secret = \"%s\"\n"
                      "        start = earliest\n" % (self.hook_port, SECRET))
        with open(self.topology.path, "a") as f:
            f.write(extra)
        for svc in SERVICES:
            self.daemon(svc)
        for svc in SERVICES:
            self.wait_ready(svc)
        self.gateway = self.start_gateway()

    def start_gateway(self):
        gateway = self.daemon("gateway", args=["--set", "gateway/webhook_backoff_max_ms=400"])
        wait_until(lambda: self.request("GET", "/v1/health", token=None)[0] == 200,
                   what="gateway http")
        return gateway

    def request(self, method, path, body=None, token=ADMIN, headers=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            h = dict(headers or {})
            if token:
                h["Authorization"] = "Bearer " + token
            if body is not None and not isinstance(body, (bytes, str)):
                body = json.dumps(body)
                h.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            parsed = json.loads(data) if data else None
            return r.status, {k.lower(): v for k, v in r.getheaders()}, parsed
        finally:
            conn.close()

    def post(self, body, **kw):
        return self.request("POST", "/v1/events", body, **kw)

    def assert_error(self, result, status, code, index=None):
        got_status, headers, body = result
        self.assertEqual((got_status, body["code"]), (status, code), body)
        self.assertIsInstance(body["message"], str)
        if index is None:
            self.assertNotIn("index", body)
        else:
            self.assertEqual(body["index"], index, body)
        return headers, body


class TestIngestAndRead(GatewayCase):
    def test_publish_defaults_duplicates_and_reads(self):
        # One event: v, ts and src filled in; the reply is the service's
        status, _, body = self.post({"id": "cap-1", "type": "lead.capture",
                                     "data": {"lead": "L1", "email": "l1@example.com"}})
        self.assertEqual((status, body), (200, {"id": "cap-1", "duplicate": False}))
        status, _, body = self.post({"id": "cap-1", "type": "lead.capture",
                                     "data": {"lead": "L1", "email": "l1@example.com"}})
        self.assertEqual((status, body), (200, {"id": "cap-1", "duplicate": True}))
        status, _, lead = self.request("GET", "/v1/leads/lead?id=L1")
        self.assertEqual(status, 200, lead)
        self.assertEqual(lead["lead"] if "lead" in lead else lead.get("id"), "L1")
        # The event the service applied carries the defaults
        replay = self.client("leads").ok("REPLAY", {"from": 1})["events"]
        captured = [e for e in replay if e["type"] == "lead.captured"]
        self.assertEqual(len(captured), 1)
        self.assertEqual(captured[0]["cause"], "cap-1")

        # Idempotency-Key: a retried request is a duplicate, never a double
        ev = {"type": "lead.capture", "data": {"lead": "L2"}}
        status, _, body = self.post(ev, headers={"Idempotency-Key": "form-77"})
        self.assertEqual((status, body), (200, {"id": "form-77", "duplicate": False}))
        status, _, body = self.post(ev, headers={"Idempotency-Key": "form-77"})
        self.assertEqual((status, body), (200, {"id": "form-77", "duplicate": True}))
        batch = [{"type": "lead.capture", "data": {"lead": "B%d" % i}} for i in range(5)]
        status, _, body = self.post(batch, headers={"Idempotency-Key": "batch-9"})
        self.assertEqual((status, body), (200, {"accepted": 5, "duplicates": 0}))
        status, _, body = self.post(batch, headers={"Idempotency-Key": "batch-9"})
        self.assertEqual((status, body), (200, {"accepted": 0, "duplicates": 5}))
        self.assertEqual(self.stats("leads")["leads"], 7)

        # NDJSON: one event per line, always a batch, src = the token's name
        lines = "\n".join(json.dumps({"type": "touch", "data": {"campaign": "c1", "kind": "click",
                                      "contact": "L%d" % i}}) for i in range(3))
        status, _, body = self.post({"id": "c1-up", "type": "campaign.upsert",
                                     "data": {"campaign": "c1", "name": "Spring",
                                              "channel": "email"}})
        self.assertEqual(status, 200, body)
        status, _, body = self.post(lines + "\n\n", token=FORMS,
                                    headers={"Content-Type": "application/x-ndjson",
                                             "Idempotency-Key": "nd"})
        self.assertEqual((status, body), (200, {"accepted": 3, "duplicates": 0}))
        touched = [e for e in self.client("campaign").ok("REPLAY", {"from": 1})["events"]
                   if e["type"] == "prospect.touched"]
        self.assertEqual([e["cause"] for e in touched], ["nd.0", "nd.1", "nd.2"])

        # Reads with typed query values: model is a string, a report comes back
        status, _, report = self.request("GET", "/v1/campaign/report?model=linear")
        self.assertEqual(status, 200, report)
        self.assertEqual(report["model"], "linear")
        status, _, camp = self.request("GET", "/v1/campaign/campaign?id=c1")
        self.assertEqual((status, camp.get("name")), (200, "Spring"), camp)
        status, _, body = self.request("GET", "/v1/campaign/winback?limit=5")
        self.assertEqual(status, 200, body)
        # limit given as a string is the service's invalid
        self.assert_error(self.request("GET", "/v1/campaign/winback?limit=%22x%22"), 400, "invalid")

        # Counters
        status, _, stats = self.request("GET", "/v1/stats")
        self.assertEqual(status, 200)
        self.assertEqual(stats["svc"], "gateway")
        self.assertGreaterEqual(stats["counters"]["published"], 8)
        self.assertEqual(stats["tokens"], 2)

    def test_every_error_code(self):
        lead = {"id": "x1", "type": "lead.capture", "data": {"lead": "L9"}}
        # 401: no token, a wrong token, a prefix of a real one
        h, _ = self.assert_error(self.post(lead, token=None), 401, "unauthorized")
        self.assertEqual(h.get("www-authenticate"), "Bearer")
        self.assert_error(self.post(lead, token="nope-0123456789abcdefXX"), 401, "unauthorized")
        self.assert_error(self.post(lead, token=ADMIN[:-1]), 401, "unauthorized")
        self.assert_error(self.request("GET", "/v1/leads/lead?id=L9", token=None), 401,
                          "unauthorized")
        # 403: a type the token may not publish, naming the element
        self.assert_error(self.post([lead, {"id": "x2", "type": "lead.qualify",
                                            "data": {"lead": "L9", "stage": "mql"}}],
                                    token=FORMS), 403, "forbidden", index=1)
        # 400 bad_request / invalid / unknown_type
        self.assert_error(self.post("{not json"), 400, "bad_request")
        self.assert_error(self.post({"type": "lead.capture", "data": {"lead": "L9"}}),
                          400, "invalid")                                 # no id, no key
        self.assert_error(self.post([lead, {"id": "t1", "type": "touch",
                                            "data": {"campaign": "c", "kind": "click"}}]),
                          400, "invalid", index=1)                        # two services
        self.assert_error(self.post({"id": "s1", "type": "lead.sql", "data": {}}),
                          400, "unknown_type")
        _, body = self.assert_error(self.post([lead, {"id": "x3", "type": "lead.capture",
                                                      "data": {"lead": 5}}]),
                                    400, "invalid", index=1)              # the service's
        self.assertIn("data.lead", body["message"])
        self.assertEqual(self.stats("leads")["leads"], 0)                # all or nothing
        # 404: the service's not_found, an unknown service or path
        self.assert_error(self.post({"id": "t2", "type": "touch",
                                     "data": {"campaign": "nope", "kind": "click"}}),
                          404, "not_found")
        self.assert_error(self.request("GET", "/v1/leads/lead?id=NOPE"), 404, "not_found")
        self.assert_error(self.request("GET", "/v1/billing/invoice?id=1"), 404, "not_found")
        self.assert_error(self.request("GET", "/v2/x"), 404, "not_found")
        # 409: conflict
        deal = {"id": "d-1", "type": "deal.open", "data": {"deal": "D1", "lead": "L9"}}
        self.assertEqual(self.post(deal)[0], 200)
        self.assert_error(self.post(dict(deal, id="d-2")), 409, "conflict")
        # 413: over gateway/max_body (100000 here)
        big = [dict(lead, id="big-%d" % i, data={"lead": "L%d" % i, "name": "n" * 900})
               for i in range(150)]
        self.assert_error(self.post(big), 413, "too_large")
        # 405 and 415
        status, headers, _ = self.request("GET", "/v1/events")
        self.assertEqual((status, headers.get("allow")), (405, "POST, OPTIONS"))
        self.assert_error(self.post("x", headers={"Content-Type": "text/plain"}), 415,
                          "unsupported_media_type")
        # 503 with Retry-After: the service is down
        for d in self.daemons:
            if d.name == "retention":
                self.assertEqual(d.stop(), 0)
        h, body = self.assert_error(self.post({"id": "o1", "type": "customer.order",
                                               "data": {"customer": "C1", "amount": 5}}),
                                    503, "unavailable")
        self.assertEqual(h.get("retry-after"), "1")
        self.assertIn("retention", body["message"])

    def test_cors_tokens_reload_and_openapi(self):
        # Preflight from an allowed origin, refused from another
        status, h, _ = self.request("OPTIONS", "/v1/events", token=None, headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        self.assertEqual(status, 204)
        self.assertEqual(h["access-control-allow-origin"], "https://shop.example")
        self.assertIn("POST", h["access-control-allow-methods"])
        self.assertIn("Authorization", h["access-control-allow-headers"])
        self.assertIn("Idempotency-Key", h["access-control-allow-headers"])
        self.assert_error(self.request("OPTIONS", "/v1/events", token=None,
                                       headers={"Origin": "https://evil.example"}),
                          403, "forbidden")
        status, h, _ = self.post({"id": "o-1", "type": "lead.capture", "data": {"lead": "O1"}},
                                 token=FORMS, headers={"Origin": "https://www.example"})
        self.assertEqual((status, h.get("access-control-allow-origin")),
                         (200, "https://www.example"))
        status, h, _ = self.post({"id": "o-2", "type": "lead.capture", "data": {"lead": "O2"}},
                                 token=FORMS, headers={"Origin": "https://evil.example"})
        self.assertEqual(status, 200)
        self.assertNotIn("access-control-allow-origin", h)

        # SIGHUP re-reads the tokens file: the new token works, the removed one not
        fresh = "fresh-token-0123456789abcdef"
        with open(self.tokens, "w") as f:
            f.write("%s admin *\n" % fresh)
        self.gateway.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.request("GET", "/v1/stats", token=fresh)[0] == 200,
                   what="new token")
        self.assert_error(self.request("GET", "/v1/stats", token=ADMIN), 401, "unauthorized")
        # A broken file keeps the tokens in force
        with open(self.tokens, "w") as f:
            f.write("short x *\n")
        self.gateway.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "not re-read" in self.gateway.output(), what="refused reload")
        self.assertEqual(self.request("GET", "/v1/stats", token=fresh)[0], 200)

        # OpenAPI 3.1: parses, and lists every path the gateway serves
        status, _, doc = self.request("GET", "/v1/openapi.json", token=None)
        self.assertEqual(status, 200)
        self.assertRegex(doc["openapi"], r"^3\.1\.\d+$")
        self.assertTrue(doc["info"]["title"] and doc["info"]["version"])
        served = {"/v1/events": {"post", "options"}, "/v1/{service}/{kind}": {"get"},
                  "/v1/stats": {"get"}, "/v1/health": {"get"}, "/v1/openapi.json": {"get"},
                  "/v1/people/{lead}/export": {"get"}}
        for path, methods in served.items():
            self.assertIn(path, doc["paths"])
            self.assertTrue(methods <= set(doc["paths"][path]), path)
            for op in doc["paths"][path].values():
                self.assertIn("responses", op)
        for path in doc["paths"]:   # and nothing it does not serve
            self.assertIn(path, served)
        # Every $ref resolves inside the document
        def refs(node):
            if isinstance(node, dict):
                for k, v in node.items():
                    if k == "$ref":
                        yield v
                    else:
                        yield from refs(v)
            elif isinstance(node, list):
                for v in node:
                    yield from refs(v)
        for ref in refs(doc):
            target = doc
            self.assertTrue(ref.startswith("#/"), ref)
            for part in ref[2:].split("/"):
                target = target[part]
        # Path templates: each {param} is declared
        for path, item in doc["paths"].items():
            for op in item.values():
                names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
                for param in [s[1:-1] for s in path.split("/") if s.startswith("{")]:
                    self.assertIn(param, names, path)


class TestWebhooks(GatewayCase):
    webhook = True

    def published(self):
        """lead.* and deal.won events the services hold, per service, in seq order."""
        out = {}
        for svc in SERVICES:
            events = self.client(svc).ok("REPLAY", {"from": 1})["events"]
            out[svc] = [(e["seq"], e["id"]) for e in events
                        if e["type"].startswith("lead.") or e["type"] == "deal.won"]
        return out

    def delivered(self, receiver):
        """First arrival of each event, per service, checking every signature."""
        seen, out = set(), {}
        for headers, body in receiver.events():
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            self.assertEqual(headers["X-Funnel-Signature"], expected)
            ev = json.loads(body)
            self.assertEqual(headers["X-Funnel-Event-Id"], ev["id"])
            if ev["id"] in seen:
                continue            # at least once: a repeat is allowed
            seen.add(ev["id"])
            out.setdefault(ev["svc"], []).append((ev["seq"], ev["id"]))
        return out

    def capture(self, first, count, direct=False):
        batch = [{"id": "w-%d" % i, "type": "lead.capture",
                  "data": {"lead": "W%d" % i, "attrs": {"budget": 100, "authority": True,
                                                        "need": True, "timeline_days": 30}}}
                 for i in range(first, first + count)]
        if direct:              # the gateway is down: straight to the service
            for e in batch:
                e.update(v=1, ts=int(time.time() * 1000), src="e2e")
            self.assertEqual(self.client("leads").ok("PUBLISH", batch)["accepted"], count)
            return
        status, _, body = self.post(batch)
        self.assertEqual(status, 200, body)

    def test_every_event_in_order_through_outage_and_restart(self):
        receiver = Receiver(self.hook_port)
        receiver.start()
        self.capture(0, 20)
        wait_until(lambda: len(self.delivered(receiver).get("leads", [])) >= 20,
                   timeout=20, what="first deliveries")
        # The receiver goes away; events keep coming and wait in order
        receiver.stop()
        self.capture(20, 20)

        def failing():
            hooks = self.request("GET", "/v1/stats")[2]["webhooks"]
            return hooks[0]["state"] == "retrying" and hooks[0]["consecutive_failures"] >= 2
        wait_until(failing, timeout=20, what="subscription failing in stats")
        stats = self.request("GET", "/v1/stats")[2]
        self.assertEqual(stats["counters"]["webhooks_failing"], 1)
        # The same on the gateway's API socket, as a service's STATS
        api = Client("tcp://127.0.0.1:%d" % self.api_port)
        self.clients.append(api)
        ping = api.ok("PING")
        self.assertEqual((ping["svc"], ping["redis"]), ("gateway", "ok"))
        counters = api.ok("STATS")["counters"]
        self.assertEqual(counters["webhooks_failing"], 1)
        self.assertGreaterEqual(counters["webhook.crm.consecutive_failures"], 2)
        self.assertGreater(counters["webhook.crm.backlog"], 0)
        self.assertEqual(api.call("PUBLISH", {})[0], "ERR")
        self.assertGreater(stats["webhooks"][0]["services"]["leads"]["backlog"], 0)
        # The gateway restarts while the receiver is down: the position survives
        self.assertEqual(self.gateway.stop(), 0)
        self.capture(40, 10, direct=True)
        self.gateway = self.start_gateway()
        r = self.redis.client()
        self.assertTrue(r.hget("{funnel:gateway}:wh:crm", "leads"))
        receiver.start()
        expected = self.published()
        self.assertGreater(len(expected["leads"]), 50)

        def complete():
            got = self.delivered(receiver)
            return all(got.get(svc, []) == expected[svc] for svc in SERVICES if expected[svc])
        wait_until(complete, timeout=60, what="every event delivered, in order")
        got = self.delivered(receiver)
        for svc in SERVICES:
            seqs = [s for s, _ in got.get(svc, [])]
            self.assertEqual(seqs, sorted(seqs))
        # Nothing else than the subscribed types
        for headers, body in receiver.events():
            t = json.loads(body)["type"]
            self.assertTrue(t.startswith("lead.") or t == "deal.won", t)
        wait_until(lambda: self.request("GET", "/v1/stats")[2]["webhooks"][0]["state"] == "ok",
                   what="subscription ok again")
        receiver.stop()


class TestWebhookPositionsOnCluster(GatewayCase):
    """The gateway's own Redis on a 3-primary Redis Cluster (gateway/redis =
    the seed list), the services on their single Redis: the webhook's
    positions are routed to the primary of their key's slot, survive a
    restart of the gateway, and nothing is redelivered past them."""
    webhook = True
    KEY = "{funnel:gateway}:wh:crm"

    def start_all(self):
        self.cluster = RedisCluster(self.workdir)
        self.addCleanup(self.cluster.release)
        self.addCleanup(self.cluster.stop)
        self.gateway_settings = '    redis = "%s"\n' % self.cluster.url
        super().start_all()

    def holder(self):
        """The cluster node (index) whose slots hold KEY."""
        with self.cluster.client(0) as c:
            slot = c.execute_command("CLUSTER", "KEYSLOT", self.KEY)
        for i in range(self.cluster.count):
            with self.cluster.client(i) as c:
                if c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot):
                    return i
        return None

    def position(self, svc):
        i = self.holder()
        if i is None:
            return 0
        with self.cluster.client(i) as c:
            v = c.hget(self.KEY, svc)
        return int(v) if v else 0

    def leads(self, receiver, since=0):
        """Seqs of the leads events delivered (from the since-th POST on)."""
        return [json.loads(b)["seq"] for _, b in receiver.events()[since:]
                if json.loads(b)["svc"] == "leads"]

    def test_positions_routed_by_slot_and_kept_across_restart(self):
        receiver = Receiver(self.hook_port)
        receiver.start()
        self.addCleanup(receiver.stop)
        batch = [{"id": "c-%d" % i, "type": "lead.capture", "data": {"lead": "C%d" % i}}
                 for i in range(15)]
        status, _, body = self.post(batch)
        self.assertEqual(status, 200, body)
        wait_until(lambda: len(self.leads(receiver)) >= 15, timeout=20, what="deliveries")
        delivered = max(self.leads(receiver))
        wait_until(lambda: self.position("leads") >= delivered, timeout=10,
                   what="the leads position written on the cluster")
        # The key lives on exactly one primary, the one its slot maps to;
        # the services' single Redis holds no gateway key
        holders = []
        for i in range(self.cluster.count):
            with self.cluster.client(i) as c:
                if c.dbsize():
                    holders.append(i)
                    self.assertEqual(c.keys("*"), [self.KEY.encode()])
        self.assertEqual(holders, [self.holder()])
        self.assertFalse(self.redis.client().exists(self.KEY))
        api = Client("tcp://127.0.0.1:%d" % self.api_port)
        self.clients.append(api)
        self.assertEqual(api.ok("PING")["redis"], "ok")
        self.assertTrue(self.request("GET", "/v1/stats")[2]["webhooks"][0]["redis"])
        # A restart goes on from the stored position: the new leads come,
        # nothing at or before the position comes again
        self.assertEqual(self.gateway.stop(), 0)
        saved = self.position("leads")
        self.assertGreaterEqual(saved, delivered)
        first = len(receiver.events())
        batch = [{"id": "d-%d" % i, "type": "lead.capture", "data": {"lead": "D%d" % i},
                  "v": 1, "ts": int(time.time() * 1000), "src": "e2e"} for i in range(5)]
        self.assertEqual(self.client("leads").ok("PUBLISH", batch)["accepted"], 5)
        self.gateway = self.start_gateway()
        wait_until(lambda: len(self.leads(receiver, first)) >= 5, timeout=20,
                   what="the new leads after the restart")
        again = self.leads(receiver, first)
        self.assertTrue(all(seq > saved for seq in again), (saved, again))
        wait_until(lambda: self.position("leads") >= max(again), timeout=10,
                   what="the position moved on the cluster")


class TestSimViaGateway(GatewayCase):
    def test_sim_publishes_through_the_gateway(self):
        # The first token in gateway/tokens (admin, *) is the sim's
        sim = self.daemon("sim", "funnel-sim", args=["--via-gateway", "--rate", "200",
                                                     "--duration", "4", "--batch", "50"])
        self.assertEqual(sim.proc.wait(60), 0, sim.output())
        self.assertIn("publishing through the gateway", sim.output())
        published = self.request("GET", "/v1/stats")[2]["counters"]["published"]
        self.assertGreater(published, 4)
        accepted = sum(self.stats(svc)["accepted"] for svc in SERVICES)
        self.assertGreater(accepted, 100)
        self.assertEqual(self.request("GET", "/v1/stats")[2]["counters"]["errors_5xx"], 0)
