#!/usr/bin/python3
"""
tests/integration/test_metrics.py - funnel-metrics end to end against a
real funneld: a scripted history whose every figure is worked out by hand
below (counts as literals; durations from the records' daemon timestamps,
with the nearest-rank percentile written out here, independently of the
C code), checked through /api after a kill -9 and restart, after
--rebuild (same digest) and in a view built from nothing; each endpoint;
bad parameters answered 400 with a message; /metrics through
`promtool check metrics`; and the dashboard in headless Chromium
(tests/browser/dashboard.test.mjs, its checks counted here).

Run with Debian's /usr/bin/python3 (python3-zmq, python3-msgpack):

    BUILD=build FUNNELD=build/bin/funneld /usr/bin/python3 tests/integration/test_metrics.py

funnel-metrics is $BUILD/bin/funnel-metrics.  Every process, request and
wait is bounded; prints "ok - name" / "not ok - name: reason" and
"N passed, M failed".
"""
import calendar
import decimal
import hashlib
import json
import math
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from funnel_testlib import (REPO, CheckFailed, LogClient, Service, expect, expect_eq,
                            expect_in, run_service_groups, stop_proc)

BUILD = os.environ.get("BUILD", "build")
FUNNELD = os.environ.get("FUNNELD", os.path.join(REPO, BUILD, "bin", "funneld"))
METRICS = os.path.join(os.path.dirname(FUNNELD), "funnel-metrics")
HTTP_TIMEOUT_S = 10
BROWSER_TEST = os.path.join(REPO, "tests", "browser", "dashboard.test.mjs")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Metrics(Service):
    """funnel-metrics against one daemon, with one view and one HTTP port
    (no rules file: its command line has --http in place of --rules)."""

    def __init__(self, daemon, name):
        super().__init__(METRICS, daemon, name)
        self.port = free_port()
        self.proc = None

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def args(self, *extra):
        eps = self.daemon.endpoints
        return [METRICS, "--view", self.view, "--http", "127.0.0.1:%d" % self.port,
                "--ingest", eps["ingest"], "--publish", eps["publish"],
                "--query", eps["query"]] + list(extra)

    def start(self, *extra):
        self.proc = super().start(*extra)

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self):
        return stop_proc(self.proc) if self.proc else None

    def get(self, path):
        """(status, content type, body bytes); HTTP errors are answers too."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=HTTP_TIMEOUT_S) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), e.read()

    def api(self, path):
        st, ct, body = self.get(path)
        expect_eq(st, 200, "status of %s (%s)" % (path, body[:300]))
        expect_in("application/json", ct, "content type of %s" % path)
        return json.loads(body)

    def wait_caught_up(self, head, wait_s=20.0):
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                st, _, body = self.get("/healthz")
                h = json.loads(body)
                # the head /healthz shows is the prober's last read: wait
                # for one that has seen `head` too
                if st == 200 and h["checkpoint"] >= head and h["head"] >= head:
                    return h
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise CheckFailed("metrics view not at seq %d in %.0f s: %s" % (head, wait_s, self.tail()))


# ---- the scripted history ----
#
# Each step is one publish request (so each has its own daemon ts), with
# the stage change it makes, written by hand: (lead, from, to) or None.

def ev(t, lead, **data):
    e = {"type": t, "lead": lead}
    if data:
        e["data"] = data
    return e


SCRIPT = [
    (ev("lead.captured", "A", source="webinar", campaign="q4", form="form-a"), "inquiry"),  # 1
    (ev("lead.captured", "B", source="ads", campaign="spring", form="form-b"), "inquiry"),  # 2
    (ev("lead.captured", "C", source="webinar", campaign="q4", form="form-a"), "inquiry"),  # 3
    (ev("lead.qualified", "A"), "mql"),                                                    # 4
    (ev("lead.qualified", "B"), "mql"),                                                    # 5
    (ev("lead.qualified", "C"), "mql"),                                                    # 6
    (ev("lead.assigned", "A", owner="ben", team="east", rule="r1"), None),                 # 7
    (ev("lead.assigned", "B", owner="cy", team="west", rule="r2"), None),                  # 8
    (ev("lead.assigned", "C", owner="ben", team="east", rule="r1"), None),                 # 9
    (ev("lead.contacted", "A", channel="phone"), None),                                    # 10
    (ev("lead.captured", "A", source="ads", campaign="spring", form="form-b"), None),      # 11 re-inquiry
    (ev("lead.accepted", "A"), "sal"),                                                     # 12
    (ev("lead.rejected", "B", reason="no_budget"), "nurture"),                             # 13
    (ev("lead.sla_breached", "C", owner="ben", team="east", minutes_late=5), None),        # 14
    (ev("lead.contacted", "C"), None),                                                     # 15
    (ev("lead.recycled", "C", reason="bad_timing"), "nurture"),                            # 16
    (ev("lead.captured", "D", source="organic", form="form-c"), "inquiry"),                # 17
    (ev("lead.disqualified", "D", reason="student"), "disqualified"),                      # 18
    (ev("opportunity.opened", "A", amount=1000), "sql"),                                   # 19
    (ev("lead.qualified", "B"), "mql"),                                                    # 20
    (ev("lead.accepted", "B"), "sal"),                                                     # 21
    (ev("opportunity.opened", "B", amount=500), "sql"),                                    # 22
    (ev("deal.won", "A", amount=900), "won"),                                              # 23
    (ev("lead.captured", "E", source="webinar", campaign="q4", form="form-a"), "inquiry"),  # 24
    (ev("lead.erased", "E"), "erased"),                                                    # 25
    (ev("lead.captured", "F", source="ads", campaign="spring", form="form-b"), "inquiry"),  # 26
    (ev("lead.assigned", "F", owner="dee", team="west"), None),                            # 27
    (ev("deal.lost", "B", reason="price"), "lost"),                                        # 28
    ({"type": "x.note", "lead": "G", "data": {"text": "not a funnel lead"}}, None),        # 29
    (ev("lead.contacted", "C"), None),                                                     # 30 a second contact
]
HALF = 16      # the service is killed after this many steps


def publish_steps(log, steps, first):
    for i, (e, _) in enumerate(steps):
        log.publish_ok(dict(e, id="script-%d" % (first + i)))
        time.sleep(0.002)      # each step its own group, its own ts


def nearest_rank(values, p):
    """The smallest value with at least a share p of the values at or below it."""
    v = sorted(values)
    k = math.ceil(p * len(v))
    return v[max(k, 1) - 1]


def near(a, b):
    return a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))


def expect_dur(got, values, what):
    expect_eq(got["n"], len(values), what + " n")
    if not values:
        expect(got["median_s"] is None and got["p90_s"] is None, what + ": null when empty")
        return
    for key, p in (("median_s", 0.5), ("p90_s", 0.9)):
        want = nearest_rank(values, p) / 1e9
        expect(near(got[key], want), "%s %s: got %r, want %r" % (what, key, got[key], want))


def expect_rate(got, num, den, what):
    if den == 0:
        expect(got is None, "%s: null for an empty denominator, got %r" % (what, got))
    else:
        expect(near(got, num / den), "%s: got %r, want %d/%d" % (what, got, num, den))


def rows(lst, *keys):
    return {tuple(r[k] for k in keys): r for r in lst}


class Expected:
    """The scripted history's figures, by hand, from the records' ts."""

    def __init__(self, recs):
        by_id = {r.get("id"): r for r in recs}
        self.t = [None] + [by_id["script-%d" % i]["ts"] for i in range(1, len(SCRIPT) + 1)]
        t = self.t
        for i in range(2, len(t)):
            expect(t[i] > t[i - 1], "steps %d and %d have distinct timestamps" % (i - 1, i))
        self.in_stage = {
            "inquiry": [t[4] - t[1], t[5] - t[2], t[6] - t[3], t[18] - t[17], t[25] - t[24]],
            "mql": [t[12] - t[4], t[13] - t[5], t[16] - t[6], t[21] - t[20]],
            "sal": [t[19] - t[12], t[22] - t[21]],
            "sql": [t[23] - t[19], t[28] - t[22]],
            "nurture": [t[20] - t[13]],
            "lost": [],
        }
        self.to_won = [t[23] - t[1]]
        self.speed = [t[10] - t[7], t[15] - t[9]]


def check_all_time(m, x):
    """Every figure of the whole history."""
    s = m.api("/api/summary")
    fun = s["funnel"]
    entered = {r["stage"]: r["entered"] for r in fun["stages"]}
    now = {r["stage"]: r["now"] for r in fun["stages"]}
    expect_eq(entered, {"inquiry": 6, "mql": 4, "sal": 2, "sql": 2, "won": 1, "lost": 1,
                        "nurture": 2, "disqualified": 1, "erased": 1}, "stage entries")
    expect_eq(now, {"inquiry": 1, "mql": 0, "sal": 0, "sql": 0, "won": 1, "lost": 1,
                    "nurture": 1, "disqualified": 1, "erased": 1}, "leads in each stage now")
    bs = rows(fun["by_source"], "source", "campaign")
    # E's erasure is an entry of E, labelled with E's first touch like the rest
    expect_eq(sorted(bs), [("ads", "spring"), ("organic", ""), ("webinar", "q4")],
              "source/campaign rows")
    expect_eq({k: bs[("ads", "spring")][k] for k in ("inquiry", "mql", "sal", "sql", "won", "lost")},
              {"inquiry": 2, "mql": 2, "sal": 1, "sql": 1, "won": 0, "lost": 1}, "ads/spring row")
    expect_eq({k: bs[("webinar", "q4")][k] for k in ("inquiry", "mql", "sal", "sql", "won")},
              {"inquiry": 3, "mql": 2, "sal": 1, "sql": 1, "won": 1}, "webinar/q4 row")

    c = s["conversion"]
    for name, a, b in (("inquiry_to_mql", 6, 4), ("mql_to_sal", 4, 2), ("sal_to_sql", 2, 2),
                       ("sql_to_won", 2, 1)):
        expect_eq((c["period"][name]["from_entries"], c["period"][name]["to_entries"]), (a, b),
                  "period " + name)
        expect_rate(c["period"][name]["rate"], b, a, "period rate " + name)
    expect_rate(c["period"]["win_rate"]["rate"], 1, 2, "period win rate")
    for name, a, b in (("inquiry_to_mql", 6, 3), ("mql_to_sal", 3, 2), ("sal_to_sql", 2, 2),
                       ("sql_to_won", 2, 1)):
        expect_eq((c["cohort"][name]["entered"], c["cohort"][name]["went_on"]), (a, b),
                  "cohort " + name)
        expect_rate(c["cohort"][name]["rate"], b, a, "cohort rate " + name)
    w = c["cohort"]["win_rate"]
    expect_eq((w["entered"], w["won"], w["lost"]), (2, 1, 1), "cohort win rate counts")
    expect_rate(w["rate"], 1, 2, "cohort win rate")

    v = s["velocity"]
    for stage, vals in x.in_stage.items():
        expect_dur(v["time_in_stage"][stage], vals, "time in " + stage)
    expect_dur(v["capture_to_won"], x.to_won, "capture to won")

    f = s["followup"]
    expect_eq((f["assignments"], f["contacted"], f["sla_breaches"]), (4, 2, 1),
              "assignments, first contacts, SLA breaches")
    expect_dur(f["speed_to_lead"], x.speed, "speed to lead")
    for k in ("within_5m", "within_1h", "within_24h"):
        expect_rate(f[k], 2, 4, k)
    teams = rows(f["teams"], "team")
    expect_eq(sorted(teams), [("east",), ("west",)], "teams")
    e, wst = teams[("east",)], teams[("west",)]
    expect_eq((e["assignments"], e["contacted"], e["sla_breaches"]), (2, 2, 1), "east")
    expect_dur(e["speed_to_lead"], x.speed, "east speed to lead")
    expect_rate(e["within_5m"], 2, 2, "east within 5m")
    expect_eq((wst["assignments"], wst["contacted"], wst["sla_breaches"]), (2, 0, 0), "west")
    expect_rate(wst["within_24h"], 0, 2, "west within 24h")
    reps = rows(f["reps"], "owner", "team")
    expect_eq(sorted(reps), [("ben", "east"), ("cy", "west"), ("dee", "west")], "reps")
    expect_eq((reps[("ben", "east")]["assignments"], reps[("ben", "east")]["sla_breaches"]),
              (2, 1), "ben")

    cl = s["closed_loop"]
    expect_eq({k: cl[k] for k in ("mql_entries", "accepted", "rejected", "recycled",
                                  "disqualified", "lost")},
              {"mql_entries": 4, "accepted": 2, "rejected": 1, "recycled": 1,
               "disqualified": 1, "lost": 1}, "closed-loop counts")
    expect_rate(cl["rejection_rate"], 1, 3, "rejection rate")
    expect_rate(cl["recycle_rate"], 1, 4, "recycle rate")
    expect_eq({(r["event"], r["reason"]): r["count"] for r in cl["reasons"]},
              {("lead.rejected", "no_budget"): 1, ("lead.recycled", "bad_timing"): 1,
               ("lead.disqualified", "student"): 1, ("deal.lost", "price"): 1}, "reasons")
    src = rows(cl["by_source"], "source", "campaign")
    ads, web = src[("ads", "spring")], src[("webinar", "q4")]
    expect_eq((ads["mql_entries"], ads["accepted"], ads["rejected"], ads["recycled"]),
              (2, 1, 1, 0), "ads/spring closed loop")
    expect_rate(ads["rejection_rate"], 1, 2, "ads/spring rejection rate")
    expect_eq((web["mql_entries"], web["accepted"], web["rejected"], web["recycled"]),
              (2, 1, 0, 1), "webinar/q4 closed loop")
    expect_rate(web["recycle_rate"], 1, 2, "webinar/q4 recycle rate")
    expect_eq({(r["event"], r["reason"], r["source"], r["campaign"]): r["count"]
               for r in cl["reasons_by_source"]},
              {("lead.rejected", "no_budget", "ads", "spring"): 1,
               ("lead.recycled", "bad_timing", "webinar", "q4"): 1,
               ("lead.disqualified", "student", "organic", ""): 1,
               ("deal.lost", "price", "ads", "spring"): 1}, "reasons by source and campaign")

    # attribution: A's touches at its opportunity: webinar/q4/form-a then
    # ads/spring/form-b; B's: ads/spring/form-b.  A: 1000 pipeline, 900 won;
    # B: 500 pipeline, lost.
    want = {
        "first": {"webinar": (1000, 900, 1, 1), "ads": (500, 0, 1, 0)},
        "last": {"ads": (1500, 900, 2, 1)},
        "linear": {"webinar": (500, 450, 0.5, 0.5), "ads": (1000, 450, 1.5, 0.5)},
    }
    camp = {"webinar": "q4", "ads": "spring"}
    form = {"webinar": "form-a", "ads": "form-b"}
    for model, by in want.items():
        a = m.api("/api/attribution?model=" + model)["attribution"]
        expect_eq(a["model"], model, "model echoed")
        expect_eq((a["pipeline"], a["revenue"], a["opportunities"], a["won"]), (1500, 900, 2, 1),
                  model + ": totals")
        for dim, keyof in (("source", lambda s: s), ("campaign", camp.get), ("form", form.get)):
            got = {r[dim]: (r["pipeline"], r["revenue"], r["opportunities"], r["won"])
                   for r in a["by_" + dim]}
            expect_eq(got, {keyof(k): v for k, v in by.items()}, "%s by %s" % (model, dim))
    expect_eq(s["attribution"]["model"], "linear", "summary's default model")

    tr = m.api("/api/trend?bucket=day")["trend"]
    expect_eq(tr["bucket"], "day", "bucket echoed")
    buckets = {}
    for i, (_, to) in enumerate(SCRIPT, 1):
        if to:
            day = x.t[i] // (86400 * 10**9) * 86400 * 10**9
            buckets.setdefault(day, {}).setdefault(to, 0)
            buckets[day][to] += 1
    got = {int(r["start_ns"]): {k: n for k, n in r["entered"].items() if n}
           for r in tr["series"]}
    expect_eq(got, buckets, "entries per day")
    week = m.api("/api/trend")["trend"]
    expect_eq(sum(sum(r["entered"].values()) for r in week["series"]), 20,
              "entries per week add up to all entries")
    for r in week["series"]:
        expect_eq(time.gmtime(r["start_ns"] / 1e9).tm_wday, 0, "weeks start on Monday")


def check_window_and_filters(m, x):
    t = x.t
    s = m.api("/api/summary?from=%d&to=%d" % (t[19], t[28]))
    entered = {r["stage"]: r["entered"] for r in s["funnel"]["stages"]}
    expect_eq(entered, {"inquiry": 2, "mql": 1, "sal": 1, "sql": 2, "won": 1, "lost": 0,
                        "nurture": 0, "disqualified": 0, "erased": 1},
              "entries in [step 19, step 28)")
    now = {r["stage"]: r["now"] for r in s["funnel"]["stages"]}
    expect_eq(now["won"], 1, "the balance is now, whatever the window")
    c = s["conversion"]["cohort"]
    expect_eq((c["inquiry_to_mql"]["entered"], c["inquiry_to_mql"]["went_on"]), (2, 0),
              "window cohort inquiry->mql (E, F)")
    expect(c["mql_to_sal"]["rate"] is None, "no first MQL in the window: rate null")
    expect_eq((c["sal_to_sql"]["entered"], c["sal_to_sql"]["went_on"]), (1, 1),
              "window cohort sal->sql (B)")
    expect_eq((c["win_rate"]["entered"], c["win_rate"]["won"], c["win_rate"]["lost"]),
              (2, 1, 1), "window cohort win rate: B's loss after the window still counts")
    expect_eq((s["followup"]["assignments"], s["attribution"]["pipeline"],
               s["attribution"]["revenue"]), (1, 1500, 900), "window follow-up and money")
    expect_dur(s["velocity"]["time_in_stage"]["sal"], [t[19] - t[12], t[22] - t[21]],
               "window time in sal")

    ads = m.api("/api/funnel?source=ads")["funnel"]
    expect_eq({r["stage"]: r["entered"] for r in ads["stages"] if r["entered"]},
              {"inquiry": 2, "mql": 2, "sal": 1, "sql": 1, "lost": 1, "nurture": 1},
              "entries of leads from ads")
    expect_eq({r["stage"]: r["now"] for r in ads["stages"] if r["now"]},
              {"inquiry": 1, "lost": 1}, "balance of leads from ads")
    q4 = m.api("/api/closed-loop?campaign=q4")["closed_loop"]
    expect_eq((q4["mql_entries"], q4["recycled"], q4["rejected"]), (2, 1, 0), "campaign q4")
    both = m.api("/api/followup?source=webinar&campaign=q4")["followup"]
    expect_eq((both["assignments"], both["contacted"], both["sla_breaches"]), (2, 2, 1),
              "follow-up of webinar/q4 leads")
    day = time.strftime("%Y-%m-%d", time.gmtime(t[1] / 1e9))
    d = m.api("/api/funnel?from=%s" % day)
    expect_eq(d["window"]["from"], calendar.timegm(time.strptime(day, "%Y-%m-%d")) * 10**9,
              "date parsed as UTC midnight")
    late = m.api("/api/funnel?from=2200-01-01")
    expect_eq(sum(r["entered"] for r in late["funnel"]["stages"]), 0, "a future window is empty")


def period_figures(x, lo, hi):
    """The headline figures of [lo, hi) (ns), counted from SCRIPT by hand."""
    t = x.t
    f = {"captured": 0, "mql": 0, "pipeline": 0, "revenue": 0, "sla": 0}
    for i, (e, to) in enumerate(SCRIPT, 1):
        if not lo <= t[i] < hi:
            continue
        f["captured"] += to == "inquiry"
        f["mql"] += to == "mql"
        f["sla"] += e["type"] == "lead.sla_breached"
        if e["type"] == "opportunity.opened":
            f["pipeline"] += e["data"]["amount"]
        if e["type"] == "deal.won":
            f["revenue"] += e["data"]["amount"]
    return f


def expect_period(x):
    """A window of the script, the period of the same length before it,
    and the figures of both."""
    lo, hi = x.t[13], x.t[28]
    return {"from": str(lo), "to": str(hi), "cur": period_figures(x, lo, hi),
            "prev": period_figures(x, lo - (hi - lo), lo)}


def expect_lead():
    """What the dashboard shows behind the SAL count: A and B, and A's
    timeline (every scripted event of A, in order)."""
    return {"stage": "sal", "listed": ["A", "B"], "lead": "A",
            "events": [e["type"] for e, _ in SCRIPT if e["lead"] == "A"],
            "facts": ["ben (east)", "rule r1", "first contact", "won"]}


def check_drill_and_periods(m, x, log):
    t = x.t
    # the leads behind a number: paged from the view's index
    sal = m.api("/api/leads?stage=sal")
    expect_eq([(r["lead"], r["event"], r["from"]) for r in sal["leads"]],
              [("A", "lead.accepted", "mql"), ("B", "lead.accepted", "mql")], "leads that entered sal")
    expect_eq((sal["page"], sal["more"]), (1, False), "one page")
    expect_eq([r["stage_now"] for r in sal["leads"]], ["won", "lost"], "their stage now")
    win = m.api("/api/leads?stage=inquiry&from=%d&to=%d" % (t[3], t[26]))
    expect_eq([r["lead"] for r in win["leads"]], ["C", "D", "E"], "inquiry entries in [3, 26)")
    src = m.api("/api/leads?stage=inquiry&source=ads")
    expect_eq([r["lead"] for r in src["leads"]], ["B", "F"], "inquiry entries from ads")
    why = m.api("/api/leads?stage=nurture&reason=no_budget")
    expect_eq([(r["lead"], r["reason"], r["owner"], r["team"]) for r in why["leads"]],
              [("B", "no_budget", "cy", "west")], "nurture entries for no_budget, with the rep")
    asg = m.api("/api/leads?stage=assigned&rep=ben")
    expect_eq([r["lead"] for r in asg["leads"]], ["A", "C"], "assignments of ben")
    expect_eq(m.api("/api/leads?stage=sla_breached")["leads"][0]["lead"], "C", "SLA breaches")
    st, _, body = m.get("/api/leads?stage=bogus")
    expect_eq(st, 400, "an unknown stage is refused")
    expect_eq(json.loads(body)["param"], "stage", "the parameter named")
    st, _, body = m.get("/api/leads?stage=sal&page=0")
    expect_eq((st, json.loads(body)["param"]), (400, "page"), "page 0 is refused")
    expect_eq(m.api("/api/leads?stage=sal&page=2")["leads"], [], "past the last page: nothing")

    # a lead's timeline: the view's row and the log's events
    a = m.api("/api/lead/A")
    expect_eq([e["type"] for e in a["events"]], [e["type"] for e, _ in SCRIPT if e["lead"] == "A"],
              "A's events from funneld")
    expect_eq(a["log"], "ok", "the log answered")
    expect_eq(a["view"]["stage"], "won", "A is won")
    asg = a["view"]["assignment"]
    expect_eq((asg["owner"], asg["team"], asg["ts"]), ("ben", "east", t[7]), "A's assignment")
    expect(near(asg["first_contact_s"], (t[10] - t[7]) / 1e9), "A's SLA clock: first contact")
    expect_eq([e["data"].get("rule") for e in a["events"] if e["type"] == "lead.assigned"], ["r1"],
              "the assignment's rule")
    st, _, _ = m.get("/api/lead/nobody")
    expect_eq(st, 404, "a lead the view does not have")

    # picker values
    v = m.api("/api/values")["values"]
    expect_eq((v["sources"], v["campaigns"], v["teams"], v["reps"]),
              (["ads", "organic", "webinar"], ["q4", "spring"], ["east", "west"], ["ben", "cy", "dee"]),
              "values in the view")

    # reps: acceptance, rejection with reasons, pipeline and won
    reps = rows(m.api("/api/followup")["followup"]["reps"], "owner", "team")
    ben, cy = reps[("ben", "east")], reps[("cy", "west")]
    expect_eq((ben["accepted"], ben["rejected"], ben["pipeline"], ben["won"], ben["revenue"]),
              (1, 0, 1000, 1, 900), "ben: A accepted, opened 1000, won 900")
    expect_rate(ben["acceptance_rate"], 1, 1, "ben's acceptance rate")
    expect_eq([(r["event"], r["reason"], r["count"]) for r in ben["reasons"]],
              [("lead.recycled", "bad_timing", 1)], "ben's closed-loop reasons")
    expect_eq((cy["accepted"], cy["rejected"], cy["pipeline"], cy["won"]), (1, 1, 500, 0),
              "cy: B rejected, accepted later, opened 500")
    expect_rate(cy["rejection_rate"], 1, 2, "cy's rejection rate")
    expect_eq([(r["event"], r["reason"]) for r in cy["reasons"]],
              [("deal.lost", "price"), ("lead.rejected", "no_budget")], "cy's reasons")
    # the rep and team filters: facts made while the lead was theirs
    east = m.api("/api/funnel?team=east")["funnel"]["stages"]
    expect_eq({r["stage"]: r["entered"] for r in east if r["entered"]},
              {"sal": 1, "sql": 1, "won": 1, "nurture": 1}, "stage entries while assigned to east")

    # the previous period of the same length, as counted by hand
    p = expect_period(x)
    s = m.api("/api/summary?from=%s&to=%s" % (p["from"], p["to"]))
    lo, hi = int(p["from"]), int(p["to"])
    expect_eq((s["previous"]["window"]["from"], s["previous"]["window"]["to"]),
              (lo - (hi - lo), lo), "the previous window")
    for got, want in ((s["headline"], p["cur"]), (s["previous"]["headline"], p["prev"])):
        expect_eq((got["inquiry"], got["mql"], got["pipeline"], got["revenue"], got["sla_breaches"]),
                  (want["captured"], want["mql"], want["pipeline"], want["revenue"], want["sla"]),
                  "headline figures")
    expect(m.api("/api/summary")["previous"] is None, "no previous period of an open window")

    # the rules in force, from rules.changed
    log.publish_ok({"type": "rules.changed", "id": "test-rules-1",
                    "data": {"service": "scoring", "hash": "ab" * 32, "version": "v7",
                             "previous_hash": "", "text": "version: v7\n"}})
    m.wait_caught_up(log.status()["head"])
    r = m.api("/api/summary")["rules"]
    expect_eq([(x_["service"], x_["version"], x_["hash"]) for x_ in r], [("scoring", "v7", "ab" * 32)],
              "the rules in force")


def run_browser(res, m, daemon, x, goals=None):
    """tests/browser/dashboard.test.mjs against the running service; each of
    its checks counts as one here (with goals: only its goals panel)."""
    node = shutil.which("node")
    modules = os.path.join(REPO, "tests", "browser", "node_modules", "playwright-core")
    if node is None or not os.path.isdir(modules):
        res.not_ok("the dashboard in headless Chromium", "needs node and tests/browser/"
                   "node_modules (make deps runs npm ci there)")
        return
    st, _, body = m.get("/api/funnel")
    counts = {r["stage"]: r["entered"] for r in json.loads(body)["funnel"]["stages"]}
    ads = m.api("/api/funnel?source=ads")["funnel"]["stages"]
    env = dict(os.environ, METRICS_URL=m.url("/"), INGEST=daemon.endpoints["ingest"],
               EXPECT_COUNTS=json.dumps(counts),
               EXPECT_ADS_INQUIRY=str([r["entered"] for r in ads if r["stage"] == "inquiry"][0]),
               EXPECT_PERIOD=json.dumps(expect_period(x) if x else {}),
               EXPECT_LEAD=json.dumps(expect_lead()),
               SCREENSHOTS=os.path.join(REPO, BUILD, "screenshots"),
               **({"EXPECT_GOALS": json.dumps(goals)} if goals else {}),
               FUNNEL_BIN=os.path.abspath(os.path.join(os.path.dirname(FUNNELD), "funnel")))
    try:
        p = subprocess.run([node, BROWSER_TEST], capture_output=True, text=True, timeout=150,
                           env=env, cwd=os.path.dirname(BROWSER_TEST))
    except subprocess.TimeoutExpired:
        res.not_ok("the dashboard in headless Chromium", "timed out after 150 s")
        return
    seen = failed = 0
    for line in p.stdout.splitlines():
        if line.startswith("ok - "):
            res.ok("dashboard: " + line[5:])
            seen += 1
        elif line.startswith("not ok - "):
            res.not_ok("dashboard: " + line[9:], "(in Chromium)")
            seen += 1
            failed += 1
    # a run that stopped part way (no summary line, or a failing exit no
    # "not ok" explains) lost the checks it did not reach: a failure too
    summary = re.search(r"^\d+ passed, \d+ failed$", p.stdout, re.M)
    if seen == 0 or summary is None or (p.returncode != 0 and failed == 0):
        res.not_ok("the dashboard in headless Chromium", "exit %d: %s"
                   % (p.returncode, (p.stdout + p.stderr)[-1500:]))


def run_growth(res, daemon, ctx):
    """The view's map grows (from 1 MiB) while the HTTP thread reads it
    without pause: every answer is whole, the service lives on, and the
    figures come out right."""
    log = LogClient(ctx, daemon.endpoints)
    m = Metrics(daemon, "grow")
    leads = 2000
    answers = {"ok": 0, "bad": []}
    stop = threading.Event()
    lock = threading.Lock()

    def poll(i):
        paths = ["/api/summary", "/metrics", "/api/funnel?source=s-1", "/healthz"]
        while not stop.is_set():
            path = paths[i % len(paths)]
            i += 1
            try:
                st, _, body = m.get(path)
                if st == 200 or (path == "/healthz" and st == 503):
                    if path.startswith("/api"):
                        json.loads(body)
                    with lock:
                        answers["ok"] += 1
                else:
                    answers["bad"].append((path, st, body[:200]))
            except Exception as e:  # a dead server or a torn answer
                answers["bad"].append((path, repr(e)))

    def grow_under_readers():
        m.start("--map-mb", "1", "--batch", "200")
        # two readers at once: the server answers on a pool of threads
        ths = [threading.Thread(target=poll, args=(k,)) for k in range(2)]
        for th in ths:
            th.start()
        try:
            pad = "x" * 150
            for b in range(0, leads, 100):
                evs = []
                for i in range(b, b + 100):
                    evs.append(ev("lead.captured", "g%d" % i, source="s-%d" % (i % 7),
                                  campaign="c-%d-%s" % (i % 13, pad), form="f-%s" % pad))
                    evs[-1]["id"] = "grow-%d" % i
                log.publish_ok(*evs)
            m.wait_caught_up(log.status()["head"], wait_s=60)
        finally:
            stop.set()
            for th in ths:
                th.join(timeout=30)
        expect(m.proc.poll() is None, "the service is alive: %s" % m.tail())
        expect_eq(answers["bad"], [], "answers while the map grew")
        expect(answers["ok"] > 10, "the readers were busy (%d answers)" % answers["ok"])
        with open(m.log) as f:
            grown = f.read().count("view map grown")
        expect(grown >= 2, "the map grew (%d times): %s" % (grown, m.tail()))
        f = m.api("/api/funnel")["funnel"]
        expect_eq({r["stage"]: r["entered"] for r in f["stages"]}["inquiry"], leads,
                  "every lead counted once")
        expect_eq({r["stage"]: r["now"] for r in f["stages"]}["inquiry"], leads, "balance")
        src = m.api("/api/funnel?source=s-1")["funnel"]
        expect_eq(src["stages"][0]["entered"], len(range(1, leads, 7)), "leads from s-1")
        expect_eq(m.stop(), 0, "exit status after SIGTERM")
    res.run("the view's map grows from 1 MiB while HTTP requests read it", grow_under_readers)
    m.kill9()
    log.close()


# Figures whose value is a whole number whatever the history (counts,
# seqs, ns); attribution's counts are shares under linear, so not here.
INT_KEYS = {"checkpoint", "head", "lag", "from", "to", "start_ns", "entered", "now",
            "from_entries", "to_entries", "went_on", "n", "assignments", "contacted",
            "sla_breaches", "mql_entries", "accepted", "rejected", "recycled", "disqualified",
            "count", "inquiry", "mql", "sal", "sql", "nurture", "erased"}


def exact_json(body):
    """JSON with every non-integer number as a Decimal, so an integer
    written as 1.79e+18 is caught rather than rounded."""
    return json.loads(body, parse_float=decimal.Decimal)


def expect_ints(doc, where):
    """Every INT_KEYS value outside the attribution section is a JSON
    integer (or null)."""
    def walk(x, path):
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "attribution":
                    continue
                if k in INT_KEYS and not isinstance(v, (dict, list)):
                    expect(v is None or (isinstance(v, int) and not isinstance(v, bool)),
                           "%s: %s%s is written %r, not as an integer" % (where, path, k, v))
                walk(v, path + k + ".")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, path + "%d." % i)
    walk(doc, "")


def run_definitions(res, daemon, ctx):
    """METRICS.md's definitions at their edges: the credit of a won deal
    of a lead with more touches than the view keeps, a lead erased and
    captured again, ns and seqs as exact JSON integers, the HTTP limits,
    and /healthz and the reports with funneld stopped."""
    log = LogClient(ctx, daemon.endpoints)
    m = Metrics(daemon, "defs")
    seq = [0]

    def pub(*evs):
        for e in evs:
            seq[0] += 1
            log.publish_ok(dict(e, id="defs-%d" % seq[0]))

    def attribution_past_the_cap():
        # T: 40 touches (t1..t40), the opportunity, 5 more (late1..late5),
        # the win.  The view keeps t1..t31 and the latest; the opportunity
        # is credited to t1..t31 and t40, and so must the win be.
        m.start()
        pub(*[ev("lead.captured", "T", source="t%d" % i, campaign="c%d" % i, form="f%d" % i)
              for i in range(1, 41)])
        pub(ev("lead.qualified", "T"), ev("lead.accepted", "T"),
            ev("opportunity.opened", "T", amount=3200))
        pub(*[ev("lead.captured", "T", source="late%d" % i, campaign="lc%d" % i,
                 form="lf%d" % i) for i in range(1, 6)])
        pub(ev("deal.won", "T", amount=640))
        m.wait_caught_up(log.status()["head"])
        credited = ["t%d" % i for i in range(1, 32)] + ["t40"]
        want = {
            "first": {"t1": (3200, 640, 1, 1)},
            "last": {"t40": (3200, 640, 1, 1)},
            "linear": {s: (100, 20, 1 / 32, 1 / 32) for s in credited},
        }
        for model, by in want.items():
            a = m.api("/api/attribution?model=" + model)["attribution"]
            got = {r["source"]: (r["pipeline"], r["revenue"], r["opportunities"], r["won"])
                   for r in a["by_source"]}
            expect_eq(sorted(got), sorted(by), model + ": the sources credited")
            for src, (pl, rv, op, wn) in by.items():
                g = got.get(src)
                expect(g is not None and near(g[0], pl) and near(g[1], rv) and near(g[2], op)
                       and near(g[3], wn), "%s: %s credited %r, want %r"
                       % (model, src, g, (pl, rv, op, wn)))
            forms = {r["form"] for r in a["by_form"]}
            expect(not any(f.startswith("lf") for f in forms),
                   model + ": no touch after the opportunity is credited: %r" % sorted(forms))
    res.run("a win is credited to the opportunity's touches past the 32-touch cap",
            attribution_past_the_cap)

    def erased_and_captured_again():
        # R1: a, erased, b, qualified.  R2: a, erased, b, erased, c.  R3: a, erased.
        pub(ev("lead.captured", "R1", source="a"), ev("lead.captured", "R2", source="a"),
            ev("lead.captured", "R3", source="a"))
        pub(ev("lead.erased", "R1"), ev("lead.erased", "R2"), ev("lead.erased", "R3"))
        pub(ev("lead.captured", "R1", source="b"), ev("lead.captured", "R2", source="b"))
        pub(ev("lead.qualified", "R1"), ev("lead.erased", "R2"))
        pub(ev("lead.captured", "R2", source="c"))
        m.wait_caught_up(log.status()["head"])

        def figures(q):
            s = m.api("/api/summary" + q)
            st = {r["stage"]: (r["entered"], r["now"]) for r in s["funnel"]["stages"]}
            c = s["conversion"]["cohort"]["inquiry_to_mql"]
            return st, (c["entered"], c["went_on"])
        # T (above) is one more lead: inquiry, mql, sal, sql entered, won now
        st, coh = figures("")
        expect_eq({k: v for k, v in st.items() if k in ("inquiry", "mql", "erased")},
                  {"inquiry": (7, 1), "mql": (2, 1), "erased": (4, 4)},
                  "entries and balance: every erased lead stays erased")
        expect_eq(coh, (7, 2), "all-time cohort inquiry->mql")
        expect_eq(coh[0], st["inquiry"][0], "over all time, cohort entered = inquiry entries")
        expect_eq(sum(v[1] for v in st.values()), st["inquiry"][0],
                  "the balances add up to the inquiry entries")
        for q, want_st, want_coh in (
                ("?source=a", {"inquiry": (3, 0), "erased": (3, 3)}, (3, 0)),
                ("?source=b", {"inquiry": (2, 0), "mql": (1, 1), "erased": (1, 1)}, (2, 1)),
                ("?source=c", {"inquiry": (1, 1)}, (1, 0))):
            st, coh = figures(q)
            expect_eq({k: v for k, v in st.items() if v != (0, 0)}, want_st, "funnel " + q)
            expect_eq(coh, want_coh, "cohort inquiry->mql " + q)
        lines = set(m.get("/metrics")[2].decode().splitlines())
        for line in ('funnel_leads{stage="erased"} 4', 'funnel_leads{stage="inquiry"} 1',
                     'funnel_leads{stage="mql"} 1',
                     'funnel_stage_entries_total{stage="inquiry",source="a"} 3',
                     'funnel_stage_entries_total{stage="erased",source="b"} 1'):
            expect_in(line, lines, "/metrics")
    res.run("a lead erased and captured again: the erased one stays in every count, "
            "the new one is a new lead", erased_and_captured_again)

    def integers_exactly():
        frm, to = 1792367758326749417, 1892367758326749419
        head = log.status()["head"]
        for path in ("/api/summary?from=%d&to=%d" % (frm, to), "/api/funnel?from=%d" % frm,
                     "/api/trend?bucket=day", "/api/trend", "/api/summary", "/healthz"):
            st, _, body = m.get(path)
            expect(st in (200, 503), "status of %s: %d" % (path, st))
            doc = exact_json(body)
            expect_ints(doc, path)
            expect_eq(doc["checkpoint"], head, "checkpoint of " + path)
        w = exact_json(m.get("/api/summary?from=%d&to=%d" % (frm, to))[2])["window"]
        expect_eq((w["from"], w["to"]), (frm, to), "the window echoed digit for digit")
        for r in exact_json(m.get("/api/trend?bucket=day")[2])["trend"]["series"]:
            expect_eq(r["start_ns"] % (86400 * 10**9), 0, "a day starts at 00:00 UTC")
            expect_eq(time.strftime("%Y-%m-%d", time.gmtime(r["start_ns"] // 10**9)),
                      r["start"], "start_ns and start agree")
        rep = exact_json(m.ok("report", "funnel", "--param", "from=%d" % frm))
        expect_eq(rep["window"]["from"], frm, "the offline report echoes the window exactly")
    res.run("ns and seqs are exact JSON integers in every answer", integers_exactly)

    def connection_limits():
        # one client address holding many idle, half-sent requests; the
        # test's own requests come from 127.0.0.1, the flood from 127.0.0.2
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 1000
        if soft < want + 100:
            new = min(hard, want + 200) if hard != resource.RLIM_INFINITY else want + 200
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        n = min(want, soft - 100)
        flood = []
        try:
            for _ in range(n):
                s = socket.socket()
                s.settimeout(2)
                s.bind(("127.0.0.2", 0))
                try:
                    s.connect(("127.0.0.1", m.port))
                    s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                except OSError:
                    pass        # refused or reset at the limit: what it is for
                flood.append(s)
            for path in ("/healthz", "/api/funnel", "/healthz"):
                try:
                    st, _, _ = m.get(path)
                except OSError as e:
                    raise CheckFailed("%s with %d idle connections open from another address: "
                                      "%r" % (path, n, e))
                expect(st in (200, 503), "%s answers: %d" % (path, st))
        finally:
            for s in flood:
                s.close()
        expect(m.proc.poll() is None, "the service lives on: %s" % m.tail())
    res.run("a flood of idle connections from one address does not shut others out",
            connection_limits)

    def too_many_params():
        # far past the limit: a 400 that names it (MHD alone never answers)
        for q in ("&".join("p%d=%d" % (i, i) for i in range(500)),
                  "&".join("from=1" for _ in range(500))):
            try:
                with urllib.request.urlopen(m.url("/api/funnel?" + q), timeout=5) as r:
                    raise CheckFailed("500 parameters answered %d" % r.status)
            except urllib.error.HTTPError as e:
                expect_eq(e.code, 400, "status for 500 parameters")
                j = json.loads(e.read())
                expect(re.search(r"too many parameters: at most \d+", j.get("error", "")),
                       "the message names the limit: %r" % j)
        st, _, body = m.get("/api/funnel?" + "&".join(["source=x"] * 3))
        expect_eq((st, json.loads(body).get("param")), (400, "source"),
                  "under the limit a repeated parameter is still named")
        expect(m.proc.poll() is None, "the service lives on: %s" % m.tail())
    res.run("500 query parameters get a 400 naming the limit", too_many_params)

    def funneld_stopped():
        head = log.status()["head"]
        m.wait_caught_up(head)
        log.close()
        daemon.terminate()
        time.sleep(0.2)
        # several at once, as a dashboard and a prober do: none waits on funneld
        answers, errors = {}, []

        def ask(k, path):
            try:
                with urllib.request.urlopen(m.url(path), timeout=2) as r:
                    answers[k] = (r.status, r.read())
            except urllib.error.HTTPError as e:
                answers[k] = (e.code, e.read())
            except Exception as e:  # a timeout: the answer waited on funneld
                errors.append((path, repr(e)))
        ths = [threading.Thread(target=ask, args=(i, p)) for i, p in
               enumerate(["/healthz"] * 4 + ["/api/summary", "/metrics"])]
        for th in ths:
            th.start()
        for th in ths:
            th.join(timeout=10)
        expect_eq(errors, [], "answers within 2 s with funneld stopped")
        # the prober notices within a try or two (each bounded by 1 s)
        deadline = time.monotonic() + 10
        while True:
            st, _, body = m.get("/healthz")
            h = json.loads(body)
            if h["status"] == "log unreachable" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        expect_eq((st, h["status"]), (503, "log unreachable"), "/healthz with funneld stopped")
        expect_eq((h["checkpoint"], h["head"], h["lag"]), (head, head, 0),
                  "it says the last head it read and the lag to it")
        expect(isinstance(h["head_age_s"], (int, float)) and h["head_age_s"] > 0,
               "and how old that head is: %r" % h)
        expect_eq(m.api("/api/summary")["checkpoint"], head, "the reports read the view")
    res.run("with funneld stopped /healthz and the reports answer at once, saying what "
            "they know", funneld_stopped)

    def clean_stop():
        expect_eq(m.stop(), 0, "exit status after SIGTERM with funneld stopped")
        with open(m.log, errors="replace") as f:
            text = f.read()
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            expect(bad not in text, "sanitizer report in funnel-metrics' log: %s"
                   % text[text.find(bad) - 200:text.find(bad) + 600])
    res.run("SIGTERM stops the service, its HTTP server and its prober cleanly", clean_stop)
    m.kill9()
    log.close()


def run_hostile(res, daemon, ctx):
    """User data that is awkward to print (quotes, backslashes, newlines,
    NUL, markup and bad UTF-8 in names and parameters), a lead whose every
    touch has one source, and reasons on events outside the closed loop."""
    log = LogClient(ctx, daemon.endpoints)
    m = Metrics(daemon, "hostile")
    weird = 'a"b\nc\\d'
    steps = [
        ev("lead.captured", "H1", source=weird, campaign="<img src=x onerror=alert(1)>", form="f"),
        ev("lead.captured", "H2", source="nul\u0000one", campaign="c"),
        ev("lead.captured", "H3", source="nul\u0000two", campaign="c"),
        ev("lead.captured", "H4", source="nul\u0000two", campaign="c"),
    ] + [ev("lead.captured", "L", source="multi", campaign="m%d" % i, form="f1")
         for i in range(1, 7)] + [
        ev("lead.qualified", "L"),
        ev("lead.accepted", "L", reason="good fit"),
        ev("opportunity.opened", "L", amount=100),
        ev("deal.won", "L", amount=100, reason="champion"),
        ev("lead.captured", "Z", source="gone", campaign="c9", form="fz"),
        ev("lead.erased", "Z"),
    ]

    def exposition():
        m.start()
        for i, e in enumerate(steps):
            log.publish_ok(dict(e, id="hostile-%d" % i))
        m.wait_caught_up(log.status()["head"])
        st, _, body = m.get("/metrics")
        expect_eq(st, 200, "/metrics status")
        p = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"],
                           input=body, capture_output=True, timeout=30)
        expect_eq(p.returncode, 0, "promtool check metrics (%s)"
                  % (p.stdout + p.stderr).decode(errors="replace")[-600:])
        lines = set(body.decode().splitlines())
        expect_in('funnel_stage_entries_total{stage="inquiry",source="a\\"b\\nc\\\\d"} 1', lines,
                  "the escaped label value")
        expect(not any(l.startswith('funnel_closed_loop_total{event="lead.accepted"')
                       or l.startswith('funnel_closed_loop_total{event="deal.won"')
                       for l in lines), "only closed-loop events count in funnel_closed_loop_total")
    res.run("/metrics stays valid with quotes, newlines and NUL in names", exposition)

    def reports():
        f = m.api("/api/funnel")["funnel"]
        keys = [(r["source"], r["campaign"]) for r in f["by_source"]]
        expect_eq(len(keys), len(set(keys)), "one by_source row per (source, campaign): %r" % keys)
        expect_in((weird, "<img src=x onerror=alert(1)>"), keys, "the row of the odd names")
        expect_in(("nul", "c"), keys, "a name is cut at its NUL")
    res.run("reports of awkward names: one row per (source, campaign)", reports)

    def closed_loop_reasons():
        cl = m.api("/api/closed-loop")["closed_loop"]
        expect_eq(cl["reasons"], [], "reasons of accepted and won are not closed-loop reasons")
        expect_eq(cl["reasons_by_source"], [], "nor by source")
    res.run("a reason on lead.accepted or deal.won is not a closed-loop reason",
            closed_loop_reasons)

    def linear():
        a = m.api("/api/attribution?model=linear")["attribution"]
        by = {r["source"]: r for r in a["by_source"]}
        expect_eq((by["multi"]["pipeline"], by["multi"]["revenue"], by["multi"]["opportunities"],
                   by["multi"]["won"]), (100, 100, 1, 1),
                  "linear: six touches of one source credit it the whole amount")
        by = {r["form"]: r for r in a["by_form"]}
        expect_eq((by["f1"]["pipeline"], by["f1"]["opportunities"]), (100, 1), "linear by form")
        camp = sum(r["pipeline"] for r in a["by_campaign"])
        expect(near(camp, 100), "linear by campaign sums to the pipeline: %r" % camp)
    res.run("linear attribution: a source credited by every touch gets the whole amount",
            linear)

    def erased_filtered():
        s = m.api("/api/summary?source=gone&campaign=c9")
        st = {r["stage"]: (r["entered"], r["now"]) for r in s["funnel"]["stages"]
              if r["entered"] or r["now"]}
        expect_eq(st, {"inquiry": (1, 0), "erased": (1, 1)},
                  "an erased lead stays in its source's entries and balance")
        c = s["conversion"]["cohort"]["inquiry_to_mql"]
        expect_eq((c["entered"], c["went_on"]), (1, 0), "and in its source's cohort")
        f = m.api("/api/funnel?source=gone")["funnel"]
        expect_eq([r["now"] for r in f["stages"] if r["stage"] == "erased"], [1],
                  "filtered by source alone")
        a = m.api("/api/attribution")["attribution"]
        expect("fz" not in [r["form"] for r in a["by_form"]], "the erased lead's form is gone")
    res.run("an erasure changes no count under the source/campaign filters", erased_filtered)

    def params():
        for path, param, msg in (("/api/funnel?source=%FF", "source", "UTF-8"),
                                 ("/api/funnel?from=%C3", "from", "UTF-8"),
                                 ("/api/funnel?%FF=1", None, "UTF-8"),
                                 ("/api/funnel?from=x" + "%C3%A9" * 40, "from", "not a time"),
                                 ("/api/funnel?to=0", "to", "empty")):
            st, ct, body = m.get(path)
            expect_eq(st, 400, "status of " + path)
            j = json.loads(body.decode("utf-8"))
            if param:
                expect_eq(j.get("param"), param, "param named for " + path)
            expect_in(msg, j.get("error", ""), "message for " + path)
    res.run("parameters that are not UTF-8 or empty windows: 400 with valid JSON", params)
    m.stop()
    m.kill9()
    log.close()


def run_checks(res, daemon, ctx):
    log = LogClient(ctx, daemon.endpoints)
    m = Metrics(daemon, "m")
    state = {}

    def known_answers_across_kill9():
        m.start()
        publish_steps(log, SCRIPT[:HALF], 1)
        head = log.status()["head"]
        m.wait_caught_up(head)
        m.kill9()
        m.start()
        publish_steps(log, SCRIPT[HALF:], HALF + 1)
        head = log.status()["head"]
        h = m.wait_caught_up(head)
        expect_eq((h["status"], h["checkpoint"], h["head"], h["lag"]), ("ok", head, head, 0),
                  "/healthz when caught up")
        state["x"] = Expected(log.records())
        check_all_time(m, state["x"])
    ok = res.run("known answers for every figure, with a kill -9 halfway",
                 known_answers_across_kill9)
    if not ok or "x" not in state:
        m.stop()
        log.close()
        return
    x = state["x"]
    res.run("window and source/campaign filters give the hand-counted figures",
            check_window_and_filters, m, x)

    def endpoints():
        st, ct, body = m.get("/")
        expect_eq(st, 200, "/ status")
        expect_in("text/html", ct, "/ content type")
        expect_in(b"<svg", body, "the dashboard draws with inline SVG")
        expect(re.search(rb"""(src|href)\s*=\s*["']?(https?:)?//|url\(|@import""", body) is None,
               "the dashboard loads nothing from elsewhere")
        for name in ("summary", "funnel", "conversion", "velocity", "followup", "closed-loop",
                     "attribution", "trend"):
            j = m.api("/api/" + name)
            expect_eq(j["report"], name, "report name")
            expect_eq(j["checkpoint"], log.status()["head"], "checkpoint in " + name)
        idx = m.api("/api")
        expect_eq(idx["reports"], ["summary", "funnel", "conversion", "velocity", "followup",
                                   "closed-loop", "attribution", "trend", "leads", "values"],
                  "/api lists the reports")
        st, _, _ = m.get("/nothing")
        expect_eq(st, 404, "unknown path")
        st, _, body = m.get("/api/nothing")
        expect_eq(st, 404, "unknown report")
        req = urllib.request.Request(m.url("/api/summary"), data=b"x", method="POST")
        try:
            urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S)
            raise CheckFailed("POST accepted")
        except urllib.error.HTTPError as e:
            expect_eq(e.code, 405, "POST status")
    res.run("each endpoint answers; unknown paths 404, POST 405", endpoints)

    def bad_params():
        cases = [
            ("/api/summary?from=yesterday", "from", "not a time"),
            ("/api/summary?to=2026-02-30", "to", "not a time"),
            ("/api/summary?from=2026-11-02&to=2026-11-01", "to", "empty"),
            ("/api/attribution?model=best", "model", "first, last or linear"),
            ("/api/trend?bucket=month", "bucket", "week or day"),
            ("/api/funnel?model=first", "model", "unknown parameter"),
            ("/api/funnel?colour=red", "colour", "unknown parameter"),
            ("/api/funnel?source=", "source", "1..200 bytes"),
            ("/api/funnel?from=1&from=2", "from", "twice"),
        ]
        for path, param, msg in cases:
            st, ct, body = m.get(path)
            expect_eq(st, 400, "status of " + path)
            expect_in("application/json", ct, "content type of " + path)
            j = json.loads(body)
            expect_eq(j.get("param"), param, "param named for " + path)
            expect_in(msg, j.get("error", ""), "message for " + path)
    res.run("bad parameters get a 400 naming the parameter and the problem", bad_params)

    def prometheus():
        st, ct, body = m.get("/metrics")
        expect_eq(st, 200, "/metrics status")
        expect_in("text/plain", ct, "/metrics content type")
        text = body.decode()
        promtool = shutil.which("promtool")
        expect(promtool is not None, "promtool is installed (Debian prometheus)")
        p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           timeout=30)
        expect_eq(p.returncode, 0, "promtool check metrics (%s)"
                  % (p.stdout + p.stderr).decode()[-600:])
        head = log.status()["head"]
        lines = set(text.splitlines())
        for line in ('funnel_leads{stage="won"} 1', 'funnel_leads{stage="inquiry"} 1',
                     'funnel_leads{stage="sql"} 0',
                     'funnel_stage_entries_total{stage="mql",source="ads"} 2',
                     'funnel_stage_entries_total{stage="inquiry",source="webinar"} 3',
                     'funnel_stage_entries_total{stage="erased",source="webinar"} 1',
                     'funnel_closed_loop_total{event="lead.rejected",reason="no_budget"} 1',
                     'funnel_pipeline_amount_total{source="webinar"} 1000',
                     'funnel_pipeline_amount_total{source="ads"} 500',
                     'funnel_revenue_amount_total{source="webinar"} 900',
                     'funnel_assignments_total{team="west"} 2',
                     'funnel_first_contacts_total{team="east"} 2',
                     'funnel_contacted_within_total{team="east",within="5m"} 2',
                     'funnel_sla_breaches_total{team="east",owner="ben"} 1',
                     "funnel_view_checkpoint_seq %d" % head, "funnel_log_head_seq %d" % head,
                     "funnel_view_lag_records 0", "# TYPE funnel_leads gauge",
                     "# TYPE funnel_stage_entries_total counter"):
            expect_in(line, lines, "/metrics sample")
    res.run("/metrics passes promtool check metrics and has the known values", prometheus)

    def rebuild_same():
        head = log.status()["head"]
        m.wait_caught_up(head)
        expect_eq(m.stop(), 0, "exit status after SIGTERM")
        cp1, d1 = m.digest()
        expect_eq(cp1, head, "checkpoint at the head")
        m.ok("--rebuild", "--until-head")
        expect_eq(m.digest(), (cp1, d1), "digest after --rebuild")
        fresh = Metrics(daemon, "fresh")
        fresh.ok("--until-head")
        expect_eq(fresh.digest(), (cp1, d1), "a view built from nothing elsewhere")
        rep = json.loads(m.ok("report", "funnel"))
        expect_eq({r["stage"]: r["now"] for r in rep["funnel"]["stages"]}["won"], 1,
                  "report from the rebuilt view, offline")
    res.run("--rebuild and a view from nothing give the same digest", rebuild_same)

    def after_rebuild():
        m.start()
        m.wait_caught_up(log.status()["head"])
        check_all_time(m, x)
        check_window_and_filters(m, x)
    res.run("after --rebuild every figure is the same", after_rebuild)

    res.run("lead lists, a lead's timeline, picker values, reps, previous period, rules in force",
            check_drill_and_periods, m, x, log)

    run_browser(res, m, daemon, x)

    def sigterm():
        expect_eq(m.stop(), 0, "exit status after SIGTERM")
        with open(m.log, errors="replace") as f:
            text = f.read()
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            expect(bad not in text, "sanitizer report in funnel-metrics' log: %s"
                   % text[text.find(bad) - 200:text.find(bad) + 600])
    res.run("SIGTERM stops the service and its HTTP server cleanly; no sanitizer report",
            sigterm)
    m.kill9()
    log.close()


