"""End-to-end test kit: real redis-server, real daemons, real sockets.

Every test starts its own redis-server on a free loopback port in a temp
dir and its own daemons from the build tree (FUNNEL_BUILD_DIR), talks to
them over ZeroMQ exactly as an outside client in another language would
(proto/wire.md), and stops everything afterwards. Nothing is mocked.

Holding under load (many suites side by side on a busy machine):
- Ports come from below the kernel's ephemeral range, so no outgoing
  connection or port-0 bind can take one between the pick and the daemon's
  bind, and each is reserved across processes (a byte-range lock per port in
  one shared file) until the test ends.
- A daemon or redis-server that still cannot bind its port exits; the next
  kit wait notices it at once and raises PortInUse with its log, and
  FunnelTestCase runs the test again on fresh ports (bounded: 3 attempts).
- Every process a test starts dies with it on every path: daemons run in
  their own process group (killed as a group), get PR_SET_PDEATHSIG, and a
  watchdog outside the test's process tree kills whatever the test process
  leaves behind when it dies, even by SIGKILL (a ctest timeout).
"""
import ctypes
import errno
import fcntl
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import msgpack
import redis
import zmq

BUILD = os.environ.get("FUNNEL_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
SERVICES = ["campaign", "leads", "sales", "retention", "monitor"]
ATTEMPTS = 3            # runs of one test when its ports clash


# ---------------------------------------------------------------------------
# Ports


def _port_range():
    """Below the ephemeral range (ip_local_port_range) and above the
    launcher's defaults (Redis 6390, services 7100..7142)."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return 10000, max(10000 + 2000, low - 1)


PORT_LOW, PORT_HIGH = _port_range()
_reserved = set()           # ports this process holds
_lock_fd = None


def _lock_file():
    """One lock file for every suite on the machine; a port is reserved by
    a POSIX lock on byte <port>, released when this process ends however it
    ends. The descriptor stays open for the life of the process (closing any
    descriptor of the file would drop all our locks)."""
    global _lock_fd
    if _lock_fd is None:
        path = os.path.join(tempfile.gettempdir(), "funnel-e2e-ports.lock")
        try:
            _lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            _lock_fd = -1           # not shareable: still free-checked below
    return _lock_fd


def _bindable(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _try_reserve(port):
    if port in _reserved or not PORT_LOW <= port <= PORT_HIGH:
        return False
    fd = _lock_file()
    if fd >= 0:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
        except OSError:
            return False
    if not _bindable(port):
        if fd >= 0:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, port)
        return False
    _reserved.add(port)
    return True


def free_port():
    """A free loopback port, reserved for this process until release_ports."""
    for _ in range(2000):
        port = random.randint(PORT_LOW, PORT_HIGH)
        if _try_reserve(port):
            return port
    raise RuntimeError("no free port in %d..%d" % (PORT_LOW, PORT_HIGH))


def free_port_block(offsets, step=100):
    """A base such that base + every offset is free, all reserved (for the
    launcher's FUNNEL_PORT_BASE)."""
    span = max(offsets) + 1
    for _ in range(500):
        base = random.randrange(PORT_LOW, PORT_HIGH - span, step)
        got = []
        for o in offsets:
            if not _try_reserve(base + o):
                break
            got.append(base + o)
        else:
            return base
        release_ports(got)
    raise RuntimeError("no free port block in %d..%d" % (PORT_LOW, PORT_HIGH))


def release_ports(ports):
    fd = _lock_file()
    for port in ports:
        if port in _reserved:
            _reserved.discard(port)
            if fd >= 0:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, port)


# ---------------------------------------------------------------------------
# Processes: every one dies with the test


_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _child_setup(parent_pid):
    """preexec_fn: die with the test process. PR_SET_PDEATHSIG fires when
    the spawning *thread* ends, so only spawns from the main thread ask for
    it (a daemon restarted from a threading.Timer must outlive the timer);
    the watchdog covers the rest."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:      # it died before the prctl
            os.kill(os.getpid(), signal.SIGKILL)


def spawn(args, **kwargs):
    """subprocess.Popen in its own process group, dying with this process.
    Use for anything long-lived a test starts; kill with kill_group."""
    kwargs.setdefault("start_new_session", True)
    if threading.current_thread() is threading.main_thread() and "preexec_fn" not in kwargs:
        kwargs["preexec_fn"] = functools.partial(_child_setup, os.getpid())
    return subprocess.Popen(args, **kwargs)


def kill_group(proc, sig=signal.SIGKILL, timeout=10):
    """Signal proc's whole process group (it leads one, see spawn), reap it."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout)


_WATCHDOG = r"""
import os, select, signal, sys
target, me = int(sys.argv[1]), None
if os.fork():
    os._exit(0)                 # re-parented away from the test's process tree
me = os.getpid()

def procs():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    f = f.read().rsplit(")", 1)[1].split()
                out[int(name)] = (int(f[1]), int(f[2]), int(f[3]), f[19])
            except (OSError, IndexError, ValueError):
                pass
    return out

seen = {}                       # pid -> start time, every descendant seen
def scan():
    table = procs()
    kids = {}
    for pid, (ppid, _, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    stack = [target]
    while stack:
        for c in kids.get(stack.pop(), []):
            if c != me and c not in seen:
                seen[c] = table[c][3]
            if c != me:
                stack.append(c)

while True:
    if select.select([0], [], [], 0.5)[0] and not os.read(0, 512):
        break                   # the test process is gone
    scan()
for _ in range(3):
    table = procs()
    leaders = {p for p, st in seen.items() if p in table and table[p][3] == st}
    victims = set(leaders)
    # A daemon's group or session it led (its own children too)
    for pid, (_, pgid, sid, _) in table.items():
        if pid != me and (pgid in leaders or sid in leaders):
            victims.add(pid)
    if not victims:
        break
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    select.select([], [], [], 0.2)
"""
_watchdog_pipe = None


def _start_watchdog():
    """A watchdog outside this process's tree (ctest kills a timed-out
    test's tree; it must survive that to clean up): it notes this process's
    descendants twice a second and SIGKILLs the ones left when our end of
    its pipe closes, i.e. when this process ends, however it ends."""
    global _watchdog_pipe
    if _watchdog_pipe is not None or not os.path.isdir("/proc"):
        return
    r, w = os.pipe()
    try:
        first = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid())], stdin=r,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        first.wait(10)
    finally:
        os.close(r)
    _watchdog_pipe = w          # never written: only its closing matters


