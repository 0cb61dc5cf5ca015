#!/usr/bin/python3
"""
tests/integration/test_crash.py - power loss, simulated: does every
acknowledged event survive it, and does funneld start on what is left?

In the style of ALICE and CrashMonkey.  funneld runs from an empty data
directory under tests/crash/shim.c (LD_PRELOAD), which records every
write to its data files (file, offset, bytes), every flush, and every
create, rename and directory flush, in order, with an op counter.
Pipelined producers publish events with idempotency keys; on each ack
they read the op counter.  An ack that read counter c came before every
op numbered c or more, so its events are required at every crash point
from c on: never of a crash that came before the ack (an ack received
the instant before an op but read after it counts from the next point).

A crash point k keeps ops 0..k-1 and loses the rest.  The disk after it:

  - a file's writes up to its last fsync/fdatasync before k are there;
    a write through an O_DSYNC/O_SYNC fd is there once it returned;
  - of the writes not yet flushed, any subset: none, all, random ones,
    a page (4096 bytes) torn at 512-byte sector granularity, the newest
    without the oldest (write-back reorders);
  - names (create, mkdir, rename, unlink) are there once their directory
    was flushed (fsync on the directory); of the rest, a prefix in order
    (the file system journals names in order).

Each distinct state goes to a fresh directory, and there:

  - funneld starts on it (its ready file appears);
  - `funnel verify` passes (the chain);
  - every event acked before k is at the seq its ack gave, same id;
  - every head a status query showed before k is there, same hash (a
    query shows only what is durable: PROTOCOL.md §16);
  - seqs are gapless from 1, each record's seq is its key;
  - the indexes agree with the log (mdb_dump of every table): idempotency
    key -> seq both ways, each lead's history keys are its records' seqs,
    its state's last seq is its last record, meta head_seq and leads.

CRASH_STATES (default 300) is the number of distinct states checked,
CRASH_EVENTS (default 400, or CRASH_STATES/4 when more) the events published, CRASH_SEED picks the states.  The
counts line: "crash: N states checked, N acked events, N acked events
lost, F flushes per group (...)"; then "N passed, N failed".  funneld
runs with a small journal (JOURNAL_SIZE, 128 KiB), so the workload
goes through several laps and checkpoints (daemon/journal.h).  The
flushes per group are counted from the trace of the pipelined workload:
every fsync/fdatasync and O_DSYNC write on a data file from the start
to the last ack, over the groups (appends to the journal: one write
each); the test asks that each group cost exactly one journal flush
and that every other flush be a checkpoint's one (of data.mdb: its
pages, which also puts the previous checkpoint's meta page on the disk;
its own meta page is flushed by the next checkpoint, the journal keeping
the lap before meanwhile), which the groups of a lap share (how many checkpoints come depends on
how long the workload takes: one a second at most under load).  A lone
event on an idle funneld costs exactly one flush between its send and
its ack (counted in the trace).

A second funneld runs under the shim with CRASH_FAIL_SYNC (journal
flushes only: CRASH_SYNC_ONLY): a journal flush that fails stops
funneld; that group is answered EINTERNAL, and what was acknowledged
before survives a power loss.  With journal flushes slowed
(CRASH_SYNC_DELAY_MS) so a second request arrives while the first
group's flush is under way: a flush that fails once
(CRASH_FAIL_SYNC_ONCE, later flushes succeed as on Linux) stops
funneld and answers that group EINTERNAL, the request that came
meanwhile is not acked; a retry of the group's event waiting behind a
failed flush is not acked as its duplicate; groups whose journal
flushes overlap the next group's apply are acknowledged in order, each
after its own flush (a retry of the event whose flush runs is acked as
its duplicate only then), and when that flush fails the group applied
behind it is not acknowledged; and SIGTERM while a
group's journal flush is under way acknowledges that group after the
flush, so it survives a power loss after the stop.
"""
import collections
import concurrent.futures
import hashlib
import mmap
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

from funnel_testlib import (F_CREAT, F_DIR, F_DSYNC, OP_DIRSYNC, OP_MKDIR, OP_MMAPW, OP_OPEN,
                            OP_RENAME, OP_SYNC, OP_TRUNC, OP_UNLINK, OP_WRITE, CheckFailed,
                            Results, expect, expect_eq, read_trace, shim_env, start_funneld,
                            start_shimmed)

