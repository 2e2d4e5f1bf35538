# -*- test-case-name: tests.test_rest_routing -*-
"""
REST route tables: path templates with ``:vars``, a module's ``routes`` table, and the
mount points of the startup file's ``routes``. Pure: no Twisted, no I/O.

A template is qewd-router's (route-parser) syntax, docs/protocol.md §4.5: ``:name`` matches one
path segment, ``*name`` matches the rest (slashes included), ``(...)`` makes a part optional;
one trailing ``/`` on the path is ignored. Values are percent-decoded.

A module's ``routes`` table comes in either of qewd-router's shapes (DESIGN.md "REST modules"):

- a list of ``{"url": "/api/users/:id", "method": "GET", "handler": fn}`` (``method`` absent or
  ``"ANY"``: any method; ``path`` is accepted for ``url``);
- ``addMicroServiceHandler``'s object: ``{"/api/users/:id": {"GET": fn, "ANY": fn}}``.

Imports ``qewd_twisted.errors`` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import unquote

from qewd_twisted import errors as E

__all__ = [
    "ANY",
    "Matched",
    "Mount",
    "MountTable",
    "NOT_FOUND_TEXT",
    "NoRoute",
    "PathTemplate",
    "RestRoute",
    "RouteError",
    "RouteTable",
    "WrongMethod",
    "strip_query",
]

ANY = "ANY"
#: qewd-router's default for a path no route matches (status 404)
NOT_FOUND_TEXT = E.REST_NOT_FOUND

_TOKEN = re.compile(r":([A-Za-z_$][\w$]*)|\*([A-Za-z_$][\w$]*)?|\(|\)|[^:*()]+")


class RouteError(ValueError):
    """A route table or template is unusable; ``problems`` lists why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def strip_query(path: str) -> str:
    """The path part of a request target (no ``?query``, no ``#fragment``)."""
    for sep in ("?", "#"):
        i = path.find(sep)
        if i >= 0:
            path = path[:i]
    return path


@dataclass(frozen=True)
class PathTemplate:
    """One compiled template: ``match(path)`` gives the variables or None."""

    text: str
    names: tuple[str, ...]
    _regex: re.Pattern[str] = field(repr=False, compare=False)

    @classmethod
    def compile(cls, text: str) -> PathTemplate:
        if not isinstance(text, str) or not text.startswith("/"):
            raise RouteError([f"a path template starts with '/', got {text!r}"])
        out: list[str] = []
        names: list[str] = []
        depth = 0
        pos = 0
        for m in _TOKEN.finditer(text):
            if m.start() != pos:
                break
            pos = m.end()
            var, splat = m.group(1), m.group(2)
            token = m.group(0)
            if var:
                names.append(var)
                out.append(f"(?P<{_group(var, names)}>[^/?#]+)")
            elif token.startswith("*"):
                name = splat or "splat"
                names.append(name)
                out.append(f"(?P<{_group(name, names)}>.*?)")
            elif token == "(":
                depth += 1
                out.append("(?:")
            elif token == ")":
                depth -= 1
                if depth < 0:
                    raise RouteError([f"unbalanced ')' in {text!r}"])
                out.append(")?")
            else:
                out.append(re.escape(token))
        if pos != len(text):
            raise RouteError([f"cannot parse {text!r} at {text[pos:]!r}"])
        if depth:
            raise RouteError([f"unbalanced '(' in {text!r}"])
        if len(set(names)) != len(names):
            raise RouteError([f"a variable name is used twice in {text!r}"])
        return cls(text, tuple(names), re.compile("".join(out) + r"\Z"))

    def match(self, path: str) -> dict[str, str] | None:
        """The template's variables in ``path`` (query ignored), or None if it does not match."""
        path = strip_query(path)
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        m = self._regex.match(path)
        if m is None:
            return None
        out = {}
        for i, name in enumerate(self.names):
            value = m.group(f"v{i}")
            if value is not None:
                out[name] = unquote(value)
        return out


def _group(name: str, names: list[str]) -> str:
    # regex group names must be identifiers (``$`` is not): number them; ``names`` keeps the
    # real names in order, ``name`` is the last of them
    return f"v{len(names) - 1}"


@dataclass(frozen=True)
class RestRoute:
    """One row of a route table: ``method`` is upper case, None for any method."""

    template: PathTemplate
    method: str | None
    handler: Callable[..., Any]
    authenticate: bool = False

    @property
    def url(self) -> str:
        return self.template.text


@dataclass(frozen=True)
class Matched:
    route: RestRoute
    args: dict[str, str]


@dataclass(frozen=True)
class NoRoute:
    """No template matches: answer ``status`` with ``{"error": text}``."""

    status: int = 404
    text: str = NOT_FOUND_TEXT


@dataclass(frozen=True)
class WrongMethod:
    """A template matches, not with this method: 405 with ``Allow: <allowed>``."""

    allowed: tuple[str, ...]


