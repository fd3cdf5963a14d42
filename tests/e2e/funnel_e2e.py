"""End-to-end test kit: real redis-server, real daemons, real sockets.

Every test starts its own redis-server on a free loopback port in a temp
dir and its own daemons from the build tree (FUNNEL_BUILD_DIR), talks to
them over ZeroMQ exactly as an outside client in another language would
(PROTOCOL.md), and stops everything afterwards. Nothing is mocked.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import msgpack
import redis
import zmq

BUILD = os.environ.get("FUNNEL_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
SERVICES = ["campaign", "leads", "sales", "retention", "monitor"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def binary(name):
    for sub in ("services/%s" % name.replace("funnel-", ""), "tests/testsvc", "."):
        path = os.path.join(BUILD, sub, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError("%s not built under %s" % (name, BUILD))


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # a daemon still starting, say
            last = e
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


class RedisServer:
    def __init__(self, workdir, appendonly=True):
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.start_args = []            # extra redis-server arguments
        self.proc = None
        self.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always",
                "--unixsocket", os.path.join(self.dir, "redis.sock"),
                "--logfile", os.path.join(self.dir, "redis.log")] + self.start_args
        self.proc = subprocess.Popen(args)
        wait_until(lambda: self.client().ping(), what="redis-server")

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, db=0)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Topology:
    """A ZPL topology file with free loopback ports for every service."""

    def __init__(self, workdir, redis_url, extra=""):
        self.path = os.path.join(workdir, "funnel.cfg")
        self.ports = {}
        lines = ["redis", '    url = "%s"' % redis_url]
        for svc in SERVICES + ["alpha", "beta"]:
            api, pub = free_port(), free_port()
            self.ports[svc] = (api, pub)
            lines.append(svc)
            if svc == "monitor":
                lines.append('    http = "127.0.0.1:%d"' % api)
            else:
                lines.append('    api = "tcp://127.0.0.1:%d"' % api)
            lines.append('    pub = "tcp://127.0.0.1:%d"' % pub)
        self.text = "\n".join(lines) + "\n" + extra
        with open(self.path, "w") as f:
            f.write(self.text)

    def api(self, svc):
        return "tcp://127.0.0.1:%d" % self.ports[svc][0]

    def pub(self, svc):
        return "tcp://127.0.0.1:%d" % self.ports[svc][1]

    def http(self):
        return "127.0.0.1:%d" % self.ports["monitor"][0]


class Daemon:
    def __init__(self, name, binary_name, config, workdir, env=None, args=None):
        self.name = name
        self.binary = binary(binary_name)
        self.config = config
        self.log = os.path.join(workdir, "%s.log" % name)
        self.env = dict(os.environ, **(env or {}))
        self.args = args or []
        self.proc = None

    def start(self):
        logf = open(self.log, "a")
        self.proc = subprocess.Popen([self.binary, "-c", self.config] + self.args,
                                     stdout=logf, stderr=subprocess.STDOUT, env=self.env)
        logf.close()
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        """SIGTERM and wait: returns the exit code."""
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self):
        if self.running():
            self.proc.kill()
            self.proc.wait(10)

    def output(self):
        with open(self.log) as f:
            return f.read()


class Client:
    """A REQ-free client: DEALER plus the empty delimiter, fresh per timeout."""

    def __init__(self, endpoint, ctx=None):
        self.endpoint = endpoint
        self.ctx = ctx or zmq.Context.instance()
        self.sock = None
        self._connect()

    def _connect(self):
        if self.sock is not None:
            self.sock.close(0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)

    def raw(self, frames, timeout=5.0):
        self.sock.send_multipart([b""] + frames)
        if not self.sock.poll(int(timeout * 1000)):
            self._connect()
            raise TimeoutError("no reply from %s" % self.endpoint)
        reply = self.sock.recv_multipart()
        assert reply[0] == b"", reply
        return reply[1:]

    def call(self, verb, body=None, timeout=5.0, raw_body=None):
        frames = [verb.encode()]
        if raw_body is not None:
            frames.append(raw_body)
        elif body is not None:
            frames.append(msgpack.packb(body, use_bin_type=True))
        reply = self.raw(frames, timeout)
        status = reply[0].decode()
        decoded = msgpack.unpackb(reply[1], raw=False) if len(reply) > 1 else None
        return status, decoded

    def ok(self, verb, body=None, timeout=5.0):
        status, reply = self.call(verb, body, timeout)
        if status != "OK":
            raise AssertionError("%s failed: %r" % (verb, reply))
        return reply

    def close(self):
        self.sock.close(0)


class Subscriber:
    def __init__(self, endpoint, prefix=b""):
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, prefix)
        self.sock.connect(endpoint)

    def recv(self, timeout=5.0):
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError("nothing published")
        topic, body = self.sock.recv_multipart()
        return topic.decode(), msgpack.unpackb(body, raw=False)

    def close(self):
        self.sock.close(0)


_counter = [0]


def event(etype, data, eid=None, ts=None, src="e2e"):
    _counter[0] += 1
    return {"v": 1, "id": eid or "e2e-%d-%d" % (os.getpid(), _counter[0]), "type": etype,
            "ts": ts if ts is not None else int(time.time() * 1000), "src": src, "data": data}


class FunnelTestCase(unittest.TestCase):
    """Per test: a temp dir, a redis-server, a topology; daemons on demand."""

    topology_extra = ""

    def setUp(self):
        self._problems_before = self._problem_count()
        self.workdir = tempfile.mkdtemp(prefix="funnel-e2e-")
        self.redis = RedisServer(self.workdir)
        self.topology = Topology(self.workdir, self.redis.url, self.topology_extra)
        self.daemons = []
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        for d in self.daemons:
            d.kill9()
        self.redis.stop()
        if self._outcome_ok():
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print("\n(kept %s for inspection)" % self.workdir)
            for d in self.daemons:
                print("---- %s log (tail) ----\n%s" % (d.name, d.output()[-3000:]))

    def _problem_count(self):
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if result is None:
            return 0
        return len(result.errors) + len(result.failures)

    def _outcome_ok(self):
        """True if this test (not an earlier one of the run) passed so far."""
        outcome = getattr(self, "_outcome", None)
        if outcome is not None and not getattr(outcome, "success", True):
            return False
        return self._problem_count() == self._problems_before

    def daemon(self, name, binary_name=None, env=None, args=None, start=True):
        d = Daemon(name, binary_name or "funnel-%s" % name, self.topology.path,
                   self.workdir, env, args)
        self.daemons.append(d)
        if start:
            d.start()
        return d

    def client(self, svc):
        c = Client(self.topology.api(svc))
        self.clients.append(c)
        return c

    def wait_ready(self, svc, timeout=10.0):
        c = self.client(svc)
        wait_until(lambda: c.call("PING", timeout=0.5)[1]["redis"] == "ok",
                   timeout, what="%s ready" % svc)
        return c

    def stats(self, svc):
        return self.client(svc).ok("STATS")["counters"]
