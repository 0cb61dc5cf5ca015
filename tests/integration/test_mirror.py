#!/usr/bin/python3
"""
tests/integration/test_mirror.py - funnel-mirror and the nats:// source end
to end: a real funneld, real nats-server processes (Debian's, -js, each with
its own store directory, on loopback ports) and funnel-mirror, every one
started here and stopped by pid.

  - MIRROR_RECORDS (default 100000) records mirrored: the stream equals the
    log byte for byte, seq for seq (a replay from funneld against a read
    of the stream, which checks stream seq == record seq on every message);
    `funnel verify --source` prints funneld's head hash; /healthz and
    /metrics say the lag;
  - kill -9 of funnel-mirror, nats-server and funneld at random moments
    under load, MIRROR_ROUNDS rounds (default 6): afterwards the stream
    equals the log, no gap, no duplicate;
  - a three-node JetStream cluster with an R3 stream: a node is killed
    while mirroring, mirroring goes on, a reader on another node gets
    every record;
  - funnel-metrics built from the mirror has funneld's view digest;
  - verify from a copy stream with one altered message fails naming its
    seq; a stream of another log, or of the wrong configuration, is
    refused by funnel-mirror.

Run with Debian's /usr/bin/python3 (python3-zmq, python3-msgpack):

    BUILD=build /usr/bin/python3 tests/integration/test_mirror.py

Every process, request and wait is bounded; prints "ok - name" /
"not ok - name: reason" and "N passed, M failed".
"""
import json
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
import urllib.error
import urllib.request

import msgpack
import zmq

from funnel_testlib import (REPO, CheckFailed, LogClient, Results, expect, expect_eq,
                            expect_in, wait_until)

BUILD = os.environ.get("BUILD", "build")
BIN = os.path.join(REPO, BUILD, "bin")
FUNNELD = os.environ.get("FUNNELD", os.path.join(BIN, "funneld"))
if not os.path.isabs(FUNNELD):
    FUNNELD = os.path.join(REPO, FUNNELD)
BIN = os.path.dirname(FUNNELD)
FUNNEL = os.path.join(BIN, "funnel")
MIRROR = os.path.join(BIN, "funnel-mirror")
METRICS = os.path.join(BIN, "funnel-metrics")
NATS_SERVER = shutil.which("nats-server") or "/usr/bin/nats-server"
RECORDS = int(os.environ.get("MIRROR_RECORDS", "100000"))
ROUNDS = int(os.environ.get("MIRROR_ROUNDS", "6"))
SEED = int(os.environ.get("MIRROR_SEED", str(int(time.time()))))
START_S = 15.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def kill9(proc):
    if proc is not None and proc.poll() is None:
        proc.kill()
    if proc is not None:
        proc.wait(timeout=10)


