#!/usr/bin/python3
"""
tests/integration/protocol_examples.py - writes the worked examples of
proto/PROTOCOL.md (section 17) from a live funneld, so they cannot drift
from what the daemon says.

It starts a real funneld on a fresh data directory (wildcard loopback
ports, heartbeat every 200 ms), sends the documented requests with pyzmq
and msgpack (a DEALER on ingest and on query, a SUB on publish), and
renders every request, every reply, the heartbeat and one record byte by
byte: a hex dump of the exact bytes, then their decoded form.  The text of
section 17 lives here; PROTOCOL.md holds it between the lines

    <!-- protocol_examples.py: begin ... -->
    <!-- protocol_examples.py: end -->

    BUILD=build /usr/bin/python3 tests/integration/protocol_examples.py           # rewrite
    BUILD=build /usr/bin/python3 tests/integration/protocol_examples.py --check   # compare

--check exits 1 with a diff when PROTOCOL.md says something else than the
daemon says now (tests/integration/test_protocol_examples.py runs it).
What legitimately differs from one run to the next is normalised on both
sides before they are compared (normalise() below):
  - a hex dump is read back into bytes and compared as its length and its
    decoded msgpack value, in which ts, head_ts, uptime_ms, data_bytes,
    disk_free_bytes, disk_bytes, prev, hash, head_hash, the endpoints'
    ports and data_dir are replaced by placeholders (records inside a
    replay page are decoded and normalised the same way; the two disk
    figures count as 9 bytes each in the length, whatever the disk);
  - elsewhere, 19-digit ns timestamps, 64-digit hex hashes, ports, the data
    directory, uptime_ms, data_bytes and the disk figures become
    placeholders, and so do the
    byte cells of the record table's rows that show a ts or a hash.
Everything else (keys, order, encodings, lengths, error codes and messages,
seqs, the prose) must be the same.  The run makes the lengths stable: the
data directory has a fixed-length name and the status request waits until
the daemon's uptime_ms needs a uint16.
"""
import difflib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROTOCOL = os.path.join(REPO, "proto", "PROTOCOL.md")
BEGIN = "<!-- protocol_examples.py: begin"
END = "<!-- protocol_examples.py: end -->"
TIMEOUT_MS = 5000
READY_WAIT_S = 10.0
OCCURRED_AT = 1763820000000000000     # 2025-11-22T14:00:00Z, given by the producer


# ------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------

def hexdump(b):
    rows = []
    for off in range(0, len(b), 16):
        chunk = b[off:off + 16]
        hx = " ".join("%02x" % c for c in chunk)
        asc = "".join(chr(c) if 0x20 <= c < 0x7f else "." for c in chunk)
        rows.append("%04x  %-47s  %s" % (off, hx, asc))
    return "```\n" + "\n".join(rows) + "\n```"


