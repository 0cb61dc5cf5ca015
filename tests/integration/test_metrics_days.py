#!/usr/bin/python3
"""
tests/integration/test_metrics_days.py - funnel-metrics' day
pre-aggregates (METRICS.md, "How a report is computed") give the same
figures as the facts one by one: a generated history over two months
(event times, re-inquiries, reassignments, contacts, SLA breaches, the
closed loop, opportunities, wins and losses, an erasure and a capture
after it, records dated before the lead's previous one) is applied live
by a real funnel-metrics from a real funneld, in many transactions; then
every report, for many random windows (day-aligned or not, open or
closed) and filters (source, campaign, team, rep, "(no team)"), is asked
twice, from the days table (the default) and with compute=facts, and
every figure compared.  Then the view rebuilt from the log has the
digest of the live one, and so has one built in a map that starts at
1 MiB (batches aborted when it fills, and applied again).

    BUILD=build /usr/bin/python3 tests/integration/test_metrics_days.py

Counts, amounts and durations must be equal; a figure with a fraction
(a rate, a share under linear attribution) may differ in its last bits
only (relative 1e-9): a sum of fractions depends on the order it is
added in, and the days table adds a day's cells before the days.
"""
import calendar
import json
import os
import random
import subprocess
import sys

from funnel_testlib import CheckFailed, LogClient, expect, expect_eq, run_service_groups
from test_metrics import FUNNELD, METRICS, Metrics

DAY = 86400 * 10**9
H = 3600 * 10**9
START = calendar.timegm((2026, 9, 1, 0, 0, 0)) * 10**9
DAYS = 60
SOURCES = ["webinar", "ads", "organic", "partner"]
CAMPAIGNS = ["q4", "spring", ""]
FORMS = ["form-a", "form-b", "form-c", "form-d"]
OWNERS = ["ben", "cy", "dee", "eve"]
TEAMS = ["east", "west", None]
REPORTS = ["summary", "funnel", "conversion", "velocity", "followup", "closed-loop",
           "attribution", "trend"]


def history(rnd, n_leads):
    """Batches of events (one publish request each) for n_leads leads,
    with occurred_at spread over DAYS days."""
    batches = []
    for i in range(n_leads):
        lead = "L%d" % i
        t = START + rnd.randrange(DAYS * DAY)
        evs = []

        def add(typ, **data):
            nonlocal t
            e = {"type": typ, "lead": lead, "occurred_at": t, "id": "%s-%d" % (lead, len(evs))}
            if data:
                e["data"] = data
            evs.append(e)

        def later(max_h):
            nonlocal t
            t += rnd.randrange(1, max_h) * rnd.randrange(1, 3600 * 10**9 // 7)

        src = rnd.choice(SOURCES)
        camp = rnd.choice(CAMPAIGNS)
        cap = {"source": src, "form": rnd.choice(FORMS)}
        if camp:
            cap["campaign"] = camp
        add("lead.captured", **cap)
        for _ in range(rnd.choice([0, 0, 1, 2])):
            later(30)
            add("lead.captured", source=rnd.choice(SOURCES), campaign=rnd.choice(CAMPAIGNS[:2]),
                form=rnd.choice(FORMS))
        if rnd.random() < 0.15:
            later(20)
            add("lead.disqualified", reason=rnd.choice(["student", "spam"]))
        else:
            later(40)
            add("lead.qualified")
            for _ in range(rnd.choice([1, 1, 2])):
                later(10)
                a = {"owner": rnd.choice(OWNERS)}
                team = rnd.choice(TEAMS)
                if team:
                    a["team"] = team
                add("lead.assigned", **a)
                if rnd.random() < 0.3:
                    later(5)
                    add("lead.sla_breached", minutes_late=rnd.randrange(1, 90))
                if rnd.random() < 0.7:
                    later(30)
                    add("lead.contacted", channel="phone")
            r = rnd.random()
            later(50)
            if r < 0.2:
                add("lead.rejected", reason=rnd.choice(["no_budget", "bad_fit"]))
                if rnd.random() < 0.5:
                    later(100)
                    add("lead.qualified")
                    later(10)
                    add("lead.accepted")
            elif r < 0.3:
                add("lead.recycled", reason=rnd.choice(["bad_timing", "no_response"]))
            else:
                add("lead.accepted")
                if rnd.random() < 0.6:
                    later(80)
                    add("opportunity.opened", amount=rnd.randrange(1, 50) * 100)
                    if rnd.random() < 0.3:
                        later(20)
                        add("lead.captured", source=rnd.choice(SOURCES), form=rnd.choice(FORMS))
                    later(200)
                    if rnd.random() < 0.5:
                        add("deal.won", amount=rnd.randrange(1, 50) * 100)
                    else:
                        add("deal.lost", reason=rnd.choice(["price", "timing"]))
        if rnd.random() < 0.05:
            # out of order: dated two days before the lead's previous record
            t -= 2 * DAY
            add("lead.contacted", channel="email")
        if rnd.random() < 0.03:
            later(10)
            add("lead.erased")
            later(10)
            add("lead.captured", source=rnd.choice(SOURCES), form=rnd.choice(FORMS))
            later(10)
            add("lead.qualified")
        batches.append(evs)
    rnd.shuffle(batches)
    return batches


def same(a, b, path):
    """Every figure of b equals a's (fractions to 1e-9 relative)."""
    if isinstance(a, dict):
        expect(isinstance(b, dict) and sorted(a) == sorted(b),
               "%s: keys %s vs %s" % (path, sorted(a)[:20], sorted(b)[:20] if isinstance(b, dict) else b))
        for k in a:
            same(a[k], b[k], path + "." + k)
    elif isinstance(a, list):
        expect(isinstance(b, list) and len(a) == len(b),
               "%s: %d rows from the days table, %d from the facts"
               % (path, len(a), len(b) if isinstance(b, list) else -1))
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, "%s[%d]" % (path, i))
    elif isinstance(a, float) or isinstance(b, float):
        expect(isinstance(b, (int, float)) and abs(a - b) <= 1e-9 * max(abs(a), abs(b)),
               "%s: %r from the days table, %r from the facts" % (path, a, b))
    else:
        expect_eq(a, b, path)


