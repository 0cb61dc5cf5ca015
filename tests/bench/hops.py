#!/usr/bin/python3
"""
tests/bench/hops.py - where a request's time goes between threads, from a
`perf script` of sched:sched_waking and sched:sched_switch (tests/bench/
hops.sh records one and names the threads).  sched_waking, not
sched_wakeup: it fires in the waker's context, while a wake-up of a task
on another CPU is completed there (its sched_wakeup then names that CPU's
idle task as the waker).

usage: hops.py SCRIPT ROLES CHAIN
  SCRIPT  `perf script -F tid,cpu,time,event,trace` output
  ROLES   lines "tid role" (app, cIO, dIO, recv, writer, ...)
  CHAIN   comma list of waker>wakee steps, the hops of one request, e.g.
          app>cIO,cIO>dIO,dIO>recv,recv>writer,recv>dIO,dIO>cIO,cIO>app

A cycle starts at a wake-up of the first step; each later step is the
first such wake-up after the previous wakee ran (other wake-ups are
ignored), and the cycle ends when the last wakee runs (cycles longer than
5 ms, or with a wakee that ran more than 1 ms after its wake-up, are
dropped: a task woken while still on its CPU runs on without a switch).  For each step it prints the median time from the
wake-up to the wakee running (with the share woken on the waker's own
CPU), and how long the wakee then ran until it woke the next one.  Only
scheduler events are traced, so the figures carry little tracing cost;
they are medians of a sample, never asserted anywhere.
"""
import re
import statistics
import sys

LINE = re.compile(r'^\s*(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(sched_waking|sched_wakeup|sched_switch):(.*)')


def load(script, roles):
    ev = []   # (us, 'W' | 'R', waker role, wakee role, cpu)
    with open(script) as f:
        for line in f:
            m = LINE.search(line)
            if not m:
                continue
            tid, cpu, t, kind, rest = m.groups()
            t = float(t) * 1e6
            if kind != 'sched_switch':
                p = re.search(r' pid=(\d+)', rest).group(1)
                if p in roles:
                    ev.append((t, 'W', roles.get(tid, 'other'), roles[p], cpu))
            else:
                n = re.search(r'next_pid=(\d+)', rest).group(1)
                if n in roles:
                    ev.append((t, 'R', None, roles[n], cpu))
    return ev


def cycles_of(ev, chain):
    out, i, n = [], 0, len(ev)
    while i < n:
        if not (ev[i][1] == 'W' and (ev[i][2], ev[i][3]) == chain[0]):
            i += 1
            continue
        ms, j, ok = [], i, True
        for k, (a, b) in enumerate(chain):
            if k > 0:
                while j < n and not (ev[j][1] == 'W' and (ev[j][2], ev[j][3]) == (a, b)):
                    if ev[j][1] == 'W' and (ev[j][2], ev[j][3]) == chain[0]:
                        ok = False   # the next request began: this one is incomplete
                        break
                    j += 1
                if not ok or j >= n:
                    ok = False
                    break
            tw, cw = ev[j][0], ev[j][4]
            while j < n and not (ev[j][1] == 'R' and ev[j][3] == b):
                j += 1
            if j >= n:
                ok = False
                break
            if ev[j][0] - tw > 1000:
                ok = False   # woken while still on its CPU, or held off by other work
                break
            ms.append((tw, ev[j][0], cw == ev[j][4]))
        if ok and ms[-1][1] - ms[0][0] < 5000:
            out.append(ms)
            i = j
        else:
            i += 1
    return out


def main():
    script, rolefile, chain = sys.argv[1:4]
    with open(rolefile) as f:
        roles = dict(l.split() for l in f if l.strip())
    chain = [tuple(s.split('>')) for s in chain.split(',')]
    cyc = cycles_of(load(script, roles), chain)
    print('%d complete cycles' % len(cyc))
    if not cyc:
        return 1
    tot = sorted(c[-1][1] - c[0][0] for c in cyc)
    print('first wake-up -> last wakee running: median %.1f us, p90 %.1f us'
          % (statistics.median(tot), tot[int(0.9 * len(tot))]))
    for k, (a, b) in enumerate(chain):
        wl = [c[k][1] - c[k][0] for c in cyc]
        same = sum(1 for c in cyc if c[k][2])
        s = '  %-6s wakes %-6s: running %5.1f us later (%3.0f%% on the same CPU)' % (
            a, b, statistics.median(wl), 100.0 * same / len(cyc))
        if k + 1 < len(chain):
            s += '; runs %5.1f us until it wakes %s' % (
                statistics.median([c[k + 1][0] - c[k][1] for c in cyc]), chain[k + 1][1])
        print(s)
    return 0


if __name__ == '__main__':
    sys.exit(main())