def show(v):
    """A decoded msgpack value as the examples write it."""
    if isinstance(v, dict):
        return "{" + ", ".join("%s: %s" % (k if isinstance(k, str) else show(k), show(x))
                               for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(show(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "nil"
    if isinstance(v, bytes):
        if len(v) <= 32:
            return "bin(%d) %s" % (len(v), v.hex())
        return "bin(%d) %s…" % (len(v), v[:16].hex())
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def decoded(b):
    return "```\n" + show(msgpack.unpackb(b, strict_map_key=False)) + "\n```"


def exchange(req, rep, req_label="Request", rep_label="Reply"):
    return ("%s (%d bytes):\n\n%s\n\n%s\n\n%s (%d bytes):\n\n%s\n\n%s\n"
            % (req_label, len(req), hexdump(req), decoded(req), rep_label, len(rep),
               hexdump(rep), decoded(rep)))


def cell(b):
    """The bytes of a table cell: all of them up to 12, else the first 6."""
    if len(b) <= 12:
        return " ".join("%02x" % c for c in b)
    return " ".join("%02x" % c for c in b[:6]) + " …"


def top_level_items(rec):
    """(offset, length, bytes, meaning) of the map header and of each key
    and value of a record's top-level map."""
    up = msgpack.Unpacker(raw=False, strict_map_key=False)
    up.feed(rec)
    n = up.read_map_header()
    first = up.tell()
    rows = [(0, first, rec[:first], "fixmap header: %d keys" % n if first == 1
             else "map header: %d keys" % n)]
    for _ in range(n):
        for what in ("key", "value"):
            at = up.tell()
            v = up.unpack()
            end = up.tell()
            rows.append((at, end - at, rec[at:end], "%s %s" % (what, show(v))))
    return rows


# ------------------------------------------------------------------
# the live daemon
# ------------------------------------------------------------------

class Live:
    def __init__(self, funneld):
        # a fixed-length name, so data_dir (in the status reply) keeps its length
        self.dir = tempfile.mkdtemp(prefix="proto-ex-", dir="/tmp")
        self.data = os.path.join(self.dir, "d")
        ready = os.path.join(self.dir, "ready")
        self.log = open(os.path.join(self.dir, "funneld.log"), "wb")
        self.proc = subprocess.Popen(
            [funneld, "--data", self.data, "--ingest", "tcp://127.0.0.1:*",
             "--publish", "tcp://127.0.0.1:*", "--query", "tcp://127.0.0.1:*",
             "--ready-file", ready, "--heartbeat-ms", "200"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + READY_WAIT_S
        self.eps = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("funneld exited with %d" % self.proc.returncode)
            if os.path.exists(ready):
                with open(ready) as f:
                    self.eps = dict(l.strip().split("=", 1) for l in f if "=" in l)
                if all(k in self.eps for k in ("ingest", "publish", "query")):
                    break
            time.sleep(0.02)
        else:
            raise RuntimeError("funneld wrote no ready file in %.0f s" % READY_WAIT_S)
        self.ctx = zmq.Context()
        self.ingest = self.sock(zmq.DEALER, self.eps["ingest"])
        self.query = self.sock(zmq.DEALER, self.eps["query"])
        self.sub = self.sock(zmq.SUB, self.eps["publish"])
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")

    def sock(self, kind, ep):
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        s.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(ep)
        return s

    def call(self, sock, req):
        """(request bytes, reply bytes)."""
        b = req if isinstance(req, bytes) else msgpack.packb(req)
        sock.send(b)
        return b, sock.recv()

    def close(self):
        for s in (getattr(self, n, None) for n in ("ingest", "query", "sub")):
            if s is not None:
                s.close(0)
        if getattr(self, "ctx", None) is not None:
            self.ctx.term()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def generate(funneld):
    """Section 17 as PROTOCOL.md holds it between the markers."""
    live = Live(funneld)
    try:
        return render(live)
    finally:
        live.close()


def render(live):
    out = []
    w = out.append
    captured = {"type": "lead.captured", "lead": "L-1001", "id": "form:8f3a",
                "occurred_at": OCCURRED_AT,
                "data": {"email": "ana@example.com", "source": "webinar"}}
    # a first heartbeat shows the SUB socket's subscription is in place
    deadline = time.monotonic() + READY_WAIT_S
    while True:
        m = msgpack.unpackb(live.sub.recv(), strict_map_key=False)
        if isinstance(m, dict) and "heartbeat" in m:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("no heartbeat on the publish socket")

    w("""
Generated from a real funneld by `tests/integration/protocol_examples.py`
(a fresh data directory, wildcard loopback ports, `--heartbeat-ms 200`),
with a Python client (`zmq.DEALER`, `msgpack.packb`); do not edit this
section by hand: edit the script and run it.
`tests/integration/test_protocol_examples.py` fails when this section
differs from what the daemon says, apart from the values that change
from run to run (timestamps, hashes, ports, the data directory, uptime,
data size). Hex dumps show offset, bytes and printable characters; the
decoded form follows each dump (bin values in hex). The daemon's replies
are the exact bytes it sent.

### 17.1 Publish one event (ingest)

""")
    req, rep = live.call(live.ingest, {"op": "publish", "rid": 1, "events": [captured]})
    w(exchange(req, rep))

    w("""
### 17.2 The same event again: a duplicate

Same `id` (`form:8f3a`): nothing is stored, the ack gives the original seq 1 with `dup: true` (§6).

""")
    req, rep = live.call(live.ingest, {"op": "publish", "rid": 2, "events": [captured]})
    w(exchange(req, rep))

    w("""
### 17.3 A batch refused as a whole (ETRANSITION at index 1)

Event 0 alone would be accepted (inquiry → mql), but event 1 (`deal.won` needs `sql`) is refused, so neither is stored (§8). `index: 1` names the event; the message names the stage the lead would have been in at that point (`mql`, after event 0).

""")
    req, rep = live.call(live.ingest, {"op": "publish", "rid": 3, "events": [
        {"type": "lead.qualified", "lead": "L-1001", "expected_version": 1, "cause": 1},
        {"type": "deal.won", "lead": "L-1001", "data": {"amount": 1200}}]})
    w(exchange(req, rep))

    w("""
### 17.4 Optimistic concurrency (EVERSION)

The lead has one event (version 1); the producer expected none.

""")
    req, rep = live.call(live.ingest, {"op": "publish", "rid": 4, "events": [
        {"type": "lead.qualified", "lead": "L-1001", "expected_version": 0}]})
    w(exchange(req, rep))

    w("""
### 17.5 Two events in one request

Both stored, consecutive seqs, one commit group: both records get the same `ts` (§10).

""")
    req, rep = live.call(live.ingest, {"op": "publish", "rid": 5, "events": [
        {"type": "lead.qualified", "lead": "L-1001", "id": "score:1:q", "expected_version": 1,
         "cause": 1},
        {"type": "lead.assigned", "lead": "L-1001", "data": {"owner": "rep-7"}}]})
    w(exchange(req, rep))

    req, page = live.call(live.query, {"op": "replay", "rid": 6, "from": 1, "limit": 2})
    recs = msgpack.unpackb(page)["events"]
    hdrs = []
    for r in recs:
        h = msgpack.packb(r, use_bin_type=True)[:2 if len(r) < 256 else 3]
        hdrs.append("`%s`: %d bytes" % (" ".join("%02x" % c for c in h), len(r)))
    w("""
### 17.6 Replay one page (query)

`limit: 2` cuts the page before seq 3, so `end` is false and `next` is 3. Each element of `events` is a bin 8 (%s) holding a record; the first is dissected in 17.11.

""" % ", ".join(hdrs))
    w(exchange(req, page))

    w("""
### 17.7 Lead state (query)

Three events named L-1001 (captured, qualified, assigned): version 3; `lead.assigned` set the owner and kept the stage.

""")
    req, rep = live.call(live.query, {"op": "lead", "rid": 7, "lead": "L-1001"})
    w(exchange(req, rep))

    w("""
### 17.8 Unknown lead (ENOTFOUND)

""")
    req, rep = live.call(live.query, {"op": "lead", "rid": 8, "lead": "L-9999"})
    w(exchange(req, rep))

    # uptime_ms as a uint16 (cd), so the reply's length is the same every run
    poll = live.sock(zmq.DEALER, live.eps["query"])
    try:
        deadline = time.monotonic() + READY_WAIT_S
        rid = 100
        while time.monotonic() < deadline:
            rid += 1
            poll.send(msgpack.packb({"op": "status", "rid": rid}))
            if msgpack.unpackb(poll.recv()).get("uptime_ms", 0) >= 300:
                break
            time.sleep(0.05)
    finally:
        poll.close(0)
    req, rep = live.call(live.query, {"op": "status", "rid": 9})
    st = msgpack.unpackb(rep)
    hdr = rep[:3] if rep[0] == 0xde else rep[:1]
    w("""
### 17.9 Status (query)

%d keys, so a %s header (`%s`).

""" % (len(st), "map 16" if rep[0] == 0xde else "fixmap",
       " ".join("%02x" % c for c in hdr)))
    w(exchange(req, rep))

    # the records came on the SUB socket as the replay page's bytes; then a heartbeat
    published = []
    hb = None
    deadline = time.monotonic() + READY_WAIT_S
    while hb is None and time.monotonic() < deadline:
        f = live.sub.recv()
        m = msgpack.unpackb(f, strict_map_key=False)
        if isinstance(m, dict) and "heartbeat" in m:
            if m["heartbeat"] == st["head"]:     # not one sent before the records
                hb = f
        else:
            published.append(f)
    if hb is None:
        raise RuntimeError("no heartbeat on the publish socket")
    if published[:2] != recs:
        raise RuntimeError("the published records are not the replayed bytes")
    w("""
### 17.10 Heartbeat (publish)

Received on the SUB socket after the %s records (which were the same bytes as the replay page above).

%s

%s

""" % ({2: "two", 3: "three", 4: "four"}.get(len(published), str(len(published))),
       hexdump(hb), decoded(hb)))

    rec = recs[0]
    L = len(rec)
    v = msgpack.unpackb(rec)
    w("""### 17.11 A record, byte by byte

Record seq %d from the page above, %d bytes (L = %d):

%s

| offset | length | bytes | meaning |
|---:|---:|---|---|
""" % (v["seq"], L, L, hexdump(rec)))
    for off, n, b, meaning in top_level_items(rec):
        w("| %d | %d | `%s` | %s |\n" % (off, n, cell(b), meaning))
    digest = hashlib.blake2b(rec[:L - 32], digest_size=32).hexdigest()
    if digest != v["hash"].hex():
        raise RuntimeError("the record's hash does not verify")
    rec2 = recs[1]
    at2 = page.index(rec2)
    prev2 = at2 + len(rec2) - 71
    if rec2[len(rec2) - 71:len(rec2) - 39] != v["hash"]:
        raise RuntimeError("record 2 does not chain to record 1")
    w("""
Checks on these bytes:

- seq at offset 6..13: `%s` = %d; ts at 18..25:
  `%s` = %d (ns).
- prev at L−71 = %d..%d: 32 zero bytes (seq 1).
- hash at L−32 = %d..%d; `hashlib.blake2b(rec[:%d], digest_size=32)`
  gives `%s`,
  the stored hash.
- record seq 2 (second bin of 17.6) has this hash as its `prev` (reply
  bytes 0x%04x..0x%04x).
- `version` is `01` (positive fixint) and `occurred_at` happens to need
  `cf`: only `seq` and `ts` are fixed-width.

### 17.12 A request that cannot be decoded (rid 0)

The frame `c1` (a byte msgpack never uses) is not msgpack, so the daemon cannot read its `rid`: the error carries `rid: 0`. The client matches it to its oldest outstanding request on the connection (§1 "Matching a rid-0 error").

""" % (" ".join("%02x" % c for c in rec[6:14]), v["seq"],
       " ".join("%02x" % c for c in rec[18:26]), v["ts"],
       L - 71, L - 40, L - 32, L - 1, L - 32, digest, prev2, prev2 + 31))
    req, rep = live.call(live.ingest, b"\xc1")
    w("Request (%d byte):\n\n%s\n\nReply (%d bytes):\n\n%s\n\n%s\n\n"
      % (len(req), hexdump(req), len(rep), hexdump(rep), decoded(rep)))

    w("""### 17.13 The same id for another event (EIDCONFLICT)

17.1's id `form:8f3a` sent with another lead: not the same event (§6), so not a duplicate. The request is refused, nothing is stored, and the error carries `seq`, the seq of the event that holds the id; the message names the field that differs.

""")
    other = dict(captured, lead="L-2002")
    req, rep = live.call(live.ingest, {"op": "publish", "rid": 13, "events": [other]})
    w(exchange(req, rep))
    return "".join(out)


# ------------------------------------------------------------------
# PROTOCOL.md: the marked section, and comparing it
# ------------------------------------------------------------------

def split(text):
    """(before, section, after) around the markers; before ends with the
    begin marker's line, after starts with the end marker."""
    b = text.index(BEGIN)
    b = text.index("\n", b) + 1
    e = text.index(END)
    return text[:b], text[b:e], text[e:]


VARYING_KEYS = ("ts", "head_ts", "uptime_ms", "data_bytes", "prev", "hash", "head_hash",
                "data_dir", "disk_free_bytes", "disk_bytes")
# the machine's disk: counted at the width of a uint64 whatever its size
DISK_KEYS = ("disk_free_bytes", "disk_bytes")
PORT_RE = re.compile(r"(tcp://127\.0\.0\.1:)\d+")


def norm_value(v, key=None):
    if isinstance(v, dict):
        return {k: norm_value(x, k) for k, x in v.items()}
    if isinstance(v, list):
        return [norm_value(x, key) for x in v]
    if key in VARYING_KEYS:
        return "<%s>" % key
    if isinstance(v, bytes) and key == "events":
        try:
            return ("record(%d)" % len(v), norm_value(msgpack.unpackb(v)))
        except Exception:
            return v
    if isinstance(v, str):
        return PORT_RE.sub(r"\1<port>", v)
    return v


def norm_dump(rows):
    """A hex dump as its length and its normalised decoded value."""
    b = bytes.fromhex("".join(r[6:53] for r in rows))
    try:
        up = msgpack.Unpacker(raw=False, strict_map_key=False)
        up.feed(b)
        raw = list(up)
        n = len(b)
        for x in raw:
            if isinstance(x, dict):
                n += sum(9 - len(msgpack.packb(x[k])) for k in DISK_KEYS if k in x)
        vals = [norm_value(x) for x in raw]
        return "hex dump of %d bytes: %r" % (n, vals)
    except Exception:
        return "hex dump of %d bytes: %s" % (len(b), b.hex())


DUMP_RE = re.compile(r"^[0-9a-f]{4}  ([0-9a-f]{2} ){0,15}[0-9a-f]{2}")
REPLACE = [
    (re.compile(r"\b\d{19}\b"), "<ns>"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<hash>"),
    (PORT_RE, r"\1<port>"),
    (re.compile(r'(data_dir: )"[^"]*"'), r"\1<dir>"),
    (re.compile(r"(uptime_ms: )\d+"), r"\1<ms>"),
    (re.compile(r"(data_bytes: )\d+"), r"\1<n>"),
    (re.compile(r"(disk_free_bytes: |disk_bytes: )\d+"), r"\1<n>"),
    # the record table's rows and the checks that show a ts or a hash
    (re.compile(r"`[0-9a-f ]+( …)?`( \| value (<ns>|bin\(32\) <hash>) \|)"), r"<bytes>\2"),
    (re.compile(r"`[0-9a-f ]+`( = <ns>)"), r"<bytes>\1"),
]


def normalise(section):
    lines = section.split("\n")
    out = []
    i = 0
    while i < len(lines):
        if lines[i] == "```" and i + 1 < len(lines) and DUMP_RE.match(lines[i + 1]):
            j = i + 1
            rows = []
            while j < len(lines) and lines[j] != "```":
                rows.append(lines[j])
                j += 1
            out.append(norm_dump(rows))
            i = j + 1
            continue
        l = lines[i]
        for rx, rep in REPLACE:
            l = rx.sub(rep, l)
        out.append(l)
        i += 1
    return out


def check(funneld):
    """None when PROTOCOL.md says what the daemon says, else a diff."""
    with open(PROTOCOL) as f:
        _, doc, _ = split(f.read())
    live = normalise(generate(funneld))
    want = normalise(doc)
    if live == want:
        return None
    return "\n".join(difflib.unified_diff(want, live, "proto/PROTOCOL.md (normalised)",
                                          "live funneld (normalised)", lineterm=""))


def main():
    build = os.environ.get("BUILD", "build")
    funneld = os.environ.get("FUNNELD", os.path.join(build, "bin", "funneld"))
    if "--check" in sys.argv[1:]:
        diff = check(funneld)
        if diff is None:
            print("proto/PROTOCOL.md section 17 matches the live daemon")
            return 0
        print(diff)
        print("proto/PROTOCOL.md section 17 differs from the live daemon: run "
              "tests/integration/protocol_examples.py to rewrite it")
        return 1
    with open(PROTOCOL) as f:
        before, _, after = split(f.read())
    with open(PROTOCOL, "w") as f:
        f.write(before + generate(funneld) + after)
    print("rewrote section 17 of proto/PROTOCOL.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
