# -*- test-case-name: tests.test_config -*-
"""
Validation machinery behind config.py: key paths, the problem collector, and ``u_services``.

Private: import the public names (`Destination`, `Route`, `MicroServicesConfig`) from
``qewd_twisted.config``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

_HINTS = {"interface": "use listen, e.g. 'tcp:8080:interface=127.0.0.1'"}
_EXAMPLE_URL = "a URL such as 'http://10.0.0.5:8080'"


def _all_urls(obj: Any) -> None:
    """``urls`` defaults to ``(url,)``: a destination or route with one host."""
    if not obj.urls:
        object.__setattr__(obj, "urls", (obj.url,))


@dataclass(frozen=True)
class Destination:
    """A named remote node and application: ``u_services.destinations.<name>`` (object form).

    ``urls``: every replica's URL, in the order given (``host`` as a list, or ``hosts``); one
    host: ``(url,)``. ``url`` is the first of them."""

    name: str
    url: str
    application: str
    urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _all_urls(self)


@dataclass(frozen=True)
class Route:
    """Messages of ``type`` for the local ``application`` go to the node at ``url``, where they
    run as ``remote_application``. ``destination``: the destination named, if any. ``urls``:
    the replicas (each request goes to one live one of them); one host: ``(url,)``."""

    application: str
    type: str
    url: str
    remote_application: str
    destination: str | None = None
    urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _all_urls(self)


@dataclass(frozen=True)
class RestServiceRoute:
    """A REST micro-service route (``u_services.routes[i]`` with ``path``, §4.1 B, §4.5):
    requests whose path matches ``path`` (and ``method``, if given) are forwarded to
    ``destination`` (or the ``:destination`` path variable). ``on_request`` /
    ``on_response`` are QEWD's hooks; ``bypass_jwt_check`` forwards the client's JWT unchecked
    (the remote checks it)."""

    path: str
    method: str | None = None
    destination: str | None = None
    bypass_jwt_check: bool = False
    on_request: Any = field(default=None, compare=False)
    on_response: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class MicroServicesConfig:
    """``u_services`` in either QEWD form (docs/protocol.md §4.1), normalised.

    ``routes`` is keyed by (local application, type). ``groups`` maps each group destination
    to its member names (checked, kept for REST routes). URLs are ``scheme://host:port``.
    """

    destinations: dict[str, Destination] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    rest_routes: tuple[RestServiceRoute, ...] = ()

    @property
    def urls(self) -> list[str]:
        """The distinct remote URLs that routes use (every replica's), sorted: one link per
        URL."""
        return sorted({url for route in self.routes.values() for url in route.urls})

    def route(self, application: str, type: str) -> Route | None:
        """The route for a message of ``type`` from ``application``; None: handle it locally."""
        return self.routes.get((application, type))


# -- key paths and the problem collector -----------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_$-]+\Z")


def key_path(path: str, key: Any) -> str:
    """The key path of ``key`` inside ``path``: ``config.jwt``, or ``config['odd key']``."""
    if isinstance(key, str) and _PLAIN_KEY.match(key):
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


def show(value: Any, secret: bool = False) -> str:
    """A value as quoted in a problem: its repr (unless it may be a secret) and its type."""
    if secret and value != "":
        return type(value).__name__
    text = repr(value)
    return f"{text[:57] + '...' if len(text) > 60 else text} ({type(value).__name__})"


def suggest(key: Any, known: tuple[str, ...]) -> str:
    """A hint for an unknown key: a fixed one, or the closest known key, ignoring case."""
    if key in _HINTS:
        return f" ({_HINTS[key]})"
    if not isinstance(key, str):
        return ""
    lowered = {k.lower(): k for k in known}
    match = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.75)
    return f" (did you mean '{lowered[match[0]]}'?)" if match else ""


class Checker:
    """Collects problems. The ``get_*`` helpers record a problem and return the default, so
    validation carries on and every problem is reported in one go."""

    def __init__(self, base_dir: str) -> None:
        self.base_dir = base_dir
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def check_keys(self, d: dict[Any, Any], path: str, known: tuple[str, ...]) -> None:
        for key in d:
            if key not in known:
                self.add(key_path(path, key), "unknown key" + suggest(key, known))

    def get_str(
        self,
        d: dict[str, Any],
        key: str,
        path: str,
        default: str | None = None,
        secret: bool = False,
        required: str = "",
    ) -> str | None:
        """A non-empty string. With ``required`` (what it is), absence is a problem too."""
        v = d.get(key)
        if v is None:
            if required:
                self.add(key_path(path, key), f"missing ({required})")
            return default
        if not isinstance(v, str) or not v:
            self.add(key_path(path, key), f"must be a non-empty string, got {show(v, secret)}")
            return default
        return v

    def get_int(
        self, d: dict[str, Any], key: str, default: Any, lo: int, hi: int | None = None,
        path: str = "config",
    ) -> Any:
        """An integer in ``lo..hi`` (``d`` is at ``path``; by default the top level); a bool is
        not an integer here. Absent: ``default``."""
        v = d.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            expect = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"
            self.add(key_path(path, key), f"must be {expect}, got {show(v)}")
            return default
        return v

    def get_seconds(
        self, d: dict[str, Any], key: str, default: float, zero_ok: bool = False,
        path: str = "config",
    ) -> float:
        """A duration in seconds (``d`` is at ``path``; by default the top level): a finite int
        or float, > 0 (or >= 0). Absent: ``default``."""
        v = d.get(key)
        if v is None:
            return default
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or v < 0 or (v == 0 and not zero_ok):
            expect = ">= 0" if zero_ok else "> 0"
            self.add(key_path(path, key), f"must be a number of seconds {expect}, got {show(v)}")
            return default
        return float(v)

    def get_bool(self, d: dict[str, Any], key: str, default: bool) -> bool:
        v = d.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.add(key_path("config", key), f"must be True or False, got {show(v)}")
            return default
        return v

    def get_list(self, d: dict[str, Any], key: str, path: str, what: str) -> list[Any] | None:
        """A non-empty list (or tuple) of ``what``; None if absent or after a problem."""
        v = d.get(key)
        if v is None:
            return None
        if not isinstance(v, (list, tuple)) or not v:
            self.add(key_path(path, key), f"must be a non-empty list of {what}, got {show(v)}")
            return None
        return list(v)

    def resolve(self, value: str) -> str:
        """A path from the config, made absolute against the base directory."""
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(value)))


# -- u_services ------------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_TARGET = "{url, application} or {destination}"


class _MicroServicesChecker:
    """Validates ``u_services``, in either QEWD form, into a `MicroServicesConfig`."""

    def __init__(self, c: Checker) -> None:
        self.c = c
        self.destinations: dict[str, Destination] = {}
        self.groups: dict[str, tuple[str, ...]] = {}
        self.declared: set[str] = set()  # every destination name, valid or not

    def check(self, raw: Any, path: str) -> MicroServicesConfig:
        c = self.c
        if raw is None:
            return MicroServicesConfig()
        entries: Any = raw  # the array form: WebSocket routes only
        if isinstance(raw, dict):  # the object form: {destinations, routes}
            c.check_keys(raw, path, ("destinations", "routes"))
            destinations = raw.get("destinations")
            if destinations is not None and not isinstance(destinations, dict):
                c.add(path + ".destinations", f"must be a dict, got {show(destinations)}")
            elif destinations:
                self._destinations(destinations, path + ".destinations")
            entries, path = raw.get("routes", []), path + ".routes"
            if entries is None:
                entries = []
            elif not isinstance(entries, (list, tuple)):
                c.add(path, f"must be a list of routes, got {show(entries)}")
                entries = []
        elif not isinstance(raw, (list, tuple)):
            c.add(
                path,
                f"must be a list of routes or a {{destinations, routes}} dict, got {show(raw)}",
            )
            return MicroServicesConfig()
        routes: dict[tuple[str, str], Route] = {}
        rest_routes: list[RestServiceRoute] = []
        seen_at: dict[tuple[str, str], str] = {}
        for i, entry in enumerate(entries):
            rpath = f"{path}[{i}]"
            if not isinstance(entry, dict):
                c.add(rpath, f"must be a dict {{application, types}}, got {show(entry)}")
                continue
            if "path" in entry:
                rest = self._rest_route(entry, rpath)
                if rest is not None:
                    rest_routes.append(rest)
                continue
            c.check_keys(entry, rpath, ("application", "types"))
            app = c.get_str(entry, "application", rpath, required="the local application name")
            types = entry.get("types")
            if not isinstance(types, dict) or not types:
                got = "missing" if types is None else f"got {show(types)}"
                c.add(rpath + ".types", f"must be a non-empty dict {{type: {_TARGET}}}, {got}")
                continue
            for type_name, target in types.items():
                tpath = key_path(rpath + ".types", type_name)
                if not isinstance(type_name, str) or not type_name:
                    c.add(tpath, "message types must be non-empty strings")
                    continue
                found = self._target(target, tpath)
                if found is None or app is None:
                    continue
                key = (app, type_name)
                if key in routes:
                    c.add(
                        tpath,
                        f"duplicate route for application {app!r}, type {type_name!r} "
                        f"(also at {seen_at[key]})",
                    )
                    continue
                routes[key] = Route(app, type_name, *found)
                seen_at[key] = tpath
        return MicroServicesConfig(self.destinations, self.groups, routes, tuple(rest_routes))

    def _rest_route(self, entry: dict[Any, Any], rpath: str) -> RestServiceRoute | None:
        """``{path, method, destination, bypassJWTCheck, onRequest, onResponse}``."""
        c = self.c
        c.check_keys(entry, rpath, ("path", "method", "destination", "bypassJWTCheck",
                                    "onRequest", "onResponse"))
        n = len(c.problems)
        path = entry.get("path")
        variables: list[str] = []
        if not isinstance(path, str) or not path.startswith("/"):
            c.add(rpath + ".path", f"must be a path template such as '/api/users/:id', "
                  f"got {show(path)}")
        else:
            variables = re.findall(r":([A-Za-z_$][\w$]*)", path)
        method = entry.get("method")
        if method is not None and (not isinstance(method, str) or not method.isalpha()):
            c.add(rpath + ".method", f"must be an HTTP method such as 'GET', got {show(method)}")
        destination = entry.get("destination")
        if destination is not None:
            if not isinstance(destination, str) or not destination:
                c.add(rpath + ".destination", f"must be a destination name, got "
                      f"{show(destination)}")
            elif destination not in self.declared:
                c.add(rpath + ".destination", f"unknown destination {destination!r}")
        elif "destination" not in variables and entry.get("onRequest") is None:
            c.add(rpath, "needs a destination, a :destination variable in path, or onRequest")
        for hook in ("onRequest", "onResponse"):
            if entry.get(hook) is not None and not callable(entry[hook]):
                c.add(f"{rpath}.{hook}", "must be a function")
        bypass = entry.get("bypassJWTCheck", False)
        if not isinstance(bypass, bool):
            c.add(rpath + ".bypassJWTCheck", f"must be True or False, got {show(bypass)}")
        if len(c.problems) != n:
            return None
        return RestServiceRoute(path, method.upper() if method else None, destination,
                                bypass, entry.get("onRequest"), entry.get("onResponse"))

    def _destinations(self, raw: dict[Any, Any], path: str) -> None:
        c = self.c
        for name, entry in raw.items():
            dpath = key_path(path, name)
            if not isinstance(name, str) or not name:
                c.add(dpath, "destination names must be non-empty strings")
                continue
            self.declared.add(name)
            if not isinstance(entry, dict):
                c.add(
                    dpath,
                    f"must be {{host, application}} or {{destinations: [names]}}, "
                    f"got {show(entry)}",
                )
            elif entry.get("destinations") is not None:  # a group (fan-out)
                c.check_keys(entry, dpath, ("destinations",))
                members = c.get_list(entry, "destinations", dpath, "destination names")
                if members is not None and all(isinstance(m, str) and m for m in members):
                    self.groups[name] = tuple(members)
                elif members is not None:
                    c.add(dpath + ".destinations", "destination names must be non-empty strings")
            else:
                c.check_keys(entry, dpath, ("host", "hosts", "application", "destinations"))
                urls = self._hosts(entry, dpath)
                app = c.get_str(entry, "application", dpath, required="the remote application")
                if urls and app:
                    self.destinations[name] = Destination(name, urls[0], app, urls)
        for name, group in self.groups.items():
            for i, member in enumerate(group):
                if member not in self.declared:
                    c.add(
                        f"{key_path(path, name)}.destinations[{i}]",
                        f"unknown destination {member!r}",
                    )
            cycle = self._cycle(name, [name])
            if cycle:
                c.add(key_path(path, name), "group contains itself: " + " -> ".join(cycle))

    def _hosts(self, entry: dict[Any, Any], dpath: str) -> tuple[str, ...] | None:
        """A destination's replicas: ``host`` (QEWD's one URL, or a list of them) or
        ``hosts`` (a list); None after a problem."""
        c = self.c
        if entry.get("host") is not None and entry.get("hosts") is not None:
            c.add(dpath, "give host or hosts, not both")
            return None
        key = "hosts" if entry.get("hosts") is not None else "host"
        value = entry.get(key)
        if value is None:
            c.add(dpath + ".host", f"missing ({_EXAMPLE_URL})")
            return None
        if key == "hosts" and not isinstance(value, (list, tuple)):
            c.add(dpath + ".hosts", f"must be a non-empty list of URLs, got {show(value)}")
            return None
        return _urls(c, value, f"{dpath}.{key}")

    def _cycle(self, start: str, trail: list[str]) -> list[str] | None:
        """A path of group memberships leading from ``start`` back to it, if any."""
        for member in self.groups.get(trail[-1], ()):
            if member == start:
                return trail + [member]
            if member in self.groups and member not in trail:
                found = self._cycle(start, trail + [member])
                if found:
                    return found
        return None

    def _target(
        self, target: Any, tpath: str
    ) -> tuple[str, str, str | None, tuple[str, ...]] | None:
        """One ``types`` entry → (url, remote application, destination name, urls), or
        None."""
        c = self.c
        if not isinstance(target, dict):
            c.add(tpath, f"must be {_TARGET}, got {show(target)}")
            return None
        c.check_keys(target, tpath, ("url", "application", "destination"))
        name = target.get("destination")
        if name is None:
            raw_url = target.get("url")
            if raw_url is None:
                c.add(tpath + ".url", f"missing ({_EXAMPLE_URL})")
            urls = _urls(c, raw_url, tpath + ".url") if raw_url is not None else None
            app = c.get_str(target, "application", tpath, required="the remote application")
            return (urls[0], app, None, urls) if urls and app else None
        if target.get("url") is not None or target.get("application") is not None:
            c.add(tpath, "give either destination or url + application, not both")
        elif not isinstance(name, str) or not name:
            c.add(tpath + ".destination", f"must be a destination name, got {show(name)}")
        elif name in self.groups:
            c.add(
                tpath + ".destination",
                f"{name!r} is a group: group destinations are only for REST routes",
            )
        elif name not in self.declared:
            c.add(tpath + ".destination", f"unknown destination {name!r}")
        elif name in self.destinations:  # else it is invalid, and reported already
            dest = self.destinations[name]
            return dest.url, dest.application, name, dest.urls
        return None


def _url(c: Checker, value: Any, path: str) -> str | None:
    """A remote node's URL, normalised to ``scheme://host:port``; None after a problem.

    http/ws and https/wss are accepted (a link always speaks WebSocket, with TLS for the
    latter two). The port defaults to 80 / 443 when omitted, as QEWD-Up writes such URLs.
    """
    if not isinstance(value, str) or not value:
        c.add(path, f"must be {_EXAMPLE_URL}, got {show(value)}")
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as e:
        c.add(path, f"invalid URL {value!r}: {e}")
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not value.lower().startswith(scheme + "://"):
        c.add(path, f"invalid URL {value!r}: must start with http://, https://, ws:// or wss://")
        return None
    problems = []
    if not parts.hostname:
        problems.append("no host")
    if parts.username is not None or parts.password is not None:
        problems.append("no user name or password allowed")
    if parts.path not in ("", "/"):
        problems.append(f"no path allowed (got {parts.path!r}; links connect to /socket.io/)")
    if parts.query or parts.fragment:
        problems.append("no query or fragment allowed")
    if port == 0:
        problems.append("port 0 is not a remote port")
    if problems:
        c.add(path, f"invalid URL {value!r}: " + "; ".join(problems))
        return None
    host = parts.hostname or ""
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port or _DEFAULT_PORTS[scheme]}"


def _urls(c: Checker, value: Any, path: str) -> tuple[str, ...] | None:
    """One URL (QEWD's form) or a non-empty list of distinct ones (replicas), normalised;
    None after a problem."""
    if not isinstance(value, (list, tuple)):
        url = _url(c, value, path)
        return (url,) if url else None
    if not value:
        c.add(path, f"must be {_EXAMPLE_URL} or a non-empty list of them, got {show(value)}")
        return None
    n = len(c.problems)
    seen: dict[str, int] = {}  # normalised URL -> its first index
    for i, item in enumerate(value):
        url = _url(c, item, f"{path}[{i}]")
        if url is None:
            continue
        if url in seen:
            c.add(f"{path}[{i}]", f"{url} is listed twice (also at [{seen[url]}])")
            continue
        seen[url] = i
    return tuple(seen) if len(c.problems) == n else None


def check_u_services(c: Checker, raw: Any, path: str) -> MicroServicesConfig:
    """Validate ``u_services`` (either QEWD form, docs/protocol.md §4.1), reporting to ``c``."""
    return _MicroServicesChecker(c).check(raw, path)


#: ``processes`` unless set: the node is the one process ``twistd qewd`` runs.
DEFAULT_PROCESSES = 1
#: At most this many processes per node: far past any core count a node is run on.
MAX_PROCESSES = 256
#: Endpoint kinds whose listening socket the supervisor can open once and hand to its processes
#: (qewd_twisted/cluster): TCP, TLS on TCP, UNIX sockets.
SHAREABLE_ENDPOINTS = ("tcp", "tcp6", "ssl", "unix")


def check_processes(c: Checker, d: dict[str, Any], listen: list[str]) -> int:
    """``processes``: how many node processes ``twistd qewd`` runs on the same listening
    sockets (1: the node is this process). With more than one, every endpoint it listens on
    (``listen``, ``metrics.listen``) must be one the supervisor can share."""
    n = c.get_int(d, "processes", DEFAULT_PROCESSES, 1, MAX_PROCESSES)
    if n == 1:
        return n
    raw = d.get("listen")
    raw_listen = [raw] if isinstance(raw, str) else raw if isinstance(raw, (list, tuple)) else []
    endpoints = [("config.listen", e) for e in [*listen, *raw_listen] if isinstance(e, str)]
    endpoints = list(dict.fromkeys(endpoints))  # the parsed ones, and any that did not parse
    metrics = d.get("metrics")
    if isinstance(metrics, dict) and isinstance(metrics.get("listen"), str):
        endpoints.append(("config.metrics.listen", metrics["listen"]))
    for path, description in endpoints:
        kind = description.split(":", 1)[0]
        if kind not in SHAREABLE_ENDPOINTS:
            c.add("config.processes",
                  f"{n} processes share their listening sockets, which works for "
                  f"{', '.join(SHAREABLE_ENDPOINTS)} endpoints only; {path} is {description!r}")
    return n
