#!/usr/bin/python3
"""
tests/integration/test_routing.py - funnel-routing end to end against a
real funneld: one lead.assigned per qualified lead, routed again after a
recycle, an unavailable rep never chosen, the fallback queue, explain,
--rebuild with an identical digest, a bad rules file refused with its
line; the SLA with an injected clock (breach, escalation chain up to the
limit, no breach when contacted in time, timers that survive kill -9);
and kill -9 mid-stream with no duplicate and no missing assignment.

Run with Debian's /usr/bin/python3 (python3-zmq, python3-msgpack):

    BUILD=build FUNNELD=build/bin/funneld /usr/bin/python3 tests/integration/test_routing.py

funnel-routing is $BUILD/bin/funnel-routing.  Every process and wait is
bounded; prints "ok - name" / "not ok - name: reason" and "N passed, M failed".
"""
import json
import os
import random
import re
import sys
import time


from funnel_testlib import (REPO, CheckFailed, LogClient, Service, expect, expect_eq,
                            expect_in, kill9_while_publishing, of_type, run_service_groups,
                            stop_proc, wait_until)

BUILD = os.environ.get("BUILD", "build")
FUNNELD = os.environ.get("FUNNELD", os.path.join(REPO, BUILD, "bin", "funneld"))
ROUTING = os.path.join(os.path.dirname(FUNNELD), "funnel-routing")
MINUTE_NS = 60 * 10**9

RULES = """\
# test routing: Europe to the sales team (2:1:1), everything else waits
version: "it v1"
scoring:
  threshold: 50
routing:
  teams:
    - name: sales
      sla_minutes: 60
      team_lead: tl
      escalation: { to: next_rep, limit: 2 }
      reps:
        - { name: ra, weight: 2 }
        - { name: rb, weight: 1 }
        - { name: rc, weight: 1 }
  rules:
    - name: europe
      team: sales
      when:
        country: [DE, FR]
  fallback:
    queue: unrouted
"""


class Routing(Service):
    """funnel-routing against one daemon, with one view, rules file and a
    clock file it reads SLA time from (set_clock)."""

    def __init__(self, daemon, name, rules=RULES):
        self.clock = os.path.join(daemon.dir, name + ".clock")
        super().__init__(ROUTING, daemon, name, ["--clock-file", self.clock])
        self.write_rules(rules)
        self.set_clock(time.time_ns())

    def set_clock(self, ns):
        tmp = self.clock + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % ns)
        os.replace(tmp, self.clock)

    def start(self, *extra):
        return super().start("--tick-ms", "100", *extra)


def captured(lead, country="DE", i=0):
    return {"type": "lead.captured", "lead": lead, "id": "cap-%s-%d" % (lead, i),
            "data": {"email": "%s@corp.example" % lead.lower(), "country": country}}


def qualified(lead, i=0):
    return {"type": "lead.qualified", "lead": lead, "id": "q-%s-%d" % (lead, i)}


def check_assigned_once(recs):
    """Every lead.qualified has exactly one routing lead.assigned caused by
    it, with the derived id; returns {qualified seq: assigned record}."""
    by_cause = {}
    for r in of_type(recs, "lead.assigned"):
        if not r.get("id", "").startswith("routing:"):
            continue
        expect(r["cause"] < r["seq"], "cause before the assignment")
        key = "escalated" if r["data"]["escalation"] > 0 else "assigned"
        expect_eq(r["id"], "routing:%d:%s" % (r["cause"], key), "derived id")
        if key == "assigned":
            expect(r["cause"] not in by_cause, "two assignments for cause %d" % r["cause"])
            by_cause[r["cause"]] = r
    for q in of_type(recs, "lead.qualified"):
        expect_in(q["seq"], by_cause, "qualified seqs with an assignment")
        expect_eq(by_cause[q["seq"]]["lead"], q["lead"], "assigned lead")
    expect_eq(len(by_cause), len(of_type(recs, "lead.qualified")), "assignments per qualification")
    return by_cause


