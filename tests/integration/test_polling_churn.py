# -*- test-case-name: tests.integration.test_polling_churn -*-
"""
Abandoned long-polling sessions give their memory back (issue 14 item 6): bench/churn.py's
``--polling --bare`` run against a real ``twistd`` node, 500 warm-up cycles then two rounds of
2,000 (a third of them a handshake and nothing more, a third a ping then silence until
pingInterval + pingTimeout closes them, a third a GET cut off while it waits), each round ending
when the node reports no connection left. Asserted: no errors, nothing left open, and RSS flat
between the two rounds (under 0.75 KiB per cycle). tests/integration/test_polling.py counts
the session objects themselves.
Bounded: about 4,500 cycles, 10 s on loopback. Linux only (/proc).
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PollingChurnTests(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_rss_flat_over_open_abandon_cycles(self):
        if not os.path.exists("/proc/self/status"):
            raise SkipTest("needs /proc")
        env = dict(os.environ, PYTHONPATH=REPO)
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "bench.churn", "--polling", "--bare", "--warmup", "500",
                             "--cycles", "2000", "--rounds", "2", "--concurrency", "20",
                             "--json"], env=env, path=REPO)
        self.assertEqual(code, 0, err.decode()[-2000:])
        result = json.loads(out)
        rows = result["rows"]
        for row in rows[1:]:
            self.assertEqual((row["errors"], row["open_connections"]), (0, 0), row)
        growth_kib = rows[-1]["VmRSS"] - rows[-2]["VmRSS"]
        self.assertLess(growth_kib, 1536, rows)  # 2,000 cycles: < 0.75 KiB each
