# -*- test-case-name: tests.test_parity -*-
"""
The startup file's keys for QEWD's message features (docs/configuration.md, docs/handlers.md):
``lockSession``, ``webSockets`` and ``permit_application_switch``. Private: ``load_config``
puts what `message_feature_keys` returns into the `Config`.
"""

from __future__ import annotations

from typing import Any

from qewd_twisted.config.checks import Checker, key_path, show

#: lockSession: how long a request waits for its locked session, seconds (QEWD's 30 s)
DEFAULT_LOCK_TIMEOUT = 30.0


def message_feature_keys(c: Checker, d: dict[str, Any]) -> dict[str, Any]:
    """``lockSession``, ``webSockets`` (``io_paths``; QEWD.js's ``module`` and ``engine``
    choose its own socket.io server and are accepted as they are) and
    ``permit_application_switch``."""
    lock = d.get("lockSession")
    if lock is not None and not isinstance(lock, (bool, dict)):
        c.add("config.lockSession",
              f"must be true, false or {{timeout: seconds}}, got {show(lock)}")
    elif isinstance(lock, dict):
        c.check_keys(lock, "config.lockSession", ("timeout",))
        t = lock.get("timeout")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0):
            c.add("config.lockSession.timeout", f"must be a positive number, got {show(t)}")
            lock = True
    io_paths: tuple[str, ...] = ()
    ws = d.get("webSockets")
    if ws is not None and not isinstance(ws, dict):
        c.add("config.webSockets", f"must be a dict, got {show(ws)}")
    elif isinstance(ws, dict):
        c.check_keys(ws, "config.webSockets", ("module", "engine", "io_paths"))
        if ws.get("module") not in (None, "socket.io"):
            c.add("config.webSockets.module", "only 'socket.io' is served")
        raw = ws.get("io_paths")
        if raw is not None and (not isinstance(raw, list) or not all(
                isinstance(p, str) and p.startswith("/") and len(p) > 1 for p in raw)):
            c.add("config.webSockets.io_paths",
                  f"must be a list of namespaces such as '/qewd', got {show(raw)}")
        else:
            io_paths = tuple(dict.fromkeys(raw or ()))
    permit = d.get("permit_application_switch")
    if permit is not None and not isinstance(permit, dict):
        c.add("config.permit_application_switch",
              f"must be a dict of application -> {{application: true}}, got {show(permit)}")
    for source, targets in (permit.items() if isinstance(permit, dict) else ()):
        if not isinstance(targets, dict) or not all(
                isinstance(k, str) and isinstance(v, bool) for k, v in targets.items()):
            c.add(key_path("config.permit_application_switch", source),
                  f"must be a dict of application -> true/false, got {show(targets)}")
    if isinstance(lock, dict):  # an object is truthy in JavaScript, even {}
        seconds: float | None = float(lock.get("timeout") or DEFAULT_LOCK_TIMEOUT)
    else:
        seconds = DEFAULT_LOCK_TIMEOUT if lock else None
    return {"lock_session": seconds,
            "io_paths": io_paths,
            "permit_application_switch": permit if isinstance(permit, dict) else {}}
