#!/usr/bin/python3
"""
tests/integration/test_scoring.py - funnel-scoring end to end against a
real funneld: qualification once per crossing, re-crossing after a
recycle, rules.changed before the first score made with new rules, kill -9
mid-stream with no duplicate and no missing derived event, --rebuild
byte for byte, explain, what-if on a known history and against the live
service lead by lead, a lead sent back crossing again, bounded `matches`,
and bad rules files (a mistake, a back-reference, too big, UTF-16).

Run with Debian's /usr/bin/python3 (python3-zmq, python3-msgpack):

    BUILD=build FUNNELD=build/bin/funneld /usr/bin/python3 tests/integration/test_scoring.py

funnel-scoring is $BUILD/bin/funnel-scoring.  Every process and receive is
bounded; prints "ok - name" / "not ok - name: reason" and "N passed, M failed".
"""
import hashlib
import json
import os
import random
import re
import signal
import sys


from funnel_testlib import (REPO, LogClient, Service, expect, expect_eq,
                            expect_in, kill9_while_publishing, of_type, run_service_groups,
                            stop_proc)

BUILD = os.environ.get("BUILD", "build")
FUNNELD = os.environ.get("FUNNELD", os.path.join(REPO, BUILD, "bin", "funneld"))
SCORING = os.path.join(os.path.dirname(FUNNELD), "funnel-scoring")
ROUTING = os.path.join(os.path.dirname(FUNNELD), "funnel-routing")

RULES_V1 = """\
# test definition: a senior title with a corporate address that looks at
# pricing three times, or asks for a demo, is marketing-qualified.
version: "test v1"
scoring:
  threshold: 50
  minimum_fit: 10
  decay:
    half_life_days: 30
  on_recycle: reset_engagement
  fit:
    - name: senior title
      field: title
      matches: "(vp|chief|head|cto)"
      ignore_case: true
      points: 20
  engagement:
    - name: demo request
      on: demo_request
      points: 40
      once: true
    - name: pricing page
      on: page_view
      field: url
      matches: "/pricing"
      points: 10
      cap: 30
  negative:
    - name: free mail
      field: email_domain
      in: [gmail.com, yahoo.com]
      points: -100
routing:
  note: read by funnel-routing, not by scoring
"""

# v2: no minimum fit and a lower bar: a demo request alone qualifies
RULES_V2 = RULES_V1.replace('"test v1"', '"test v2"').replace(
    "threshold: 50\n  minimum_fit: 10", "threshold: 40")


def blake2b_hex(text):
    return hashlib.blake2b(text.encode(), digest_size=32).hexdigest()


class Scoring(Service):
    """funnel-scoring against one daemon, with one view and rules file."""

    def __init__(self, daemon, name):
        super().__init__(SCORING, daemon, name)


def captured(lead, title, email, i=0):
    return {"type": "lead.captured", "lead": lead, "id": "cap-%s-%d" % (lead, i),
            "data": {"email": email, "title": title, "company": "Acme", "country": "DE"}}


def activity(lead, kind, i, **data):
    return {"type": "lead.activity", "lead": lead, "id": "act-%s-%d" % (lead, i),
            "data": dict(data, kind=kind)}


def check_derived_once(recs):
    """Each derived event's idempotency key appears once, its cause is an
    earlier record; returns the derived records."""
    derived = [r for r in recs if r["type"] in ("lead.scored", "lead.qualified")]
    keys = [(r["type"], r["cause"]) for r in derived]
    expect_eq(len(keys), len(set(keys)), "distinct (type, cause) among derived events")
    for r in derived:
        expect(r["id"] == "scoring:%d:%s" % (r["cause"], r["type"].split(".")[1]),
               "derived id %r" % r["id"])
        expect(r["cause"] < r["seq"], "cause before the derived event")
    return derived


