#!/usr/bin/python3
"""
tests/bench/writer_stack.py - where funneld's writer thread spends its
wall-clock time, by sampling: what the thread is doing, read from /proc
every SAMPLE_MS (default 0.5) ms while it runs.

Start it, then the load (e.g. a W1-only `bench_funnel`): it waits for a
funneld process (the newest; with `--match TEXT`, the newest whose
command line holds TEXT, e.g. `--match master-key` for the sealed W1 of
`BENCH_SEALED=1`), samples its writer (the main thread, which
runs the ingest loop) until the process ends, and prints the share of
the samples in each state among those where the writer was not idle
(idle: waiting in poll for a batch with nothing queued):

  running          on a CPU (in user space or in a system call)
  runnable         outside a system call, waiting for a CPU
  fault ... (D)    outside a system call, blocked (a page fault of the map)
  flush <file>     in fdatasync / fsync of that file (data.mdb is a
                   checkpoint's flush; journal a group's flush done on
                   the writer itself)
  write <file>     in write / pwrite / writev of that file
  other <syscall>  any other system call

/proc/PID/task/TID/syscall gives the system call and its first argument
(the fd, resolved through /proc/PID/fd); reading it takes the right to
trace funneld (root, or its user where ptrace is not restricted).  A
count of samples, not a timing: it says
where the thread waits, which a CPU profile does not.
"""
import collections
import os
import sys
import time

SAMPLE_S = float(os.environ.get("SAMPLE_MS", "0.5")) / 1000.0
# x86-64 numbers (/proc/PID/task/TID/syscall gives the number)
SYSCALLS = {0: "read", 1: "write", 7: "poll", 17: "pread", 18: "pwrite", 20: "writev",
            74: "fsync", 75: "fdatasync", 202: "futex", 232: "epoll_wait", 271: "ppoll",
            296: "pwritev"}


def newest_funneld(match):
    best = None
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                st = f.read()
        except OSError:
            continue
        if "(funneld)" in st and ") Z" not in st:
            if match:
                try:
                    with open("/proc/%s/cmdline" % p, "rb") as f:
                        if match.encode() not in f.read():
                            continue
                except OSError:
                    continue
            start = int(st.rsplit(")", 1)[1].split()[19])
            if best is None or start > best[0]:
                best = (start, p)
    return best[1] if best else None


def main():
    match = sys.argv[2] if len(sys.argv) == 3 and sys.argv[1] == "--match" else None
    if len(sys.argv) > 1 and match is None:
        sys.exit("usage: writer_stack.py [--match TEXT]")
    pid = None
    for _ in range(6000):
        pid = newest_funneld(match)
        if pid:
            break
        time.sleep(0.01)
    if pid is None:
        sys.exit("writer_stack: no funneld appeared within 60 s")
    base = "/proc/%s/task/%s/" % (pid, pid)
    try:
        open(base + "syscall").close()
    except OSError as e:
        sys.exit("writer_stack: cannot read %ssyscall (%s): it takes the right to trace "
                 "funneld" % (base, e.strerror))
    states = collections.Counter()
    idle = 0
    while True:
        try:
            with open(base + "syscall") as f:
                sc = f.read().split()
            with open(base + "stat") as f:
                run = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            break
        if not sc or sc[0] == "running":
            states["running"] += 1
        elif sc[0] == "-1":
            # not in a system call but not on a CPU: waiting for one (R),
            # or blocked in a page fault of the map (D)
            states["runnable" if run == "R" else "fault or other wait (%s)" % run] += 1
        else:
            name = SYSCALLS.get(int(sc[0]), "syscall %s" % sc[0])
            if name in ("fdatasync", "fsync", "write", "pwrite", "writev", "pwritev"):
                fd = int(sc[1], 16)
                try:
                    path = os.readlink("/proc/%s/fd/%d" % (pid, fd))
                except OSError:
                    path = "fd %d" % fd
                kind = "flush" if name in ("fdatasync", "fsync") else "write"
                states["%s %s" % (kind, os.path.basename(path.rstrip("/")))] += 1
            elif name in ("poll", "ppoll", "epoll_wait") and run == "S":
                # with a group pending the writer polls without a timeout,
                # so a poll that sleeps is a writer with nothing to do
                idle += 1
            else:
                states["other " + name] += 1
        time.sleep(SAMPLE_S)
    busy = sum(states.values())
    print("writer of funneld %s: %d samples, %d idle (waiting for work), %d busy"
          % (pid, busy + idle, idle, busy))
    for k, v in states.most_common():
        print("  %-24s %5.1f %%" % (k, 100.0 * v / busy if busy else 0))


if __name__ == "__main__":
    main()
