"""
tests/integration/funnel_testlib.py - what the Python integration tests
(test_protocol.py, test_cli.py) share; not a test itself.

It offers:

  - CheckFailed and the expect, expect_eq and expect_in helpers that raise it;
  - Results, which runs one check at a time, prints "ok - name" or
    "not ok - name: reason", counts them and prints "N passed, M failed";
  - Daemon, a funneld on wildcard loopback ports in a temporary data
    directory, started with --ready-file and waited for within a bound,
    and always stopped and removed by close();
  - start_daemon, which starts a Daemon and reports a failed start as a
    failed check;
  - start_funneld, a funneld on a data directory of the test's choosing
    (its ready file and log in another), and start_shimmed, the same
    under the crash shim (tests/crash/shim.c), whose environment
    shim_env makes; wait_ready, the bounded wait for a ready file that
    they and Daemon share;
  - connect, a pyzmq socket whose sends and receives are bounded, and
    replay_all, which follows a replay op's next until its end;
  - Service, a funnel service binary (funnel-scoring, funnel-routing, ...)
    run against one Daemon with its own view, rules file and log: bounded
    runs to the head, started in the background until its ready file
    appears, its view digest;
  - run_service_groups, the main() of a service's test: groups of checks,
    each against a fresh daemon;
  - of_type, the records of one type (and lead), and wait_until, a bounded
    wait for a condition;
  - REPO, the repository root, and the timeouts the tests share.

The test scripts import it by name: a script's own directory is on
sys.path when it is run as a script.
"""
import collections
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time

import zmq

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_MS = 5000          # every pyzmq send and receive is bounded by this
READY_WAIT_S = 10.0
HEARTBEAT_MS = 200


class CheckFailed(Exception):
    pass


def expect(cond, reason):
    if not cond:
        raise CheckFailed(reason)


def expect_eq(got, want, what):
    if got != want:
        raise CheckFailed("%s: got %r, want %r" % (what, got, want))


def expect_in(needle, hay, what):
    if needle not in hay:
        raise CheckFailed("%s: %r not in %r" % (what, needle, hay))


def of_type(recs, t, lead=None):
    """The decoded records of type t (and of that lead, if given)."""
    return [r for r in recs if r["type"] == t and (lead is None or r.get("lead") == lead)]