def run_checks(res, daemon, ctx):
    log = LogClient(ctx, daemon.endpoints)
    sc = Scoring(daemon, "s")
    sc.write_rules(RULES_V1)

    # The known history: A fits and reads pricing; B is a student who asks
    # for a demo; C is a CTO on free mail.
    log.publish_ok(captured("A", "CTO", "ana@acme.example"),
                   captured("B", "Student", "ben@uni.example"),
                   captured("C", "CTO", "chloe@gmail.com"))
    for i in range(3):
        log.publish_ok(activity("A", "page_view", i, url="https://acme.example/pricing"))
    log.publish_ok(activity("B", "demo_request", 0))
    log.publish_ok(activity("C", "demo_request", 0),
                   activity("C", "page_view", 1, url="/pricing"))
    log.publish_ok(activity("A", "page_view", 3, url="/blog"))   # matches no rule

    def first_run():
        sc.until_head()
        recs = log.records()
        changed = of_type(recs, "rules.changed")
        expect_eq(len(changed), 1, "rules.changed records")
        d = changed[0]["data"]
        expect_eq(d["service"], "scoring", "rules.changed service")
        expect_eq(d["hash"], blake2b_hex(RULES_V1), "rules.changed hash = BLAKE2b-256 of the file")
        expect_eq(d["version"], "test v1", "rules.changed version")
        expect_eq(d["text"], RULES_V1, "rules.changed carries the full text")
        scored = of_type(recs, "lead.scored")
        expect(scored, "lead.scored events")
        expect(changed[0]["seq"] < min(r["seq"] for r in scored),
               "rules.changed is recorded before the first score")
        for r in scored:
            expect_eq(r["data"]["rules_hash"], d["hash"], "lead.scored names the rules hash")
        qual = of_type(recs, "lead.qualified")
        expect_eq([r["lead"] for r in qual], ["A"], "leads qualified")
        a_views = [r["seq"] for r in recs if r["type"] == "lead.activity" and r["lead"] == "A"]
        expect_eq(qual[0]["cause"], a_views[2], "qualified by the third pricing view")
        expect_eq((qual[0]["data"]["fit"], qual[0]["data"]["engagement"],
                   qual[0]["data"]["total"]), (20, 30, 50), "scores at qualification")
        expect_eq(qual[0]["stage"], "mql", "A is now mql")
        # A's scores: 10, 20, 30 engagement as the views came
        a_scores = [r["data"]["total"] for r in scored if r["lead"] == "A"]
        expect_eq(a_scores, [20, 30, 40, 50], "A's totals in order")
        c_scores = [r["data"]["total"] for r in scored if r["lead"] == "C"]
        expect_eq(c_scores[-1], -80 + 40 + 10, "C: free mail outweighs everything")
        check_derived_once(recs)
    res.run("a stream of captures and activities qualifies exactly the fitting lead, once; "
            "rules.changed comes first", first_run)

    def idempotent_rerun():
        head = log.status()["head"]
        sc.until_head()
        sc.until_head()
        recs = log.records()
        # the second pass may only have scored its own derived events: nothing
        expect_eq(log.status()["head"], head, "head after re-running at the head")
        expect_eq(len(of_type(recs, "rules.changed")), 1, "rules.changed not repeated")
    res.run("running again with the same rules records nothing new", idempotent_rerun)

    def recross_after_recycle():
        log.publish_ok({"type": "lead.recycled", "lead": "A", "id": "rec-A",
                        "data": {"reason": "bad-timing"}})
        log.publish_ok(activity("A", "page_view", 10, url="/pricing"))   # more interest, still above?
        sc.until_head()
        recs = log.records()
        expect_eq(len(of_type(recs, "lead.qualified")), 1, "no second qualification yet "
                  "(engagement was reset at the recycle)")
        for i in range(11, 13):
            log.publish_ok(activity("A", "page_view", i, url="/pricing"))
        sc.until_head()
        recs = log.records()
        qual = of_type(recs, "lead.qualified")
        expect_eq([r["lead"] for r in qual], ["A", "A"], "A re-qualified after re-crossing")
        log.publish_ok(activity("A", "page_view", 13, url="/pricing"))
        sc.until_head()
        expect_eq(len(of_type(log.records(), "lead.qualified")), 2, "staying above sends nothing")
    res.run("re-crossing after a recycle qualifies again, once", recross_after_recycle)

    def explain():
        out = sc.ok("explain", "A", "--json")
        e = json.loads(out)
        expect_eq(e["lead"], "A", "lead")
        expect_eq(e["stage"], "mql", "stage from funneld")
        expect_eq((e["fit"], e["total"]), (20, 50), "fit and total")
        names = {r["name"]: r for r in e["rules"]}
        expect_in("senior title", names, "contributing rules")
        expect_in("pricing page", names, "contributing rules")
        pp = names["pricing page"]
        expect_eq(pp["last_type"], "lead.activity", "pricing page triggered by an activity")
        expect_eq(pp["last_kind"], "page_view", "its kind")
        expect(pp["fired"] >= 3, "pricing page fired for A: %r" % pp["fired"])
        expect_eq(e["fields"]["email_domain"], "acme.example", "derived email_domain")
        human = sc.ok("explain", "A")
        expect_in("senior title", human, "human explain")
        expect_in("total 50", human, "human explain")
        p = sc.run("explain", "nobody")
        expect_eq(p.returncode, 1, "explain of an unknown lead exits 1")
        expect_in("nobody", p.stderr, "message names the lead")
    res.run("explain names each contributing rule and the event that triggered it", explain)

    def what_if():
        log.publish_ok({"type": "lead.accepted", "lead": "A", "id": "acc-A"})
        log.publish_ok({"type": "opportunity.opened", "lead": "A", "id": "opp-A",
                        "data": {"amount": 5000}})
        log.publish_ok({"type": "deal.won", "lead": "A", "id": "won-A",
                        "data": {"amount": 5000}})
        new = os.path.join(daemon.dir, "new.yaml")
        with open(new, "w") as f:
            f.write(RULES_V2)
        head = log.status()["head"]
        w = json.loads(sc.ok("what-if", new, "--json"))
        expect_eq(log.status()["head"], head, "what-if sends nothing")
        expect_eq(w["leads_captured"], 3, "leads captured")
        cur, nw = w["current"], w["new"]
        expect_eq(cur["mql_leads"], 1, "current: MQL leads")
        expect_eq(cur["qualifications"], 2, "current: qualifications (A twice)")
        expect_eq(nw["mql_leads"], 2, "new: MQL leads (A and B)")
        expect_eq(nw["only_this_definition_leads"], ["B"], "only the new definition qualifies B")
        expect_eq(cur["only_this_definition"], 0, "nothing only the current one qualifies")
        expect_eq((cur["accepted"], cur["won"], cur["revenue"]), (1, 1, 5000),
                  "current: how its leads ended")
        expect_eq(cur["recycle_reasons"], {"bad-timing": 1}, "current: recycle reasons")
        expect(abs(cur["mql_rate"] - 1 / 3) < 1e-9, "MQL rate")
        human = sc.ok("what-if", new)
        expect_in("MQLs (leads qualified)", human, "human what-if")
        expect_in("only the new definition qualifies: 1", human, "human what-if flips")
    res.run("what-if on a known history gives the known counts and sends nothing", what_if)

    def rebuild_identical():
        sc.until_head()
        cp1, d1 = sc.digest()
        sc.until_head("--rebuild")
        cp2, d2 = sc.digest()
        expect_eq(cp2, cp1, "checkpoint after rebuild")
        expect_eq(d2, d1, "view digest after --rebuild")
        head = log.status()["head"]
        fresh = Scoring(daemon, "fresh")
        fresh.write_rules(RULES_V1)
        fresh.until_head()
        cp3, d3 = fresh.digest()
        expect_eq(log.status()["head"], head, "a fresh view derives nothing new")
        expect_eq((cp3, d3), (cp1, d1), "a view built from nothing elsewhere")
    res.run("--rebuild reproduces the view byte for byte", rebuild_identical)

    def duplicates_counted_apart():
        head = log.status()["head"]
        again = Scoring(daemon, "again")
        again.write_rules(RULES_V1)
        p = again.run("--until-head")
        expect_eq(p.returncode, 0, "exit status (%s)" % p.stderr[-800:])
        expect_eq(log.status()["head"], head, "nothing new in the log")
        m = re.search(r"stopped at seq \d+: \d+ applied, (\d+) derived events stored, "
                      r"(\d+) duplicates \(already in the log\)", p.stderr)
        expect(m, "the shutdown summary: %r" % p.stderr[-800:])
        expect_eq(int(m.group(1)), 0, "derived events stored (%s)" % m.group(0))
        expect(int(m.group(2)) > 0, "its derived events counted as duplicates: %s" % m.group(0))
    res.run("a fresh view over a log that holds its derived events reports them as "
            "duplicates, not stored", duplicates_counted_apart)

    def rules_change_recorded_first():
        sc.write_rules(RULES_V2)
        log.publish_ok(captured("D", "Student", "dmitri@corp.example"),
                       activity("D", "demo_request", 0))
        sc.until_head()
        recs = log.records()
        changed = of_type(recs, "rules.changed")
        expect_eq(len(changed), 2, "a second rules.changed")
        expect_eq(changed[1]["data"]["hash"], blake2b_hex(RULES_V2), "its hash")
        expect_eq(changed[1]["data"]["previous_hash"], blake2b_hex(RULES_V1), "previous hash")
        d_scored = [r for r in of_type(recs, "lead.scored") if r["lead"] == "D"]
        expect(d_scored and all(r["seq"] > changed[1]["seq"] for r in d_scored),
               "D's scores come after the change")
        expect(all(r["data"]["rules_hash"] == blake2b_hex(RULES_V2) for r in d_scored),
               "D's scores name the new rules")
        expect_in("D", [r["lead"] for r in of_type(recs, "lead.qualified")],
                  "D qualifies under v2")
        # back to v1: recorded again (a return is a change too)
        sc.write_rules(RULES_V1)
        sc.until_head()
        expect_eq(len(of_type(log.records(), "rules.changed")), 3, "the return to v1 recorded")
    res.run("a rules change is recorded before the first event scored with it", rules_change_recorded_first)

    def bad_rules_refused():
        bad = Scoring(daemon, "bad")
        bad.write_rules(RULES_V1.replace("points: 20", "points: twenty"))
        head = log.status()["head"]
        p = bad.run("--until-head")
        expect_eq(p.returncode, 2, "exit status on a bad rules file")
        expect_in("bad.yaml:", p.stderr, "message names the file")
        expect_in(":15:", p.stderr, "message names the line")
        expect_in("twenty", p.stderr, "message quotes the bad value")
        expect_eq(log.status()["head"], head, "nothing recorded")
        expect(not os.path.exists(os.path.join(bad.view, "data.mdb")), "no view made")
        p = bad.run("check")
        expect_eq(p.returncode, 2, "check exit status")
        ok = sc.ok("check")
        expect_in("ok", ok, "check of a good file")
    res.run("a bad rules file is refused at start with the line and the problem", bad_rules_refused)
    log.close()


