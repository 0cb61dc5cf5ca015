#!/usr/bin/python3
"""
tests/integration/test_flushdelay.py - the slow-disk mode of
tests/crash/shim.c (CRASH_WATCH with CRASH_SYNC_DELAY_US and
CRASH_SYNC_COUNT, no CRASH_TRACE), which the benchmark preloads into
funneld and the peers' servers (BENCH_FLUSH_DELAY_US).

What is checked is what the shim counts, never how long anything took:

  - every kind of flush of a watched path is counted once (fsync,
    fdatasync, a write and a pwrite on an O_DSYNC fd, an msync of a
    shared mapping, a directory's fsync), a flush outside the watched
    directory is not, and nothing is traced;
  - without CRASH_WATCH the shim is inert: no counter file appears;
  - funneld under it: each acknowledged lone event cost at least one
    flush of its log (durability: no ack before a flush), and with
    --no-sync none at all; but funneld --no-sync opening a log a durable
    run wrote flushes it once, at the open.
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import zmq

import funnel_testlib
from funnel_testlib import CheckFailed, Daemon, LogClient, Results, expect, expect_eq

BUILD = os.environ.get("BUILD", "build")
FUNNELD = os.environ.get("FUNNELD", os.path.join(BUILD, "bin", "funneld"))
SHIM = os.path.abspath(os.path.join(BUILD, "tests", "crashshim.so"))

# A child that flushes in every way the shim counts: 6 flushes under
# argv[1]/w, one outside it.
FLUSHER = r"""
import mmap, os, sys
d = sys.argv[1]
fd = os.open(d + "/w/a", os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"x" * 4096)
os.fsync(fd)
os.fdatasync(fd)
ds = os.open(d + "/w/b", os.O_WRONLY | os.O_CREAT | os.O_DSYNC, 0o644)
os.write(ds, b"y")
os.pwrite(ds, b"z", 0)
m = mmap.mmap(fd, 4096)
m[0:1] = b"q"
m.flush()
m.close()
dfd = os.open(d + "/w", os.O_RDONLY)
os.fsync(dfd)
out = os.open(d + "/outside", os.O_RDWR | os.O_CREAT, 0o644)
os.write(out, b"o")
os.fsync(out)
"""


def count(path):
    with open(path, "rb") as f:
        data = f.read()
    expect_eq(len(data), 8, "size of the counter file %s" % path)
    return struct.unpack("=Q", data)[0]


def shim_env(extra):
    """The shim counting and slowing flushes, recording nothing (no CRASH_TRACE)."""
    env = funnel_testlib.shim_env(SHIM, **extra)
    env.pop("CRASH_TRACE", None)
    return env


def run_flusher(root, env):
    os.makedirs(os.path.join(root, "w"), exist_ok=True)
    p = subprocess.run([sys.executable, "-c", FLUSHER, root], env=env, timeout=60,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    expect_eq(p.returncode, 0, "flusher exit status (%s)" % p.stdout.decode(errors="replace")[-300:])


def every_kind_counted(root):
    d = os.path.join(root, "kinds")
    ctr = os.path.join(root, "kinds.flushes")
    os.mkdir(d)
    run_flusher(d, shim_env({"CRASH_WATCH": os.path.join(d, "w"), "CRASH_SYNC_DELAY_US": "1",
                             "CRASH_SYNC_COUNT": ctr}))
    expect_eq(count(ctr), 6, "flushes counted (fsync, fdatasync, O_DSYNC write and pwrite, "
              "msync, directory fsync; not the one outside)")
    # the slow-disk mode records nothing: only what the child made is there
    expect_eq(sorted(os.listdir(os.path.join(d, "w"))), ["a", "b"], "files in the watched dir")
    expect_eq(sorted(os.listdir(d)), ["outside", "w"], "files beside it")
    # processes naming the same counter add up
    run_flusher(d, shim_env({"CRASH_WATCH": os.path.join(d, "w"), "CRASH_SYNC_COUNT": ctr}))
    expect_eq(count(ctr), 12, "flushes counted by two processes in turn")


def inert_without_watch(root):
    d = os.path.join(root, "inert")
    ctr = os.path.join(root, "inert.flushes")
    os.mkdir(d)
    run_flusher(d, shim_env({"CRASH_SYNC_DELAY_US": "1000000", "CRASH_SYNC_COUNT": ctr}))
    expect(not os.path.exists(ctr), "a counter file appeared without CRASH_WATCH")


def shimmed_daemon(watch, data, ctr, extra_args):
    """funneld on data under the shim's slow-disk mode, its flushes of
    paths under watch counted in ctr."""
    saved = dict(os.environ)
    os.environ.update(shim_env({"CRASH_WATCH": watch, "CRASH_SYNC_DELAY_US": "100",
                                "CRASH_SYNC_COUNT": ctr}))
    try:
        return Daemon(FUNNELD, data=data, extra_args=extra_args)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def funneld_flushes(root, name, extra_args, lone_events):
    """funneld under the shim, lone_events published one at a time; the
    flushes counted while they were."""
    d = os.path.join(root, name)
    ctr = os.path.join(root, name + ".flushes")
    os.mkdir(d)
    daemon = shimmed_daemon(d, os.path.join(d, "data"), ctr, extra_args)
    ctx = zmq.Context()
    client = None
    try:
        client = LogClient(ctx, daemon.endpoints)
        before = count(ctr) if os.path.getsize(ctr) == 8 else 0
        for i in range(lone_events):
            client.publish_ok({"type": "x.note", "id": "fd-%s-%d" % (name, i), "data": {"i": i}})
        return count(ctr) - before if os.path.getsize(ctr) == 8 else 0
    finally:
        if client is not None:
            client.close()
        ctx.term()
        daemon.close()


def funneld_flushes_before_acks(root):
    n = 20
    got = funneld_flushes(root, "durable", (), n)
    expect(got >= n, "%d lone events acknowledged after %d flushes: an ack without a flush" % (n, got))


def funneld_no_sync_flushes_nothing(root):
    got = funneld_flushes(root, "nosync", ("--no-sync",), 20)
    expect_eq(got, 0, "flushes of funneld --no-sync while it acknowledged 20 events")


def funneld_no_sync_flushes_the_log_it_opens(root):
    """funneld --no-sync started on a log a durable run wrote: the open
    flushes data.mdb (what the earlier run committed last may have its
    meta page unflushed, and the journal's lap that holds the earlier
    run's acknowledged events is overwritten from the first checkpoint
    on), so that run's events survive a power loss whatever --no-sync
    does with its own."""
    d = os.path.join(root, "reopened")
    os.mkdir(d)
    data = os.path.join(d, "data")
    daemon = Daemon(FUNNELD, data=data)
    ctx = zmq.Context()
    try:
        client = LogClient(ctx, daemon.endpoints)
        for i in range(5):
            client.publish_ok({"type": "x.note", "id": "ro-%d" % i, "data": {"i": i}})
        client.close()
    finally:
        ctx.term()
        daemon.close()
    ctr = os.path.join(root, "reopened.flushes")
    daemon = shimmed_daemon(d, data, ctr, ("--no-sync",))
    try:
        got = count(ctr) if os.path.exists(ctr) and os.path.getsize(ctr) == 8 else 0
        expect(got >= 1, "funneld --no-sync opened a durable run's log with %d flushes" % got)
    finally:
        daemon.close()


def main():
    res = Results()
    for path in (FUNNELD, SHIM):
        if not os.access(path, os.R_OK):
            res.not_ok("%s is built" % path, path)
            return res.summary()
    root = os.path.realpath(tempfile.mkdtemp(prefix="funnel-flushdelay-"))
    try:
        res.run("every kind of flush of a watched path counted once, nothing traced",
                every_kind_counted, root)
        res.run("the shim is inert without CRASH_WATCH", inert_without_watch, root)
        res.run("funneld under the slow disk: every lone ack after a flush",
                funneld_flushes_before_acks, root)
        res.run("funneld --no-sync under the slow disk: no flush", funneld_no_sync_flushes_nothing,
                root)
        res.run("funneld --no-sync flushes the log a durable run wrote when it opens it",
                funneld_no_sync_flushes_the_log_it_opens, root)
    except CheckFailed as e:
        res.not_ok("setup", e)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return res.summary()


if __name__ == "__main__":
    sys.exit(main())