def run_checks(res, daemon, ctx):
    log = LogClient(ctx, daemon.endpoints)
    rt = Routing(daemon, "r")

    def routes_each_once():
        for i in range(40):
            log.publish_ok(captured("A%d" % i), qualified("A%d" % i))
        log.publish_ok(captured("US1", country="US"), qualified("US1"))
        rt.until_head()
        recs = log.records()
        got = check_assigned_once(recs)
        owners = [got[q["seq"]]["data"]["owner"] for q in of_type(recs, "lead.qualified")
                  if q["lead"].startswith("A")]
        expect_eq((owners.count("ra"), owners.count("rb"), owners.count("rc")), (20, 10, 10),
                  "2:1:1 shares of 40 leads")
        us = of_type(recs, "lead.assigned", "US1")[0]["data"]
        expect_eq((us["owner"], us["rule"]), ("unrouted", "fallback"), "no rule: the fallback queue")
        d = of_type(recs, "lead.assigned", "A0")[0]["data"]
        expect_eq((d["team"], d["rule"], d["escalation"]), ("sales", "europe", 0), "team, rule")
        expect_in("weighted round-robin", d["reason"], "reason")
        expect_eq(d["rules_version"], "it v1", "rules version")
        changed = [r for r in of_type(recs, "rules.changed") if r["data"]["service"] == "routing"]
        expect_eq(len(changed), 1, "routing's rules.changed")
        expect_eq(changed[0]["data"]["text"], RULES, "the whole rules file on record")
        expect_eq(d["rules_hash"], changed[0]["data"]["hash"], "lead.assigned names the rules")
        expect(changed[0]["seq"] < min(r["seq"] for r in of_type(recs, "lead.assigned")),
               "the rules are recorded before the first assignment")
        head = log.status()["head"]
        rt.until_head()
        expect_eq(log.status()["head"], head, "running again at the head sends nothing")
    res.run("each qualified lead gets exactly one lead.assigned, weighted 2:1:1; "
            "no match goes to the fallback queue", routes_each_once)

    def burst_stays_fair():
        n = 3000
        for b in range(0, n, 500):     # 6 requests of 1000 events
            evs = []
            for i in range(b, b + 500):
                evs += [captured("W%d" % i), qualified("W%d" % i)]
            log.publish_ok(*evs)
        rt.until_head()
        owners = [r["data"]["owner"] for r in of_type(log.records(), "lead.assigned")
                  if r["lead"].startswith("W")]
        expect_eq(len(owners), n, "one assignment per lead of the burst")
        for rep, share in (("ra", 0.5), ("rb", 0.25), ("rc", 0.25)):
            got = owners.count(rep) / n
            expect(abs(got - share) <= 0.01, "%s: share %.4f, want %.2f" % (rep, got, share))
    res.run("a burst of 3000 qualified leads is shared 2:1:1 within 1%", burst_stays_fair)

    def requalified_routed_again():
        log.publish_ok({"type": "lead.recycled", "lead": "A0", "id": "rec-A0",
                        "data": {"reason": "timing"}})
        log.publish_ok(qualified("A0", 1))
        rt.until_head()
        recs = log.records()
        check_assigned_once(recs)
        expect_eq(len(of_type(recs, "lead.assigned", "A0")), 2, "A0 routed twice")
    res.run("a lead recycled to nurture and qualified again is routed again", requalified_routed_again)

    def unavailable_never_chosen():
        log.publish_ok({"type": "rep.unavailable", "id": "away-ra", "data": {"rep": "ra"}})
        for i in range(12):
            log.publish_ok(captured("B%d" % i), qualified("B%d" % i))
        rt.until_head()
        recs = log.records()
        owners = [r["data"]["owner"] for r in of_type(recs, "lead.assigned")
                  if r["lead"].startswith("B")]
        expect_eq(len(owners), 12, "B leads assigned")
        expect("ra" not in owners, "ra is unavailable: %r" % owners)
        expect_eq(sorted(set(owners)), ["rb", "rc"], "the others share")
        log.publish_ok({"type": "rep.available", "id": "back-ra", "data": {"rep": "ra"}})
        for i in range(4):
            log.publish_ok(captured("C%d" % i), qualified("C%d" % i))
        rt.until_head()
        owners = [r["data"]["owner"] for r in of_type(log.records(), "lead.assigned")
                  if r["lead"].startswith("C")]
        expect_in("ra", owners, "ra back after rep.available")
    res.run("an unavailable rep never gets a lead, and gets them again once available",
            unavailable_never_chosen)

    def explain():
        e = json.loads(rt.ok("explain", "B3", "--json"))
        expect_eq(e["lead"], "B3", "lead")
        expect_eq((e["team"], e["rule"]), ("sales", "europe"), "team and rule")
        expect_in(e["owner"], ("rb", "rc"), "owner")
        expect_in("ra unavailable", e["reason"], "why the others were not eligible")
        expect(e["sla_deadline"] is not None, "a timer running")
        expect_eq(e["fields"]["country"], "DE", "fields")
        human = rt.ok("explain", "B3")
        expect_in("rule matched:  europe", human, "human explain")
        expect_in("why this rep:", human, "human explain")
        p = rt.run("explain", "nobody")
        expect_eq(p.returncode, 1, "explain of an unknown lead exits 1")
        expect_in("nobody", p.stderr, "message names the lead")
    res.run("explain: the rule, who was eligible, why this rep, the SLA", explain)

    def rebuild_identical():
        rt.until_head()     # the assignments the last run derived
        cp1, d1 = rt.digest()
        head = log.status()["head"]
        rt.until_head("--rebuild")
        expect_eq(rt.digest(), (cp1, d1), "digest after --rebuild")
        fresh = Routing(daemon, "fresh")
        fresh.until_head()
        expect_eq(fresh.digest(), (cp1, d1), "a view built from nothing elsewhere")
        expect_eq(log.status()["head"], head, "a rebuild sends nothing")
    res.run("--rebuild from seq 1 gives the identical view digest", rebuild_identical)

    def bad_rules_refused():
        bad = Routing(daemon, "bad", RULES.replace("weight: 2", "weight: x"))
        head = log.status()["head"]
        p = bad.run("--until-head")
        expect_eq(p.returncode, 2, "exit status on a bad rules file")
        expect_in("bad.yaml:12: routing.teams[0].reps[0].weight", p.stderr,
                  "message names the file, the line and the key")
        expect_in('"x"', p.stderr, "message quotes the bad value")
        expect_eq(log.status()["head"], head, "nothing recorded")
        expect(not os.path.exists(os.path.join(bad.view, "data.mdb")), "no view made")
        p = bad.run("check")
        expect_eq(p.returncode, 2, "check exit status")
        expect_in("ok", rt.ok("check"), "check of a good file")
        shipped = rt.run("check", os.path.join(REPO, "funnel.yaml"))
        expect_eq(shipped.returncode, 0, "the shipped funnel.yaml checks: %s" % shipped.stderr)
    res.run("bad routing rules are refused with the line and the problem", bad_rules_refused)
    log.close()


