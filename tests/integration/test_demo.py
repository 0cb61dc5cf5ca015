#!/usr/bin/python3
"""
tests/integration/test_demo.py - `make demo` (clients/demo/demo.sh) run
small: funneld and the real services on free ports and a fresh log, the
generated history sent through them, then the dashboard's API: entries
spread over many weeks (event time), qualifications and assignments made
by the services from the shipped funnel.yaml, reps' answers with reasons,
wins, losses and SLA breaches; the same arguments again store nothing
new (the history is a function of its seed); Ctrl-C (SIGTERM) stops
everything.

Run with Debian's /usr/bin/python3 (python3-zmq, python3-msgpack):

    BUILD=build /usr/bin/python3 tests/integration/test_demo.py

Every process and wait is bounded; prints "ok - name" / "not ok - name:
reason" and "N passed, M failed".
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import zmq

from funnel_testlib import REPO, LogClient, Results, expect, expect_eq, stop_proc

BUILD = os.environ.get("BUILD", "build")
LEADS = 200
WAIT_S = 120


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    res = Results()
    tmp = tempfile.mkdtemp(prefix="funnel-demo-")
    http = "127.0.0.1:%d" % free_port()
    var = os.path.join(tmp, "demo")
    env = dict(os.environ, BUILD=BUILD, VAR=var, HTTP=http, PORTS="any")
    out_path = os.path.join(tmp, "out")
    out = open(out_path, "w")
    proc = subprocess.Popen(["sh", "clients/demo/demo.sh", "--leads", str(LEADS)], cwd=REPO,
                            env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    ctx = zmq.Context()
    state = {}

    def api(path):
        with urllib.request.urlopen("http://%s%s" % (http, path), timeout=10) as r:
            return json.loads(r.read())

    def text():
        with open(out_path) as f:
            return f.read()

    def generated():
        deadline = time.monotonic() + WAIT_S
        while "dashboard is at" not in text():
            expect(proc.poll() is None, "demo.sh exited: %s" % text())
            expect(time.monotonic() < deadline, "no dashboard URL in %d s: %s" % (WAIT_S, text()))
            time.sleep(0.1)
        expect("http://%s/" % http in text(), "the URL printed: %s" % text())
        print("# " + [l for l in text().splitlines() if l.startswith("demo: %d" % LEADS)][0])
    res.run("the demo sends its history through the running system and prints the URL",
            generated)

    def weeks():
        series = api("/api/trend?bucket=week")["trend"]["series"]
        busy = [r for r in series if r["entered"]["inquiry"] > 0]
        expect(len(busy) >= 10, "entries over %d weeks, want at least 10" % len(busy))
        total = sum(r["entered"]["inquiry"] for r in series)
        expect_eq(total, LEADS, "every lead entered once")
    res.run("the dashboard's entries spread over the 90 days' weeks", weeks)

    def services_did_their_part():
        s = api("/api/summary")
        stages = {r["stage"]: r["entered"] for r in s["funnel"]["stages"]}
        for st in ("mql", "sal", "sql", "won", "lost", "nurture"):
            expect(stages[st] > 0, "entries into %s: %r" % (st, stages))
        cl = s["closed_loop"]
        expect(cl["rejected"] > 0 and cl["recycled"] > 0, "rejections and recycling: %r" % cl)
        expect(any(r["event"] == "lead.rejected" for r in cl["reasons"]), "rejection reasons")
        f = s["followup"]
        expect(f["assignments"] > 0 and f["sla_breaches"] > 0, "assignments and breaches: %r"
               % {k: f[k] for k in ("assignments", "sla_breaches")})
        expect(len(f["teams"]) >= 2, "several teams: %r" % [t["team"] for t in f["teams"]])
        srcs = {r["source"] for r in s["funnel"]["by_source"]}
        expect(len(srcs) >= 5, "several sources: %r" % srcs)
        with open(os.path.join(var, "funneld.ready")) as fr:
            eps = dict(l.strip().split("=", 1) for l in fr if "=" in l)
        state["eps"] = eps
        log = LogClient(ctx, eps)
        try:
            recs = log.records()
        finally:
            log.close()
        by_scoring = [r for r in recs if r["type"] == "lead.qualified"
                      and r.get("id", "").startswith("scoring:")]
        by_routing = [r for r in recs if r["type"] == "lead.assigned"
                      and r.get("id", "").startswith("routing:")]
        expect(by_scoring and by_routing, "qualified by funnel-scoring, assigned by funnel-routing")
        expect(all(0 < r["occurred_at"] < r["ts"] for r in by_routing),
               "derived assignments dated by their cause")
        state["head"] = recs[-1]["seq"]
    res.run("qualified and routed by the services, answered by the reps, with reasons and "
            "breaches", services_did_their_part)

    def same_again():
        eps = state["eps"]
        p = subprocess.run(["/usr/bin/python3", "clients/demo/demo.py", "--ingest", eps["ingest"],
                            "--query", eps["query"], "--scoring-view", os.path.join(var, "scoring"),
                            "--routing-view", os.path.join(var, "routing"), "--rules",
                            "funnel.yaml", "--bin", os.path.join(BUILD, "bin"), "--leads",
                            str(LEADS)], cwd=REPO, capture_output=True, text=True, timeout=WAIT_S)
        expect_eq(p.returncode, 0, "second run: %s" % p.stderr[-800:])
        log = LogClient(ctx, eps)
        try:
            expect_eq(log.status()["head"], state["head"], "the log did not grow")
        finally:
            log.close()
    res.run("the same seed again sends the same events: nothing new is stored", same_again)

    def stops():
        os.kill(proc.pid, signal.SIGTERM)
        expect_eq(proc.wait(timeout=30), 0, "demo.sh exit status")
        ready = os.path.join(var, "funneld.ready")
        with open(ready) as f:
            pid = [int(l.split("=")[1]) for l in f if l.startswith("pid=")]
        for p in pid:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(p, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("funneld %d still running" % p)
    res.run("SIGTERM stops the demo, the services and funneld", stops)

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        stop_proc(proc)
    out.close()
    ctx.term()
    shutil.rmtree(tmp, ignore_errors=True)
    return res.summary()


if __name__ == "__main__":
    sys.exit(main())
