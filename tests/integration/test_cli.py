#!/usr/bin/python3
"""
tests/integration/test_cli.py - the `funnel` command-line tool, end to end,
against a real funneld: publish (flags and JSON lines), replay, tail,
history, verify, status, usage errors and a daemon that is not there.

The log is read back independently with pyzmq and msgpack (the replay and
status ops of proto/PROTOCOL.md) to check what the CLI prints.

Run with Debian's /usr/bin/python3 (python3-zmq, python3-msgpack):

    BUILD=build FUNNELD=build/bin/funneld /usr/bin/python3 tests/integration/test_cli.py

The CLI is $BUILD/bin/funnel, next to funneld.  Prints one line per check,
"ok - name" or "not ok - name: reason", then "N passed, M failed"; exits 1
if any check failed.  Every subprocess and every receive is bounded.
"""
import datetime
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import msgpack
import zmq

from funnel_testlib import (REPO, CheckFailed, Results, connect, expect, expect_eq,
                            expect_in, replay_all, start_daemon)

CMD_TIMEOUT_S = 60         # every funnel run is bounded by this
ZERO_HEX = "0" * 64
EJSON_CODE = 70           # FUNNEL_EJSON, include/funnel/error.h


class Query:
    """A DEALER on the query endpoint: replay and status, per PROTOCOL.md."""

    def __init__(self, ctx, ep):
        self.rid = 0
        self.sock = connect(ctx, zmq.DEALER, ep)

    def call(self, req):
        self.rid += 1
        req = dict(req, rid=self.rid)
        self.sock.send(msgpack.packb(req))
        rep = msgpack.unpackb(self.sock.recv())
        expect_eq(rep.get("rid"), self.rid, "echoed rid")
        expect(rep.get("ok") is True, "query refused: %r" % (rep,))
        return rep

    def status(self):
        return self.call({"op": "status"})

    def replay_all(self, **params):
        """The stored bytes of every record of a range."""
        return replay_all(lambda **p: self.call(dict(p, op="replay")), **params)

    def records(self, **params):
        return [msgpack.unpackb(r) for r in self.replay_all(**params)]

    def close(self):
        self.sock.close(0)


def free_port():
    """A loopback port in 20000-32000 that nothing listens on now: below
    the ephemeral range, so a client reconnecting to it cannot connect to
    itself."""
    for port in range(23731, 32000, 97):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port in 20000-32000")