BUILD = os.environ.get("BUILD", "build")
FUNNELD = os.environ.get("FUNNELD", os.path.join(BUILD, "bin", "funneld"))
FUNNEL = os.path.join(BUILD, "bin", "funnel")
SHIM = os.path.join(BUILD, "tests", "crashshim.so")
CRASH_STATES = int(os.environ.get("CRASH_STATES", "300"))
CRASH_EVENTS = int(os.environ.get("CRASH_EVENTS", str(max(400, CRASH_STATES // 4))))
CRASH_SEED = int(os.environ.get("CRASH_SEED", "20"))
WORKERS = int(os.environ.get("CRASH_WORKERS", "2"))
READY_WAIT_S = 15.0
CMD_TIMEOUT_S = 60
PAGE, SECTOR = 4096, 512
JOURNAL_SIZE = "128K"     # funneld's --journal-size: laps within the workload

def parent(p):
    return os.path.dirname(p)


# --- the workload: funneld under the shim, pipelined producers --------------

def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def tail(path):
    try:
        with open(path, "rb") as f:
            return f.read()[-400:].decode(errors="replace").strip()
    except OSError:
        return ""


def events_for(n):
    """Event n of the workload: lead events on 25 leads and notes."""
    if n % 2 == 0:
        return {"type": "lead.captured", "lead": "L%d" % (n % 25), "id": "ev-%d" % n,
                "data": {"n": n}}
    return {"type": "x.note", "id": "ev-%d" % n, "data": {"n": n, "pad": "x" * (n % 300)}}


def run_workload(root, nevents, seed):
    """funneld from an empty data dir under the shim; producers on 4
    DEALERs, 4 requests of 1-4 events in flight on each, and a reader on a
    fifth that asks for status, one request at a time, all along.  Returns
    (ops, acks, shown): acks a list of (counter, seq, id), shown one of
    (counter, head, head_hash) for each status that showed a head (a seq
    a query shows must be durable, as an acked one: PROTOCOL.md §16)."""
    # root/fs is what the disk holds (watched), root/trace the trace, the
    # ready file and the log (not): start_shimmed
    proc, eps = start_shimmed(FUNNELD, SHIM, root, ["--journal-size", JOURNAL_SIZE], READY_WAIT_S)
    trace = os.path.join(root, "trace", "ops")
    acks, shown = [], []
    ctx = zmq.Context()
    socks = []
    try:
        cfd = os.open(trace + ".ctr", os.O_RDONLY)
        ctr = mmap.mmap(cfd, 8, prot=mmap.PROT_READ)
        os.close(cfd)
        rng = random.Random(seed)
        poller = zmq.Poller()
        for _ in range(4):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(eps["ingest"])
            poller.register(s, zmq.POLLIN)
            socks.append(s)
        q = ctx.socket(zmq.DEALER)
        q.setsockopt(zmq.LINGER, 0)
        q.connect(eps["query"])
        poller.register(q, zmq.POLLIN)
        socks.append(q)
        q.send(msgpack.packb({"op": "status", "rid": 0}))
        nxt, rid, pending = 0, 0, {}

        def send(s):
            nonlocal nxt, rid
            if nxt >= nevents:
                return
            k = min(rng.randint(1, 4), nevents - nxt)
            evs = [events_for(n) for n in range(nxt, nxt + k)]
            nxt += k
            rid += 1
            pending[rid] = evs
            s.send(msgpack.packb({"op": "publish", "rid": rid, "events": evs}))

        for s in socks[:4]:
            for _ in range(4):
                send(s)
        deadline = time.monotonic() + 120
        while pending:
            expect(time.monotonic() < deadline, "the workload's acks did not all arrive in 120 s")
            for s, _ in poller.poll(1000):
                rep = msgpack.unpackb(s.recv())
                c = trace_ops(ctr)   # after the ack: see the docstring
                if s is q:
                    expect(rep.get("ok") is True, "status refused: %r" % (rep,))
                    if rep["head"] > 0:
                        shown.append((c, rep["head"], rep["head_hash"]))
                    q.send(msgpack.packb({"op": "status", "rid": 0}))
                    continue
                evs = pending.pop(rep["rid"])
                expect(rep.get("ok") is True, "publish refused: %r" % (rep,))
                for ev, seq, dup in zip(evs, rep["seqs"], rep["dup"]):
                    expect(not dup, "a new id acked as a duplicate")
                    acks.append((c, seq, ev["id"]))
                send(s)
        ctr.close()
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
        stop(proc)
    expect_eq(proc.returncode, 0, "funneld's exit status after SIGTERM")
    return read_trace(trace), acks, shown


def start_journal_shimmed(root, name, extra=None, journal_size=JOURNAL_SIZE):
    """funneld from an empty data directory under the shim in root/name
    (start_shimmed: its data in root/name/fs, the trace, ready file and
    log in root/name/trace); the shim counts, fails and slows the
    journal's flushes only (CRASH_SYNC_ONLY=journal; extra: more CRASH_*
    settings).  Returns (proc, endpoints, trace path); CheckFailed when
    it does not start."""
    d = os.path.join(root, name)
    os.makedirs(d)   # each name once
    proc, eps = start_shimmed(FUNNELD, SHIM, d, ["--journal-size", journal_size], READY_WAIT_S,
                              CRASH_SYNC_ONLY="journal", **(extra or {}))
    return proc, eps, os.path.join(d, "trace", "ops")


def journal_inos(ops):
    return {op.ino for op in ops if op.kind == OP_OPEN and op.data.decode().endswith("/journal")}


def journal_syncs(ops):
    """The flushes of the journal once opened by that name (the ones
    CRASH_SYNC_ONLY=journal counts: not its creation's, as journal.new)."""
    first = next((i for i, op in enumerate(ops) if op.kind == OP_OPEN and
                  op.data.decode().endswith("/journal")), len(ops))
    inos = journal_inos(ops)
    return sum(1 for op in ops[first:] if op.kind == OP_SYNC and op.ino in inos)


def file_syncs(ops):
    return sum(1 for op in ops if op.kind == OP_SYNC)


def run_failed_flush(root):
    """A journal flush that fails (CRASH_FAIL_SYNC): funneld answers that
    group EINTERNAL and stops, non-zero.  Lone events one at a time cost
    one journal flush each, so with S journal flushes at start the third
    after them is the third event's: two acks, then the error.  Returns
    (ops, acks, reply to the third, exit status)."""
    nstart = start_syncs(root, "failing")
    proc, eps, trace = start_journal_shimmed(root, "failing", {"CRASH_FAIL_SYNC": str(nstart + 2)})
    tdir = os.path.dirname(trace)
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 10000)
    s.connect(eps["ingest"])
    acks, last = [], None
    try:
        for n in range(3):
            ev = events_for(n)
            s.send(msgpack.packb({"op": "publish", "rid": n + 1, "events": [ev]}))
            rep = msgpack.unpackb(s.recv())
            if rep.get("ok") is not True:
                last = rep
                break
            acks.append((rep["seqs"][0], ev["id"]))
        deadline = time.monotonic() + READY_WAIT_S
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    except zmq.Again:
        raise CheckFailed("no reply within 10 s: %s" % tail(os.path.join(tdir, "log")))
    finally:
        s.close(0)
        ctx.term()
        code = proc.poll()
        stop(proc)
    return read_trace(trace), acks, last, code


def shim_producer(eps, trace):
    """A DEALER on funneld's ingest endpoint (replies within 10 s) and
    the shim's op counter of trace, mapped: (context, socket, counter);
    close_producer() ends them."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 10000)
    s.connect(eps["ingest"])
    cfd = os.open(trace + ".ctr", os.O_RDONLY)
    ctr = mmap.mmap(cfd, 8, prot=mmap.PROT_READ)
    os.close(cfd)
    return ctx, s, ctr


def close_producer(ctx, s, ctr):
    ctr.close()
    s.close(0)
    ctx.term()


def trace_ops(ctr):
    """The ops the shim traced so far."""
    return struct.unpack("=Q", ctr[:8])[0]


def send_first_until_written(s, ctr):
    """Publish event 0 as request 1 and wait until funneld wrote
    something for it (its group's commit and journal entry under way)."""
    c0 = trace_ops(ctr)
    s.send(msgpack.packb({"op": "publish", "rid": 1, "events": [events_for(0)]}))
    deadline = time.monotonic() + READY_WAIT_S
    while trace_ops(ctr) == c0:
        expect(time.monotonic() < deadline, "the first group's commit wrote nothing")
        time.sleep(0.002)


def run_failed_commit_flush(root, name="failing-once", once=True, second=None):
    """The first group's journal flush fails once (CRASH_FAIL_SYNC_ONCE:
    the later flushes succeed, as Linux reports a failed writeback once
    and leaves the pages it could not write clean).  The entry may be what
    was not written, so no later flush can make it durable: the group
    must be answered EINTERNAL and funneld must stop, not acknowledge it
    after a flush that only succeeded because the failure was already
    reported.  Journal flushes are slowed (CRASH_SYNC_DELAY_MS) and the
    second request is sent once the first group's entry is written (the
    trace's op counter), so it arrives while that flush is under way and
    waits behind it.  With once False every flush from the first on
    fails, and second (an event) is what the second request publishes
    (default: a new event).  Returns (reply to the first, reply to the
    second, exit status)."""
    nstart = start_syncs(root, name)
    # journal flush nstart is the first group's
    proc, eps, trace = start_journal_shimmed(root, name, {
        "CRASH_FAIL_SYNC": str(nstart), "CRASH_FAIL_SYNC_ONCE": "1" if once else "0",
        "CRASH_SYNC_DELAY_MS": "400"})
    tdir = os.path.dirname(trace)
    ctx, s, ctr = shim_producer(eps, trace)
    reps = {}
    try:
        send_first_until_written(s, ctr)
        s.send(msgpack.packb({"op": "publish", "rid": 2,
                              "events": [second if second is not None else events_for(2)]}))
        while len(reps) < 2:
            rep = msgpack.unpackb(s.recv())
            reps[rep["rid"]] = rep
        deadline = time.monotonic() + READY_WAIT_S
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    except zmq.Again:
        raise CheckFailed("no reply within 10 s: %s" % tail(os.path.join(tdir, "log")))
    finally:
        close_producer(ctx, s, ctr)
        code = proc.poll()
        stop(proc)
    return reps.get(1), reps.get(2), code


def run_overlapped_flush(root, name, fail):
    """Groups k and k+1 back to back, k+1's flush running while k+2 is
    applied (the writer overlaps the two).  Journal flushes are slowed
    (CRASH_SYNC_DELAY_MS); request 1 (group k) is sent, then, once its
    entry is written, requests 2 (new events) and 3 (a retry of request
    2's events: duplicates of records whose flush may still run) while
    k's flush is under way; they become the groups after it (2000
    events each: large enough to be applied beside the flush before, and
    for the receiver to hand request 3 over while request 2 is applied).  With fail
    the second journal flush (request 2's group) fails once.  Returns
    ({rid: reply}, the rids in the order the replies came, {rid: journal
    flushes done when its reply came, counted from the start's}, exit
    status or None when funneld still ran)."""
    nstart = start_syncs(root, name)
    extra = {"CRASH_SYNC_DELAY_MS": "400"}
    if fail:
        extra.update({"CRASH_FAIL_SYNC": str(nstart + 1), "CRASH_FAIL_SYNC_ONCE": "1"})
    proc, eps, trace = start_journal_shimmed(root, name, extra, journal_size="16M")
    tdir = os.path.dirname(trace)
    ctx, s, ctr = shim_producer(eps, trace)
    reps, order, at = {}, [], {}
    # large enough that the flush before runs beside their apply (ingest.c: OVERLAP_MIN_EVENTS)
    batch = [events_for(n) for n in range(1, 2001)]
    try:
        send_first_until_written(s, ctr)
        s.send(msgpack.packb({"op": "publish", "rid": 2, "events": batch}))
        time.sleep(0.05)   # a group of its own, most likely; the checks hold either way
        s.send(msgpack.packb({"op": "publish", "rid": 3, "events": batch}))
        while len(reps) < 3:
            rep = msgpack.unpackb(s.recv())
            at[rep["rid"]] = trace_ops(ctr)
            reps[rep["rid"]] = rep
            order.append(rep["rid"])
        if fail:
            deadline = time.monotonic() + READY_WAIT_S
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
    except zmq.Again:
        raise CheckFailed("no reply within 10 s: %s" % tail(os.path.join(tdir, "log")))
    finally:
        close_producer(ctx, s, ctr)
        code = proc.poll()
        stop(proc)
    ops = read_trace(trace)
    flushed = {rid: journal_syncs(ops[:n]) - nstart for rid, n in at.items()}
    return reps, order, flushed, code


def run_sigterm_held(root):
    """SIGTERM while a group's journal flush is under way
    (CRASH_SYNC_DELAY_MS): the group is flushed and acknowledged before
    funneld exits, not dropped unanswered.  Returns (the reply, exit
    status, the trace)."""
    proc, eps, trace = start_journal_shimmed(root, "sigterm", {"CRASH_SYNC_DELAY_MS": "400"})
    tdir = os.path.dirname(trace)
    ctx, s, ctr = shim_producer(eps, trace)
    rep = None
    try:
        send_first_until_written(s, ctr)
        proc.send_signal(signal.SIGTERM)
        rep = msgpack.unpackb(s.recv())
        proc.wait(timeout=READY_WAIT_S)
    except zmq.Again:
        raise CheckFailed("no reply within 10 s: %s" % tail(os.path.join(tdir, "log")))
    finally:
        close_producer(ctx, s, ctr)
        stop(proc)
    return rep, proc.returncode, read_trace(trace)


def start_syncs(root, name):
    """The journal flushes of a start, counted on a funneld under the shim."""
    proc, _, trace = start_journal_shimmed(root, "start-" + name)
    stop(proc)
    return journal_syncs(read_trace(trace))


def wait_committed(trace, nops):
    """Wait until a group after op nops is committed into the tail and
    its journal entry written (the write comes before its flush: store.h).
    Its state is then seen by queries, not durable.  Returns the trace's
    length then."""
    deadline = time.monotonic() + 2 * READY_WAIT_S
    while time.monotonic() < deadline:
        ops = read_trace(trace)
        inos = journal_inos(ops)
        for op in ops[nops:]:
            if op.kind == OP_WRITE and op.ino in inos:
                time.sleep(0.05)   # the flush is under way
                return len(ops)
        time.sleep(0.005)
    raise CheckFailed("no journal entry after op %d" % nops)


def run_lone_event(root):
    """One event on an idle funneld under the shim: the flushes (of any
    data file) between its send and its ack, counted in the trace by the
    op counter read before the send and after the ack.  Returns (the
    flushes, the ack)."""
    proc, eps, trace = start_journal_shimmed(root, "lone")
    tdir = os.path.dirname(trace)
    ctx, s, ctr = shim_producer(eps, trace)
    try:
        c0 = trace_ops(ctr)
        s.send(msgpack.packb({"op": "publish", "rid": 1, "events": [events_for(0)]}))
        rep = msgpack.unpackb(s.recv())
        c1 = trace_ops(ctr)
    except zmq.Again:
        raise CheckFailed("no reply within 10 s: %s" % tail(os.path.join(tdir, "log")))
    finally:
        close_producer(ctx, s, ctr)
        stop(proc)
    ops = read_trace(trace)
    return sum(1 for op in ops[c0:c1] if op.kind == OP_SYNC or
               (op.kind == OP_WRITE and op.flags & F_DSYNC)), rep


def run_lead_wait(root, name, delay_ms, fail=False, then=None):
    """A lead query whose lead state is of a commit being flushed (flushes
    after the start's slowed to delay_ms; with fail the flush after the
    commit's fails).  Publishes event 0 (lead L0), waits until its commit
    is written, sends {lead L0} then {status} from client A and, 50 ms
    later, {status} and {replay} from client B.  then(s, env) runs after
    with the producer socket.  Returns a dict: "b" B's replies in the
    order they came, with "a_waiting" whether A had no reply yet when B's
    both came; "a" A's replies in order; "ack" the publish reply; "proc"
    and "trace"."""
    nstart = start_syncs(root, name)
    extra = {"CRASH_SYNC_DELAY_MS": str(delay_ms), "CRASH_SYNC_DELAY_FROM": str(nstart)}
    if fail:
        extra["CRASH_FAIL_SYNC"] = str(nstart)
    proc, eps, trace = start_journal_shimmed(root, name, extra)
    tdir = os.path.dirname(trace)
    ctx = zmq.Context()
    socks = []

    def sock(kind, ep):
        s = ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, int(2 * delay_ms + 10000))
        s.connect(ep)
        socks.append(s)
        return s
    out = {"proc": proc, "trace": trace, "eps": eps}
    try:
        p = sock(zmq.DEALER, eps["ingest"])
        a = sock(zmq.DEALER, eps["query"])
        b = sock(zmq.DEALER, eps["query"])
        nops = len(read_trace(trace))
        p.send(msgpack.packb({"op": "publish", "rid": 1, "events": [events_for(0)]}))
        wait_committed(trace, nops)
        a.send(msgpack.packb({"op": "lead", "rid": 1, "lead": "L0"}))
        a.send(msgpack.packb({"op": "status", "rid": 2}))
        time.sleep(0.05)
        b.send(msgpack.packb({"op": "status", "rid": 7}))
        b.send(msgpack.packb({"op": "replay", "rid": 8, "from": 1}))
        out["b"] = [msgpack.unpackb(b.recv()), msgpack.unpackb(b.recv())]
        out["a_waiting"] = a.poll(0) == 0
        out["a"] = [msgpack.unpackb(a.recv()), msgpack.unpackb(a.recv())]
        out["ack"] = msgpack.unpackb(p.recv())
        if then is not None:
            then(out, p, sock)
        if not fail:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=READY_WAIT_S)
    except zmq.Again:
        raise CheckFailed("no reply in time: %s" % tail(os.path.join(tdir, "log")))
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
        stop(proc)
    out["code"] = proc.returncode
    return out


def shutdown_parked(out, p, sock):
    """A second event of L0; once its commit is written, a lead query from
    client C, then SIGTERM at once: C's reply, and the ack."""
    c = sock(zmq.DEALER, out["eps"]["query"])
    nops = len(read_trace(out["trace"]))
    p.send(msgpack.packb({"op": "publish", "rid": 2, "events": [
        {"type": "x.note", "lead": "L0", "id": "ev-lw-2", "data": {}}]}))
    wait_committed(out["trace"], nops)
    c.send(msgpack.packb({"op": "lead", "rid": 3, "lead": "L0"}))
    time.sleep(0.05)
    out["proc"].send_signal(signal.SIGTERM)
    out["c"] = msgpack.unpackb(c.recv())
    out["ack2"] = msgpack.unpackb(p.recv())


# --- crash states ----------------------------------------------------------

class Model:
    """What the trace says about files, names and flushes, with for each op
    the index of the op that made it durable (None: never)."""

    def __init__(self, ops, root):
        self.ops = ops
        self.root = root
        self.dirpath = {}          # ino of a directory -> its path when opened
        self.durable_at = [None] * len(ops)
        content = collections.defaultdict(list)   # ino -> indexes of its content ops
        names = collections.defaultdict(list)     # dir path -> indexes of name ops in it
        self.unseen = False
        for i, op in enumerate(ops):
            if op.kind == OP_OPEN:
                p = op.data.decode()
                if op.flags & F_DIR:
                    self.dirpath[op.ino] = p
                if op.flags & F_CREAT:
                    names[parent(p)].append(i)
                if op.off:   # O_TRUNC
                    content[op.ino].append(i)
            elif op.kind in (OP_WRITE, OP_TRUNC):
                content[op.ino].append(i)
                if op.kind == OP_WRITE and op.flags & F_DSYNC:
                    self.durable_at[i] = i
            elif op.kind == OP_SYNC:
                for j in content.pop(op.ino, []):
                    if self.durable_at[j] is None:
                        self.durable_at[j] = i
            elif op.kind == OP_DIRSYNC:
                for j in names.pop(self.dirpath.get(op.ino, ""), []):
                    self.durable_at[j] = i
            elif op.kind == OP_RENAME:
                names[parent(op.data.split(b"\0")[1].decode())].append(i)
            elif op.kind in (OP_MKDIR, OP_UNLINK):
                names[parent(op.data.decode())].append(i)
            elif op.kind == OP_MMAPW:
                self.unseen = True

    def is_name_op(self, op):
        return (op.kind in (OP_RENAME, OP_MKDIR, OP_UNLINK) or
                (op.kind == OP_OPEN and op.flags & F_CREAT))

    def state(self, k, mode, rng):
        """The files after a crash at k: {relative path: bytes} and the set
        of relative directories.  mode: none, all, random, newest."""
        volatile_names = [i for i in range(k) if self.is_name_op(self.ops[i]) and
                          (self.durable_at[i] is None or self.durable_at[i] >= k)]
        if mode == "none":
            keep_names = 0
        elif mode == "random":
            keep_names = rng.randint(0, len(volatile_names))
        else:
            keep_names = len(volatile_names)
        dropped_names = set(volatile_names[keep_names:])
        oldest_dropped = set()
        if mode == "newest":
            seen = set()
            for i in range(k):
                op = self.ops[i]
                if op.kind == OP_WRITE and op.ino not in seen and not self.durable(i, k):
                    seen.add(op.ino)
                    oldest_dropped.add(i)
        files, dirs = {}, set()          # name -> ino; directory names
        data = collections.defaultdict(bytearray)
        for i in range(k):
            op = self.ops[i]
            if self.is_name_op(op):
                if i in dropped_names:
                    continue
                if op.kind == OP_OPEN:
                    files[op.data.decode()] = op.ino
                elif op.kind == OP_MKDIR:
                    dirs.add(op.data.decode())
                elif op.kind == OP_UNLINK:
                    files.pop(op.data.decode(), None)
                else:
                    a, b = (x.decode() for x in op.data.split(b"\0"))
                    if a in files:
                        files[b] = files.pop(a)
                    elif a in dirs:
                        dirs.discard(a)
                        dirs.add(b)
                if op.kind != OP_OPEN or not op.off:
                    continue
            if op.kind not in (OP_WRITE, OP_TRUNC, OP_OPEN) or (op.kind == OP_OPEN and not op.off):
                continue
            durable = self.durable(i, k)
            buf = data[op.ino]
            if op.kind == OP_OPEN:          # O_TRUNC
                if durable or mode in ("all", "newest") or (mode == "random" and rng.random() < .5):
                    del buf[:]
                continue
            if op.kind == OP_TRUNC:
                if durable or mode in ("all", "newest") or (mode == "random" and rng.random() < .5):
                    if op.flags == 1:
                        if len(buf) < op.off:
                            buf.extend(bytes(op.off - len(buf)))
                    else:
                        del buf[op.off:]
                        buf.extend(bytes(op.off - len(buf)))
                continue
            if durable or mode == "all" or (mode == "newest" and i not in oldest_dropped):
                write_into(buf, op.off, op.data)
            elif mode == "random":
                # page by page: applied, lost or torn at sector granularity
                pos, end = op.off, op.off + len(op.data)
                while pos < end:
                    pend = min(end, (pos // PAGE + 1) * PAGE)
                    r = rng.random()
                    if r < .4:
                        write_into(buf, pos, op.data[pos - op.off:pend - op.off])
                    elif r < .6:
                        s = pos
                        while s < pend:
                            send_ = min(pend, (s // SECTOR + 1) * SECTOR)
                            if rng.random() < .5:
                                write_into(buf, s, op.data[s - op.off:send_ - op.off])
                            s = send_
                    pos = pend
        # what is reachable: names whose directories exist (the root does)
        def reachable(p):
            d = parent(p)
            while d != self.root:
                if d not in dirs:
                    return False
                d = parent(d)
            return True
        out_dirs = {os.path.relpath(d, self.root) for d in dirs if reachable(d)}
        out_files = {os.path.relpath(p, self.root): bytes(data[ino])
                     for p, ino in files.items() if reachable(p)}
        return out_files, out_dirs

    def durable(self, i, k):
        return self.durable_at[i] is not None and self.durable_at[i] < k


def write_into(buf, off, b):
    if len(buf) < off:
        buf.extend(bytes(off - len(buf)))
    buf[off:off + len(b)] = b


# --- checking one state ----------------------------------------------------

def mdb_dump_all(datadir):
    """{table: {key bytes: value bytes}} of every named table (mdb_dump -a)."""
    p = subprocess.run(["mdb_dump", "-a", datadir], capture_output=True, timeout=CMD_TIMEOUT_S)
    if p.returncode != 0:
        raise CheckFailed("mdb_dump: %s" % p.stderr.decode(errors="replace").strip())
    tables, cur, key, name = {}, None, None, None
    for line in p.stdout.decode().splitlines():
        if line.startswith("database="):
            name = line.split("=", 1)[1]
        elif line == "HEADER=END":
            cur, key = {}, None
        elif line == "DATA=END":
            if name is not None:
                tables[name] = cur
            cur, name = None, None
        elif cur is not None and line.startswith(" "):
            b = bytes.fromhex(line[1:])
            if key is None:
                key = b
            else:
                cur[key] = b
                key = None
    return tables


def check_tables(t, acked, shown=()):
    """The log gapless, acked events at their seqs, what a query showed
    there too (shown: (head, head_hash)), indexes agree."""
    for name in ("log", "idem", "leads", "meta"):
        expect(name in t, "table %s missing" % name)
    log = {struct.unpack("=Q", k)[0]: v for k, v in t["log"].items()}
    head = max(log) if log else 0
    expect_eq(sorted(log), list(range(1, head + 1)), "seqs gapless from 1")
    lost = [(seq, eid) for seq, eid in acked if seq > head]
    recs = {}
    for seq, v in log.items():
        r = msgpack.unpackb(v)
        expect_eq(r.get("seq"), seq, "record seq at key %d" % seq)
        recs[seq] = r
    wrong = [(seq, eid) for seq, eid in acked if seq <= head and recs[seq].get("id") != eid]
    if lost or wrong:
        return len(lost) + len(wrong), "acked events lost: %d beyond head %d, %d at another seq (first %r)" % (
            len(lost), head, len(wrong), (lost + wrong)[0])
    gone = [(seq, h.hex()[:16]) for seq, h in shown if seq > head or recs[seq].get("hash") != h]
    if gone:
        return 0, "shown by a query, then lost: %d heads a status showed are not in the log " \
                  "(its head %d; first %r)" % (len(gone), head, gone[0])
    idem = {k: struct.unpack("=Q", v)[0] for k, v in t["idem"].items()}
    want_idem = {r["id"].encode(): s for s, r in recs.items() if r.get("id") is not None}
    expect_eq(idem, want_idem, "idempotency index against the log")
    hist, state = set(), {}
    for k, v in t["leads"].items():
        if len(k) >= 9 and k[-9] == 0:
            hist.add((k[:-9], struct.unpack(">Q", k[-8:])[0]))
        else:
            expect(k[-1:] == b"\x01", "leads key %r is neither history nor state" % k)
            state[k[:-1]] = struct.unpack_from("=Q", v, 16)[0]
    want_hist = {(r["lead"].encode(), s) for s, r in recs.items() if r.get("lead") is not None}
    expect_eq(hist, want_hist, "leads history keys against the log")
    last = {}
    for lead, s in want_hist:
        last[lead] = max(last.get(lead, 0), s)
    expect_eq(state, last, "each lead's state last_seq against its last record")
    meta = t["meta"]
    if head:
        expect_eq(struct.unpack("=Q", meta.get(b"head_seq", b"\0" * 8))[0], head, "meta head_seq")
        expect_eq(struct.unpack("=Q", meta.get(b"leads", b"\0" * 8))[0], len(last), "meta leads")
        expect_eq(meta.get(b"head_hash"), recs[head]["hash"], "meta head_hash")
    return 0, None


def check_state(workdir, files, dirs, acked, shown=()):
    """Write the state under workdir, start funneld, verify, dump, check;
    workdir is removed after.  Returns (acked events lost, failure text or
    None)."""
    try:
        return check_state_in(workdir, files, dirs, acked, shown)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def check_state_in(workdir, files, dirs, acked, shown):
    os.makedirs(workdir)
    for d in sorted(dirs):
        os.makedirs(os.path.join(workdir, d), exist_ok=True)
    for p, b in files.items():
        os.makedirs(os.path.dirname(os.path.join(workdir, p)), exist_ok=True)
        with open(os.path.join(workdir, p), "wb") as f:
            f.write(b)
    datadir = os.path.join(workdir, "data")
    try:
        proc, eps = start_funneld(FUNNELD, datadir, workdir, ["--journal-size", JOURNAL_SIZE],
                                  wait_s=READY_WAIT_S)
    except CheckFailed:   # stopped
        why = "funneld does not start: %s" % tail(os.path.join(workdir, "log"))
        try:   # what is left of the log, read without funneld
            lost, _ = check_tables(mdb_dump_all(datadir), acked)
        except CheckFailed:
            lost = len(acked)
        return lost, why
    try:
        v = subprocess.run([FUNNEL, "verify", "--json", "--query", eps["query"]],
                           capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    finally:
        stop(proc)
    if v.returncode != 0:
        return 0, "funnel verify exit %d: %s%s" % (v.returncode, v.stdout.strip(), v.stderr.strip())
    try:
        return check_tables(mdb_dump_all(datadir), acked, shown)
    except CheckFailed as e:
        return 0, str(e)


def flushes_per_group(ops, end=None):
    """(fsync/fdatasync, O_DSYNC writes, groups, journal flushes,
    checkpoints) from the journal's opening (by that name) to op end (the
    last ack's counter: the stop's checkpoint is not load): the flushes of
    every data file, the groups journaled (one write to the journal
    each), the journal's own flushes, and the checkpoints (a write into
    one of data.mdb's meta pages: LMDB's first two pages, less than a
    page long)."""
    first = next((i for i, op in enumerate(ops) if op.kind == OP_OPEN and
                  op.data.decode().endswith("/journal")), len(ops))
    inos = journal_inos(ops)
    data = {op.ino for op in ops if op.kind == OP_OPEN and op.data.decode().endswith("/data.mdb")}
    window = ops[first:end]
    syncs = sum(1 for op in window if op.kind == OP_SYNC)
    dsync = sum(1 for op in window if op.kind == OP_WRITE and op.flags & F_DSYNC)
    groups = sum(1 for op in window if op.kind == OP_WRITE and op.ino in inos)
    jsyncs = sum(1 for op in window if op.kind == OP_SYNC and op.ino in inos)
    ckpts = sum(1 for op in window if op.kind == OP_WRITE and op.ino in data and
                op.off < 2 * PAGE and len(op.data) < PAGE)
    return syncs, dsync, groups, jsyncs, ckpts


SCORING = os.environ.get("FUNNEL_SCORING", os.path.join(BUILD, "bin", "funnel-scoring"))
SCORING_RULES = """\
version: "crash"
scoring:
  threshold: 50
  minimum_fit: 10
  decay:
    half_life_days: 30
  on_recycle: reset_engagement
  fit:
    - name: senior title
      field: title
      matches: "(vp|chief)"
      points: 20
  engagement:
    - name: demo request
      on: demo_request
      points: 40
"""


def run_scoring(view, rules, eps, env=None):
    return subprocess.run(
        [SCORING, "--rules", rules, "--view", view, "--ingest", eps["ingest"],
         "--publish", eps["publish"], "--query", eps["query"], "--until-head"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CMD_TIMEOUT_S, env=env)


def view_states(root, nstates):
    """A service's view created under the shim (funnel-scoring to the head
    of a small log, from no view), then every crash state of it: the
    service must start on each and reach the head again.  A view's commit
    need not survive (the view replays from its checkpoint), so only
    opening is checked.  Returns (states checked, failures, examples)."""
    tdir, fs = os.path.join(root, "vtrace"), os.path.join(root, "vfs")
    os.mkdir(tdir)
    os.mkdir(fs)
    rules = os.path.join(root, "scoring.yaml")
    with open(rules, "w") as f:
        f.write(SCORING_RULES)
    proc, eps = start_funneld(FUNNELD, os.path.join(root, "vlog"), tdir,
                              ["--journal-size", JOURNAL_SIZE], wait_s=READY_WAIT_S)
    failures, examples, checked = collections.Counter(), {}, 0
    try:
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, 5000)
        s.connect(eps["ingest"])
        for n in range(20):
            s.send(msgpack.packb({"op": "publish", "rid": n + 1, "events": [
                {"type": "lead.captured", "lead": "V%d" % n, "id": "v-%d" % n,
                 "data": {"title": "VP"}}]}))
            expect(msgpack.unpackb(s.recv()).get("ok") is True, "publish refused")
        s.close(0)
        ctx.term()
        trace = os.path.join(tdir, "ops")
        env = shim_env(SHIM, CRASH_TRACE=trace, CRASH_WATCH=fs)
        p = run_scoring(os.path.join(fs, "view"), rules, eps, env)
        expect_eq(p.returncode, 0, "funnel-scoring under the shim (stderr %s)" % p.stderr[-400:])
        ops = read_trace(trace)
        expect(ops, "no op traced")
        model = Model(ops, fs)
        seen, jobs = set(), []
        with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for k in range(len(ops) + 1):
                for mode in ("none", "all", "random", "newest", "random", "random"):
                    files, dirs = model.state(k, mode, random.Random("v-%d-%s-%d" % (k, mode, len(jobs))))
                    h = hashlib.sha256(repr(sorted(files.items())).encode() +
                                       repr(sorted(dirs)).encode()).digest()
                    if h in seen or len(jobs) >= nstates:
                        continue
                    seen.add(h)
                    wd = os.path.join(root, "vstate-%d" % len(jobs))
                    jobs.append((k, mode, pool.submit(check_view, wd, files, dirs, rules, eps)))
            for k, mode, fut in jobs:
                checked += 1
                why = fut.result()
                if why is not None:
                    key = why.split(":")[0]
                    failures[key] += 1
                    examples.setdefault(key, "crash after op %d of %d (%s): %s" % (k, len(ops), mode, why))
    finally:
        stop(proc)
    return checked, failures, examples


def check_view(workdir, files, dirs, rules, eps):
    try:
        return check_view_in(workdir, files, dirs, rules, eps)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def check_view_in(workdir, files, dirs, rules, eps):
    os.makedirs(workdir)
    for d in sorted(dirs):
        os.makedirs(os.path.join(workdir, d), exist_ok=True)
    for p, b in files.items():
        os.makedirs(os.path.dirname(os.path.join(workdir, p)), exist_ok=True)
        with open(os.path.join(workdir, p), "wb") as f:
            f.write(b)
    p = run_scoring(os.path.join(workdir, "view"), rules, eps)
    if p.returncode != 0:
        return "funnel-scoring exit %d: %s" % (p.returncode, p.stderr.strip()[-300:])
    return None


def main():
    res = Results()
    for path in (FUNNELD, FUNNEL, SCORING, SHIM):
        if not os.access(path, os.R_OK):
            res.not_ok("%s is built" % path, path)
            return res.summary()
    if shutil.which("mdb_dump") is None:
        res.not_ok("mdb_dump is installed (lmdb-utils)", "not found")
        return res.summary()
    root = os.path.realpath(tempfile.mkdtemp(prefix="funnel-crash-"))
    try:
        return run(res, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(res, root):
    got = {}

    def workload():
        got["ops"], got["acks"], got["shown"] = run_workload(root, CRASH_EVENTS, CRASH_SEED)
        expect_eq(len(got["acks"]), CRASH_EVENTS, "acked events")
        expect(got["ops"], "no op traced: is the shim preloaded?")
    if not res.run("%d events from pipelined producers acked under the shim, from an empty data dir"
                   % CRASH_EVENTS, workload):
        return res.summary()
    ops, acks, shown = got["ops"], got["acks"], got["shown"]
    model = Model(ops, os.path.join(root, "fs"))
    syncs, dsync, commits, jsyncs, ckpts = flushes_per_group(ops, max(c for c, _, _ in acks))
    res.run("the trace shows every write (no shared writable mapping of a data file)",
            lambda: expect(not model.unseen, "a data file is written through a shared mapping"))

    # Crash points: every op of the creation (the first 40), then a sample.
    rng = random.Random(CRASH_SEED)
    n = len(ops)
    points = list(range(0, min(n, 40) + 1))
    rest = list(range(len(points), n + 1))
    rng.shuffle(rest)

    def plan():
        for k in points:
            for m in ("none", "all", "random", "newest", "random"):
                yield k, m
        for k in rest:
            for m in ("none", "random", "all"):
                yield k, m
        # more states than that: further random subsets of every point
        for _ in range(64):
            for k in rng.sample(range(n + 1), n + 1):
                yield k, "random"
    seen = set()
    failures = collections.Counter()
    examples = {}
    lost_total, lost_states, checked = 0, 0, 0
    acked_before = sorted(acks)
    submitted = 0
    pending = collections.deque()     # a few states in flight: memory and disk stay small

    def collect(job):
        nonlocal checked, lost_total, lost_states
        k, mode, fut = job
        lost, why = fut.result()
        checked += 1
        lost_total += lost
        lost_states += lost > 0
        if why is not None:
            key = why.split(":")[0]
            failures[key] += 1
            examples.setdefault(key, "crash after op %d of %d (%s): %s" % (k, n, mode, why))

    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for k, mode in plan():
            if submitted >= CRASH_STATES:
                break
            files, dirs = model.state(k, mode, random.Random("%d-%d-%s-%d" % (CRASH_SEED, k, mode, submitted)))
            h = hashlib.sha256(repr(sorted(files.items())).encode() + repr(sorted(dirs)).encode() +
                               repr(sum(1 for c, _, _ in acked_before if c <= k)).encode() +
                               repr(sum(1 for c, _, _ in shown if c <= k)).encode()).digest()
            if h in seen:
                continue
            seen.add(h)
            acked = [(s, e) for c, s, e in acked_before if c <= k]
            seen_heads = [(s, h) for c, s, h in shown if c <= k]
            wd = os.path.join(root, "state-%d" % submitted)
            submitted += 1
            pending.append((k, mode, pool.submit(check_state, wd, files, dirs, acked, seen_heads)))
            while len(pending) > 2 * WORKERS:
                collect(pending.popleft())
        while pending:
            collect(pending.popleft())
    acked_any = sum(1 for c, _, _ in acks if c <= n)
    print("crash: %d states checked, %d acked events, %d acked events lost (%d states lose some), "
          "%.2f flushes per group under load (%d fsync/fdatasync + %d O_DSYNC writes over %d "
          "groups of %.1f events: %d journal flushes, %d checkpoints; %d ops traced)"
          % (checked, acked_any, lost_total, lost_states,
             (syncs + dsync) / commits if commits else 0.0, syncs, dsync, commits,
             len(acks) / commits if commits else 0.0, jsyncs, ckpts, n),
          flush=True)
    for key, cnt in failures.most_common():
        print("  %d states: %s" % (cnt, examples[key]), flush=True)

    got = {}

    def lone():
        got["n"] = run_lone_event(root)
    if res.run("a lone event on an idle funneld", lone):
        nflush, lrep = got["n"]
        print("crash: a lone event cost %d flushes between its send and its ack" % nflush, flush=True)
        res.run("is acknowledged after exactly one device flush (its journal entry's)",
                lambda: expect(lrep.get("ok") is True and nflush == 1,
                               "%d flushes, reply %r" % (nflush, lrep)))

    got = {}

    def failed_flush():
        got["f"] = run_failed_flush(root)
    if res.run("a flush that fails stops funneld", failed_flush):
        fops, facks, frep, fcode = got["f"]
        res.run("the events flushed were acknowledged (2), the one whose flush failed was not",
                lambda: expect_eq(len(facks), 2, "acks before the failing flush"))
        res.run("the one whose flush failed is answered EINTERNAL (unknown fate)",
                lambda: expect(frep is not None and frep.get("code") == 14 and
                               "could not be flushed" in frep.get("message", ""),
                               "reply %r" % (frep,)))
        res.run("funneld stopped by itself, with a non-zero status",
                lambda: expect(fcode not in (None, 0), "exit status %r" % (fcode,)))
        fmodel = Model(fops, os.path.join(root, "failing", "fs"))

        def acked_survive():
            files, dirs = fmodel.state(len(fops), "none", random.Random(0))
            lost, why = check_state(os.path.join(root, "failing-state"), files, dirs, facks)
            expect_eq(lost, 0, "acked events lost on a power loss after the failed flush")
            expect(why is None, why)
        res.run("a power loss after the failed flush keeps the events acknowledged before it",
                acked_survive)

    got = {}

    def failed_commit_flush():
        got["c"] = run_failed_commit_flush(root)
    if res.run("a journal flush that fails once while another request waits stops funneld",
               failed_commit_flush):
        first, second, ccode = got["c"]
        res.run("the group whose flush failed is answered EINTERNAL, not acked after a later flush",
                lambda: expect(first is not None and first.get("code") == 14 and
                               "could not be flushed" in first.get("message", ""),
                               "reply %r" % (first,)))
        res.run("the request that came during the failed flush is refused, nothing stored",
                lambda: expect(second is not None and second.get("ok") is not True,
                               "reply %r" % (second,)))
        res.run("funneld stopped by itself after the failed journal flush, non-zero",
                lambda: expect(ccode not in (None, 0), "exit status %r" % (ccode,)))

    got = {}

    def overlapped_flush():
        got["o"] = run_overlapped_flush(root, "overlap", fail=False)
    if res.run("groups whose journal flushes overlap the next group's apply", overlapped_flush):
        reps, order, flushed, _ = got["o"]
        res.run("they are acknowledged in the order they were stored",
                lambda: expect_eq(order, [1, 2, 3], "the order of the replies"))
        res.run("each is acknowledged after its own flush and the ones before",
                lambda: expect(all(reps[r].get("ok") is True for r in reps) and
                               flushed[1] >= 1 and flushed[2] >= 2 and flushed[3] >= 2,
                               "replies %r, journal flushes done at each: %r" % (reps, flushed)))
        res.run("the retry is acknowledged as a duplicate of the event, once it is durable",
                lambda: expect(reps[3].get("seqs") == reps[2].get("seqs") and
                               reps[3].get("dup") == [True] * 2000,
                               "replies %r" % (reps,)))

    got = {}

    def overlapped_flush_fails():
        got["f"] = run_overlapped_flush(root, "overlap-fails", fail=True)
    if res.run("a journal flush that fails while the next group is applied", overlapped_flush_fails):
        reps, order, flushed, fcode = got["f"]
        res.run("the group before it is acknowledged",
                lambda: expect(reps[1].get("ok") is True, "reply %r" % (reps[1],)))
        res.run("the group whose flush failed is answered EINTERNAL",
                lambda: expect(reps[2].get("code") == 14 and
                               "could not be flushed" in reps[2].get("message", ""),
                               "reply %r" % (reps[2],)))
        res.run("the group applied behind the failed flush is not acknowledged",
                lambda: expect(reps[3].get("ok") is not True, "reply %r" % (reps[3],)))
        res.run("funneld stopped by itself after the failed overlapped flush, non-zero",
                lambda: expect(fcode not in (None, 0), "exit status %r" % (fcode,)))

    got = {}

    def failed_flush_dup():
        got["d"] = run_failed_commit_flush(root, "failing-dup", once=False, second=events_for(0))
    if res.run("a journal flush that fails while a retry of its group's event waits",
               failed_flush_dup):
        first, second, dcode = got["d"]
        res.run("the group whose flush failed is answered EINTERNAL",
                lambda: expect(first is not None and first.get("code") == 14,
                               "reply %r" % (first,)))
        res.run("the retry is not acknowledged as a duplicate of the event whose flush failed",
                lambda: expect(second is not None and second.get("ok") is not True,
                               "reply %r" % (second,)))
        res.run("funneld stopped by itself, non-zero",
                lambda: expect(dcode not in (None, 0), "exit status %r" % (dcode,)))

    got = {}

    def sigterm_held():
        got["t"] = run_sigterm_held(root)
    if res.run("SIGTERM while a group's journal flush is under way", sigterm_held):
        trep, tcode, tops = got["t"]
        res.run("the group whose flush was under way at the stop is acknowledged",
                lambda: expect(trep is not None and trep.get("ok") is True and
                               trep.get("seqs") == [1], "reply %r" % (trep,)))
        res.run("funneld exits 0 after SIGTERM during a flush",
                lambda: expect_eq(tcode, 0, "exit status"))
        tmodel = Model(tops, os.path.join(root, "sigterm", "fs"))

        def held_survives():
            files, dirs = tmodel.state(len(tops), "none", random.Random(0))
            lost, why = check_state(os.path.join(root, "sigterm-state"), files, dirs,
                                    [(1, "ev-0")])
            expect_eq(lost, 0, "acked events lost on a power loss after the stop")
            expect(why is None, why)
        res.run("a power loss after that stop keeps it", held_survives)

    got = {}

    def lead_wait():
        got["l"] = run_lead_wait(root, "lead-wait", 1500, then=shutdown_parked)
    if res.run("a lead query waits for the flush of its lead's commit (flushes of 1.5 s)",
               lead_wait):
        o = got["l"]
        b, a = o["b"], o["a"]
        res.run("status and replay from another client, sent after it, come back before it",
                lambda: expect(o["a_waiting"] and [r.get("rid") for r in b] == [7, 8] and
                               all(r.get("ok") is True for r in b), "B %r, A waiting %r"
                               % (b, o["a_waiting"])))
        res.run("they answer as of the durable head (the commit not yet shown)",
                lambda: expect(b[0].get("head") == 0 and b[1].get("events") == [],
                               "status %r replay %r" % (b[0], b[1])))
        res.run("the lead reply carries the acked state, once durable",
                lambda: expect(o["ack"].get("ok") is True and o["ack"].get("seqs") == [1] and
                               a[0].get("rid") == 1 and a[0].get("ok") is True and
                               a[0].get("version") == 1 and a[0].get("last_seq") == 1 and
                               a[0].get("stage") == "inquiry",
                               "ack %r lead %r" % (o["ack"], a[0])))
        res.run("a later reply to the same client stays behind its waiting lead reply",
                lambda: expect(a[1].get("rid") == 2 and a[1].get("ok") is True,
                               "second reply %r" % (a[1],)))
        res.run("SIGTERM with a lead reply waiting for a flush answers it, with the acked state",
                lambda: expect(o["ack2"].get("ok") is True and o["ack2"].get("seqs") == [2] and
                               o["c"].get("ok") is True and o["c"].get("version") == 2 and
                               o["c"].get("last_seq") == 2,
                               "ack %r lead %r" % (o["ack2"], o["c"])))
        res.run("funneld exits 0 after that SIGTERM", lambda: expect_eq(o["code"], 0, "exit status"))

    got = {}

    def lead_wait_timeout():
        got["l"] = run_lead_wait(root, "lead-wait-slow", 6500)
    if res.run("a lead query whose flush takes over 5 s (flushes of 6.5 s)", lead_wait_timeout):
        o = got["l"]
        res.run("another client's queries are answered meanwhile",
                lambda: expect(o["a_waiting"] and all(r.get("ok") is True for r in o["b"]),
                               "B %r" % (o["b"],)))
        res.run("the lead query is answered EINTERNAL after 5 s, the next reply behind it",
                lambda: expect(o["a"][0].get("rid") == 1 and o["a"][0].get("code") == 14 and
                               "not flushed within 5000 ms" in o["a"][0].get("message", "") and
                               o["a"][1].get("rid") == 2, "A %r" % (o["a"],)))
        res.run("the event is still acknowledged once flushed",
                lambda: expect(o["ack"].get("ok") is True, "ack %r" % (o["ack"],)))

    got = {}

    def lead_wait_fail():
        got["l"] = run_lead_wait(root, "lead-wait-fail", 1500, fail=True)
    if res.run("a lead query waiting for a flush that fails", lead_wait_fail):
        o = got["l"]
        res.run("funneld stops, and the waiting lead reply is answered EINTERNAL, not dropped",
                lambda: expect(o["a"][0].get("rid") == 1 and o["a"][0].get("code") == 14 and
                               "stopped before the log was flushed" in o["a"][0].get("message", "")
                               and o["a"][1].get("rid") == 2 and o["ack"].get("ok") is not True
                               and o["code"] not in (None, 0),
                               "A %r ack %r exit %r" % (o["a"], o["ack"], o["code"])))

    got = {}

    def views():
        got["v"] = view_states(root, max(60, CRASH_STATES // 3))
    if res.run("a service's view is created under the shim", views):
        vchecked, vfail, vex = got["v"]
        print("crash: %d view states checked, %d where the service does not start"
              % (vchecked, sum(vfail.values())), flush=True)
        for key, cnt in vfail.most_common():
            print("  %d view states: %s" % (cnt, vex[key]), flush=True)
        res.run("on every crash state of a new view the service starts and reaches the head",
                lambda: expect(not vfail, "%d of %d view states failed" % (sum(vfail.values()), vchecked)))
    res.run("every crash state keeps every acked event at its seq",
            lambda: expect_eq(lost_total, 0, "acked events lost"))
    shown_key = "shown by a query, then lost"
    res.run("every crash state keeps every head a status query showed (%d answers showed one)"
            % len(shown), lambda: expect_eq(failures.get(shown_key, 0), 0, "states that lost it"))
    others = sum(v for k, v in failures.items() if k != shown_key)
    res.run("on every crash state funneld starts, the chain verifies, the log is gapless and "
            "the indexes agree with it",
            lambda: expect(not others, "%d of %d states failed" % (others, checked)))
    # one flush per group under load (store.h): the count, from the trace
    res.run("under pipelined load each group costs one journal flush (%d over %d groups)"
            % (jsyncs, commits), lambda: expect(commits > 0 and jsyncs == commits,
                                                "%d journal flushes" % jsyncs))
    res.run("and the rest are checkpoints of one flush each, shared by the groups of a lap "
            "(%d flushes, %d checkpoints)" % (syncs + dsync - jsyncs, ckpts),
            lambda: expect_eq(syncs + dsync - jsyncs, ckpts, "flushes besides the journal's"))
    return res.summary()


if __name__ == "__main__":
    sys.exit(main())
