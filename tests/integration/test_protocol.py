#!/usr/bin/python3
"""
tests/integration/test_protocol.py - wire-protocol conformance of funneld.

Written from proto/PROTOCOL.md alone: it talks to a real funneld over
ZeroMQ with msgpack, as a client in another language would, and checks
the rules that document states (acks, duplicates, error codes, atomicity,
record layout and hash chain, replay paging and filters, status and lead
queries, the publish feed and its heartbeats).

Run with Debian's /usr/bin/python3 (python3-zmq, python3-msgpack):

    FUNNELD=build/bin/funneld /usr/bin/python3 tests/integration/test_protocol.py

FUNNELD defaults to build/bin/funneld under the repository root.  Prints
one line per check, "ok - name" or "not ok - name: reason", then
"N passed, M failed"; exits 1 if any check failed.
"""
import ctypes
import ctypes.util
import hashlib
import os
import shutil
import signal
import sys
import tempfile
import time

import msgpack
import zmq

from funnel_testlib import (REPO, CheckFailed, Results, connect, expect, expect_eq,
                            replay_all, start_daemon)

# PROTOCOL.md "Records": key order, optional keys left out.
RECORD_KEYS = ["seq", "ts", "type", "lead", "id", "occurred_at", "cause", "producer",
               "stage", "version", "data", "prev", "hash"]
ZERO_HASH = bytes(32)

# PROTOCOL.md "Error codes".
CODES = {
    "EMALFORMED": 1, "EMISSING": 2, "ETYPE": 3, "EVALUE": 4, "ETOOBIG": 5,
    "EUNKNOWN_TYPE": 6, "ENOLEAD": 7, "ETRANSITION": 8, "EVERSION": 9, "EOP": 10,
    "ESTORAGE": 11, "ESHUTDOWN": 12, "ENOTFOUND": 13, "EINTERNAL": 14,
    "EIDCONFLICT": 15, "EFORBIDDEN": 16,
}


