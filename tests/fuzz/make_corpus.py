#!/usr/bin/python3
"""tests/fuzz/make_corpus.py - write the seed corpus of fuzz_envelope.

Each seed is one request frame as a client would send it to funneld
(PROTOCOL.md sections 1, 2, 7, 12, 13): valid requests of every op and
every event type, and the edge cases the validator must refuse.  The
seeds are committed under tests/fuzz/corpus/envelope/; run this again
after changing it:  /usr/bin/python3 tests/fuzz/make_corpus.py
"""
import math
import os
import struct
import sys

import msgpack

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "envelope")


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


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        os.remove(os.path.join(OUT, name))
    total = 0
    for name, frame in sorted(SEEDS.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(frame)
        total += len(frame)
    print(f"{len(SEEDS)} seeds, {total} bytes in {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