class RouteTable:
    """A module's REST routes, in order (the first match wins, as in qewd-router)."""

    def __init__(self, routes: Iterable[RestRoute], not_found: NoRoute = NoRoute()) -> None:
        self.routes = tuple(routes)
        self.not_found = not_found
        self._by_template: dict[str, dict[str, RestRoute]] = {}
        for route in self.routes:
            methods = self._by_template.setdefault(route.url, {})
            methods.setdefault(route.method or ANY, route)

    @classmethod
    def from_table(cls, table: Any, mount: str | None = None) -> RouteTable:
        """Build from a module's ``routes`` (either shape). ``mount``: a ``url`` that does not
        start with the mount path is taken as relative to it. Raises RouteError."""
        problems: list[str] = []
        routes: list[RestRoute] = []
        not_found = NoRoute()
        rows: list[tuple[str, Any]] = []
        if isinstance(table, Mapping):
            for url, methods in table.items():
                if not isinstance(methods, Mapping):
                    problems.append(f"routes[{url!r}] must map methods to handlers")
                    continue
                for method, handler in methods.items():
                    rows.append((f"routes[{url!r}][{method!r}]",
                                 {"url": url, "method": method, "handler": handler}))
        elif isinstance(table, (list, tuple)):
            rows = [(f"routes[{i}]", row) for i, row in enumerate(table)]
        else:
            raise RouteError([f"routes must be a list of {{url, method, handler}}, "
                              f"got {type(table).__name__}"])
        for where, row in rows:
            if not isinstance(row, Mapping):
                problems.append(f"{where} must be a dict {{url, method, handler}}")
                continue
            if "else" in row:  # QEWD-Up's custom answer for unmatched paths
                other = row["else"]
                code = other.get("statusCode", 404) if isinstance(other, Mapping) else None
                text = other.get("text", NOT_FOUND_TEXT) if isinstance(other, Mapping) else None
                if not isinstance(code, int) or not 400 <= code <= 599 or not isinstance(text, str):
                    problems.append(f"{where}.else must be {{statusCode: 4xx/5xx, text: str}}")
                else:
                    not_found = NoRoute(code, text)
                continue
            url = row.get("url", row.get("path"))
            handler = row.get("handler")
            method = row.get("method")
            if not isinstance(url, str) or not url.startswith("/"):
                problems.append(f"{where}.url must be a path such as '/api/users/:id'")
                continue
            if mount and mount != "/" and url != mount and not url.startswith(mount + "/"):
                url = mount + url if url != "/" else mount
            if not callable(handler):
                problems.append(f"{where}.handler must be a function (args, finished)")
                continue
            if method is not None and (not isinstance(method, str) or not method):
                problems.append(f"{where}.method must be an HTTP method name or 'ANY'")
                continue
            method = method.upper() if method else None
            try:
                template = PathTemplate.compile(url)
            except RouteError as e:
                problems.extend(f"{where}.url: {p}" for p in e.problems)
                continue
            routes.append(RestRoute(template, None if method == ANY else method, handler,
                                    bool(row.get("authenticate", False))))
        if problems:
            raise RouteError(problems)
        return cls(routes, not_found)

    def match(self, path: str, method: str) -> Matched | NoRoute | WrongMethod:
        """The route for an HTTP request. HEAD matches a GET route when no route names HEAD."""
        method = method.upper()
        allowed: list[str] = []
        fallback: Matched | None = None
        for route in self.routes:
            args = route.template.match(path)
            if args is None:
                continue
            if route.method is None or route.method == method:
                return Matched(route, args)
            if method == "HEAD" and route.method == "GET" and fallback is None:
                fallback = Matched(route, args)
            if route.method not in allowed:
                allowed.append(route.method)
        if fallback is not None:
            return fallback
        if allowed:
            if "GET" in allowed and "HEAD" not in allowed:
                allowed.append("HEAD")
            return WrongMethod(tuple(allowed))
        return self.not_found

    def by_template(self, template: str, method: str | None) -> RestRoute | str:
        """A forwarded ``restRequest``'s route, by the primary's ``pathTemplate`` and method
        (``ANY`` as the fallback), as qewd-router's ``addMicroServiceHandler`` dispatches; or
        qewd-router's error text."""
        methods = self._by_template.get(template)
        if methods is None:
            return E.MS_NO_ROUTES
        route = methods.get(method.upper()) if isinstance(method, str) else None
        if route is None:
            route = methods.get(ANY)
        return route if route is not None else E.MS_NO_HANDLER


@dataclass(frozen=True)
class Mount:
    """The startup file's ``routes`` entry: requests under ``path`` go to ``application``."""

    path: str
    application: str


class MountTable:
    """The mount points, longest path first."""

    def __init__(self, mounts: Iterable[Mount]) -> None:
        self.mounts = tuple(sorted(mounts, key=lambda m: -len(m.path)))

    def __bool__(self) -> bool:
        return bool(self.mounts)

    def find(self, path: str) -> Mount | None:
        path = strip_query(path)
        for mount in self.mounts:
            if mount.path == "/" or path == mount.path or path.startswith(mount.path + "/"):
                return mount
        return None

    def first_segments(self) -> set[str]:
        """The first path segment of every mount (where the site attaches the resource)."""
        return {m.path.strip("/").split("/")[0] for m in self.mounts}
