#!/usr/bin/python3
"""
tests/integration/test_tour.py - the README's tour, run as a new user runs
it, with every output the README quotes compared with what the commands
print.  The commands and the outputs are read from README.md itself, so the
two cannot drift apart.

Which text is the tour: every ```sh block from the heading "## A five-minute
tour" up to the next level-2 heading (the tour and the services'
subsections under it).  In those blocks:

  - a line that is neither blank nor a comment starts a command; a line
    ending in a backslash continues it, and a here-document (<<'EOF') runs
    to its terminator line;
  - comment lines right under a command (no blank line between) are the
    output the README promises, each with its "# " taken off: stdout and
    stderr as a terminal shows them, in order.  A comment after a blank
    line is narration and is not checked;
  - in a quoted output, "..." stands for any text within a line, and a
    line that is only "..." for any number of lines (none included).
    These are the only placeholders: they are for what legitimately
    varies from run to run (times, hashes, durations, SLA minutes left);
    everything else must be printed exactly (trailing blanks aside);
  - a command with a quoted output may exit with any status (the output
    says whether it failed); a command with none must exit 0;
  - a command line ending in "# Ctrl-C stops it" runs until its output has
    been quiet for 1.5 s (10 s before its first line), then gets SIGINT,
    as a user would stop it; its exit status is not checked;
  - `xdg-open URL` (a browser) is run as `curl -sf URL`: the page must be
    served.

How it runs, as `make run` would (clients/run.sh): a funneld in a fresh
temporary directory on loopback ports, then funnel-scoring, funnel-routing
and funnel-metrics with the repository's funnel.yaml, each with its view
in that directory, and funnel-gateway.  Commands run with bash from the repository root (where
the README says to start) on a pseudo-terminal, one at a time, each after
funneld and every service are quiet (each service's checkpoint at the
log's head); $BUILD/bin is first on PATH.  What differs from the README's
machine is mapped both ways, in the commands and back in their outputs:
the endpoints (the CLI gets them from FUNNEL_INGEST/PUBLISH/QUERY, the
service commands from small wrappers first on PATH that add --view and the
endpoints), the dashboard's 127.0.0.1:7480, the gateway's 127.0.0.1:7490, and /tmp/, which becomes a
directory of the run's own.

    BUILD=build /usr/bin/python3 tests/integration/test_tour.py
    BUILD=build /usr/bin/python3 tests/integration/test_tour.py --print

--print prints each command with what it printed, in the README's form,
to bring the README up to date after a change in behaviour (then put the
placeholders back where values vary).
Prints one line per check, "ok - name" or "not ok - name: reason", then
"N passed, M failed"; exits 1 if any check failed.  Everything is bounded.
"""
import difflib
import os
import random
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from funnel_testlib import (REPO, CheckFailed, Daemon, Results, Service, expect, expect_eq,
                            stop_proc)

CMD_TIMEOUT_S = 60         # every command of the tour is bounded by this
QUIET_WAIT_S = 30          # the services catch up within this
CTRL_C_QUIET_S = 1.5       # a live command is stopped after this long without output,
CTRL_C_FIRST_S = 10.0      # or this long when it has printed nothing yet
SERVICES = ("scoring", "routing", "metrics")
README_METRICS = "127.0.0.1:7480"
README_GATEWAY = "127.0.0.1:7490"
README_ENDPOINTS = {"ingest": "tcp://127.0.0.1:7400", "publish": "tcp://127.0.0.1:7401",
                    "query": "tcp://127.0.0.1:7402"}
CTRL_C_MARK = "# Ctrl-C stops it"


class Step:
    """One command of the tour: where it is, its text, the output quoted."""

    def __init__(self, line, text):
        self.line = line          # README line number of its first line
        self.text = text          # the command, continuation lines included
        self.expected = None      # list of lines, or None when nothing is quoted

    def name(self):
        first = self.text.splitlines()[0]
        if len(first) > 70:
            first = first[:67] + "..."
        return "README.md:%d: %s" % (self.line, first)


