#!/usr/bin/python3
"""
clients/demo/demo.py - 90 days of a fictional company's funnel, sent
through the real system: funneld and the services must be running
(clients/demo/demo.sh starts them).  Northwind Analytics sells a data
platform; its leads come from ads, webinars, events, partners, referrals
and the blog, fill in forms, read pages, ask for demos.  The demo
publishes what the leads and the reps did, each event with its real date
(occurred_at), and lets the services do the rest by the shipped
funnel.yaml: funnel-scoring scores and qualifies, funnel-routing assigns;
then the reps call, accept or reject (with reasons), open opportunities,
win, lose, recycle, and miss a few SLAs.

The history is a function of --seed, --leads, --days and --end (every
lead and every answer draws from a generator seeded by the seed and its
own name, so the order in which they are made does not matter): the same
arguments give the same events (ids "demo:<lead>:<what>"), so running it
twice against one log stores nothing new the second time.

Week by week: the week's captures and activities, then a wait until
funnel-scoring and funnel-routing have applied the log's head, then the
reps' answers to the assignments routing made.  Events dated after --end
have not happened yet and are not sent.

usage: demo.py --ingest EP --query EP --scoring-view DIR --routing-view DIR
               --rules FILE --bin DIR [--leads N] [--days N] [--seed N] [--end YYYY-MM-DD]
Needs python3-zmq and python3-msgpack (Debian).
"""
import argparse
import calendar
import random
import subprocess
import sys
import time

import msgpack
import zmq

DAY = 86400 * 10**9
HOUR = 3600 * 10**9
MINUTE = 60 * 10**9
TIMEOUT_MS = 10000
SLA_MIN = {"enterprise": 60, "dach": 240, "inside": 480, "unrouted": 1440}

SOURCES = [  # source, campaign, form, share, intent (0..1)
    ("ads", "q3-search", "demo-form", 22, 0.45),
    ("ads", "q4-retargeting", "contact-form", 12, 0.35),
    ("webinar", "data-mesh-live", "webinar-signup", 14, 0.55),
    ("webinar", "ai-ops-101", "webinar-signup", 8, 0.5),
    ("organic", "blog", "whitepaper-form", 18, 0.3),
    ("event", "dataworld-2026", "badge-scan", 8, 0.5),
    ("partner", "partner-program", "partner-referral", 9, 0.65),
    ("referral", "customer-referral", "contact-form", 9, 0.7),
]
TITLES = [("VP Data", 14), ("Head of Analytics", 12), ("CTO", 5), ("Director of IT", 8),
          ("Data Engineering Manager", 16), ("Analytics Lead", 12), ("BI Specialist", 10),
          ("Data Analyst", 14), ("Software Engineer", 10), ("Student", 4), ("PhD candidate", 2)]
INDUSTRIES = [("software", 25), ("banking", 12), ("insurance", 10), ("healthcare", 10),
              ("logistics", 9), ("retail", 14), ("manufacturing", 12), ("education", 8)]
COUNTRIES = [("US", 30), ("DE", 18), ("GB", 12), ("FR", 9), ("NL", 7), ("AT", 4), ("CH", 4),
             ("ES", 6), ("SE", 5), ("BR", 5)]
SIZES = [(30, 10), (120, 15), (350, 22), (800, 20), (2500, 16), (12000, 10), (60000, 7)]
FIRST = ["Ana", "Ben", "Chloé", "Dmitri", "Eva", "Farid", "Greta", "Hiro", "Inès", "Jonas",
         "Kaito", "Lena", "Mateo", "Nora", "Oskar", "Priya", "Quinn", "Rosa", "Sven", "Tariq",
         "Uma", "Viktor", "Wen", "Ximena", "Yusuf", "Zoë"]
LAST = ["Almeida", "Berg", "Costa", "Dubois", "Eriksson", "Fischer", "García", "Hoffmann",
        "Ibrahim", "Jansen", "Kowalski", "López", "Müller", "Nakamura", "Okafor", "Petrov",
        "Quist", "Rossi", "Schmidt", "Tanaka", "Urban", "Vogel", "Weber", "Yilmaz", "Zhang"]
