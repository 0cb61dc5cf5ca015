#!/usr/bin/python3
"""
tests/integration/test_erasure.py - right to erasure by crypto-shredding
(PROTOCOL.md section 21), end to end with real processes: funneld with a
master key, the funnel CLI, funnel-scoring, funnel-routing and
funnel-metrics, each with its own view.

Checks: captures with known personal values leave no byte of them in the
data directory nor in any service's view; funnel history, replay and tail
print them in clear; funnel erase destroys the key (the values read as
"[erased]", neither the values nor the key bytes are on disk, funnel
verify passes); every metric is the same before and after; every view
rebuilt from seq 1 has the live view's digest; a capture after the
erasure gets a fresh key; a backup holds the key file wrapped only;
pipelined groups of new leads (each flushed while the next is applied)
with erasures among them keep every acknowledged key over a kill -9; a
group that erases a key, applied while the flush of the group before
runs, zeroes that key only after its own journal flush (the crash
shim's trace).

Run with Debian's /usr/bin/python3; BUILD (default build) names the
build directory.  Prints "ok - name" / "not ok - name: reason" per check
and "N passed, M failed"; exits 1 if any check failed.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

from funnel_testlib import (OP_OPEN, OP_SYNC, OP_WRITE, REPO, CheckFailed, LogClient, Results,
                            Service, connect, expect, expect_eq, read_trace, start_daemon,
                            start_shimmed, stop_proc)

BUILD = os.environ.get("BUILD", "build")
BIN = os.path.join(REPO, BUILD, "bin")
FUNNELD = os.environ.get("FUNNELD", os.path.join(BIN, "funneld"))
SHIM = os.path.join(REPO, BUILD, "tests", "crashshim.so")

RULES = """\
version: "erasure v1"
scoring:
  threshold: 50
  fit:
    - name: senior title
      field: title
      matches: "(vp|chief|cto)"
      ignore_case: true
      points: 30
  engagement:
    - name: demo request
      on: demo_request
      points: 40
      once: true
  negative:
    - name: free mail
      field: email_domain
      in: [freemail.example]
      points: -100
routing:
  teams:
    - name: sales
      sla_minutes: 60
      reps:
        - { name: ra, weight: 1 }
        - { name: rb, weight: 1 }
  rules:
    - name: europe
      team: sales
      when:
        country: [DE, FR]
  fallback:
    queue: unrouted
