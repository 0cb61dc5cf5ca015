#!/usr/bin/python3
"""tests/fuzz/make_corpus.py - write the seed corpora of the fuzz targets.

corpus/envelope/ (fuzz_envelope): one request frame each, as a client
sends it to funneld (PROTOCOL.md sections 1, 2, 7, 12, 13): valid
requests of every op and every event type, and the edge cases the
validator must refuse.

corpus/reply/ (fuzz_reply): one frame each, as funneld sends it to a
client: replies of every kind (ack, error, replay page with records,
status, lead), records and a heartbeat as published (sections 1, 9, 11).

The seeds are committed; run this again after changing it:
    /usr/bin/python3 tests/fuzz/make_corpus.py
"""
import hashlib
import math
import os
import struct
import sys

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))


def pub(*events, rid=1):
    return msgpack.packb({"op": "publish", "rid": rid, "events": list(events)})


def raw_pub(events_bytes, n):
    """A publish whose events are given as raw msgpack bytes (n of them)."""
    out = b"\x83" + msgpack.packb("op") + msgpack.packb("publish")
    out += msgpack.packb("rid") + msgpack.packb(7) + msgpack.packb("events")
    out += (bytes([0x90 + n]) if n < 16 else b"\xdc" + struct.pack(">H", n)) + events_bytes
    return out


LEAD = "L-1001"
SEEDS = {
    # valid requests, one per op
    "pub_captured": pub({"type": "lead.captured", "lead": LEAD, "id": "form:8f3a",
                         "occurred_at": 1763820000000000000,
                         "data": {"email": "ana@example.com", "source": "webinar"}}),
    "pub_two_events": pub({"type": "lead.qualified", "lead": LEAD, "id": "score:1:q",
                           "expected_version": 1, "cause": 1},
                          {"type": "lead.assigned", "lead": LEAD, "data": {"owner": "rep-7"}}),
    "pub_every_type": pub(
        {"type": "lead.activity", "lead": LEAD, "data": {"kind": "demo_request"}},
        {"type": "lead.scored", "lead": LEAD, "data": {"fit": 40, "engagement": 35}},
        {"type": "lead.contacted", "lead": LEAD},
        {"type": "lead.accepted", "lead": LEAD},
        {"type": "lead.rejected", "lead": LEAD, "data": {"reason": "no-budget"}},
        {"type": "lead.recycled", "lead": LEAD, "data": {"reason": "timing"}},
        {"type": "lead.disqualified", "lead": LEAD, "data": {"reason": "student"}},
        {"type": "opportunity.opened", "lead": LEAD, "data": {"amount": 12000}},
        {"type": "deal.won", "lead": LEAD, "data": {"amount": 12500.5}},
        {"type": "deal.lost", "lead": LEAD, "data": {"reason": "competitor"}},
        {"type": "lead.sla_breached", "lead": LEAD},
        {"type": "lead.erased", "lead": LEAD},
        {"type": "rules.changed", "data": {"hash": "ab" * 32, "service": "scoring"}},
        {"type": "x.custom", "data": {"nested": {"a": [1, 2.5, None, True, b"\x00"]}}},
    ),
    "pub_data_nil": pub({"type": "x.t", "data": None}),
    "pub_data_ext": msgpack.packb({"op": "publish", "events": [
        {"type": "x.t", "data": {"e": msgpack.ExtType(5, b"abc"), "b": b"\xff\xfe"}}]}),
    "replay_all_fields": msgpack.packb({"op": "replay", "rid": 6, "from": 10, "to": 1 << 40,
                                        "since": 1000, "until": 2000, "lead": "lead-1",
                                        "type": "lead.", "limit": 50, "max_bytes": 70000}),
    "replay_min": msgpack.packb({"op": "replay", "from": 1, "limit": 2}),
    "status": msgpack.packb({"op": "status", "rid": 9}),
    "lead": msgpack.packb({"op": "lead", "rid": 7, "lead": LEAD}),
    # request-level refusals
    "not_msgpack": b"\xc1",
    "not_a_map": msgpack.packb([1, 2, 3]),
    "trailing_bytes": msgpack.packb({"op": "status"}) + b"\x00",
    "rid_str": msgpack.packb({"op": "status", "rid": "one"}),
    "op_missing": msgpack.packb({"rid": 3}),
    "op_unknown": msgpack.packb({"op": "delete", "rid": 3}),
    "events_empty": msgpack.packb({"op": "publish", "events": []}),
    "events_not_array": msgpack.packb({"op": "publish", "events": {"type": "x.t"}}),
    "replay_neg_from": msgpack.packb({"op": "replay", "from": -1}),
    "lead_too_long": msgpack.packb({"op": "lead", "lead": "L" * 129}),
    # event-level refusals
    "ev_not_map": pub(5),
    "ev_unknown_key": pub({"type": "x.t", "colour": "red"}),
    "ev_key_twice": raw_pub(b"\x82" + msgpack.packb("type") + msgpack.packb("x.a")
                            + msgpack.packb("type") + msgpack.packb("x.b"), 1),
    "ev_key_not_str": raw_pub(b"\x81\x01\xa3x.t", 1),
    "ev_type_int": pub({"type": 7}),
    "ev_type_unknown": pub({"type": "lead.bogus", "lead": LEAD}),
    "ev_type_control": pub({"type": "x.a\x01b"}),
    "ev_lead_bad_utf8": raw_pub(b"\x82" + msgpack.packb("type") + msgpack.packb("lead.captured")
                                + msgpack.packb("lead") + b"\xa3\xed\xa0\x80", 1),
    "ev_id_too_long": pub({"type": "x.t", "id": "i" * 129}),
    "ev_expected_neg": pub({"type": "lead.activity", "lead": LEAD, "expected_version": -1,
                            "data": {"kind": "click"}}),
    "ev_expected_no_lead": pub({"type": "x.t", "expected_version": 3}),
    "ev_cause_zero": pub({"type": "x.t", "cause": 0}),
    "ev_data_dup_key": raw_pub(b"\x82" + msgpack.packb("type") + msgpack.packb("x.t")
                               + msgpack.packb("data") + b"\x82\xa1k\x01\xa1k\x02", 1),
    "ev_data_bad_utf8": raw_pub(b"\x82" + msgpack.packb("type") + msgpack.packb("x.t")
                                + msgpack.packb("data") + b"\x81\xa1k\xa2\xc0\xaf", 1),
    "ev_owner_empty": pub({"type": "lead.assigned", "lead": LEAD, "data": {"owner": ""}}),
    "ev_amount_nan": pub({"type": "deal.won", "lead": LEAD, "data": {"amount": math.nan}}),
    "ev_amount_neg": pub({"type": "deal.won", "lead": LEAD, "data": {"amount": -1}}),
    "ev_amount_str": pub({"type": "deal.won", "lead": LEAD, "data": {"amount": "10"}}),
    # hostile shapes
    "huge_array32": raw_pub(b"\xdd\xff\xff\xff\xff", 1),
    "huge_str32": b"\x81\xdb\xff\xff\xff\xff",
    "deep_40": raw_pub(b"\x82" + msgpack.packb("type") + msgpack.packb("x.t")
                       + msgpack.packb("data") + b"\x81\xa1k" * 40 + b"\xc0", 1),
}


