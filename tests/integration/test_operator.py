"""
tests/integration/test_operator.py - operator mistakes are refused, not
obeyed: a second funneld on a data directory in use, a second service on
a view in use, a service on another service's view, a service on a view
built from another log (at start, and when funneld is restarted on an
empty data directory under a running service), long options typed short,
endpoints from the environment, a funneld config key given twice, a
second `make run` (clients/run.sh) on the same var/, and funneld's start
refusals (a sealed log without --master-key, a master key inside the data
directory, map and journal sizes, malformed endpoints, a setting found
wrong late, a data directory that is a file or empty, a truncated
data.mdb): each names the problem and leaves the disk as it was.

Run with Debian's /usr/bin/python3 (python3-zmq, python3-msgpack):

    BUILD=build FUNNELD=build/bin/funneld /usr/bin/python3 tests/integration/test_operator.py

Every process and wait is bounded; prints "ok - name" / "not ok - name:
reason" and "N passed, M failed".
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import zmq

from funnel_testlib import (READY_WAIT_S, REPO, CheckFailed, Daemon, LogClient, Results,
                            Service, expect, expect_eq, expect_in, start_funneld, stop_proc,
                            wait_until)

BUILD = os.environ.get("BUILD", "build")
FUNNELD = os.environ.get("FUNNELD", os.path.join(REPO, BUILD, "bin", "funneld"))
BIN = os.path.dirname(FUNNELD)
FUNNEL = os.path.join(BIN, "funnel")
SCORING = os.path.join(BIN, "funnel-scoring")
ROUTING = os.path.join(BIN, "funnel-routing")
METRICS = os.path.join(BIN, "funnel-metrics")
RULES = os.path.join(REPO, "funnel.yaml")
RUN_S = 30
WILD = ["--ingest", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
        "--query", "tcp://127.0.0.1:*"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def captured(lead, i=0):
    return {"type": "lead.captured", "lead": lead, "id": "cap-%s-%d" % (lead, i),
            "data": {"email": "%s@example.com" % lead.lower(), "title": "VP Sales",
                     "company": "Acme", "country": "DE"}}


def run(args, env=None, timeout=RUN_S):
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, env=env)


def wait_ready(proc, path, what):
    deadline = time.monotonic() + READY_WAIT_S
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise CheckFailed("%s exited with %d before it was ready" % (what, proc.returncode))
        if time.monotonic() > deadline:
            raise CheckFailed("%s not ready in %.0f s" % (what, READY_WAIT_S))
        time.sleep(0.02)


class FixedDaemon:
    """A funneld on fixed loopback ports, which can be stopped and started
    again on another data directory at the same endpoints (what Daemon's
    wildcard ports cannot do)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="funnel-operator-")
        ports = [free_port() for _ in range(3)]
        self.endpoints = {k: "tcp://127.0.0.1:%d" % p
                          for k, p in zip(("ingest", "publish", "query"), ports)}
        self.proc = None

    def start(self, data):
        ready = os.path.join(self.dir, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        log = open(os.path.join(self.dir, "funneld.log"), "ab")
        self.proc = subprocess.Popen(
            [FUNNELD, "--data", os.path.join(self.dir, data), "--ingest", self.endpoints["ingest"],
             "--publish", self.endpoints["publish"], "--query", self.endpoints["query"],
             "--ready-file", ready, "--heartbeat-ms", "200"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        wait_ready(self.proc, ready, "funneld")

    def stop(self):
        if self.proc is not None:
            stop_proc(self.proc)
            self.proc = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def health(port):
    """(HTTP status, JSON body) of /healthz."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def check_locks(res, ctx):
    d = Daemon(FUNNELD, prefix="funnel-operator-")
    try:
        log = LogClient(ctx, d.endpoints)

        def second_funneld_refused():
            log.publish_ok(captured("L-1"))
            other = os.path.join(d.dir, "other.ready")
            p = run([FUNNELD, "--data", d.data, "--ingest", "tcp://127.0.0.1:*",
                     "--publish", "tcp://127.0.0.1:*", "--query", "tcp://127.0.0.1:*",
                     "--ready-file", other])
            expect(p.returncode != 0, "a second funneld on the same --data started")
            expect_in("pid %d" % d.proc.pid, p.stderr, "the refusal names the holder's pid")
            expect(not os.path.exists(other), "the second funneld wrote its ready file")
            log.publish_ok(captured("L-2"))
            expect_eq(log.status()["head"], 2, "head of the first funneld")
        res.run("a second funneld on a data directory in use is refused, naming the pid; "
                "the first keeps acking", second_funneld_refused)

        def second_service_refused():
            sc = Service(SCORING, d, "scoring")
            shutil.copy(RULES, sc.rules)
            proc = sc.start()
            try:
                p = sc.run("--until-head")
                expect(p.returncode != 0, "a second funnel-scoring on the same --view ran")
                expect_in("pid %d" % proc.pid, p.stderr, "the refusal names the holder's pid")
                expect_eq(proc.poll(), None, "the first service still runs")
            finally:
                expect_eq(stop_proc(proc), 0, "the first service's exit status")
        res.run("a second service on a view in use is refused, naming the pid",
                second_service_refused)

        def view_of_another_service():
            rt = Service(ROUTING, d, "routing")
            shutil.copy(RULES, rt.rules)
            rt.until_head()
            before = rt.digest()
            sc = Service(SCORING, d, "scoring2")
            shutil.copy(RULES, sc.rules)
            sc.view = rt.view
            p = sc.run("--until-head")
            expect(p.returncode != 0, "funnel-scoring ran on routing's view")
            expect_in("belongs to routing", p.stderr, "the refusal names the view's service")
            expect_eq(rt.digest(), before, "routing's view (checkpoint and content)")
            # the read-only digest refuses it too, rather than print routing's
            p = run([SCORING, "--view", rt.view, "digest"])
            expect_eq(p.returncode, 1, "funnel-scoring digest on routing's view")
            expect_eq(p.stdout, "", "a digest printed for another service's view")
            expect_in("belongs to routing", p.stderr, "the digest's refusal names the service")
            p = run([ROUTING, "--view", rt.view, "digest"])
            expect_eq(p.returncode, 0, "funnel-routing digest on its own view")
        res.run("a service on another service's view (a run, a digest) is refused by "
                "name; that view is unchanged", view_of_another_service)

        def env_endpoints():
            view = os.path.join(d.dir, "metrics-env")
            env = dict(os.environ, FUNNEL_INGEST=d.endpoints["ingest"],
                       FUNNEL_PUBLISH=d.endpoints["publish"], FUNNEL_QUERY=d.endpoints["query"])
            p = run([METRICS, "--view", view, "--until-head"], env=env)
            expect_eq(p.returncode, 0, "funnel-metrics --until-head with FUNNEL_* set "
                      "(stderr: %s)" % p.stderr[-400:])
            out = run([METRICS, "--view", view, "digest"]).stdout.split()
            expect_eq(int(out[1]), log.status()["head"], "the view's checkpoint (this log's head)")
            # the flag still wins over the environment
            bad = dict(env, FUNNEL_QUERY="tcp://127.0.0.1:1")
            p = run([METRICS, "--view", view, "--until-head", "--query", d.endpoints["query"]],
                    env=bad)
            expect_eq(p.returncode, 0, "--query over a wrong FUNNEL_QUERY")
        res.run("services take FUNNEL_INGEST/PUBLISH/QUERY as the CLI does; a flag wins",
                env_endpoints)
        log.close()
    finally:
        d.close()


def check_other_log(res, ctx):
    fd = FixedDaemon()
    procs = []
    try:
        fd.start("data")
        log = LogClient(ctx, fd.endpoints)
        for i in range(5):
            log.publish_ok(captured("L-%d" % i))
        sc = Service(SCORING, fd, "scoring")
        shutil.copy(RULES, sc.rules)
        sc.until_head()
        head = log.status()["head"]
        log.close()

        def refused_at_start():
            fd.stop()
            fd.start("empty")
            lc = LogClient(ctx, fd.endpoints)
            try:
                p = sc.run("--until-head")
                expect(p.returncode != 0, "funnel-scoring started on another log")
                expect_in("different log", p.stderr, "the refusal")
                expect_eq(lc.status()["head"], 0, "the other log's head (nothing recorded)")
            finally:
                lc.close()
                fd.stop()
                fd.start("data")
        res.run("a service whose view is from another log is refused at start and records "
                "nothing there", refused_at_start)

        def refused_while_running():
            mx_port = free_port()
            mx_view = os.path.join(fd.dir, "metrics-view")
            mx_ready = os.path.join(fd.dir, "metrics.ready")
            eps = fd.endpoints
            run([METRICS, "--view", mx_view, "--until-head", "--ingest", eps["ingest"],
                 "--publish", eps["publish"], "--query", eps["query"]])
            mx_log = open(os.path.join(fd.dir, "metrics.log"), "ab")
            mx = subprocess.Popen([METRICS, "--view", mx_view, "--http", "127.0.0.1:%d" % mx_port,
                                   "--ingest", eps["ingest"], "--publish", eps["publish"],
                                   "--query", eps["query"], "--ready-file", mx_ready],
                                  stdin=subprocess.DEVNULL, stdout=mx_log, stderr=mx_log)
            mx_log.close()
            procs.append(mx)
            wait_ready(mx, mx_ready, "funnel-metrics")
            scp = sc.start()
            procs.append(scp)
            wait_until(lambda: health(mx_port)[0] == 200, "/healthz 200 on the view's own log")

            fd.stop()
            fd.start("empty2")
            wait_until(lambda: health(mx_port)[1].get("status") == "different log",
                       "/healthz saying \"different log\"")
            code, body = health(mx_port)
            expect_eq(code, 503, "/healthz status code on another log")
            wait_until(lambda: "different log" in sc.tail(), "funnel-scoring saying so")
            expect_eq(scp.poll(), None, "funnel-scoring keeps running (applying nothing)")
            lc = LogClient(ctx, fd.endpoints)
            try:
                # more records than the view's checkpoint: none of them is applied
                for i in range(head + 3):
                    lc.publish_ok(captured("N-%d" % i))
                time.sleep(1.5)   # two probe periods; the check below is on content, not time
                recs = lc.records()
                expect_eq(sorted({r["type"] for r in recs}), ["lead.captured"],
                          "types in the other log (nothing recorded by a service)")
                expect_eq(health(mx_port)[1].get("status"), "different log", "/healthz status")
            finally:
                lc.close()
            # the view's own log back: both resume
            fd.stop()
            fd.start("data")
            wait_until(lambda: health(mx_port)[0] == 200, "/healthz 200 once the log is back")
            expect_eq(stop_proc(scp), 0, "funnel-scoring's exit status")
            expect_eq(stop_proc(mx), 0, "funnel-metrics' exit status")
        res.run("funneld restarted on an empty data directory under running services: they "
                "apply and record nothing there, /healthz says \"different log\" (503), and "
                "they resume when the log is back", refused_while_running)
    finally:
        for p in procs:
            stop_proc(p)
        fd.close()


def check_flags(res):
    tmp = tempfile.mkdtemp(prefix="funnel-operator-")
    try:
        def prefixes_refused():
            # explicit wildcard ports: a funneld that wrongly starts takes no default port
            for args, short in (([FUNNELD, "--dat", os.path.join(tmp, "x")] + WILD, "--dat"),
                                ([SCORING, "--rule", RULES, "--view", os.path.join(tmp, "v")],
                                 "--rule"),
                                ([ROUTING, "--vie", os.path.join(tmp, "v2")], "--vie"),
                                ([METRICS, "--view=" + os.path.join(tmp, "v3"), "--onc"], "--onc"),
                                ([FUNNEL, "--quer", "tcp://127.0.0.1:1", "status"], "--quer"),
                                ([FUNNEL, "status", "--tim", "10"], "--tim")):
                p = run(args)
                expect_eq(p.returncode, 2, "%s exit status" % " ".join(args))
                expect_in("'%s" % short, p.stderr, "the message names the option")
                expect_in("spelled in full", p.stderr, "the message says why")
            expect_eq(sorted(os.listdir(tmp)), [], "what the refused commands created")
            for b in (FUNNELD, SCORING, ROUTING, METRICS, FUNNEL):
                expect_in("spelled in full", run([b, "--help"]).stdout, "%s --help" % b)
        res.run("long options typed short (--dat, --rule, --quer) are refused, naming them, "
                "and create nothing; --help says so", prefixes_refused)

        def config_key_twice():
            cfg = os.path.join(tmp, "funneld.yaml")
            with open(cfg, "w") as f:
                f.write("data: %s/a\nno-sync: true\ndata: %s/b\n" % (tmp, tmp))
            p = run([FUNNELD, "--config", cfg] + WILD)
            expect_eq(p.returncode, 2, "funneld exit status")
            expect_in("funneld.yaml:3: duplicate key 'data' (first given on line 1)", p.stderr,
                      "the message")
            expect_eq(sorted(os.listdir(tmp)), ["funneld.yaml"], "what funneld created")
        res.run("a funneld config key given twice is refused, naming the lines", config_key_twice)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tree(top, touched=()):
    """{relative path: (size, mtime_ns)} of everything under top (directories
    too); the files named in touched (an open rewrites them: funnel.lock,
    lock.mdb) by their size only."""
    out = {}
    for root, dirs, files in os.walk(top):
        for n in dirs + files:
            path = os.path.join(root, n)
            st = os.lstat(path)
            out[os.path.relpath(path, top)] = (st.st_size if n in files else 0,
                                               None if n in touched else st.st_mtime_ns)
    return out


def refused(args, status, needles, top, env=None, touched=()):
    """Run funneld (args after the binary) to its refusal: the exit status
    (never a signal), every needle in its stderr, and top (a directory)
    holding exactly what it held before (tree).  Returns stderr."""
    before = tree(top, touched)
    p = run([FUNNELD] + args, env=env)
    expect_eq(p.returncode, status, "funneld %s: exit status (stderr: %s)"
              % (" ".join(args), p.stderr[-400:]))
    for n in needles:
        expect_in(n, p.stderr, "the message")
    expect_eq(tree(top, touched), before, "what the refused start left in %s" % top)
    return p.stderr


def make_log(ctx, tdir, data, n=1, args=()):
    """A log in data with n captures (funneld started, fed and stopped);
    returns its head."""
    proc, eps = start_funneld(FUNNELD, data, tdir, list(args))
    try:
        log = LogClient(ctx, eps)
        try:
            for i in range(0, n, 100):
                log.publish_ok(*[captured("T-%d" % j) for j in range(i, min(n, i + 100))])
            head = log.status()["head"]
        finally:
            log.close()
    finally:
        expect_eq(stop_proc(proc), 0, "funneld's exit status")
    return head


def head_of(ctx, tdir, data, args=()):
    """The head of the log in data, read by a funneld started on it."""
    proc, eps = start_funneld(FUNNELD, data, tdir, list(args))
    try:
        log = LogClient(ctx, eps)
        try:
            return log.status()["head"]
        finally:
            log.close()
    finally:
        stop_proc(proc)


def check_start_refusals(res, ctx):
    tmp = tempfile.mkdtemp(prefix="funnel-operator-")
    tdir = os.path.join(tmp, "t")     # ready files and logs of the funneld that start
    os.makedirs(tdir)
    env = dict(os.environ)
    env.pop("FUNNEL_MASTER_KEY_FILE", None)
    env.pop("FUNNEL_CONFIG", None)
    keydir = os.path.join(tmp, "keys")
    os.makedirs(keydir)
    mk = os.path.join(keydir, "master.key")
    with open(mk, "wb") as f:
        f.write(os.urandom(32))
    try:
        def sealed_log_without_master_key():
            data = os.path.join(tmp, "sealed")
            head = make_log(ctx, tdir, data, 3, ["--master-key", mk])
            expect(os.path.exists(os.path.join(data, "keys.dat")), "keys.dat written")
            refused(["--data", data] + WILD, 2, ["keys.dat", "--master-key"], tmp, env)
            expect_eq(head_of(ctx, tdir, data, ["--master-key", mk]), head, "the log's head")
        res.run("a data directory with keys.dat is refused without --master-key, naming both; "
                "the log is unchanged", sealed_log_without_master_key)

        def master_key_in_data_dir():
            data = os.path.join(tmp, "withkey")
            os.makedirs(data)
            inside = os.path.join(data, "mk")
            shutil.copy(mk, inside)
            refused(["--data", data, "--master-key", inside] + WILD, 2,
                    ["the master key %s is inside the data directory" % inside], tmp, env)
            # through a symbolic link to the data directory, and with ".." in the key's path
            link = os.path.join(tmp, "link")
            os.symlink(data, link)
            refused(["--data", link, "--master-key", os.path.join(keydir, "..", "withkey", "mk")]
                    + WILD, 2, ["is inside the data directory"], tmp, env)
            os.unlink(link)
            shutil.rmtree(data)
        res.run("a master key inside the data directory (by its real path) is refused and "
                "creates nothing", master_key_in_data_dir)

        def max_map_below_map():
            refused(["--data", os.path.join(tmp, "m"), "--max-map-size", "1048576",
                     "--map-size", "2097152"] + WILD, 2,
                    ["--max-map-size 1048576 is below --map-size 2097152"], tmp, env)
        res.run("--max-map-size below --map-size is refused, naming both, and creates nothing",
                max_map_below_map)

        def journal_size_bounds():
            refused(["--data", os.path.join(tmp, "j"), "--journal-size", "99999999999999"] + WILD,
                    2, ["--journal-size", "99999999999999", "16 GiB"], tmp, env)
            refused(["--data", os.path.join(tmp, "j"), "--journal-size", "99999999999T"] + WILD,
                    2, ["--journal-size: invalid value '99999999999T'"], tmp, env)
            # a journal larger than the free space: on a small tmpfs when one can be mounted
            small = os.path.join(tmp, "small")
            os.makedirs(small)
            m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", small],
                               capture_output=True, text=True)
            if m.returncode != 0:
                print("# skipped the free-space part: cannot mount a tmpfs: %s"
                      % m.stderr.strip(), flush=True)
                return
            try:
                refused(["--data", os.path.join(small, "d"), "--journal-size", "16M"] + WILD, 1,
                        ["the journal (--journal-size 16777216 bytes) does not fit", "free"],
                        small, env)
                expect_eq(os.listdir(small), [], "the tmpfs")
            finally:
                subprocess.run(["umount", small], capture_output=True)
        res.run("--journal-size past 16 GiB, or past the file system's free space, is refused "
                "naming the sizes, and creates nothing", journal_size_bounds)

        def malformed_endpoints():
            for flag, ep, why in (("--ingest", "tcp://127.0.0.1:99999", "1 to 65535"),
                                  ("--query", "tcp://127.0.0.1:notaport", "1 to 65535"),
                                  ("--publish", "tcp://127.0.0.1:0", "1 to 65535"),
                                  ("--publish", "udp://127.0.0.1:%d" % free_port(),
                                   "transport must be tcp://"),
                                  ("--ingest", "tcp://127.0.0.1", "no port")):
                args = list(WILD)
                args[args.index(flag) + 1] = ep
                err = refused(["--data", os.path.join(tmp, "e")] + args, 2,
                              ["%s %s: " % (flag, ep), why], tmp, env)
                expect("loopback" not in err, "a malformed endpoint called not on loopback")
        res.run("malformed endpoints (port 99999, 0, a name, udp://, none) are refused "
                "naming the flag and the endpoint, and create nothing", malformed_endpoints)

        def late_settings():
            bad_access = os.path.join(tmp, "access.bad")
            with open(bad_access, "w") as f:
                f.write("this is not an access file\n")
            new = os.path.join(tmp, "new", "data")
            for args, status, needle in (
                    (["--access", os.path.join(tmp, "nope"), "--key", mk], 2, "access: "),
                    (["--access", bad_access, "--key", mk], 2, "access: "),
                    (["--master-key", os.path.join(tmp, "nope")], 2, "--master-key: "),
                    (["--ready-file", os.path.join(tmp, "nodir", "ready")], 2,
                     "its directory %s does not exist" % os.path.join(tmp, "nodir"))):
                refused(["--data", new] + WILD + args, status, [needle], tmp, env)
            # a port in use is found only by the bind: what the start made is removed,
            # a new data directory and an existing log's files alike
            data = os.path.join(tmp, "existing")
            head = make_log(ctx, tdir, data, 2)
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen(1)
                ep = "tcp://127.0.0.1:%d" % taken.getsockname()[1]
                for d in (new, data):
                    args = list(WILD)
                    args[args.index("--query") + 1] = ep
                    refused(["--data", d] + args, 1, ["cannot bind the query endpoint %s" % ep],
                            tmp, env, touched=("funnel.lock", "lock.mdb"))
            expect_eq(head_of(ctx, tdir, data), head, "the existing log's head")
        res.run("an access file, a master key or a ready file's directory that is wrong, and a "
                "port in use, are refused leaving nothing new on disk (an existing log "
                "unchanged)", late_settings)

        def data_dir_messages():
            afile = os.path.join(tmp, "afile")
            with open(afile, "w") as f:
                f.write("x")
            err = refused(["--data", afile] + WILD, 2, ["--data %s is not a directory" % afile],
                          tmp, env)
            expect("one funneld" not in err, "a file blamed on a second funneld")
            refused(["--data", os.path.join(afile, "sub")] + WILD, 2,
                    ["is not a directory"], tmp, env)
            cfg = os.path.join(tmp, "empty-data.yaml")
            with open(cfg, "w") as f:
                f.write('data: ""\n')
            err = refused(["--config", cfg] + WILD, 2, ["the data directory is empty"], tmp, env)
            expect("File name too long" not in err, "the old message")
            os.unlink(cfg)
            os.unlink(afile)
        res.run("--data naming a file, or an empty data setting, is refused saying so (not "
                "\"one funneld per data directory\")", data_dir_messages)

        def truncated_log():
            data = os.path.join(tmp, "big")
            make_log(ctx, tdir, data, 400)
            with open(os.path.join(data, "data.mdb"), "rb") as f:
                whole = f.read()
            expect(len(whole) > 40000, "data.mdb of 400 captures is %d bytes" % len(whole))
            cut = os.path.join(tmp, "cut")
            os.makedirs(cut)
            with open(os.path.join(cut, "data.mdb"), "wb") as f:
                f.write(whole[:20000])
            p = run([FUNNELD, "--data", cut] + WILD, env=env)
            expect_eq(p.returncode, 1, "funneld's exit status (stderr: %s)" % p.stderr[-400:])
            expect_in("data.mdb is truncated: 20000 bytes, the log needs", p.stderr, "the message")
            expect_eq(os.path.getsize(os.path.join(cut, "data.mdb")), 20000, "the cut file's size")
            expect(not os.path.exists(os.path.join(cut, "journal")), "a journal was created")
        res.run("a truncated data.mdb is refused naming its size and the size needed (no "
                "SIGBUS)", truncated_log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_bounded(args, env):
    """Run clients/run.sh to its end in a session of its own; past RUN_S the
    whole session is killed, so that no funneld or service outlives the check."""
    p = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=RUN_S)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=10)
        raise CheckFailed("%s still ran after %d s" % (" ".join(args[:2]), RUN_S))
    return subprocess.CompletedProcess(args, p.returncode, out, err)


def check_make_run(res):
    var = tempfile.mkdtemp(prefix="funnel-operator-var-")
    # every port a free one: the dashboard's and the gateway's too
    env = dict(os.environ, BUILD=os.path.dirname(BIN), VAR=var, HTTP="127.0.0.1:0",
               GATEWAY_HTTP="127.0.0.1:0")
    wild = WILD
    first = None
    try:
        def second_run_refused():
            nonlocal first
            log = open(os.path.join(var, "run1.log"), "wb")
            first = subprocess.Popen(["sh", "clients/run.sh"] + wild, cwd=REPO, env=env,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            log.close()
            ready = os.path.join(var, "funneld.ready")
            wait_ready(first, ready, "the first run")
            with open(ready) as f:
                before = f.read()
            p = subprocess.run(["sh", "clients/run.sh"] + wild, cwd=REPO, env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=RUN_S)
            expect_eq(p.returncode, 1, "the second run's exit status")
            expect_in("pid %d" % first.pid, p.stderr, "the refusal names the first run's pid")
            # and how to stop it; not "set VAR", which would still clash on the ports
            expect_in("kill %d" % first.pid, p.stderr, "the refusal says how to stop it")
            with open(ready) as f:
                expect_eq(f.read(), before, "the first run's ready file")
            expect_eq(first.poll(), None, "the first run still runs")
        res.run("a second `make run` on the same var/ is refused, naming the pid, and leaves "
                "the running one's files alone", second_run_refused)

        def broken_rules_refused():
            # a run of its own, in a var/ of its own, on a rules file with a mistake
            var2 = os.path.join(var, "broken")
            rules = os.path.join(var, "broken.yaml")
            with open(os.path.join(REPO, "funnel.yaml")) as f:
                text = f.read()
            with open(rules, "w") as f:
                f.write(text.replace("threshold: 70", "threshold: seventy"))
            line = text[:text.index("threshold: 70")].count("\n") + 1
            p = run_bounded(["sh", "clients/run.sh"] + wild, dict(env, VAR=var2, RULES=rules))
            expect_eq(p.returncode, 1, "the run's exit status")
            expect_in("broken.yaml:%d: scoring.threshold" % line, p.stderr, "the line named")
            expect_in("nothing was started", p.stderr, "the run says so")
            expect_eq(sorted(os.listdir(var2)), ["run.lock"], "what the run created")
        res.run("`make run` on a rules file with a mistake names the line and starts nothing",
                broken_rules_refused)

        def service_that_cannot_start():
            # the dashboard's port is taken: funnel-metrics stops at start,
            # and so does the whole run, funneld included
            var3 = os.path.join(var, "taken")
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen(1)
                port = taken.getsockname()[1]
                p = run_bounded(["sh", "clients/run.sh"] + wild,
                                dict(env, VAR=var3, HTTP="127.0.0.1:%d" % port))
            expect_eq(p.returncode, 1, "the run's exit status")
            expect_in("run: funnel-metrics did not start", p.stderr, "the run names the service")
            with open(os.path.join(var3, "funneld.ready")) as f:
                pid = int(dict(l.strip().split("=", 1) for l in f if "=" in l)["pid"])
            expect(not os.path.exists("/proc/%d" % pid) or
                   open("/proc/%d/stat" % pid).read().split()[2] == "Z", "funneld stopped")
        res.run("a service that does not start stops `make run`, funneld included",
                service_that_cannot_start)
    finally:
        if first is not None and first.poll() is None:
            first.send_signal(signal.SIGTERM)
            try:
                first.wait(timeout=20)
            except subprocess.TimeoutExpired:
                first.kill()
                first.wait(timeout=5)
        shutil.rmtree(var, ignore_errors=True)


def main():
    res = Results()
    ctx = zmq.Context()
    check_flags(res)
    check_start_refusals(res, ctx)
    check_locks(res, ctx)
    check_other_log(res, ctx)
    check_make_run(res)
    ctx.term()
    return res.summary()


if __name__ == "__main__":
    sys.exit(main())