def run_sla(res, daemon, ctx):
    log = LogClient(ctx, daemon.endpoints)
    rt = Routing(daemon, "s")
    state = {}

    def assigned_of(lead, n):
        recs = of_type(log.records(), "lead.assigned", lead)
        return recs if len(recs) >= n else None

    def applied():
        """The view has applied the log's head."""
        head = log.status()["head"]
        return wait_until(lambda: rt.digest()[0] >= head, "the view at seq %d" % head)

    def breach_and_escalation():
        proc = rt.start()
        state["proc"] = proc
        log.publish_ok(captured("S1"), qualified("S1"), captured("S2"), qualified("S2"))
        a1 = wait_until(lambda: assigned_of("S1", 1), "S1 assigned")[0]
        a2 = wait_until(lambda: assigned_of("S2", 1), "S2 assigned")[0]
        log.publish_ok({"type": "lead.contacted", "lead": "S2", "id": "call-S2"})
        applied()
        state["s2"] = a2
        # 61 minutes after S1's assignment: S1 is late, S2 was called in time
        rt.set_clock(a1["ts"] + 61 * MINUTE_NS)
        b = wait_until(lambda: of_type(log.records(), "lead.sla_breached", "S1"), "S1 breach")[0]
        expect_eq(b["id"], "routing:%d:breach" % a1["seq"], "breach id names the assignment")
        expect_eq(b["cause"], a1["seq"], "breach cause")
        expect_eq(b["data"]["owner"], a1["data"]["owner"], "breach owner")
        expect_eq(b["data"]["minutes_late"], 1, "minutes late")
        e = wait_until(lambda: assigned_of("S1", 2), "S1 escalated")[1]
        expect_eq(e["cause"], b["seq"], "the escalation is caused by the breach")
        expect_eq(e["id"], "routing:%d:escalated" % b["seq"], "escalation id")
        expect_eq(e["data"]["escalation"], 1, "escalation level")
        expect_eq(e["data"]["previous_owner"], a1["data"]["owner"], "taken from the late rep")
        expect(e["data"]["owner"] != a1["data"]["owner"], "a different rep")
        state["e1"] = e
    res.run("SLA: a late lead gets lead.sla_breached, then an escalation lead.assigned",
            breach_and_escalation)

    def contacted_in_time():
        expect("s2" in state, "the breach check ran")
        applied()
        time.sleep(0.5)     # several ticks with S2's deadline passed
        expect_eq(of_type(log.records(), "lead.sla_breached", "S2"), [], "no breach for S2")
    res.run("SLA: a lead contacted in time is never breached", contacted_in_time)

    def timers_survive_kill9():
        expect("e1" in state, "the escalation check ran")
        state["proc"].kill()
        state["proc"].wait(timeout=10)
        # time moves while the service is down; the timer is in its view
        rt.set_clock(state["e1"]["ts"] + 61 * MINUTE_NS)
        state["proc"] = rt.start()
        b = wait_until(lambda: (lambda x: x if len(x) >= 2 else None)(
            of_type(log.records(), "lead.sla_breached", "S1")), "second S1 breach")[1]
        expect_eq(b["data"]["owner"], state["e1"]["data"]["owner"], "breach of the escalated owner")
        e2 = wait_until(lambda: assigned_of("S1", 3), "second escalation")[2]
        expect_eq(e2["data"]["escalation"], 2, "escalation 2")
        # the limit is 2: the third breach is recorded and nothing more
        rt.set_clock(e2["ts"] + 61 * MINUTE_NS)
        wait_until(lambda: len(of_type(log.records(), "lead.sla_breached", "S1")) >= 3,
                   "third S1 breach")
        applied()
        time.sleep(0.3)
        expect_eq(len(of_type(log.records(), "lead.assigned", "S1")), 3,
                  "no escalation past the limit")
        breaches = of_type(log.records(), "lead.sla_breached")
        expect_eq(len(breaches), len({r["id"] for r in breaches}), "each breach recorded once")
        human = rt.ok("explain", "S1")
        expect_in("breaches 3, escalations 2", human, "explain shows the chain")
    res.run("SLA timers survive kill -9 and restart; the chain stops at the limit",
            timers_survive_kill9)

    def replay_does_not_redecide():
        if "proc" in state:
            expect_eq(stop_proc(state["proc"]), 0, "SIGTERM exit status")
        cp1, d1 = rt.digest()
        head = log.status()["head"]
        rt.set_clock(time.time_ns() + 10**6 * MINUTE_NS)   # far future: every timer late
        rt.until_head("--rebuild")
        expect_eq(rt.digest(), (cp1, d1), "digest after --rebuild")
        expect_eq(log.status()["head"], head, "the rebuild decided nothing again")
    res.run("a rebuild re-applies recorded breaches and escalations: identical view, "
            "nothing sent", replay_does_not_redecide)
    log.close()