class Client:
    """DEALER sockets on ingest and query, a SUB on publish."""

    def __init__(self, ctx, eps):
        self.ctx = ctx
        self.eps = eps
        self.rid = 0
        self.ingest = connect(ctx, zmq.DEALER, eps["ingest"])
        self.query = connect(ctx, zmq.DEALER, eps["query"])
        self.sub = connect(ctx, zmq.SUB, eps["publish"])
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.feed = {}          # seq -> record bytes seen on the publish socket
        self.heartbeats = []    # decoded heartbeat maps

    def next_rid(self):
        self.rid += 1
        return self.rid

    def call(self, sock, req=None, raw=None):
        """One request frame, one reply frame.  A map request gets a fresh
        rid and the reply must echo it."""
        if raw is None:
            req = dict(req)
            req.setdefault("rid", self.next_rid())
            raw = msgpack.packb(req)
        sock.send(raw)
        frames = sock.recv_multipart()
        expect_eq(len(frames), 1, "frames in the reply")
        rep = msgpack.unpackb(frames[0])
        expect(isinstance(rep, dict), "reply is not a map")
        expect(isinstance(rep.get("ok"), bool), "reply has no boolean 'ok'")
        if req is not None and "rid" in req and isinstance(req["rid"], int) and req["rid"] >= 0:
            expect_eq(rep.get("rid"), req["rid"], "echoed rid")
        return rep

    def publish(self, events, **extra):
        req = {"op": "publish", "events": events}
        req.update(extra)
        return self.call(self.ingest, req)

    def publish_ok(self, events):
        rep = self.publish(events)
        expect(rep["ok"], "publish refused: %r" % (rep,))
        return rep

    def status(self):
        rep = self.call(self.query, {"op": "status"})
        expect(rep["ok"], "status refused: %r" % (rep,))
        return rep

    def lead(self, lead):
        return self.call(self.query, {"op": "lead", "lead": lead})

    def replay(self, **params):
        req = {"op": "replay"}
        req.update(params)
        rep = self.call(self.query, req)
        expect(rep["ok"], "replay refused: %r" % (rep,))
        for k in ("head", "next", "end", "events"):
            expect(k in rep, "replay reply has no '%s'" % k)
        return rep

    def replay_all(self, **params):
        """Every record of a range, following next until end."""
        return replay_all(self.replay, **params)

    def pump_feed(self, until_head=None, wait_s=5.0):
        """Read the publish socket; with until_head, until a heartbeat
        carrying at least that head has arrived (every record up to it was
        published before it)."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not self.sub.poll(50):
                if until_head is None:
                    return
                continue
            m = self.sub.recv()
            if m[1:5] == b"\xa3seq":
                self.feed[int.from_bytes(m[6:14], "big")] = m
            else:
                hb = msgpack.unpackb(m)
                self.heartbeats.append(hb)
                if until_head is not None and hb.get("heartbeat", -1) >= until_head:
                    return
        if until_head is not None:
            raise CheckFailed("no heartbeat with head >= %d within %.0f s" % (until_head, wait_s))


def head_of(c):
    st = c.status()
    return st["head"], st["head_hash"]


def expect_error(c, sock, req, name, field=None, index=None, raw=None):
    """The request is refused with error `name` and the log is unchanged."""
    before = head_of(c)
    rep = c.call(sock, req, raw=raw)
    expect(rep["ok"] is False, "accepted, want %s: %r" % (name, rep))
    expect_eq(rep.get("error"), name, "error name (message: %r)" % rep.get("message"))
    expect_eq(rep.get("code"), CODES[name], "error code")
    expect(isinstance(rep.get("message"), str) and rep["message"], "no message")
    expect(isinstance(rep.get("field"), str), "no field")
    if field is not None:
        expect_eq(rep["field"], field, "error field")
    if index is not None:
        expect_eq(rep.get("index"), index, "error index")
    expect_eq(head_of(c), before, "head and head_hash after the refused request")
    return rep


def key_order_ok(keys):
    pos = [RECORD_KEYS.index(k) if k in RECORD_KEYS else -1 for k in keys]
    return -1 not in pos and pos == sorted(pos)


def check_record_layout(rec):
    """PROTOCOL.md "Records": fixed prefix, fixed tail, key order, hash."""
    r = msgpack.unpackb(rec)
    expect(0x85 <= rec[0] <= 0x8d, "first byte %02x is not a fixmap of 5..13 keys" % rec[0])
    expect_eq(rec[1:5], b"\xa3seq", "bytes 1..4")
    expect_eq(rec[5], 0xcf, "byte 5")
    expect_eq(rec[14:17], b"\xa2ts", "bytes 14..16")
    expect_eq(rec[17], 0xcf, "byte 17")
    expect_eq(int.from_bytes(rec[6:14], "big"), r["seq"], "seq at offset 6")
    expect_eq(int.from_bytes(rec[18:26], "big"), r["ts"], "ts at offset 18")
    expect_eq(rec[26:31], b"\xa4type", "bytes 26..30")
    expect_eq(rec[-78:-71], b"\xa4prev\xc4\x20", "prev header at L-78")
    expect_eq(rec[-39:-32], b"\xa4hash\xc4\x20", "hash header at L-39")
    expect_eq(rec[-71:-39], r["prev"], "prev at L-71")
    expect_eq(rec[-32:], r["hash"], "hash at L-32")
    expect(key_order_ok(list(r.keys())), "key order %r" % list(r.keys()))
    expect(("lead" in r) == ("stage" in r) == ("version" in r),
           "stage/version present without lead or missing with it: %r" % list(r.keys()))
    expect(len(rec) <= 65536, "record over 64 KiB")
    expect_eq(hashlib.blake2b(rec[:-32], digest_size=32).digest(), rec[-32:],
              "BLAKE2b-256 of the record without its last 32 bytes")
    return r


def curve_checks(res, binary, ctx):
    """PROTOCOL.md "Identity and access": a funneld with an access file
    and its key; the keys are made here (pyzmq), the file written here."""
    srv_pub, srv_sec = zmq.curve_keypair()
    pub, sec = zmq.curve_keypair()
    d = tempfile.mkdtemp(prefix="funnel-proto-curve-")
    daemon = None
    socks = []
    try:
        with open(os.path.join(d, "funneld.key"), "wb") as f:
            f.write(srv_sec + b"\n")
        with open(os.path.join(d, "access.yaml"), "w") as f:
            f.write("principals:\n  - name: crm-sync\n    key: \"%s\"\n"
                    "    publish: [\"lead.*\"]\n    read: true\n" % pub.decode())
        daemon = start_daemon(res, binary, prefix="funnel-proto-curve-", extra_args=[
            "--access", os.path.join(d, "access.yaml"), "--key", os.path.join(d, "funneld.key")])
        if daemon is None:
            return

        def curve(kind, ep):
            s = ctx.socket(kind)
            s.curve_secretkey, s.curve_publickey, s.curve_serverkey = sec, pub, srv_pub
            for o, v in ((zmq.RCVTIMEO, 5000), (zmq.SNDTIMEO, 5000), (zmq.LINGER, 0)):
                s.setsockopt(o, v)
            if kind == zmq.SUB:
                s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(ep)
            socks.append(s)
            return s
        c = Client.__new__(Client)
        c.rid = 0
        c.ingest = curve(zmq.DEALER, daemon.endpoints["ingest"])
        c.query = curve(zmq.DEALER, daemon.endpoints["query"])
        sub = curve(zmq.SUB, daemon.endpoints["publish"])

        def stamped():
            rep = c.call(c.ingest, {"op": "publish", "events": [
                {"type": "lead.captured", "lead": "C1", "id": "c1"}]})
            expect(rep["ok"] is True, "publish over CURVE: %r" % (rep,))
            rec = c.call(c.query, {"op": "replay", "from": 1})["events"][0]
            r = check_record_layout(rec)
            expect_eq(r.get("producer"), "crm-sync", "the stamped producer")
            for _ in range(50):   # heartbeats first, then the record, the same bytes
                m = sub.recv()
                if m[1:5] == b"\xa3seq":
                    expect_eq(m, rec, "the record on the publish socket")
                    break
        res.run("over CURVE, records carry the principal's name as producer (hashed)", stamped)
        res.run("over CURVE, a type outside the grants is EFORBIDDEN", expect_error, c, c.ingest,
                {"op": "publish", "events": [{"type": "x.other"}]}, "EFORBIDDEN", "type", 0)
        res.run("over CURVE, a producer in the envelope is EFORBIDDEN", expect_error, c, c.ingest,
                {"op": "publish", "events": [{"type": "lead.captured", "lead": "C2",
                                              "producer": "crm-sync"}]},
                "EFORBIDDEN", "producer", 0)
    finally:
        for s in socks:
            s.close(0)
        if daemon is not None:
            daemon.close()
        shutil.rmtree(d, ignore_errors=True)


def main():
    binary = os.environ.get("FUNNELD") or os.path.join(REPO, "build", "bin", "funneld")
    res = Results()
    ctx = zmq.Context()
    daemon = None
    c = None
    try:
        daemon = start_daemon(res, binary, report_ok=True, prefix="funnel-proto-")
        if daemon is None:
            return res
        c = Client(ctx, daemon.endpoints)
        run_checks(res, c, daemon)
        curve_checks(res, binary, ctx)
    finally:
        if c is not None:
            for s in (c.ingest, c.query, c.sub):
                s.close(0)
        if daemon is not None:
            daemon.close()
    try:
        run_sealed(res, ctx, binary)
    finally:
        ctx.term()
    return res


# --- PROTOCOL.md section 21: sealed personal values ---

SEAL_EXT = 16
ERASED = "[erased]"
_sodium = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")


def xchacha_open(key, nonce, ciphertext, ad):
    """crypto_aead_xchacha20poly1305_ietf_decrypt: the clear bytes, or None."""
    out = ctypes.create_string_buffer(max(1, len(ciphertext)))
    outlen = ctypes.c_ulonglong(0)
    rc = _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        out, ctypes.byref(outlen), None, ciphertext, ctypes.c_ulonglong(len(ciphertext)),
        ad, ctypes.c_ulonglong(len(ad)), nonce, key)
    return out.raw[:outlen.value] if rc == 0 else None


def open_sealed(value, key, lead, path):
    """A sealed value's clear value per section 21, or ERASED."""
    p = value.data
    expect(len(p) >= 1 + 24 + 16 and p[0] == 1, "sealed payload: version 1, nonce, tag")
    if key is None:
        return ERASED
    clear = xchacha_open(key, p[1:25], p[25:], lead.encode() + b"\0" + path.encode())
    return ERASED if clear is None else msgpack.unpackb(clear, raw=False)


def open_data(data, key, lead, prefix=""):
    """data with every sealed value opened (or ERASED), walking nested maps."""
    out = {}
    for k, v in data.items():
        path = prefix + k
        if isinstance(v, msgpack.ExtType) and v.code == SEAL_EXT:
            out[k] = open_sealed(v, key, lead, path)
        elif isinstance(v, dict):
            out[k] = open_data(v, key, lead, path + ".")
        else:
            out[k] = v
    return out


def scan_dir(path, needle):
    """Files under path holding the bytes needle."""
    hits = []
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                if needle in f.read():
                    hits.append(name)
    return hits


def run_sealed(res, ctx, binary):
    keydir = tempfile.mkdtemp(prefix="funnel-proto-mk-")
    daemon = c = None
    try:
        mk = os.path.join(keydir, "master.key")
        with open(mk, "wb") as f:
            f.write(os.urandom(32))
        daemon = start_daemon(res, binary, prefix="funnel-proto-sealed-",
                              extra_args=["--master-key", mk,
                                          "--personal-fields", "email,name,contact.phone"])
        if daemon is None:
            return
        c = Client(ctx, daemon.endpoints)
        run_sealed_checks(res, c, daemon)
    finally:
        if c is not None:
            for s in (c.ingest, c.query, c.sub):
                s.close(0)
        if daemon is not None:
            daemon.close()
        shutil.rmtree(keydir, ignore_errors=True)


