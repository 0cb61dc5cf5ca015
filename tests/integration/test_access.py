#!/usr/bin/python3
"""
tests/integration/test_access.py - identity and access, end to end: keys
from `funnel keygen`, an access file, funneld with --access and --key
(CURVE on every socket, a ZAP handler), clients over real CURVE sockets
(pyzmq, the CLI, the services).

What it checks: no key and an unknown key get no reply within a bound
(and the unknown key is logged once); each principal may publish the types
its globs grant and gets EFORBIDDEN naming the type and itself for the
others, a request being refused whole; a principal without read gets
EFORBIDDEN on replay and status and nothing on the publish socket; a
`producer` in the envelope is refused; every record carries the sender's
name, also across a restart of funneld; SIGHUP revokes a key (new and
open connections alike) and a broken file keeps the table in force; the
access file refuses unknown and duplicated keys naming the line; an
endpoint beyond loopback needs --access or --insecure; the CLI and the
services work with their keys.

    BUILD=build /usr/bin/python3 tests/integration/test_access.py

Prints "ok - name" or "not ok - name: reason" per check, then
"N passed, M failed"; exits 1 if any failed.  Every wait is bounded.
"""
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

from funnel_testlib import (REPO, CheckFailed, Results, expect, expect_eq, expect_in,
                            wait_until)

NO_REPLY_MS = 1500        # "no reply" means nothing within this bound
TIMEOUT_MS = 5000
READY_WAIT_S = 10.0


def keygen(funnel, d, name):
    p = subprocess.run([funnel, "keygen", name], cwd=d, capture_output=True, text=True,
                       timeout=30)
    expect_eq(p.returncode, 0, "funnel keygen %s exit status (%s)" % (name, p.stderr))
    with open(os.path.join(d, name + ".pub")) as f:
        return f.read().strip()


