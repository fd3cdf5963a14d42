"""The launcher end to end: `deploy/funnel up` with a private var dir and
free ports, real Redis, real daemons and funnel-sim, until simulated
traffic has reached every stage; then Ctrl-C (SIGINT) must stop it all
cleanly with exit 0. Also `up --detach`, `status` and `down`, and
`up --cluster --detach`: a local 6-node Redis Cluster under it all.
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request

import redis

from funnel_e2e import BUILD, Client, free_port, free_port_block, read_text, release_ports, wait_until

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
FUNNEL = os.path.join(ROOT, "deploy", "funnel")
STAGES = ["reached", "leads", "sql", "deals", "won", "customers"]
# Where each stage's count is when there is no monitor (services/README.md)
STATS_OF = {"reached": "campaign", "leads": "leads", "sql": "leads",
            "deals": "sales", "won": "sales", "customers": "retention"}
# (+13/+14, +23/+24: the second instances of leads and sales with --cluster)
OFFSETS = [1, 2, 11, 12, 13, 14, 21, 22, 23, 24, 31, 32, 40, 42, 50]


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

    def test_cluster_detach_status_down(self):
        """up --cluster: 6 nodes (3 primaries, a replica each) made into a
        cluster, the services on it: leads and sales as two instances
        each splitting their partitions (a 0-7, b 8-15), campaign and
        retention one instance; traffic through the gateway reaches every
        stage and both instances of each; status lists every node and
        instance; down stops all."""
        nodes = 6
        # Node i on base+i, its cluster bus on base+6+i (deploy/launcher.sh)
        base = free_port_block(list(range(2 * nodes)))
        self.addCleanup(release_ports, [base + i for i in range(2 * nodes)])
        self.env["FUNNEL_REDIS_PORT"] = str(base)
        t0 = time.time()
        up = subprocess.run([FUNNEL, "up", "--cluster", "--detach", "--var", self.var,
                             "--rate", "200", "--seed", "3"],
                            env=self.env, capture_output=True, text=True, timeout=180)
        with open(self.log, "w") as f:
            f.write(up.stdout + up.stderr)
        self.assertEqual(up.returncode, 0, up.stderr[-3000:])
        print("\nup --cluster --detach: %.1f s" % (time.time() - t0))
        self.assertIn("redis cluster: state ok", up.stderr)
        pids = self.pids()
        instances = ["leads-a", "leads-b", "sales-a", "sales-b"]
        for name in ["redis-%d" % i for i in range(nodes)] + \
                ["campaign", "retention", "sim"] + instances:
            self.assertIn(name, pids)
            self.assertTrue(alive(pids[name]), "%s not running" % name)
        for name in ("redis", "leads", "sales"):
            self.assertNotIn(name, pids)
        with open(os.path.join(self.var, "funnel.cfg")) as f:
            cfg = f.read()
        seeds = ",".join("127.0.0.1:%d" % (base + i) for i in range(nodes))
        self.assertIn('url = "redis://%s"' % seeds, cfg)
        self.assertIn("acks = 1", cfg)
        self.assertEqual((cfg.count('owns = "0-15"'), cfg.count('owns = "0-7"'),
                          cfg.count('owns = "8-15"')), (2, 2, 2), cfg)
        for svc, offset in (("leads", 11), ("sales", 21)):
            for inst, port in (("a", self.base + offset), ("b", self.base + offset + 2)):
                self.assertIn('api = "tcp://127.0.0.1:%d"' % port, cfg)
                cmdline = read_text("/proc/%d/cmdline" % pids["%s-%s" % (svc, inst)])
                self.assertIn("--instance\0%s\0" % inst, cmdline)

        last = {}

        def every_stage():
            last.update(self.funnel())
            return all(last.get(s, 0) > 0 for s in STAGES)
        wait_until(every_stage, timeout=90, interval=1.0, what="traffic in every stage")
        print("funnel after traffic on the cluster: %s" % json.dumps(last))

        # Both instances of leads and of sales answer PING (funnelctl asks
        # each), and the traffic the sim sends through the gateway (routed
        # by partition), and what leads hands to sales, goes through both:
        # the monitor sees each instance up, with its partitions' seqs
        # growing; nothing was refused as moved
        ctl_env = dict(self.env, FUNNEL_CONFIG=os.path.join(self.var, "funnel.cfg"))
        for svc in ("leads", "sales"):
            ping = subprocess.run([os.path.join(BUILD, "services/funnelctl/funnelctl"),
                                   "ping", svc], env=ctl_env, capture_output=True, text=True,
                                  timeout=30)
            self.assertEqual(ping.returncode, 0, ping.stdout + ping.stderr)
            replies = json.loads(ping.stdout)["instances"]
            self.assertEqual(sorted(replies), ["a", "b"], ping.stdout)
            for inst, reply in replies.items():
                self.assertEqual((reply["instance"], reply["redis"]), (inst, "ok"), reply)

        def instance_seqs():
            url = "http://127.0.0.1:%d/api/funnel" % (self.base + 40)
            with urllib.request.urlopen(url, timeout=2) as r:
                services = json.loads(r.read().decode())["services"]
            out = {}
            for svc in ("leads", "sales"):
                for inst, state in services[svc]["instances"].items():
                    self.assertTrue(state["up"], (svc, inst, state))
                    self.assertEqual(sorted(int(p) for p in state["parts"]),
                                     list(range(0, 8) if inst == "a" else range(8, 16)))
                    out["%s-%s" % (svc, inst)] = state["seq"]
            return out
        if self.has_monitor:
            first = instance_seqs()
            self.assertEqual(sorted(first), instances)
            grown = {}

            def grows():
                grown.update(instance_seqs())
                return all(grown[k] > first[k] > 0 for k in first)
            wait_until(grows, timeout=60, interval=1.0,
                       what="every instance's seqs growing (%r)" % first)
        for name in ("sim", "gateway"):
            log = read_text(os.path.join(self.var, "log", "%s.log" % name))
            self.assertNotIn("moved", log, name)

        status = subprocess.run([FUNNEL, "status", "--var", self.var], env=self.env,
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(status.returncode, 0, status.stdout + status.stderr)
        roles = re.findall(r"^redis-(\d) +up \(pid \d+\), port (\d+), (master|replica), "
                           r"(\d+) keys$", status.stdout, re.M)
        self.assertEqual(len(roles), nodes, status.stdout)
        self.assertEqual(sorted(int(port) for _, port, _, _ in roles),
                         [base + i for i in range(nodes)])
        self.assertEqual(sorted(role for _, _, role, _ in roles), ["master"] * 3 + ["replica"] * 3)
        # The services' keys are spread over the primaries: each holds some
        masters = [int(keys) for _, _, role, keys in roles if role == "master"]
        self.assertTrue(all(k > 0 for k in masters), status.stdout)
        self.assertRegex(status.stdout, r"cluster +cluster_state:ok cluster_slots_ok:16384 "
                                        r"cluster_known_nodes:6")
        for name in ["campaign", "retention"] + instances:
            self.assertRegex(status.stdout, r"(?m)^%s +up .*PING .*\"redis\": *\"ok\"" % name)
        for name in instances:
            self.assertRegex(status.stdout, r"(?m)^%s +up .*PING .*\"instance\": *\"%s\""
                             % (name, name[-1]))
        # Secure by default: the default user has a password on every node,
        # each primary refuses writes without its replica
        with open(os.path.join(self.var, "secrets", "redis-admin.pass")) as f:
            admin = f.read().strip()
        for _, port, role, _ in roles:
            with redis.Redis(host="127.0.0.1", port=int(port), password=admin,
                             socket_timeout=5) as c:
                self.assertEqual(c.config_get("min-replicas-to-write")["min-replicas-to-write"], "1")
                users = c.acl_users()
                self.assertIn("funnel-leads", users)
                self.assertIn("funnel-gateway", users)
            with redis.Redis(host="127.0.0.1", port=int(port), socket_timeout=5) as c:
                self.assertRaises(redis.exceptions.AuthenticationError, c.ping)

        t0 = time.time()
        down = subprocess.run([FUNNEL, "down", "--var", self.var], env=self.env,
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(down.returncode, 0, down.stderr)
        print("down: %.1f s" % (time.time() - t0))
        wait_until(lambda: not any(alive(p) for p in pids.values()), timeout=10,
                   what="every process gone")
        self.assertEqual(glob.glob(os.path.join(self.var, "run", "*.pid")), [])
        for i in range(nodes):
            node = os.path.join(self.var, "redis-cluster", "node-%d" % i)
            self.assertTrue(os.path.exists(os.path.join(node, "nodes.conf")))
            self.assertTrue(glob.glob(os.path.join(node, "appendonlydir", "*.aof")), node)
        status = subprocess.run([FUNNEL, "status", "--var", self.var], env=self.env,
                                capture_output=True, text=True, timeout=30)
        self.assertNotEqual(status.returncode, 0)
        self.assertIn("down", status.stdout)

        # A second up on the same VAR restarts the same cluster from its
        # nodes.conf and AOF: the counts go on from where they were
        up = subprocess.run([FUNNEL, "up", "--cluster", "--detach", "--var", self.var,
                             "--rate", "50"],
                            env=self.env, capture_output=True, text=True, timeout=180)
        self.assertEqual(up.returncode, 0, up.stderr[-3000:])
        pids = self.pids()
        with open(os.path.join(self.var, "log", "cluster-create.log")) as f:
            self.assertEqual(f.read().count("[OK] All 16384 slots covered"), 1)
        again = {}

        def went_on():
            again.update(self.funnel())
            return all(again.get(s, 0) >= last[s] for s in STAGES)
        wait_until(went_on, timeout=30, interval=0.5, what="the counts kept across the restart")
        down = subprocess.run([FUNNEL, "down", "--var", self.var], env=self.env,
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(down.returncode, 0, down.stderr)
        wait_until(lambda: not any(alive(p) for p in pids.values()), timeout=10,
                   what="every process gone")


if __name__ == "__main__":
    unittest.main()
