#!/usr/bin/python3
"""
tests/integration/test_protocol_examples.py - proto/PROTOCOL.md's worked
examples (section 17) say what a live funneld says: protocol_examples.py
runs the documented requests against a real funneld and its output is
compared with the marked section, values that vary from run to run
normalised (see protocol_examples.py).  When this fails, the diff shows
what changed; rewrite the section with

    BUILD=build /usr/bin/python3 tests/integration/protocol_examples.py

Run with Debian's /usr/bin/python3 (python3-zmq, python3-msgpack):

    BUILD=build FUNNELD=build/bin/funneld /usr/bin/python3 tests/integration/test_protocol_examples.py

Prints "ok - name" or "not ok - name: reason", then "N passed, M failed".
"""
import os
import sys

import protocol_examples
from funnel_testlib import CheckFailed, Results


def main():
    build = os.environ.get("BUILD", "build")
    funneld = os.environ.get("FUNNELD", os.path.join(build, "bin", "funneld"))
    res = Results()

    def markers():
        with open(protocol_examples.PROTOCOL) as f:
            text = f.read()
        for m in (protocol_examples.BEGIN, protocol_examples.END):
            if text.count(m) != 1:
                raise CheckFailed("PROTOCOL.md holds %r %d times, not once" % (m, text.count(m)))
    res.run("PROTOCOL.md marks section 17 as generated", markers)

    def normalising_keeps_differences():
        # the comparison must not hide what it is there to catch
        a = protocol_examples.normalise("{rid: 9, format: 1, uptime_ms: 459}")
        b = protocol_examples.normalise("{rid: 9, format: 2, uptime_ms: 313}")
        if a == b:
            raise CheckFailed("format 1 and format 2 normalise alike")
        c = protocol_examples.normalise("{ts: 1795353674713549225, hash: bin(32) " + "ab" * 32 + "}")
        d = protocol_examples.normalise("{ts: 1796281558439218460, hash: bin(32) " + "cd" * 32 + "}")
        if c != d:
            raise CheckFailed("timestamps and hashes are not normalised: %r %r" % (c, d))
    res.run("normalising hides timestamps and hashes, not other values",
            normalising_keeps_differences)

    def live():
        diff = protocol_examples.check(funneld)
        if diff is not None:
            raise CheckFailed("proto/PROTOCOL.md section 17 differs from the live daemon "
                              "(rewrite it with tests/integration/protocol_examples.py):\n" + diff)
    res.run("PROTOCOL.md section 17 is what a live funneld sends and answers", live)
    return res.summary()


if __name__ == "__main__":
    sys.exit(main())