def run_kill9(res, daemon, ctx):
    log = LogClient(ctx, daemon.endpoints)
    rt = Routing(daemon, "k")
    rnd = random.Random(11)
    rounds, leads = 5, 40

    def kill9_no_dup_no_loss():
        def publish(ri):
            r, i = ri
            lead = "K%d-%d" % (r, i)
            log.publish_ok(captured(lead, country=("DE", "FR", "US")[i % 3]))
            log.publish_ok(qualified(lead))
        for r in range(rounds):
            kill9_while_publishing(rt, ("--batch", "3"), rnd.uniform(0.05, 0.4),
                                   [(r, i) for i in range(leads)], publish)
        rt.until_head()
        rt.until_head()     # the assignments the first pass derived
        recs = log.records()
        got = check_assigned_once(recs)
        expect_eq(len(got), rounds * leads, "assignments")
        cp, d = rt.digest()
        fresh = Routing(daemon, "kfresh")
        fresh.until_head()
        expect_eq(fresh.digest(), (cp, d), "view after kills = view from scratch")
    res.run("kill -9 mid-stream, %d rounds: no duplicate, no missing lead.assigned, "
            "view equals a rebuild" % rounds, kill9_no_dup_no_loss)
    log.close()


# Reps with names in several scripts, enough of them that "why this rep"
# runs past its bound and is cut.
WIDE_RULES = """\
version: wide
routing:
  teams:
    - name: t
      reps:
        - { name: "Jürgen Größe-Müller €€€€€€€€€€€€ ä", weight: 3 }
        - { name: "Zoë Ørsted-Åkesson €€€€€€€€€€€€€ é", weight: 2 }
        - { name: "Łukasz Świątek-Żółć €€€€€€€€€€€€ ö" }
        - { name: "Ярослава Ковальчук €€€€€€€€€€€€ й" }
        - { name: "北京市 朝阳区 销售代表 €€€€€€€€ 一", capacity: 1 }
  rules:
    - { name: all, team: t }
  fallback: { queue: "Warteschlange €" }
"""


