#!/usr/bin/python3
"""
tests/integration/test_install.py - `make install` into a DESTDIR and the
installed files at work: the binaries run from another directory with
only the installed rules file; libfunnel.so carries its SONAME, its
symlinks and funnel_* symbols only; funneld, a service and funnel-mirror send
READY=1 and STOPPING=1 to NOTIFY_SOCKET; a program compiled against the
installed funnel.pc runs on the installed shared library; the systemd
units pass `systemd-analyze verify` (and a broken copy does not); the
sysusers.d file creates the funnel user in a scratch root.

Run with Debian's /usr/bin/python3 from the repository:

    BUILD=build /usr/bin/python3 tests/integration/test_install.py

Runs `make install` (BUILD is already built by `make check`; nothing is
compiled again).  Every process is bounded; prints "ok - name" /
"not ok - name: reason" and "N passed, M failed".
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from funnel_testlib import REPO, Results, expect, expect_eq, expect_in

BUILD = os.environ.get("BUILD", "build")
MAKE_TIMEOUT_S = 600
CMD_TIMEOUT_S = 60
BINARIES = ("funneld", "funnel", "funnel-scoring", "funnel-routing", "funnel-metrics",
            "funnel-gateway")
UNITS = ("funneld.service", "funnel-scoring.service", "funnel-routing.service",
         "funnel-metrics.service", "funnel-gateway.service", "funnel-mirror.service")

PROGRAM = r"""
#include <stdio.h>
#include <funnel/funnel.h>