def record(seq, ts, type_, lead=None, stage=None, version=None, data=None, prev=bytes(32)):
    """A record laid out as PROTOCOL.md section 9 says, with its hash."""
    keys = [("seq", b"\xcf" + seq.to_bytes(8, "big")), ("ts", b"\xcf" + ts.to_bytes(8, "big")),
            ("type", msgpack.packb(type_))]
    if lead is not None:
        keys += [("lead", msgpack.packb(lead)), ("stage", msgpack.packb(stage)),
                 ("version", msgpack.packb(version))]
    if data is not None:
        keys.append(("data", msgpack.packb(data)))
    keys.append(("prev", b"\xc4\x20" + prev))
    out = bytes([0x80 + len(keys) + 1])
    for k, v in keys:
        out += msgpack.packb(k) + v
    out += msgpack.packb("hash") + b"\xc4\x20"
    return out + hashlib.blake2b(out, digest_size=32).digest()


TS = 1795353674711304190
R1 = record(1, TS, "lead.captured", LEAD, "inquiry", 1, {"email": "ana@example.com"})
R2 = record(2, TS + 1, "lead.qualified", LEAD, "mql", 2, None, R1[-32:])
R3 = record(3, TS + 1, "x.note", None, None, None, {"n": [1, 2.5, None]}, R2[-32:])

REPLIES = {
    "ack": msgpack.packb({"rid": 5, "ok": True, "seqs": [2, 3], "dup": [False, True]}),
    "error": msgpack.packb({"rid": 4, "ok": False, "code": 9, "error": "EVERSION",
                            "field": "expected_version", "message": "expected version 0",
                            "index": 0}),
    "error_rid0": msgpack.packb({"rid": 0, "ok": False, "code": 1, "error": "EMALFORMED",
                                 "field": "", "message": "request is not valid msgpack"}),
    "page": msgpack.packb({"rid": 6, "ok": True, "head": 3, "next": 4, "end": True,
                           "events": [R1, R2, R3]}),
    "page_empty": msgpack.packb({"rid": 7, "ok": True, "head": 0, "next": 1, "end": True,
                                 "events": []}),
    "status": msgpack.packb({"rid": 9, "ok": True, "head": 3, "head_ts": TS, "count": 3,
                             "data_bytes": 73728, "map_bytes": 1 << 30, "uptime_ms": 459,
                             "leads": 1, "format": 1, "version": "0.1.0",
                             "ingest": "tcp://127.0.0.1:7400", "publish": "tcp://127.0.0.1:7401",
                             "query": "tcp://127.0.0.1:7402", "data_dir": "/srv/funnel",
                             "head_hash": R3[-32:], "durable": True}),
    "lead": msgpack.packb({"rid": 7, "ok": True, "lead": LEAD, "stage": "mql", "version": 3,
                           "last_seq": 3, "owner": "rep-7"}),
    "record_1": R1,
    "record_2": R2,
    "record_3": R3,
    "heartbeat": msgpack.packb({"heartbeat": 3, "ts": TS}),
}


def write(name, seeds):
    out = os.path.join(HERE, "corpus", name)
    os.makedirs(out, exist_ok=True)
    for old in os.listdir(out):
        os.remove(os.path.join(out, old))
    total = 0
    for seed, frame in sorted(seeds.items()):
        with open(os.path.join(out, seed), "wb") as f:
            f.write(frame)
        total += len(frame)
    print(f"{len(seeds)} seeds, {total} bytes in {out}", file=sys.stderr)


def main():
    write("envelope", SEEDS)
    write("reply", REPLIES)


if __name__ == "__main__":
    main()
