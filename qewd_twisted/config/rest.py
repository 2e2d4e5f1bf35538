# -*- test-case-name: tests.test_rest_config -*-
"""
The startup file's REST parts: its module-level ``routes`` (QEWD's second argument to
``start``, docs/protocol.md §5.1, §5.6), which mounts a handler module under a path.

``routes = [{"path": "/api", "module": "api.py"}]`` serves every request under ``/api`` from
``api.py``'s ``routes`` table, as application ``api`` (the path's first segment, as QEWD
names it); ``module`` defaults to that name as a dotted module. The mount adds the module to
``moduleMap``. Private: import `RestMount` from ``qewd_twisted.config``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from qewd_twisted.config.checks import Checker, show

_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%-]+(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*\Z")
_UNSUPPORTED = ("beforeRouter", "afterRouter")


@dataclass(frozen=True)
class RestMount:
    """``routes[i]``: requests under ``path`` go to ``application``'s module."""

    path: str
    application: str


def check_routes(c: Checker, raw: Any, specs: dict[str, Any], spec_type: Any,
                 is_dotted: Any) -> tuple[RestMount, ...]:
    """Validate the startup file's ``routes``; add each module to ``specs`` (moduleMap)."""
    if raw is None:
        return ()
    if not isinstance(raw, (list, tuple)):
        c.add("routes", f"must be a list of {{path, module}}, got {show(raw)}")
        return ()
    mounts: list[RestMount] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"routes[{i}]"
        if not isinstance(entry, dict):
            c.add(where, f"must be a dict {{path, module}}, got {show(entry)}")
            continue
        for key in entry:
            if key in _UNSUPPORTED:
                c.add(f"{where}.{key}", "Express middleware is not supported by qewd-twisted")
            elif key not in ("path", "module"):
                c.add(f"{where}.{key}", "unknown key (a route has path and module)")
        path = entry.get("path")
        if not isinstance(path, str) or not _PATH.match(path.rstrip("/") or "/"):
            c.add(f"{where}.path", f"must be a path such as '/api', got {show(path)}")
            continue
        path = path.rstrip("/")
        if path in seen:
            c.add(f"{where}.path", f"{path!r} is mounted twice")
            continue
        seen.add(path)
        application = path.split("/")[1]
        module = entry.get("module", application)
        if not isinstance(module, str) or not module:
            c.add(f"{where}.module", f"must be a .py file or a dotted module, got {show(module)}")
            continue
        if module.endswith(".py") or "/" in module or os.sep in module:
            resolved = c.resolve(module)
            if not os.path.isfile(resolved):
                c.add(f"{where}.module", f"file not found: {resolved}")
                continue
            spec = spec_type(application, path=resolved)
        elif is_dotted(module):
            spec = spec_type(application, module=module)
        else:
            c.add(f"{where}.module", f"not a .py file or a dotted module name: {module!r}")
            continue
        known = specs.get(application)
        if known is not None and known != spec:
            c.add(f"{where}.module", f"application {application!r} is already mapped to "
                  f"another module (moduleMap or an earlier route)")
            continue
        specs[application] = spec
        mounts.append(RestMount(path, application))
    return tuple(mounts)