class Funneld:
    """funneld on wildcard loopback ports over a data directory that
    outlives it (so it can be restarted), with an access file."""

    def __init__(self, binary, d, data, extra=()):
        self.ready = os.path.join(d, "ready")
        self.logpath = os.path.join(d, "funneld.log")
        if os.path.exists(self.ready):
            os.unlink(self.ready)
        log = open(self.logpath, "ab")
        self.proc = subprocess.Popen(
            [binary, "--data", data, "--ingest", "tcp://127.0.0.1:*",
             "--publish", "tcp://127.0.0.1:*", "--query", "tcp://127.0.0.1:*",
             "--ready-file", self.ready, "--heartbeat-ms", "200", "--no-sync"] + list(extra),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + READY_WAIT_S
        while True:
            if self.proc.poll() is not None:
                raise CheckFailed("funneld exited with %d: %s" % (self.proc.returncode, self.log()[-600:]))
            if os.path.exists(self.ready):
                with open(self.ready) as f:
                    eps = dict(l.strip().split("=", 1) for l in f if "=" in l)
                if "pid" in eps:
                    self.eps = eps
                    return
            if time.monotonic() > deadline:
                self.close()
                raise CheckFailed("funneld not ready")
            time.sleep(0.02)

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Peer:
    """A DEALER (or SUB) with CURVE keys (or none), every wait bounded."""

    def __init__(self, ctx, kind, ep, keydir=None, name=None, server_pub=None):
        self.rid = 0
        self.s = ctx.socket(kind)
        self.s.setsockopt(zmq.LINGER, 0)
        self.s.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
        if name is not None:
            with open(os.path.join(keydir, name + ".key")) as f:
                sec = f.read().strip().encode()
            self.s.curve_secretkey = sec
            self.s.curve_publickey = zmq.curve_public(sec)
            self.s.curve_serverkey = server_pub.encode()
        if kind == zmq.SUB:
            self.s.setsockopt(zmq.SUBSCRIBE, b"")
        self.s.connect(ep)

    def call(self, req, wait_ms=TIMEOUT_MS):
        """The reply, or None when none came within wait_ms."""
        self.rid += 1
        self.s.send(msgpack.packb(dict(req, rid=self.rid)))
        if not self.s.poll(wait_ms, zmq.POLLIN):
            return None
        rep = msgpack.unpackb(self.s.recv())
        expect_eq(rep.get("rid"), self.rid, "echoed rid")
        return rep

    def recv(self, wait_ms):
        if not self.s.poll(wait_ms, zmq.POLLIN):
            return None
        return msgpack.unpackb(self.s.recv())

    def close(self):
        self.s.close(0)


def publish(peer, *events, wait_ms=TIMEOUT_MS):
    return peer.call({"op": "publish", "events": list(events)}, wait_ms)


def replay(peer):
    out, frm = [], 1
    for _ in range(1000):
        rep = peer.call({"op": "replay", "from": frm})
        expect(rep is not None and rep.get("ok") is True, "replay: %r" % (rep,))
        out.extend(msgpack.unpackb(r) for r in rep["events"])
        if rep["end"]:
            return out
        frm = rep["next"]
    raise CheckFailed("replay never ended")


ACCESS = """\
principals:
  - name: web-forms
    key: "{web}"
    publish: [lead.captured, lead.activity]
    read: false
  - name: scoring
    key: "{scoring}"
    publish: [lead.scored, lead.qualified, lead.disqualified, rules.changed, "x.scoring.*"]
    read: true
  - name: routing
    key: "{routing}"
    publish: [lead.assigned, rules.changed]
    read: true
  - name: sales
    key: "{sales}"
    publish: [lead.contacted, lead.accepted, lead.rejected, lead.recycled, "opportunity.*", "deal.*"]
    read: true
  - name: auditor
    key: "{auditor}"
    read: true
    token: "{auditor_token}"
  - name: gateway
    key: "{gateway}"
    publish: [lead.captured, lead.activity]
    read: false
  - name: web-dash
    read: false
    token: "{web_token}"
  - name: crm
    publish: [lead.captured]
    token: "{crm_token}"
"""


def run_checks(res, funneld, funnel, d):
    ctx = zmq.Context()
    keys = {}
    daemon = None
    peers = []

    def check_keygen():
        for n in ("funneld", "web", "scoring", "routing", "sales", "auditor", "stranger",
                  "gateway"):
            keys[n] = keygen(funnel, d, n)
        for n in ("auditor", "web", "crm"):
            p = subprocess.run([funnel, "token", n], cwd=d, capture_output=True, text=True,
                               timeout=30)
            expect_eq(p.returncode, 0, "funnel token %s (%s)" % (n, p.stderr))
            line = [l for l in p.stdout.splitlines() if "token:" in l][0]
            keys[n + "_token"] = line.split('"')[1]
            st = os.stat(os.path.join(d, n + ".token"))
            expect_eq(stat.S_IMODE(st.st_mode), 0o600, "mode of %s.token" % n)
        st = os.stat(os.path.join(d, "web.key"))
        expect_eq(stat.S_IMODE(st.st_mode), 0o600, "mode of web.key")
        expect_eq(len(keys["web"]), 40, "Z85 public key length")
        before = open(os.path.join(d, "web.key")).read()
        p = subprocess.run([funnel, "keygen", "web"], cwd=d, capture_output=True, text=True,
                           timeout=30)
        expect_eq(p.returncode, 1, "keygen over an existing key: exit status")
        expect_in("never overwritten", p.stderr, "keygen over an existing key: message")
        expect_eq(open(os.path.join(d, "web.key")).read(), before, "web.key unchanged")
        with open(os.path.join(d, "access.yaml"), "w") as f:
            f.write(ACCESS.format(**keys))
    if not res.run("funnel keygen writes NAME.key (0600) and NAME.pub, never over a key",
                   check_keygen):
        return

    server = keys["funneld"]
    access = os.path.join(d, "access.yaml")
    data = os.path.join(d, "data")
    common = ["--access", access, "--key", os.path.join(d, "funneld.key")]

    def peer(kind, which, name=None):
        p = Peer(ctx, kind, daemon.eps[which], d, name, server)
        peers.append(p)
        return p

    def bad_file(text, want):
        path = os.path.join(d, "bad.yaml")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([funneld, "--data", os.path.join(d, "bad-data"), "--access", path,
                            "--key", os.path.join(d, "funneld.key"),
                            "--ingest", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                            "--query", "tcp://127.0.0.1:*"],
                           capture_output=True, text=True, timeout=30)
        expect(p.returncode != 0, "funneld started on a bad access file")
        expect_in(want, p.stderr, "funneld's message")

    def check_bad_files():
        k = keys["web"]
        bad_file("principals:\n  - name: a\n    key: \"%s\"\n    wirte: [x]\n" % k,
                 "bad.yaml:4: unknown key 'wirte'")
        bad_file("principals:\n  - name: a\n    key: \"%s\"\n    read: true\n    read: false\n" % k,
                 "bad.yaml:5: duplicate key 'read' (first given on line 4)")
        bad_file("principals:\n  - name: a\n    key: \"%s\"\n  - name: b\n    key: \"%s\"\n" % (k, k),
                 "have the same key")
        bad_file("principals:\n  - name: a\n    key: \"short\"\n", "bad.yaml:3: key must be")
    res.run("the access file: unknown and duplicated keys refused naming the line", check_bad_files)

    def check_loopback_rule():
        p = subprocess.run([funneld, "--data", os.path.join(d, "open-data"),
                            "--ingest", "tcp://0.0.0.0:*"], capture_output=True, text=True,
                           timeout=30)
        expect_eq(p.returncode, 2, "exit status without --access")
        expect_in("not on loopback", p.stderr, "message")
        expect_in("--insecure", p.stderr, "message names the way out")
        p = subprocess.run([funneld, "--data", os.path.join(d, "open-data"), "--access", access],
                           capture_output=True, text=True, timeout=30)
        expect_eq(p.returncode, 2, "--access without --key: exit status")
        try:
            open_d = Funneld(funneld, d, os.path.join(d, "open-data"),
                             ["--insecure", "--ingest", "tcp://0.0.0.0:*"])
        except CheckFailed as e:
            raise CheckFailed("--insecure did not start: %s" % e)
        open_d.close()
        expect_eq(open_d.proc.returncode, 0, "the --insecure funneld's exit status")
        expect_in("--insecure is given", open_d.log(), "the warning")
    res.run("beyond loopback without --access is refused unless --insecure", check_loopback_rule)

    try:
        daemon = Funneld(funneld, d, data, common)
    except CheckFailed as e:
        res.not_ok("funneld starts with --access and --key", e)
        return
    res.ok("funneld starts with --access and --key")

    def check_no_key():
        p = peer(zmq.DEALER, "ingest")
        rep = publish(p, {"type": "lead.captured", "lead": "nokey"}, wait_ms=NO_REPLY_MS)
        expect(rep is None, "a plain socket got a reply: %r" % (rep,))
        q = peer(zmq.DEALER, "query")
        expect(q.call({"op": "status"}, NO_REPLY_MS) is None, "a plain socket got a status")
    res.run("no key: no reply within %d ms" % NO_REPLY_MS, check_no_key)

    def check_unknown_key():
        for _ in range(2):
            p = peer(zmq.DEALER, "ingest", "stranger")
            rep = publish(p, {"type": "lead.captured", "lead": "stranger"}, wait_ms=NO_REPLY_MS)
            expect(rep is None, "an unknown key got a reply: %r" % (rep,))
        log = daemon.log()
        lines = [l for l in log.splitlines() if keys["stranger"] in l and "ingest" in l]
        expect_eq(len(lines), 1, "log lines naming the unknown key on ingest")
        expect_in("is not in the access file", lines[0], "the log line")
    res.run("a key not in the access file: no reply, logged once with its key", check_unknown_key)

    web = peer(zmq.DEALER, "ingest", "web")
    sales_in = peer(zmq.DEALER, "ingest", "sales")
    scoring_in = peer(zmq.DEALER, "ingest", "scoring")

    def check_grants():
        rep = publish(web, {"type": "lead.captured", "lead": "L1", "id": "w1"},
                      {"type": "lead.activity", "lead": "L1", "id": "w2", "data": {"kind": "visit"}})
        expect(rep is not None and rep.get("ok") is True, "web-forms capture: %r" % (rep,))
        rep = publish(web, {"type": "lead.qualified", "lead": "L1"})
        expect(rep is not None and rep.get("ok") is False, "web-forms qualified: %r" % (rep,))
        expect_eq(rep["error"], "EFORBIDDEN", "error name")
        expect_eq(rep["code"], 16, "error code")
        expect_in("web-forms", rep["message"], "message names the principal")
        expect_in("lead.qualified", rep["message"], "message names the type")
        rep = publish(scoring_in, {"type": "lead.scored", "lead": "L1", "data": {"score": 50}},
                      {"type": "lead.qualified", "lead": "L1"})
        expect(rep is not None and rep.get("ok") is True, "scoring: %r" % (rep,))
        rep = publish(sales_in, {"type": "lead.contacted", "lead": "L1", "id": "s1"},
                      {"type": "lead.scored", "lead": "L1", "id": "s2", "data": {"score": 1}})
        expect(rep is not None and rep.get("ok") is False, "sales scoring: %r" % (rep,))
        expect_eq(rep["error"], "EFORBIDDEN", "error name")
        expect_eq(rep.get("index"), 1, "the refused event's index")
        rep = publish(sales_in, {"type": "x.custom.thing"})
        expect(rep is not None and rep.get("error") == "EFORBIDDEN", "sales x.custom: %r" % (rep,))
        rep = publish(sales_in, {"type": "lead.contacted", "lead": "L1", "id": "s1"})
        expect(rep is not None and rep.get("ok") is True, "sales contacted: %r" % (rep,))
    res.run("each principal publishes its globs; others EFORBIDDEN, the request whole",
            check_grants)

    def check_read_right():
        q = peer(zmq.DEALER, "query", "web")
        for op in ("replay", "status", "lead"):
            req = {"op": op, "lead": "L1"} if op == "lead" else {"op": op}
            rep = q.call(req)
            expect(rep is not None and rep.get("error") == "EFORBIDDEN",
                   "web-forms %s: %r" % (op, rep))
            expect_in("may not read", rep["message"], "message")
        sub_web = peer(zmq.SUB, "publish", "web")
        sub_aud = peer(zmq.SUB, "publish", "auditor")
        got = None
        deadline = time.monotonic() + 5
        while got is None and time.monotonic() < deadline:
            got = sub_aud.recv(500)
        expect(got is not None, "the auditor's SUB got nothing (not even a heartbeat)")
        expect(sub_web.recv(NO_REPLY_MS) is None, "web-forms' SUB got a message")
    res.run("without read: EFORBIDDEN on replay/status/lead, nothing on the publish socket",
            check_read_right)

    def check_forged():
        rep = publish(sales_in, {"type": "lead.accepted", "lead": "L1", "producer": "web-forms"})
        expect(rep is not None and rep.get("error") == "EFORBIDDEN", "forged: %r" % (rep,))
        expect_eq(rep.get("field"), "producer", "field")
    res.run("a producer in the envelope is refused", check_forged)

    aud = peer(zmq.DEALER, "query", "auditor")

    def check_stamped():
        recs = replay(aud)
        by = [(r["type"], r.get("producer")) for r in recs]
        expect_eq(by, [("lead.captured", "web-forms"), ("lead.activity", "web-forms"),
                       ("lead.scored", "scoring"), ("lead.qualified", "scoring"),
                       ("lead.contacted", "sales")], "types and producers")
    res.run("each record carries the sender's principal as producer", check_stamped)

    def check_cli():
        env = dict(os.environ, FUNNEL_INGEST=daemon.eps["ingest"],
                   FUNNEL_PUBLISH=daemon.eps["publish"], FUNNEL_QUERY=daemon.eps["query"],
                   FUNNEL_KEY=os.path.join(d, "sales.key"),
                   FUNNEL_SERVER_KEY=os.path.join(d, "funneld.pub"))
        p = subprocess.run([funnel, "publish", "--type", "lead.accepted", "--lead", "L1"],
                           env=env, capture_output=True, text=True, timeout=30)
        expect_eq(p.returncode, 0, "publish with keys from the environment (%s)" % p.stderr)
        p = subprocess.run([funnel, "--key", os.path.join(d, "auditor.key"), "history", "L1",
                            "--human"], env=env, capture_output=True, text=True, timeout=30)
        expect_eq(p.returncode, 0, "history with --key (%s)" % p.stderr)
        expect_in("by web-forms", p.stdout, "history shows the producer")
        expect_in("by sales", p.stdout, "history shows the producer")
        p = subprocess.run([funnel, "replay", "--key", os.path.join(d, "web.key"), "--json"],
                           env=env, capture_output=True, text=True, timeout=30)
        expect_eq(p.returncode, 1, "replay by web-forms: exit status")
        expect_in("EFORBIDDEN", p.stderr, "replay by web-forms: message")
        p = subprocess.run([funnel, "verify", "--key", os.path.join(d, "auditor.key")],
                           env=env, capture_output=True, text=True, timeout=30)
        expect_eq(p.returncode, 0, "verify (%s)" % p.stderr)
        # a key funneld does not know is silence (a CURVE handshake refused): the
        # message names that mistake beside a funneld that is not running
        p = subprocess.run([funnel, "--timeout", "500", "--key", os.path.join(d, "stranger.key"),
                            "status"], env=env, capture_output=True, text=True, timeout=30)
        expect_eq(p.returncode, 1, "status with a key not in the access file")
        expect_in("is funneld running, is --key's public key in its access file, and is "
                  "--server-key its funneld.pub?", p.stderr, "the timeout names the keys")
        env.pop("FUNNEL_SERVER_KEY")
        p = subprocess.run([funnel, "status"], env=env, capture_output=True, text=True,
                           timeout=30)
        expect_eq(p.returncode, 2, "a key without a server key: usage error")
        expect_in("--server-key", p.stderr, "message names what is missing")
    res.run("the CLI with --key/--server-key and FUNNEL_KEY/FUNNEL_SERVER_KEY", check_cli)

    def check_settings_file():
        conf = os.path.join(d, "funnel.conf")
        with open(conf, "w") as f:
            f.write("endpoints:\n  ingest: %s\n  publish: %s\n  query: %s\n"
                    "funnel:\n  key: %s\n  server-key: %s\n"
                    % (daemon.eps["ingest"], daemon.eps["publish"], daemon.eps["query"],
                       os.path.join(d, "auditor.key"), os.path.join(d, "funneld.pub")))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FUNNEL_")}
        env["FUNNEL_CONFIG"] = conf
        p = subprocess.run([funnel, "status", "--json"], env=env, capture_output=True,
                           text=True, timeout=30)
        expect_eq(p.returncode, 0, "status with the settings file's keys (%s)" % p.stderr)
        # the environment ranks above the file
        env["FUNNEL_KEY"] = os.path.join(d, "web.key")
        p = subprocess.run([funnel, "status", "--json"], env=env, capture_output=True,
                           text=True, timeout=30)
        expect_eq(p.returncode, 1, "status with FUNNEL_KEY of a principal without read")
        expect_in("EFORBIDDEN", p.stderr, "message")
    res.run("the settings file gives the CLI its keys; FUNNEL_KEY ranks above it",
            check_settings_file)

    def check_services():
        rules = os.path.join(REPO, "funnel.yaml")
        build_bin = os.path.dirname(os.path.abspath(funneld))
        eps = ["--ingest", daemon.eps["ingest"], "--publish", daemon.eps["publish"],
               "--query", daemon.eps["query"], "--server-key", os.path.join(d, "funneld.pub")]
        publish(web, {"type": "lead.captured", "lead": "L2", "id": "w3",
                      "data": {"email": "a@example.com", "source": "web", "country": "DE",
                               "employees": 500}})
        for svc in ("scoring", "routing"):
            p = subprocess.run([os.path.join(build_bin, "funnel-" + svc), "--rules", rules,
                                "--view", os.path.join(d, svc + "-view"), "--key",
                                os.path.join(d, svc + ".key"), "--until-head"] + eps,
                               capture_output=True, text=True, timeout=60)
            expect_eq(p.returncode, 0, "funnel-%s with its key (%s)" % (svc, p.stderr[-600:]))
        recs = replay(aud)
        scored = [r for r in recs if r["type"] == "lead.scored" and r.get("lead") == "L2"]
        expect(scored, "no lead.scored for L2 from funnel-scoring")
        expect_eq(scored[-1].get("producer"), "scoring", "producer of lead.scored")
        p = subprocess.run([os.path.join(build_bin, "funnel-metrics"), "--rules", rules,
                            "--view", os.path.join(d, "metrics-view"), "--key",
                            os.path.join(d, "auditor.key"), "--until-head"] + eps,
                           capture_output=True, text=True, timeout=60)
        expect_eq(p.returncode, 0, "funnel-metrics with a read key (%s)" % p.stderr[-600:])
    res.run("funnel-scoring, funnel-routing and funnel-metrics work with their keys",
            check_services)

    def check_http_tokens():
        import socket
        import urllib.error
        import urllib.request
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            port = so.getsockname()[1]
        build_bin = os.path.dirname(os.path.abspath(funneld))
        ready = os.path.join(d, "metrics.ready")
        log = open(os.path.join(d, "metrics.log"), "ab")
        proc = subprocess.Popen(
            [os.path.join(build_bin, "funnel-metrics"), "--rules", os.path.join(REPO, "funnel.yaml"),
             "--view", os.path.join(d, "metrics-view"), "--http", "127.0.0.1:%d" % port,
             "--access", access, "--ready-file", ready, "--key", os.path.join(d, "auditor.key"),
             "--server-key", os.path.join(d, "funneld.pub"), "--ingest", daemon.eps["ingest"],
             "--publish", daemon.eps["publish"], "--query", daemon.eps["query"]],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        try:
            wait_until(lambda: os.path.exists(ready) or proc.poll() is not None,
                       "funnel-metrics ready", 15)
            expect(proc.poll() is None, "funnel-metrics exited")

            def get(path, token=None):
                req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path))
                if token is not None:
                    req.add_header("Authorization", "Bearer " + token)
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        return r.status, dict(r.headers)
                except urllib.error.HTTPError as e:
                    return e.code, dict(e.headers)

            def tok(n):
                with open(os.path.join(d, n + ".token")) as f:
                    return f.read().strip()
            st, hdr = get("/api/summary")
            expect_eq(st, 401, "/api/summary without a token")
            expect_in("Bearer", hdr.get("WWW-Authenticate", ""), "the challenge")
            expect_eq(get("/metrics")[0], 401, "/metrics without a token")
            expect_eq(get("/api/summary", "0" * 64)[0], 401, "an unknown token")
            expect_eq(get("/api/summary", tok("web"))[0], 401, "the token of a principal without read")
            expect_eq(get("/api/summary", tok("auditor"))[0], 200, "the auditor's token")
            expect_eq(get("/metrics", tok("auditor"))[0], 200, "/metrics with the auditor's token")
            req = urllib.request.Request("http://127.0.0.1:%d/metrics" % port)
            req.add_header("Authorization", "Bearer " + tok("auditor"))
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read().decode()
            expect_in('funnel_events_by_producer_total{producer="web-forms",type="lead.captured"} 2',
                      text, "/metrics by producer")
            expect_in('funnel_events_by_producer_total{producer="scoring",type="lead.qualified"} 1',
                      text, "/metrics by producer")
            expect_eq(get("/")[0], 200, "the page itself (no figures) without a token")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    res.run("funnel-metrics --access: /api and /metrics want a read token (else 401)",
            check_http_tokens)

    def check_gateway():
        import http.client
        build_bin = os.path.dirname(os.path.abspath(funneld))
        ready = os.path.join(d, "gw.ready")
        log = open(os.path.join(d, "gw.log"), "ab")
        proc = subprocess.Popen(
            [os.path.join(build_bin, "funnel-gateway"), "--rules", os.path.join(REPO, "funnel.yaml"),
             "--ingest", daemon.eps["ingest"], "--query", daemon.eps["query"],
             "--http", "127.0.0.1:0", "--ready-file", ready,
             "--lead-key", os.path.join(d, "gw-lead.key"), "--timeout-ms", "3000",
             "--key", os.path.join(d, "gateway.key"), "--server-key", os.path.join(d, "funneld.pub"),
             "--access", access],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        try:
            wait_until(lambda: (os.path.exists(ready) and os.path.getsize(ready) > 0)
                       or proc.poll() is not None, "funnel-gateway ready", 15)
            expect(proc.poll() is None, "funnel-gateway exited")
            with open(ready) as f:
                host, port = f.read().strip().split("=", 1)[1].rsplit(":", 1)
            c = http.client.HTTPConnection(host, int(port), timeout=10)
            with open(os.path.join(d, "crm.token")) as f:
                crm_tok = f.read().strip()
            c.request("POST", "/v1/events", body='[{"type":"lead.captured","lead":"G1","id":"g1"}]',
                      headers={"Content-Type": "application/json",
                               "Authorization": "Bearer " + crm_tok})
            r = c.getresponse()
            body = r.read()
            c.close()
            expect_eq(r.status, 200, "POST /v1/events through the gateway (%r)" % body)

            def post(events, token=None):
                hdrs = {"Content-Type": "application/json"}
                if token is not None:
                    hdrs["Authorization"] = "Bearer " + token
                cc = http.client.HTTPConnection(host, int(port), timeout=10)
                cc.request("POST", "/v1/events", body=events, headers=hdrs)
                rr = cc.getresponse()
                out = (rr.status, rr.read())
                cc.close()
                return out
            with open(os.path.join(d, "web.token")) as f:
                web_tok = f.read().strip()
            # a token of web-dash (no publish grant) and of no one
            st, b = post('[{"type":"lead.captured","lead":"G9"}]', web_tok)
            expect_eq(st, 403, "a token whose principal may not publish lead.captured (%r)" % b)
            expect_in(b'"EFORBIDDEN"', b, "the refusal's code")
            expect_eq(post('[{"type":"lead.captured","lead":"G9"}]', "0" * 64)[0], 401,
                      "an unknown token")
            expect_eq(post('[{"type":"lead.captured","lead":"G9"}]')[0], 401, "no token")
            recs = replay(aud)
            g = [x for x in recs if x.get("lead") == "G1"]
            expect_eq([(x["type"], x.get("producer")) for x in g], [("lead.captured", "gateway")],
                      "the gateway's record")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    res.run("funnel-gateway with its key and --access: /v1/events wants a token whose "
            "principal may publish the types; records carry producer gateway",
            check_gateway)

    def check_restart():
        nonlocal daemon, web, aud
        before = replay(aud)
        daemon.close()
        for p in peers:
            p.close()
        peers.clear()
        daemon = Funneld(funneld, d, data, common)
        web = peer(zmq.DEALER, "ingest", "web")
        rep = publish(web, {"type": "lead.captured", "lead": "L3", "id": "w9"})
        expect(rep is not None and rep.get("ok") is True, "publish after restart: %r" % (rep,))
        aud = peer(zmq.DEALER, "query", "auditor")
        after = replay(aud)
        expect_eq(after[:len(before)], before, "records before the restart")
        expect_eq(after[-1].get("producer"), "web-forms", "producer after the restart")
    res.run("records carry the right producer across a restart of funneld", check_restart)

    def check_sighup():
        nonlocal web
        sales_keep = peer(zmq.DEALER, "ingest", "sales")
        # a broken file: the table in force stays
        with open(access, "a") as f:
            f.write("  - name: broken\n    bogus: 1\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in daemon.log(), "the refused reload", 10)
        rep = publish(web, {"type": "lead.activity", "lead": "L3", "data": {"kind": "visit"}})
        expect(rep is not None and rep.get("ok") is True, "web-forms after a bad reload: %r" % (rep,))
        # a rotation: the name web-forms now stands for another key
        with open(access, "w") as f:
            f.write(ACCESS.format(**keys).replace(keys["web"], keys["stranger"]))
        n = daemon.log().count("access: reloaded")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: daemon.log().count("access: reloaded") > n, "the reload", 10)
        rep = publish(web, {"type": "lead.activity", "lead": "L3", "data": {"kind": "visit"}}, wait_ms=NO_REPLY_MS)
        expect(rep is None, "the open connection of a replaced key got a reply: %r" % (rep,))
        rep = publish(sales_keep, {"type": "lead.contacted", "lead": "L3"})
        expect(rep is not None and rep.get("ok") is True,
               "an open connection of a key still in the file: %r" % (rep,))
        # a removal: the name is gone
        with open(access, "w") as f:
            f.write(ACCESS.format(**keys).replace("web-forms", "web-forms-old").replace(
                keys["web"], keys["stranger"]))
        n = daemon.log().count("access: reloaded")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: daemon.log().count("access: reloaded") > n, "the reload", 10)
        fresh = peer(zmq.DEALER, "ingest", "web")
        rep = publish(fresh, {"type": "lead.activity", "lead": "L3", "data": {"kind": "visit"}}, wait_ms=NO_REPLY_MS)
        expect(rep is None, "a new connection of a revoked key got a reply: %r" % (rep,))
        recs = replay(aud)
        expect_eq([r["type"] for r in recs if r.get("lead") == "L3"],
                  ["lead.captured", "lead.activity", "lead.contacted"], "L3's records")
    res.run("SIGHUP revokes a key; a broken file keeps the table in force", check_sighup)

    for p in peers:
        p.close()

    def check_clean_stop():
        daemon.close()
        expect_eq(daemon.proc.returncode, 0, "funneld's exit status after SIGTERM")
        log = daemon.log()
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
            expect(bad not in log, "funneld's log has a %s report" % bad)
    res.run("funneld with --access stops with status 0 and no sanitizer report", check_clean_stop)
    daemon.close()
    ctx.term()


def main():
    build = os.environ.get("BUILD") or os.path.join(REPO, "build")
    if not os.path.isabs(build):
        build = os.path.join(REPO, build)
    funneld = os.environ.get("FUNNELD") or os.path.join(build, "bin", "funneld")
    funnel = os.path.join(os.path.dirname(os.path.abspath(funneld)), "funnel")
    res = Results()
    d = tempfile.mkdtemp(prefix="funnel-access-")
    try:
        run_checks(res, os.path.abspath(funneld), funnel, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return res


if __name__ == "__main__":
    sys.exit(main().summary())
