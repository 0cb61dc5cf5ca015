#!/usr/bin/python3
"""
tests/integration/test_backup.py - `funnel backup` of a live log while 4
producers publish, `funnel restore` into a new directory, funneld serving
the restored log, and views rebuilt from it: the chain verifies, every
event acknowledged before the backup started is in the copy, the head
hash matches backup.info, funnel-scoring and funnel-metrics rebuilt from
the restored log give the digests they had before.  The backup copies
funneld's journal before its LMDB snapshot (clients/lib/backup.c): events
acked but not yet checkpointed when it starts are in the copy too, and
funneld replays them from the restored journal.

Also measured (printed as "# measure:", never asserted): the producers'
largest and 99th-percentile ack latency while the backup runs next to the
same numbers just before it.

Run with Debian's /usr/bin/python3 (python3-zmq, python3-msgpack):

    BUILD=build FUNNELD=build/bin/funneld /usr/bin/python3 tests/integration/test_backup.py
"""
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import zmq

from funnel_testlib import (REPO, Daemon, LogClient, Results, Service, expect, expect_eq,
                            expect_in, start_daemon)

BUILD = os.environ.get("BUILD", "build")
FUNNELD = os.environ.get("FUNNELD", os.path.join(REPO, BUILD, "bin", "funneld"))
BIN = os.path.dirname(FUNNELD)
FUNNEL = os.path.join(BIN, "funnel")
SCORING = os.path.join(BIN, "funnel-scoring")
METRICS = os.path.join(BIN, "funnel-metrics")
CMD_TIMEOUT_S = 120
PRODUCERS = 4
BASELINE_S = 1.0      # publishing before the backup starts
AFTER_S = 0.5         # and after it ends


def funnel(daemon, *args):
    """Run the CLI against daemon (bounded); returns the CompletedProcess."""
    eps = daemon.endpoints
    return subprocess.run([FUNNEL, "--ingest", eps["ingest"], "--query", eps["query"]]
                          + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=CMD_TIMEOUT_S)


def funnel_json(daemon, *args):
    p = funnel(daemon, "--json", *args)
    expect_eq(p.returncode, 0, "funnel %s exit status (stderr: %s)"
              % (" ".join(args), p.stderr[-600:]))
    return json.loads(p.stdout)


def read_info(backup):
    with open(os.path.join(backup, "backup.info")) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


def event(p, i):
    """Producer p's event i: the first 50 capture one lead each, then
    captures and activities of those leads."""
    lead = "P%d-L%d" % (p, i % 50)
    if i < 50 or i % 3 == 0:
        return {"type": "lead.captured", "lead": lead, "id": "e-%d-%d" % (p, i),
                "data": {"email": "%s@corp.example" % lead.lower(), "title": "VP Sales",
                         "company": "Acme", "country": "DE", "source": "web"}}
    return {"type": "lead.activity", "lead": lead, "id": "e-%d-%d" % (p, i),
            "data": {"kind": "pricing_view"}}


class Producer(threading.Thread):
    """Publishes one event per request until stop is set; keeps (id, seq,
    sent, acked) per acknowledged event (monotonic seconds)."""

    def __init__(self, ctx, eps, p, stop):
        super().__init__(daemon=True)
        self.log = LogClient(ctx, eps)
        self.p = p
        self.stop = stop
        self.acked = []
        self.error = None

    def run(self):
        try:
            i = 0
            while not self.stop.is_set():
                ev = event(self.p, i)
                t0 = time.monotonic()
                rep = self.log.publish(ev)
                t1 = time.monotonic()
                if rep.get("ok") is not True:
                    raise RuntimeError("publish refused: %r" % (rep,))
                self.acked.append((ev["id"], rep["seqs"][0], t0, t1))
                i += 1
        except Exception as e:   # reported by the check that joins the thread
            self.error = e
        finally:
            self.log.close()


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


class Metrics(Service):
    """funnel-metrics with a view and no HTTP (--until-head and digest)."""

    def args(self, *extra):
        eps = self.daemon.endpoints
        return [METRICS, "--view", self.view, "--ingest", eps["ingest"],
                "--publish", eps["publish"], "--query", eps["query"]] + list(extra)


