#!/usr/bin/python3
"""
tests/integration/test_import.py - `funnel import` end to end against a
real funneld: a HubSpot export and a Salesforce export, each in its
shipped mapping (clients/cli/mappings/), with the usual faults of real
exports (quoted commas and newlines, UTF-8 names, missing dates, stages
the mapping does not know, a row given twice, a deal with no lead, an
amount that is no number).  Checked: the summary, the rejects file (line
and reason), the events in the log (chain, dates, ids), --dry-run sends
nothing, a second import stores nothing, and funnel-metrics over the
imported history gives the figures worked out by hand below (entries
per real week, not all in this one).

Run with Debian's /usr/bin/python3 (python3-zmq, python3-msgpack):

    BUILD=build FUNNELD=build/bin/funneld /usr/bin/python3 tests/integration/test_import.py

Every process and wait is bounded; prints "ok - name" / "not ok - name:
reason" and "N passed, M failed".
"""
import calendar
import json
import os
import pty
import re
import select
import subprocess
import sys

from funnel_testlib import REPO, LogClient, expect, expect_eq, expect_in, run_service_groups

BUILD = os.environ.get("BUILD", "build")
FUNNELD = os.environ.get("FUNNELD", os.path.join(REPO, BUILD, "bin", "funneld"))
BIN = os.path.dirname(os.path.abspath(FUNNELD))
FUNNEL = os.path.join(BIN, "funnel")
METRICS = os.path.join(BIN, "funnel-metrics")
MAPPINGS = os.path.join(REPO, "clients", "cli", "mappings")
CMD_TIMEOUT_S = 120
DAY = 86400 * 10**9
WEEK = 7 * DAY


def ns(y, mo, d, h=0, mi=0):
    return calendar.timegm((y, mo, d, h, mi, 0)) * 10**9


def week_of(t):
    """The Monday 00:00 UTC of t's ISO week, ns (the trend's bucket)."""
    day = t // DAY
    return (day - (day + 3) % 7) * DAY     # 1970-01-01 was a Thursday


# ---- HubSpot: contacts and deals ----