def run_kill9(res, daemon, ctx):
    """kill -9 of the service at random moments while leads stream in."""
    log = LogClient(ctx, daemon.endpoints)
    sc = Scoring(daemon, "k")
    sc.write_rules(RULES_V1)
    rnd = random.Random(7)
    leads, rounds = 60, 6

    def kill9_no_dup_no_loss():
        def publish(ri):
            r, i = ri
            lead = "K%d-%d" % (r, i)
            log.publish_ok(captured(lead, "VP Sales", "x%d@corp.example" % (r * leads + i)))
            for k in range(3):
                log.publish_ok(activity(lead, "page_view", k, url="/pricing"))
        for r in range(rounds):
            kill9_while_publishing(sc, ("--batch", "5"), rnd.uniform(0.05, 0.6),
                                   [(r, i) for i in range(leads)], publish)
        sc.until_head()
        recs = log.records()
        check_derived_once(recs)
        qual = of_type(recs, "lead.qualified")
        expect_eq(sorted(r["lead"] for r in qual),
                  sorted("K%d-%d" % (r, i) for r in range(rounds) for i in range(leads)),
                  "each lead qualified exactly once")
        acts = [r["seq"] for r in recs if r["type"] == "lead.activity"]
        scored_causes = {r["cause"] for r in of_type(recs, "lead.scored")}
        caps = [r["seq"] for r in recs if r["type"] == "lead.captured"]
        expect(set(acts + caps) <= scored_causes, "every capture and activity scored")
        # the view equals one built from scratch
        sc.until_head()
        cp1, d1 = sc.digest()
        fresh = Scoring(daemon, "kfresh")
        fresh.write_rules(RULES_V1)
        fresh.until_head()
        expect_eq(fresh.digest(), (cp1, d1), "view after kills = view from scratch")
    res.run("kill -9 mid-stream, %d rounds: no duplicate, no missing derived event, "
            "view equals a rebuild" % rounds, kill9_no_dup_no_loss)

    def sigterm_exits_clean():
        proc = sc.start()
        proc.send_signal(signal.SIGTERM)
        expect_eq(proc.wait(timeout=10), 0, "exit status after SIGTERM")
    res.run("SIGTERM stops the service cleanly", sigterm_exits_clean)

    def unusable_view_refused():
        # a view in use by a running service, and a view path that is a
        # file: each refused at start, exit 1, the reason in one line
        proc = sc.start()
        try:
            p = sc.run("--until-head")
            expect_eq(p.returncode, 1, "exit status on a view in use")
            expect_in("the view %s is in use by scoring (pid %d): refused (one service per view)"
                      % (sc.view, proc.pid), p.stderr, "names the holder")
        finally:
            stop_proc(proc)
        other = Scoring(daemon, "file")
        other.write_rules(RULES_V1)
        with open(other.view, "w") as f:
            f.write("not a view\n")
        p = other.run("--until-head")
        expect_eq(p.returncode, 1, "exit status on a view that is a file")
        expect_in("cannot create the view directory %s: Not a directory" % other.view,
                  p.stderr, "says why")
        expect_in("scoring: cannot start: the view cannot be opened or written", p.stderr,
                  "the one cannot-start line")
    res.run("a view in use or not a directory is refused at start, saying why",
            unusable_view_refused)

    def log_dir_refused():
        # funneld's data directory given as a view: refused before anything is
        # made in it, and its digest too
        before = sorted(os.listdir(daemon.data))
        other = Scoring(daemon, "logdir")
        other.write_rules(RULES_V1)
        other.view = daemon.data
        for args in (["--until-head"], ["digest"]):
            p = other.run(*args)
            expect_eq(p.returncode, 1, "exit status of %s on the log's directory" % args[0])
            expect_in("%s is funneld's data directory (it holds the log's journal), not a view"
                      % daemon.data, p.stderr, "%s says why" % args[0])
            expect_eq(p.stdout, "", "%s printed nothing" % args[0])
        expect_eq(sorted(os.listdir(daemon.data)), before, "the log's directory unchanged")
    res.run("funneld's data directory given as a view is refused, naming it, and left as it "
            "was", log_dir_refused)
    log.close()


