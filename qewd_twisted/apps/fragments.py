# -*- test-case-name: tests.test_parity -*-
"""
``ewd-fragment``: reading an HTML fragment for a client (docs/protocol.md §5.5).

QEWD.js reads ``<webServerRootPath><application>/<file>`` (or ``<webServerRootPath>services/<file>``
for ``params.isServiceFragment``, or ``<service module's folder>/fragments/<file>`` for an
allowed ``service``) and answers ``{fragmentName, content}``, or
``{error: "Fragment file <file> does not exist", file[, service][, isServiceFragment]}``.
It concatenates the client's file name into the path as is (§9 item 9), so ``../`` reads any
file the process can. Here a name is first checked as a relative path (no ``..`` component, not
absolute, no backslash, no NUL, no percent-encoded dot or separator), then resolved with every
symlink followed and kept only if it still lies inside its folder (the application's, the
services', or the service module's ``fragments``); only a regular file is opened. A refused
name gets the same answer as a missing file, so it tells the client nothing about what exists
outside. ``params.targetId`` and ``params.append`` are the browser client's business.

Blocking file I/O: `read_fragment` is meant for a worker thread. Pure otherwise; imports only
``qewd_twisted.errors``.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

from qewd_twisted import errors as E

__all__ = ["fragment_path", "fragment_reply", "js_str", "read_fragment"]

# %2e (.), %2f (/), %5c (\), in either case, possibly double-encoded (%252f)
_ENCODED = re.compile(r"%(25)*(2e|2f|5c)", re.IGNORECASE)


def js_str(value: Any) -> str:
    """``value`` as JavaScript's string concatenation shows it (QEWD builds its texts so)."""
    if value is None:
        return "undefined"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return "[object Object]" if isinstance(value, dict) else ",".join(map(js_str, value))
    return str(value)


def _safe_relative(name: Any) -> bool:
    if not isinstance(name, str) or not name or len(name) > 1024:
        return False
    if "\x00" in name or "\\" in name or name.startswith("/") or _ENCODED.search(name):
        return False
    if re.match(r"^[A-Za-z]:", name):  # a drive letter
        return False
    parts = name.split("/")
    return all(part not in ("", ".", "..") for part in parts)


def fragment_path(folder: str, name: Any) -> str | None:
    """The real path of fragment ``name`` inside ``folder``, or None when the name is not a
    plain relative path or resolves (symlinks followed) outside ``folder``."""
    if not _safe_relative(name):
        return None
    try:
        base = os.path.realpath(folder)
        path = os.path.realpath(os.path.join(base, name))
    except (OSError, ValueError):
        return None
    if os.path.commonpath([base, path]) != base or path == base:
        return None
    return path


def fragment_reply(message: dict[str, Any]) -> dict[str, Any]:
    """QEWD's answer for a fragment that is not there (or whose name is refused)."""
    params = message.get("params")
    name = params.get("file") if isinstance(params, dict) else None
    reply: dict[str, Any] = {"error": E.FRAGMENT_MISSING.format(file=js_str(name)), "file": name}
    service = message.get("service")
    if service:
        reply["service"] = service
    if isinstance(params, dict) and params.get("isServiceFragment"):
        reply["isServiceFragment"] = True
    return reply


def read_fragment(folder: str, message: dict[str, Any]) -> dict[str, Any]:
    """Read ``message["params"]["file"]`` from ``folder`` and return the reply message:
    ``{fragmentName, content}``, or QEWD's missing-file error. Never reads outside
    ``folder``; never blocks on a FIFO or device (only regular files are read)."""
    params = message.get("params")
    name = params.get("file") if isinstance(params, dict) else None
    path = fragment_path(folder, name)
    if path is None:
        return fragment_reply(message)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return fragment_reply(message)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return fragment_reply(message)
        with os.fdopen(fd, "rb") as f:
            fd = -1
            data = f.read()
    except OSError:
        return {"error": E.FRAGMENT_UNREADABLE.format(file=name)}
    finally:
        if fd >= 0:
            os.close(fd)
    return {"fragmentName": name, "content": data.decode("utf-8", errors="replace")}