def run_wide(res, daemon, ctx):
    log = LogClient(ctx, daemon.endpoints)
    rt = Routing(daemon, "w", WIDE_RULES)

    def long_reasons_are_stored():
        for i in range(20):
            log.publish_ok(captured("U%d" % i), qualified("U%d" % i))
        rt.until_head()
        rt.until_head()     # the assignments the first pass derived
        recs = log.records()
        got = check_assigned_once(recs)
        expect_eq(len(got), 20, "assignments")
        expect(any(r["data"]["reason"].endswith("...") for r in got.values()),
               "some reasons were cut")
        e = json.loads(rt.ok("explain", "U7", "--json"))
        expect_eq(e["assignment_seq"], of_type(recs, "lead.assigned", "U7")[0]["seq"],
                  "the view holds the stored assignment")
    res.run("reasons cut between UTF-8 characters: the log stores every lead.assigned",
            long_reasons_are_stored)
    log.close()


def run_clock(res, daemon, ctx):
    log = LogClient(ctx, daemon.endpoints)
    rt = Routing(daemon, "c")

    def clock_file_not_a_time():
        proc = rt.start()
        try:
            rt.set_clock(-1)        # strtoull would read it as 2^64 - 1: every timer late
            log.publish_ok(captured("T1"), qualified("T1"))
            a = wait_until(lambda: of_type(log.records(), "lead.assigned", "T1"), "T1 assigned")[0]
            head = log.status()["head"]
            wait_until(lambda: rt.digest()[0] >= head, "the view at seq %d" % head)
            time.sleep(0.5)         # several ticks
            expect_eq(of_type(log.records(), "lead.sla_breached", "T1"), [],
                      "no breach decided from a clock file that holds no time")
            rt.set_clock(a["ts"] + 61 * MINUTE_NS)
            b = wait_until(lambda: of_type(log.records(), "lead.sla_breached", "T1"), "T1 breach")
            expect_eq(b[0]["data"]["minutes_late"], 1, "minutes late once the clock reads")
        finally:
            stop_proc(proc)
    res.run("SLA: a clock file that holds no time (a negative number) decides nothing",
            clock_file_not_a_time)
    log.close()


def run_backfill(res, daemon, ctx):
    """Event time (PROTOCOL.md §10): the assignment routing derives from
    a backdated qualification carries its event time; SLA timers stay on
    the live clock, and an assignment whose event time is older than its
    SLA when recorded (a backfill) is not timed, while a live one is."""
    log = LogClient(ctx, daemon.endpoints)
    rt = Routing(daemon, "b")

    def backfill_not_breached():
        proc = rt.start()
        try:
            old = time.time_ns() - 30 * 24 * 60 * MINUTE_NS
            log.publish_ok(dict(captured("OLD"), occurred_at=old),
                           dict(qualified("OLD"), occurred_at=old + MINUTE_NS),
                           captured("NEW"), qualified("NEW"))
            a_old = wait_until(lambda: of_type(log.records(), "lead.assigned", "OLD"),
                               "OLD assigned")[0]
            a_new = wait_until(lambda: of_type(log.records(), "lead.assigned", "NEW"),
                               "NEW assigned")[0]
            expect_eq(a_old.get("occurred_at"), old + MINUTE_NS,
                      "the derived assignment happens when its qualification did")
            expect(a_new.get("occurred_at", 0) <= a_new["ts"], "a live one at about ts")
            head = log.status()["head"]
            wait_until(lambda: rt.digest()[0] >= head, "the view at seq %d" % head)
            rt.set_clock(max(a_old["ts"], a_new["ts"]) + 61 * MINUTE_NS)
            wait_until(lambda: of_type(log.records(), "lead.sla_breached", "NEW"), "NEW breach")
            time.sleep(0.5)         # several ticks with both deadlines passed
            expect_eq(of_type(log.records(), "lead.sla_breached", "OLD"), [],
                      "no breach for an assignment already older than its SLA")
        finally:
            stop_proc(proc)
    res.run("SLA: a backfilled assignment is not timed, a live one is", backfill_not_breached)