def stop(proc):
    """SIGTERM, wait 10 s, then SIGKILL; the exit status or None."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        kill9(proc)
        return None


class Nats:
    """One nats-server with JetStream, its store in dir, on a fixed port
    (so a restart comes back where clients reconnect); cluster routes
    when given (name, cluster port, route ports)."""

    def __init__(self, top, name, cluster=None):
        self.name = name
        self.dir = os.path.join(top, "nats-" + name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.cluster = cluster
        self.url = "nats://127.0.0.1:%d" % self.port
        self.proc = None
        self.start()

    def argv(self):
        a = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js",
             "-sd", os.path.join(self.dir, "js"), "-n", self.name]
        if self.cluster:
            cname, cport, routes = self.cluster
            a += ["--cluster_name", cname, "--cluster", "nats://127.0.0.1:%d" % cport,
                  "--routes", ",".join("nats://127.0.0.1:%d" % p for p in routes)]
        return a

    def start(self):
        log = open(os.path.join(self.dir, "nats.log"), "ab")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=log)
        log.close()
        wait_until(lambda: self.proc.poll() is not None or port_open(self.port),
                   "nats-server %s to listen" % self.name, START_S)
        expect(self.proc.poll() is None, "nats-server %s exited: %s" % (self.name, self.tail()))

    def tail(self):
        try:
            with open(os.path.join(self.dir, "nats.log"), "rb") as f:
                return f.read()[-500:].decode(errors="replace")
        except OSError:
            return ""

    def close(self):
        stop(self.proc)


class Funneld:
    """funneld on fixed loopback ports (a restart comes back on them)."""

    def __init__(self, top, name="funneld"):
        self.dir = os.path.join(top, name)
        os.makedirs(self.dir, exist_ok=True)
        self.data = os.path.join(self.dir, "data")
        self.ready = os.path.join(self.dir, "ready")
        p = [free_port() for _ in range(3)]
        self.endpoints = {"ingest": "tcp://127.0.0.1:%d" % p[0],
                          "publish": "tcp://127.0.0.1:%d" % p[1],
                          "query": "tcp://127.0.0.1:%d" % p[2]}
        self.proc = None
        self.start()

    def start(self):
        if os.path.exists(self.ready):
            os.unlink(self.ready)
        log = open(os.path.join(self.dir, "funneld.log"), "ab")
        self.proc = subprocess.Popen(
            [FUNNELD, "--data", self.data, "--ingest", self.endpoints["ingest"],
             "--publish", self.endpoints["publish"], "--query", self.endpoints["query"],
             "--ready-file", self.ready, "--heartbeat-ms", "200"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        wait_until(lambda: self.proc.poll() is not None or os.path.exists(self.ready),
                   "funneld's ready file", START_S)
        expect(self.proc.poll() is None, "funneld exited at start")

    def close(self):
        stop(self.proc)


class Mirror:
    """funnel-mirror from one funneld into a stream, with /healthz on a port."""

    def __init__(self, top, fd, nats_url, *extra, name="mirror"):
        self.fd = fd
        self.nats_url = nats_url
        self.extra = list(extra)
        self.log = os.path.join(top, name + ".log")
        self.ready = os.path.join(top, name + ".ready")
        self.http = free_port()
        self.proc = None

    def argv(self, *more):
        return [MIRROR, "--nats", self.nats_url, "--publish", self.fd.endpoints["publish"],
                "--query", self.fd.endpoints["query"],
                "--http", "127.0.0.1:%d" % self.http] + self.extra + list(more)

    def start(self):
        if os.path.exists(self.ready):
            os.unlink(self.ready)
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv("--ready-file", self.ready),
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        wait_until(lambda: self.proc.poll() is not None or os.path.exists(self.ready),
                   "funnel-mirror's ready file", 30.0)
        expect(self.proc.poll() is None, "funnel-mirror exited: %s" % self.tail())
        return self.proc

    def run(self, *more, timeout=120):
        """One bounded run (e.g. --until-head); (status, stderr)."""
        p = subprocess.run(self.argv("--http", "off", *more), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        with open(self.log, "a") as f:
            f.write(p.stderr)
        return p.returncode, p.stderr

    def get(self, path):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.http, path),
                                        timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def gauges(self):
        _, body = self.get("/metrics")
        return {l.split()[0]: float(l.split()[1]) for l in body.splitlines()
                if l and not l.startswith("#")}

    def tail(self):
        try:
            with open(self.log) as f:
                return f.read()[-800:]
        except OSError:
            return ""

    def close(self):
        stop(self.proc)


def funnel(*args, timeout=120, check=True):
    p = subprocess.run([FUNNEL, "--timeout", "10000"] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout)
    if check:
        expect_eq(p.returncode, 0, "funnel %s status (stderr %s)" % (" ".join(args),
                                                                      p.stderr[-400:]))
    return p


def log_raw(fd):
    """Every record of the log, as hex lines, from funneld."""
    return funnel("--query", fd.endpoints["query"], "replay", "--raw").stdout.split()


def stream_raw(source):
    """Every record of the stream, as hex lines (the reader refuses a
    message whose record seq is not its stream seq)."""
    return funnel("--source", source, "replay", "--raw").stdout.split()


def log_head(fd):
    return json.loads(funnel("--query", fd.endpoints["query"], "status", "--json").stdout)["head"]


def expect_same(fd, source, what):
    a, b = log_raw(fd), stream_raw(source)
    expect(len(a) > 0, "the log is empty")
    if a != b:
        first = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
        raise CheckFailed("%s: log has %d records, stream %d; first difference at seq %d"
                          % (what, len(a), len(b), first + 1))


def events(n, start=0, prefix="L"):
    """n valid events: per lead captured, activity, qualified, assigned,
    accepted (a funnel the metrics have something to say about)."""
    steps = [("lead.captured", lambda i: {"email": "p%d@acme.example" % i, "source":
                                          ["webinar", "ads", "seo"][i % 3]}),
             ("lead.activity", lambda i: {"kind": "webinar"}),
             ("lead.qualified", lambda i: None),
             ("lead.assigned", lambda i: {"owner": "rep-%d" % (i % 4)}),
             ("lead.accepted", lambda i: None)]
    out = []
    for k in range(start, start + n):
        lead, step = k // len(steps), k % len(steps)
        t, data = steps[step]
        ev = {"type": t, "lead": "%s-%d" % (prefix, lead), "id": "%s-%d" % (prefix, k)}
        d = data(lead)
        if d is not None:
            ev["data"] = d
        out.append(ev)
    return out


def publish_all(ctx, fd, evs, batch=1000, stop_evt=None):
    """Publish evs in batches; a daemon that goes away is waited for and the
    batch sent again (same ids: stored once).  Bounded by 120 s."""
    client = LogClient(ctx, fd.endpoints)
    deadline = time.monotonic() + 120
    i = 0
    try:
        while i < len(evs):
            expect(time.monotonic() < deadline, "publishing did not finish in 120 s")
            try:
                rep = client.publish(*evs[i:i + batch])
            except (zmq.ZMQError, CheckFailed):
                client.close()
                time.sleep(0.1)
                client = LogClient(ctx, fd.endpoints)
                continue
            if rep.get("ok") is not True:
                # ESHUTDOWN / ESTORAGE while a daemon stops: again
                expect(rep.get("code") in (11, 12), "publish refused: %r" % (rep,))
                time.sleep(0.1)
                continue
            i += batch
    finally:
        client.close()


def wait_mirrored(m, fd, wait_s=60.0):
    head = log_head(fd)
    wait_until(lambda: m.gauges().get("funnel_mirror_seq") == head,
               "the mirror to reach the head %d (%s)" % (head, m.tail()), wait_s)
    return head


# ---- raw NATS client (protocol text), to forge a copy stream ----

class RawNats:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.readline()   # INFO
        self.s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                       b'"no_responders":true,"protocol":1}\r\nPING\r\n')
        self.sid = 0
        self.inbox = "_INBOX.rawtest"
        self.s.sendall(("SUB %s.> 1\r\n" % self.inbox).encode())
        self.expect_pong()

    def readline(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise CheckFailed("nats connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def readn(self, n):
        while len(self.buf) < n + 2:
            chunk = self.s.recv(65536)
            if not chunk:
                raise CheckFailed("nats connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def expect_pong(self):
        while True:
            line = self.readline()
            if line == b"PONG":
                return
            if line == b"PING":
                self.s.sendall(b"PONG\r\n")

    def next_msg(self):
        while True:
            line = self.readline()
            if line == b"PING":
                self.s.sendall(b"PONG\r\n")
                continue
            parts = line.split()
            if parts[0] == b"MSG":
                return self.readn(int(parts[-1]))
            if parts[0] == b"HMSG":
                return self.readn(int(parts[-1]))[int(parts[-2]):]

    def request(self, subject, payload):
        self.sid += 1
        reply = "%s.%d" % (self.inbox, self.sid)
        self.s.sendall(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply.encode(),
                                                   len(payload), payload))
        return json.loads(self.next_msg())

    def hpub(self, subject, headers, payload):
        h = b"NATS/1.0\r\n" + b"".join(b"%s: %s\r\n" % (k.encode(), v.encode())
                                       for k, v in headers.items()) + b"\r\n"
        self.sid += 1
        reply = "%s.%d" % (self.inbox, self.sid)
        self.s.sendall(b"HPUB %s %s %d %d\r\n%s%s\r\n" % (subject.encode(), reply.encode(),
                                                          len(h), len(h) + len(payload), h,
                                                          payload))
        return json.loads(self.next_msg())

    def close(self):
        self.s.close()


# ---- the checks ----

def check_mirror_100k(res, top, ctx):
    nats = Nats(top, "a")
    fd = Funneld(top)
    m = Mirror(top, fd, nats.url)
    source = nats.url + "/FUNNEL"
    try:
        def mirrored():
            m.start()
            t0 = time.monotonic()
            publish_all(ctx, fd, events(RECORDS))
            head = wait_mirrored(m, fd, 120)
            took = time.monotonic() - t0
            expect_eq(head, RECORDS, "log head")
            expect_same(fd, source, "after %d records" % RECORDS)
            print("# %d records published and mirrored in %.1f s" % (RECORDS, took), flush=True)
        if not res.run("%d records mirrored: the stream equals the log byte for byte, seq for "
                       "seq" % RECORDS, mirrored):
            return

        def status():
            code, body = m.get("/healthz")
            expect_eq(code, 200, "/healthz status (%s)" % body)
            expect_in("lag 0 records", body, "/healthz")
            g = m.gauges()
            expect_eq(g.get("funnel_mirror_head"), float(RECORDS), "funnel_mirror_head")
            expect_eq(g.get("funnel_mirror_lag_records"), 0.0, "funnel_mirror_lag_records")
            expect_eq(g.get("funnel_mirror_up"), 1.0, "funnel_mirror_up")
            # the mirror stopped: the stream falls behind and says so
            m.close()
            publish_all(ctx, fd, events(5, RECORDS))
            m.start()
            wait_mirrored(m, fd)
            expect_eq(m.gauges().get("funnel_mirror_published_total"), 5.0,
                      "records stored after a restart (resumed from the stream's last seq)")
        res.run("/healthz and /metrics say the lag; a restart resumes from the stream's last "
                "seq, sending only what is missing", status)

        def verify():
            a = json.loads(funnel("--query", fd.endpoints["query"], "verify", "--json").stdout)
            b = json.loads(funnel("--source", source, "verify", "--json").stdout)
            expect_eq(b["ok"], True, "verify from the mirror")
            expect_eq((b["head"], b["head_hash"]), (a["head"], a["head_hash"]),
                      "head and head hash from the mirror vs funneld")
            p = funnel("--source", source, "verify", "--from", "1000", "--to", "2000", "--json")
            expect_eq(json.loads(p.stdout)["checked"], 1001, "verify of a range from the mirror")
        res.run("funnel verify --source checks the chain from the mirror alone and prints "
                "funneld's head hash", verify)

        def tail_and_filters():
            p = funnel("--source", source, "replay", "--from", "11", "--to", "20", "--type",
                       "lead.qualified", "--json")
            recs = [json.loads(l) for l in p.stdout.splitlines()]
            q = funnel("--query", fd.endpoints["query"], "replay", "--from", "11", "--to", "20",
                       "--type", "lead.qualified", "--json")
            expect_eq(recs, [json.loads(l) for l in q.stdout.splitlines()],
                      "replay --type from the mirror vs funneld")
            tail = subprocess.Popen([FUNNEL, "--source", source, "tail", "--count", "3",
                                     "--json"], stdout=subprocess.PIPE, text=True,
                                    stdin=subprocess.DEVNULL)
            try:
                time.sleep(0.5)
                publish_all(ctx, fd, events(3, RECORDS + 5))
                out, _ = tail.communicate(timeout=30)
            finally:
                kill9(tail)
            seqs = [json.loads(l)["seq"] for l in out.splitlines()]
            expect_eq(seqs, [RECORDS + 6, RECORDS + 7, RECORDS + 8], "tail --source seqs")
        res.run("funnel replay and tail take --source (filters applied, live records "
                "follow)", tail_and_filters)
    finally:
        m.close()
        fd.close()
        nats.close()


def check_kill_rounds(res, top, ctx):
    rng = random.Random(SEED)
    nats = Nats(top, "k")
    fd = Funneld(top, "funneld-k")
    m = Mirror(top, fd, nats.url, "--window", "256", name="mirror-k")
    source = nats.url + "/FUNNEL"
    n = min(RECORDS, 30000)
    try:
        def rounds():
            m.start()
            done = threading.Event()
            err = []

            rounds_over = threading.Event()

            def load():
                # batches of 100 until the rounds are over (and n at least),
                # 200 batches a second at most, bounded at 10 n records
                k = 0
                try:
                    while (k < n or not rounds_over.is_set()) and k < 10 * n:
                        publish_all(ctx, fd, events(100, k, prefix="K"), batch=100)
                        k += 100
                        time.sleep(0.005)
                except Exception as e:
                    err.append(e)
                done.set()
            th = threading.Thread(target=load)
            th.start()
            # each of the three as often as the rounds allow, in a random order
            victims = (["mirror", "nats", "funneld"] * ROUNDS)[:ROUNDS]
            rng.shuffle(victims)
            for who in victims:
                time.sleep(rng.uniform(0.1, 0.8))
                if who == "mirror":
                    kill9(m.proc)
                    m.start()
                elif who == "nats":
                    kill9(nats.proc)
                    time.sleep(rng.uniform(0.0, 0.5))
                    nats.start()
                else:
                    kill9(fd.proc)
                    time.sleep(rng.uniform(0.0, 0.3))
                    fd.start()
            rounds_over.set()
            th.join(timeout=150)
            expect(done.is_set(), "the load did not finish")
            expect(not err, "load: %s" % (err[0] if err else ""))
            if m.proc.poll() is not None:
                raise CheckFailed("funnel-mirror exited: %s" % m.tail())
            head = wait_mirrored(m, fd, 90)
            expect(head >= n, "log head %d < %d" % (head, n))
            expect_same(fd, source, "after kill -9 rounds %s (seed %d)" % (victims, SEED))
            print("# seed %d, kills %s, %d records, resyncs %d" % (
                SEED, victims, head, m.gauges().get("funnel_mirror_resyncs_total", -1)),
                flush=True)
        res.run("kill -9 of funnel-mirror, nats-server and funneld under load, %d rounds: the "
                "stream equals the log, no gap, no duplicate" % ROUNDS, rounds)
    finally:
        m.close()
        fd.close()
        nats.close()


def check_cluster(res, top, ctx):
    cports = [free_port() for _ in range(3)]
    nodes = []
    fd = None
    m = None
    try:
        for i in range(3):
            nodes.append(Nats(top, "c%d" % i, ("fc", cports[i],
                                               [p for j, p in enumerate(cports) if j != i])))
        fd = Funneld(top, "funneld-c")
        urls = ",".join(x.url for x in nodes)
        m = Mirror(top, fd, urls, "--replicas", "3", name="mirror-c")
        n = min(RECORDS, 20000)

        def cluster():
            # the meta leader is elected a moment after the routes form
            m.start()
            half = n // 2
            publish_all(ctx, fd, events(half, prefix="C"))
            wait_mirrored(m, fd, 60)
            kill9(nodes[0].proc)
            publish_all(ctx, fd, events(n - half, half, prefix="C"))
            wait_mirrored(m, fd, 60)
            expect(m.proc.poll() is None, "funnel-mirror exited: %s" % m.tail())
            # a reader on another node gets every record
            expect_same(fd, nodes[2].url + "/FUNNEL", "R3 stream read on node c2, c0 dead")
            expect_same(fd, nodes[1].url + "/FUNNEL", "R3 stream read on node c1, c0 dead")
        res.run("three-node cluster, R3 stream: a node killed while mirroring, mirroring "
                "goes on, readers on the other nodes get every record", cluster)
    finally:
        if m:
            m.close()
        if fd:
            fd.close()
        for x in nodes:
            x.close()


def check_views_and_forgery(res, top, ctx):
    nats = Nats(top, "v")
    fd = Funneld(top, "funneld-v")
    m = Mirror(top, fd, nats.url, name="mirror-v")
    source = nats.url + "/FUNNEL"
    try:
        n = min(RECORDS, 5000)
        publish_all(ctx, fd, events(n, prefix="V"))
        rc, err = m.run("--until-head")
        expect_eq(rc, 0, "mirror --until-head status (%s)" % err[-400:])

        def metrics():
            base = [METRICS, "--ingest", fd.endpoints["ingest"], "--publish",
                    fd.endpoints["publish"], "--query", fd.endpoints["query"]]
            digests = []
            for name, extra in (("direct", []), ("mirror", ["--source", source])):
                view = os.path.join(top, "metrics-" + name)
                p = subprocess.run(base + ["--view", view, "--until-head"] + extra,
                                   capture_output=True, text=True, timeout=120,
                                   stdin=subprocess.DEVNULL)
                expect_eq(p.returncode, 0, "funnel-metrics %s (%s)" % (name, p.stderr[-400:]))
                p = subprocess.run(base + ["--view", view, "digest"], capture_output=True,
                                   text=True, timeout=60, stdin=subprocess.DEVNULL)
                expect_eq(p.returncode, 0, "digest %s" % name)
                digests.append(p.stdout.strip())
            expect_in("checkpoint %d " % n, digests[0], "digest from funneld")
            expect_eq(digests[1], digests[0], "view digest from the mirror vs from funneld")
        res.run("funnel-metrics --source nats://... has the view digest of one built from "
                "funneld", metrics)

        def healthz_from_stream():
            # the records and the head both from the stream: funneld's query
            # endpoint is one nobody answers, and /healthz is still ok
            http = free_port()
            view = os.path.join(top, "metrics-healthz")
            log = open(os.path.join(top, "metrics-healthz.log"), "w")
            p = subprocess.Popen([METRICS, "--ingest", fd.endpoints["ingest"], "--publish",
                                  fd.endpoints["publish"], "--query",
                                  "tcp://127.0.0.1:%d" % free_port(), "--view", view,
                                  "--source", source, "--http", "127.0.0.1:%d" % http],
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                def healthz():
                    try:
                        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % http,
                                                    timeout=5) as r:
                            return r.status, json.loads(r.read().decode())
                    except urllib.error.HTTPError as e:
                        return e.code, json.loads(e.read().decode())
                    except (OSError, ValueError):
                        return None, None
                last = [None]

                def ok():
                    last[0] = healthz()
                    return last[0][0] == 200
                try:
                    wait_until(ok, "/healthz 200 with --source", 60)
                except CheckFailed:
                    raise CheckFailed("/healthz with --source: %s" % (last[0],))
                code, doc = last[0]
                expect_eq(doc.get("head"), n, "/healthz head: the stream's last sequence")
                expect_eq(doc.get("checkpoint"), n, "/healthz checkpoint")
            finally:
                expect_eq(stop(p), 0, "funnel-metrics exit status")
                log.close()
        res.run("funnel-metrics --source: /healthz takes the head from the stream, not "
                "funneld", healthz_from_stream)

        def forged():
            raw = [bytes.fromhex(h) for h in log_raw(fd)][:200]
            bad = 136     # a lead.captured, with an email to change
            rn = RawNats(nats.port)
            try:
                r = rn.request("$JS.API.STREAM.CREATE.COPY", json.dumps({
                    "name": "COPY", "subjects": ["copy.log"], "storage": "file",
                    "num_replicas": 1, "retention": "limits"}).encode())
                expect("error" not in r, "create COPY: %r" % r)
                for i, rec in enumerate(raw, 1):
                    if i == bad:
                        rec = rec.replace(b"acme.example", b"acme.exampli", 1)
                        expect(rec != raw[i - 1], "the forgery changed nothing")
                    ack = rn.hpub("copy.log", {"Nats-Msg-Id": str(i),
                                               "Nats-Expected-Last-Sequence": str(i - 1)}, rec)
                    expect_eq(ack.get("seq"), i, "copy ack")
            finally:
                rn.close()
            p = funnel("--source", nats.url + "/COPY", "verify", "--human", check=False)
            expect_eq(p.returncode, 3, "verify of the forged copy: exit status (%s %s)"
                      % (p.stdout, p.stderr))
            expect_in("BROKEN at seq %d" % bad, p.stdout, "verify output")
            p = funnel("--source", nats.url + "/COPY", "verify", "--human", "--to", str(bad - 1))
            expect_in("ok: %d records verified" % (bad - 1), p.stdout, "verify up to the forgery")
            # the mirror refuses to extend that copy: its last record is the log's,
            # but its configuration names another subject
            rc, err = Mirror(top, fd, nats.url, "--stream", "COPY", name="mirror-copy").run(
                "--until-head")
            expect_eq(rc, 1, "mirror into COPY with subject funnel.log: exit status")
            expect_in("subjects are not just 'funnel.log'", err, "refusal message")
        res.run("verify from a copy stream with one altered message fails naming its seq",
                forged)

        def other_log():
            other = Funneld(top, "funneld-other")
            try:
                publish_all(ctx, other, events(n + 10, prefix="O"))
                rc, err = Mirror(top, other, nats.url, name="mirror-other").run("--until-head")
                expect_eq(rc, 1, "mirror of another log into FUNNEL: exit status")
                expect_in("is not the log's record %d" % n, err, "refusal message")
            finally:
                other.close()
            expect_same(fd, source, "FUNNEL after the refusal")
            # a stream with a limit would drop records: refused
            rn = RawNats(nats.port)
            try:
                r = rn.request("$JS.API.STREAM.CREATE.LIMITED", json.dumps({
                    "name": "LIMITED", "subjects": ["lim.log"], "storage": "file",
                    "num_replicas": 1, "max_msgs": 10}).encode())
                expect("error" not in r, "create LIMITED: %r" % r)
            finally:
                rn.close()
            rc, err = Mirror(top, fd, nats.url, "--stream", "LIMITED", "--subject", "lim.log",
                             name="mirror-lim").run("--until-head")
            expect_eq(rc, 1, "mirror into a stream with max_msgs: exit status")
            expect_in("it has a limit", err, "refusal message")
        res.run("funnel-mirror refuses a stream of another log, and one with a limit",
                other_log)

        def settings_file():
            # the mirror's flags from its section of the settings file
            conf = os.path.join(top, "funnel.conf")
            with open(conf, "w") as f:
                f.write("endpoints:\n  publish: %s\n  query: %s\n"
                        "funnel-mirror:\n  nats: %s\n  stream: FROMCONF\n"
                        "  subject: conf.log\n  http: \"off\"\n  until-head: true\n"
                        % (fd.endpoints["publish"], fd.endpoints["query"], nats.url))
            p = subprocess.run([MIRROR, "--config", conf], capture_output=True, text=True,
                               timeout=60, stdin=subprocess.DEVNULL)
            expect_eq(p.returncode, 0, "funnel-mirror --config status (%s)" % p.stderr[-400:])
            expect_same(fd, nats.url + "/FROMCONF", "stream FROMCONF")
        res.run("funnel-mirror takes its settings from the funnel-mirror: section", settings_file)

        def intruder():
            # someone else writes into the mirror's stream: the next publish is
            # refused (wrong last sequence), the mirror goes back to the stream,
            # finds a record that is not the log's, and stops
            m.start()
            head = wait_mirrored(m, fd)
            rn = RawNats(nats.port)
            try:
                ack = rn.hpub("funnel.log", {"Nats-Expected-Last-Sequence": str(head)},
                              b"not a funnel record")
                expect_eq(ack.get("seq"), head + 1, "the intruder's ack")
            finally:
                rn.close()
            publish_all(ctx, fd, events(3, n, prefix="V"))
            wait_until(lambda: m.proc.poll() is not None, "funnel-mirror to stop", 30)
            expect_eq(m.proc.returncode, 1, "funnel-mirror exit status")
            log = m.tail()
            expect_in("going back to the stream's last seq", log, "mirror log")
            expect_in("seq %d is not the log's record %d" % (head + 1, head + 1), log,
                      "mirror log")
            p = funnel("--source", source, "replay", "--from", str(head + 1), check=False)
            expect_eq(p.returncode, 1, "reading the intruder's message: exit status")
            expect_in("does not hold funnel record %d" % (head + 1), p.stderr, "reader's error")
        res.run("a message written into the stream by someone else: the mirror's next publish "
                "is refused, it stops naming the seq, readers refuse the message", intruder)
    finally:
        m.close()
        fd.close()
        nats.close()


def check_bad_sources(res, top, ctx):
    def bad():
        p = funnel("--source", "http://127.0.0.1:4222/FUNNEL", "replay", check=False)
        expect_eq(p.returncode, 2, "funnel --source http://...: exit status")
        expect_in("--source wants nats://HOST:PORT/STREAM", p.stderr, "usage message")
        p = funnel("--source", "nats://127.0.0.1:4222/BAD.NAME", "replay", check=False)
        expect_eq(p.returncode, 1, "a stream name with a dot: exit status")
        expect_in("stream name 'BAD.NAME' has '.'", p.stderr, "message")
        p = subprocess.run([METRICS, "--source", "tcp://127.0.0.1:7401", "--until-head"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        expect_eq(p.returncode, 2, "funnel-metrics --source tcp://...: exit status")
        # a malformed nats:// source is said as such (not "built from another log"),
        # whether the service stops at the head or follows live
        for tail in (["--until-head"], []):
            for url, why in (("nats://127.0.0.1:4222/BAD.NAME", "stream name 'BAD.NAME' has '.'"),
                             ("nats://127.0.0.1:4222/FUNNEL?user=x",
                              "the only source parameter is ?creds=FILE, not '?user=x'"),
                             ("nats://127.0.0.1:4222,tcp://127.0.0.1:4223/FUNNEL",
                              "each server of a source is nats://HOST:PORT, not "
                              "'tcp://127.0.0.1:4223'")):
                view = tempfile.mkdtemp(prefix="badsrc-", dir=top)
                p = subprocess.run([METRICS, "--view", view, "--source", url, "--http",
                                    "127.0.0.1:%d" % free_port()] + tail, capture_output=True, text=True, timeout=30,
                                   stdin=subprocess.DEVNULL)
                expect_eq(p.returncode, 1, "funnel-metrics --source %s %s: exit status (%s)"
                          % (url, tail, p.stderr[-400:]))
                expect_in("--source %s: %s" % (url, why), p.stderr, "the reason")
                expect("another log" not in p.stderr,
                       "no talk of another log: %s" % p.stderr[-400:])
        p = subprocess.run([MIRROR, "--stream", "A.B"], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        expect_eq(p.returncode, 2, "funnel-mirror --stream A.B: exit status")
        expect_in("--stream wants a NATS stream name", p.stderr, "usage message")
        # a malformed --http is a usage error as every flag's (exit 2, before any work)
        for arg in ("nonsense", "127.0.0.1:99999"):
            p = subprocess.run([MIRROR, "--http", arg], capture_output=True, text=True,
                               timeout=30, stdin=subprocess.DEVNULL)
            expect_eq(p.returncode, 2, "funnel-mirror --http %s: exit status" % arg)
            expect_in("funnel-mirror: --http wants IPV4:PORT or off, not '%s'" % arg, p.stderr,
                      "usage message")
        # a --nats port out of range, and a --creds file that cannot be read, are
        # said at start rather than waited on as a server not up yet
        p = subprocess.run([MIRROR, "--nats", "nats://127.0.0.1:99999", "--http", "off"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        expect_eq(p.returncode, 2, "funnel-mirror --nats with port 99999: exit status")
        expect_in("(a port 1..65535), not 'nats://127.0.0.1:99999'", p.stderr, "usage message")
        creds = os.path.join(top, "no-such.creds")
        p = subprocess.run([MIRROR, "--creds", creds, "--http", "off"], capture_output=True,
                           text=True, timeout=30, stdin=subprocess.DEVNULL)
        expect_eq(p.returncode, 1, "funnel-mirror --creds missing: exit status")
        expect_in("--creds %s: No such file or directory" % creds, p.stderr, "the file named")
        # its commands are said as every service's: `run` takes no argument
        for args, msg in ((["run", "extra"], "wrong number of arguments for 'run'"),
                          (["digest"], "unknown command 'digest'")):
            p = subprocess.run([MIRROR] + args, capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
            expect_eq(p.returncode, 2, "funnel-mirror %s: exit status" % " ".join(args))
            expect_in("funnel-mirror: " + msg, p.stderr, "usage message")
    res.run("a source that is not nats://HOST:PORT/STREAM, a bad stream name: refused with "
            "the reason", bad)


def main():
    res = Results()
    for b in (FUNNELD, FUNNEL, MIRROR, METRICS, NATS_SERVER):
        if not os.access(b, os.X_OK):
            res.not_ok("%s is there" % os.path.basename(b), b)
            return res.summary()
    print("# MIRROR_RECORDS=%d MIRROR_ROUNDS=%d MIRROR_SEED=%d" % (RECORDS, ROUNDS, SEED),
          flush=True)
    ctx = zmq.Context()
    top = tempfile.mkdtemp(prefix="funnel-mirror-")
    try:
        for fn in (check_bad_sources, check_mirror_100k, check_kill_rounds, check_cluster,
                   check_views_and_forgery):
            if os.environ.get("MIRROR_ONLY", "") not in fn.__name__:
                continue
            try:
                fn(res, top, ctx)
            except CheckFailed as e:
                res.not_ok(fn.__name__, e)
            except Exception as e:
                res.not_ok(fn.__name__, "%s: %s" % (type(e).__name__, e))
    finally:
        ctx.term()
        if os.environ.get("KEEP_TEST_DIRS"):
            print("# kept %s" % top)
        else:
            shutil.rmtree(top, ignore_errors=True)
    return res.summary()


if __name__ == "__main__":
    sys.exit(main())