# For what-if against the live service: no decay, so dips and re-crossings
# are exact; an unsubscribe takes 30 points, three page views give them back.
RULES_LIVE = """\
version: "live v1"
scoring:
  threshold: 50
  on_recycle: reset_engagement
  fit:
    - name: senior
      field: title
      matches: "vp|chief|head"
      ignore_case: true
      points: 20
  engagement:
    - name: views
      on: page_view
      points: 10
  negative:
    - name: unsubscribed
      on: unsubscribe
      points: -30
"""


def run_rules_checks(res, daemon, ctx):
    """what-if against the live service on one log, and the rules file's
    limits as check and the service see them."""
    log = LogClient(ctx, daemon.endpoints)
    sc = Scoring(daemon, "live")
    sc.write_rules(RULES_LIVE)
    n = [0]

    def act(lead, kind, times=1):
        evs = []
        for _ in range(times):
            n[0] += 1
            evs.append(activity(lead, kind, n[0]))
        return evs

    def cross(lead):            # 20 fit + 30: at the threshold
        return act(lead, "page_view", 3)

    def dip_and_cross(lead):    # -30, then +30: below, then across again
        return act(lead, "unsubscribe") + act(lead, "page_view", 3)

    def whatif_matches_live():
        # 1: six leads cross; the service records their lead.qualified (mql)
        leads = ["W%d" % i for i in range(1, 7)]
        for lead in leads:
            log.publish_ok(captured(lead, "VP Sales", "%s@corp.example" % lead.lower()))
            log.publish_ok(*cross(lead))
        sc.until_head()
        # 2: W1, W2 dip and cross again while still MQLs (no new qualification);
        # W3 is rejected and crosses again (qualified again); W4 is accepted,
        # then dips and crosses (sal: no); W5 is erased and captured again
        # (a new lead: qualified again); W6 dips twice.  W7 crosses, dips and
        # crosses again before the service sees any of it (its first
        # lead.qualified lands after the second crossing: the service's
        # second decision is refused by funneld, ETRANSITION).
        log.publish_ok(*dip_and_cross("W1"))
        log.publish_ok(*(dip_and_cross("W2") + dip_and_cross("W2")))
        log.publish_ok({"type": "lead.rejected", "lead": "W3", "id": "rej-W3",
                        "data": {"reason": "not-ready"}})
        log.publish_ok(*cross("W3"))
        log.publish_ok({"type": "lead.accepted", "lead": "W4", "id": "acc-W4"})
        log.publish_ok(*dip_and_cross("W4"))
        log.publish_ok({"type": "lead.erased", "lead": "W5", "id": "era-W5"})
        log.publish_ok(captured("W5", "Head of IT", "w5@corp.example", 1))
        log.publish_ok(*cross("W5"))
        log.publish_ok(*dip_and_cross("W6"))
        log.publish_ok(captured("W7", "Chief of Staff", "w7@corp.example"))
        log.publish_ok(*(cross("W7") + dip_and_cross("W7")))
        sc.until_head()
        # 3: W3, a new MQL again, dips and crosses: no
        log.publish_ok(*dip_and_cross("W3"))
        log.publish_ok(*dip_and_cross("W6"))
        sc.until_head()

        recs = log.records()
        live = {}
        for r in of_type(recs, "lead.qualified"):
            live[r["lead"]] = live.get(r["lead"], 0) + 1
        expect_eq(live, {"W1": 1, "W2": 1, "W3": 2, "W4": 1, "W5": 2, "W6": 1, "W7": 1},
                  "lead.qualified the live service recorded, by lead")
        head = log.status()["head"]
        same = os.path.join(daemon.dir, "live-same.yaml")
        with open(same, "w") as f:
            f.write(RULES_LIVE)
        # the same rules in another file with another version: the same
        # decisions, from the model of the stages a new definition sees
        renamed = os.path.join(daemon.dir, "live-renamed.yaml")
        with open(renamed, "w") as f:
            f.write(RULES_LIVE.replace('"live v1"', '"live v1, renamed"'))
        for new in (same, renamed):
            w = json.loads(sc.ok("what-if", new, "--json", "--leads"))
            by_lead = {row["lead"]: (row["current"], row["new"]) for row in w["leads"]}
            expect_eq({lead: c for lead, (c, _) in by_lead.items()}, live,
                      "what-if, current rules: lead.qualified by lead (new: %s)"
                      % os.path.basename(new))
            expect_eq({lead: nw for lead, (_, nw) in by_lead.items()}, live,
                      "what-if, %s: lead.qualified by lead" % os.path.basename(new))
            expect_eq(w["current"]["qualifications"], sum(live.values()),
                      "what-if, current rules: qualifications")
            expect_eq(w["current"]["mql_leads"], len(live), "what-if: MQL leads")
        expect_eq(log.status()["head"], head, "what-if sends nothing")
        human = sc.ok("what-if", renamed, "--leads")
        expect_in("lead.qualified by lead", human, "human what-if --leads")
    res.run("what-if under the current rules makes the live service's decisions, lead by "
            "lead (re-crossings while an MQL, after a rejection, an erasure, a race)",
            whatif_matches_live)

    def sent_back_crosses_again():
        # a lead whose fit alone reaches the threshold (threshold 20 here):
        # rejected, it stays above, so its next activity does not qualify it
        low = RULES_LIVE.replace("threshold: 50", "threshold: 20").replace(
            '"live v1"', '"live low"')
        lo = Scoring(daemon, "low")
        lo.write_rules(low)
        lo.until_head()
        log.publish_ok(captured("R1", "VP Sales", "r1@corp.example"))
        lo.until_head()
        expect_eq(len(of_type(log.records(), "lead.qualified", "R1")), 1, "R1 qualified by fit")
        log.publish_ok({"type": "lead.rejected", "lead": "R1", "id": "rej-R1",
                        "data": {"reason": "no-budget"}})
        log.publish_ok(*act("R1", "page_view"))
        lo.until_head()
        # (the live service of RULES_LIVE may qualify R1 too: count low's only)
        lq = [r for r in of_type(log.records(), "lead.qualified", "R1")
              if r["data"]["rules_version"] == "live low"]
        expect_eq(len(lq), 1, "R1 not qualified again without going below the threshold")
        log.publish_ok(*act("R1", "unsubscribe"), *act("R1", "page_view", 3))
        lo.until_head()
        lq = [r for r in of_type(log.records(), "lead.qualified", "R1")
              if r["data"]["rules_version"] == "live low"]
        expect_eq(len(lq), 2, "R1 qualified again after falling below and crossing")
    res.run("a lead sent back must cross the threshold again, from below", sent_back_crosses_again)

    def backreference_refused():
        bad = Scoring(daemon, "backref")
        bad.write_rules(RULES_LIVE.replace('matches: "vp|chief|head"',
                                           'matches: "(.*)(.*)(.*)(.*)(.*)\\\\5x"'))
        p = bad.run("check")
        expect_eq(p.returncode, 2, "check exit status")
        expect_in("backref.yaml:8: scoring.fit[0].matches:", p.stderr, "names the line")
        expect_in("back-references are not supported", p.stderr, "says why")
    res.run("check refuses a back-reference, naming the line", backreference_refused)

    def empty_bounds_refused():
        with open(os.path.join(REPO, "funnel.yaml"), encoding="utf-8") as f:
            shipped = f.read()
        expect_in("      at_least: 200\n      at_most: 5000\n", shipped, "the shipped size rule")
        for old, new, want in (
                ("at_most: 5000", "at_most: 100", "at_least 200 and at_most 100 leave no number"),
                ("at_most: 5000", "below: 200", "at_least 200 and below 200 leave no number")):
            bad = Scoring(daemon, "bounds")
            bad.write_rules(shipped.replace(old, new))
            p = bad.run("check")
            expect_eq(p.returncode, 2, "check exit status (%s)" % new)
            expect_in("bounds.yaml:", p.stderr, "names the file and line")
            expect_in(want + ": this condition can never hold", p.stderr, "says why")
        ok = Scoring(daemon, "bounds-ok")
        ok.write_rules(shipped.replace("at_most: 5000", "at_most: 200"))   # 200 alone holds
        expect_eq(ok.run("check").returncode, 0, "at_least 200 with at_most 200")
    res.run("check refuses numeric bounds that leave no number (a condition that can never "
            "hold), naming the line", empty_bounds_refused)

    def slow_pattern_bounded():
        slow = Scoring(daemon, "slow")
        slow.write_rules(RULES_LIVE.replace('"live v1"', '"slow"').replace(
            'matches: "vp|chief|head"', 'matches: "(a+)+[bc]"'))
        expect_in("ok", slow.ok("check"), "check")
        slow.until_head()
        log.publish_ok(*[captured("S%d" % i, "a" * 5000, "s%d@corp.example" % i)
                         for i in range(3)])
        slow.until_head()          # bounded by Service.RUN_TIMEOUT_S
        recs = log.records()
        for i in range(3):
            sq = [r for r in of_type(recs, "lead.scored", "S%d" % i)
                  if r["data"]["rules_version"] == "slow"]
            expect(not sq, "S%d: the pattern that hit its limit did not hold" % i)
        expect_in("stopped at its limit", slow.tail(), "the service says so")
    res.run("a pattern that backtracks exponentially on long values is cut at its limits",
            slow_pattern_bounded)

    def file_limits_agree():
        big = Scoring(daemon, "big")
        version = "v" * 64
        text = 'version: "%s"\n' % version + RULES_LIVE.split("\n", 1)[1]
        limit = 64512
        pad = limit - len(text.encode())
        text += "#" * (pad - 1) + "\n"
        expect_eq(len(text.encode()), limit, "file size")
        big.write_rules(text)
        expect_in("ok", big.ok("check"), "check of a file at the limit")
        big.until_head()
        changed = [r for r in of_type(log.records(), "rules.changed")
                   if r["data"]["version"] == version]
        expect_eq(len(changed), 1, "the service recorded a file at the limit")
        expect_eq(changed[0]["data"]["text"], text, "whole")
        big.write_rules(text + "#")
        head = log.status()["head"]
        for args in (("check",), ("--until-head",)):
            p = big.run(*args)
            expect_eq(p.returncode, 2, "%s exit status on a file over the limit" % args[0])
            expect_in("64513 bytes, over the limit of 64512 bytes", p.stderr, "message")
        utf16 = Scoring(daemon, "utf16")
        with open(utf16.rules, "wb") as f:
            f.write(RULES_LIVE.encode("utf-16"))
        for args in (("check",), ("--until-head",)):
            p = utf16.run(*args)
            expect_eq(p.returncode, 2, "%s exit status on a UTF-16 file" % args[0])
            expect_in("utf16.yaml:1: not UTF-8 text (byte 0)", p.stderr, "message")
        expect_eq(log.status()["head"], head, "nothing recorded")
    res.run("check refuses what the service would: a file over 63 KiB, a UTF-16 file",
            file_limits_agree)
    log.close()