def tour_steps(readme):
    """The tour's commands, in order, with the outputs they quote."""
    lines = readme.splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.startswith("## A five-minute tour"))
    except StopIteration:
        raise CheckFailed("README.md has no '## A five-minute tour' heading")
    steps = []
    i = start + 1
    in_block = False
    last = None                     # the step whose output may follow
    while i < len(lines) and not lines[i].startswith("## "):
        l = lines[i]
        if not in_block:
            in_block = l.strip() == "```sh"
            i += 1
            continue
        if l.strip() == "```":
            in_block = False
            last = None
            i += 1
            continue
        if l.strip() == "":
            last = None
            i += 1
            continue
        if l.lstrip().startswith("#"):
            if last is not None:
                out = l.lstrip()[1:]
                out = out[1:] if out.startswith(" ") else out
                last.expected = (last.expected or []) + [out]
            i += 1
            continue
        # a command: continuation lines and here-documents belong to it
        first = i
        text = [l]
        heredoc = re.search(r"<<-?\s*'?\"?(\w+)'?\"?", l)
        while text[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            text.append(lines[i])
        if heredoc:
            end = heredoc.group(1)
            while i + 1 < len(lines):
                i += 1
                text.append(lines[i])
                if lines[i].strip() == end:
                    break
        last = Step(first + 1, "\n".join(text))
        steps.append(last)
        i += 1
    return steps


def line_matches(pattern, text):
    """One quoted line against one printed line: "..." is any text."""
    parts = [re.escape(p) for p in pattern.split("...")]
    return re.fullmatch(".*?".join(parts), text, re.S) is not None


def output_matches(expected, actual):
    """Quoted lines against printed lines; a line "..." is any lines."""
    memo = {}

    def m(i, j):
        if (i, j) in memo:
            return memo[(i, j)]
        if i == len(expected):
            r = j == len(actual)
        elif expected[i].strip() == "...":
            r = any(m(i + 1, k) for k in range(j, len(actual) + 1))
        else:
            r = j < len(actual) and line_matches(expected[i], actual[j]) and m(i + 1, j + 1)
        memo[(i, j)] = r
        return r
    return m(0, 0)


def free_port():
    """A loopback port nothing listens on now, below the ephemeral range;
    the search starts at a random place, so two runs side by side rarely
    race for the same port between this check and the service's bind."""
    start = random.randrange(24811, 32000)
    for port in list(range(start, 32000, 89)) + list(range(24811, start, 89)):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port in 24811-32000")


class Tour:
    """funneld and the services as `make run` starts them, and a way to run
    the README's commands against them."""

    def __init__(self, build):
        self.build = build
        self.bin = os.path.join(build, "bin")
        self.daemon = None
        self.procs = []
        self.services = {}

    def start(self):
        # as clients/run.sh: a master key beside the data directory, so
        # personal values are sealed from the first event
        self.keydir = tempfile.mkdtemp(prefix="funnel-tour-key-")
        master = os.path.join(self.keydir, "master.key")
        with open(os.open(master, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(os.urandom(32).hex())
        self.daemon = Daemon(os.path.join(self.bin, "funneld"), prefix="funnel-tour-",
                             term_on_close=True, extra_args=["--master-key", master])
        self.dir = self.daemon.dir
        self.tmp = os.path.join(self.dir, "tmp")
        os.mkdir(self.tmp)
        self.metrics_addr = "127.0.0.1:%d" % free_port()
        rules = os.path.join(REPO, "funnel.yaml")
        for name in SERVICES:
            svc = Service(os.path.join(self.bin, "funnel-" + name), self.daemon, name)
            svc.rules = rules
            extra = ("--http", self.metrics_addr) if name == "metrics" else ()
            self.procs.append(svc.start(*extra))
            self.services[name] = svc
        # funnel-gateway, as `make run` starts it (it keeps no view)
        self.gateway_addr = "127.0.0.1:%d" % free_port()
        gw = Service(os.path.join(self.bin, "funnel-gateway"), self.daemon, "gateway")
        gw.rules = rules
        self.procs.append(gw.start("--http", self.gateway_addr, "--lead-key",
                                   os.path.join(self.dir, "gateway.key")))
        # the service commands a user types reach this run's views and daemon
        wrappers = os.path.join(self.dir, "wrappers")
        os.mkdir(wrappers)
        eps = self.daemon.endpoints
        for name, svc in self.services.items():
            path = os.path.join(wrappers, "funnel-" + name)
            with open(path, "w") as f:
                f.write("#!/bin/sh\nexec '%s' --view '%s' --ingest '%s' --publish '%s' "
                        "--query '%s' \"$@\"\n" % (svc.binary, svc.view, eps["ingest"],
                                                   eps["publish"], eps["query"]))
            os.chmod(path, 0o755)
        self.env = dict(os.environ)
        self.env["PATH"] = wrappers + ":" + os.path.abspath(self.bin) + ":" + self.env["PATH"]
        self.env["FUNNEL_INGEST"] = eps["ingest"]
        self.env["FUNNEL_PUBLISH"] = eps["publish"]
        self.env["FUNNEL_QUERY"] = eps["query"]
        self.env["TERM"] = "dumb"
        self.env.pop("FUNNEL_LOG_LEVEL", None)

    def close(self):
        for p in self.procs:
            stop_proc(p)
        if self.daemon is not None:
            self.daemon.close()
        shutil.rmtree(getattr(self, "keydir", ""), ignore_errors=True)

    # --- what differs from the README's machine, both ways ---
    def to_run(self, text):
        text = text.replace("/tmp/", self.tmp + "/")
        text = text.replace(README_GATEWAY, self.gateway_addr)
        return text.replace(README_METRICS, self.metrics_addr)

    def to_readme(self, text):
        text = text.replace(self.tmp + "/", "/tmp/").replace(self.metrics_addr, README_METRICS)
        text = text.replace(self.gateway_addr, README_GATEWAY)
        for k, ep in self.daemon.endpoints.items():
            if k in README_ENDPOINTS:
                text = text.replace(ep, README_ENDPOINTS[k])
        return text.replace(self.dir, "...")

    def head(self):
        p = subprocess.run([os.path.join(self.bin, "funnel"), "status", "--json"],
                           capture_output=True, text=True, timeout=CMD_TIMEOUT_S, env=self.env)
        m = re.search(r'"head":(\d+)', p.stdout)
        if p.returncode != 0 or m is None:
            raise CheckFailed("funnel status failed: %s %s" % (p.stdout, p.stderr))
        return int(m.group(1))

    def quiet(self):
        """Wait until every service has applied the log's head, twice in a
        row with the same head (what one service derives, the next reads)."""
        deadline = time.monotonic() + QUIET_WAIT_S
        seen = None
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise CheckFailed("a service exited (status %d): %s" % (
                        p.returncode, " / ".join(s.tail()[-300:] for s in self.services.values())))
            head = self.head()
            points = [svc.digest()[0] for svc in self.services.values()]
            if all(c == head for c in points):
                if seen == head:
                    return
                seen = head
            else:
                seen = None
            time.sleep(0.05)
        raise CheckFailed("the services did not reach the log's head within %d s "
                          "(head %d, checkpoints %s)" % (QUIET_WAIT_S, head, points))

    def run(self, step):
        """(exit status, printed lines) of one command on a terminal."""
        text = step.text
        ctrl_c = CTRL_C_MARK in text
        if text.startswith("xdg-open "):
            text = "curl -sf -o /dev/null " + text[len("xdg-open "):]
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen(["/bin/bash", "-c", self.to_run(text)], cwd=REPO,
                                    env=self.env, stdin=slave, stdout=slave, stderr=slave,
                                    start_new_session=True)
        finally:
            os.close(slave)
        out = b""
        deadline = time.monotonic() + CMD_TIMEOUT_S
        last_output = time.monotonic()
        interrupted = False
        try:
            while True:
                now = time.monotonic()
                if now > deadline:
                    raise CheckFailed("still running after %d s; printed so far:\n%s"
                                      % (CMD_TIMEOUT_S, out.decode(errors="replace")))
                quiet_for = CTRL_C_QUIET_S if out else CTRL_C_FIRST_S
                if ctrl_c and not interrupted and now - last_output > quiet_for:
                    os.killpg(proc.pid, signal.SIGINT)
                    interrupted = True
                r, _, _ = select.select([master], [], [], 0.1)
                if r:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:      # EIO: every writer has closed the terminal
                        chunk = b""
                    if not chunk:
                        break
                    out += chunk
                    last_output = time.monotonic()
                elif proc.poll() is not None:
                    break                # exited, and nothing is left to read
            rc = proc.wait(timeout=CMD_TIMEOUT_S)
        finally:
            os.close(master)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        text_out = self.to_readme(out.decode(errors="replace").replace("\r\n", "\n"))
        lines = [l.rstrip() for l in text_out.split("\n")]
        while lines and lines[-1] == "":
            lines.pop()
        return rc, lines


def check_step(tour, step):
    tour.quiet()
    rc, lines = tour.run(step)
    if step.expected is None:
        expect(rc == 0, "exit status %d (the README quotes no output, so it must succeed); "
               "it printed:\n%s" % (rc, "\n".join(lines)))
        return
    want = [l.rstrip() for l in step.expected]
    if not output_matches(want, lines):
        diff = "\n".join(difflib.unified_diff(want, lines, "README.md (quoted)",
                                              "printed", lineterm=""))
        raise CheckFailed("the output differs from what README.md line %d quotes "
                          "(\"...\" matches anything; run with --print to see all):\n%s"
                          % (step.line, diff))


def main():
    build = os.environ.get("BUILD", "build")
    printing = "--print" in sys.argv[1:]
    res = Results()
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    steps = []

    def parse():
        steps.extend(tour_steps(readme))
        expect(len(steps) >= 20, "only %d commands found in the tour" % len(steps))
        quoted = [s for s in steps if s.expected is not None]
        expect(printing or len(quoted) >= 20, "only %d commands quote an output" % len(quoted))
    if not res.run("the tour's commands and quoted outputs are read from README.md", parse):
        return res.summary()

    for b in ("funneld", "funnel", "funnel-scoring", "funnel-routing", "funnel-metrics",
              "funnel-gateway"):
        if not os.access(os.path.join(build, "bin", b), os.X_OK):
            res.not_ok("%s is built" % b, os.path.join(build, "bin", b))
            return res.summary()

    tour = Tour(build)
    try:
        if not res.run("funneld and the services start as `make run` starts them", tour.start):
            return res.summary()
        for step in steps:
            if printing:
                tour.quiet()
                rc, lines = tour.run(step)
                print(step.text)
                for l in lines:
                    print(("# " + l).rstrip())
                print("#   [exit %d]\n" % rc if rc else "", end="", flush=True)
                continue
            res.run(step.name(), check_step, tour, step)
    finally:
        tour.close()
    return res.summary()


if __name__ == "__main__":
    sys.exit(main())
