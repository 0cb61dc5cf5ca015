#!/usr/bin/env python3
"""tests/integration/test_journal_replay.py - what the journal's replay
rebuilds is what the writer built (store.h, daemon/journal.h).

funneld runs under the crash shim (tests/crash/shim.c) with data.mdb's
flushes after the start's slowed (CRASH_SYNC_ONLY=data.mdb), so no
checkpoint completes while the test runs: the events acked live in the
tail and the journal only.  funneld is then killed (SIGKILL: the tail is
lost, data.mdb is the start's checkpoint) and started again without the
shim: the journal's records are replayed.  Each lead's state, the lead
count and the idempotency index are then compared with what funneld
answered before it was killed.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from funnel_testlib import (Results, expect, expect_eq, start_funneld,  # noqa: E402
                            start_shimmed)

BUILD = os.environ.get("BUILD", "build")
FUNNELD = os.environ.get("FUNNELD", os.path.join(BUILD, "bin", "funneld"))
SHIM = os.path.join(BUILD, "tests", "crashshim.so")
READY_WAIT_S = 30.0
DELAY_MS = 20000          # a checkpoint's flush: longer than the test needs


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def ask(ctx, ep, req):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 10000)
    s.connect(ep)
    try:
        s.send(msgpack.packb(req))
        return msgpack.unpackb(s.recv(), raw=False)
    finally:
        s.close(0)


EVENTS = [
    {"type": "lead.captured", "lead": "L1", "id": "e1", "data": {"email": "a@example.com"}},
    {"type": "lead.assigned", "lead": "L1", "id": "e2", "data": {"owner": "rep-7"}},
    {"type": "lead.captured", "lead": "L2", "id": "e3", "data": {"email": "b@example.com"}},
    {"type": "lead.assigned", "lead": "L2", "id": "e4", "data": {"owner": "rep-9"}},
    {"type": "lead.erased", "lead": "L2", "id": "e5"},
]


def leads_view(ctx, eps):
    out = {}
    for lead in ("L1", "L2"):
        r = ask(ctx, eps["query"], {"op": "lead", "rid": 1, "lead": lead})
        out[lead] = {k: r.get(k) for k in ("ok", "stage", "version", "last_seq", "owner")}
        k = ask(ctx, eps["query"], {"op": "key", "rid": 3, "lead": lead})
        out[lead]["key"] = k.get("key") if k.get("ok") else k.get("code")
    st = ask(ctx, eps["query"], {"op": "status", "rid": 2})
    out["status"] = {k: st.get(k) for k in ("head", "head_hash", "leads", "count")}
    return out


def replayed_state(root, args):
    """Publish EVENTS on a funneld whose checkpoints cannot complete, kill
    it, start it again: (the view before the kill, the view after the
    replay, funneld's log)."""
    ctx = zmq.Context()
    # start_shimmed's layout: data in root/fs (what the shim watches), the
    # ready file and the log of every start in root/trace
    datadir = os.path.join(root, "fs", "data")
    tdir = os.path.join(root, "trace")
    os.makedirs(tdir)
    os.makedirs(os.path.join(root, "fs"))
    # the log created and checkpointed empty, without the shim
    p, _ = start_funneld(FUNNELD, datadir, tdir, args, wait_s=READY_WAIT_S)
    stop(p)
    p, eps = start_shimmed(FUNNELD, SHIM, root, args, READY_WAIT_S, CRASH_SYNC_ONLY="data.mdb",
                           CRASH_SYNC_DELAY_MS=str(DELAY_MS), CRASH_SYNC_DELAY_FROM="1")
    try:
        rep = ask(ctx, eps["ingest"], {"op": "publish", "rid": 1, "events": EVENTS})
        expect(rep.get("ok") is True, "publish refused: %r" % (rep,))
        before = leads_view(ctx, eps)
    finally:
        stop(p, signal.SIGKILL)
    p, eps = start_funneld(FUNNELD, datadir, tdir, args, wait_s=READY_WAIT_S)
    try:
        after = leads_view(ctx, eps)
        dup = ask(ctx, eps["ingest"], {"op": "publish", "rid": 2, "events": EVENTS})
    finally:
        stop(p)
        ctx.term()
    with open(os.path.join(tdir, "log"), "rb") as f:
        log = f.read().decode(errors="replace")
    return before, after, dup, log


def main():
    res = Results()
    top = tempfile.mkdtemp(prefix="funnel-jreplay-")
    try:
        mk = os.path.join(top, "master.key")
        with open(mk, "w") as f:
            f.write(os.urandom(32).hex() + "\n")

        def case(name, args):
            def run():
                before, after, dup, log = replayed_state(os.path.join(top, name), args)
                expect("replayed seqs 1 to %d" % len(EVENTS) in log,
                       "the restart replayed the journal (else the test proves nothing): %s" % log[-400:])
                expect_eq(after, before, "leads and status after the replay against before the kill")
                expect_eq(dup.get("dup"), [True] * len(EVENTS), "a resend after the replay: duplicates")
            return run

        res.run("replayed journal: lead states, lead count and idempotency as the writer left them",
                case("plain", []))
        res.run("replayed journal with a master key: lead states, an erased lead's key gone",
                case("vault", ["--master-key", mk]))
        def owner_refused():
            # the lead's state keeps its owner in clear, and the replay
            # rebuilds it from the record: owner cannot be a sealed path
            tdir = os.path.join(top, "owner")
            os.makedirs(tdir)
            p = subprocess.run([FUNNELD, "--data", os.path.join(tdir, "data"), "--ingest",
                                "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*", "--query",
                                "tcp://127.0.0.1:*", "--master-key", mk,
                                "--personal-fields", "email, owner"],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            err = p.stderr.decode(errors="replace")
            expect(p.returncode != 0, "funneld started with owner sealed: %s" % err[-300:])
            expect("personal-fields: owner cannot be sealed" in err,
                   "the refusal names the field: %s" % err[-300:])
        res.run("owner among the personal fields: refused at start, naming it", owner_refused)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return res.summary()


if __name__ == "__main__":
    sys.exit(main())