def random_query(rnd):
    """A report and its parameters: a window (day-aligned, inside a day,
    open on either side, or none) and filters."""
    report = rnd.choice(REPORTS + ["summary"] * 3)
    p = {}
    kind = rnd.randrange(8)
    lo = START - 2 * DAY + rnd.randrange((DAYS + 4) * DAY)
    if kind == 0:
        lo -= lo % DAY
        p["from"] = lo
        p["to"] = lo + rnd.randrange(1, 40) * DAY
    elif kind == 1:
        p["from"] = lo
        p["to"] = lo + rnd.randrange(1, 30 * DAY)
    elif kind == 2:
        p["from"] = lo
        p["to"] = lo + rnd.randrange(1, DAY // 2)     # inside a day or across midnight
    elif kind == 3:
        p["from"] = lo
    elif kind == 4:
        p["to"] = lo
    elif kind in (6, 7):
        # most of a day, or of a few: its edges are read as the whole day
        # less the rest (METRICS.md)
        ds = lo - lo % DAY
        p["from"] = ds + rnd.randrange(1, 3 * H)
        p["to"] = ds + (rnd.randrange(1, 4) if kind == 7 else 1) * DAY - rnd.randrange(1, 3 * H)
    for key, values in (("source", SOURCES), ("campaign", ["q4", "spring"]),
                        ("team", ["east", "west", "(no team)"]), ("rep", OWNERS)):
        if rnd.random() < 0.2:
            p[key] = rnd.choice(values)
    if report in ("summary", "attribution") and rnd.random() < 0.6:
        p["model"] = rnd.choice(["first", "last", "linear"])
    if report in ("summary", "trend") and rnd.random() < 0.5:
        p["bucket"] = rnd.choice(["week", "day"])
    return report, p


def query_string(p):
    from urllib.parse import urlencode
    return urlencode(p)


def run_equal(res, daemon, ctx):
    log = LogClient(ctx, daemon.endpoints)
    m = Metrics(daemon, "days")
    rnd = random.Random(20261203)
    batches = history(rnd, 700)
    state = {}

    def build():
        half = len(batches) // 2
        for b in batches[:half]:
            log.publish_ok(*b)
        m.start()
        # the rest while the service applies: many transactions
        for b in batches[half:]:
            log.publish_ok(*b)
        # and some with no occurred_at: today, at the daemon's time
        for i in range(20):
            log.publish_ok({"type": "lead.captured", "lead": "now-%d" % i,
                            "data": {"source": "ads", "form": "form-a"}},
                           {"type": "lead.qualified", "lead": "now-%d" % i})
        state["head"] = log.status()["head"]
        m.wait_caught_up(state["head"], wait_s=60)
    res.run("a generated history applied live", build)

    def equal():
        n = filled = 0
        for i in range(260):
            report, p = random_query(rnd)
            qs = query_string(p)
            sep = "?" if qs else ""
            days = m.api("/api/%s%s%s" % (report, sep, qs))
            facts = m.api("/api/%s?%s%scompute=facts" % (report, qs, "&" if qs else ""))
            try:
                same(days, facts, "%s?%s" % (report, qs))
            except CheckFailed as e:
                raise CheckFailed("query %d: %s" % (i, e))
            n += 1
            if report == "summary" and not any(k in p for k in ("source", "campaign", "team", "rep")):
                filled += facts["headline"]["inquiry"] > 0 and facts["headline"]["assignments"] > 0
        expect(n == 260, "every query compared")
        expect(filled >= 10, "windows with figures in them: %d" % filled)
    res.run("every figure from the days table equals the facts' one by one", equal)

    def whole():
        # the dashboard's usual asks: all time, and whole weeks and months
        for qs in ("", "from=2026-09-07&to=2026-09-14", "from=2026-09-01&to=2026-10-01",
                   "from=2026-10-01&source=ads", "team=%28no%20team%29", "rep=ben&bucket=day"):
            days = m.api("/api/summary?" + qs)
            facts = m.api("/api/summary?%s%scompute=facts" % (qs, "&" if qs else ""))
            same(days, facts, "summary?" + qs)
        expect("compute" in m.api("/api")["params"], "/api lists compute")
        st, _, body = m.get("/api/summary?compute=fast")
        expect_eq(st, 400, "compute=fast refused (%s)" % body[:200])
        expect("compute is days or facts" in body.decode(), "the message names the values")
    res.run("all time, whole weeks and months, and the filters alone", whole)

    def pages():
        # a lead list read page by page from the index: every entry once,
        # in time order, as many as the count it drills into
        for qs, counted in (("", "/api/funnel"), ("&source=ads", "/api/funnel?source=ads"),
                            ("&from=2026-09-10&to=2026-10-10",
                             "/api/funnel?from=2026-09-10&to=2026-10-10")):
            seen, page = [], 1
            while True:
                rep = m.api("/api/leads?stage=mql&page=%d%s" % (page, qs))
                seen += [(r["ts"], r["seq"]) for r in rep["leads"]]
                if not rep["more"]:
                    break
                page += 1
            expect(page > 2, "several pages (%d)" % page)
            expect_eq(seen, sorted(set(seen)), "each entry once, in time order")
            want = {r["stage"]: r["entered"] for r in m.api(counted)["funnel"]["stages"]}["mql"]
            expect_eq(len(seen), want, "as many as the mql entries" + qs)
    res.run("lead lists: every page from the index, each entry once", pages)

    def rebuild_same():
        expect_eq(m.stop(), 0, "exit status after SIGTERM")
        cp, d = m.digest()
        expect_eq(cp, state["head"], "checkpoint at the head")
        m.ok("--rebuild", "--until-head")
        expect_eq(m.digest(), (cp, d), "digest of the rebuilt view (days table included)")
    res.run("the live view and the rebuilt one have the same digest", rebuild_same)

    def one_batch():
        # the whole log in one batch from a 1 MiB map: the days rows
        # fill it at the write before the commit, at the head; the batch
        # is thrown away and applied again in a larger map (run_small_map
        # fills it inside apply())
        small = Metrics(daemon, "one")
        p = small.run("--until-head", "--map-mb", "1", "--batch", "1000000", "--log-level",
                      "info", timeout=120)
        expect_eq(p.returncode, 0, "exit status (%s)" % p.stderr[-400:])
        expect("view map grown" in p.stderr, "the map grew: %s" % p.stderr[-400:])
        expect_eq(small.digest(), m.digest(), "digest of the view built in one batch")
    res.run("the view built in one batch, the map full before its commit, is the live one",
            one_batch)

    def old_view():
        # the view as a funnel-metrics before the days table wrote it: the
        # same tables but days, and the runtime's record of its table set
        dump = subprocess.run(["mdb_dump", "-a", m.view], capture_output=True, timeout=60)
        expect_eq(dump.returncode, 0, "mdb_dump (%s)" % dump.stderr[-300:])
        out, skip, section = [], False, []
        key = None
        for line in dump.stdout.decode().split("\n"):
            if line.startswith("database="):
                skip = line == "database=days"
                section = line
            if skip:
                continue
            if section == "database=_runtime" and line.startswith(" "):
                if key is None:
                    key = bytes.fromhex(line[1:])
                else:
                    if key == b"tables":
                        line = " " + b"leads\nfacts\ncounters\nindex".hex()
                    key = None
            out.append(line)
        old = Metrics(daemon, "old")
        os.makedirs(old.view)
        load = subprocess.run(["mdb_load", old.view], input="\n".join(out).encode(),
                              capture_output=True, timeout=60)
        expect_eq(load.returncode, 0, "mdb_load (%s)" % load.stderr[-300:])
        p = old.run("--until-head", timeout=30)
        expect(p.returncode != 0, "a view without the days table is refused")
        expect("rebuild it (--rebuild)" in p.stderr, "the refusal asks for --rebuild: %s"
               % p.stderr[-400:])
        p = old.run("report", "summary", timeout=30)
        expect(p.returncode != 0 and "--rebuild" in p.stderr,
               "report on it asks for --rebuild: %s" % p.stderr[-300:])
        old.ok("--rebuild", "--until-head")
        expect_eq(old.digest(), m.digest(), "rebuilt once, the view is the live one's")
    res.run("a view from before the days table is refused until --rebuild", old_view)


def run_small_map(res, daemon, ctx):
    # A batch's days and counters rows live in memory until its commit
    # (mx_rows): a batch thrown away because the map filled, in apply()
    # or in the write before the commit, must forget them and be applied
    # again from the checkpoint.  One batch for the whole log in a map
    # of 1 MiB fills it both ways (long labels: each lead row and fact is
    # large); the view must be the one built in batches in a large map.
    log = LogClient(ctx, daemon.endpoints)
    rnd = random.Random(7)
    pad = "p" * 150

    def fill():
        ts = START
        for b in range(0, 3000, 100):
            evs = []
            for i in range(b, b + 100):
                ts += 60 * 10**9
                lead = "big-%d-%s" % (i, pad[:40])
                evs.append({"type": "lead.captured", "lead": lead, "occurred_at": ts,
                            "data": {"source": "%s-%s" % (rnd.choice(SOURCES), pad),
                                     "campaign": "%s-%s" % (rnd.choice(CAMPAIGNS), pad),
                                     "form": "%s-%s" % (rnd.choice(FORMS), pad)}})
                if i % 3:
                    evs.append({"type": "lead.qualified", "lead": lead, "occurred_at": ts + H})
            log.publish_ok(*evs)
    res.run("a history of long labels", fill)

    def small_map():
        big = Metrics(daemon, "big")
        big.ok("--until-head")
        small = Metrics(daemon, "small")
        p = small.run("--until-head", "--map-mb", "1", "--batch", "1000000", "--log-level",
                      "info", timeout=120)
        expect_eq(p.returncode, 0, "exit status (%s)" % p.stderr[-400:])
        grown = p.stderr.count("view map grown")
        expect(grown >= 2, "the map grew (%d times): %s" % (grown, p.stderr[-400:]))
        cp, d = big.digest()
        expect_eq(cp, log.status()["head"], "checkpoint at the head")
        expect_eq(small.digest(), (cp, d), "digest of the view built in a growing map")
    res.run("a view built in one batch from a 1 MiB map, thrown away as the map fills, "
            "is the one built in a large map", small_map)


def main():
    return run_service_groups(FUNNELD, METRICS, (run_equal, run_small_map))


if __name__ == "__main__":
    sys.exit(main())