def run_sealed_checks(res, c, daemon):
    form = {"email": "Ada.Proto@Example.ORG", "name": "Ada Proto", "source": "ads",
            "contact": {"phone": "+44 20 7946 0000", "city": "London"}}
    st = {}

    def key_of(lead):
        rep = c.call(c.query, {"op": "key", "lead": lead})
        expect(rep["ok"], "key refused: %r" % (rep,))
        expect_eq(rep["lead"], lead, "key reply lead")
        k = rep["key"]
        expect(k is None or (isinstance(k, bytes) and len(k) == 32), "key: 32 bytes or nil")
        return k

    def sealed_layout():
        c.publish_ok([{"type": "lead.captured", "lead": "P1", "data": form},
                      {"type": "lead.captured", "lead": "P2", "data": {"email": "x@y.com"}}])
        recs = [msgpack.unpackb(r, raw=False) for r in c.replay_all()]
        d = recs[0]["data"]
        for k in ("email", "name"):
            expect(isinstance(d[k], msgpack.ExtType) and d[k].code == SEAL_EXT,
                   "data.%s is an ext of type 16: %r" % (k, d[k]))
        expect(isinstance(d["contact"]["phone"], msgpack.ExtType), "data.contact.phone sealed")
        expect_eq((d["source"], d["contact"]["city"]), ("ads", "London"), "clear fields")
        expect_eq(list(d), ["email", "name", "source", "contact", "email_domain"], "key order")
        expect_eq(d["email_domain"], "example.org", "email_domain, lower-cased, in clear")
        expect_eq(scan_dir(daemon.data, b"Ada.Proto"), [], "files holding the email")
        expect_eq(scan_dir(daemon.data, b"7946"), [], "files holding the phone")
    res.run("sealed values: ext 16 at personal paths, email_domain in clear, nothing in clear "
            "on disk", sealed_layout)

    def opens_with_key():
        k = key_of("P1")
        expect(k is not None, "P1 has a key")
        st["key"] = k
        d = msgpack.unpackb(c.replay_all()[0], raw=False)["data"]
        got = open_data(d, k, "P1")
        want = dict(form, email_domain="example.org")
        expect_eq(got, want, "data opened per section 21")
        # the associated data binds lead and path: another lead's key, or
        # a value moved to another path, does not open
        expect_eq(open_sealed(d["email"], key_of("P2"), "P1", "email"), ERASED, "P2's key")
        expect_eq(open_sealed(d["email"], k, "P1", "name"), ERASED, "moved to name")
        expect_eq(open_sealed(d["email"], k, "P2", "email"), ERASED, "moved to P2")
        expect_eq(key_of("nobody"), None, "a lead with no key")
    res.run("key op: the data key opens the values; AD binds lead and path", opens_with_key)

    def producer_ext_refused():
        rep = c.publish([{"type": "lead.captured", "lead": "P3",
                          "data": {"note": msgpack.ExtType(SEAL_EXT, b"x" * 41)}}])
        expect(not rep["ok"], "accepted a producer's ext 16")
        expect_eq((rep["error"], rep["field"]), ("EVALUE", "data"), "error")
    res.run("an ext of type 16 from a producer: EVALUE on data", producer_ext_refused)

    def refused_requests_keep_keys():
        # a refused request leaves no key behind, and an erasure in it
        # destroys none (the writer redoes the group; the key file follows)
        k2 = key_of("P2")
        for evs in ([{"type": "lead.captured", "lead": "P4", "data": {"email": "p4@q.com"}},
                     {"type": "deal.won", "lead": "P4", "data": {"amount": 1}}],
                    [{"type": "lead.erased", "lead": "P2"},
                     {"type": "deal.won", "lead": "P2", "data": {"amount": 1}}]):
            rep = c.publish(evs)
            expect(not rep["ok"] and rep["index"] == 1, "refused at index 1: %r" % (rep,))
        expect_eq(key_of("P4"), None, "a key for the refused capture")
        expect_eq(key_of("P2"), k2, "P2's key after a refused erasure")
        # the same in one group with other requests: pipelined on the socket
        for i in range(20):
            c.ingest.send(msgpack.packb({"op": "publish", "rid": 9000 + i, "events": [
                {"type": "lead.captured", "lead": "G%d" % i, "data": {"email": "g@g.com"}},
                {"type": "deal.won" if i % 2 else "lead.activity", "lead": "G%d" % i,
                 "data": {"amount": 1} if i % 2 else {"kind": "x"}}]}))
        for _ in range(20):
            msgpack.unpackb(c.ingest.recv())
        for i in range(20):
            expect_eq(key_of("G%d" % i) is None, bool(i % 2), "G%d key" % i)
    res.run("a refused request creates no key and destroys none", refused_requests_keep_keys)

    def ack1(rep):
        return {"seq": rep["seqs"][0], "dup": rep["dup"][0]}

    def sealed_duplicates():
        cap = {"type": "lead.captured", "lead": "P5", "id": "form-p5",
               "data": {"email": "p5@dup.example", "name": "Pat Five", "source": "web"}}
        first = ack1(c.publish_ok([cap]))
        again = ack1(c.publish_ok([cap]))
        expect_eq((again["seq"], again["dup"]), (first["seq"], True), "a retry of a sealed capture")
        other = dict(cap, data=dict(cap["data"], email="someone@else.example"))
        rep = c.publish([other])
        expect_eq((rep["ok"], rep.get("error"), rep.get("field")), (False, "EIDCONFLICT", "id"),
                  "the same id with another email")
        c.publish_ok([{"type": "lead.erased", "lead": "P5", "data": {"reason": "r"}}])
        late = ack1(c.publish_ok([cap]))
        expect_eq((late["seq"], late["dup"]), (first["seq"], True),
                  "a retry after the erasure (its personal values cannot be compared)")
        rep = c.publish([dict(cap, type="lead.activity", data={"kind": "x"})])
        expect_eq(rep.get("error"), "EIDCONFLICT", "after the erasure, another type still conflicts")
    res.run("ids of sealed events: a retry is a duplicate, other values EIDCONFLICT, after the "
            "erasure the rest must match", sealed_duplicates)

    def erased_reads_erased():
        before = c.replay_all()
        c.publish_ok([{"type": "lead.erased", "lead": "P1", "data": {"reason": "request 42"}}])
        expect_eq(key_of("P1"), None, "P1's key after lead.erased")
        after = c.replay_all()
        expect_eq(after[:len(before)], before, "the records before the erasure, byte for byte")
        d = msgpack.unpackb(after[0], raw=False)["data"]
        got = open_data(d, key_of("P1"), "P1")
        expect_eq((got["email"], got["name"], got["contact"]["phone"]), (ERASED,) * 3, "erased")
        expect_eq((got["source"], got["email_domain"]), ("ads", "example.org"), "clear stays")
        expect_eq(scan_dir(daemon.data, st["key"]), [], "files holding P1's old key")
        prev = ZERO_HASH
        for rec in after:
            r = msgpack.unpackb(rec, raw=False)
            expect_eq(r["prev"], prev, "chain at seq %d" % r["seq"])
            expect_eq(hashlib.blake2b(rec[:-32], digest_size=32).digest(), rec[-32:],
                      "hash of seq %d" % r["seq"])
            prev = rec[-32:]
    res.run("lead.erased: key gone (nil), values read as \"[erased]\", chain intact, key not on disk",
            erased_reads_erased)

    def recapture_fresh_key():
        c.publish_ok([{"type": "lead.captured", "lead": "P1", "data": {"email": "new@z.net"}}])
        k = key_of("P1")
        expect(k is not None and k != st["key"], "a fresh key")
        recs = [msgpack.unpackb(r, raw=False) for r in c.replay_all(lead="P1")]
        expect_eq(open_data(recs[-1]["data"], k, "P1")["email"], "new@z.net", "new capture")
        expect_eq(open_data(recs[0]["data"], k, "P1")["email"], ERASED, "old capture")
    res.run("a capture after lead.erased: fresh key, the old values stay erased",
            recapture_fresh_key)


