# -*- test-case-name: tests.test_node -*-
"""
Handler modules and where they run.

- `modules`: loading an application's handler module (only those ``moduleMap`` names) into an
  `Application`; the ``@on_reactor`` marker.
- `pool`: the bounded `WorkerPool` that sync handlers run in.
- `local`: `LocalRunner`, running one request with its application's handler, in the pool or
  on the reactor, and shaping its replies.

May import: ``qewd_twisted.errors``, ``qewd_twisted.core`` (envelope, requests, inflight,
interfaces, q), ``qewd_twisted.auth.tokens`` (re-issuing JWTs) and Twisted. Nothing here knows
about transports or links.
"""

from qewd_twisted.apps.modules import (
    AppLoadError,
    Application,
    Applications,
    load_module,
    on_reactor,
    runs_on_reactor,
)

__all__ = ["AppLoadError", "Application", "Applications", "load_module", "on_reactor",
           "runs_on_reactor"]
