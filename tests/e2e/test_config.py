"""Strict configuration, end to end: an unknown section or key in the
topology file, from --set or a mistyped FUNNEL_* variable stops a daemon
with exit code 2, naming it and the nearest known key; the sample
topologies shipped in deploy/ pass every daemon's check."""
import os
import shutil
import subprocess
import unittest

import redis

from funnel_e2e import Daemon, FunnelTestCase, binary, wait_until

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
DAEMONS = ["campaign", "leads", "sales", "retention", "monitor"]


class TestStrictConfig(FunnelTestCase):
    def run_daemon(self, name, *args, env=None, config=None):
        cmd = [binary("funnel-%s" % name), "-c", config or self.topology.path] + list(args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, **(env or {})))

    def assertRefused(self, out, *fragments):
        self.assertEqual(out.returncode, 2, out.stderr)
        for fragment in fragments:
            self.assertIn(fragment, out.stderr)
        # Refused before serving: it never said it was up
        self.assertNotIn("upstream(s)", out.stderr)

    def test_unknown_key_from_set(self):
        out = self.run_daemon("leads", "--set", "leads/rules/mqll=40")
        self.assertRefused(out, "unknown key 'leads/rules/mqll' (from the command line)",
                           "did you mean 'leads/rules/mql'?")

    def test_unknown_key_in_the_file(self):
        path = os.path.join(self.workdir, "typo.cfg")
        with open(path, "w") as f:
            f.write(self.topology.text.replace(
                "sales\n", "sales\n    reps\n        ana\n            awya = true\n", 1))
        out = self.run_daemon("sales", config=path)
        self.assertRefused(out, "unknown key 'sales/reps/ana/awya' (in %s)" % path,
                           "did you mean 'sales/reps/ana/away'?")

    def test_unknown_section(self):
        out = self.run_daemon("retention", "--set", "retension/churn_days=3")
        self.assertRefused(out, "unknown section 'retension'", "did you mean 'retention'?")

    def test_key_meant_for_another_daemon(self):
        # --http is the monitor's: leads has no such key
        out = self.run_daemon("leads", "--http", "127.0.0.1:8080")
        self.assertRefused(out, "unknown key 'leads/http' (from the command line)")

    def test_mistyped_environment_variable(self):
        out = self.run_daemon("campaign", env={"FUNNEL_LOG_LEVL": "debug"})
        self.assertRefused(out, "unknown environment variable FUNNEL_LOG_LEVL",
                           "did you mean FUNNEL_LOG_LEVEL?")

    def test_monitor_unknown_key(self):
        out = self.run_daemon("monitor", "--set", "monitor/htp=127.0.0.1:1")
        self.assertRefused(out, "unknown key 'monitor/htp'", "did you mean 'monitor/http'?")

    def multihost_here(self):
        """The multi-host sample with its /etc/funnel files made here: a
        keypair per program (public halves listed as clients), the Redis
        password files, and that password required by this test's Redis."""
        etc = os.path.join(self.workdir, "etc-funnel")
        certs, clients = os.path.join(etc, "certs"), os.path.join(etc, "clients")
        os.makedirs(clients)
        for name in DAEMONS + ["gateway", "sim", "funnelctl"]:
            subprocess.run([binary("funnelctl"), "keygen", name, "--dir", certs],
                           check=True, capture_output=True, timeout=30)
            shutil.copy(os.path.join(certs, name + ".cert"), clients)
        for f in ("redis.pass", "redis-retention.pass"):
            with open(os.path.join(etc, f), "w") as out:
                out.write("multihost-sample\n")
            os.chmod(os.path.join(etc, f), 0o600)
        self.redis.client().config_set("requirepass", "multihost-sample")

        def unlock():           # the kit's own client has no password
            if self.redis.proc:
                redis.Redis(host="127.0.0.1", port=self.redis.port, password="multihost-sample",
                            socket_timeout=10).config_set("requirepass", "")
        self.addCleanup(unlock)
        path = os.path.join(self.workdir, "topology-multihost.cfg")
        with open(os.path.join(ROOT, "deploy", "topology-multihost.cfg")) as f:
            # Its hosts become loopback addresses: nothing leaves the machine
            text = f.read().replace("/etc/funnel", etc).replace("10.0.1.", "127.0.1.")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_shipped_topologies_pass_every_daemon(self):
        samples = ["topology.cfg", "topology-multihost.cfg", "compose-topology.cfg"]
        for sample in samples:
            config = self.multihost_here() if sample == "topology-multihost.cfg" else \
                os.path.join(ROOT, "deploy", sample)
            for name in DAEMONS:
                with self.subTest(sample=sample, daemon=name):
                    # The monitor has no Redis of its own (and so no --redis)
                    own = ["--http", self.topology.http()] if name == "monitor" else \
                          ["--api", self.topology.api(name), "--redis", self.redis.url]
                    d = Daemon("%s-%s" % (name, sample), "funnel-%s" % name,
                               config, self.workdir,
                               args=own + ["--pub", self.topology.pub(name)])
                    self.daemons.append(d)
                    d.start()
                    wait_until(lambda: "funnel-%s " % name in d.output() or not d.running(),
                               timeout=20, what="%s started on %s" % (name, sample))
                    self.assertTrue(d.running(), d.output())
                    self.assertEqual(d.stop(), 0, d.output())


if __name__ == "__main__":
    unittest.main()