COMPANY = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne",
           "Tyrell", "Soylent", "Cyberdyne", "Wonka", "Gringotts", "Oscorp", "Aperture",
           "Massive Dynamic", "Monarch", "Nakatomi", "Pied Piper", "Virtucon"]
SUFFIX = ["GmbH", "Ltd", "Inc", "AG", "BV", "SA", "Group", "Labs"]
FREE_MAIL = ["gmail.com", "outlook.com", "yahoo.com", "gmx.de"]
REJECT_REASONS = [("no_budget", 30), ("not_a_fit", 25), ("wrong_contact", 20),
                  ("already_customer", 10), ("duplicate", 15)]
RECYCLE_REASONS = [("timing", 50), ("not_ready", 35), ("champion_left", 15)]
LOST_REASONS = [("price", 35), ("competitor", 30), ("no_decision", 25), ("timing", 10)]


def pick(rng, weighted):
    total = sum(w for _, w in weighted)
    x = rng.uniform(0, total)
    for v, w in weighted:
        x -= w
        if x <= 0:
            return v
    return weighted[-1][0]


class Log:
    """Publish and replay against funneld (proto/PROTOCOL.md), bounded."""

    def __init__(self, ctx, ingest, query):
        self.rid = 0
        self.ingest = self._sock(ctx, ingest)
        self.query = self._sock(ctx, query)

    @staticmethod
    def _sock(ctx, ep):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        s.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
        s.connect(ep)
        return s

    def call(self, sock, req):
        self.rid += 1
        sock.send(msgpack.packb(dict(req, rid=self.rid)))
        while True:
            rep = msgpack.unpackb(sock.recv())
            if rep.get("rid") == self.rid:
                return rep

    def publish(self, events):
        for i in range(0, len(events), 2000):
            rep = self.call(self.ingest, {"op": "publish", "events": events[i:i + 2000]})
            if rep.get("ok") is not True:
                raise RuntimeError("publish refused: %r" % (rep,))

    def head(self):
        return self.call(self.query, {"op": "status"})["head"]

    def records(self, start):
        out = []
        while True:
            rep = self.call(self.query, {"op": "replay", "from": start, "limit": 1000})
            if rep.get("ok") is not True:
                raise RuntimeError("replay refused: %r" % (rep,))
            out += [msgpack.unpackb(r) for r in rep["events"]]
            if rep["end"]:
                return out
            start = rep["next"]


def event_time(r):
    t = r.get("occurred_at", 0)
    return t if 0 < t <= r["ts"] else r["ts"]