"""

# the personal values the scans look for: unusual enough to be unique
EMAIL = "Zelda.Quixote-8841@Corpmail-Unique.example"
NAME = "Zelda Quixote-Unique"
PHONE = "+49 30 88417755"
NEEDLES = [b"Zelda.Quixote", b"Quixote-Unique", b"88417755"]


def captured(lead, email, name, phone, title, country, source, campaign):
    return {"type": "lead.captured", "lead": lead, "id": "cap-" + lead,
            "data": {"email": email, "name": name, "phone": phone, "title": title,
                     "country": country, "source": source, "campaign": campaign}}


def scan(paths, needles):
    """(file, needle) for every needle found in a file under paths."""
    hits = []
    for top in paths:
        for root, _, files in os.walk(top):
            for name in files:
                p = os.path.join(root, name)
                with open(p, "rb") as f:
                    blob = f.read()
                hits += [(p, n) for n in needles if n in blob]
    return hits


class Cli:
    def __init__(self, daemon):
        eps = daemon.endpoints
        self.base = [os.path.join(BIN, "funnel"), "--ingest", eps["ingest"],
                     "--publish", eps["publish"], "--query", eps["query"]]

    def run(self, *args, stdin=None):
        p = subprocess.run(self.base + list(args), input=stdin, capture_output=True,
                           text=True, timeout=60)
        expect_eq(p.returncode, 0, "funnel %s (stderr: %s)" % (" ".join(args), p.stderr[-600:]))
        return p.stdout

    def lines(self, *args):
        return [json.loads(x) for x in self.run(*args).splitlines() if x.strip()]


def main():
    res = Results()
    ctx = zmq.Context()
    keydir = tempfile.mkdtemp(prefix="funnel-erasure-mk-")
    daemon = log = None
    try:
        mk = os.path.join(keydir, "master.key")
        with open(mk, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        daemon = start_daemon(res, FUNNELD, report_ok=True, prefix="funnel-erasure-",
                              extra_args=["--master-key", mk])
        if daemon is not None:
            log = LogClient(ctx, daemon.endpoints)
            run_checks(res, ctx, daemon, log, mk)
            log.close()
            log = None
            daemon.close()
            daemon = None
        run_shred_recovery(res, ctx, mk)
        run_sealed_ahead(res, ctx, mk)
        run_pipelined_groups(res, ctx, mk)
        run_finish_order(res, ctx, mk)
        run_wrong_master(res, mk)
    finally:
        if log is not None:
            log.close()
        if daemon is not None:
            daemon.close()
        shutil.rmtree(keydir, ignore_errors=True)
        ctx.term()
    return res.summary()


def run_checks(res, ctx, daemon, log, mk):
    cli = Cli(daemon)
    services = {name: Service(os.path.join(BIN, "funnel-" + name), daemon, name)
                for name in ("scoring", "routing", "metrics")}
    for s in services.values():
        s.write_rules(RULES)
    views = [s.view for s in services.values()]
    q = connect(ctx, zmq.DEALER, daemon.endpoints["query"])
    st = {}

    def key_of(lead):
        q.send(msgpack.packb({"op": "key", "rid": 7, "lead": lead}))
        rep = msgpack.unpackb(q.recv(), raw=False)
        expect(rep["ok"], "key op: %r" % (rep,))
        return rep["key"]

    def settle():
        """Every service to the head until none adds an event."""
        for _ in range(5):
            head = log.status()["head"]
            for s in services.values():
                s.until_head()
            if log.status()["head"] == head:
                return
        raise AssertionError("services still publishing after 5 rounds")

    def capture_and_scan():
        lines = [captured("E1", EMAIL, NAME, PHONE, "CTO", "DE", "ads", "spring"),
                 captured("E2", "pat@freemail.example", "Pat Other", "+1 555 0100", "VP Sales",
                          "FR", "seo", "brand"),
                 captured("E3", "kim@acme.example", "Kim Third", "+44 20 0000", "analyst", "US",
                          "ads", "spring"),
                 {"type": "lead.activity", "lead": "E1", "data": {"kind": "demo_request"}},
                 {"type": "lead.activity", "lead": "E2", "data": {"kind": "demo_request"}}]
        cli.run("publish", stdin="".join(json.dumps(x) + "\n" for x in lines))
        settle()
        # E1 (qualified by scoring) goes on to a won deal: figures to keep
        later = [{"type": "lead.accepted", "lead": "E1"},
                 {"type": "opportunity.opened", "lead": "E1", "data": {"amount": 5000}},
                 {"type": "deal.won", "lead": "E1", "data": {"amount": 4800}}]
        cli.run("publish", stdin="".join(json.dumps(x) + "\n" for x in later))
        settle()
        expect_eq(scan([daemon.data] + views, NEEDLES), [], "personal values on disk")
        st["key"] = key_of("E1")
        expect(isinstance(st["key"], bytes) and len(st["key"]) == 32, "E1 has a data key")
    res.run("captures: no personal value in the data directory nor in any view",
            capture_and_scan)

    def scoring_reads_domain():
        # E2's domain is on the free-mail list: -100 keeps it from qualifying,
        # which only works when the service sees email_domain
        recs = log.records()
        qual = {r["lead"] for r in recs if r["type"] == "lead.qualified"}
        expect("E1" in qual, "E1 (CTO + demo) qualified: %r" % qual)
        expect("E2" not in qual, "E2 (free mail) not qualified: the domain rule did not see it")
    res.run("scoring's rule on email_domain works with the email sealed", scoring_reads_domain)

    def clear_for_readers():
        hist = cli.lines("history", "E1")
        expect_eq(hist[0]["data"]["email"], EMAIL, "history: email")
        expect_eq(hist[0]["data"]["name"], NAME, "history: name")
        expect_eq(hist[0]["data"]["email_domain"], "corpmail-unique.example", "email_domain")
        rep = [r for r in cli.lines("replay") if r.get("lead") == "E1"]
        expect_eq(rep[0]["data"]["phone"], PHONE, "replay: phone")
        tail = cli.lines("tail", "--from", "1", "--count", "1")
        expect_eq(tail[0]["data"]["email"], EMAIL, "tail: email")
        table = cli.run("--human", "history", "E1")
        expect(EMAIL in table, "history table shows the email")
        raw = cli.run("replay", "--raw", "--to", "1").strip()
        expect(EMAIL.encode().hex() not in raw, "--raw prints the stored (sealed) bytes")
    res.run("funnel history, replay and tail print personal values in clear", clear_for_readers)

    def later_event_same_key():
        # sealed ahead under a new candidate key, which funneld drops: E2
        # has its key, and every event of E2 is sealed under that one
        before = key_of("E2")
        cli.run("publish", "--type", "lead.activity", "--lead", "E2",
                "--data", json.dumps({"kind": "call", "email": "pat.new@freemail.example"}))
        expect_eq(key_of("E2"), before, "E2's key after a second sealed event")
        hist = cli.lines("history", "E2")
        calls = [r for r in hist if r.get("type") == "lead.activity"
                 and (r.get("data") or {}).get("kind") == "call"]
        expect_eq([r["data"]["email"] for r in calls], ["pat.new@freemail.example"],
                  "the later email")
        expect_eq(hist[0]["data"]["email"], "pat@freemail.example", "the first email")
        settle()
    res.run("a later event with personal values is sealed under the lead's key", later_event_same_key)

    def erase():
        st["metrics"] = {n: services["metrics"].ok("report", n)
                         for n in ("attribution", "conversion", "funnel", "summary")}
        st["digests"] = {n: s.digest()[1] for n, s in services.items()}
        out = cli.run("erase", "E1", "--reason", "GDPR request 2026-17")
        expect(out.startswith("{\"seq\":"), "erase prints the seq: %r" % out)
        expect_eq(key_of("E1"), None, "E1's key after the erase")
        settle()
        hist = cli.lines("history", "E1")
        expect_eq(hist[-1]["current"]["stage"], "erased", "stage")
        for r in hist[:-1]:
            d = r.get("data") or {}
            for k in ("email", "name", "phone"):
                if k in d:
                    expect_eq(d[k], "[erased]", "seq %d data.%s" % (r["seq"], k))
        first = hist[0]["data"]
        expect_eq((first["title"], first["source"], first["campaign"], first["email_domain"]),
                  ("CTO", "ads", "spring", "corpmail-unique.example"), "clear fields stay")
        expect_eq(cli.lines("history", "E2")[0]["data"]["email"], "pat@freemail.example",
                  "another lead stays readable")
    res.run("funnel erase: E1's values read as \"[erased]\" everywhere, others intact", erase)

    def scans_after():
        expect_eq(scan([daemon.data] + views, NEEDLES + [st["key"]]), [],
                  "personal values or E1's key on disk")
        out = json.loads(cli.run("verify"))
        expect_eq(out["ok"], True, "verify")
    res.run("after the erase: neither the values nor the key on disk; verify passes",
            scans_after)

    def numbers_survive():
        after = {n: services["metrics"].ok("report", n)
                 for n in ("attribution", "conversion", "summary")}
        for n in ("attribution", "conversion"):
            got, want = json.loads(after[n]), json.loads(st["metrics"][n])
            # the checkpoint moved past the erase; nothing else may
            got.pop("checkpoint", None)
            want.pop("checkpoint", None)
            expect_eq(got, want, "report %s" % n)
        got, want = json.loads(after["summary"]), json.loads(st["metrics"]["summary"])
        # the erase is itself a stage entry (METRICS.md, Erasure): the lead
        # now sits in `erased`; every other figure stays
        for k in ("conversion", "velocity", "followup", "closed_loop", "attribution"):
            expect_eq(got[k], want[k], "summary %s" % k)
        expect_eq(got["funnel"]["by_source"], want["funnel"]["by_source"], "by_source")
        entered = lambda rep: {s["stage"]: s["entered"] for s in rep["funnel"]["stages"]
                               if s["stage"] != "erased"}
        expect_eq(entered(got), entered(want), "stage entries")
        att = json.loads(after["attribution"])["attribution"]
        expect_eq((att["revenue"], att["won"]), (4800, 1), "revenue of the erased lead's deal")
    res.run("attribution, conversion and summary are the same before and after the erase",
            numbers_survive)

    def rebuild_same():
        for name, s in services.items():
            live = s.digest()
            s.ok("--rebuild", "--until-head")
            expect_eq(s.digest(), live, "%s digest after --rebuild" % name)
        expect_eq(scan(views, NEEDLES), [], "personal values in the rebuilt views")
    res.run("every view rebuilt from seq 1 has the live view's digest", rebuild_same)

    def recapture():
        cli.run("publish", "--type", "lead.captured", "--lead", "E1",
                "--data", json.dumps({"email": "zelda.new@other.example", "country": "DE"}))
        k = key_of("E1")
        expect(k is not None and k != st["key"], "a fresh key")
        hist = cli.lines("history", "E1")
        emails = [r["data"]["email"] for r in hist[:-1] if "email" in (r.get("data") or {})]
        expect_eq(emails, ["[erased]", "zelda.new@other.example"], "old erased, new clear")
        settle()
        expect_eq(scan([daemon.data] + views, NEEDLES + [st["key"]]), [], "old data on disk")
    res.run("a capture after the erasure: a fresh key, nothing old comes back", recapture)

    def backup_wrapped():
        dest = os.path.join(daemon.dir, "backup")
        cli.run("backup", "--data", daemon.data, dest)
        expect(os.path.exists(os.path.join(dest, "keys.dat")), "keys.dat in the backup")
        expect_eq(scan([dest], NEEDLES + [st["key"], key_of("E1")]), [],
                  "clear values or clear keys in the backup")
        expect_eq(scan([dest], [open(mk, "rb").read().strip(),
                                bytes.fromhex(open(mk).read().strip())]), [],
                  "the master key in the backup")
        expect_eq(os.stat(os.path.join(dest, "keys.dat")).st_mode & 0o777, 0o600, "mode")
    res.run("a backup holds keys.dat wrapped only, never the master key", backup_wrapped)

    q.close(0)


def shred_file(seq, slots):
    """keys.shred as vault.h lays it out: magic, u64 seq, u32 n, (u32 slot, tag)*n."""
    body = b"".join(struct.pack("<I", i) + tag for i, tag in slots)
    return b"FUNNELSHRED1" + struct.pack("<QI", seq, len(slots)) + body


def run_shred_recovery(res, ctx, mk):
    """A stop between the commit of lead.erased and the zeroing of its key
    leaves keys.shred: the next start finishes the erasure when the log
    holds the commit, and drops the file when it does not."""
    top = tempfile.mkdtemp(prefix="funnel-erasure-shred-")
    data = os.path.join(top, "data")
    args = ["--master-key", mk]

    def key_of(d, lead):
        q = connect(ctx, zmq.DEALER, d.endpoints["query"])
        try:
            q.send(msgpack.packb({"op": "key", "rid": 1, "lead": lead}))
            return msgpack.unpackb(q.recv(), raw=False)["key"]
        finally:
            q.close(0)

    def start():
        d = start_daemon(res, FUNNELD, prefix="funnel-erasure-shred-", data=data,
                         extra_args=args)
        expect(d is not None, "funneld started on " + data)
        return d

    def check():
        d = start()
        try:
            cli = Cli(d)
            cli.run("publish", "--type", "lead.captured", "--lead", "S1",
                    "--data", json.dumps({"email": "s1@shred.example"}))
            cli.run("publish", "--type", "lead.captured", "--lead", "S2",
                    "--data", json.dumps({"email": "s2@shred.example"}))
            k1, k2 = key_of(d, "S1"), key_of(d, "S2")
            expect(k1 is not None and k2 is not None, "keys made")
        finally:
            d.close()
        with open(os.path.join(data, "keys.dat"), "rb") as f:
            blob = f.read()
        tags = [blob[64 + 96 * i: 64 + 96 * i + 16] for i in range(2)]
        # a shred whose commit (seq 3) never happened: dropped, keys kept
        with open(os.path.join(data, "keys.shred"), "wb") as f:
            f.write(shred_file(3, [(0, tags[0])]))
        d = start()
        try:
            expect_eq((key_of(d, "S1"), key_of(d, "S2")), (k1, k2), "keys after a void shred")
        finally:
            d.close()
        expect_eq(os.path.getsize(os.path.join(data, "keys.shred")), 0, "keys.shred emptied")
        # a shred whose commit (seq 2) is in the log: finished at start
        with open(os.path.join(data, "keys.shred"), "wb") as f:
            f.write(shred_file(2, [(0, tags[0])]))
        d = start()
        try:
            expect_eq((key_of(d, "S1"), key_of(d, "S2")), (None, k2), "S1's key destroyed")
        finally:
            d.close()
        with open(os.path.join(data, "keys.dat"), "rb") as f:
            blob = f.read()
        expect_eq(blob[64:64 + 96], bytes(96), "slot 0 zeroed")
        expect(k1 not in blob, "S1's key not in keys.dat")
    try:
        res.run("keys.shred: a start finishes an interrupted erasure, or drops a void one",
                check)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def run_sealed_ahead(res, ctx, mk):
    """The receiver seals an event ahead under the key its lead has, or
    a candidate (vault.h); when that key is not the lead's by the time
    the writer applies the event, the writer seals it again."""
    d = None
    ing = q = None
    rid = [0]

    def publish(*requests):
        """Send every request before reading a reply, so that the receiver
        seals each ahead while the writer has not applied the one before;
        the replies, in order."""
        for evs in requests:
            rid[0] += 1
            ing.send(msgpack.packb({"op": "publish", "rid": rid[0], "events": evs}))
        return [msgpack.unpackb(ing.recv(), raw=False) for _ in requests]

    def key_of(lead):
        q.send(msgpack.packb({"op": "key", "rid": 1, "lead": lead}))
        return msgpack.unpackb(q.recv(), raw=False)["key"]

    def emails(lead):
        return [(r["type"], r["data"]["email"]) for r in Cli(d).lines("history", lead)
                if "email" in (r.get("data") or {})]

    def check():
        # a new lead's capture and a later event of it in one request: both
        # sealed ahead before either is applied, the later one under the
        # capture's candidate key, which becomes the lead's
        reps = publish([{"type": "lead.captured", "lead": "S1",
                         "data": {"email": "s1@ahead.example", "name": "Sam Ahead"}},
                        {"type": "lead.activity", "lead": "S1",
                         "data": {"kind": "call", "email": "s1.later@ahead.example"}}])
        expect(reps[0].get("ok") is True, "capture and activity stored: %r" % (reps[0],))
        expect_eq(emails("S1"), [("lead.captured", "s1@ahead.example"),
                                 ("lead.activity", "s1.later@ahead.example")],
                  "both values readable under the lead's one key")
        old = key_of("S1")
        # erased and captured again in one request: the capture was sealed
        # ahead under the key the erasure retires, so funneld seals it
        # again under a fresh key; the old values stay erased
        reps = publish([{"type": "lead.erased", "lead": "S1", "data": {"reason": "test"}},
                        {"type": "lead.captured", "lead": "S1",
                         "data": {"email": "s1.again@ahead.example"}}])
        expect(reps[0].get("ok") is True, "erasure and capture stored: %r" % (reps[0],))
        new = key_of("S1")
        expect(new is not None and new != old, "a fresh key for the new capture")
        expect_eq(emails("S1"), [("lead.captured", "[erased]"), ("lead.activity", "[erased]"),
                                 ("lead.captured", "s1.again@ahead.example")],
                  "old values erased, the new one readable")
        # a capture refused (its expected version is not the lead's) and a
        # capture of the same lead right behind it: the second is sealed
        # ahead under the first one's candidate, which never became the
        # lead's key, so funneld makes a key and seals it again
        reps = publish([{"type": "lead.captured", "lead": "S2", "expected_version": 5,
                         "data": {"email": "s2.refused@ahead.example"}}],
                       [{"type": "lead.captured", "lead": "S2",
                         "data": {"email": "s2@ahead.example"}}])
        expect_eq(reps[0].get("error"), "EVERSION", "the first is refused: %r" % (reps[0],))
        expect(reps[1].get("ok") is True, "the second stored: %r" % (reps[1],))
        expect(key_of("S2") is not None, "S2 has a key")
        expect_eq(emails("S2"), [("lead.captured", "s2@ahead.example")],
                  "the stored capture readable, the refused one nowhere")
    def counted():
        # the writer's stats line at the stop counts what it took ahead:
        # the first request's two events certainly (capture and activity
        # in one batch), the capture after the erasure certainly not
        for sock in (ing, q):
            sock.close(0)
        expect_eq(d.terminate(), 0, "funneld's exit status after SIGTERM")
        with open(os.path.join(d.dir, "funneld.log")) as f:
            lines = [l for l in f if "sealed ahead and taken" in l]
        expect(lines, "a writer stats line with the sealing ahead: %s" % d.log_tail())
        m = re.search(r"sealed ahead and taken (\d+), sealed again (\d+)", lines[-1])
        taken, again = int(m.group(1)), int(m.group(2))
        expect(taken >= 2 and again >= 1, "taken %d (want >= 2), sealed again %d (want >= 1)"
               % (taken, again))
    try:
        # FUNNELD_WRITER_STATS: the writer logs what it took of the sealing ahead
        os.environ["FUNNELD_WRITER_STATS"] = "1"
        try:
            d = start_daemon(res, FUNNELD, prefix="funnel-erasure-ahead-",
                             extra_args=["--master-key", mk, "--log-level", "info"])
        finally:
            del os.environ["FUNNELD_WRITER_STATS"]
        if d is None:
            return
        ing = connect(ctx, zmq.DEALER, d.endpoints["ingest"])
        q = connect(ctx, zmq.DEALER, d.endpoints["query"])
        res.run("sealed ahead under a key that is not the lead's when applied (a capture in "
                "the same request, an erasure before it, a refused capture before it): sealed "
                "again; every stored value readable, the erased ones not", check)
        res.run("the writer took the sealing ahead where the key was the lead's, and sealed "
                "again where it was not (its stats line at the stop)", counted)
        ing = q = None
    finally:
        for sock in (ing, q):
            if sock is not None:
                sock.close(0)
        if d is not None:
            d.close()


def run_pipelined_groups(res, ctx, mk):
    """Groups of many new leads, large enough that each is flushed while
    the next is applied and its keys prepared, with erasures among them
    (a group that erases keys is finished before the next): after a
    kill -9, every acknowledged capture's lead has its key (read back
    from keys.dat), and each acknowledged erasure's lead has none."""
    top = tempfile.mkdtemp(prefix="funnel-erasure-pipe-")
    data = os.path.join(top, "data")
    producers, rounds, per = 4, 40, 100

    def key_of(q, lead):
        q.send(msgpack.packb({"op": "key", "rid": 1, "lead": lead}))
        return msgpack.unpackb(q.recv(), raw=False)["key"]

    def check():
        d = start_daemon(res, FUNNELD, prefix="funnel-erasure-pipe-", data=data,
                         extra_args=["--master-key", mk])
        expect(d is not None, "funneld started on " + data)
        socks, sent, acked, erased = [], {}, [], []
        rid = [0]

        def send(p, r):
            """Producer p's request r: 100 captures; every third of
            producer 0's also erases a lead it captured before (in order
            on its connection), so some groups erase keys and most not."""
            leads = ["P%d-%d-%d" % (p, r, i) for i in range(per)]
            evs = [{"type": "lead.captured", "lead": lead, "id": "c-" + lead,
                    "data": {"email": lead.lower() + "@pipe.example",
                             "name": "Name " + lead}} for lead in leads]
            rid[0] += 1
            socks[p].send(msgpack.packb({"op": "publish", "rid": rid[0], "events": evs}))
            sent[rid[0]] = ("captured", leads)
            if p == 0 and r % 3 == 2:
                lead = "P0-%d-7" % (r - 1)
                rid[0] += 1
                socks[p].send(msgpack.packb({"op": "publish", "rid": rid[0], "events": [
                    {"type": "lead.erased", "lead": lead, "id": "e-" + lead,
                     "data": {"reason": "pipelined erasure test"}}]}))
                sent[rid[0]] = ("erased", [lead])
        try:
            socks = [connect(ctx, zmq.DEALER, d.endpoints["ingest"]) for _ in range(producers)]
            # two requests in flight per producer: many groups of a few
            # requests each, rather than one group of everything
            nxt = [2] * producers
            for p in range(producers):
                send(p, 0)
                send(p, 1)
            poller = zmq.Poller()
            for s in socks:
                poller.register(s, zmq.POLLIN)
            while len(acked) + len(erased) < sum(len(v[1]) for v in sent.values()) or \
                    min(nxt) < rounds:
                ready = dict(poller.poll(30000))
                expect(ready, "an ack within 30 s")
                for p, s in enumerate(socks):
                    if s not in ready:
                        continue
                    rep = msgpack.unpackb(s.recv(), raw=False)
                    expect(rep.get("ok") is True, "publish refused: %r" % (rep,))
                    kind, leads = sent[rep["rid"]]
                    (acked if kind == "captured" else erased).extend(leads)
                    if kind == "captured" and nxt[p] < rounds:
                        send(p, nxt[p])
                        nxt[p] += 1
        finally:
            for s in socks:
                s.close(0)
            d.close()   # SIGKILL
        expect_eq(len(acked), producers * rounds * per, "captures acknowledged")
        expect_eq(len(erased), len([r for r in range(rounds) if r % 3 == 2]),
                  "erasures acknowledged")
        d = start_daemon(res, FUNNELD, prefix="funnel-erasure-pipe-", data=data,
                         extra_args=["--master-key", mk])
        expect(d is not None, "funneld restarted on " + data)
        q = connect(ctx, zmq.DEALER, d.endpoints["query"])
        try:
            gone = set(erased)
            missing = [lead for lead in acked if lead not in gone and key_of(q, lead) is None]
            expect_eq(missing[:5], [], "acknowledged captures without a key after kill -9")
            kept = [lead for lead in erased if key_of(q, lead) is not None]
            expect_eq(kept, [], "erased leads whose key is still there")
            hist = Cli(d).lines("history", "P3-39-99")
            expect_eq(hist[0]["data"]["email"], "p3-39-99@pipe.example", "history: email")
        finally:
            q.close(0)
            d.close()
    try:
        res.run("pipelined groups of new leads with erasures among them: every acknowledged "
                "key survives a kill -9, every erased one is gone", check)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def run_finish_order(res, ctx, mk):
    """A group that erases a key (B) applied while the flush of the
    group before (A, no erasure) still runs: the erased key is zeroed in
    keys.dat only once B's own journal entry is written and flushed,
    never when A is finished (a power loss before B's flush would leave
    the lead unerased in the log with its key gone).  funneld runs under
    tests/crash/shim.c with slow journal flushes; A is a request of
    GROUP_MAX_EVENTS captures (a group of its own), B a lead.erased and
    some captures sent right after it (the next group)."""
    top = tempfile.mkdtemp(prefix="funnel-erasure-order-")

    def capture(lead):
        return {"type": "lead.captured", "lead": lead, "id": "c-" + lead,
                "data": {"email": lead.lower() + "@order.example", "name": "Name " + lead}}

    def check():
        proc, eps = start_shimmed(FUNNELD, SHIM, top, ["--master-key", mk, "--journal-size", "16M"],
                                  CRASH_SYNC_ONLY="journal", CRASH_SYNC_DELAY_MS="300")
        s = connect(ctx, zmq.DEALER, eps["ingest"])
        s.setsockopt(zmq.RCVTIMEO, 20000)
        try:
            s.send(msgpack.packb({"op": "publish", "rid": 1, "events": [capture("ORD-E")]}))
            rep = msgpack.unpackb(s.recv(), raw=False)
            expect(rep.get("ok") is True, "capture of ORD-E: %r" % (rep,))
            # idle: the tail is checkpointed (store.h), so A's starts a new
            # one, too young for a checkpoint to finish A before B
            time.sleep(0.5)
            s.send(msgpack.packb({"op": "publish", "rid": 2,
                                  "events": [capture("ORD-A-%d" % i) for i in range(4096)]}))
            s.send(msgpack.packb({"op": "publish", "rid": 3, "events": [
                {"type": "lead.erased", "lead": "ORD-E", "id": "e-ORD-E",
                 "data": {"reason": "finish order test"}}] +
                [capture("ORD-B-%d" % i) for i in range(99)]}))
            for _ in range(2):
                rep = msgpack.unpackb(s.recv(), raw=False)
                expect(rep.get("ok") is True, "publish refused: %r" % (rep,))
        except zmq.Again:
            raise CheckFailed("no reply within 20 s")
        finally:
            s.close(0)
            stop_proc(proc)
        ops = read_trace(os.path.join(top, "trace", "ops"))
        inos = {}
        for o in ops:
            if o.kind == OP_OPEN:
                inos.setdefault(os.path.basename(o.data.rstrip(b"\0").decode()), set()).add(o.ino)
        journal, keys = inos.get("journal", set()), inos.get("keys.dat", set())
        wa = [i for i, o in enumerate(ops)
              if o.kind == OP_WRITE and o.ino in journal and b"ORD-A-0" in o.data]
        wb = [i for i, o in enumerate(ops)
              if o.kind == OP_WRITE and o.ino in journal and b"e-ORD-E" in o.data]
        expect(len(wa) == 1 and len(wb) == 1 and wa[0] != wb[0],
               "A and B in journal entries of their own: %r %r" % (wa, wb))
        zeroed = [i for i, o in enumerate(ops)
                  if o.kind == OP_WRITE and o.ino in keys and o.data == bytes(96)]
        expect(len(zeroed) == 1, "one slot zeroed in keys.dat: %r" % (zeroed,))
        flushed = [i for i, o in enumerate(ops)
                   if o.kind == OP_SYNC and o.ino in journal and wb[0] < i < zeroed[0]]
        expect(flushed, "ORD-E's key zeroed (op %d) before B's journal entry (op %d) was "
               "flushed" % (zeroed[0], wb[0]))
    try:
        res.run("a group that erases keys, applied beside the flush of the group before: "
                "its keys are zeroed only after its own journal flush", check)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def run_wrong_master(res, mk):
    """keys.dat made under one master key refuses another."""
    top = tempfile.mkdtemp(prefix="funnel-erasure-mk2-")
    data = os.path.join(top, "data")

    def check():
        first = subprocess.run([FUNNELD, "--data", data, "--master-key", mk, "--help"],
                               capture_output=True, timeout=30)
        expect_eq(first.returncode, 0, "--help")
        d = start_daemon(res, FUNNELD, prefix="funnel-erasure-mk2-", data=data,
                         extra_args=["--master-key", mk])
        expect(d is not None, "first start")
        d.close()
        other = os.path.join(top, "other.key")
        with open(other, "wb") as f:
            f.write(os.urandom(32))
        p = subprocess.run([FUNNELD, "--data", data, "--master-key", other,
                            "--ingest", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                            "--query", "tcp://127.0.0.1:*"],
                           capture_output=True, text=True, timeout=30)
        expect_eq(p.returncode, 1, "exit status under another master key")
        expect("another master key" in p.stderr, "message: %r" % p.stderr[-300:])
    try:
        res.run("funneld refuses a key file made under another master key", check)
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
