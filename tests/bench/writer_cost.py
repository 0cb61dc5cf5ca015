#!/usr/bin/python3
"""
tests/bench/writer_cost.py - instructions per event on funneld's writer,
counted by callgrind (a count, not a time: it repeats on a busy machine).

funneld runs from an empty data directory under
`valgrind --tool=callgrind --separate-threads=yes --toggle-collect=ingest_run`,
so only what runs inside ingest_run is counted: the writer's loop on the
main thread, and inside receiver_main: the receiver thread that decodes
requests and sends the replies (nothing of start-up or of ZeroMQ's I/O
threads; callgrind's collection state is per thread).  4 pipelined DEALER producers publish WRITER_EVENTS events
(default 20000) in requests of WRITER_BATCH events (default 8): half
lead.captured of a new lead with an email (a personal field), half
x.note, each with an idempotency key.  The writer thread's total
instruction count divided by the events is printed:

  writer: N instructions/event over E events (total T, thread file F)

and the receiver thread's beside it ("receiver: ..."), for what moved where.
BUILD (default build) picks the funneld; WRITER_ARGS adds funneld
options (e.g. "--no-sync"); WRITER_SEALED=1 gives funneld a fresh master
key (personal fields sealed); WRITER_KEEP=1 keeps the callgrind files
(the directory is left in /tmp) for callgrind_annotate.
"""
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

BUILD = os.environ.get("BUILD", "build")
FUNNELD = os.environ.get("FUNNELD", os.path.join(BUILD, "bin", "funneld"))
EVENTS = int(os.environ.get("WRITER_EVENTS", "20000"))
BATCH = int(os.environ.get("WRITER_BATCH", "8"))
ARGS = os.environ.get("WRITER_ARGS", "").split()
READY_WAIT_S = 120.0


def event(n):
    if n % 2 == 0:
        return {"type": "lead.captured", "lead": "L%d" % n, "id": "ev-%d" % n,
                "data": {"email": "p%d@example.com" % n, "source": "web", "n": n}}
    return {"type": "x.note", "id": "ev-%d" % n, "data": {"n": n, "text": "note %d" % n}}


def start(root):
    ready = os.path.join(root, "ready")
    out = os.path.join(root, "callgrind.out")
    log = open(os.path.join(root, "log"), "wb")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--separate-threads=yes",
         "--toggle-collect=ingest_run", "--toggle-collect=receiver_main",
         "--callgrind-out-file=" + out,
         FUNNELD, "--data", os.path.join(root, "data"), "--ingest", "tcp://127.0.0.1:*",
         "--publish", "tcp://127.0.0.1:*", "--query", "tcp://127.0.0.1:*",
         "--ready-file", ready] + ARGS,
        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(ready):
            with open(ready) as f:
                eps = dict(line.strip().split("=", 1) for line in f if "=" in line)
            if "ingest" in eps and "pid" in eps:
                return proc, eps, out
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    sys.exit("funneld did not start under valgrind (see %s/log)" % root)


def publish(eps):
    ctx = zmq.Context()
    socks = []
    poller = zmq.Poller()
    for _ in range(4):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(eps["ingest"])
        poller.register(s, zmq.POLLIN)
        socks.append(s)
    nxt, rid, pending = 0, 0, set()

    def send(s):
        nonlocal nxt, rid
        if nxt >= EVENTS:
            return
        k = min(BATCH, EVENTS - nxt)
        rid += 1
        pending.add(rid)
        s.send(msgpack.packb({"op": "publish", "rid": rid,
                              "events": [event(n) for n in range(nxt, nxt + k)]}))
        nxt += k

    for s in socks:
        for _ in range(8):
            send(s)
    deadline = time.monotonic() + 600
    while pending:
        if time.monotonic() > deadline:
            sys.exit("acks did not all arrive in 600 s")
        for s, _ in poller.poll(1000):
            rep = msgpack.unpackb(s.recv())
            if rep.get("ok") is not True:
                sys.exit("publish refused: %r" % (rep,))
            pending.discard(rep["rid"])
            send(s)
    for s in socks:
        s.close(0)
    ctx.term()


def totals(path):
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    return 0


def main():
    root = tempfile.mkdtemp(prefix="writer-cost-")
    try:
        if ARGS.count("--master-key") == 0 and os.environ.get("WRITER_SEALED") == "1":
            key = os.path.join(root, "master.key")
            with open(key, "wb") as f:
                f.write(os.urandom(32).hex().encode() + b"\n")
            os.chmod(key, 0o600)
            ARGS.extend(["--master-key", key])
        proc, eps, out = start(root)
        publish(eps)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        files = sorted(glob.glob(out + "-*"))
        counts = [(totals(p), p) for p in files]
        # the writer is thread 1, the main thread (ingest_run runs there)
        main_file = [p for p in files if p.endswith("-01")]
        if not main_file:
            sys.exit("no callgrind file for the main thread in %s" % files)
        w = totals(main_file[0])
        print("writer: %d instructions/event over %d events (total %d, thread file %s)"
              % (w // EVENTS, EVENTS, w, os.path.basename(main_file[0])))
        for c, p in counts:
            if p != main_file[0] and c:
                print("receiver: %d instructions/event (thread file %s)"
                      % (c // EVENTS, os.path.basename(p)))
    finally:
        if os.environ.get("WRITER_KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