def wait_until(fn, what, wait_s=15.0):
    """Call fn every 50 ms until it returns something true, and return
    that; CheckFailed after wait_s."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise CheckFailed("timed out waiting for %s" % what)


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, name):
        self.passed += 1
        print("ok - %s" % name, flush=True)

    def not_ok(self, name, reason):
        self.failed += 1
        print("not ok - %s: %s" % (name, reason), flush=True)

    def run(self, name, fn, *args):
        """Run one check; any exception is a failure with its reason."""
        try:
            fn(*args)
        except CheckFailed as e:
            self.not_ok(name, e)
            return False
        except Exception as e:  # a timeout or a decode error is a failed check too
            self.not_ok(name, "%s: %s" % (type(e).__name__, e))
            return False
        self.ok(name)
        return True

    def summary(self):
        """Print "N passed, M failed"; returns the exit status, 1 if any failed."""
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 1 if self.failed else 0


class Daemon:
    """A funneld on wildcard loopback ports in a temporary data directory
    (prefix names the directory; data, when given, is the data directory
    to serve instead of one inside it; extra_args go on its command line).
    Wildcard ports are safe because it is never restarted.  close() stops it
    with SIGKILL, or with SIGTERM first (SIGKILL only if it is still running
    5 s later) when term_on_close."""

    def __init__(self, binary, prefix="funnel-", term_on_close=False, data=None, extra_args=()):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.ready = os.path.join(self.dir, "ready")
        self.data = data or os.path.join(self.dir, "data")
        self.term_on_close = term_on_close
        self.errlog = None
        self.proc = None
        try:
            self.errlog = open(os.path.join(self.dir, "funneld.log"), "wb")
            self.proc = subprocess.Popen(
                [binary, "--data", self.data,
                 "--ingest", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                 "--query", "tcp://127.0.0.1:*", "--ready-file", self.ready,
                 "--heartbeat-ms", str(HEARTBEAT_MS)] + list(extra_args),
                stdin=subprocess.DEVNULL, stdout=self.errlog, stderr=self.errlog)
            self.endpoints = self._wait_ready()
        except BaseException:
            self.close()   # never leave a daemon or a directory behind
            raise

    def _wait_ready(self):
        eps = wait_ready(self.proc, self.ready)
        if eps is not None:
            return eps
        if self.proc.poll() is not None:
            raise RuntimeError("funneld exited with %d before it was ready: %s"
                               % (self.proc.returncode, self.log_tail()))
        raise RuntimeError("no ready file after %.0f s: %s" % (READY_WAIT_S, self.log_tail()))

    def log_tail(self):
        return file_tail(os.path.join(self.dir, "funneld.log"))

    def terminate(self, wait_s=5.0):
        """SIGTERM and wait; returns the exit status or None if still running."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            if self.term_on_close:
                self.terminate(wait_s=5.0)
            if self.proc.poll() is None:
                self.proc.kill()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        if self.errlog is not None:
            self.errlog.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_ready(proc, ready, wait_s=READY_WAIT_S):
    """The endpoints funneld (proc) wrote to its ready file (a dict with
    ingest, publish, query and pid), or None when it exited first or
    wrote none within wait_s."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        if os.path.exists(ready):
            with open(ready) as f:
                eps = dict(line.strip().split("=", 1) for line in f if "=" in line)
            if all(k in eps for k in ("ingest", "publish", "query", "pid")):
                return eps
        time.sleep(0.02)
    return None


def file_tail(path, n=600):
    """The last n bytes of a log, as text ("" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace").strip()
    except OSError:
        return ""


def start_funneld(binary, datadir, tdir, args=(), env=None, wait_s=READY_WAIT_S,
                  what="funneld"):
    """funneld (binary) on datadir, on wildcard loopback ports, with its
    ready file tdir/ready (replaced) and its log tdir/log (appended to),
    args on its command line and env its environment (None: this one's).
    Returns (Popen, endpoints) once ready (wait_ready).  When it does not
    start it is stopped (stop_proc) and CheckFailed says "<what> did not
    start: <the log's tail>".  The caller stops it (stop_proc, or a
    signal of its choice)."""
    ready, log = os.path.join(tdir, "ready"), os.path.join(tdir, "log")
    if os.path.exists(ready):
        os.unlink(ready)
    errlog = open(log, "ab")
    try:
        proc = subprocess.Popen(
            [binary, "--data", datadir, "--ingest", "tcp://127.0.0.1:*",
             "--publish", "tcp://127.0.0.1:*", "--query", "tcp://127.0.0.1:*",
             "--ready-file", ready] + list(args),
            stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog, env=env)
    finally:
        errlog.close()
    eps = wait_ready(proc, ready, wait_s)
    if eps is None:
        stop_proc(proc)
        raise CheckFailed("%s did not start: %s" % (what, file_tail(log, 400)))
    return proc, eps


def shim_env(shim, **crash):
    """This environment with the crash shim (shim: the path of
    crashshim.so) preloaded and crash (CRASH_* settings: CRASH_TRACE,
    CRASH_WATCH, CRASH_SYNC_ONLY, ... as tests/crash/shim.c reads them)
    added.  An ASan binary's runtime is then not first in the library
    list, which it refuses unless ASAN_OPTIONS has
    verify_asan_link_order=0: added here."""
    env = dict(os.environ, LD_PRELOAD=shim, **crash)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
    return env


# tests/crash/shim.c's trace: record kinds and flags, and each record's head
OP_OPEN, OP_WRITE, OP_SYNC, OP_DIRSYNC, OP_TRUNC, OP_RENAME, OP_MKDIR, OP_UNLINK, OP_MMAPW = range(1, 10)
F_CREAT, F_DSYNC, F_DIR = 1, 2, 4
TRACE_REC = struct.Struct("=IIQQQ")

Op = collections.namedtuple("Op", "kind flags ino off data")


def read_trace(path):
    """The shim's trace (start_shimmed's root/trace/ops): [Op] in the order done."""
    ops = []
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0
    while pos < len(buf):
        kind, flags, ino, off, n = TRACE_REC.unpack_from(buf, pos)
        pos += TRACE_REC.size
        ops.append(Op(kind, flags, ino, off, buf[pos:pos + n]))
        pos += n
    return ops


def start_shimmed(binary, shim, root, args=(), wait_s=READY_WAIT_S, **crash):
    """funneld (binary) under the crash shim (shim_env) in root: the shim
    watches root/fs (the disk; funneld's data directory is root/fs/data)
    and writes its trace to root/trace/ops, beside the ready file and the
    log (root/trace: not watched); both directories are made when
    missing, and an earlier trace there is appended to.  crash: more
    CRASH_* settings.  Returns (Popen, endpoints) as start_funneld, whose
    CheckFailed says "funneld under the shim did not start: ..."."""
    fs, tdir = os.path.join(root, "fs"), os.path.join(root, "trace")
    os.makedirs(fs, exist_ok=True)
    os.makedirs(tdir, exist_ok=True)
    env = shim_env(shim, CRASH_TRACE=os.path.join(tdir, "ops"), CRASH_WATCH=fs, **crash)
    return start_funneld(binary, os.path.join(fs, "data"), tdir, args, env, wait_s,
                         what="funneld under the shim")


def start_daemon(res, binary, report_ok=False, **daemon_args):
    """A started Daemon, or None after a failed check "funneld starts and
    writes its ready file"; with report_ok a start is a passed check."""
    name = "funneld starts and writes its ready file"
    try:
        daemon = Daemon(binary, **daemon_args)
    except Exception as e:
        res.not_ok(name, e)
        return None
    if report_ok:
        res.ok(name)
    return daemon


class Service:
    """A service binary against one daemon, with a view, a rules file and a
    log of its own in the daemon's directory (name prefixes them all).
    extra_args go on every command line (e.g. a clock file)."""

    RUN_TIMEOUT_S = 60

    def __init__(self, binary, daemon, name, extra_args=()):
        self.binary = binary
        self.daemon = daemon
        self.view = os.path.join(daemon.dir, name + "-view")
        self.rules = os.path.join(daemon.dir, name + ".yaml")
        self.log = os.path.join(daemon.dir, name + ".log")
        self.ready = os.path.join(daemon.dir, name + ".ready")
        self.extra_args = list(extra_args)

    def write_rules(self, text):
        with open(self.rules, "w") as f:
            f.write(text)

    def args(self, *extra):
        eps = self.daemon.endpoints
        return [self.binary, "--rules", self.rules, "--view", self.view,
                "--ingest", eps["ingest"], "--publish", eps["publish"],
                "--query", eps["query"]] + self.extra_args + list(extra)

    def run(self, *extra, timeout=RUN_TIMEOUT_S):
        """Run to completion (bounded); its stderr is appended to the log."""
        p = subprocess.run(self.args(*extra), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout, text=True)
        with open(self.log, "a") as f:
            f.write(p.stderr)
        return p

    def ok(self, *extra):
        """Run, expect exit status 0, return stdout."""
        p = self.run(*extra)
        expect_eq(p.returncode, 0, "%s %s exit status (stderr: %s)"
                  % (os.path.basename(self.binary), " ".join(extra), p.stderr[-800:]))
        return p.stdout

    def until_head(self, *extra):
        return self.ok("--until-head", *extra)

    def start(self, *extra):
        """Start in the background; returns the Popen once the ready file is
        there (10 s at most; the process is killed if it is not)."""
        if os.path.exists(self.ready):
            os.unlink(self.ready)
        errlog = open(self.log, "ab")
        proc = subprocess.Popen(self.args("--ready-file", self.ready, *extra),
                                stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog)
        errlog.close()
        deadline = time.monotonic() + READY_WAIT_S
        while not os.path.exists(self.ready):
            if proc.poll() is not None:
                raise CheckFailed("%s exited early: %s" % (self.binary, self.tail()))
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(timeout=5)
                raise CheckFailed("%s not ready in %.0f s" % (self.binary, READY_WAIT_S))
            time.sleep(0.02)
        return proc

    def digest(self):
        """(checkpoint, content digest) of the view, from `digest`."""
        out = self.ok("digest")
        parts = out.split()
        expect(len(parts) == 4 and parts[0] == "checkpoint", "digest output: %r" % out)
        return int(parts[1]), parts[3]

    def tail(self):
        try:
            with open(self.log) as f:
                return f.read()[-800:]
        except OSError:
            return ""


def stop_proc(proc):
    """SIGTERM a background service and wait for it (kill -9 after 10 s);
    returns its exit status, None when it had to be killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return None


def kill9_while_publishing(svc, start_args, delay_s, items, publish):
    """Start svc (with start_args), call publish(item) for each item, and
    kill -9 the service at the first item done once delay_s has passed
    since it was ready (after the last item if the publishing is quicker)."""
    proc = svc.start(*start_args)
    t_kill = time.monotonic() + delay_s
    killed = False
    for item in items:
        publish(item)
        if not killed and time.monotonic() >= t_kill:
            proc.kill()
            killed = True
    if not killed:
        proc.kill()
    proc.wait(timeout=10)


def run_service_groups(funneld, binary, groups):
    """Run each group fn(res, daemon, ctx) against a fresh funneld, after
    checking that the service binary is built; returns the exit status
    (and prints the summary line)."""
    res = Results()
    name = os.path.basename(binary)
    if not os.access(binary, os.X_OK):
        res.not_ok("%s is built" % name, binary)
        return res.summary()
    ctx = zmq.Context()
    for fn in groups:
        daemon = start_daemon(res, funneld, prefix=name + "-")
        if daemon is None:
            continue
        try:
            fn(res, daemon, ctx)
        finally:
            daemon.close()
    ctx.term()
    return res.summary()


def connect(ctx, kind, ep):
    """A socket of that kind connected to ep, every send and receive
    bounded by TIMEOUT_MS, nothing lingering on close."""
    s = ctx.socket(kind)
    s.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    s.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ep)
    return s


def replay_all(replay, **params):
    """Every record of a range: calls replay(**params) with "from" set,
    which returns a replay reply, and follows next until end."""
    out = []
    frm = params.pop("from", 1)
    for _ in range(100000):
        rep = replay(**dict(params, **{"from": frm}))
        out.extend(rep["events"])
        if rep["end"]:
            return out
        expect(rep["next"] >= frm, "replay next went backwards")
        frm = rep["next"]
    raise CheckFailed("replay never reached end")


class LogClient:
    """Publish, status and replay against a running funneld (eps: its ready
    file's endpoints), per proto/PROTOCOL.md, every call bounded."""

    def __init__(self, ctx, eps):
        self.rid = 0
        self.ingest = connect(ctx, zmq.DEALER, eps["ingest"])
        self.query = connect(ctx, zmq.DEALER, eps["query"])

    def call(self, sock, req):
        import msgpack
        self.rid += 1
        sock.send(msgpack.packb(dict(req, rid=self.rid)))
        rep = msgpack.unpackb(sock.recv())
        expect_eq(rep.get("rid"), self.rid, "echoed rid")
        return rep

    def publish(self, *events):
        """Publish events as one request; returns the reply (ok or not)."""
        return self.call(self.ingest, {"op": "publish", "events": list(events)})

    def publish_ok(self, *events):
        rep = self.publish(*events)
        expect(rep.get("ok") is True, "publish refused: %r" % (rep,))
        return rep

    def status(self):
        rep = self.call(self.query, {"op": "status"})
        expect(rep.get("ok") is True, "status refused: %r" % (rep,))
        return rep

    def records(self, **params):
        """Every record of a range, decoded."""
        import msgpack

        def replay(**p):
            rep = self.call(self.query, dict(p, op="replay"))
            expect(rep.get("ok") is True, "replay refused: %r" % (rep,))
            return rep
        return [msgpack.unpackb(r) for r in replay_all(replay, **params)]

    def close(self):
        self.ingest.close(0)
        self.query.close(0)