def run_event_time(res, daemon, ctx):
    """Event time (PROTOCOL.md §10, METRICS.md ground rules): a history
    published today with its real dates (occurred_at) is counted in the
    weeks it happened; an occurred_at later than ts counts at ts; an
    event dated before the lead's previous one counts at the previous
    one's time, so no duration is negative; a rebuild gives the same
    digest."""
    log = LogClient(ctx, daemon.endpoints)
    m = Metrics(daemon, "evtime")
    day = 86400 * 10**9
    monday = calendar.timegm((2026, 1, 5, 0, 0, 0)) * 10**9   # a Monday, 00:00 UTC
    weeks = 8
    # lead h<w>-<k>: captured on day (k % 7) of week w, k = 0..w (so week w
    # has w + 1 entries); qualified 2 days after its capture when k is even
    expected_weeks = {}
    quals = {}
    mql_durs = []
    for w in range(weeks):
        evs = []
        for k in range(w + 1):
            lead = "h%d-%d" % (w, k)
            t = monday + w * 7 * day + (k % 7) * day + 3600 * 10**9
            evs.append(dict(ev("lead.captured", lead, source="import"), id="c-" + lead,
                            occurred_at=t))
            expected_weeks[w] = expected_weeks.get(w, 0) + 1
            if k % 2 == 0:
                q = t + 2 * day
                evs.append(dict(ev("lead.qualified", lead), id="q-" + lead, occurred_at=q))
                qw = (q - monday) // (7 * day)
                quals[qw] = quals.get(qw, 0) + 1
                mql_durs.append(2 * 86400)
        log.publish_ok(*evs)
    # out of order: X qualified, then accepted with a date before its
    # qualification: time in mql counts 0, never negative
    tx = monday + 3 * day
    log.publish_ok(dict(ev("lead.captured", "X", source="late"), occurred_at=tx))
    log.publish_ok(dict(ev("lead.qualified", "X"), occurred_at=tx + day))
    log.publish_ok(dict(ev("lead.accepted", "X"), occurred_at=tx - day))
    # a producer's clock ahead: occurred_at past ts counts at ts
    log.publish_ok(dict(ev("lead.captured", "F", source="future"),
                        occurred_at=2**62))

    def weekly():
        m.ok("--until-head")
        m.start()
        m.wait_caught_up(log.status()["head"])
        tr = m.api("/api/trend?bucket=week&source=import")["trend"]
        got = {(r["start_ns"] - monday) // (7 * day): r["entered"]["inquiry"]
               for r in tr["series"] if r["entered"]["inquiry"]}
        expect_eq(got, expected_weeks, "inquiry entries per week, by occurred_at")
        gotq = {(r["start_ns"] - monday) // (7 * day): r["entered"]["mql"]
                for r in tr["series"] if r["entered"]["mql"]}
        expect_eq(gotq, quals, "mql entries per week, by occurred_at")
        # a window over weeks 2..3 (from the Monday of week 2 to that of week 4)
        f = m.api("/api/funnel?source=import&from=%d&to=%d"
                  % (monday + 14 * day, monday + 28 * day))["funnel"]
        expect_eq({r["stage"]: r["entered"] for r in f["stages"]}["inquiry"],
                  expected_weeks[2] + expected_weeks[3], "inquiry entries in weeks 2-3")
        v = m.api("/api/velocity?source=import")["velocity"]["time_in_stage"]
        expect_eq(v["inquiry"]["n"], len(mql_durs), "exits from inquiry")
        expect(near(v["inquiry"]["median_s"], 2 * 86400),
               "time in inquiry is the 2 days between the dates: %r" % v["inquiry"])
        c = m.api("/api/conversion?source=import&from=%d&to=%d"
                  % (monday, monday + 7 * day))["conversion"]["cohort"]["inquiry_to_mql"]
        expect_eq((c["entered"], c["went_on"]), (1, 1), "week 0's cohort went on to mql")
    res.run("entries per week spread over the weeks of occurred_at", weekly)

    def out_of_order():
        v = m.api("/api/velocity?source=late")["velocity"]["time_in_stage"]
        expect_eq(v["mql"]["n"], 1, "X left mql once")
        expect_eq(v["mql"]["median_s"], 0, "an accept dated before the qualification: 0 s")
        expect_eq(v["inquiry"]["median_s"], 86400, "X's day in inquiry")
        tr = m.api("/api/trend?bucket=day&source=late")["trend"]["series"]
        sal = [r["start_ns"] for r in tr if r["entered"]["sal"]]
        expect_eq(sal, [tx + day - (tx + day) % day], "the accept counts on the qualification's day")
    res.run("an event dated before the lead's previous one counts at that one's time",
            out_of_order)

    def future():
        rec = [r for r in log.records() if r.get("lead") == "F"][0]
        tr = m.api("/api/trend?bucket=day&source=future")["trend"]["series"]
        got = [r["start_ns"] for r in tr if r["entered"]["inquiry"]]
        expect_eq(got, [rec["ts"] - rec["ts"] % day], "occurred_at after ts counts at ts")
    res.run("an occurred_at later than the record's ts counts at ts", future)

    def rebuild():
        cp, d = m.digest()
        expect_eq(m.stop(), 0, "exit status after SIGTERM")
        m.ok("--rebuild", "--until-head")
        expect_eq(m.digest(), (cp, d), "digest after --rebuild")
    res.run("with event times a rebuild gives the same digest", rebuild)
    m.kill9()
    log.close()