def run_other_view(res, daemon, ctx):
    log = LogClient(ctx, daemon.endpoints)
    sc = Scoring(daemon, "s")
    sc.write_rules(RULES_V1)
    log.publish_ok(captured("A", "CTO", "ana@acme.example"))

    def explain_other_view():
        # routing's view has a "leads" table too: the owner recorded in its
        # _runtime says it is not a scoring view (not "does not decode")
        sc.until_head()
        rt = Service(ROUTING, daemon, "rt")
        with open(os.path.join(REPO, "funnel.yaml")) as f:
            rt.write_rules(f.read())
        rt.until_head()
        p = sc.run("explain", "A", "--view", rt.view)
        expect_eq(p.returncode, 1, "explain on a routing view exits 1 (%s)" % p.stderr[-400:])
        expect_in("funnel-scoring: %s is not a scoring view (it is routing's)" % rt.view, p.stderr,
                  "message names the view and its owner")
        expect("does not decode" not in p.stderr, "no talk of decoding: %s" % p.stderr[-400:])
        expect_in("total", sc.ok("explain", "A"), "its own view still explains")
    res.run("explain on another service's view says it is not a scoring view",
            explain_other_view)


def main():
    return run_service_groups(FUNNELD, SCORING, (run_checks, run_kill9, run_rules_checks,
                                                 run_other_view))


if __name__ == "__main__":
    sys.exit(main())