class Demo:
    def __init__(self, a, log):
        self.a = a
        self.log = log
        self.rng = random.Random(a.seed)
        y, m, d = (int(x) for x in a.end.split("-"))
        self.end = calendar.timegm((y, m, d, 0, 0, 0)) * 10**9
        self.start = self.end - a.days * DAY
        self.leads = {}
        self.seen = 0            # log records read so far
        self.stats = {}
        self.handled = set()     # assignment seqs answered
        self.assignments = {}    # lead -> routing assignments answered

    def ev(self, out, typ, lead, key, t, **data):
        """Append an event dated t, unless t is after the end."""
        if t > self.end:
            return False
        e = {"type": typ, "lead": lead, "id": "demo:%s:%s" % (lead, key), "occurred_at": t}
        if data:
            e["data"] = data
        out.append(e)
        self.stats[typ] = self.stats.get(typ, 0) + 1
        return True

    def make_leads(self):
        rng = self.rng
        srcw = [(s, s[3]) for s in SOURCES]
        for i in range(self.a.leads):
            # more leads as the quarter goes on, fewer at weekends
            while True:
                day = int(rng.triangular(0, self.a.days, self.a.days * 0.9))
                t = self.start + day * DAY + rng.randint(7 * 60, 19 * 60) * MINUTE
                if ((t // DAY) + 3) % 7 < 5 or rng.random() < 0.25:
                    break
            src = pick(rng, srcw)
            size = pick(rng, SIZES)
            company = "%s %s" % (rng.choice(COMPANY), rng.choice(SUFFIX))
            first, last = rng.choice(FIRST), rng.choice(LAST)
            domain = rng.choice(FREE_MAIL) if rng.random() < 0.15 else \
                company.split()[0].lower().replace(" ", "") + ".example"
            lead = "demo-%04d" % i
            self.leads[lead] = {
                "t": t, "source": src[0], "campaign": src[1], "form": src[2],
                "intent": min(1.0, max(0.0, rng.gauss(src[4], 0.2))),
                "data": {"email": "%s.%s@%s" % (first.lower(), last.lower(), domain),
                         "first_name": first, "last_name": last, "company": company,
                         "company_size": size, "title": pick(rng, TITLES),
                         "industry": pick(rng, INDUSTRIES), "country": pick(rng, COUNTRIES),
                         "source": src[0], "campaign": src[1], "form": src[2]},
            }

    def top_of_funnel(self, lead, out):
        """The capture and what the lead did in the days after it."""
        rng = random.Random("%d:%s" % (self.a.seed, lead))
        L = self.leads[lead]
        t = L["t"]
        self.ev(out, "lead.captured", lead, "captured", t, **L["data"])
        n = 1 + int(L["intent"] * 6 + rng.random() * 2)
        acts = []
        for k in range(n):
            t2 = t + int(rng.expovariate(1 / (3 * DAY)))
            x = rng.random()
            if x < L["intent"] * 0.35:
                acts.append((t2, "demo_request", {}))
            elif x < 0.45:
                acts.append((t2, "page_view", {"url": rng.choice(
                    ["/pricing", "/product", "/blog/data-mesh", "/customers", "/pricing"])}))
            elif x < 0.6:
                acts.append((t2, "email_click", {"campaign": L["campaign"]}))
            elif x < 0.75:
                acts.append((t2, "whitepaper", {"title": "State of Data 2026"}))
            elif x < 0.9:
                acts.append((t2, "webinar", {"title": L["campaign"]}))
            else:
                acts.append((t2, "page_view", {"url": "/careers"}))
        for k, (t2, kind, d) in enumerate(sorted(acts, key=lambda a: a[0])):
            self.ev(out, "lead.activity", lead, "act-%d" % k, t2, kind=kind, **d)

    def wait_services(self):
        """Until funnel-scoring and funnel-routing have applied the head and
        the head holds still (their derived events are in)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            head = self.log.head()
            if all(self.checkpoint(s) >= head for s in ("scoring", "routing")) and \
                    self.log.head() == head:
                return head
            time.sleep(0.02)
        raise RuntimeError("the services did not catch up in 60 s")

    def checkpoint(self, svc):
        view = getattr(self.a, svc + "_view")
        p = subprocess.run(["%s/funnel-%s" % (self.a.bin, svc), "--rules", self.a.rules,
                            "--view", view, "digest"], capture_output=True, text=True,
                           timeout=30)
        parts = p.stdout.split()
        return int(parts[1]) if p.returncode == 0 and len(parts) >= 2 else -1

    def answer(self, r, out):
        """What the rep did with assignment r (a lead.assigned record)."""
        lead = r["lead"]
        owner, team = r["data"]["owner"], r["data"].get("team", "")
        t = event_time(r)
        # the lead's nth assignment: the same in every run (seqs need not be,
        # as the services' derived events interleave as they come)
        n = self.assignments[lead] = self.assignments.get(lead, 0) + 1
        key = "a%d" % n
        # a draw of its own per answer: the same whatever order they come in
        rng = random.Random("%d:%s:%s" % (self.a.seed, lead, key))
        sla = SLA_MIN.get(team, 480) * MINUTE
        if rng.random() < 0.05:      # a missed SLA: contact comes late
            late = rng.randint(10, 300) * MINUTE
            self.ev(out, "lead.sla_breached", lead, key + "-breach", t + sla + late // 3,
                    owner=owner, team=team, assignment=r["seq"],
                    minutes_late=int(late // 3 // MINUTE))
            delay = sla + late
        else:
            delay = int(min(sla * 0.9, rng.expovariate(1 / (sla * 0.25))))
        if not self.ev(out, "lead.contacted", lead, key + "-call", t + delay, channel="phone"):
            return
        t += delay + rng.randint(1, 48) * HOUR
        x = rng.random()
        if x < 0.2:
            self.ev(out, "lead.rejected", lead, key + "-rej", t, reason=pick(rng, REJECT_REASONS))
            if rng.random() < 0.3:   # back a few weeks later, asking for a demo
                self.ev(out, "lead.activity", lead, key + "-again",
                        t + rng.randint(10, 30) * DAY, kind="demo_request")
            return
        if x < 0.27:
            return                   # still deciding
        if not self.ev(out, "lead.accepted", lead, key + "-acc", t):
            return
        t += rng.randint(2, 14) * DAY
        x = rng.random()
        if x < 0.2:
            self.ev(out, "lead.recycled", lead, key + "-rec", t, reason=pick(rng, RECYCLE_REASONS))
            return
        if x < 0.3:
            self.ev(out, "lead.disqualified", lead, key + "-dq", t, reason="no_budget")
            return
        amount = rng.choice([6, 9, 12, 18, 24, 36, 48, 60, 90]) * 1000
        if self.leads.get(lead, {}).get("data", {}).get("company_size", 0) >= 1000:
            amount *= 3
        if not self.ev(out, "opportunity.opened", lead, key + "-opp", t, amount=amount):
            return
        t += rng.randint(7, 45) * DAY
        x = rng.random()
        if x < 0.45:
            self.ev(out, "deal.won", lead, key + "-won", t, amount=amount)
        elif x < 0.85:
            self.ev(out, "deal.lost", lead, key + "-lost", t, reason=pick(rng, LOST_REASONS))

    def answer_new_assignments(self):
        recs = self.log.records(self.seen + 1)
        if recs:
            self.seen = recs[-1]["seq"]
        out = []
        for r in recs:
            if r["type"] == "lead.assigned" and r["seq"] not in self.handled and \
                    r.get("id", "").startswith("routing:"):
                self.handled.add(r["seq"])
                chain = []
                self.answer(r, chain)
                out += chain
        # one request per lead chain would be slow: the chains of
        # different leads are independent, so they go in batches
        if out:
            self.log.publish(out)
        return len(out)

    def run(self):
        self.make_leads()
        by_week = {}
        for lead, L in sorted(self.leads.items(), key=lambda kv: kv[1]["t"]):
            by_week.setdefault((L["t"] - self.start) // (7 * DAY), []).append(lead)
        for w in sorted(by_week):
            out = []
            for lead in by_week[w]:
                self.top_of_funnel(lead, out)
            self.log.publish(out)
            self.wait_services()
            self.answer_new_assignments()
        # re-engaged leads qualify again; answer until nothing new comes
        for _ in range(5):
            self.wait_services()
            if self.answer_new_assignments() == 0:
                break
        return self.wait_services()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ingest", required=True)
    ap.add_argument("--query", required=True)
    ap.add_argument("--scoring-view", required=True)
    ap.add_argument("--routing-view", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--leads", type=int, default=600)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--end", default="2026-11-30")
    a = ap.parse_args()
    ctx = zmq.Context()
    log = Log(ctx, a.ingest, a.query)
    t0 = time.monotonic()
    d = Demo(a, log)
    head = d.run()
    el = time.monotonic() - t0
    print("demo: %d leads over %d days to %s: %s; the log holds %d records (%.1f s)"
          % (a.leads, a.days, a.end, ", ".join("%s %d" % kv for kv in sorted(d.stats.items())),
             head, el))
    log.ingest.close(0)
    log.query.close(0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