def views(daemon, name):
    """Scoring and metrics views built from nothing on daemon's log:
    {service: (checkpoint, digest)}."""
    sc = Service(SCORING, daemon, name + "-scoring")
    with open(os.path.join(REPO, "funnel.yaml")) as f:
        sc.write_rules(f.read())
    sc.until_head()
    sc.until_head()   # its own derived events, applied: nothing more derived
    mx = Metrics(METRICS, daemon, name + "-metrics")
    mx.until_head()
    return {"scoring": sc.digest(), "metrics": mx.digest()}


def main():
    res = Results()
    for b in (FUNNELD, FUNNEL, SCORING, METRICS):
        if not os.access(b, os.X_OK):
            res.not_ok("%s is built" % os.path.basename(b), b)
            return res.summary()
    ctx = zmq.Context()
    work = tempfile.mkdtemp(prefix="funnel-backup-")
    daemon = start_daemon(res, FUNNELD, prefix="funnel-backup-live-")
    restored = None
    state = {}
    try:
        if daemon is None:
            return res.summary()

        def backup_while_publishing():
            stop = threading.Event()
            producers = [Producer(ctx, daemon.endpoints, p, stop) for p in range(PRODUCERS)]
            for t in producers:
                t.start()
            time.sleep(BASELINE_S)
            b0 = time.monotonic()
            backup = os.path.join(work, "live")
            p = funnel(daemon, "--json", "backup", backup)
            b1 = time.monotonic()
            time.sleep(AFTER_S)
            stop.set()
            for t in producers:
                t.join(timeout=30)
                expect(not t.is_alive(), "producer %d stopped" % t.p)
                expect(t.error is None, "producer %d: %s" % (t.p, t.error))
            expect_eq(p.returncode, 0, "backup exit status (stderr: %s)" % p.stderr[-600:])
            out = json.loads(p.stdout)
            acked = [a for t in producers for a in t.acked]
            before = [a for a in acked if a[3] < b0]
            during = [a for a in acked if a[3] >= b0 and a[3] <= b1]
            expect(len(before) > 0 and len(during) > 0,
                   "events acknowledged before (%d) and during (%d) the backup"
                   % (len(before), len(during)))
            lat_base = [a[3] - a[2] for a in acked if b0 - BASELINE_S / 2 <= a[2] < b0]
            lat_during = [a[3] - a[2] for a in acked if b0 <= a[2] <= b1]
            print("# measure: backup of %d records took %.1f ms while %d producers published;"
                  " ack latency max %.2f ms p99 %.2f ms during (n=%d), max %.2f ms p99 %.2f ms"
                  " in the %.1f s before (n=%d)"
                  % (out["head"], (b1 - b0) * 1e3, PRODUCERS, max(lat_during) * 1e3,
                     pct(lat_during, 0.99) * 1e3, len(lat_during), max(lat_base) * 1e3,
                     pct(lat_base, 0.99) * 1e3, BASELINE_S / 2, len(lat_base)), flush=True)
            info = read_info(backup)
            expect_eq(int(info["head_seq"]), out["head"], "backup.info head_seq")
            expect_eq(info["head_hash"], out["head_hash"], "backup.info head_hash")
            expect_eq(int(info["format"]), 2, "backup.info format")
            # backup.info names the snapshot's head, funneld's last
            # checkpoint, which may trail the acks: the events acked since
            # are in the journal the backup copied first, and the restore
            # below checks that every event acked before the backup began
            # is in the restored log
            expect(0 < out["head"] <= max(a[1] for a in acked),
                   "the snapshot's head %d is a stored record (acked up to %d)"
                   % (out["head"], max(a[1] for a in acked)))
            state.update(backup=backup, before=before, head=out["head"],
                         head_hash=out["head_hash"])
        res.run("backup while 4 producers publish: exit 0, head and hash in backup.info",
                backup_while_publishing)

        def refuses_non_empty():
            expect("backup" in state, "the live backup exists")
            p = funnel(daemon, "backup", state["backup"])
            expect_eq(p.returncode, 1, "backup into a non-empty directory exits 1")
            expect_in("not empty", p.stderr, "message says why")
            p = funnel(daemon, "restore", state["backup"], daemon.data)
            expect_eq(p.returncode, 1, "restore over a non-empty data directory exits 1")
            expect_in("not empty", p.stderr, "message says why")
            bare = os.path.join(work, "bare")
            os.mkdir(bare)
            shutil.copy(os.path.join(state["backup"], "data.mdb"), bare)
            p = funnel(daemon, "restore", bare, os.path.join(work, "never"))
            expect_eq(p.returncode, 1, "restore of a copy without backup.info exits 1")
            expect_in("backup.info", p.stderr, "message names the missing file")
            expect(not os.path.exists(os.path.join(work, "never")), "nothing was created")
        res.run("backup and restore refuse a non-empty target and an incomplete backup",
                refuses_non_empty)

        def refuses_bad_sources():
            expect("backup" in state, "the live backup exists")
            # a copy cut short: refused by size, never read (a read of a missing
            # page would be SIGBUS), and nothing made for it
            cut = os.path.join(work, "cut")
            os.mkdir(cut)
            for f in ("data.mdb", "backup.info"):
                shutil.copy(os.path.join(state["backup"], f), cut)
            os.truncate(os.path.join(cut, "data.mdb"), 20000)
            for args, made in ((["backup", "--data", cut, os.path.join(work, "cutb")], "cutb"),
                               (["restore", cut, os.path.join(work, "cutr")], "cutr")):
                p = funnel(daemon, *args)
                expect_eq(p.returncode, 1, "funnel %s exits 1 (stderr %r)" % (args[0], p.stderr))
                expect_in("is truncated: 20000 bytes", p.stderr, "%s names the cut file" % args[0])
                if made:
                    expect(not os.path.exists(os.path.join(work, made)),
                           "%s made nothing" % args[0])
            # a file given as the data directory, and a backup inside the data
            # directory: refused, nothing made
            afile = os.path.join(work, "afile")
            with open(afile, "w") as f:
                f.write("x")
            p = funnel(daemon, "backup", "--data", afile, os.path.join(work, "fromfile"))
            expect_eq(p.returncode, 1, "backup of a file exits 1")
            expect(not os.path.exists(os.path.join(work, "fromfile")), "nothing made for a file")
            inside = os.path.join(daemon.data, "bk")
            p = funnel(daemon, "backup", inside)
            expect_eq(p.returncode, 1, "backup inside the data directory exits 1")
            expect_in("inside the data directory", p.stderr, "message says why")
            expect(not os.path.exists(inside), "nothing made inside the data directory")
        res.run("backup and restore refuse a cut copy by its size (no SIGBUS), a file, "
                "and a backup inside the data directory, making nothing", refuses_bad_sources)

        def restore_and_serve():
            nonlocal restored
            expect("backup" in state, "the live backup exists")
            data = os.path.join(work, "restored", "data")
            os.makedirs(os.path.dirname(data))
            out = funnel_json(daemon, "restore", state["backup"], data)
            expect_eq((out["head"], out["head_hash"]), (state["head"], state["head_hash"]),
                      "restore reports the backup's head")
            expect_eq(sorted(os.listdir(data)), ["data.mdb", "journal"], "restored files")
            restored = Daemon(FUNNELD, prefix="funnel-backup-restored-", data=data)
            # backup.info names the snapshot's head; the copied journal may
            # add events acked after the snapshot's checkpoint (backup.c)
            st = funnel_json(restored, "status")
            expect(st["head"] >= state["head"], "funneld on the restored log: head %d at least "
                   "backup.info's %d" % (st["head"], state["head"]))
            v = funnel_json(restored, "verify")
            expect(v["ok"] is True, "chain verifies: %r" % v)
            expect_eq((v["head"], v["head_hash"]), (st["head"], st["head_hash"]), "verified head")
            log = LogClient(ctx, restored.endpoints)
            try:
                recs = log.records()
                by_id = {r["id"]: r["seq"] for r in recs if "id" in r}
                at = [r["hash"].hex() for r in recs if r["seq"] == state["head"]]
                expect_eq(at, [state["head_hash"]], "backup.info's head hash at its seq")
            finally:
                log.close()
            missing = [a for a in state["before"] if by_id.get(a[0]) != a[1]]
            expect_eq(missing[:5], [], "events acked before the backup started, absent or"
                      " at another seq (%d of %d)" % (len(missing), len(state["before"])))
        res.run("restore into a new directory: funneld serves it, chain verifies, every"
                " event acked before the backup is in it", restore_and_serve)

        def restore_locks_the_directory():
            """restore holds funneld's lock (funnel.lock) on DATA_DIR: a
            directory whose lock a live process holds is refused; one
            holding only a lock nobody holds any more is restored into."""
            expect("backup" in state, "the live backup exists")
            data = os.path.join(work, "locked")
            os.mkdir(data)
            lockfile = os.path.join(data, "funnel.lock")
            with open(lockfile, "w") as lf:
                lf.write("%d funneld\n" % os.getpid())
                lf.flush()
                fcntl.flock(lf, fcntl.LOCK_EX | fcntl.LOCK_NB)
                p = funnel(daemon, "restore", state["backup"], data)
                expect_eq(p.returncode, 1, "restore into a locked directory exits 1")
                expect_in("in use by funneld (pid %d)" % os.getpid(), p.stderr, "names the holder")
                expect_eq(os.listdir(data), ["funnel.lock"], "nothing written")
            out = funnel_json(daemon, "restore", state["backup"], data)
            expect_eq(out["head"], state["head"], "a lock left by a process that is gone is no "
                      "obstacle")
            expect_eq(sorted(os.listdir(data)), ["data.mdb", "journal"], "restored files")
        res.run("restore takes the data directory's lock for the whole copy",
                restore_locks_the_directory)

        def journal_in_backup():
            """Events acked but not yet checkpointed (in funneld's journal
            only, daemon/journal.h) when the backup starts: funneld is
            killed (SIGKILL) right after their acks, before its idle
            checkpoint, until the backup's snapshot (its head in the
            output) ends before the last ack (at most 10 tries).  Restored,
            funneld replays the copied journal: every acked event is
            there, at its seq."""
            data = os.path.join(work, "jlive")
            acked, snap = {}, None
            for attempt in range(10):
                d = Daemon(FUNNELD, prefix="funnel-backup-journal-", data=data)
                log = LogClient(ctx, d.endpoints)
                try:
                    for i in range(20):
                        eid = "j-%d-%d" % (attempt, i)
                        rep = log.publish_ok({"type": "x.note", "id": eid, "data": {"i": i}})
                        acked[eid] = rep["seqs"][0]
                    d.proc.kill()
                    d.proc.wait(timeout=10)
                finally:
                    log.close()
                    d.close()
                backup = os.path.join(work, "journal-%d" % attempt)
                p = subprocess.run([FUNNEL, "--json", "backup", "--data", data, backup],
                                   capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
                expect_eq(p.returncode, 0, "backup exit status (stderr: %s)" % p.stderr[-600:])
                if json.loads(p.stdout)["head"] < max(acked.values()):
                    snap = backup
                    break
            expect(snap is not None, "no backup caught events in the journal only in 10 tries")
            expect_in("journal", os.listdir(snap), "the backup's files")
            restored_dir = os.path.join(work, "journal-restored")
            funnel_json(daemon, "restore", snap, restored_dir)
            again = Daemon(FUNNELD, prefix="funnel-backup-journal-restored-", data=restored_dir)
            log = LogClient(ctx, again.endpoints)
            try:
                by_id = {r["id"]: r["seq"] for r in log.records() if "id" in r}
            finally:
                log.close()
                again.close()
            missing = [e for e, seq in acked.items() if by_id.get(e) != seq]
            expect_eq(missing[:5], [], "acked events absent from the restored log or at another "
                      "seq (%d of %d)" % (len(missing), len(acked)))
        res.run("a backup holds the events acked before it that only the journal held",
                journal_in_backup)

        def views_rebuild():
            # the digests the views have on the live log, once quiet ...
            before = views(daemon, "live")
            head = funnel_json(daemon, "status")["head"]
            backup = os.path.join(work, "quiet")
            out = funnel_json(daemon, "backup", backup)
            expect_eq(out["head"], head, "a backup of a quiet log ends at its head")
            data = os.path.join(work, "quiet-restored")
            funnel_json(daemon, "restore", backup, data)
            again = Daemon(FUNNELD, prefix="funnel-backup-views-", data=data)
            try:
                # ... are the digests of views built from nothing on the copy
                after = views(again, "rebuilt")
                expect_eq(after, before, "view digests rebuilt from the restored log")
                expect_eq(funnel_json(again, "status")["head"], head,
                          "rebuilding derived nothing new")
            finally:
                again.close()
        res.run("scoring and metrics rebuilt from a restored log give the same digests",
                views_rebuild)
    finally:
        if restored is not None:
            restored.close()
        if daemon is not None:
            daemon.close()
        shutil.rmtree(work, ignore_errors=True)
        ctx.term()
    return res.summary()


if __name__ == "__main__":
    sys.exit(main())