HS_CONTACTS = (
    "\ufeffRecord ID,First Name,Last Name,Email,Company Name,Lifecycle Stage,Create Date,"
    "Original Source,Became a Marketing Qualified Lead Date,Became a Sales Qualified Lead Date\n"
    '101,Ana,Souza,ana@acme.example,"Acme, Inc.",lead,2026-01-05 10:00,ORGANIC_SEARCH,,\n'    # 2
    "102,Zoë,Müller,zoe@baeckerei.example,Bäckerei Müller,marketingqualifiedlead,"
    "2026-01-06 09:00,PAID_SEARCH,2026-01-08 09:00,\n"                                        # 3
    "103,Li,Wei,li@wei.example,Wei Ltd,salesqualifiedlead,2026-01-13 08:00,PAID_SEARCH,"
    "2026-01-14 08:00,2026-01-15 08:00\n"                                                     # 4
    "104,Olu,Ade,olu@ade.example,Ade Co,opportunity,2026-01-14 12:00,ORGANIC_SEARCH,,\n"      # 5
    "105,Mia,Rossi,mia@rossi.example,Rossi SpA,customer,2026-01-20 10:00,REFERRALS,,\n"       # 6
    '106,Tom,Berg,tom@berg.example,"Berg\nand Sons",lead,2026-01-27 10:00,ORGANIC_SEARCH,,\n'  # 7-8
    "107,No,Date,nodate@x.example,X,lead,,ORGANIC_SEARCH,,\n"                                 # 9
    "108,Odd,Stage,odd@x.example,X,weird-stage,2026-01-05 10:00,ORGANIC_SEARCH,,\n"           # 10
    '101,Ana,Souza,ana@acme.example,"Acme, Inc.",lead,2026-01-05 10:00,ORGANIC_SEARCH,,\n'    # 11
)
HS_DEALS = (
    "Record ID,Deal Name,Deal Stage,Amount,Close Date,Create Date,Associated Contact IDs\n"
    '9001,"Ade, expansion",appointmentscheduled,5000,,2026-01-20 10:00,104\n'                # 2
    "9002,Rossi license,closedwon,1200.50,2026-02-02 10:00,2026-01-21 10:00,105\n"           # 3
    "9003,Berg pilot,closedlost,300,2026-02-03,2026-01-22 11:00,106;101\n"                   # 4
    "9004,Orphan,closedwon,10,2026-02-04,2026-01-23,\n"                                       # 5
    "9005,Bad amount,closedwon,lots,2026-02-04,2026-01-23,103\n"                              # 6
)
HS_CAPTURED = {  # lead: capture time
    "hubspot-101": ns(2026, 1, 5, 10), "hubspot-102": ns(2026, 1, 6, 9),
    "hubspot-103": ns(2026, 1, 13, 8), "hubspot-104": ns(2026, 1, 14, 12),
    "hubspot-105": ns(2026, 1, 20, 10), "hubspot-106": ns(2026, 1, 27, 10),
}
# each lead's chain, worked out by hand from the rows (a step without its
# own date takes the previous step's; never earlier than the previous)
HS_CHAINS = {
    "hubspot-101": [("lead.captured", ns(2026, 1, 5, 10))],
    "hubspot-102": [("lead.captured", ns(2026, 1, 6, 9)), ("lead.qualified", ns(2026, 1, 8, 9))],
    "hubspot-103": [("lead.captured", ns(2026, 1, 13, 8)), ("lead.qualified", ns(2026, 1, 14, 8)),
                    ("lead.accepted", ns(2026, 1, 15, 8))],
    "hubspot-104": [("lead.captured", ns(2026, 1, 14, 12)), ("lead.qualified", ns(2026, 1, 14, 12)),
                    ("lead.accepted", ns(2026, 1, 14, 12)),
                    ("opportunity.opened", ns(2026, 1, 20, 10))],
    "hubspot-105": [("lead.captured", ns(2026, 1, 20, 10)), ("lead.qualified", ns(2026, 1, 20, 10)),
                    ("lead.accepted", ns(2026, 1, 20, 10)),
                    ("opportunity.opened", ns(2026, 1, 21, 10)), ("deal.won", ns(2026, 2, 2, 10))],
    # the deal was created before the contact: opened counts at the capture
    "hubspot-106": [("lead.captured", ns(2026, 1, 27, 10)), ("lead.qualified", ns(2026, 1, 27, 10)),
                    ("lead.accepted", ns(2026, 1, 27, 10)),
                    ("opportunity.opened", ns(2026, 1, 27, 10)), ("deal.lost", ns(2026, 2, 3))],
}
HS_REJECTS = [
    ("contacts.csv:9:", "missing date in column 'Create Date'"),
    ("contacts.csv:10:", "unknown stage 'weird-stage'"),
    ("deals.csv:5:", "names no lead"),
    ("deals.csv:6:", "amount 'lots'"),
]

# ---- Salesforce: Lead and Opportunity ----

SF_LEADS = (
    "Id,FirstName,LastName,Email,Company,Status,LeadSource,CreatedDate,ConvertedDate,"
    "ConvertedOpportunityId\n"
    '00Q1,Åsa,Lind,asa@lind.example,"Lind, AB",Open - Not Contacted,Web,'
    "2026-01-05T08:00:00.000Z,,\n"                                                            # 2
    "00Q2,José,García,jose@garcia.example,García SL,Working - Contacted,Partner,"
    "2026-01-12T08:00:00Z,,\n"                                                                # 3
    "00Q3,Ngozi,Okafor,ngozi@okafor.example,Okafor Ltd,Closed - Converted,Web,"
    "2026-01-12T09:00:00.000Z,2026-01-16T09:00:00.000Z,006A\n"                                # 4
    "00Q4,Jan,Novák,jan@novak.example,Novák s.r.o.,Closed - Not Converted,Web,2026-01-19,,\n"  # 5
    "00Q5,Kim,Park,kim@park.example,Park Inc,Nurturing,Web,2026-01-19,,\n"                     # 6
    "00Q6,Lea,Roth,lea@roth.example,Roth AG,Open - Not Contacted,Web,,,\n"                     # 7
    "00Q2,José,García,jose@garcia.example,García SL,Working - Contacted,Partner,"
    "2026-01-12T08:00:00Z,,\n"                                                                # 8
)
SF_OPPS = (
    "Id,Name,StageName,Amount,CloseDate,CreatedDate,IsWon,IsClosed\n"
    "006A,Okafor platform,Closed Won,25000,2026-02-10,2026-01-17T10:00:00.000Z,true,true\n"  # 2
    "006B,Nobody's deal,Prospecting,100,,2026-01-18,false,false\n"                            # 3
)
SF_CHAINS = {
    "salesforce-00Q1": [("lead.captured", ns(2026, 1, 5, 8))],
    "salesforce-00Q2": [("lead.captured", ns(2026, 1, 12, 8)),
                        ("lead.qualified", ns(2026, 1, 12, 8))],
    "salesforce-00Q3": [("lead.captured", ns(2026, 1, 12, 9)),
                        ("lead.qualified", ns(2026, 1, 12, 9)),
                        ("lead.accepted", ns(2026, 1, 16, 9)),
                        ("opportunity.opened", ns(2026, 1, 17, 10)),
                        ("deal.won", ns(2026, 2, 10))],
    "salesforce-00Q4": [("lead.captured", ns(2026, 1, 19)),
                        ("lead.disqualified", ns(2026, 1, 19))],
}
SF_REJECTS = [
    ("leads.csv:6:", "unknown stage 'Nurturing'"),
    ("leads.csv:7:", "missing date in column 'CreatedDate'"),
    ("opps.csv:3:", "names no lead"),
]