def run_checks(res, c, daemon):
    ZI = c.ingest
    ZQ = c.query

    # --- the publish feed: subscribe first, then wait for a heartbeat ---
    def first_heartbeat():
        c.pump_feed(until_head=0, wait_s=5.0)
        hb = c.heartbeats[-1]
        expect_eq(sorted(hb.keys()), ["heartbeat", "ts"], "heartbeat keys")
        expect(isinstance(hb["heartbeat"], int) and hb["heartbeat"] >= 0, "heartbeat head")
        expect(hb["ts"] > 1500000000 * 10**9, "heartbeat ts is not ns since the epoch")
    res.run("a heartbeat {heartbeat, ts} arrives on the publish socket", first_heartbeat)

    def empty_status():
        st = c.status()
        expect_eq(st["head"], 0, "head")
        expect_eq(st["count"], 0, "count")
        expect_eq(st["head_hash"], ZERO_HASH, "head_hash")
        expect_eq(st["durable"], True, "durable")
        for k in ("ingest", "publish", "query"):
            expect_eq(st[k], daemon.endpoints[k], "status %s endpoint" % k)
        rep = c.replay()
        expect_eq((rep["events"], rep["end"], rep["head"]), ([], True, 0), "replay of an empty log")
    res.run("status and replay of an empty log", empty_status)

    # --- publish and ack ---
    def publish_ack():
        rep = c.publish_ok([{"type": "lead.captured", "lead": "L1", "id": "cap-L1",
                             "occurred_at": 1700000000123456789,
                             "data": {"email": "a@example.com"}}])
        expect_eq(rep["seqs"], [1], "seqs")
        expect_eq(rep["dup"], [False], "dup")
        expect_eq(c.status()["head"], 1, "head after the ack")
    res.run("publish is acknowledged with seqs and dup", publish_ack)

    def duplicate():
        before = head_of(c)
        # the same event again (§6): expected_version, a condition and not
        # content, is not compared (stale here)
        rep = c.publish_ok([{"type": "lead.captured", "lead": "L1", "id": "cap-L1",
                             "occurred_at": 1700000000123456789, "expected_version": 0,
                             "data": {"email": "a@example.com"}}])
        expect_eq(rep["seqs"], [1], "seq of the duplicate")
        expect_eq(rep["dup"], [True], "dup flag")
        expect_eq(head_of(c), before, "head after a duplicate")
        # occurred_at is not content either (§6): another time, or none, is
        # the same event sent again, and the stored record keeps the first
        for what, at in (("another occurred_at", 1), ("occurred_at left out", None)):
            ev = {"type": "lead.captured", "lead": "L1", "id": "cap-L1",
                  "data": {"email": "a@example.com"}}
            if at is not None:
                ev["occurred_at"] = at
            rep = c.publish_ok([ev])
            expect_eq((rep["seqs"], rep["dup"]), ([1], [True]), "a duplicate (%s)" % what)
        expect_eq(head_of(c), before, "head after the duplicates")
    res.run("a duplicate id returns the original seq with dup true and stores nothing", duplicate)

    def id_conflict():
        # the same id for another event: EIDCONFLICT, field id, seq of the original
        variants = [
            ("lead", {"lead": "L123"}),
            ("type", {"type": "x.form"}),
            ("cause", {"cause": 1}),
            ("data", {"data": {"email": "b@example.com"}}),
            ("data (left out)", {"data": None}),
        ]
        for what, change in variants:
            ev = {"type": "lead.captured", "lead": "L1", "id": "cap-L1",
                  "occurred_at": 1700000000123456789, "data": {"email": "a@example.com"}}
            ev.update(change)
            ev = {k: v for k, v in ev.items() if v is not None}
            rep = expect_error(c, c.ingest, {"op": "publish", "events": [ev]}, "EIDCONFLICT",
                               field="id", index=0)
            expect_eq(rep.get("seq"), 1, "seq of the event holding the id (%s)" % what)
        # in a request: the whole request is refused, its other events not stored
        rep = expect_error(c, c.ingest, {"op": "publish", "events": [
            {"type": "lead.captured", "lead": "L9", "id": "cap-L9"},
            {"type": "lead.captured", "lead": "L123", "id": "cap-L1"}]},
            "EIDCONFLICT", field="id", index=1)
        expect_eq(rep.get("seq"), 1, "seq in a refused request")
        # other errors carry no seq
        rep = expect_error(c, c.ingest, {"op": "publish", "events": [{"type": "deal.won",
                                                                      "lead": "L1"}]},
                           "ETRANSITION")
        expect("seq" not in rep, "seq in a non-EIDCONFLICT error: %r" % rep)
    res.run("an id reused for another event is EIDCONFLICT with the original seq; the request "
            "is refused whole", id_conflict)

    def duplicate_in_request():
        h = c.status()["head"]
        rep = c.publish_ok([{"type": "x.note", "id": "twice"}, {"type": "x.note", "id": "twice"}])
        expect_eq(rep["seqs"], [h + 1, h + 1], "seqs")
        expect_eq(rep["dup"], [False, True], "dup")
        expect_eq(c.status()["head"], h + 1, "head")
    res.run("a duplicate inside one request is a duplicate of the earlier event",
            duplicate_in_request)

    # --- error codes; each leaves the log unchanged ---
    def pub(events):
        return {"op": "publish", "events": events}

    errors = [
        ("EMALFORMED: not msgpack", ZI, None, "EMALFORMED", "", None, b"\xc1"),
        ("EMALFORMED: not a map", ZI, None, "EMALFORMED", "", None, msgpack.packb([1, 2])),
        ("EMALFORMED: trailing bytes", ZI, None, "EMALFORMED", "", None,
         msgpack.packb(pub([{"type": "x.a"}])) + b"\x00"),
        ("EMALFORMED: an event that is not a map", ZI, pub([5]), "EMALFORMED", None, 0, None),
        ("EMISSING: no op", ZQ, {"lead": "L1"}, "EMISSING", "op", None, None),
        ("EMISSING: publish without events", ZI, {"op": "publish"}, "EMISSING", "events", None, None),
        ("EMISSING: event without type", ZI, pub([{"lead": "L1"}]), "EMISSING", "type", 0, None),
        ("EMISSING: type needs lead", ZI, pub([{"type": "lead.scored"}]), "EMISSING", "lead", 0, None),
        ("EMISSING: lead.assigned needs data.owner", ZI,
         pub([{"type": "lead.assigned", "lead": "L1", "data": {}}]), "EMISSING", "data.owner", 0, None),
        ("EMISSING: lead op without lead", ZQ, {"op": "lead"}, "EMISSING", "lead", None, None),
        ("ETYPE: lead not a str", ZI, pub([{"type": "x.a", "lead": 5}]), "ETYPE", "lead", 0, None),
        ("ETYPE: data not a map", ZI, pub([{"type": "x.a", "data": [1]}]), "ETYPE", "data", 0, None),
        ("ETYPE: data keys not str", ZI, pub([{"type": "x.a", "data": {1: 2}}]), "ETYPE", "data", 0, None),
        ("ETYPE: events not an array", ZI, {"op": "publish", "events": {}}, "ETYPE", "events", None, None),
        ("ETYPE: amount not a number", ZI,
         pub([{"type": "opportunity.opened", "lead": "L1", "data": {"amount": "10"}}]),
         "ETYPE", "data.amount", 0, None),
        ("ETYPE: replay from not a uint", ZQ, {"op": "replay", "from": -1}, "ETYPE", "from", None, None),
        ("EVALUE: unknown envelope field", ZI, pub([{"type": "x.a", "colour": "red"}]), "EVALUE", "", 0, None),
        ("EVALUE: control character in lead", ZI, pub([{"type": "x.a", "lead": "a\nb"}]),
         "EVALUE", "lead", 0, None),
        ("EVALUE: empty id", ZI, pub([{"type": "x.a", "id": ""}]), "EVALUE", "id", 0, None),
        ("EVALUE: expected_version without lead", ZI, pub([{"type": "x.a", "expected_version": 0}]),
         "EVALUE", "expected_version", 0, None),
        ("EVALUE: cause 0", ZI, pub([{"type": "x.a", "cause": 0}]), "EVALUE", "cause", 0, None),
        ("EVALUE: negative amount", ZI,
         pub([{"type": "deal.won", "lead": "L1", "data": {"amount": -5}}]), "EVALUE", "data.amount", 0, None),
        ("EVALUE: empty events", ZI, pub([]), "EVALUE", "events", None, None),
        ("ETOOBIG: type over 64 bytes", ZI, pub([{"type": "x." + "t" * 63}]), "ETOOBIG", "type", 0, None),
        ("ETOOBIG: lead over 128 bytes", ZI, pub([{"type": "x.a", "lead": "l" * 129}]),
         "ETOOBIG", "lead", 0, None),
        ("ETOOBIG: record over 64 KiB", ZI, pub([{"type": "x.a", "data": {"blob": "b" * 70000}}]),
         "ETOOBIG", "data", 0, None),
        ("ETOOBIG: more than 10000 events", ZI, pub([{"type": "x.a"}] * 10001),
         "ETOOBIG", "events", None, None),
        ("EUNKNOWN_TYPE", ZI, pub([{"type": "lead.teleported", "lead": "L1"}]),
         "EUNKNOWN_TYPE", "type", 0, None),
        ("ENOLEAD: lead never captured", ZI, pub([{"type": "lead.scored", "lead": "nobody"}]),
         "ENOLEAD", "lead", 0, None),
        ("ETRANSITION: deal.won for an inquiry", ZI, pub([{"type": "deal.won", "lead": "L1"}]),
         "ETRANSITION", "type", 0, None),
        ("EVERSION: stale expected_version", ZI,
         pub([{"type": "lead.scored", "lead": "L1", "expected_version": 7}]),
         "EVERSION", "expected_version", 0, None),
        # a request's error is its first refused event's, whether the
        # reason needs the lead's state (the writer's) or not (the receiver's)
        ("ENOLEAD at event 0 before an unknown type at event 1", ZI,
         pub([{"type": "lead.scored", "lead": "nobody"}, {"type": "lead.teleported", "lead": "L1"}]),
         "ENOLEAD", "lead", 0, None),
        ("EUNKNOWN_TYPE at event 1 after a good event 0", ZI,
         pub([{"type": "x.a"}, {"type": "lead.teleported", "lead": "L1"}]),
         "EUNKNOWN_TYPE", "type", 1, None),
        ("EVERSION at event 1 before an unknown type at event 2", ZI,
         pub([{"type": "x.a"}, {"type": "lead.scored", "lead": "L1", "expected_version": 7},
              {"type": "lead.teleported", "lead": "L1"}]),
         "EVERSION", "expected_version", 1, None),
        ("EOP: unknown op", ZQ, {"op": "teleport"}, "EOP", "op", None, None),
        ("EOP: status on the ingest endpoint", ZI, {"op": "status"}, "EOP", "op", None, None),
        ("EOP: publish on the query endpoint", ZQ, pub([{"type": "x.a"}]), "EOP", "op", None, None),
        ("ENOTFOUND: lead no event named", ZQ, {"op": "lead", "lead": "nobody"},
         "ENOTFOUND", "lead", None, None),
    ]
    for name, sock, req, err, field, index, raw in errors:
        res.run("error %s, log unchanged" % name, expect_error, c, sock, req, err, field, index, raw)

    # --- text, repeated data keys, amounts, query leads (PROTOCOL.md §2, §12, §13) ---
    def spliced(req, *swaps):
        """The request packed by msgpack, then each ASCII placeholder replaced
        by raw bytes of the same length: the way to send what packb will not
        build (invalid UTF-8, a key given twice).  Returns (req, frame)."""
        req = dict(req, rid=c.next_rid())
        raw = msgpack.packb(req)
        for old, new in swaps:
            old = old.encode()
            if len(old) != len(new) or raw.count(old) != 1:
                raise ValueError("bad placeholder %r" % old)
            raw = raw.replace(old, new)
        return req, raw

    long_lead = "l" * 129
    strict_errors = [
        # name, socket, (request, frame), error, field, index, words the message must hold
        ("EVALUE: invalid UTF-8 in type (byte offset in the message)", ZI,
         spliced(pub([{"type": "x.abcdeQ"}]), ("x.abcdeQ", b"x.abcde\xff")),
         "EVALUE", "type", 0, ["type", "7"]),
        ("EVALUE: invalid UTF-8 in lead (a surrogate)", ZI,
         spliced(pub([{"type": "x.a", "lead": "L-QQQ"}]), ("L-QQQ", b"L-\xed\xa0\x80")),
         "EVALUE", "lead", 0, ["lead", "2"]),
        ("EVALUE: invalid UTF-8 in id (an overlong form)", ZI,
         spliced(pub([{"type": "x.a", "id": "idQQ"}]), ("idQQ", b"id\xc0\xaf")),
         "EVALUE", "id", 0, ["id", "2"]),
        ("EVALUE: invalid UTF-8 in a string nested in data", ZI,
         spliced(pub([{"type": "x.a", "data": {"outer": {"list": ["fine", "badQQ"]}}}]),
                 ("badQQ", b"bad\xc3\x28")),
         "EVALUE", "data", 0, []),
        ("EVALUE: invalid UTF-8 in a key nested in data", ZI,
         spliced(pub([{"type": "x.a", "data": {"outer": [{"keyQQ": 1}]}}]), ("keyQQ", b"key\xe2\x82")),
         "EVALUE", "data", 0, []),
        ("EVALUE: invalid UTF-8 in data of a type with required keys", ZI,
         spliced(pub([{"type": "lead.activity", "lead": "L1", "data": {"kind": "visit", "page": "QQ"}}]),
                 ("QQ", b"\x80\x80")),
         "EVALUE", "data", 0, []),
        ("EVALUE: a key given twice in data (the message names it)", ZI,
         spliced(pub([{"type": "x.a", "data": {"twinkey": 1, "twinkeZ": 2}}]), ("twinkeZ", b"twinkey")),
         "EVALUE", "data", 0, ["twinkey"]),
        ("EVALUE: NaN amount", ZI,
         (pub([{"type": "deal.won", "lead": "L1", "data": {"amount": float("nan")}}]), None),
         "EVALUE", "data.amount", 0, ["finite"]),
        ("EVALUE: infinite amount", ZI,
         (pub([{"type": "opportunity.opened", "lead": "L1", "data": {"amount": float("inf")}}]), None),
         "EVALUE", "data.amount", 0, ["finite"]),
        ("ETYPE: amount nil", ZI,
         (pub([{"type": "deal.won", "lead": "L1", "data": {"amount": None}}]), None),
         "ETYPE", "data.amount", 0, []),
        ("EVALUE: negative float amount", ZI,
         (pub([{"type": "deal.won", "lead": "L1", "data": {"amount": -0.5}}]), None),
         "EVALUE", "data.amount", 0, []),
        ("EVALUE: lead op with an empty lead", ZQ, ({"op": "lead", "lead": ""}, None),
         "EVALUE", "lead", None, []),
        ("ETOOBIG: lead op with a 129-byte lead", ZQ, ({"op": "lead", "lead": long_lead}, None),
         "ETOOBIG", "lead", None, []),
        ("EVALUE: replay filter with an empty lead", ZQ, ({"op": "replay", "lead": ""}, None),
         "EVALUE", "lead", None, []),
        ("ETOOBIG: replay filter with a 129-byte lead", ZQ, ({"op": "replay", "lead": long_lead}, None),
         "ETOOBIG", "lead", None, []),
    ]

    def strict_error(sock, req_raw, err, field, index, words):
        req, raw = req_raw
        rep = expect_error(c, sock, req, err, field, index, raw)
        for w in words:
            expect(w in rep["message"], "message %r does not mention %r" % (rep["message"], w))

    for name, sock, req_raw, err, field, index, words in strict_errors:
        res.run("error %s, log unchanged" % name, strict_error, sock, req_raw, err, field, index, words)

    def strict_text_accepted():
        rep = c.publish_ok([{"type": "x.text", "lead": "L-\u00e9\u4e2d\U0001f600", "id": "text-\u00fc",
                             "data": {"n\u00e4me": ["\u00e5", {"k": "\U0001f600"}, b"\xff\xfe"],
                                      "nul": "a\x00b"}}])
        r = msgpack.unpackb(c.replay(**{"from": rep["seqs"][0], "limit": 1})["events"][0])
        expect_eq((r["lead"], r["id"]), ("L-\u00e9\u4e2d\U0001f600", "text-\u00fc"), "lead and id")
        expect_eq(r["data"], {"n\u00e4me": ["\u00e5", {"k": "\U0001f600"}, b"\xff\xfe"], "nul": "a\x00b"},
                  "data (bin kept as bytes)")
    res.run("valid UTF-8 (any plane), bin and NUL in data are accepted", strict_text_accepted)

    def query_lead_128():
        lead128 = "m" * 128
        expect_error(c, ZQ, {"op": "lead", "lead": lead128}, "ENOTFOUND", "lead")
        rep = c.replay(lead=lead128)
        expect_eq((rep["events"], rep["end"]), ([], True), "replay of an unknown 128-byte lead")
    res.run("a 128-byte lead is accepted by the lead op and the replay filter", query_lead_128)

    def rid_unreadable():
        rep = c.call(ZQ, raw=msgpack.packb({"op": "status", "rid": "seven"}))
        expect_eq((rep["ok"], rep.get("error"), rep.get("field"), rep.get("rid")),
                  (False, "ETYPE", "rid", 0), "reply")
    res.run("a rid that is not a uint is ETYPE with rid 0", rid_unreadable)

    def rid0_in_place(sock, good):
        """An undecodable frame between two good requests: its rid-0 error
        comes back between their replies, so it answers the oldest request
        still outstanding."""
        before = head_of(c)
        rids = [c.next_rid(), c.next_rid()]
        sock.send(msgpack.packb(dict(good, rid=rids[0])))
        sock.send(b"\xc1")
        sock.send(msgpack.packb(dict(good, rid=rids[1])))
        reps = [msgpack.unpackb(sock.recv()) for _ in range(3)]
        expect_eq([r["rid"] for r in reps], [rids[0], 0, rids[1]], "rids in reply order")
        expect_eq([r["ok"] for r in reps], [True, False, True], "ok flags")
        expect_eq(reps[1].get("error"), "EMALFORMED", "error of the undecodable frame")
        if sock is ZQ:
            expect_eq(head_of(c), before, "head after queries")
    res.run("an undecodable query between two others is answered with rid 0 in its place",
            rid0_in_place, ZQ, {"op": "status"})
    res.run("an undecodable publish between two others is answered with rid 0 in its place",
            rid0_in_place, ZI, {"op": "publish", "events": [{"type": "x.order"}]})

    def transition_message():
        rep = c.publish([{"type": "lead.accepted", "lead": "L1"}])
        expect_eq(rep.get("error"), "ETRANSITION", "error")
        expect("inquiry" in rep["message"], "message does not name the stage: %r" % rep["message"])
    res.run("ETRANSITION names the lead's stage", transition_message)

    # --- atomicity ---
    def batch_all_or_nothing():
        before = head_of(c)
        rep = c.publish([{"type": "x.ok", "id": "batch-1"},
                         {"type": "lead.scored", "lead": "L1"},
                         {"type": "lead.scored", "lead": "nobody"},
                         {"type": "x.ok"}])
        expect_eq((rep["ok"], rep.get("error"), rep.get("index")), (False, "ENOLEAD", 2), "reply")
        expect_eq(head_of(c), before, "head after the refused batch")
        rep = c.publish_ok([{"type": "x.ok", "id": "batch-1"}])
        expect_eq(rep["dup"], [False], "the refused request's id was kept")
    res.run("a batch with one bad event stores none and keeps none of its ids",
            batch_all_or_nothing)

    # --- stages and versions ---
    def funnel_walk():
        steps = [
            ({"type": "lead.captured", "lead": "W1", "expected_version": 0}, "inquiry"),
            ({"type": "lead.qualified", "lead": "W1", "expected_version": 1, "cause": 1}, "mql"),
            ({"type": "lead.assigned", "lead": "W1", "data": {"owner": "rep-7"}}, "mql"),
            ({"type": "lead.accepted", "lead": "W1"}, "sal"),
            ({"type": "opportunity.opened", "lead": "W1", "data": {"amount": 1200}}, "sql"),
            ({"type": "deal.won", "lead": "W1", "data": {"amount": 1250.5}}, "won"),
            ({"type": "lead.captured", "lead": "W1"}, "won"),
        ]
        for i, (ev, stage) in enumerate(steps):
            rep = c.publish_ok([ev])
            r = msgpack.unpackb(c.replay(**{"from": rep["seqs"][0], "limit": 1})["events"][0])
            expect_eq((r["stage"], r["version"]), (stage, i + 1), "record of %s" % ev["type"])
        li = c.lead("W1")
        expect_eq((li["ok"], li["lead"], li["stage"], li["version"], li["owner"]),
                  (True, "W1", "won", 7, "rep-7"), "lead state")
        expect_eq(li["last_seq"], c.status()["head"], "last_seq")
    res.run("a lead walks the funnel; records carry stage and version after the event",
            funnel_walk)

    def custom_events_and_none():
        rep = c.publish_ok([{"type": "x.visit", "lead": "N1"}])
        li = c.lead("N1")
        expect_eq((li["stage"], li["version"], li["owner"], li["last_seq"]),
                  ("none", 1, None, rep["seqs"][0]), "lead state")
        expect_error(c, ZI, {"op": "publish", "events": [{"type": "lead.scored", "lead": "N1"}]},
                     "ENOLEAD", "lead", 0)
        expect_error(c, ZI, {"op": "publish", "events": [
            {"type": "lead.captured", "lead": "N1", "expected_version": 0}]},
                     "EVERSION", "expected_version", 0)
        c.publish_ok([{"type": "lead.captured", "lead": "N1", "expected_version": 1}])
        expect_eq(c.lead("N1")["stage"], "inquiry", "stage after capture")
    res.run("x.* events give a lead stage none and a version", custom_events_and_none)

    def refused_id_stays_free():
        # the writer claims an event's id before it checks the lead
        # (daemon/ingest.c): a refusal must take the claim back, so the id
        # is free for the event sent again, and the seq the claim named
        # goes to the next event stored, which the id must not name
        c.publish_ok([{"type": "lead.captured", "lead": "F1"}])
        cases = [
            ("EVERSION", "expected_version",
             {"type": "lead.scored", "lead": "F1", "expected_version": 5}),
            ("ENOLEAD", "lead", {"type": "lead.scored", "lead": "F-never"}),
            ("ETRANSITION", "type", {"type": "deal.won", "lead": "F1"}),
        ]
        for k, (code, field, ev) in enumerate(cases):
            ident = "free-%d" % k
            expect_error(c, ZI, {"op": "publish", "events": [dict(ev, id=ident)]}, code, field, 0)
            other = c.publish_ok([{"type": "x.between"}])["seqs"][0]
            good = {"type": "x.retry", "id": ident}
            rep = c.publish_ok([good])
            expect_eq(rep["dup"], [False], "%s: the id is stored with the event sent again" % code)
            expect(rep["seqs"][0] > other, "%s: a new seq" % code)
            again = c.publish_ok([good])
            expect_eq((again["seqs"], again["dup"]), (rep["seqs"], [True]),
                      "%s: the id names the event stored under it" % code)
        # The cases above cannot show a claim left behind: a group that
        # stores nothing, or a request's nested transaction, is aborted with
        # it.  Refused in a group whose other requests are stored, it would
        # be committed with them, naming one of their seqs.  funneld is
        # stopped while the requests queue, so its receiver drains them
        # into one group when it goes on.
        for k in range(10):
            ident = "free-pipe-%d" % k
            rids = [c.next_rid() for _ in range(31)]
            os.kill(daemon.proc.pid, signal.SIGSTOP)
            try:
                c.ingest.send(msgpack.packb({"op": "publish", "rid": rids[0], "events": [
                    {"type": "lead.scored", "lead": "F1", "expected_version": 99, "id": ident}]}))
                for rid in rids[1:]:
                    c.ingest.send(msgpack.packb({"op": "publish", "rid": rid,
                                                 "events": [{"type": "x.between"}]}))
                time.sleep(0.05)
            finally:
                os.kill(daemon.proc.pid, signal.SIGCONT)
            got = {}
            for _ in rids:
                rep = msgpack.unpackb(c.ingest.recv())
                got[rep.get("rid")] = rep
            expect_eq(got[rids[0]].get("error"), "EVERSION", "the pipelined refusal")
            expect(all(got[rid].get("ok") for rid in rids[1:]), "the pipelined others stored")
            rep = c.publish_ok([{"type": "x.retry", "id": ident}])
            expect_eq(rep["dup"], [False], "a pipelined refused id is free")
        # refused at its second event, after the first was applied: no id of
        # the request is kept
        expect_error(c, ZI, {"op": "publish", "events": [
            {"type": "lead.captured", "lead": "F2", "id": "free-a"},
            {"type": "lead.scored", "lead": "F2", "id": "free-b", "expected_version": 9}]},
            "EVERSION", "expected_version", 1)
        c.publish_ok([{"type": "x.between"}])
        rep = c.publish_ok([{"type": "x.retry", "id": "free-a"}, {"type": "x.retry", "id": "free-b"}])
        expect_eq(rep["dup"], [False, False], "both ids of the refused request are free")
    res.run("an id refused with its event stays free, and names no other event",
            refused_id_stays_free)

    def versions_in_one_request():
        c.publish_ok([{"type": "lead.captured", "lead": "V1"},
                      {"type": "lead.scored", "lead": "V1", "expected_version": 1},
                      {"type": "lead.scored", "lead": "V1", "expected_version": 2}])
        expect_eq(c.lead("V1")["version"], 3, "version")
    res.run("expected_version sees earlier events of the same request", versions_in_one_request)

    def same_ts_in_request():
        rep = c.publish_ok([{"type": "x.a"}, {"type": "x.b"}, {"type": "x.c"}])
        s = rep["seqs"]
        expect_eq(s, [s[0], s[0] + 1, s[0] + 2], "consecutive seqs")
        recs = c.replay(**{"from": s[0], "to": s[2]})["events"]
        expect_eq(len({msgpack.unpackb(r)["ts"] for r in recs}), 1, "distinct ts in one request")
    res.run("the events of one request get consecutive seqs and one ts", same_ts_in_request)

    # a few more records, one request each, so timestamps differ
    for i in range(6):
        c.publish_ok([{"type": "lead.activity" if i % 2 else "x.tick", "lead": "L1",
                       "data": {"kind": "page_view", "i": i}}])
        time.sleep(0.002)

    # --- records and the chain ---
    state = {}

    def records_and_chain():
        st = c.status()
        recs = c.replay_all()
        expect_eq(len(recs), st["head"], "records replayed")
        prev, last_ts = ZERO_HASH, 0
        for n, rec in enumerate(recs, start=1):
            r = check_record_layout(rec)
            expect_eq(r["seq"], n, "seq (gapless from 1)")
            expect_eq(r["prev"], prev, "prev of seq %d" % n)
            expect(r["ts"] >= last_ts, "ts decreased at seq %d" % n)
            prev, last_ts = rec[-32:], r["ts"]
        expect_eq(prev, st["head_hash"], "status head_hash")
        expect_eq(last_ts, st["head_ts"], "status head_ts")
        expect_eq(st["count"], st["head"], "status count")
        state["recs"] = recs
    res.run("records: fixed seq/ts offsets, key order, BLAKE2b-256 hash, prev chain",
            records_and_chain)

    def record_fields():
        r = msgpack.unpackb(state["recs"][0])
        expect_eq((r["type"], r["lead"], r["id"], r["occurred_at"], r["data"]),
                  ("lead.captured", "L1", "cap-L1", 1700000000123456789, {"email": "a@example.com"}),
                  "fields of seq 1")
        expect("producer" not in r, "producer written without authentication")
    res.run("a record keeps the envelope's fields", record_fields)

    # --- replay ---
    def paging():
        recs = state["recs"]
        head = len(recs)
        got, frm, pages = [], 1, 0
        while True:
            rep = c.replay(**{"from": frm, "limit": 3})
            pages += 1
            expect(len(rep["events"]) <= 3, "page over limit")
            seqs = [int.from_bytes(r[6:14], "big") for r in rep["events"]]
            expect_eq(seqs, list(range(frm, frm + len(seqs))), "consecutive seqs in a page")
            got.extend(rep["events"])
            if rep["end"]:
                expect_eq(rep["next"], head + 1, "next at the end")
                break
            expect_eq(len(rep["events"]), 3, "a page cut short without reaching the end")
            expect_eq(rep["next"], frm + 3, "next")
            frm = rep["next"]
        expect_eq(got, recs, "paged records")
        expect_eq(pages, -(-head // 3), "number of pages")
    res.run("replay pages with limit, next and end", paging)

    def max_bytes_page():
        rep = c.replay(**{"from": 1, "max_bytes": 1})
        expect_eq((len(rep["events"]), rep["next"], rep["end"]), (1, 2, False),
                  "a page always holds one record")
    res.run("replay max_bytes smaller than a record still returns one", max_bytes_page)

    def bounds():
        head = len(state["recs"])
        rep = c.replay(**{"from": 2, "to": 4})
        expect_eq(rep["events"], state["recs"][1:4], "from 2 to 4")
        expect_eq((rep["end"], rep["next"]), (True, 5), "end and next")
        rep = c.replay(**{"from": head + 5})
        expect_eq((rep["events"], rep["end"], rep["next"]), ([], True, head + 5), "past the head")
    res.run("replay from/to bounds and from past the head", bounds)

    def time_range():
        recs = state["recs"]
        ts = [msgpack.unpackb(r)["ts"] for r in recs]
        cut1, cut2 = ts[len(ts) // 3], ts[2 * len(ts) // 3]
        expect(cut1 < cut2, "test data has no distinct timestamps")
        expect_eq(c.replay_all(since=cut1), [r for r, t in zip(recs, ts) if t >= cut1], "since")
        expect_eq(c.replay_all(until=cut2), [r for r, t in zip(recs, ts) if t < cut2], "until")
        expect_eq(c.replay_all(since=cut1, until=cut2),
                  [r for r, t in zip(recs, ts) if cut1 <= t < cut2], "since and until")
        rep = c.replay(since=ts[-1] + 1)
        expect_eq((rep["events"], rep["end"]), ([], True), "since after the last record")
    res.run("replay since (inclusive) and until (exclusive) by daemon ts", time_range)

    def lead_filter():
        recs = state["recs"]
        want = [r for r in recs if msgpack.unpackb(r).get("lead") == "L1"]
        expect(len(want) > 3, "test data")
        expect_eq(c.replay_all(lead="L1"), want, "lead L1")
        expect_eq(c.replay_all(lead="L1", limit=2), want, "lead L1 in pages of 2")
        rep = c.replay(lead="nobody-at-all")
        expect_eq((rep["events"], rep["end"]), ([], True), "unknown lead")
    res.run("replay lead filter", lead_filter)

    def type_filter():
        recs = state["recs"]
        for prefix in ("lead.", "x.", "lead.captured", "deal."):
            want = [r for r in recs if msgpack.unpackb(r)["type"].startswith(prefix)]
            expect_eq(c.replay_all(type=prefix), want, "type prefix %r" % prefix)
        want = [r for r in recs if msgpack.unpackb(r)["type"].startswith("lead.")
                and msgpack.unpackb(r).get("lead") == "L1"]
        expect_eq(c.replay_all(type="lead.", lead="L1", limit=1), want, "type and lead")
    res.run("replay type prefix filter", type_filter)

    def pipelining():
        rids = []
        for i in range(6):
            rid = c.next_rid()
            rids.append(rid)
            ZQ.send(msgpack.packb({"op": "replay", "rid": rid, "from": i + 1, "limit": 1}))
        reps = [msgpack.unpackb(ZQ.recv()) for _ in rids]
        expect_eq([r["rid"] for r in reps], rids, "reply order")
        expect_eq([r["events"][0] for r in reps], state["recs"][:6], "records")
    res.run("pipelined requests are answered in order", pipelining)

    def req_socket():
        s = connect(c.ctx, zmq.REQ, daemon.endpoints["query"])
        try:
            s.send(msgpack.packb({"op": "status", "rid": 4242}))
            rep = msgpack.unpackb(s.recv())
            expect_eq((rep["rid"], rep["ok"]), (4242, True), "reply")
        finally:
            s.close(0)
    res.run("a REQ socket works too", req_socket)

    # --- status and lead ---
    def status_fields():
        st = c.status()
        for k, t in (("head", int), ("head_ts", int), ("count", int), ("data_bytes", int),
                     ("map_bytes", int), ("disk_free_bytes", int), ("disk_bytes", int),
                     ("uptime_ms", int), ("leads", int), ("format", int),
                     ("version", str), ("ingest", str), ("publish", str), ("query", str),
                     ("data_dir", str), ("head_hash", bytes), ("durable", bool)):
            expect(isinstance(st.get(k), t), "status %s is %r" % (k, st.get(k)))
        expect_eq(st["head"], len(state["recs"]), "head")
        names = {msgpack.unpackb(r).get("lead") for r in state["recs"]} - {None}
        expect_eq(st["leads"], len(names), "leads")
        expect(st["data_bytes"] > 0 and st["map_bytes"] >= st["data_bytes"], "sizes")
        vfs = os.statvfs(st["data_dir"])
        expect_eq(st["disk_bytes"], vfs.f_blocks * vfs.f_frsize, "disk_bytes")
        expect(0 < st["disk_free_bytes"] <= st["disk_bytes"], "disk free within the disk")
    res.run("status fields", status_fields)

    def lead_fields():
        li = c.lead("L1")
        expect_eq(li["ok"], True, "ok")
        mine = [msgpack.unpackb(r) for r in state["recs"]]
        mine = [r for r in mine if r.get("lead") == "L1"]
        expect_eq((li["stage"], li["version"], li["last_seq"], li["owner"]),
                  (mine[-1]["stage"], len(mine), mine[-1]["seq"], None), "L1")
    res.run("lead op: stage, version, last_seq, owner", lead_fields)

    # --- the live feed ---
    def feed_matches():
        head = c.status()["head"]
        c.pump_feed(until_head=head, wait_s=5.0)
        expect_eq(sorted(c.feed), list(range(1, head + 1)), "seqs seen on the publish socket")
        for seq in range(1, head + 1):
            expect_eq(c.feed[seq], state["recs"][seq - 1], "bytes of seq %d" % seq)
    res.run("the publish socket delivers every record with the same bytes as replay",
            feed_matches)

    def heartbeat_head():
        head = c.status()["head"]
        c.pump_feed(until_head=head, wait_s=3.0)
        expect_eq(c.heartbeats[-1]["heartbeat"], head, "heartbeat head")
    res.run("heartbeats carry the head seq", heartbeat_head)

    # --- shutdown ---
    def sigterm():
        rc = daemon.terminate(wait_s=5.0)
        expect_eq(rc, 0, "exit status after SIGTERM")
    res.run("SIGTERM stops funneld with status 0", sigterm)


if __name__ == "__main__":
    sys.exit(main().summary())
