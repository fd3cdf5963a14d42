"""The e2e kit itself under the conditions that broke it on a busy machine:
a port taken between the pick and the daemon's bind, a test process killed
by SIGKILL (a ctest timeout) with daemons, Redis and grandchildren running,
and two suites side by side picking ports."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import unittest

import funnel_e2e
from funnel_e2e import (Daemon, FunnelTestCase, PortInUse, RedisServer, Topology, wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))


def alive(pid):
    """Running and not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def squat(port):
    """Takes a port the way an unrelated process would (no SO_REUSEADDR)."""
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen(1)
    return s


class TestPortClash(FunnelTestCase):
    attempts = []
    squatted = []

    def tearDown(self):
        for s in self.squatted:
            s.close()
        del self.squatted[:]
        super().tearDown()

    def test_a_taken_port_reruns_the_test_on_fresh_ports(self):
        self.attempts.append(self.topology.ports["alpha"])
        if len(self.attempts) == 1:
            # Someone else binds alpha's API port after the kit picked it
            self.squatted.append(squat(self.topology.ports["alpha"][0]))
        self.daemon("alpha", "funnel-testsvc")
        api = self.wait_ready("alpha")
        self.assertEqual(api.ok("PING")["svc"], "alpha")
        # Second attempt, on other ports: the first one failed at its bind
        self.assertEqual(len(self.attempts), 2)
        self.assertNotEqual(self.attempts[0], self.attempts[1])


class TestBindFailure(unittest.TestCase):
    """Without the rerun: the failure is PortInUse carrying the daemon's log,
    raised by the first wait, never a timeout."""

    def test_fails_at_once_with_the_log(self):
        workdir = funnel_e2e.tempfile.mkdtemp(prefix="funnel-e2e-")
        redis = RedisServer(workdir)
        topo = Topology(workdir, redis.url)
        blocker = squat(topo.ports["alpha"][1])
        d = Daemon("alpha", "funnel-testsvc", topo.path, workdir)
        try:
            d.start()
            with self.assertRaises(PortInUse) as cm:
                wait_until(lambda: False, timeout=60, what="never")
            self.assertIn("cannot bind", str(cm.exception))
            self.assertIn("alpha", str(cm.exception))
            self.assertIsNotNone(d.proc.poll())
        finally:
            blocker.close()
            d.kill9()
            redis.stop()
            redis.release()
            topo.release()
            funnel_e2e.shutil.rmtree(workdir, ignore_errors=True)

    def test_redis_that_cannot_bind(self):
        workdir = funnel_e2e.tempfile.mkdtemp(prefix="funnel-e2e-")
        port = funnel_e2e.free_port()
        blocker = squat(port)
        try:
            orig = funnel_e2e.free_port
            funnel_e2e.free_port = lambda: port
            try:
                with self.assertRaises(PortInUse) as cm:
                    RedisServer(workdir)
            finally:
                funnel_e2e.free_port = orig
            self.assertIn("redis-server", str(cm.exception))
        finally:
            blocker.close()
            funnel_e2e.release_ports([port])
            funnel_e2e.shutil.rmtree(workdir, ignore_errors=True)


class TestPortsAcrossProcesses(unittest.TestCase):
    def test_a_reserved_port_is_not_handed_to_another_suite(self):
        port = funnel_e2e.free_port()
        try:
            self.assertFalse(port >= 32768 and port <= 60999, "in the ephemeral range: %d" % port)
            other = subprocess.run(
                [sys.executable, "-c", "import funnel_e2e, sys; "
                 "print(funnel_e2e._try_reserve(int(sys.argv[1])))", str(port)],
                cwd=HERE, capture_output=True, text=True, timeout=30,
                env=dict(os.environ, FUNNEL_E2E_WATCHDOG="0"))
            self.assertEqual(other.stdout.strip(), "False", other.stderr)
        finally:
            funnel_e2e.release_ports([port])
        self.assertTrue(funnel_e2e._try_reserve(port))
        funnel_e2e.release_ports([port])


CHILD = textwrap.dedent("""
    import os, subprocess, sys, threading, time
    import funnel_e2e
    from funnel_e2e import Daemon, RedisServer, Topology, spawn
    workdir = sys.argv[1]
    redis = RedisServer(workdir)
    topo = Topology(workdir, redis.url)
    d = Daemon("alpha", "funnel-testsvc", topo.path, workdir).start()
    # A grandchild in the daemon-like group, a plain Popen (as a test's own
    # funnelctl), and a process spawned from a thread (no PDEATHSIG)
    group = spawn(["sh", "-c", "sleep 300 & echo $! > %s/grandchild; wait" % workdir])
    plain = subprocess.Popen(["sleep", "300"])
    box = []
    t = threading.Thread(target=lambda: box.append(spawn(["sleep", "301"])))
    t.start(); t.join()
    funnel_e2e.wait_until(lambda: os.path.exists(workdir + "/grandchild")
                          and open(workdir + "/grandchild").read().strip(), what="grandchild")
    pids = [redis.proc.pid, d.proc.pid, group.pid, plain.pid, box[0].pid,
            int(open(workdir + "/grandchild").read())]
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(600)
""")


class TestKilledTestLeavesNothing(unittest.TestCase):
    def test_sigkill_of_the_test_process(self):
        workdir = funnel_e2e.tempfile.mkdtemp(prefix="funnel-e2e-")
        child = subprocess.Popen([sys.executable, "-c", CHILD, workdir], cwd=HERE,
                                 stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        try:
            line = child.stdout.readline()
            pids = [int(p) for p in line.split()]
            self.assertEqual(len(pids), 6, line)
            self.assertTrue(all(alive(p) for p in pids), pids)
            # Long enough for the watchdog's scan to see every descendant
            time.sleep(1.2)
            child.send_signal(signal.SIGKILL)       # as ctest does on a timeout
            child.wait(10)
            wait_until(lambda: not any(alive(p) for p in pids), timeout=15,
                       what="every process of the killed test gone")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
            child.stdout.close()
            funnel_e2e.shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