/* publish one event to argv[1], then verify the chain over argv[2] */
int main(int argc, char **argv)
{
	funnel_producer *p = NULL;
	funnel_query *q = NULL;
	funnel_event ev = { .type = "x.installed", .id = "installed-1" };
	funnel_ack ack;
	funnel_verify_result res;
	if (argc != 3 || funnel_producer_new(&p, argv[1], 5000) != FUNNEL_OK ||
	    funnel_publish(p, &ev, 1, &ack) != FUNNEL_OK ||
	    funnel_query_new(&q, argv[2], 5000) != FUNNEL_OK ||
	    funnel_verify(q, 0, 0, &res) != FUNNEL_OK)
		return 1;
	printf("seq %llu checked %llu\n", (unsigned long long)ack.seq,
	       (unsigned long long)res.checked);
	funnel_query_destroy(&q);
	funnel_producer_destroy(&p);
	return 0;
}
"""


def run(args, cwd=None, env=None, timeout=CMD_TIMEOUT_S):
    return subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def ok(args, what, **kw):
    p = run(args, **kw)
    expect_eq(p.returncode, 0, "%s exit status (stderr: %s)" % (what, p.stderr[-800:]))
    return p.stdout


def make_install(dest, prefix):
    args = ["make", "-s", "-C", REPO, "install", "BUILD=" + BUILD, "PREFIX=" + prefix]
    if dest:
        args.append("DESTDIR=" + dest)
    ok(args, "make install", timeout=MAKE_TIMEOUT_S)


def free_port():
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Funneld:
    """The installed funneld, started from `cwd`: on wildcard loopback
    ports, or with no flag but --ready-file when env names a settings file."""

    def __init__(self, binary, cwd, env=None):
        self.ready = os.path.join(cwd, "ready")
        self.log = open(os.path.join(cwd, "funneld.log"), "wb")
        args = [binary, "--ready-file", self.ready]
        if env is None:
            args += ["--data", "data", "--ingest", "tcp://127.0.0.1:*",
                     "--publish", "tcp://127.0.0.1:*", "--query", "tcp://127.0.0.1:*"]
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        self.eps = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            if os.path.exists(self.ready):
                with open(self.ready) as f:
                    eps = dict(line.strip().split("=", 1) for line in f if "=" in line)
                if "query" in eps and "publish" in eps:
                    self.eps = eps
                    return
            time.sleep(0.02)
        self.close()
        raise RuntimeError("the installed funneld did not start")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def main():
    res = Results()
    top = tempfile.mkdtemp(prefix="funnel-install-")
    dest = os.path.join(top, "dest")
    usr = os.path.join(dest, "usr")
    lib = os.path.join(usr, "lib")
    work = os.path.join(top, "elsewhere")
    os.mkdir(work)
    daemon = None
    try:
        def installs():
            make_install(dest, "/usr")
            for b in BINARIES:
                expect(os.access(os.path.join(usr, "bin", b), os.X_OK), "bin/%s installed" % b)
            expect_eq(os.readlink(os.path.join(lib, "libfunnel.so")), "libfunnel.so.1",
                      "libfunnel.so -> libfunnel.so.1")
            expect_eq(os.readlink(os.path.join(lib, "libfunnel.so.1")), "libfunnel.so.1.0.0",
                      "libfunnel.so.1 -> libfunnel.so.1.0.0")
            for f in ("lib/libfunnel.a", "lib/pkgconfig/funnel.pc", "include/funnel/funnel.h",
                      "include/funnel/service.h", "share/doc/funnel/funnel.yaml.example",
                      "lib/sysusers.d/funnel.conf") + tuple("lib/systemd/system/" + u
                                                           for u in UNITS):
                expect(os.path.isfile(os.path.join(usr, f)), "%s installed" % f)
            conf = os.path.join(dest, "etc", "funnel", "funnel.yaml")
            expect(os.path.isfile(conf), "/etc/funnel/funnel.yaml installed")
            with open(conf) as f, open(os.path.join(REPO, "funnel.yaml")) as g:
                expect_eq(f.read(), g.read(), "the installed rules file, comments and all")
            with open(os.path.join(lib, "pkgconfig", "funnel.pc")) as f:
                expect_in("prefix=/usr\n", f.read(), "funnel.pc prefix")
            with open(os.path.join(usr, "lib/systemd/system/funneld.service")) as f:
                expect_in("ExecStart=/usr/bin/funneld --config /etc/funnel/funnel.conf", f.read(),
                          "funneld.service runs the installed funneld with the settings file")
            with open(os.path.join(usr, "lib/systemd/system/funnel-gateway.service")) as f:
                expect_in("ExecStart=/usr/bin/funnel-gateway --config /etc/funnel/funnel.conf\n",
                          f.read(), "funnel-gateway.service runs the installed gateway with the"
                          " settings file")
            with open(os.path.join(dest, "etc", "funnel", "funnel.conf")) as f:
                text = f.read()
            for want in ("data: /var/lib/funnel/log", "rules: /etc/funnel/funnel.yaml",
                         "view: /var/lib/funnel/scoring", "ingest: tcp://127.0.0.1:7400",
                         "lead-key: /var/lib/funnel/gateway.key"):
                expect_in(want, text, "the installed funnel.conf: absolute defaults")
        if not res.run("make install PREFIX=/usr DESTDIR=... installs binaries, libraries,"
                       " headers, funnel.pc, rules file, units", installs):
            return res.summary()

        def shared_library():
            so = os.path.join(lib, "libfunnel.so.1.0.0")
            dyn = ok(["readelf", "-d", so], "readelf -d")
            expect_in("Library soname: [libfunnel.so.1]", dyn, "SONAME")
            syms = ok(["nm", "-D", "--defined-only", so], "nm -D").split("\n")
            names = [line.split()[-1] for line in syms if line.strip()]
            expect(any(n.startswith("funnel_publish") for n in names), "funnel_publish exported")
            other = [n for n in names if not n.startswith("funnel_") and n != "FUNNEL_1"]
            expect_eq(other, [], "symbols exported besides funnel_*")
        res.run("libfunnel.so has its SONAME and exports funnel_* only", shared_library)

        def installed_binaries_elsewhere():
            nonlocal daemon
            bin_ = os.path.join(usr, "bin")
            # the installed settings file, pointed at this test's directory and ports
            with open(os.path.join(dest, "etc", "funnel", "funnel.conf")) as f:
                text = f.read()
            ports = [free_port() for _ in range(5)]
            for i, p in enumerate((7400, 7401, 7402, 7480, 7490)):
                text = text.replace("127.0.0.1:%d" % p, "127.0.0.1:%d" % ports[i])
            text = text.replace("/var/lib/funnel", os.path.join(work, "state"))
            text = text.replace("/etc/funnel", os.path.join(dest, "etc", "funnel"))
            conf = os.path.join(work, "funnel.conf")
            with open(conf, "w") as f:
                f.write(text)
            env = dict(os.environ, FUNNEL_CONFIG=conf)
            for k in ("FUNNEL_INGEST", "FUNNEL_PUBLISH", "FUNNEL_QUERY"):
                env.pop(k, None)
            daemon = Funneld(os.path.join(bin_, "funneld"), work, env=env)
            expect_eq(daemon.eps["query"], "tcp://127.0.0.1:%d" % ports[2],
                      "funneld's query endpoint from the file")
            expect(os.path.isdir(os.path.join(work, "state", "log")),
                   "the log where the file says")
            ok([os.path.join(bin_, "funnel"), "publish", "--type", "lead.captured",
                "--lead", "L1", "--id", "cap-L1", "--data", '{"email":"a@corp.example"}'],
               "installed funnel publish", cwd=work, env=env)
            out = ok([os.path.join(bin_, "funnel"), "--json", "verify"],
                     "installed funnel verify", cwd=work, env=env)
            expect_in('"ok":true', out.replace(" ", ""), "verify output")
            ok([os.path.join(bin_, "funnel-scoring"), "check"], "scoring check of the rules"
               " file the settings name", cwd=work, env=env)
            ok([os.path.join(bin_, "funnel-scoring"), "--until-head"], "scoring --until-head",
               cwd=work, env=env)
            out = ok([os.path.join(bin_, "funnel-scoring"), "digest"], "scoring digest",
                     cwd=work, env=env)
            expect(out.startswith("checkpoint 2 "), "the scoring view where the file says,"
                   " at the head: %r" % out)
            ok([os.path.join(bin_, "funnel-metrics"), "--until-head"], "metrics --until-head",
               cwd=work, env=env)
            expect(os.path.isdir(os.path.join(work, "state", "metrics")), "metrics view")
            st = json.loads(ok([os.path.join(bin_, "funnel"), "--json", "status"],
                               "funnel status", cwd=work, env=env))
            svcs = {x["name"]: x for x in st.get("services", [])}
            expect_eq(sorted(svcs), ["funnel-metrics", "funnel-routing", "funnel-scoring"],
                      "status: the services the settings file names")
            sc = svcs["funnel-scoring"]
            expect_eq(sc["view"], os.path.join(work, "state", "scoring"), "scoring view")
            expect_eq((sc["checkpoint"], sc["lag"]), (2, st["head"] - 2), "scoring lag")
            expect_eq(svcs["funnel-routing"].get("error"), "ENOTFOUND",
                      "routing never ran: no view")
            human = ok([os.path.join(bin_, "funnel"), "--human", "status"], "status --human",
                       cwd=work, env=env)
            expect_in("scoring     checkpoint 2, lag %d events" % (st["head"] - 2), human,
                      "human status: the scoring lag")
            # a settings file that gives routing the scoring view: named, not read as
            # routing's checkpoint
            swapped = os.path.join(work, "swapped.conf")
            with open(swapped, "w") as f:
                f.write(text.replace("view: %s" % os.path.join(work, "state", "routing"),
                                     "view: %s" % os.path.join(work, "state", "scoring")))
            senv = dict(env, FUNNEL_CONFIG=swapped)
            st2 = json.loads(ok([os.path.join(bin_, "funnel"), "--json", "status"],
                                "funnel status with routing given the scoring view", cwd=work,
                                env=senv))
            rt = {x["name"]: x for x in st2.get("services", [])}["funnel-routing"]
            expect_eq((rt.get("error"), rt.get("owner"), rt.get("checkpoint")),
                      ("EVALUE", "scoring", None), "routing's entry on scoring's view")
            human = ok([os.path.join(bin_, "funnel"), "--human", "status"], "status --human",
                       cwd=work, env=senv)
            expect_in("routing     view %s belongs to scoring" % os.path.join(work, "state",
                                                                          "scoring"),
                      human, "human status names the view's service")
            # a flag wins over the file; FUNNEL_QUERY too
            p = run([os.path.join(bin_, "funnel"), "--query", "tcp://127.0.0.1:%d" % ports[3],
                     "--timeout", "300", "status"], cwd=work, env=env)
            expect_eq(p.returncode, 1, "--query over the file's: nobody there")
            p = run([os.path.join(bin_, "funnel"), "--timeout", "300", "status"], cwd=work,
                    env=dict(env, FUNNEL_QUERY="tcp://127.0.0.1:%d" % ports[3]))
            expect_eq(p.returncode, 1, "FUNNEL_QUERY over the file's: nobody there")
            # an unknown key is refused by the program whose section it is, naming the line
            bad = os.path.join(work, "bad.conf")
            with open(bad, "w") as f:
                f.write(text.replace("  log-level: info\n", "  log-level: info\n  dta: x\n"))
            line = text.split("\n").index("  log-level: info") + 2
            p = run([os.path.join(bin_, "funneld"), "--config", bad], cwd=work)
            expect_eq(p.returncode, 2, "funneld exit status on an unknown key")
            expect_in("bad.conf:%d: unknown setting funneld.dta" % line, p.stderr, "message")
            p = run([os.path.join(bin_, "funnel-scoring"), "--config", bad, "check"], cwd=work)
            expect_eq(p.returncode, 0, "funnel-scoring leaves funneld's section to funneld")
            # a service's value refused names its line; a one-time action is no setting
            sview = "  view: %s\n" % os.path.join(work, "state", "scoring")
            for extra, want in (("  batch: 0\n", "(that is %s:%d, batch: 0)"),
                                ("  rebuild: true\n", "%s:%d: rebuild is a one-time action")):
                bad2 = os.path.join(work, "bad2.conf")
                with open(bad2, "w") as f:
                    f.write(text.replace(sview, sview + extra))
                line = text.split("\n").index(sview.rstrip("\n")) + 2
                p = run([os.path.join(bin_, "funnel-scoring"), "--config", bad2, "--until-head"],
                        cwd=work)
                expect_eq(p.returncode, 2, "funnel-scoring exit status on %r" % extra)
                expect_in(want % (bad2, line), p.stderr, "the line named (%r)" % extra)
            # the gateway too: its rules, lead id key and address from the file
            gw_ready = os.path.join(work, "gateway.ready")
            gw_log = open(os.path.join(work, "gateway.log"), "wb")
            gw = subprocess.Popen([os.path.join(bin_, "funnel-gateway"), "--ready-file",
                                   gw_ready], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                  stdout=gw_log, stderr=gw_log)
            gw_log.close()
            try:
                deadline = time.monotonic() + 10
                while (time.monotonic() < deadline and gw.poll() is None
                       and not os.path.exists(gw_ready)):
                    time.sleep(0.02)
                with open(os.path.join(work, "gateway.log")) as f:
                    expect(os.path.exists(gw_ready), "the installed gateway serves: %r" % f.read())
                with open(gw_ready) as f:
                    expect_in("http=127.0.0.1:%d" % ports[4], f.read(), "its address from the file")
                expect(os.path.isfile(os.path.join(work, "state", "gateway.key")),
                       "the lead id key where the file says")
                expect(not os.path.exists(os.path.join(work, "var")), "nothing under ./var")
            finally:
                if gw.poll() is None:
                    gw.terminate()
                    gw.wait(timeout=10)
        res.run("the installed programs (the gateway too) run from another directory with one"
                " settings file (FUNNEL_CONFIG) and nothing else; flags and FUNNEL_* win over it",
                installed_binaries_elsewhere)

        def program_on_installed_library():
            expect(daemon is not None, "the installed funneld runs")
            env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(lib, "pkgconfig"))
            flags = ok(["pkg-config", "--define-prefix", "--cflags", "--libs", "funnel"],
                       "pkg-config funnel", env=env).split()
            expect_in("-I" + os.path.join(usr, "include"), flags, "cflags from the DESTDIR")
            src = os.path.join(work, "prog.c")
            with open(src, "w") as f:
                f.write(PROGRAM)
            prog = os.path.join(work, "prog")
            # a library built with SAN=1 needs the program built the same way
            san = "libasan" in ok(["ldd", os.path.join(lib, "libfunnel.so.1")], "ldd")
            ok(["cc", "-o", prog, src] + flags
               + (["-fsanitize=address,undefined"] if san else []), "cc against funnel.pc",
               env=env)
            env = dict(os.environ, LD_LIBRARY_PATH=lib)
            ldd = ok(["ldd", prog], "ldd", env=env)
            expect_in(os.path.join(lib, "libfunnel.so.1"), ldd, "libfunnel.so.1 from the DESTDIR")
            out = ok([prog, daemon.eps["ingest"], daemon.eps["query"]], "the program", env=env,
                     cwd=work)
            parts = out.split()
            expect(len(parts) == 4 and parts[0] == "seq" and int(parts[1]) >= 2,
                   "published through libfunnel.so: %r" % out)
            expect_eq(parts[3], parts[1], "records verified up to the one just published")
        res.run("a program built with the installed funnel.pc runs on the installed"
                " libfunnel.so.1", program_on_installed_library)

        def notify():
            # sd_notify's protocol: datagrams to the socket NOTIFY_SOCKET names
            bin_ = os.path.join(usr, "bin")
            path = os.path.join(top, "notify")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            sock.settimeout(10)
            env = dict(os.environ, NOTIFY_SOCKET=path)
            ndir = os.path.join(top, "notified")
            os.mkdir(ndir)
            try:
                for args in (
                        [os.path.join(bin_, "funneld"), "--data", "data",
                         "--ingest", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
                         "--query", "tcp://127.0.0.1:*"],
                        [os.path.join(bin_, "funnel-metrics"), "--view", "metrics",
                         "--http", "127.0.0.1:0", "--ingest", daemon.eps["ingest"],
                         "--publish", daemon.eps["publish"], "--query", daemon.eps["query"]],
                        [os.path.join(bin_, "funnel-gateway"), "--rules",
                         os.path.join(REPO, "funnel.yaml"), "--lead-key", "gateway.key",
                         "--http", "127.0.0.1:0", "--ingest", daemon.eps["ingest"],
                         "--query", daemon.eps["query"]],
                        # ready while it waits for a NATS server that is not there
                        [os.path.join(bin_, "funnel-mirror"), "--http", "off",
                         "--nats", "nats://127.0.0.1:%d" % free_port(),
                         "--publish", daemon.eps["publish"], "--query", daemon.eps["query"]]):
                    name = os.path.basename(args[0])
                    proc = subprocess.Popen(args, cwd=ndir, env=env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                    try:
                        msg = sock.recv(4096).decode()
                        expect_in("READY=1", msg, "%s's first notification" % name)
                        proc.terminate()
                        msg = sock.recv(4096).decode()
                        expect_in("STOPPING=1", msg, "%s's notification on SIGTERM" % name)
                        expect_eq(proc.wait(timeout=10), 0, "%s exit status" % name)
                    finally:
                        if proc.poll() is None:
                            proc.kill()
                            proc.wait(timeout=10)
            finally:
                sock.close()
        res.run("funneld, a service and the gateway tell systemd READY=1 once serving,"
                " STOPPING=1 on SIGTERM", notify)

        def units_verify():
            if shutil.which("systemd-analyze") is None:
                raise RuntimeError("systemd-analyze is missing (Debian package systemd)")
            # installed under a real prefix, so ExecStart= names files that exist
            prefix = os.path.join(top, "prefix")
            make_install(None, prefix)
            unitdir = os.path.join(prefix, "lib", "systemd", "system")
            units = [os.path.join(unitdir, u) for u in UNITS]
            p = run(["systemd-analyze", "verify"] + units)
            expect_eq((p.returncode, p.stderr.strip()), (0, ""), "systemd-analyze verify")
            for u in units:
                with open(u) as f:
                    text = f.read()
                for want in ("Type=notify", "Restart=on-failure", "User=funnel",
                             "ProtectSystem=strict", "NoNewPrivileges=yes"):
                    expect_in(want, text, os.path.basename(u))
                # the mirror keeps nothing (its checkpoint is the stream)
                if "mirror" not in os.path.basename(u):
                    expect_in("StateDirectory=funnel", text, os.path.basename(u))
                else:
                    expect("StateDirectory" not in text and "ReadWritePaths" not in text,
                           "funnel-mirror.service writes nowhere")
                if "funneld" not in os.path.basename(u):
                    expect_in("After=funneld.service", text, os.path.basename(u))
                    expect_in("Wants=funneld.service", text, os.path.basename(u))
            broken = os.path.join(top, "funneld.service")
            with open(units[0]) as f, open(broken, "w") as g:
                g.write(f.read().replace("Type=notify", "Type=notified"))
            p = run(["systemd-analyze", "verify", broken])
            expect(p.returncode != 0 or "service type" in p.stderr,
                   "a unit with a bad Type= is reported: %r" % p.stderr)
        res.run("systemd-analyze verify passes the installed units", units_verify)

        def sysusers():
            if shutil.which("systemd-sysusers") is None:
                raise RuntimeError("systemd-sysusers is missing (Debian package systemd)")
            root = os.path.join(top, "root")
            os.makedirs(os.path.join(root, "etc"))
            ok(["systemd-sysusers", "--root=" + root,
                os.path.join(usr, "lib", "sysusers.d", "funnel.conf")], "systemd-sysusers")
            with open(os.path.join(root, "etc", "passwd")) as f:
                users = [line.split(":") for line in f]
            funnel = [u for u in users if u[0] == "funnel"]
            expect_eq(len(funnel), 1, "one funnel user")
            expect_eq(funnel[0][5], "/var/lib/funnel", "its home")
        res.run("the installed sysusers.d file creates the funnel user", sysusers)
    finally:
        if daemon is not None:
            daemon.close()
        shutil.rmtree(top, ignore_errors=True)
    return res.summary()


if __name__ == "__main__":
    sys.exit(main())