if os.environ.get("FUNNEL_E2E_WATCHDOG", "1") != "0":
    _start_watchdog()


# ---------------------------------------------------------------------------
# Bind failures


class PortInUse(AssertionError):
    """A daemon or redis-server could not bind its port (another process
    took it): the test runs again on fresh ports."""


_BIND_FAILURE = ("cannot bind", "cannot listen", "Address already in use",
                 "Could not create server TCP listening socket")
_watched = []               # started, not stopped on purpose: checked in waits


def check_daemons():
    """Raise PortInUse, with the log, if a watched process exited because it
    could not bind; called by every kit wait so the test fails at once."""
    for proc in list(_watched):
        if proc.proc is None or proc.proc.poll() is None:
            continue
        _watched.remove(proc)
        log = proc.output()
        if any(s in log for s in _BIND_FAILURE):
            raise PortInUse("%s exited (code %s): it could not bind its port. Its log:\n%s"
                            % (proc.name, proc.proc.returncode, log[-3000:]))


def binary(name):
    for sub in ("services/%s" % name.replace("funnel-", ""), "tests/testsvc", "."):
        path = os.path.join(BUILD, sub, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError("%s not built under %s" % (name, BUILD))


def read_text(path):
    """A file's text ("" if it cannot be read): a log that may not exist yet."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        check_daemons()
        try:
            last = predicate()
            if last:
                return last
        except PortInUse:
            raise
        except Exception as e:  # a daemon still starting, say
            last = e
        time.sleep(interval)
    check_daemons()
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def _poll_watching(sock, timeout):
    """zmq poll in short slices, checking the daemons between them."""
    deadline = time.time() + timeout
    while True:
        left = deadline - time.time()
        if sock.poll(int(max(0, min(left, 0.1)) * 1000)):
            return True
        check_daemons()
        if left <= 0.1:
            return False


class RedisServer:
    def __init__(self, workdir, appendonly=True):
        self.name = "redis-server"
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.start_args = []            # extra redis-server arguments
        self.proc = None
        try:
            self.start()
        except BaseException:
            self.stop()
            self.release()
            raise

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    @property
    def log(self):
        return os.path.join(self.dir, "redis.log")

    def output(self):
        return read_text(self.log)

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always",
                "--unixsocket", os.path.join(self.dir, "redis.sock"),
                "--logfile", self.log] + self.start_args
        self.proc = spawn(args)
        _watched.append(self)

        def up():
            if self.proc.poll() is not None:
                check_daemons()
                raise AssertionError("redis-server exited (code %s):\n%s"
                                     % (self.proc.returncode, self.output()[-3000:]))
            with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1,
                             socket_connect_timeout=1) as probe:
                return probe.ping()
        try:
            wait_until(up, what="redis-server")
        except AssertionError as e:
            if isinstance(e, PortInUse) or self.proc.poll() is None:
                raise
            raise AssertionError(str(e).split(" (last: ")[0] + ":\n" + self.output()[-3000:])

    def client(self):
        # Bounded: a port someone else holds must not hang a test
        return redis.Redis(host="127.0.0.1", port=self.port, db=0, socket_timeout=30,
                           socket_connect_timeout=10)

    def stop(self):
        if self in _watched:
            _watched.remove(self)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)
        self.proc = None

    def release(self):
        release_ports([self.port])


class RedisNode(RedisServer):
    """A redis-server on a port the caller reserved (cluster nodes, a
    replica, a sentinel's primary), its files in workdir/<name>."""

    def __init__(self, workdir, port, name, args=(), appendonly=False):
        self.name = name
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port
        self.appendonly = appendonly
        self.start_args = list(args)
        self.proc = None
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    def release(self):
        pass                    # the caller's block of ports


class RedisCluster:
    """A Redis Cluster on loopback: `primaries` primaries, each with
    `replicas` replicas (redis-cli --cluster create --cluster-replicas).
    Ports come from one kit-locked block: node i on base+i, its bus port on
    base+BUS+i set with cluster-port (port+10000 may be taken or > 65535);
    each node's cluster-config-file lives in the test's temp dir, so a node
    killed and started again (restart) rejoins with its identity. `args`
    are extra redis-server arguments for every node (a replica promoted by
    a failover needs the primaries' settings too), e.g.
    ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"].
    `url` is the seed list a service takes (redis://h:p1,h:p2,..., every
    node: a seed may be dead). Nodes are numbered as started; which are
    primaries changes with failovers: ask primaries()/primary_for_slot()."""

    BUS = 50

    def __init__(self, workdir, primaries=3, replicas=0, args=(), node_timeout=3000):
        self.workdir = workdir
        self.replicas = replicas
        self.count = primaries * (1 + replicas)         # nodes
        self.base = free_port_block(list(range(self.count)) +
                                    [self.BUS + i for i in range(self.count)])
        self.ports = [self.base + i for i in range(self.count)]
        self.args = list(args)
        self.node_timeout = node_timeout
        self.nodes = []
        try:
            for i in range(self.count):
                self.nodes.append(RedisNode(workdir, self.ports[i], "cluster-%d" % i,
                                            self._node_args(i)))
            create = ["redis-cli", "--cluster", "create"] + \
                ["127.0.0.1:%d" % p for p in self.ports] + ["--cluster-yes"]
            if replicas:
                create += ["--cluster-replicas", str(replicas)]
            out = subprocess.run(create, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 timeout=60, text=True)
            if out.returncode != 0:
                raise AssertionError("redis-cli --cluster create failed:\n" + out.stdout[-3000:])
            wait_until(self.settled, timeout=60, interval=0.2, what="the cluster to settle")
        except BaseException:
            self.stop()
            self.release()
            raise

    def _node_args(self, i):
        # cluster-replica-validity-factor 0: a replica always stands for
        # election, however long its link was down (a busy test machine);
        # repl-diskless-sync-delay 0: a replica syncs at once, not after 5 s
        return ["--cluster-enabled", "yes",
                "--cluster-port", str(self.base + self.BUS + i),
                "--cluster-config-file", os.path.join(self.workdir, "cluster-%d" % i,
                                                      "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout),
                "--cluster-replica-validity-factor", "0",
                "--repl-diskless-sync-delay", "0"] + self.args

    @property
    def url(self):
        return "redis://" + ",".join("127.0.0.1:%d" % p for p in self.ports)

    def client(self, i):
        return self.nodes[i].client()

    def alive(self, i):
        n = self.nodes[i]
        return n.proc is not None and n.proc.poll() is None

    def index(self, port):
        return self.ports.index(int(port))

    def _cmd(self, i, *args):
        with self.client(i) as c:
            return c.execute_command(*args)

    def _info(self, i):
        info = self._cmd(i, "CLUSTER", "INFO")
        if isinstance(info, bytes):
            info = info.decode()
        return dict(line.split(":", 1) for line in info.split() if ":" in line)

    def node_id(self, i):
        node = self._cmd(i, "CLUSTER", "MYID")
        return node.decode() if isinstance(node, bytes) else node

    def role(self, i):
        """"master" or "slave", as node i says (ROLE)."""
        role = self._cmd(i, "ROLE")[0]
        return role.decode() if isinstance(role, bytes) else role

    def slot_map(self, i=None):
        """[(first, last, primary index, [replica indexes])] as node i (the
        first live node by default) sees it, sorted by first slot."""
        if i is None:
            i = next(k for k in range(self.count) if self.alive(k))
        out = []
        for first, last, primary, *replicas in self._cmd(i, "CLUSTER", "SLOTS"):
            out.append((int(first), int(last), self.index(primary[1]),
                        sorted(self.index(r[1]) for r in replicas)))
        return sorted(out)

    def primaries(self):
        """Indexes of the nodes serving slots now (sorted)."""
        return sorted({p for _, _, p, _ in self.slot_map()})

    def keyslot(self, key):
        i = next(k for k in range(self.count) if self.alive(k))
        return int(self._cmd(i, "CLUSTER", "KEYSLOT", key))

    def primary_for_slot(self, slot):
        for first, last, primary, _ in self.slot_map():
            if first <= slot <= last:
                return primary
        raise AssertionError("slot %d is served by no node" % slot)

    def primary_for_key(self, key):
        return self.primary_for_slot(self.keyslot(key))

    def replicas_of(self, primary):
        return sorted({r for _, _, p, rs in self.slot_map() for r in rs if p == primary})

    def settled(self):
        """Every node up, and each one says: cluster state ok, all 16384
        slots served, every node known, the same slot map as the others;
        with replicas, every primary has its replicas listed and in sync."""
        maps = []
        for i in range(self.count):
            if not self.alive(i):
                return False
            info = self._info(i)
            if info.get("cluster_state") != "ok" or \
                    info.get("cluster_slots_ok") != "16384" or \
                    info.get("cluster_known_nodes") != str(self.count):
                return False
            maps.append(self.slot_map(i))
        if any(m != maps[0] for m in maps):
            return False
        for _, _, primary, replicas in maps[0]:
            if len(replicas) != self.replicas:
                return False
            if self.replicas:
                with self.client(primary) as c:
                    info = c.info("replication")
                if sum(1 for k in range(info.get("connected_slaves", 0))
                       if info.get("slave%d" % k, {}).get("state") == "online") < self.replicas:
                    return False
        return True

    def wait_settled(self, timeout=60):
        wait_until(self.settled, timeout=timeout, interval=0.2, what="the cluster to settle")

    def kill9(self, i):
        """SIGKILL node i (no shutdown, nothing saved)."""
        n = self.nodes[i]
        if n in _watched:
            _watched.remove(n)
        kill_group(n.proc)

    def restart(self, i):
        """Start a killed node again on its port with its nodes.conf: it
        rejoins the cluster (as a replica of whoever took its slots)."""
        self.nodes[i].start()

    def fail_over(self, primary, takeover=False, timeout=60):
        """kill -9 of `primary` and the wait until one of its replicas is
        promoted: by the cluster's own failover (node timeout, election),
        or at once by CLUSTER FAILOVER TAKEOVER sent to the replica. Done
        when every live node serves every slot from the same map with the
        replica as the primary of the dead node's slots. Returns the
        promoted node's index."""
        slots = [(f, l) for f, l, p, _ in self.slot_map() if p == primary]
        replicas = self.replicas_of(primary)
        if not slots or not replicas:
            raise AssertionError("node %d is not a primary with replicas: %r"
                                 % (primary, self.slot_map()))
        self.kill9(primary)
        if takeover:
            self._cmd(replicas[0], "CLUSTER", "FAILOVER", "TAKEOVER")

        def promoted():
            live = [i for i in range(self.count) if self.alive(i)]
            maps = []
            for i in live:
                info = self._info(i)
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                    return None
                maps.append(self.slot_map(i))
            if any(m != maps[0] for m in maps):
                return None
            owners = {p for f, l, p, _ in maps[0] if (f, l) in slots}
            if len(owners) != 1 or owners & {primary} or not owners <= set(replicas):
                return None
            winner = owners.pop()
            return self.role(winner) == "master" and winner + 1
        return wait_until(promoted, timeout=timeout, interval=0.1,
                          what="a replica of node %d promoted" % primary) - 1

    def migrate_slot(self, slot, target, batch=20, pause=0.0, timeout=120):
        """Live migration of one slot to primary `target`, the steps of
        redis-cli --cluster reshard: SETSLOT IMPORTING on the target,
        MIGRATING on the source, MIGRATE of its keys in batches (clients
        meanwhile get ASK for keys already moved, TRYAGAIN for a
        transaction whose keys are split), then SETSLOT NODE on the
        target, the source and every other primary. `pause` seconds
        between batches stretch it over a load. Returns the keys moved."""
        source = self.primary_for_slot(slot)
        if source == target:
            raise AssertionError("slot %d is on node %d already" % (slot, target))
        src, dst = self.node_id(source), self.node_id(target)
        deadline = time.time() + timeout
        self._cmd(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", src)
        self._cmd(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst)
        moved = 0
        with self.client(source) as c:
            while True:
                if time.time() > deadline:
                    raise AssertionError("migration of slot %d: not done in %d s (%d keys moved)"
                                         % (slot, timeout, moved))
                keys = c.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                c.execute_command("MIGRATE", "127.0.0.1", self.ports[target], "", 0, 10000,
                                  "KEYS", *keys)
                moved += len(keys)
                if pause:
                    time.sleep(pause)
        others = [p for p in self.primaries() if p not in (source, target)]
        for i in [target, source] + others:
            self._cmd(i, "CLUSTER", "SETSLOT", slot, "NODE", dst)
        wait_until(lambda: all(self.slot_map(i) == self.slot_map(target)
                               for i in range(self.count) if self.alive(i))
                   and self.primary_for_slot(slot) == target,
                   timeout=max(5, deadline - time.time()), interval=0.1,
                   what="every node to see slot %d on node %d" % (slot, target))
        return moved

    def dbsize(self, i):
        with self.client(i) as c:
            return c.dbsize()

    def stop(self):
        for n in self.nodes:
            n.stop()

    def release(self):
        release_ports(self.ports + [self.base + self.BUS + i for i in range(self.count)])


class Background(threading.Thread):
    """fn(*args) in a thread; join() re-raises what it raised (so a load or
    a migration failing in the background fails the test, with its
    message) and is bounded: a thread still running after `timeout`
    raises too."""

    def __init__(self, fn, *args, name=None):
        super().__init__(name=name or getattr(fn, "__name__", "background"), daemon=True)
        self.fn, self.args = fn, args
        self.result = None
        self.error = None
        self.start()

    def run(self):
        try:
            self.result = self.fn(*self.args)
        except BaseException as e:          # handed to join()
            self.error = e

    def join(self, timeout=120):
        super().join(timeout)
        if self.is_alive():
            raise AssertionError("%s still running after %d s" % (self.name, timeout))
        if self.error is not None:
            raise self.error
        return self.result


def part_of(entity, partitions=16):
    """The partition rule of proto/wire.md (FNV-1a-32 mod partitions), as a
    client outside the project computes it."""
    h = 2166136261
    for b in entity.encode():
        h ^= b
        h = (h * 16777619) & 0xFFFFFFFF
    return h % partitions


def owns_set(text):
    """"0-3,8,10-11" -> {0, 1, 2, 3, 8, 10, 11}"""
    out = set()
    for piece in text.split(","):
        lo, _, hi = piece.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


class Sentinel:
    """One redis-sentinel watching `primary` (a RedisServer) as `master`,
    quorum 1, down-after 1 s: one sentinel can fail over alone. Its port is
    reserved by the caller or here."""

    def __init__(self, workdir, primary_port, name="sentinel", master="mymaster", port=None):
        self.name = name
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.owns_port = port is None
        self.port = port or free_port()
        self.master = master
        self.proc = None
        self.config = os.path.join(self.dir, "sentinel.conf")
        with open(self.config, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"
                    "sentinel monitor %s 127.0.0.1 %d 1\n"
                    "sentinel down-after-milliseconds %s 1000\n"
                    "sentinel failover-timeout %s 10000\n"
                    % (self.port, self.dir, self.log, master, primary_port, master, master))
        try:
            self.start()
        except BaseException:
            self.stop()
            self.release()
            raise

    @property
    def log(self):
        return os.path.join(self.dir, "sentinel.log")

    def output(self):
        return read_text(self.log)

    def start(self):
        self.proc = spawn(["redis-sentinel", self.config])
        _watched.append(self)
        wait_until(lambda: self.primary() is not None, what="sentinel up")

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5,
                           socket_connect_timeout=5)

    def primary(self):
        """(host, port) the sentinel names as the primary now."""
        with self.client() as c:
            addr = c.execute_command("SENTINEL", "get-master-addr-by-name", self.master)
        if not addr:
            return None
        return (addr[0].decode() if isinstance(addr[0], bytes) else addr[0], int(addr[1]))

    def stop(self):
        if self in _watched:
            _watched.remove(self)
        if self.proc is not None:
            kill_group(self.proc, signal.SIGTERM)
        self.proc = None

    def release(self):
        if self.owns_port:
            release_ports([self.port])


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

    def release(self):
        release_ports([p for pair in self.ports.values() for p in pair])


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
        with open(self.log, "a") as logf:
            self.proc = spawn([self.binary, "-c", self.config] + self.args,
                              stdout=logf, stderr=subprocess.STDOUT, env=self.env)
        if self not in _watched:
            _watched.append(self)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _unwatch(self):
        if self in _watched:
            _watched.remove(self)

    def stop(self, timeout=10):
        """SIGTERM and wait: returns the exit code."""
        self._unwatch()
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            raise

    def kill9(self):
        self._unwatch()
        if self.proc is not None:
            kill_group(self.proc)

    def output(self):
        return read_text(self.log)


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
        if not _poll_watching(self.sock, timeout):
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
        if not _poll_watching(self.sock, timeout):
            raise TimeoutError("nothing published")
        topic, body = self.sock.recv_multipart()
        return topic.decode(), msgpack.unpackb(body, raw=False)

    def close(self):
        self.sock.close(0)


def chromium():
    """The headless browser's path, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: a client that
    sends masked text frames and reads whole (possibly fragmented) text
    messages, every read bounded by the socket's timeout."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, host, port, path, timeout=10.0):
        import base64
        import hashlib
        self.sock = socket.create_connection((host, port), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (path, host, port, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError("websocket handshake refused: %s" % lines[0])
        accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        if headers.get("sec-websocket-accept") != accept:
            raise ConnectionError("websocket handshake: bad Sec-WebSocket-Accept")

    def _frame(self, opcode, data):
        import struct
        n = len(data)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(data)))

    def send(self, text):
        self._frame(0x1, text.encode())

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        import struct
        parts = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if opcode == 0x9:
                self._frame(0xA, data)
                continue
            if opcode == 0xA:
                continue
            parts.append(data)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Browser:
    """Headless Chromium driven over the DevTools protocol: it binds its own
    ephemeral debugging port (--remote-debugging-port=0) and writes it to
    DevToolsActivePort in its fresh profile; we attach to a page over a
    websocket and read the live DOM, so a test waits for what it asserts
    instead of a virtual-time budget. Always close() it (or use `with`)."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1"]

    def __init__(self, path=None, timeout=60.0):
        path = path or chromium()
        if not path:
            raise FileNotFoundError("chromium not installed")
        self.profile = tempfile.mkdtemp(prefix="funnel-chromium-")
        self.log = os.path.join(self.profile, "chromium.log")
        self.ws = None
        self.next_id = 0
        self.session = None
        with open(self.log, "w") as logf:
            self.proc = spawn([path] + self.FLAGS + ["--user-data-dir=%s" % self.profile,
                                                     "about:blank"],
                              stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._attach(timeout)
        except BaseException:
            self.close()
            raise

    def output(self):
        return read_text(self.log)

    def _attach(self, timeout):
        active = os.path.join(self.profile, "DevToolsActivePort")

        def endpoint():
            if self.proc.poll() is not None:
                raise AssertionError("chromium exited (%s):\n%s"
                                     % (self.proc.returncode, self.output()[-3000:]))
            with open(active) as f:
                lines = f.read().split("\n")
            return len(lines) >= 2 and lines[1].startswith("/") and (int(lines[0]), lines[1])
        port, path = wait_until(endpoint, timeout, interval=0.1, what="chromium DevTools port")
        self.ws = _WebSocket("127.0.0.1", port, path, timeout)
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]

    def call(self, method, params=None, session=None):
        """One DevTools command; its result, events before it skipped."""
        import json
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError("%s: %s" % (method, reply["error"]))
                return reply.get("result", {})

    def navigate(self, url):
        self.call("Page.navigate", {"url": url}, self.session)

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                           self.session)
        if "exceptionDetails" in result:
            raise RuntimeError("%s: %s" % (expression, result["exceptionDetails"]))
        return result["result"].get("value")

    def dom(self):
        return self.evaluate("document.documentElement ? document.documentElement.outerHTML : ''")

    def wait_dom(self, check, timeout=30.0, interval=0.25, what="the page"):
        """Polls the live DOM until check(html) passes (returns without an
        AssertionError); then returns the html. Bounded: on timeout the last
        assertion is raised with the DOM that failed it."""
        deadline = time.time() + timeout
        while True:
            html = self.dom()
            try:
                check(html)
                return html
            except AssertionError as e:
                if time.time() > deadline:
                    raise AssertionError("%s never held within %.0f s: %s\n---- DOM ----\n%s"
                                         % (what, timeout, e, html[-6000:]))
            check_daemons()
            time.sleep(interval)

    def close(self):
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        kill_group(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_counter = [0]


def event(etype, data, eid=None, ts=None, src="e2e"):
    _counter[0] += 1
    return {"v": 1, "id": eid or "e2e-%d-%d" % (os.getpid(), _counter[0]), "type": etype,
            "ts": ts if ts is not None else int(time.time() * 1000), "src": src, "data": data}


class FunnelTestCase(unittest.TestCase):
    """Per test: a temp dir, a redis-server, a topology; daemons on demand.
    A test whose daemon could not bind (PortInUse) runs again, set up
    afresh on new ports, up to ATTEMPTS times in all."""

    topology_extra = ""

    workdir_prefix = "funnel-e2e-"

    def setUp(self):
        self._problems_before = self._problem_count()
        self.daemons = []
        self.clients = []
        self.redis = None
        self.topology = None
        self.workdir = tempfile.mkdtemp(prefix=self.workdir_prefix)
        self.topology = Topology(self.workdir, self.start_store(), self.topology_extra)

    def start_store(self):
        """The Redis the test's services use; returns its URL."""
        self.redis = RedisServer(self.workdir)
        return self.redis.url

    def tearDown(self):
        self._kit_cleanup(keep=not self._outcome_ok())

    def _kit_cleanup(self, keep=False):
        """Stops everything this test started, on every path; each step
        runs even if an earlier one raised."""
        for c in getattr(self, "clients", []):
            try:
                c.close()
            except Exception:
                pass
        for d in getattr(self, "daemons", []):
            try:
                d.kill9()
            except Exception as e:
                print("cannot stop %s: %r" % (d.name, e), file=sys.stderr)
        if getattr(self, "redis", None) is not None:
            self.redis.stop()
            self.redis.release()
        if getattr(self, "topology", None) is not None:
            self.topology.release()
        workdir = getattr(self, "workdir", None)
        if workdir is None:
            return
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print("\n(kept %s for inspection)" % workdir)
            for d in getattr(self, "daemons", []):
                print("---- %s log (tail) ----\n%s" % (d.name, d.output()[-3000:]))

    def run(self, result=None):
        name = self._testMethodName
        method = getattr(self, name)
        if getattr(method, "__unittest_skip__", False) or \
                getattr(type(self), "__unittest_skip__", False):
            return super().run(result)
        setup = self.setUp
        attempts = [1]

        def clash(e):
            if attempts[0] >= ATTEMPTS:
                raise e
            attempts[0] += 1
            print("\n(%s: a port was taken, %s; again on fresh ports, attempt %d of %d)"
                  % (self.id(), str(e).split(". Its log")[0], attempts[0], ATTEMPTS),
                  file=sys.stderr)

        def retrying_setup():
            while True:
                try:
                    return setup()
                except PortInUse as e:
                    self._kit_cleanup()
                    clash(e)

        @functools.wraps(method)
        def retrying_method(*args, **kwargs):
            while True:
                try:
                    return method(*args, **kwargs)
                except (PortInUse, zmq.ZMQError) as e:
                    if isinstance(e, zmq.ZMQError) and e.errno != errno.EADDRINUSE:
                        raise
                    clash(PortInUse(str(e)) if isinstance(e, zmq.ZMQError) else e)
                    try:
                        self.tearDown()
                    except Exception:
                        self._kit_cleanup()
                    retrying_setup()

        self.setUp = retrying_setup
        setattr(self, name, retrying_method)
        try:
            return super().run(result)
        finally:
            del self.setUp
            delattr(self, name)

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

    def counts(self, svc):
        """STATS counters without 'subscribers': a gauge of the downstream
        services registered so far, which moves on its own (they register
        at their first REPLAY, asynchronously)."""
        counters = self.stats(svc)
        counters.pop("subscribers", None)
        return counters