GOALS_YAML = """version: "goals %(n)s"
routing:
  teams:
    - name: east
    - name: west
goals:
  - period: %(month)s
    mqls: 2
    pipeline: 1000000
  - period: %(quarter)s
    team: east
    acceptance_rate: 0.6
    speed_to_lead_minutes: 30
"""


def run_goals(res, daemon, ctx):
    """The goals: section: refused by check naming the line, recorded in
    rules.changed, each goal's progress by hand through /api/goals,
    Prometheus gauges and the dashboard's first panel."""
    log = LogClient(ctx, daemon.endpoints)
    g = Metrics(daemon, "g")
    now = time.gmtime()
    month = "%04d-%02d" % (now.tm_year, now.tm_mon)
    quarter = "%04d-Q%d" % (now.tm_year, (now.tm_mon - 1) // 3 + 1)
    text = GOALS_YAML % {"n": "v1", "month": month, "quarter": quarter}
    g.write_rules(text)
    scoring = os.path.join(os.path.dirname(FUNNELD), "funnel-scoring")

    def check_refuses():
        for name, bad, want in (
                ("team", text.replace("team: east", "team: north"),
                 ":11: goals[1].team: unknown team \"north\""),
                ("figure", text.replace("mqls: 2", "sqls: 2"), ":8: goals[0]: unknown key \"sqls\""),
                ("period", text.replace(month, "2026-13"), ":7: goals[0].period: expected a month")):
            path = os.path.join(daemon.dir, "bad-%s.yaml" % name)
            with open(path, "w") as f:
                f.write(bad)
            p = subprocess.run([METRICS, "check", path], capture_output=True, text=True, timeout=30)
            expect_eq(p.returncode, 1, "check of an unknown " + name)
            expect_in(path + want, p.stderr, "the message names the line")
        p = subprocess.run([METRICS, "check", g.rules], capture_output=True, text=True, timeout=30)
        expect_eq((p.returncode, p.stdout.strip()), (0, '%s: ok: "goals v1", 4 goals' % g.rules),
                  "check of the goals")
        # funnel-scoring reads the same file and leaves the goals alone
        with open(os.path.join(REPO, "funnel.yaml")) as f:
            repo = f.read()
        both = os.path.join(daemon.dir, "both.yaml")
        with open(both, "w") as f:
            f.write(repo + "\ngoals:\n  - period: %s\n    mqls: 10\n" % month)
        if os.access(scoring, os.X_OK):
            p = subprocess.run([scoring, "check", both], capture_output=True, text=True, timeout=30)
            expect_eq(p.returncode, 0, "funnel-scoring check with a goals section: " + p.stderr)
        p = subprocess.run([METRICS, "check", both], capture_output=True, text=True, timeout=30)
        expect_eq(p.returncode, 0, "funnel-metrics check of funnel.yaml with goals: " + p.stderr)
    res.run("check refuses an unknown team, figure or period, naming the line", check_refuses)

    def bad_http():
        for arg in ("nonsense", "127.0.0.1:99999", "localhost:7480"):
            p = subprocess.run([METRICS, "--http", arg, "check", g.rules], capture_output=True,
                               text=True, timeout=30)
            expect_eq(p.returncode, 2, "--http %s: exit status (%s)" % (arg, p.stderr[-400:]))
            expect_in("funnel-metrics: --http wants IPV4:PORT, not '%s'" % arg, p.stderr,
                      "usage message")
    res.run("a malformed --http is a usage error (exit 2), as every flag's", bad_http)

    def progress():
        g.start("--rules", g.rules)
        steps = [
            ev("lead.captured", "GA", source="ads"), ev("lead.qualified", "GA"),
            ev("lead.assigned", "GA", owner="ben", team="east"), ev("lead.contacted", "GA"),
            ev("lead.accepted", "GA"), ev("opportunity.opened", "GA", amount=1000),
            ev("lead.captured", "GB", source="ads"), ev("lead.qualified", "GB"),
            ev("lead.assigned", "GB", owner="ben", team="east"), ev("lead.rejected", "GB", reason="x"),
            ev("lead.captured", "GC", source="web"), ev("lead.qualified", "GC"),
        ]
        for i, e in enumerate(steps):
            log.publish_ok(dict(e, id="goal-%d" % i))
        g.wait_caught_up(log.status()["head"])
        recs = log.records()
        rules = [r for r in recs if r["type"] == "rules.changed"]
        expect_eq(len(rules), 1, "one rules.changed")
        d = rules[0]["data"]
        expect_eq((d["service"], d["version"], d["hash"]),
                  ("metrics", "goals v1", hashlib.blake2b(text.encode(), digest_size=32).hexdigest()),
                  "metrics recorded its goals like the other services")
        by = {r["id"]: r["ts"] for r in recs if r.get("id")}
        speed_min = (by["goal-3"] - by["goal-2"]) / 60e9
        gl = g.api("/api/goals")
        expect_eq((gl["version"], gl["hash"]), ("goals v1", d["hash"]), "the goals in force")
        got = {(x["period"], x["team"], x["figure"]): x for x in gl["goals"]}
        now_ns = gl["now"]
        mq = got[(month, None, "mqls")]
        expect_eq((mq["value"], mq["status"], mq["direction"]), (3, "met", "at least"), "MQLs: 3 of 2")
        pl = got[(month, None, "pipeline")]
        expect_eq(pl["value"], 1000, "pipeline so far")
        share = (now_ns - pl["from"]) / (pl["to"] - pl["from"])
        expect(near(pl["elapsed_share"], share), "share of the month gone")
        expect(near(pl["pace_per_day"], (1000000 - 1000) / ((pl["to"] - now_ns) / 86400e9)),
               "pace needed: what is left per day left")
        expect_eq(pl["status"], "behind" if 1000 < 1000000 * share else "on track", "pipeline status")
        ac = got[(quarter, "east", "acceptance_rate")]
        expect(near(ac["value"], 0.5), "east's acceptance: 1 of 2")
        expect_eq(ac["status"], "behind", "0.5 is short of 0.6")
        sp = got[(quarter, "east", "speed_to_lead_minutes")]
        expect(near(sp["value"], speed_min), "east's median speed-to-lead in minutes")
        expect_eq((sp["status"], sp["direction"]), ("on track", "at most"), "speed within 30 min")
        st, _, body = g.get("/metrics")
        text_ = body.decode()
        expect_in('funnel_goal_target{period="%s",team="",figure="mqls"} 2' % month, text_, "target gauge")
        expect_in('funnel_goal_value{period="%s",team="",figure="mqls"} 3' % month, text_, "value gauge")
        expect_in('funnel_goal_on_track{period="%s",team="east",figure="acceptance_rate"} 0' % quarter,
                  text_, "on-track gauge")
        # a restart with the same file records nothing more
        g.stop()
        g.start("--rules", g.rules)
        g.wait_caught_up(log.status()["head"])
        expect_eq(len([r for r in log.records() if r["type"] == "rules.changed"]), 1,
                  "the same goals are not recorded twice")
        return [["mqls", "met"], ["pipeline", pl["status"]], ["acceptance_rate", "behind"],
                ["speed_to_lead_minutes", "on track"]]
    holder = {}
    ok = res.run("goals: progress, pace and status by hand, rules.changed, gauges",
                 lambda: holder.setdefault("want", progress()))
    if ok and "want" in holder:
        run_browser(res, g, daemon, None, goals=holder["want"])
    g.stop()


def run_no_team(res, daemon, ctx):
    """Assignments and SLA breaches without a team show under "(no team)"
    alike in /api/followup (teams and reps), the report and /metrics;
    a named team keeps its name."""
    log = LogClient(ctx, daemon.endpoints)
    m = Metrics(daemon, "noteam")
    publish_steps(log, [
        (ev("lead.captured", "N1", source="web"), None),
        (ev("lead.captured", "N2", source="web"), None),
        (ev("lead.assigned", "N1", owner="ann"), None),
        (ev("lead.assigned", "N2", owner="bo", team="north"), None),
        (ev("lead.sla_breached", "N1", owner="ann", minutes_late=3), None),
    ], 0)
    m.start()
    try:
        def named():
            m.wait_caught_up(log.status()["head"])
            f = m.api("/api/followup")["followup"]
            teams = {r["team"]: r["assignments"] for r in f["teams"]}
            expect_eq(teams, {"(no team)": 1, "north": 1}, "teams of /api/followup")
            reps = {(r["owner"], r["team"]) for r in f["reps"]}
            expect_eq(reps, {("ann", "(no team)"), ("bo", "north")}, "reps of /api/followup")
            f = m.api("/api/followup?team=%28no%20team%29")["followup"]
            expect_eq((f["assignments"], f["sla_breaches"]), (1, 1), "the filter team=(no team)")
            st, _, body = m.get("/metrics")
            lines = set(body.decode().splitlines())
            for line in ('funnel_assignments_total{team="(no team)"} 1',
                         'funnel_assignments_total{team="north"} 1',
                         'funnel_sla_breaches_total{team="(no team)",owner="ann"} 1'):
                expect_in(line, lines, "/metrics sample")
            expect(not any('team=""' in x for x in lines), "no empty team label")
        res.run("assignments without a team show as (no team) in JSON and /metrics", named)
    finally:
        m.stop()
    log.close()


def main():
    return run_service_groups(FUNNELD, METRICS, (run_checks, run_growth, run_hostile,
                                                  run_definitions, run_event_time, run_goals,
                                                  run_no_team))


if __name__ == "__main__":
    sys.exit(main())
