"""Operations, end to end: the systemd notify protocol as a Type=notify
unit sees it (READY=1 once the daemon serves, WATCHDOG=1 from its loop,
STOPPING=1), read from a real unix datagram socket as NOTIFY_SOCKET; and
--log-format json, one JSON object per line."""
import json
import os
import socket
import subprocess
import time
import unittest
import urllib.request

from funnel_e2e import FunnelTestCase, binary, wait_until


class NotifySocket:
    """What systemd listens on: a unix datagram socket."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def recv(self, timeout):
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n") if "=" in line)

    def wait_for(self, key, timeout=20.0):
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError("no %s= from the daemon within %.0f s" % (key, timeout))
            try:
                msg = self.recv(left)
            except socket.timeout:
                continue
            if key in msg:
                return msg

    def close(self):
        self.sock.close()


class TestReadiness(FunnelTestCase):
    def notify_socket(self):
        sock = NotifySocket(os.path.join(self.workdir, "notify.sock"))
        self.addCleanup(sock.close)
        return sock

    def test_ready_watchdog_and_stopping(self):
        sock = self.notify_socket()
        d = self.daemon("alpha", "funnel-testsvc",
                        env={"NOTIFY_SOCKET": sock.path, "WATCHDOG_USEC": "3000000"})
        msg = sock.wait_for("READY")
        self.assertEqual(msg["READY"], "1")
        self.assertIn("STATUS", msg)
        # Ready means serving: PING answers at once, no retry needed
        client = self.client("alpha")
        self.assertEqual(client.ok("PING", timeout=5)["svc"], "alpha")
        # The watchdog pings come from the daemon's own loop, about every second
        for _ in range(2):
            self.assertEqual(sock.wait_for("WATCHDOG", timeout=10)["WATCHDOG"], "1")
        self.assertEqual(d.stop(), 0)
        self.assertEqual(sock.wait_for("STOPPING", timeout=5)["STOPPING"], "1")
        self.assertIn("notified the service manager: ready, watchdog on", d.output())

    def test_no_watchdog_unless_asked(self):
        sock = self.notify_socket()
        d = self.daemon("leads", env={"NOTIFY_SOCKET": sock.path})
        sock.wait_for("READY")
        self.assertEqual(self.client("leads").ok("PING", timeout=5)["svc"], "leads")
        # Two seconds of the loop's timer and not one WATCHDOG
        deadline = time.time() + 2.5
        while time.time() < deadline:
            try:
                msg = sock.recv(max(0.05, deadline - time.time()))
            except socket.timeout:
                break
            self.assertNotIn("WATCHDOG", msg)
        self.assertEqual(d.stop(), 0)

    def test_monitor_ready_when_http_serves(self):
        sock = self.notify_socket()
        self.daemon("monitor", env={"NOTIFY_SOCKET": sock.path})
        sock.wait_for("READY")
        url = "http://%s/api/funnel" % self.topology.http()
        with urllib.request.urlopen(url, timeout=5) as r:
            self.assertEqual(r.status, 200)


class TestJsonLogs(FunnelTestCase):
    def assertJsonLines(self, text, svc):
        lines = text.splitlines()
        self.assertTrue(lines)
        for line in lines:
            doc = json.loads(line)          # each line a whole object
            self.assertEqual(sorted(doc), ["level", "msg", "svc", "ts"], line)
            self.assertEqual(doc["svc"], svc)
            self.assertIn(doc["level"], ("error", "warn", "info", "debug"))
            self.assertRegex(doc["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        return [json.loads(line) for line in lines]

    def test_flag_and_environment(self):
        d = self.daemon("leads", args=["--log-format", "json"])
        self.wait_ready("leads")
        self.assertEqual(d.stop(), 0)
        docs = self.assertJsonLines(d.output(), "leads")
        self.assertTrue(any("stopped cleanly" in doc["msg"] for doc in docs))
        m = self.daemon("monitor", env={"FUNNEL_LOG_FORMAT": "json"})
        url = "http://%s/api/funnel" % self.topology.http()
        wait_until(lambda: urllib.request.urlopen(url, timeout=2).status == 200,
                   what="monitor http")
        self.assertEqual(m.stop(), 0)
        self.assertJsonLines(m.output(), "monitor")

    def test_bad_format_is_a_usage_error(self):
        out = subprocess.run([binary("funnel-leads"), "-c", self.topology.path,
                              "--log-format", "xml"], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 2)
        self.assertIn("--log-format 'xml'", out.stderr)
        out = subprocess.run([binary("funnel-leads"), "-c", self.topology.path,
                              "--set", "log/format=yaml"], capture_output=True, text=True,
                             timeout=30)
        self.assertEqual(out.returncode, 2)
        self.assertIn("log/format", out.stderr)


class TestHealthcheckScript(FunnelTestCase):
    """deploy/healthcheck.sh, the container image's HEALTHCHECK, run here
    with the daemon named (no container engine on this machine)."""

    def check(self, *args):
        script = os.path.join(os.path.dirname(__file__), "../../deploy/healthcheck.sh")
        env = dict(os.environ, FUNNEL_CONFIG=self.topology.path,
                   PATH=os.path.dirname(binary("funnelctl")) + ":" + os.environ["PATH"])
        return subprocess.run(["sh", script] + list(args), capture_output=True, text=True,
                              timeout=30, env=env)

    def test_service_and_monitor(self):
        self.assertEqual(self.check("funnel-leads").returncode, 1)     # not running
        self.daemon("leads")
        self.wait_ready("leads")
        out = self.check("funnel-leads")
        self.assertEqual(out.returncode, 0, out.stderr)
        # Its bind endpoint as given on the command line, "*" read as loopback
        port = self.topology.api("leads").rsplit(":", 1)[1]
        self.assertEqual(self.check("funnel-leads", "tcp://*:%s" % port).returncode, 0)
        # Redis gone: up but not healthy
        self.redis.stop()
        out = self.check("funnel-leads")
        self.assertEqual(out.returncode, 1)
        self.assertIn("Redis is not ok", out.stderr)
        self.assertEqual(self.check("funnel-monitor", self.topology.http()).returncode, 1)
        self.daemon("monitor")
        wait_until(lambda: self.check("funnel-monitor", self.topology.http()).returncode == 0,
                   what="monitor healthy")


if __name__ == "__main__":
    unittest.main()
