#!/usr/bin/python3
"""
tests/bench/bench_history.py - the numbers of a history's loading:

  H1  `funnel import` of a HubSpot-shaped export of BENCH_IMPORT_ROWS
      contact rows (default 100,000; a deal for every third contact, so
      the rows are contacts + deals) into a fresh funneld with its
      defaults (fsync on every request): CSV rows/s and events/s, the
      whole command timed (reading, planning, sending);
  H2  the same import again: every event a duplicate, nothing stored;
  H3  `make demo`'s generation (clients/demo/demo.sh, BENCH_DEMO_LEADS
      leads, default 600) from start to the printed URL.

Prints a table and appends it, with the raw figures, to BENCH_OUT (if
set).  Run by tests/bench/run.sh (`make bench`).  Every wait is bounded.
"""
import calendar
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from funnel_testlib import Daemon  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
BIN = os.path.join(REPO, BUILD, "bin") if not os.path.isabs(BUILD) else os.path.join(BUILD, "bin")
ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "100000"))
DEMO_LEADS = int(os.environ.get("BENCH_DEMO_LEADS", "600"))
STAGES = ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
          "customer"]


def write_export(d, rows):
    """contacts.csv and deals.csv in HubSpot's columns; returns the row count."""
    rng = random.Random(7)
    t0 = calendar.timegm((2024, 1, 1, 0, 0, 0))
    n = 0
    with open(os.path.join(d, "contacts.csv"), "w") as c, \
            open(os.path.join(d, "deals.csv"), "w") as dl:
        c.write("Record ID,First Name,Last Name,Email,Company Name,Lifecycle Stage,Create Date,"
                "Original Source,Became a Marketing Qualified Lead Date\n")
        dl.write("Record ID,Deal Name,Deal Stage,Amount,Close Date,Create Date,"
                 "Associated Contact IDs\n")
        for i in range(rows):
            t = t0 + rng.randint(0, 700 * 86400)
            st = rng.choice(STAGES)
            day = time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))
            mql = time.strftime("%Y-%m-%d %H:%M", time.gmtime(t + 86400 * rng.randint(1, 9)))
            c.write('%d,Ana%d,"Souza, Jr",a%d@corp%d.example,Corp %d,%s,%s,PAID_SEARCH,%s\n'
                    % (i, i, i, i % 977, i % 977, st, day, mql))
            n += 1
            if i % 3 == 0:
                close = time.strftime("%Y-%m-%d", time.gmtime(t + 86400 * 40))
                res = rng.choice(["closedwon", "closedlost", "appointmentscheduled"])
                dl.write("%d,Deal %d,%s,%d,%s,%s,%d\n"
                         % (900000000 + i, i, res, rng.randint(1, 90) * 1000, close,
                            time.strftime("%Y-%m-%d", time.gmtime(t + 86400 * 12)), i))
                n += 1
    return n


def run_import(daemon, d):
    eps = daemon.endpoints
    t = time.monotonic()
    p = subprocess.run([os.path.join(BIN, "funnel"), "--ingest", eps["ingest"], "--query",
                        eps["query"], "import", "--mapping",
                        os.path.join(REPO, "clients", "cli", "mappings", "hubspot.json"),
                        "--leads", os.path.join(d, "contacts.csv"), "--deals",
                        os.path.join(d, "deals.csv"), "--rejects", os.path.join(d, "rejects"),
                        "--json"], capture_output=True, text=True, timeout=3600)
    el = time.monotonic() - t
    if p.returncode != 0:
        raise RuntimeError("funnel import: %s %s" % (p.stdout, p.stderr[-600:]))
    return json.loads(p.stdout), el


def run_demo():
    tmp = tempfile.mkdtemp(prefix="funnel-bench-demo-")
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = dict(os.environ, BUILD=BUILD, VAR=os.path.join(tmp, "demo"),
               HTTP="127.0.0.1:%d" % port, PORTS="any", DEMO_EXIT="1")
    t = time.monotonic()
    try:
        p = subprocess.run(["sh", "clients/demo/demo.sh", "--leads", str(DEMO_LEADS)], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=600)
        el = time.monotonic() - t
        if p.returncode != 0:
            raise RuntimeError("demo: %s %s" % (p.stdout, p.stderr[-600:]))
        return el
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    d = tempfile.mkdtemp(prefix="funnel-bench-import-")
    daemon = None
    try:
        rows = write_export(d, ROWS)
        daemon = Daemon(os.path.join(BIN, "funneld"), prefix="funnel-bench-history-")
        s1, t1 = run_import(daemon, d)
        s2, t2 = run_import(daemon, d)
    finally:
        if daemon is not None:
            daemon.close()
        shutil.rmtree(d, ignore_errors=True)
    demo_s = run_demo()
    raw = {
        "import_rows": rows, "import_events": s1["events"], "import_stored": s1["stored"],
        "import_s": round(t1, 3), "import_rows_per_s": int(rows / t1),
        "import_events_per_s": int(s1["events"] / t1),
        "reimport_duplicates": s2["duplicates"], "reimport_stored": s2["stored"],
        "reimport_rows_per_s": int(rows / t2),
        "demo_leads": DEMO_LEADS, "demo_s": round(demo_s, 2),
    }
    table = "\n".join([
        "",
        "| history | measured |",
        "|---|---|",
        "| `funnel import` of %d CSV rows (%d events, funneld fsync on) | %d rows/s, %d events/s (%.1f s) |"
        % (rows, s1["events"], raw["import_rows_per_s"], raw["import_events_per_s"], t1),
        "| the same import again (%d duplicates, %d stored) | %d rows/s |"
        % (s2["duplicates"], s2["stored"], raw["reimport_rows_per_s"]),
        "| `make demo`'s history (%d leads over 90 days, through the services) | %.1f s |"
        % (DEMO_LEADS, demo_s),
        "",
        "```",
    ] + ["history_%s=%s" % kv for kv in raw.items()] + ["```", ""])
    print(table)
    out = os.environ.get("BENCH_OUT")
    if out:
        with open(out, "a") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
