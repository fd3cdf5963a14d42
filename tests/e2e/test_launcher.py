"""The launcher end to end: `deploy/funnel up` with a private var dir and
free ports, real Redis, real daemons and funnel-sim, until simulated
traffic has reached every stage; then Ctrl-C (SIGINT) must stop it all
cleanly with exit 0. Also `up --detach`, `status` and `down`.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request

from funnel_e2e import BUILD, Client, free_port, free_port_block, read_text, release_ports, wait_until

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
FUNNEL = os.path.join(ROOT, "deploy", "funnel")
STAGES = ["reached", "leads", "sql", "deals", "won", "customers"]
# Where each stage's count is when there is no monitor (services/README.md)
STATS_OF = {"reached": "campaign", "leads": "leads", "sql": "leads",
            "deals": "sales", "won": "sales", "customers": "retention"}
OFFSETS = [1, 2, 11, 12, 21, 22, 31, 32, 40, 42, 50]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; its parent (the launcher) reaps it
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class LauncherTest(unittest.TestCase):
    def setUp(self):
        for name in ("campaign", "leads", "sales", "retention", "sim"):
            sub = "services/%s/funnel-%s" % (name, name)
            if not os.path.exists(os.path.join(BUILD, sub)):
                self.skipTest("%s not built" % sub)
        self.var = tempfile.mkdtemp(prefix="funnel-launcher-")
        # Reserved for this test (see funnel_e2e): nobody else picks them
        self.base = free_port_block(OFFSETS)
        self.redis_port = free_port()
        self.addCleanup(release_ports, [self.base + o for o in OFFSETS] + [self.redis_port])
        self.env = dict(os.environ, FUNNEL_BUILD=os.path.abspath(BUILD), FUNNEL_NO_BUILD="1",
                        FUNNEL_PORT_BASE=str(self.base),
                        FUNNEL_REDIS_PORT=str(self.redis_port))
        self.has_monitor = os.path.exists(os.path.join(BUILD, "services/monitor/funnel-monitor"))
        self.log = os.path.join(self.var, "launcher.out")
        self.proc = None

    def tearDown(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        # Whatever is left (a failed test): stop it by its pid files
        subprocess.run([FUNNEL, "down", "--var", self.var], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        if self._failed():
            print("\n(kept %s) launcher output:\n%s" % (self.var, self.output()[-4000:]))
            for path in sorted(glob.glob(os.path.join(self.var, "log", "*.log"))):
                with open(path, errors="replace") as f:
                    print("---- %s (tail) ----\n%s" % (path, f.read()[-1500:]))
        else:
            shutil.rmtree(self.var, ignore_errors=True)

    def _failed(self):
        result = getattr(self, "_outcome", None)
        result = getattr(result, "result", None)
        if result is None:
            return False
        return any(t is self for t, _ in result.errors + result.failures)

    def output(self):
        return read_text(self.log)

    def funnel(self):
        """Stage counts: the monitor's /api/funnel, else the services' STATS."""
        if self.has_monitor:
            url = "http://127.0.0.1:%d/api/funnel" % (self.base + 40)
            with urllib.request.urlopen(url, timeout=2) as r:
                body = json.loads(r.read().decode())
            return {s["name"]: s["count"] for s in body["stages"]}
        counts = {}
        offset = {"campaign": 1, "leads": 11, "sales": 21, "retention": 31}
        for stage, svc in STATS_OF.items():
            c = Client("tcp://127.0.0.1:%d" % (self.base + offset[svc]))
            try:
                counts[stage] = c.ok("STATS", timeout=2)["counters"].get(stage, 0)
            finally:
                c.close()
        return counts

    def pids(self):
        pids = {}
        for path in glob.glob(os.path.join(self.var, "run", "*.pid")):
            with open(path) as f:
                pids[os.path.basename(path)[:-4]] = int(f.read().strip())
        return pids

    def test_up_reaches_every_stage_and_ctrl_c_stops_all(self):
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [FUNNEL, "up", "--var", self.var, "--rate", "200", "--seed", "7"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        last = {}

        def every_stage():
            self.assertIsNone(self.proc.poll(), "the launcher exited early")
            last.update(self.funnel())
            return all(last.get(s, 0) > 0 for s in STAGES)
        wait_until(every_stage, timeout=50, interval=1.0, what="traffic in every stage")
        print("\nfunnel after traffic: %s" % json.dumps(last))
        self.assertIn("http://127.0.0.1:%d/" % (self.base + 40), self.output())

        pids = self.pids()
        for name in ("redis", "campaign", "leads", "sales", "retention", "sim"):
            self.assertIn(name, pids)
            self.assertTrue(alive(pids[name]), "%s not running" % name)
        status = subprocess.run([FUNNEL, "status", "--var", self.var], env=self.env,
                                capture_output=True, text=True, timeout=30)
        self.assertEqual(status.returncode, 0, status.stdout + status.stderr)
        self.assertIn("campaign", status.stdout)

        self.proc.send_signal(signal.SIGINT)
        self.assertEqual(self.proc.wait(45), 0, "launcher exit code")
        for name, pid in pids.items():
            self.assertFalse(alive(pid), "%s (pid %d) still running" % (name, pid))
        self.assertEqual(glob.glob(os.path.join(self.var, "run", "*.pid")), [])
        # AOF on: Redis 7 keeps it under appendonlydir
        self.assertTrue(glob.glob(os.path.join(self.var, "redis", "appendonlydir", "*.aof")),
                        "no AOF files under var/redis")
        with open(os.path.join(self.var, "log", "sim.log")) as f:
            self.assertIn("done:", f.read())

    def test_detach_status_down(self):
        up = subprocess.run([FUNNEL, "up", "--detach", "--var", self.var, "--rate", "20"],
                            env=self.env, capture_output=True, text=True, timeout=60)
        self.assertEqual(up.returncode, 0, up.stderr)
        pids = self.pids()
        self.assertTrue(all(alive(p) for p in pids.values()), pids)
        status = subprocess.run([FUNNEL, "status", "--var", self.var], env=self.env,
                                capture_output=True, text=True, timeout=30)
        self.assertEqual(status.returncode, 0, status.stdout + status.stderr)
        if os.path.exists(os.path.join(BUILD, "services/gateway/funnel-gateway")):
            self.assertRegex(status.stdout, r"gateway +up .*http://127.0.0.1:%d/v1/" % (self.base + 50))
            self.assertIn("gateway: http://127.0.0.1:%d/v1/events, token: demo-" % (self.base + 50),
                          up.stderr)
        again = subprocess.run([FUNNEL, "up", "--detach", "--var", self.var], env=self.env,
                               capture_output=True, text=True, timeout=30)
        self.assertNotEqual(again.returncode, 0, "a second up on a running set must refuse")
        self.assertIn("already running", again.stderr)
        down = subprocess.run([FUNNEL, "down", "--var", self.var], env=self.env,
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(down.returncode, 0, down.stderr)
        wait_until(lambda: not any(alive(p) for p in pids.values()), timeout=5,
                   what="every process gone")
        status = subprocess.run([FUNNEL, "status", "--var", self.var], env=self.env,
                                capture_output=True, text=True, timeout=30)
        self.assertNotEqual(status.returncode, 0)
        self.assertIn("down", status.stdout)


if __name__ == "__main__":
    unittest.main()