def rfc3339_ms(ns):
    """What the CLI prints as "time": UTC with milliseconds."""
    t = datetime.datetime.fromtimestamp(ns // 10**9, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (ns % 10**9 // 10**6)


def rfc3339_ns(ns, offset_min=0):
    """ns as RFC 3339 with nanoseconds, in a zone offset_min east of UTC."""
    tz = datetime.timezone(datetime.timedelta(minutes=offset_min))
    t = datetime.datetime.fromtimestamp(ns // 10**9, tz)
    if offset_min == 0:
        zone = "Z"
    else:
        sign = "+" if offset_min > 0 else "-"
        zone = "%s%02d:%02d" % (sign, abs(offset_min) // 60, abs(offset_min) % 60)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%09d" % (ns % 10**9) + zone


class Cli:
    """Runs $BUILD/bin/funnel with the daemon's endpoints in its environment."""

    def __init__(self, binary, eps):
        self.binary = binary
        self.env = dict(os.environ)
        self.env["FUNNEL_INGEST"] = eps["ingest"]
        self.env["FUNNEL_PUBLISH"] = eps["publish"]
        self.env["FUNNEL_QUERY"] = eps["query"]

    def run(self, *args, stdin=None, timeout=CMD_TIMEOUT_S, env=None):
        """(exit status, stdout, stderr) of one run."""
        p = subprocess.run([self.binary] + list(args), input=stdin, capture_output=True,
                           text=True, timeout=timeout, env=env or self.env)
        return p.returncode, p.stdout, p.stderr

    def ok(self, *args, stdin=None):
        """Run, expect exit 0 and nothing on stderr; return stdout."""
        rc, out, err = self.run(*args, stdin=stdin)
        if rc != 0 or err:
            raise CheckFailed("funnel %s: exit %d, stderr %r" % (" ".join(args), rc, err))
        return out

    def json_lines(self, *args, stdin=None):
        out = self.ok(*args, stdin=stdin)
        lines = out.splitlines()
        objs = []
        for i, line in enumerate(lines):
            try:
                objs.append(json.loads(line))
            except ValueError as e:
                raise CheckFailed("line %d of funnel %s is not JSON (%s): %r"
                                  % (i + 1, " ".join(args), e, line))
        return objs

    def popen(self, *args):
        return subprocess.Popen([self.binary] + list(args), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)


class LineReader:
    """Lines of a child's stdout, each read with a deadline."""

    def __init__(self, proc):
        self.proc = proc
        self.buf = b""

    def line(self, wait_s):
        deadline = time.monotonic() + wait_s
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckFailed("no output line within %.0f s (so far %r)" % (wait_s, self.buf))
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise CheckFailed("stdout closed (exit %r) with %r left"
                                      % (self.proc.poll(), self.buf))
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


def stop(proc):
    """Make sure a background funnel is gone; never leaves a process behind."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()


def wait_exit(proc, wait_s):
    """Exit status and stderr of a background funnel."""
    try:
        rc = proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        raise CheckFailed("funnel did not exit within %.0f s" % wait_s)
    return rc, proc.stderr.read().decode()


def record_json_matches(obj, rec, what):
    """A `--json` record line says what the stored record says."""
    expect_eq(obj["seq"], rec["seq"], what + " seq")
    expect_eq(obj["ts"], rec["ts"], what + " ts")
    expect_eq(obj["time"], rfc3339_ms(rec["ts"]), what + " time")
    expect_eq(obj["type"], rec["type"], what + " type")
    for k in ("lead", "id", "occurred_at", "cause", "producer", "stage", "version", "data"):
        expect_eq(obj.get(k), rec.get(k), "%s %s" % (what, k))
    expect_eq(obj["prev"], rec["prev"].hex(), what + " prev")
    expect_eq(obj["hash"], rec["hash"].hex(), what + " hash")
    order = ["seq", "ts", "time", "type", "lead", "id", "occurred_at", "cause", "producer",
             "stage", "version", "data", "prev", "hash"]
    keys = list(obj.keys())
    expect_eq(keys, [k for k in order if k in keys], what + " key order")


def run_checks(res, cli, q, daemon):
    eps = daemon.endpoints

    def head():
        st = q.status()
        return st["head"], st["head_hash"].hex()

    # --- version ---
    def version():
        out = cli.ok("--version")
        expect_eq(out, "funnel %s\n" % q.status()["version"], "--version output")
        expect_eq(cli.ok("-V"), out, "-V output")
    res.run("funnel --version prints the daemon's version", version)

    # --- publish from flags ---
    def publish_one():
        out = cli.ok("publish", "--human", "--type", "lead.captured", "--lead", "L-1",
                     "--id", "form-123",
                     "--data", '{"email":"ana@acme.example","source":"webinar"}')
        expect_eq(out, "seq 1\n", "output")
        recs = q.records()
        expect_eq(len(recs), 1, "records")
        r = recs[0]
        expect_eq((r["seq"], r["type"], r["lead"], r["id"], r["stage"], r["version"]),
                  (1, "lead.captured", "L-1", "form-123", "inquiry", 1), "record")
        expect_eq(r["data"], {"email": "ana@acme.example", "source": "webinar"}, "data")
    res.run("publish from flags prints 'seq 1'", publish_one)

    def publish_dup():
        before = head()
        # the same form again: same type, lead and data (keys in the same order)
        out = cli.ok("publish", "--human", "--type", "lead.captured", "--lead", "L-1",
                     "--id", "form-123",
                     "--data", '{"email":"ana@acme.example","source":"webinar"}')
        expect_eq(out, "seq 1 (duplicate)\n", "output")
        out = cli.ok("publish", "--json", "--type", "lead.captured", "--lead", "L-1",
                     "--id", "form-123",
                     "--data", '{"email": "ana@acme.example", "source": "webinar"}')
        expect_eq(json.loads(out), {"seq": 1, "dup": True}, "--json output")
        expect_eq(head(), before, "head and head hash after the duplicates")
    res.run("the same id again prints 'seq 1 (duplicate)' and stores nothing", publish_dup)

    def publish_id_conflict():
        before = head()
        # another lead's form under L-1's id: refused, not a silent duplicate
        for extra in ((), ("--batch", "10")):
            if extra:
                rc, out, err = cli.run("publish", *extra, stdin=json.dumps(
                    {"type": "lead.captured", "lead": "L-123", "id": "form-123",
                     "data": {"email": "ana@acme.example", "source": "webinar"}}) + "\n")
            else:
                rc, out, err = cli.run("publish", "--type", "lead.captured", "--lead", "L-123",
                                       "--id", "form-123", "--data",
                                       '{"email":"ana@acme.example","source":"webinar"}')
            expect_eq(rc, 1, "exit status %s" % (extra,))
            expect_eq(out, "", "stdout %s" % (extra,))
            expect("EIDCONFLICT (15)" in err and "already used by seq 1" in err and
                   "differs in lead" in err and "[field id]" in err, "message: %r" % err)
        # the same lead without the form's data is another event too
        rc, out, err = cli.run("publish", "--type", "lead.captured", "--lead", "L-1",
                               "--id", "form-123")
        expect_eq(rc, 1, "exit status without data")
        expect("differs in data" in err, "message: %r" % err)
        expect_eq(head(), before, "head and head hash after the refusals")
    res.run("the same id for another event is EIDCONFLICT naming the seq, exit 1, nothing "
            "stored", publish_id_conflict)

    def publish_cause_ahead():
        before = head()
        seq = before[0]
        for cause in (seq + 1, seq + 1000):
            rc, out, err = cli.run("publish", "--type", "x.derived", "--cause", str(cause),
                                   "--id", "cause-ahead-%d" % cause)
            expect_eq(rc, 1, "exit status with cause %d" % cause)
            expect("EVALUE" in err and "[field cause]" in err and
                   "cause %d is not an earlier record" % cause in err and
                   "would be seq %d" % (seq + 1) in err, "message: %r" % err)
        expect_eq(head(), before, "head and head hash after the refusals")
        # the id was not claimed by the refused event: a right cause stores it
        out = cli.ok("publish", "--json", "--type", "x.derived", "--cause", str(seq),
                     "--id", "cause-ahead-%d" % (seq + 1))
        expect_eq(json.loads(out)["seq"], seq + 1, "the event with an earlier cause")
    res.run("a cause that is not an earlier record (this seq or later) is EVALUE naming it; "
            "nothing stored, its id not taken", publish_cause_ahead)

    def publish_json_flags():
        h, _ = head()
        out = cli.ok("publish", "--json", "--type", "x.note", "--lead", "L-X",
                     "--occurred-at", "2026-01-02T03:04:05.5Z", "--cause", "1",
                     "--data", '{"n":18446744073709551615,"neg":-9223372036854775808,'
                               '"f":1.5,"s":"h\\u00e9llo \\u2603","a":[1,{"b":null}]}')
        expect_eq(json.loads(out), {"seq": h + 1, "dup": False}, "output")
        r = q.records(**{"from": h + 1})[0]
        expect_eq(r["occurred_at"], 1767323045500000000, "occurred_at")
        expect_eq(r["cause"], 1, "cause")
        expect_eq(r["data"], {"n": 2**64 - 1, "neg": -2**63, "f": 1.5, "s": "h\u00e9llo \u2603",
                              "a": [1, {"b": None}]}, "data")
        objs = cli.json_lines("replay", "--from", str(h + 1), "--to", str(h + 1))
        expect_eq(len(objs), 1, "replayed records")
        record_json_matches(objs[0], r, "replayed")
    res.run("publish --data keeps exact 64-bit integers, floats and unicode; "
            "--occurred-at and --cause are stored", publish_json_flags)

    # --- JSON lines on stdin ---
    def publish_batch():
        h, _ = head()
        lines = [
            {"type": "lead.captured", "lead": "L-2", "id": "b-1", "data": {"email": "b@x.example"}},
            {"type": "lead.activity", "lead": "L-2", "data": {"kind": "webinar"}},
            {"type": "lead.qualified", "lead": "L-2"},
            {"type": "lead.captured", "lead": "L-2", "id": "b-1",           # duplicate of line 1
             "data": {"email": "b@x.example"}},
            {"type": "lead.assigned", "lead": "L-2", "data": {"owner": "rep-ben"}},
            {"type": "lead.accepted", "lead": "L-2"},
            {"type": "x.tick", "data": {"i": 7}},
        ]
        text = "\n".join(json.dumps(e) for e in lines) + "\n\n"   # a blank line is no event
        objs = cli.json_lines("publish", "--batch", "3", "--json", stdin=text)
        want = [{"seq": h + 1, "dup": False}, {"seq": h + 2, "dup": False},
                {"seq": h + 3, "dup": False}, {"seq": h + 1, "dup": True},
                {"seq": h + 4, "dup": False}, {"seq": h + 5, "dup": False},
                {"seq": h + 6, "dup": False}]
        expect_eq(objs, want, "acks in input order")
        recs = q.records(**{"from": h + 1})
        expect_eq([(r["type"], r.get("lead"), r.get("stage")) for r in recs],
                  [("lead.captured", "L-2", "inquiry"), ("lead.activity", "L-2", "inquiry"),
                   ("lead.qualified", "L-2", "mql"), ("lead.assigned", "L-2", "mql"),
                   ("lead.accepted", "L-2", "sal"), ("x.tick", None, None)], "stored records")
        # human output of the same kind of input, one request per line
        h2, _ = head()
        out = cli.ok("publish", "--human", stdin='{"type":"x.a"}\n{"type":"x.b"}')
        expect_eq(out, "seq %d\nseq %d\n" % (h2 + 1, h2 + 2), "human output (no final newline)")
    res.run("publish --batch reads JSON lines and prints acks in input order", publish_batch)

    def publish_bad_line():
        text = ('{"type":"x.good","data":{"i":1}}\n'
                '{"type":"x.bad",\n'
                '{"type":"x.good","data":{"i":3}}\n'
                'not json at all\n'
                '{"type":"x.good","data":{"i":5}}\n')
        # a bad line refuses the whole request it is in, before anything is
        # sent: batch 1 stores lines 1, 3, 5; batch 2 requests (1,2) and
        # (3,4) are refused whole, (5) is stored; batch 10 stores nothing
        cases = {"1": ([1, 3, 5], ["", ""]),
                 "2": ([5], [" (request of lines 1-2 not sent)",
                             " (request of lines 3-4 not sent)"]),
                 "10": ([], [" (request of lines 1-5 not sent)", ""])}
        for batch, (stored, tails) in cases.items():
            h, _ = head()
            rc, out, err = cli.run("publish", "--json", "--batch", batch, stdin=text)
            expect_eq(rc, 1, "exit status (batch %s)" % batch)
            errs = err.splitlines()
            expect_eq(len(errs), 2, "error lines (batch %s): %r" % (batch, err))
            expect(errs[0].startswith("funnel: publish: line 2: EJSON"),
                   "first error names line 2: %r" % errs[0])
            expect(errs[1].startswith("funnel: publish: line 4: EJSON"),
                   "second error names line 4: %r" % errs[1])
            expect_in("byte", errs[1], "the error gives a position")
            for e, tail in zip(errs, tails):
                expect(e.endswith(tail) and (tail or "(request" not in e),
                       "batch %s: %r should end with %r" % (batch, e, tail))
            acks = [json.loads(x) for x in out.splitlines()]
            expect_eq(acks, [{"seq": h + i, "dup": False} for i in range(1, len(stored) + 1)],
                      "acks of the stored lines (batch %s)" % batch)
            recs = q.records(**{"from": h + 1})
            expect_eq([r["data"]["i"] for r in recs], stored, "stored lines (batch %s)" % batch)
    res.run("a bad JSON line is reported with its line number, exit 1, its request is "
            "refused whole and the other requests are stored", publish_bad_line)

    def publish_batch_refused_whole():
        # five lines, one atomic request, the middle line malformed: nothing is sent
        lines = ['{"type":"x.whole","data":{"i":%d}}' % i for i in range(1, 6)]
        lines[2] = '{"type":"x.whole","data":{"i":3}'
        before = head()
        rc, out, err = cli.run("publish", "--json", "--batch", "5", stdin="\n".join(lines) + "\n")
        expect_eq(rc, 1, "exit status")
        expect_eq(out, "", "no acks")
        expect(err.startswith("funnel: publish: line 3: EJSON (%d): " % EJSON_CODE),
               "stderr names line 3: %r" % err)
        expect_in("(request of lines 1-5 not sent)", err, "stderr")
        expect_eq(head(), before, "head after the refused batch")
        # a number JSON would store as +Inf refuses its batch too, naming line and field
        lines[2] = '{"type":"x.whole","data":{"big":1e999}}'
        rc, out, err = cli.run("publish", "--json", "--batch", "5", stdin="\n".join(lines) + "\n")
        expect_eq((rc, out), (1, ""), "exit status and stdout (1e999)")
        expect(err.startswith("funnel: publish: line 3: EJSON"), "stderr (1e999): %r" % err)
        expect_in("field data.big", err, "the field is named")
        expect_eq(head(), before, "head after the refused batch (1e999)")
    res.run("publish --batch: a malformed line refuses the whole batch before anything is sent",
            publish_batch_refused_whole)

    def publish_nul_and_nonfinite():
        h, _ = head()
        out = cli.ok("publish", "--json", "--type", "x.nul", "--data", '{"s":"a\\u0000b"}')
        expect_eq(json.loads(out), {"seq": h + 1, "dup": False}, "output")
        r = q.records(**{"from": h + 1})[0]
        expect_eq(r["data"], {"s": "a\x00b"}, "the string is stored whole, NUL included")
        objs = cli.json_lines("replay", "--from", str(h + 1), "--to", str(h + 1))
        expect_eq(objs[0]["data"], {"s": "a\x00b"}, "replay --json prints it whole")
        # the same on stdin
        out = cli.ok("publish", "--json", stdin='{"type":"x.nul","data":{"t":"\\u0000"}}\n')
        expect_eq(q.records(**{"from": h + 2})[0]["data"], {"t": "\x00"}, "stdin: stored whole")
        # a member name with U+0000 cannot be shown: refused, naming the field
        before = head()
        rc, out, err = cli.run("publish", "--type", "x.nul", "--data", '{"k\\u0000":1}')
        expect_eq(rc, 2, "exit status (name with U+0000)")
        expect_in("holds U+0000", err, "stderr")
        # numbers JSON would store as infinities are refused, naming the field
        for data, field in (('{"big":1e999}', "big"), ('{"a":[0,-1e400]}', "a[1]")):
            rc, out, err = cli.run("publish", "--type", "x.inf", "--data", data)
            expect_eq(rc, 2, "exit status for %s" % data)
            expect_in("--data: invalid JSON: the number", err, "stderr for %s" % data)
            expect_in("at field %s is out of the float64 range" % field, err, "field for %s" % data)
        expect_eq(head(), before, "nothing stored by the refusals")
        rc, out, err = cli.run("replay", "--help")
        expect_eq(rc, 0, "replay --help")
        for words in ("bin -> a lower-case hex string", "+-Inf floats -> null", "\\u0000"):
            expect_in(words, out, "replay --help documents the JSON mapping")
    res.run("publish keeps strings with U+0000 whole and refuses numbers that would be Inf",
            publish_nul_and_nonfinite)

    def publish_refused():
        before = head()
        rc, out, err = cli.run("publish", "--type", "deal.won", "--lead", "L-1")
        expect_eq(rc, 1, "exit status")
        expect_eq(out, "", "stdout")
        expect(err.startswith("funnel: publish: ETRANSITION (8): "), "stderr: %r" % err)
        expect_in("deal.won is not allowed for lead 'L-1' in stage inquiry", err, "message")
        expect_in("[field type]", err, "field")
        expect_eq(head(), before, "head and head hash after the refusal")
        st = json.loads(cli.ok("status", "--json"))
        expect_eq((st["head"], st["head_hash"]), before, "funnel status --json after the refusal")

        # the same on stdin: the line is named, the request is not stored
        rc, out, err = cli.run("publish", "--batch", "2", "--json",
                               stdin='{"type":"x.ok"}\n{"type":"deal.won","lead":"L-1"}\n')
        expect_eq(rc, 1, "stdin exit status")
        expect_eq(out, "", "stdin stdout")
        expect(err.startswith("funnel: publish: line 2: ETRANSITION (8): "), "stdin stderr: %r" % err)
        expect_in("request of lines 1-2 not stored", err, "stdin stderr")
        expect_eq(head(), before, "head after the refused request")

        # optimistic concurrency
        rc, out, err = cli.run("publish", "--type", "lead.contacted", "--lead", "L-1",
                               "--expected-version", "7")
        expect_eq(rc, 1, "EVERSION exit status")
        expect(err.startswith("funnel: publish: EVERSION (9): "), "EVERSION stderr: %r" % err)
        expect_eq(head(), before, "head after EVERSION")
    res.run("an event the daemon refuses: code and message on stderr, exit 1, log unchanged",
            publish_refused)

    # --- usage errors ---
    usage_cases = [
        [],
        ["bogus"],
        ["--bogus", "status"],
        ["--timeout", "0", "status"],
        ["--timeout"],
        ["publish", "--batch", "0"],
        ["publish", "--batch", "10001"],
        ["publish", "--type", "x.a", "--batch", "2"],
        ["publish", "--lead", "L-1"],
        ["publish", "--type", "x.a", "--data", "{not json"],
        ["publish", "--type", "x.a", "--cause", "0"],
        ["publish", "--type", "x.a", "--occurred-at", "yesterday"],
        ["publish", "--type", "x.a", "--occurred-at", "1796395363"],   # seconds, not ns
        ["replay", "--since", "1796395363000"],                           # ms, not ns
        ["publish", "--type", "x.a", "extra"],
        ["publish", "--type"],
        ["replay", "--from", "0"],
        ["replay", "--from", "x"],
        ["replay", "--from", "5", "--to", "2"],
        ["replay", "--since", "2026-12-05T00:00:00Z", "--until", "2026-12-01T00:00:00Z"],
        ["--query", "tcp://127.0.0.1:99999", "status"],    # ZeroMQ would wrap it to 34463
        ["--ingest", "udp://127.0.0.1:7400", "publish", "--type", "x.a"],
        ["replay", "--since", "2026-13-01T00:00:00Z"],
        ["replay", "--count", "0"],
        ["replay", "--bogus"],
        ["tail", "--from", "1", "--since", "1h"],
        ["tail", "--count", "-1"],
        ["tail", "--timeout-idle", "0"],
        ["history"],
        ["history", "L-1", "L-2"],
        ["verify", "--to", "1", "--from", "2"],
        ["verify", "extra"],
        ["status", "extra"],
        ["erase", "L-1"],
        ["erase", "L-1", "--reason", "x" * 129],   # erase --help: at most 128 bytes
    ]

    def usage():
        before = head()
        for args in usage_cases:
            rc, out, err = cli.run(*args)
            expect_eq(rc, 2, "exit status of funnel %s" % " ".join(args))
            # "funnel: ...: why" and a pointer to --help, or the usage text
            expect(err.startswith("funnel: ") or err.startswith("usage: funnel"),
                   "funnel %s: stderr %r" % (" ".join(args), err))
            expect_eq(out, "", "stdout of funnel %s" % " ".join(args))
        expect_eq(head(), before, "head after the usage errors")
        for args in (["--help"], ["publish", "--help"], ["replay", "-h"], ["help", "tail"]):
            out = cli.ok(*args)
            expect(out.startswith("usage: funnel"), "funnel %s: %r" % (" ".join(args), out[:60]))
    res.run("usage errors exit 2 and change nothing; --help exits 0", usage)

    def value_forgotten():
        # an option whose value was forgotten does not take the next option as it
        for args, opt, nxt in ((["replay", "--from", "--json"], "--from", "--json"),
                               (["--query", "--json", "status"], "--query", "--json"),
                               (["publish", "--type", "--lead", "L-1"], "--type", "--lead")):
            rc, out, err = cli.run(*args)
            expect_eq(rc, 2, "exit status of funnel %s" % " ".join(args))
            expect_in("option '%s' needs a value (it is followed by the option '%s')" % (opt, nxt),
                      err, "funnel %s" % " ".join(args))
        scoring = os.path.join(REPO, os.environ.get("BUILD", "build"), "bin", "funnel-scoring")
        p = subprocess.run([scoring, "--query", "tcp://127.0.0.1:99999", "check", "funnel.yaml"],
                           capture_output=True, text=True, timeout=CMD_TIMEOUT_S, cwd=REPO)
        expect_eq(p.returncode, 2, "funnel-scoring --query with port 99999")
        expect_in("the query endpoint tcp://127.0.0.1:99999: the port must be a number from 1 "
                  "to 65535", p.stderr, "funnel-scoring names the endpoint")
        p = subprocess.run([scoring, "--view", "--rules", "funnel.yaml", "check"],
                           capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
        expect_eq(p.returncode, 2, "funnel-scoring --view --rules ...")
        expect_in("option '--view' needs a value (it is followed by the option '--rules')",
                  p.stderr, "funnel-scoring's message")
    res.run("an option followed by another option instead of its value is a usage error "
            "naming both (funnel, the services); so is a malformed endpoint", value_forgotten)

    def help_options_together():
        # the global options are one list: --version among them, the note on
        # spelling after the whole list, not inside it
        lines = cli.ok("--help").split("\n")
        opts = [i for i, l in enumerate(lines) if l.startswith("  --")]
        note = [i for i, l in enumerate(lines) if l.startswith("Long options are spelled")]
        expect_eq(len(note), 1, "one note on spelling")
        expect(any(lines[i].startswith("  --version") for i in opts), "--version listed")
        expect_eq([i for i in opts if i > note[0]], [], "options listed after the note")
    res.run("funnel --help lists every global option before the note on spelling",
            help_options_together)

    # --- replay ---
    def replay_json():
        recs = q.records()
        objs = cli.json_lines("replay", "--json")
        expect_eq(len(objs), len(recs), "records")
        for obj, r in zip(objs, recs):
            record_json_matches(obj, r, "seq %d" % r["seq"])
        expect_eq([o["seq"] for o in objs], list(range(1, len(recs) + 1)), "seqs")
        expect_eq(objs[0]["prev"], ZERO_HEX, "prev of seq 1")
        for a, b in zip(objs, objs[1:]):
            expect_eq(b["prev"], a["hash"], "prev of seq %d" % b["seq"])
        # the default format when stdout is not a terminal is JSON
        expect_eq(cli.json_lines("replay"), objs, "replay without --json")
    res.run("replay --json: one JSON object per record, every field as stored", replay_json)

    def replay_range():
        h, _ = head()
        objs = cli.json_lines("replay", "--from", "2", "--to", "4")
        expect_eq([o["seq"] for o in objs], [2, 3, 4], "--from 2 --to 4")
        objs = cli.json_lines("replay", "--from", str(h - 1))
        expect_eq([o["seq"] for o in objs], [h - 1, h], "--from head-1")
        objs = cli.json_lines("replay", "--to", "2")
        expect_eq([o["seq"] for o in objs], [1, 2], "--to 2")
        expect_eq(cli.ok("replay", "--from", str(h + 1)), "", "--from past the head")
        objs = cli.json_lines("replay", "--from", "2", "--count", "3")
        expect_eq([o["seq"] for o in objs], [2, 3, 4], "--from 2 --count 3")
    res.run("replay --from/--to/--count print exactly that range", replay_range)

    def replay_filters():
        recs = q.records()
        objs = cli.json_lines("replay", "--lead", "L-2")
        want = [r["seq"] for r in recs if r.get("lead") == "L-2"]
        expect(len(want) >= 5, "L-2 has events")
        expect_eq([o["seq"] for o in objs], want, "--lead L-2")
        expect(all(o["lead"] == "L-2" for o in objs), "leads")
        objs = cli.json_lines("replay", "--type", "lead.")
        want = [r["seq"] for r in recs if r["type"].startswith("lead.")]
        expect_eq([o["seq"] for o in objs], want, "--type lead.")
        objs = cli.json_lines("replay", "--type", "x.good")
        want = [r["seq"] for r in recs if r["type"] == "x.good"]
        expect_eq([o["seq"] for o in objs], want, "--type x.good")
        objs = cli.json_lines("replay", "--lead", "L-2", "--type", "lead.a")
        want = [r["seq"] for r in recs if r.get("lead") == "L-2" and r["type"].startswith("lead.a")]
        expect_eq([o["seq"] for o in objs], want, "--lead L-2 --type lead.a")
        expect_eq(len(want), 3, "activity, assigned, accepted")
        expect_eq(cli.ok("replay", "--lead", "nobody"), "", "an unknown lead")
    res.run("replay --lead and --type filter like the daemon's replay", replay_filters)

    def replay_raw():
        raw = q.replay_all()
        out = cli.ok("replay", "--raw")
        expect_eq(out.splitlines(), [r.hex() for r in raw], "--raw lines")
        out = cli.ok("replay", "--raw", "--from", "3", "--to", "5")
        expect_eq(out.splitlines(), [r.hex() for r in q.replay_all(**{"from": 3, "to": 5})],
                  "--raw --from 3 --to 5")
        out = cli.ok("replay", "--raw", "--lead", "L-2", "--type", "lead.")
        expect_eq(out.splitlines(), [r.hex() for r in q.replay_all(lead="L-2", type="lead.")],
                  "--raw --lead L-2 --type lead.")
    res.run("replay --raw prints the exact bytes the query endpoint replays", replay_raw)

    def replay_human():
        recs = q.records(**{"from": 1, "to": 2})
        out = cli.ok("replay", "--human", "--from", "1", "--to", "2")
        lines = out.splitlines()
        expect_eq(len(lines), 2, "lines")
        r = recs[0]
        expect_eq(lines[0], '#1  %s  lead.captured  L-1  [inquiry v1]  '
                  '{"email":"ana@acme.example","source":"webinar"}' % rfc3339_ms(r["ts"]),
                  "first line")
    res.run("replay --human: one line per record", replay_human)

    def human_long_string():
        text = "rules: " + "é" * 150 + "x" * 100           # 407 bytes
        out = cli.ok("publish", "--json", "--type", "x.long", "--data",
                     json.dumps({"text": text, "n": 1}))
        seq = json.loads(out)["seq"]
        line = cli.ok("replay", "--human", "--from", str(seq), "--to", str(seq)).strip()
        shown = json.loads(line[line.index("{"):])
        expect_eq(shown["n"], 1, "the short value whole")
        expect_eq(shown["text"], text.encode()[:200].decode("utf-8", "ignore") + "... (407 bytes)",
                  "a string over 200 bytes: its start, whole characters, and its size")
        full = json.loads(cli.ok("replay", "--json", "--from", str(seq), "--to", str(seq)))
        expect_eq(full["data"]["text"], text, "--json keeps every byte")
    res.run("replay --human shortens a string over 200 bytes to its start and size; "
            "--json keeps it whole", human_long_string)

    def replay_since():
        recs = q.records()
        # a ts in the middle of the log, at the start of its commit group
        mid = recs[len(recs) // 2]["ts"]
        want = [r["seq"] for r in recs if r["ts"] >= mid]
        expect(0 < len(want) < len(recs), "the middle splits the log")
        for since in (rfc3339_ns(mid), rfc3339_ns(mid, 90), rfc3339_ns(mid, -330), str(mid)):
            objs = cli.json_lines("replay", "--since", since)
            expect_eq([o["seq"] for o in objs], want, "--since %s" % since)
        objs = cli.json_lines("replay", "--until", rfc3339_ns(mid))
        expect_eq([o["seq"] for o in objs], [r["seq"] for r in recs if r["ts"] < mid],
                  "--until")
        objs = cli.json_lines("replay", "--since", "1h")
        expect_eq([o["seq"] for o in objs], [r["seq"] for r in recs], "--since 1h")
        objs = cli.json_lines("replay", "--since", "2000-01-01")
        expect_eq(len(objs), len(recs), "--since a bare date")
        expect_eq(cli.ok("replay", "--since", "2200-01-01T00:00:00Z"), "", "--since the future")

        # an age excludes what is older: wait, publish a marker, ask for 2s
        time.sleep(2.5)
        h, _ = head()
        cli.ok("publish", "--type", "x.marker")
        objs = cli.json_lines("replay", "--since", "2s")
        expect_eq([(o["seq"], o["type"]) for o in objs], [(h + 1, "x.marker")], "--since 2s")
    res.run("replay --since with an RFC 3339 time, ns, a date and an age", replay_since)

    # --- tail ---
    def tail_from_history():
        h, _ = head()
        proc = cli.popen("tail", "--json", "--from", "1", "--count", str(h + 3))
        try:
            rd = LineReader(proc)
            seen = [json.loads(rd.line(30))["seq"] for _ in range(h)]
            expect_eq(seen, list(range(1, h + 1)), "history part")
            expect(proc.poll() is None, "tail exited before the live part")
            for i in range(3):
                cli.ok("publish", "--type", "x.live", "--data", '{"i":%d}' % i)
            live = [json.loads(rd.line(30)) for _ in range(3)]
            expect_eq([(o["seq"], o["type"], o["data"]["i"]) for o in live],
                      [(h + 1, "x.live", 0), (h + 2, "x.live", 1), (h + 3, "x.live", 2)],
                      "live part")
            rc, err = wait_exit(proc, 30)
            expect_eq((rc, err), (0, ""), "exit after --count")
            expect_eq(rd.buf + proc.stdout.read(), b"", "output after the last record")
        finally:
            stop(proc)
    res.run("tail --from 1 --count N: history, then live, in order, then exits", tail_from_history)

    def tail_from_head():
        h0, _ = head()
        proc = cli.popen("tail", "--human", "--count", "2", "--lead", "L-T")
        try:
            # tail starts after the head as it finds it: publish until it has
            # seen two events of L-T, each after some events of another lead
            published = []
            deadline = time.monotonic() + 30
            i = 0
            while proc.poll() is None and time.monotonic() < deadline:
                cli.ok("publish", "--type", "x.other", "--lead", "L-O")
                out = cli.ok("publish", "--human", "--type", "x.t", "--lead", "L-T",
                             "--data", '{"i":%d}' % i)
                published.append(int(out.split()[1]))
                i += 1
                time.sleep(0.1)
            rc, err = wait_exit(proc, 10)
            expect_eq((rc, err), (0, ""), "exit after --count")
            lines = proc.stdout.read().decode().splitlines()
            expect_eq(len(lines), 2, "lines printed: %r" % lines)
            seqs = [int(x.split()[0].lstrip("#")) for x in lines]
            expect(all(s > h0 for s in seqs), "printed history: %r (head was %d)" % (seqs, h0))
            k = published.index(seqs[0])
            expect_eq(seqs, published[k:k + 2], "consecutive events of L-T")
            for x in lines:
                expect_in("  x.t  L-T  [none v", x, "human line")
        finally:
            stop(proc)
    res.run("tail from the head: only new events, filtered by lead, human lines", tail_from_head)

    def tail_idle():
        h, _ = head()
        proc = cli.popen("tail", "--json", "--from", str(h - 1), "--timeout-idle", "1500")
        try:
            rc, err = wait_exit(proc, 30)
            expect_eq((rc, err), (0, ""), "exit status")
            seqs = [json.loads(x)["seq"] for x in proc.stdout.read().decode().splitlines()]
            expect_eq(seqs, [h - 1, h], "printed")
        finally:
            stop(proc)
    res.run("tail --timeout-idle exits after the last event", tail_idle)

    def tail_sigterm():
        proc = cli.popen("tail", "--json", "--from", "1")
        try:
            # a printed record means the tail is in its loop, signals handled
            LineReader(proc).line(30)
            proc.send_signal(signal.SIGTERM)
            rc, err = wait_exit(proc, 10)
            expect_eq((rc, err), (0, ""), "exit status after SIGTERM")
        finally:
            stop(proc)
    res.run("tail exits cleanly on SIGTERM", tail_sigterm)

    # --- history ---
    def history():
        steps = [("lead.captured", None, "inquiry"), ("lead.qualified", None, "mql"),
                 ("lead.assigned", '{"owner":"rep-ann"}', "mql"), ("lead.accepted", None, "sal"),
                 ("lead.contacted", None, "sal"),
                 ("opportunity.opened", '{"amount":1200}', "sql")]
        seqs = []
        for typ, data, _ in steps:
            args = ["publish", "--human", "--type", typ, "--lead", "L-H"]
            if data:
                args += ["--data", data]
            seqs.append(int(cli.ok(*args).split()[1]))
            cli.ok("publish", "--type", "x.between")      # other events in between
        recs = {r["seq"]: r for r in q.records(lead="L-H")}

        out = cli.ok("history", "--human", "L-H")
        lines = out.splitlines()
        expect_eq(lines[0].split(), ["SEQ", "TIME", "TYPE", "STAGE", "VER", "DATA"], "header")
        expect_eq(len(lines), 1 + len(steps) + 2, "lines: %r" % lines)
        for i, (typ, data, stage) in enumerate(steps):
            cols = lines[1 + i].split()
            expect_eq(cols[:5], [str(seqs[i]), rfc3339_ms(recs[seqs[i]]["ts"]), typ, stage,
                                 str(i + 1)], "row %d" % (i + 1))
        expect_eq(lines[1 + 2].split()[5:], ["owner=rep-ann"], "key data of the assignment")
        expect_eq(lines[1 + 5].split()[5:], ["amount=1200"], "key data of the opportunity")
        expect_eq(lines[-2], "", "blank line before the state")
        expect_eq(lines[-1], "current: stage sql, version 6, last seq %d, owner rep-ann"
                  % seqs[-1], "current line")

        objs = cli.json_lines("history", "--json", "L-H")
        expect_eq(len(objs), len(steps) + 1, "JSON lines")
        for i, o in enumerate(objs[:-1]):
            record_json_matches(o, recs[seqs[i]], "event %d" % (i + 1))
            expect_eq(o["stage"], steps[i][2], "stage after event %d" % (i + 1))
        expect_eq(objs[-1], {"current": {"lead": "L-H", "stage": "sql", "version": 6,
                                         "last_seq": seqs[-1], "owner": "rep-ann"}}, "current")

        # --human shows the form's fields and each event's cause
        form = cli.ok("publish", "--human", "--type", "lead.captured", "--lead", "L-HF", "--data",
                      '{"email":"eva@fjord.example","company_size":"800","country":"DE"}')
        cause = int(form.split()[1])
        cli.ok("publish", "--type", "lead.qualified", "--lead", "L-HF", "--cause", str(cause))
        lines = cli.ok("history", "--human", "L-HF").splitlines()
        expect_eq(lines[1].split()[5:], ["email=eva@fjord.example", "company_size=800",
                                         "country=DE"], "the form's fields")
        expect_eq(lines[2].split()[5:], ["cause=%d" % cause], "the cause of the qualification")

        # a lead never assigned has no owner
        objs = cli.json_lines("history", "L-X")
        expect_eq(objs[-1]["current"]["owner"], None, "owner of L-X")
        out = cli.ok("history", "--human", "L-X")
        expect(out.splitlines()[-1].endswith("owner (none)"), "human owner of L-X: %r" % out)

        rc, out, err = cli.run("history", "nobody")
        expect_eq(rc, 1, "exit status for an unknown lead")
        expect(err.startswith("funnel: history: ENOTFOUND"), "stderr: %r" % err)
        expect_in("nobody", err, "stderr names the lead")
    res.run("history LEAD: events with the stage after each, their causes and form fields, "
            "then the current state and owner",
            history)

    # --- verify ---
    def verify():
        h, hh = head()
        out = cli.ok("verify", "--human")
        expect_eq(out, "ok: %d records verified, head seq %d, head hash %s\n" % (h, h, hh), "output")
        st = json.loads(cli.ok("status", "--json"))
        expect_eq(st["head_hash"], hh, "status --json head_hash")
        expect_in(st["head_hash"], out, "verify's head hash is status's")
        v = json.loads(cli.ok("verify", "--json"))
        expect_eq(v, {"ok": True, "checked": h, "head": h, "head_hash": hh}, "--json")
        v = json.loads(cli.ok("verify", "--json", "--from", "3", "--to", "5"))
        expect_eq((v["ok"], v["checked"], v["head"]), (True, 3, 5), "--from 3 --to 5")
        expect_eq(v["head_hash"], q.records(**{"from": 5, "to": 5})[0]["hash"].hex(),
                  "head hash of --to 5")
    res.run("verify: ok line with the head seq and the head hash of status", verify)

    # --- status ---
    def status():
        zs = q.status()
        st = json.loads(cli.ok("status", "--json"))
        for k in ("head", "head_ts", "count", "leads", "map_bytes", "version", "format",
                  "durable", "ingest", "publish", "query", "data_dir"):
            expect_eq(st[k], zs[k], "status --json %s" % k)
        expect_eq(st["head_hash"], zs["head_hash"].hex(), "head_hash")
        expect_eq(st["head_time"], rfc3339_ms(zs["head_ts"]), "head_time")
        expect_eq(st["count"], st["head"], "count")
        expect(st["data_bytes"] > 0 and st["uptime_ms"] > 0, "sizes and uptime")
        expect_eq((st["format"], st["durable"]), (2, True), "format and durable")
        for k in ("ingest", "publish", "query"):
            expect_eq(st[k], eps[k], "%s endpoint" % k)
        expect_eq(os.path.realpath(st["data_dir"]), os.path.realpath(daemon.data), "data_dir")
        expect(abs(st["map_use"] - st["data_bytes"] / st["map_bytes"]) < 1e-9, "map_use")
        vfs = os.statvfs(daemon.data)
        expect_eq(st["disk_bytes"], vfs.f_blocks * vfs.f_frsize, "disk_bytes")
        expect(0 < st["disk_free_bytes"] <= st["disk_bytes"], "disk free within the disk")
        expect_eq(list(st.keys()),
                  ["head", "head_hash", "head_ts", "head_time", "count", "leads", "data_bytes",
                   "map_bytes", "map_use", "disk_free_bytes", "disk_bytes", "uptime_ms",
                   "version", "format", "durable", "ingest",
                   "publish", "query", "data_dir"], "keys")

        out = cli.ok("status", "--human")
        fields = {}
        for line in out.splitlines():
            k, _, v = line.partition("  ")
            fields[k.strip()] = v.strip()
        expect_eq(fields["head seq"], str(st["head"]), "head seq")
        expect_eq(fields["head hash"], st["head_hash"], "head hash")
        expect_eq(fields["head time"], st["head_time"], "head time")
        expect_eq(fields["events"], str(st["count"]), "events")
        expect_eq(fields["leads"], str(st["leads"]), "leads")
        expect_eq(fields["version"], st["version"], "version")
        expect_eq(fields["format"], "2", "format")
        expect(fields["durable"].startswith("yes"), "durable: %r" % fields["durable"])
        for k in ("ingest", "publish", "query"):
            expect_eq(fields[k], eps[k], k)
        expect_eq(fields["data dir"], st["data_dir"], "data dir")
        expect(fields["map use"].endswith("%"), "map use: %r" % fields["map use"])
        expect(" of " in fields["disk free"], "disk free: %r" % fields["disk free"])
        for k in ("data size", "map size", "uptime"):
            expect(fields.get(k), "no %s" % k)
    res.run("status: human and --json fields agree with the daemon", status)

    def endpoint_flags():
        dead = "tcp://127.0.0.1:%d" % free_port()
        env = dict(cli.env, FUNNEL_QUERY=dead, FUNNEL_INGEST=dead)
        rc, out, err = cli.run("status", "--json", "--query", eps["query"], env=env)
        expect_eq((rc, err), (0, ""), "--query wins over FUNNEL_QUERY")
        expect_eq(json.loads(out)["query"], eps["query"], "query")
        rc, out, err = cli.run("--ingest", eps["ingest"], "--json", "publish", "--type", "x.flag",
                               env=env)
        expect_eq((rc, err), (0, ""), "--ingest before the command")
    res.run("endpoint flags override the environment, before or after the command",
            endpoint_flags)

    # --- no daemon ---
    def no_daemon():
        dead = "tcp://127.0.0.1:%d" % free_port()
        env = dict(cli.env, FUNNEL_INGEST=dead, FUNNEL_QUERY=dead, FUNNEL_PUBLISH=dead)
        cases = [
            (["publish", "--timeout", "700", "--type", "x.a"], None),
            (["publish", "--timeout", "700"], '{"type":"x.a"}\n'),
            (["status", "--timeout", "700"], None),
            (["replay", "--timeout", "700"], None),
            (["tail", "--timeout", "700"], None),
            (["history", "--timeout", "700", "L-1"], None),
            (["verify", "--timeout", "700"], None),
        ]
        for args, stdin in cases:
            t0 = time.monotonic()
            rc, out, err = cli.run(*args, stdin=stdin, env=env, timeout=30)
            took = time.monotonic() - t0
            what = "funnel %s" % " ".join(args)
            expect(rc not in (0, 2), "%s: exit status %d" % (what, rc))
            expect_in(dead, err, "%s: stderr names the endpoint" % what)
            expect_in("ETIMEDOUT", err, "%s: stderr" % what)
            expect(err.startswith("funnel: %s: " % args[0]), "%s: stderr %r" % (what, err))
            expect_eq(out, "", "%s: stdout" % what)
            # 0.7 s of waiting plus the start of a (maybe sanitized) process
            expect(took < 10, "%s took %.1f s" % (what, took))
    res.run("with no daemon, commands fail within --timeout naming the endpoint", no_daemon)

    def final_chain():
        h, hh = head()
        out = cli.ok("verify", "--human")
        expect_eq(out, "ok: %d records verified, head seq %d, head hash %s\n" % (h, h, hh),
                  "output")
    res.run("the log the checks wrote verifies", final_chain)


def main():
    build = os.environ.get("BUILD") or os.path.join(REPO, "build")
    if not os.path.isabs(build):
        build = os.path.join(REPO, build)
    binary = os.environ.get("FUNNELD") or os.path.join(build, "bin", "funneld")
    funnel = os.path.join(os.path.dirname(os.path.abspath(binary)), "funnel")
    res = Results()
    ctx = zmq.Context()
    daemon = None
    q = None
    try:
        daemon = start_daemon(res, binary, prefix="funnel-cli-", term_on_close=True)
        if daemon is None:
            return res
        q = Query(ctx, daemon.endpoints["query"])
        if not os.access(funnel, os.X_OK):
            res.not_ok("the funnel binary exists", funnel)
            return res
        run_checks(res, Cli(funnel, daemon.endpoints), q, daemon)
    finally:
        if q is not None:
            q.close()
        if daemon is not None:
            daemon.close()
        ctx.term()
    return res


if __name__ == "__main__":
    sys.exit(main().summary())