def dropped_count(stderr):
    """The service's count of decisions a person overrode, from its stop line."""
    m = re.search(r"(\d+) dropped \(a person acted first\)", stderr)
    expect(m is not None, "stop line with the dropped count: %r" % stderr[-600:])
    return int(m.group(1))


def run_people(res, daemon, ctx):
    """Services never override people: a decision is sent with the lead's
    version and dropped when anyone acted on the lead first."""
    log = LogClient(ctx, daemon.endpoints)
    with open(os.path.join(REPO, "funnel.yaml")) as f:
        shipped = f.read()

    def routed(recs, lead):
        return [r for r in of_type(recs, "lead.assigned", lead)
                if r.get("id", "").startswith("routing:")]

    def readme_tour():
        # The README tour, live, with the shipped rules: a form, then one
        # request with an activity, a hand-sent qualification, rep-ben's
        # hand assignment and his acceptance.
        rt = Routing(daemon, "tour", shipped)
        proc = rt.start()
        try:
            log.publish_ok({"type": "lead.captured", "lead": "L-1", "id": "form-123",
                            "data": {"email": "ana@acme.example", "source": "webinar",
                                     "campaign": "q4-launch"}})
            log.publish_ok({"type": "lead.activity", "lead": "L-1", "data": {"kind": "webinar"}},
                           {"type": "lead.qualified", "lead": "L-1"},
                           {"type": "lead.assigned", "lead": "L-1", "data": {"owner": "rep-ben"}},
                           {"type": "lead.accepted", "lead": "L-1"})
            wait_until(lambda: "dropped: the lead changed first" in rt.tail(),
                       "routing to meet the log's EVERSION")
        finally:
            expect_eq(stop_proc(proc), 0, "routing stops cleanly")
        expect_eq(dropped_count(rt.tail()), 1, "the dropped assignment is counted")
        rt.until_head()     # what the live run had not applied when it stopped
        recs = log.records()
        expect_eq(routed(recs, "L-1"), [], "routing recorded no assignment for L-1")
        e = json.loads(rt.ok("explain", "L-1", "--json"))
        expect_eq((e["owner"], e["open"]), ("rep-ben", True), "L-1 stays rep-ben's")
        expect(e["sla_deadline"] is None, "no SLA timer for L-1: %r" % e)
        st = log.call(log.query, {"op": "lead", "lead": "L-1"})
        expect_eq((st.get("owner"), st.get("stage")), ("rep-ben", "sal"), "the log's L-1: %r" % st)
        # nothing comes back on a restart, and a rebuild agrees
        cp, d = rt.digest()
        rt.until_head()
        expect_eq(routed(log.records(), "L-1"), [], "a restart resends nothing for L-1")
        rt.until_head("--rebuild")
        expect_eq(rt.digest(), (cp, d), "digest after --rebuild")
    res.run("README tour: a hand-assigned, accepted L-1 stays rep-ben's, no SLA timer, "
            "the dropped assignment counted", readme_tour)

    rt = Routing(daemon, "race")

    def accepted_before_assignment():
        rt.until_head()     # the tour's L-1, before
        # routing paused: the acceptance lands between the qualification and
        # the assignment decided on it
        log.publish_ok(captured("R1"), qualified("R1"))
        log.publish_ok({"type": "lead.accepted", "lead": "R1", "id": "acc-R1"})
        p = rt.run("--until-head")
        expect_eq(p.returncode, 0, "routing exit status")
        expect_eq(dropped_count(p.stderr), 1, "the dropped assignment is counted")
        expect_eq(routed(log.records(), "R1"), [], "no assignment stored for R1")
        e = json.loads(rt.ok("explain", "R1", "--json"))
        expect_eq((e["owner"], e["open"]), ("", False), "nothing of the decision kept in the view")
        expect(e["sla_deadline"] is None, "no SLA timer")
        # the rotation is as if the pick never happened: 2:1:1 from the start
        for i in range(4):
            log.publish_ok(captured("R2-%d" % i), qualified("R2-%d" % i))
        p = rt.run("--until-head")
        expect_eq(dropped_count(p.stderr), 0, "nothing dropped this time")
        owners = [routed(log.records(), "R2-%d" % i)[0]["data"]["owner"] for i in range(4)]
        # (smooth weighted round-robin from zero; with the dropped pick kept it
        # would be rb, rc, ra, ra)
        expect_eq(owners, ["ra", "rb", "rc", "ra"], "the rotation, untouched by the dropped pick")
        p = rt.run("--until-head")
        expect_eq(dropped_count(p.stderr), 0, "a restart resends nothing")
        cp, d = rt.digest()
        rt.until_head("--rebuild")
        expect_eq(rt.digest(), (cp, d), "digest after --rebuild")
    res.run("acceptance between the qualification and the assignment: the assignment is "
            "dropped, counted, and leaves nothing in the view", accepted_before_assignment)

    def browsing_is_not_acting():
        # an activity after the qualification is no person acting: the lead
        # is routed on its latest record instead
        log.publish_ok(captured("B1"), qualified("B1"))
        log.publish_ok({"type": "lead.activity", "lead": "B1", "data": {"kind": "page_view"}},
                       {"type": "lead.activity", "lead": "B1", "data": {"kind": "page_view"}})
        p = rt.run("--until-head")
        expect_eq(dropped_count(p.stderr), 2, "two decisions dropped on the way")
        recs = log.records()
        got = routed(recs, "B1")
        expect_eq(len(got), 1, "B1 assigned once")
        last_activity = of_type(recs, "lead.activity", "B1")[-1]["seq"]
        expect_eq(got[0]["cause"], last_activity, "decided on the latest activity")
        expect_eq(got[0]["id"], "routing:%d:assigned" % last_activity, "its derived id")
        rt.until_head()     # the assignment comes back
        e = json.loads(rt.ok("explain", "B1", "--json"))
        expect_eq((e["owner"], e["open"]), (got[0]["data"]["owner"], True), "B1's owner")
        expect(e["sla_deadline"] is not None, "the owner's SLA timer runs")
        cp, d = rt.digest()
        rt.until_head("--rebuild")
        expect_eq(rt.digest(), (cp, d), "digest after --rebuild")
    res.run("a lead that only browsed after its qualification is routed on its latest record",
            browsing_is_not_acting)

    def owned_lead_keeps_owner():
        log.publish_ok(captured("K1"),
                       {"type": "lead.assigned", "lead": "K1", "data": {"owner": "rep-ben"}})
        rt.until_head()
        log.publish_ok(qualified("K1"))
        rt.until_head()
        expect_eq(routed(log.records(), "K1"), [], "no routing assignment for an owned lead")
        e = json.loads(rt.ok("explain", "K1", "--json"))
        expect_eq((e["owner"], e["open"]), ("rep-ben", True), "K1 keeps rep-ben")
        # unless the rules say otherwise
        other = Routing(daemon, "reroute", RULES + "  keep_owner: false\n")
        other.until_head()
        got = routed(log.records(), "K1")
        expect_eq(len(got), 1, "keep_owner: false routes K1 again")
        expect_in(got[0]["data"]["owner"], ("ra", "rb", "rc"), "a sales rep")
    res.run("a lead owned when it is qualified keeps its owner (keep_owner: false reroutes)",
            owned_lead_keeps_owner)
    log.close()


def main():
    return run_service_groups(FUNNELD, ROUTING, (run_checks, run_sla, run_kill9, run_wide, run_clock,
                                                 run_backfill, run_people))


if __name__ == "__main__":
    sys.exit(main())
