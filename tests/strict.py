# -*- test-case-name: tests.test_strict -*-
"""
What the suite requires, decided here and not by the environment (issue 18 item 1).

Every test that needs something outside Python calls ``require(test, area, why)`` when that
thing is missing. The areas are:

- ``interop``: the QEWD.js reference peer (its running nodes, node, its installed run folder);
- ``node``: Node.js and the test clients of tests/js (``npm ci`` there);
- ``browser``: Chromium and Playwright (scripts/setup-browser.sh);
- ``balancer``: Debian's HAProxy, nginx and redis-server for the load-balancer tests
  (tests/integration/test_haproxy.py; scripts/test.sh installs them).

A missing requirement FAILS the test. The only way to skip instead is the explicit, named
opt-out ``QEWD_TEST_ALLOW_SKIP`` (a comma-separated list of areas, e.g.
``QEWD_TEST_ALLOW_SKIP=interop,browser``, or ``all``), which .ci/run clears and never sets.
May import only the standard library and twisted.trial.
"""

from __future__ import annotations

import os
from typing import NoReturn

from twisted.trial.unittest import SkipTest, TestCase

AREAS = ("interop", "node", "browser", "balancer")
OPT_OUT = "QEWD_TEST_ALLOW_SKIP"

__all__ = ["AREAS", "OPT_OUT", "allowed_skips", "require"]


def allowed_skips(environ: dict[str, str] | None = None) -> frozenset[str]:
    """The areas the environment lets skip (``QEWD_TEST_ALLOW_SKIP``); unknown names are
    refused so a typo cannot quietly turn a failure into nothing."""
    raw = (os.environ if environ is None else environ).get(OPT_OUT, "")
    names = {n.strip() for n in raw.split(",") if n.strip()}
    if "all" in names:
        return frozenset(AREAS)
    unknown = names - set(AREAS)
    if unknown:
        raise ValueError(f"{OPT_OUT}: unknown area(s) {sorted(unknown)}; known: {AREAS}")
    return frozenset(names)


def require(test: TestCase, area: str, why: str) -> NoReturn:
    """``test`` cannot run because ``why``: fail it, or skip it when ``area`` is opted out."""
    if area not in AREAS:
        raise ValueError(f"unknown requirement area {area!r}")
    if area in allowed_skips():
        raise SkipTest(f"{why} ({OPT_OUT} includes {area})")
    test.fail(f"required for the {area} tests: {why} (bash scripts/test.sh installs and starts "
              f"everything; {OPT_OUT}={area} skips these tests instead)")