def funnel(daemon, *args, cwd=None):
    eps = daemon.endpoints
    p = subprocess.run([FUNNEL, "--ingest", eps["ingest"], "--query", eps["query"],
                        "--publish", eps["publish"]] + list(args), capture_output=True,
                       text=True, timeout=CMD_TIMEOUT_S, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def funnel_tty(daemon, *args, cwd=None):
    """funnel with stderr on a pseudo-terminal (so that it draws its
    progress line); returns (exit status, stdout, what the terminal got)."""
    eps = daemon.endpoints
    master, slave = pty.openpty()
    p = subprocess.Popen([FUNNEL, "--ingest", eps["ingest"], "--query", eps["query"],
                          "--publish", eps["publish"]] + list(args), stdout=subprocess.PIPE,
                         stderr=slave, text=True, cwd=cwd)
    os.close(slave)
    term = b""
    while True:
        r, _, _ = select.select([master], [], [], CMD_TIMEOUT_S)
        if not r:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:          # EIO: the child closed its end
            break
        if not chunk:
            break
        term += chunk
    os.close(master)
    out = p.stdout.read()
    p.stdout.close()
    rc = p.wait(timeout=CMD_TIMEOUT_S)
    return rc, out, term.decode("utf-8", "replace")


def write(d, name, text):
    path = os.path.join(d, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def chains_of(recs):
    """{lead: [(type, event time)]} of the lead events in the log."""
    out = {}
    for r in recs:
        if "lead" in r:
            t = r.get("occurred_at", r["ts"])
            out.setdefault(r["lead"], []).append((r["type"], t if 0 < t <= r["ts"] else r["ts"]))
    return out


def metrics_report(daemon, report, *params):
    """A funnel-metrics view built to the head, then one report from it,
    offline."""
    eps = daemon.endpoints
    view = os.path.join(daemon.dir, "metrics-view")
    p = subprocess.run([METRICS, "--view", view, "--ingest", eps["ingest"], "--publish",
                        eps["publish"], "--query", eps["query"], "--until-head"],
                       capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    expect_eq(p.returncode, 0, "funnel-metrics --until-head: %s" % p.stderr)
    p = subprocess.run([METRICS, "--view", view, "report", report] +
                       sum((["--param", x] for x in params), []),
                       capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    expect_eq(p.returncode, 0, "funnel-metrics report %s: %s" % (report, p.stderr))
    return json.loads(p.stdout)


def import_group(kind, files, chains, rejects, rows, dup_rows):
    def group(res, daemon, ctx):
        log = LogClient(ctx, daemon.endpoints)
        d = daemon.dir
        paths = [write(d, n, t) for n, t in files]
        mapping = os.path.join(MAPPINGS, kind + ".json")
        rej = os.path.join(d, kind + ".rejects")
        base = ["import", "--mapping", mapping, "--leads", paths[0], "--deals", paths[1],
                "--rejects", rej, "--json"]
        n_events = sum(len(c) for c in chains.values())

        def dry_run():
            rc, out, err = funnel(daemon, *(base + ["--dry-run"]), cwd=d)
            s = json.loads(out)
            expect_eq((s["rows"], s["events"], s["stored"], s["dry_run"]),
                      (rows, n_events, 0, True), "dry-run summary (%s)" % err)
            expect_eq(rc, 1, "exit status with refused rows")
            expect_eq(log.status()["head"], 0, "nothing sent")
        res.run("%s: --dry-run reads and plans, sends nothing" % kind, dry_run)

        def first():
            rc, out, err = funnel(daemon, *base, cwd=d)
            s = json.loads(out)
            expect_eq((s["rows"], s["leads"] >= len(chains), s["events"], s["stored"],
                       s["duplicates"], s["duplicate_rows"], s["refused"]),
                      (rows, True, n_events, n_events, 0, dup_rows, len(rejects)),
                      "summary (%s)" % err)
            expect_eq(rc, 1, "exit status with refused rows")
            expect_eq(s["rejects"], rej, "the summary names the rejects file")
            with open(rej, encoding="utf-8") as f:
                lines = f.read().splitlines()
            expect_eq(len(lines), len(rejects), "rejects: %r" % lines)
            for line, (where, why) in zip(lines, rejects):
                expect(line.startswith(os.path.join(d, where)) and why in line,
                       "reject %r names %s and %r" % (line, where, why))
            expect_eq(chains_of(log.records()), chains, "each lead's events and their dates")
        res.run("%s: each row becomes its events, dated, in funnel order; bad rows refused "
                "with line and reason" % kind, first)

        def data():
            recs = log.records()
            for r in recs:
                expect(r["id"].startswith("import:%s:" % r["lead"]), "id %r from the CRM id" % r["id"])
            cap = {r["lead"]: r["data"] for r in recs if r["type"] == "lead.captured"}
            if kind == "hubspot":
                expect_eq(cap["hubspot-102"]["first_name"], "Zoë", "UTF-8 name")
                expect_eq(cap["hubspot-101"]["company"], "Acme, Inc.", "a quoted comma")
                expect_eq(cap["hubspot-106"]["company"], "Berg\nand Sons", "a quoted newline")
                expect_eq(cap["hubspot-105"]["source"], "REFERRALS", "source")
                won = [r for r in recs if r["type"] == "deal.won"][0]
                expect_eq(won["data"]["amount"], 1200.5, "amount")
                lost = [r for r in recs if r["type"] == "deal.lost"][0]
                expect_eq(lost["data"]["reason"], "lost", "a lost deal without a reason")
            else:
                expect_eq(cap["salesforce-00Q1"]["first_name"], "Åsa", "UTF-8 name")
                expect_eq(cap["salesforce-00Q1"]["company"], "Lind, AB", "a quoted comma")
                dq = [r for r in recs if r["type"] == "lead.disqualified"][0]
                expect_eq(dq["data"]["reason"], "Closed - Not Converted", "disqualified reason")
        res.run("%s: lead fields, amounts and reasons from the mapping" % kind, data)

        def again():
            head = log.status()["head"]
            rc, out, err = funnel(daemon, *base, cwd=d)
            s = json.loads(out)
            expect_eq((s["stored"], s["duplicates"]), (0, n_events), "second import (%s)" % err)
            expect_eq(log.status()["head"], head, "the log did not grow")
        res.run("%s: importing the same files again stores nothing" % kind, again)

        def metrics():
            week = {}
            mql = {}
            won = {}
            for lead, ch in chains.items():
                for t, at in ch:
                    bucket = {"lead.captured": week, "lead.qualified": mql, "deal.won": won}.get(t)
                    if bucket is not None:
                        bucket[week_of(at)] = bucket.get(week_of(at), 0) + 1
            tr = metrics_report(daemon, "trend", "bucket=week")["trend"]["series"]
            got = {r["start_ns"]: r["entered"]["inquiry"] for r in tr if r["entered"]["inquiry"]}
            expect_eq(got, week, "inquiry entries per week")
            expect(len(got) >= 3, "the history spreads over %d weeks" % len(got))
            got = {r["start_ns"]: r["entered"]["mql"] for r in tr if r["entered"]["mql"]}
            expect_eq(got, mql, "mql entries per week")
            got = {r["start_ns"]: r["entered"]["won"] for r in tr if r["entered"]["won"]}
            expect_eq(got, won, "won per week")
            v = metrics_report(daemon, "velocity")["velocity"]
            wins = [ch for ch in chains.values() if ch[-1][0] == "deal.won"]
            expect_eq(v["capture_to_won"]["n"], len(wins), "wins")
            expect_eq(v["capture_to_won"]["median_s"], (wins[0][-1][1] - wins[0][0][1]) / 1e9,
                      "capture to win, from the CRM's dates")
        res.run("%s: funnel-metrics over the imported history: the figures by hand" % kind,
                metrics)
        log.close()
    return group


def conflict_group(res, daemon, ctx):
    """A request the log refuses (one lead moved on in the log already) is
    sent again lead by lead: that lead's rows are refused with the log's
    reason, every other lead is stored, nothing is half-stored."""
    log = LogClient(ctx, daemon.endpoints)
    d = daemon.dir
    paths = [write(d, "contacts.csv", HS_CONTACTS), write(d, "deals.csv", HS_DEALS)]
    rej = os.path.join(d, "c.rejects")

    def refused_lead():
        log.publish_ok({"type": "lead.captured", "lead": "hubspot-102", "id": "live-1"},
                       {"type": "lead.qualified", "lead": "hubspot-102", "id": "live-2"},
                       {"type": "lead.accepted", "lead": "hubspot-102", "id": "live-3"})
        rc, out, err = funnel(daemon, "import", "--mapping", os.path.join(MAPPINGS, "hubspot.json"),
                              "--leads", paths[0], "--deals", paths[1], "--rejects", rej, "--json")
        s = json.loads(out)
        n_other = sum(len(c) for lead, c in HS_CHAINS.items() if lead != "hubspot-102")
        expect_eq((s["stored"], s["refused"]), (n_other, len(HS_REJECTS) + 1),
                  "the other leads stored (%s)" % err)
        with open(rej, encoding="utf-8") as f:
            text = f.read()
        expect(os.path.join(d, "contacts.csv:3: lead hubspot-102 refused by the log") in text
               and "ETRANSITION" in text, "the refused lead's row and reason: %r" % text)
        ch = chains_of(log.records())
        expect_eq([t for t, _ in ch["hubspot-102"]],
                  ["lead.captured", "lead.qualified", "lead.accepted"], "nothing of it imported")
        expect_eq(ch["hubspot-105"], HS_CHAINS["hubspot-105"], "another lead imported whole")
    res.run("hubspot: a lead the log refuses is refused alone, with the log's reason",
            refused_lead)

    def wrong_mapping():
        head = log.status()["head"]
        rc, out, err = funnel(daemon, "import", "--mapping", os.path.join(MAPPINGS, "salesforce.json"),
                              "--leads", paths[0], "--rejects", rej)
        expect_eq(rc, 1, "exit status")
        expect("no column 'Id' (the mapping's leads.id) in the header" in err, "message: %r" % err)
        expect_eq(log.status()["head"], head, "nothing sent")
    res.run("an export the mapping does not describe stops the import before any row", wrong_mapping)

    def mapping_mistakes():
        with open(os.path.join(MAPPINGS, "hubspot.json"), encoding="utf-8") as f:
            good = json.load(f)
        head = log.status()["head"]

        def variant(change):
            m = json.loads(json.dumps(good))
            change(m)
            return write(d, "mistake.json", json.dumps(m))
        mistakes = [
            (lambda m: m["leads"].__setitem__("feilds", m["leads"].pop("fields")),
             "leads has no key 'feilds'"),
            (lambda m: m["leads"].__setitem__("fields", ["Email"]), "leads.fields is not an object"),
            (lambda m: m.__setitem__("lead_prefix", 5), "lead_prefix is not a string"),
            (lambda m: m["leads"]["dates"].__setitem__("qualifyd", "X"),
             "leads.dates has no key 'qualifyd'"),
            (lambda m: m["leads"]["stages"].__setitem__("lead", "capturd"),
             "leads.stages.lead is 'capturd', not a step"),
            (lambda m: m["deals"]["stages"].__setitem__("closedwon", "won!"),
             "deals.stages.closedwon is 'won!', not a step"),
            (lambda m: m.__setitem__("leadz", {}), "has no key 'leadz'"),
        ]
        for change, want in mistakes:
            rc, out, err = funnel(daemon, "import", "--mapping", variant(change), "--leads",
                                  paths[0], "--deals", paths[1], "--rejects", rej)
            expect_eq(rc, 1, "exit status (%s)" % want)
            expect(want in err, "message names %r: %r" % (want, err))
            expect_eq(out, "", "no summary (%s)" % want)
        expect_eq(log.status()["head"], head, "nothing sent for a mapping mistake")
        # a mapped column the export lacks is named before anything is sent; the
        # import goes on (exports of chosen columns are normal)
        rc, out, err = funnel(daemon, "import", "--dry-run", "--mapping",
                              variant(lambda m: m["leads"]["fields"].__setitem__("Emial", "email")),
                              "--leads", paths[0], "--rejects", rej)
        expect_in("warning: %s has no column 'Emial' (the mapping's leads.fields.Emial): its "
                  "values are left out" % paths[0], err, "the missing column named")
        expect_in("Job Title", err, "every mapped column the export lacks is named")
        expect_eq(log.status()["head"], head, "a dry run sends nothing")
    res.run("mapping mistakes (a misspelled key, a wrong type, a stage or date mapped to no "
            "step) stop the import before anything is sent; a mapped column the export "
            "lacks is named", mapping_mistakes)
    log.close()


def long_ids_group(res, daemon, ctx):
    """A lead id may be 108 bytes, so that "import:<lead>:disqualified" fits
    the log's 128-byte ids, and no more: the import refuses a longer one
    itself, naming the row, for a lead row and for a deal that names its
    lead, before anything is sent."""
    log = LogClient(ctx, daemon.endpoints)
    d = daemon.dir
    with open(os.path.join(MAPPINGS, "hubspot.json"), encoding="utf-8") as f:
        mapping = json.load(f)
    mapping["lead_prefix"] = "hubspot-long-prefix-"          # 20 bytes
    mp = write(d, "long.json", json.dumps(mapping))
    rid = "9" * 88                                             # 20 + 88 = 108
    contacts = write(d, "long-contacts.csv",
                     "Record ID,Email,Lifecycle Stage,Create Date\n"
                     "%s,max@x.example,lead,2026-01-05 10:00\n" % rid)
    cid = "7" * 89                                             # 20 + 89 = 109
    deals = write(d, "long-deals.csv",
                  "Record ID,Deal Name,Deal Stage,Amount,Close Date,Create Date,"
                  "Associated Contact IDs\n"
                  "9100,Too long,appointmentscheduled,5,,2026-01-20 10:00,%s\n" % cid)
    rej = os.path.join(d, "long.rejects")

    def lengths():
        rc, out, err = funnel(daemon, "import", "--mapping", mp, "--leads", contacts,
                              "--deals", deals, "--rejects", rej, "--json")
        s = json.loads(out)
        with open(rej, encoding="utf-8") as f:
            text = f.read()
        expect_eq((s["stored"], s["refused"]), (1, 1), "stored and refused (%s%s)" % (err, text))
        expect(deals + ":2: lead id of deal '9100' is longer than 108 bytes" in text,
               "the deal's row and reason: %r" % text)
        leads = {r["lead"] for r in log.records() if "lead" in r}
        expect("hubspot-long-prefix-" + rid in leads, "the 108-byte lead imported")
        expect(not any(x.startswith("hubspot-long-prefix-7") for x in leads),
               "nothing of the refused deal sent")
    res.run("a lead id of 108 bytes is imported; a longer one is refused by the import, "
            "naming the row", lengths)
    log.close()


SAMPLES = os.path.join(MAPPINGS, "samples")


def samples_group(res, daemon, ctx):
    """The sample exports shipped beside the mappings import cleanly, as
    the README shows; and the progress line's last update counts every
    row read, refused and repeated rows included."""
    log = LogClient(ctx, daemon.endpoints)
    d = daemon.dir

    def shipped(kind, leads, deals, rows, leads_n):
        def check():
            rc, out, err = funnel(daemon, "import", "--mapping",
                                  os.path.join(MAPPINGS, kind + ".json"),
                                  "--leads", os.path.join(SAMPLES, leads),
                                  "--deals", os.path.join(SAMPLES, deals),
                                  "--rejects", os.path.join(d, kind + "-samples.rejects"),
                                  "--json")
            expect_eq(rc, 0, "exit status (%s)" % err)
            s = json.loads(out)
            expect_eq((s["rows"], s["leads"], s["refused"], s["duplicates"]),
                      (rows, leads_n, 0, 0), "summary")
            # no row refused: no rejects file left behind, and none named
            expect_eq(s["rejects"], None, "the summary's rejects file")
            expect(not os.path.exists(os.path.join(d, kind + "-samples.rejects")),
                   "an empty rejects file was left behind")
            expect(s["stored"] == s["events"] and s["events"] > rows, "every event stored: %r" % s)
            got = {r["lead"] for r in log.records() if r.get("lead", "").startswith(kind + "-")}
            expect_eq(len(got), leads_n, "leads in the log")
        return check
    res.run("the shipped HubSpot sample exports import with no refused row (and leave no "
            "rejects file)",
            shipped("hubspot", "hubspot-contacts.csv", "hubspot-deals.csv", 8, 6))
    res.run("the shipped Salesforce sample exports import with no refused row",
            shipped("salesforce", "salesforce-leads.csv", "salesforce-opportunities.csv", 7, 5))

    def event_time():
        lead = "hubspot-51001"
        rc, out, err = funnel(daemon, "history", lead, "--human")
        expect_eq(rc, 0, "history exit status (%s)" % err)
        lines = out.splitlines()
        expect(lines and lines[0].split()[:2] == ["SEQ", "TIME"], "header: %r" % lines[:1])
        cap = [x for x in lines if "lead.captured" in x]
        expect(cap and "2026-01-05T09:12:00.000Z* lead.captured" in cap[0],
               "history: the CRM's create date, marked: %r" % cap)
        won = [x for x in lines if "deal.won" in x]
        expect(won and "2026-02-02T16:45:00.000Z* deal.won" in won[0],
               "history: the close date, marked: %r" % won)
        rc, out, err = funnel(daemon, "replay", "--lead", lead, "--human")
        expect_eq(rc, 0, "replay exit status (%s)" % err)
        expect("2026-01-05T09:12:00.000Z* lead.captured  " + lead in out,
               "replay --human: the event time, marked: %r" % out)
        seq = [r["seq"] for r in log.records() if r.get("lead") == lead][0]
        rc, out, err = funnel(daemon, "tail", "--from", str(seq), "--count", "1", "--human",
                              "--timeout-idle", "5000")
        expect_eq(rc, 0, "tail exit status (%s)" % err)
        expect("2026-01-05T09:12:00.000Z* lead.captured  " + lead in out,
               "tail --human: the event time, marked: %r" % out)
        rc, out, err = funnel(daemon, "history", lead, "--json")
        first = json.loads(out.splitlines()[0])
        expect(first["ts"] > first["occurred_at"] == ns(2026, 1, 5, 9, 12),
               "--json keeps both ts and occurred_at: %r" % first)
        log.publish_ok({"type": "lead.captured", "lead": "live-1", "id": "live-1"})
        rc, out, err = funnel(daemon, "history", "live-1", "--human")
        row = [x for x in out.splitlines() if "lead.captured" in x]
        expect(row and re.search(r"Z  lead\.captured", row[0]),
               "a live event: its ts, no mark: %r" % row)
    res.run("history, replay --human and tail --human show the event time, marked when it "
            "is not ts", event_time)

    def progress_line():
        paths = [write(d, "p-contacts.csv", HS_CONTACTS), write(d, "p-deals.csv", HS_DEALS)]
        rc, out, term = funnel_tty(daemon, "import", "--mapping",
                                   os.path.join(MAPPINGS, "hubspot.json"), "--leads", paths[0],
                                   "--deals", paths[1], "--rejects",
                                   os.path.join(d, "p.rejects"), "--json")
        expect_eq(rc, 1, "exit status with refused rows (%r)" % term)
        rows = json.loads(out)["rows"]
        shown = re.findall(r"(\d+)/(\d+) rows", term)
        expect(shown, "a progress line on the terminal: %r" % term)
        expect_eq(shown[-1], (str(rows), str(rows)), "the last update counts every row (%r)" % term)
    res.run("the progress line's last update shows all rows read", progress_line)
    log.close()


def main():
    hs = import_group("hubspot", [("contacts.csv", HS_CONTACTS), ("deals.csv", HS_DEALS)],
                      HS_CHAINS, HS_REJECTS, rows=9 + 5, dup_rows=1)
    sf = import_group("salesforce", [("leads.csv", SF_LEADS), ("opps.csv", SF_OPPS)],
                      SF_CHAINS, SF_REJECTS, rows=7 + 2, dup_rows=1)
    return run_service_groups(FUNNELD, FUNNEL, (hs, sf, conflict_group, long_ids_group,
                                                       samples_group))


if __name__ == "__main__":
    sys.exit(main())
