# -*- test-case-name: tests.test_config -*-
"""
The startup file: loading it, and turning its ``config`` dict into a validated `Config`.

A startup file is a Python module that defines ``config``, a dict with QEWD.js's own keys
(docs/protocol.md §7) plus a few of ours (``listen``, ``handlerTimeout``, ...), so a QEWD.js startup
file translates line by line. Validation collects every problem, each starting with its key
path (``config.jwt.secret: missing (the signing secret)``), and raises one `ConfigError` that
lists them all before anything starts. Nothing here binds a port, imports a handler module or
touches the reactor. docs/configuration.md is the user-facing reference.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import dataclasses
import itertools
import keyword
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import Any

from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.testing import MemoryReactor

from qewd_twisted.config.features import message_feature_keys
from qewd_twisted.config.rest import RestMount, check_routes
from qewd_twisted.config.checks import (
    Checker,
    Destination,
    MicroServicesConfig,
    RestServiceRoute,
    Route,
    DEFAULT_PROCESSES,
    check_processes,
    check_u_services,
    key_path,
    show,
    suggest,
)
from qewd_twisted.config.limits import CONFIG_KEYS, Limits

__all__ = [
    "Config",
    "ConfigError",
    "Destination",
    "JWTConfig",
    "Limits",
    "MicroServicesConfig",
    "ModuleSpec",
    "RestMount",
    "RestServiceRoute",
    "Route",
    "config_from_dict",
    "load_config",
]

DEFAULT_PORT = 8080
JWT_ALGORITHMS = ("HS256", "HS384", "HS512")
# "qewd": AES-256-CBC as QEWD.js does it (§3.3), the default; "aes-256-gcm": authenticated,
# random nonce, for meshes of qewd-twisted nodes only (QEWD.js cannot read it).
JWT_CIPHERS = ("qewd", "aes-256-gcm")

# The keys we read. Ours follow QEWD's camelCase style; max_queue_length is QEWD's spelling.
SUPPORTED_KEYS = (
    *("port", "listen", "ssl", "poolSize", "jwt", "moduleMap", "u_services", "cors"),
    "poolSchedBatch",  # the pool threads' scheduling policy (apps/pool.py, docs/performance.md)
    *("initialSessionTimeout", "webServerRootPath", "serverName", "managementPassword"),
    *("handlerTimeout", "microServiceTimeout", "maxMessageSize", "max_queue_length"),
    *("shutdownGracePeriod", "maxConnections", "maxInFlight", "maxBufferedBytes"),
    "maxInFlightPerLink", "maxBodySize",
    *("pingInterval", "pingTimeout", "maxPendingHandshakes"),  # Engine.IO (docs/browser.md)
    *("metrics", "status", "logRequests"),  # operations (docs/operations.md)
    # the HTTP layer's limits (config/limits.py, docs/reliability.md)
    *("headerTimeout", "bodyTimeout", "wsPingInterval", "wsPingTimeout", "registerTimeout"),
    *("maxConnectionsPerAddress", "allowedOrigins", "stallTimeout", "maxRanges"),
    *("statusAuthFailures", "statusAuthWindow"),
    *("database", "sessionDocumentName"),  # documents and sessions (docs/documents.md)
    "push",  # server push across nodes through the database's Redis (pushbus/)
    *("processes", "processHeartbeatTimeout"),  # processes of one node (docs/reliability.md)
    *("lockSession", "webSockets", "permit_application_switch"),  # docs/compatibility.md
)
# QEWD.js keys that change nothing here (database, Express/Koa, child-process pool details):
# accepted so that a translated startup file keeps working, and listed in Config.ignored_keys.
IGNORED_KEYS = (
    *("webServer", "poolPrefork", "idleLimit", "mode"),
    *("bodyParser", "resilientMode", "errorLogFile"),
)
# QEWD.js keys whose behaviour we do not provide: ignoring them would silently change what the
# node does, so they are problems, with their own message rather than "unknown key".
UNSUPPORTED_QEWD_KEYS = (
    *("no_sockets", "addMiddleware", "addMiddlewareUp", "customSocketModule"),
    *("qewd_up", "service_name", "use_worker_threads"),
    "onWorkerStartedPath",
)


class ConfigError(Exception):
    """The startup file or its ``config`` is unusable.

    ``problems`` lists every problem found, each starting with its key path (or, for a file
    that cannot be loaded, the file's path); ``source`` is the startup file, if any.
    ``str()`` is a header line followed by one problem per line.
    """

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        super().__init__(problems, source)
        self.problems = list(problems)
        self.source = source

    def __str__(self) -> str:
        n = len(self.problems)
        where = f" in {self.source}" if self.source else ""
        header = f"invalid qewd-twisted configuration{where}: {n} problem{'s' * (n != 1)}"
        return "\n".join([header] + ["  " + p for p in self.problems])


@dataclass(frozen=True)
class JWTConfig:
    """JWT mode (QEWD's ``jwt: {secret}``). ``algorithms``: the signature algorithms accepted
    on incoming tokens; ``previous_secrets``: older secrets still accepted (rotation)."""

    secret: str = field(repr=False)
    algorithms: tuple[str, ...] = ("HS256",)
    previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    cipher: str = "qewd"  # the qewd claim's cipher: "qewd" (QEWD.js's) or "aes-256-gcm"


@dataclass(frozen=True)
class ModuleSpec:
    """Where an application's handler module comes from: either ``path`` (an absolute ``.py``
    file) or ``module`` (a dotted module name). Checked here, imported by apps.py."""

    application: str
    path: str | None = None
    module: str | None = None


@dataclass(frozen=True)
class Config:
    """A validated startup config, from `load_config` or `config_from_dict` (constructing one
    directly, e.g. in tests, skips validation). ``raw`` is the dict as written."""

    listen: list[str] = field(default_factory=lambda: [f"tcp:{DEFAULT_PORT}"])
    port: int | None = DEFAULT_PORT
    pool_size: int = 2
    pool_sched_batch: bool = True
    jwt: JWTConfig | None = None
    module_map: dict[str, ModuleSpec] = field(default_factory=dict)
    initial_session_timeout: int = Limits.initial_session_timeout
    web_server_root: str | None = None
    server_name: str = "qewd"
    management_password: str = field(default="keepThisSecret", repr=False)
    cors: bool = False
    handler_timeout: float = Limits.handler_timeout  # type: ignore[assignment]
    micro_service_timeout: float = Limits.micro_service_timeout  # type: ignore[assignment]
    max_message_size: int = Limits.max_message_size
    max_queue_length: int = Limits.max_queue_length
    shutdown_grace: float = Limits.shutdown_grace
    max_connections: int = Limits.max_connections
    max_in_flight: int = Limits.max_in_flight
    max_in_flight_link: int = Limits.max_in_flight_link
    max_buffered_bytes: int = Limits.max_buffered_bytes
    ping_interval: int = Limits.ping_interval
    ping_timeout: int = Limits.ping_timeout
    max_pending_handshakes: int = Limits.max_pending_handshakes
    micro_services: MicroServicesConfig = field(default_factory=MicroServicesConfig)
    rest_mounts: tuple[RestMount, ...] = ()  # the startup file's routes (config/rest.py)
    max_body_size: int = Limits.max_body_size  # REST and /ajax request bodies (maxBodySize)
    processes: int = DEFAULT_PROCESSES  # node processes under twistd qewd (cluster/)
    process_heartbeat_timeout: float = Limits.process_heartbeat_timeout
    metrics: bool = False  # serve /metrics (on metrics_listen, if set, else the node's port)
    metrics_listen: str | None = None
    status: bool = True  # the /status page (served only if managementPassword is set)
    log_requests: bool = False  # one log event per finished request
    header_timeout: float = Limits.header_timeout
    body_timeout: float = Limits.body_timeout
    max_connections_per_address: int | None = Limits.max_connections_per_address
    ws_ping_interval: float = Limits.ws_ping_interval
    ws_ping_timeout: float = Limits.ws_ping_timeout
    register_timeout: float = Limits.register_timeout
    stall_timeout: float = Limits.stall_timeout
    max_ranges: int = Limits.max_ranges
    auth_failures: int = Limits.auth_failures
    auth_window: float = Limits.auth_window
    allowed_origins: frozenset[str] | None = None  # browser origins allowed to upgrade (None: any)
    # files the node loads itself (startup file, moduleMap files, TLS key): never served
    own_files: tuple[str, ...] = ()
    # where documents and session-token sessions live: None (in memory) or a normalised
    # {"type": "sqlite"|"redis", "params": {...}} (docs/documents.md)
    database: dict[str, Any] | None = None
    session_document_name: str = "CacheTempEWDSession"  # QEWD's default
    # server push across the nodes sharing the database's Redis (``push``): on by default
    # with a Redis database; the pub/sub channel is CHANNEL_PREFIX + push_channel
    push_redis: bool = False
    push_channel: str = "db0"
    lock_session: float | None = None  # lockSession: seconds a request waits for its session
    io_paths: tuple[str, ...] = ()  # webSockets.io_paths: extra socket.io namespaces
    permit_application_switch: dict[str, dict[str, bool]] = field(default_factory=dict)
    ignored_keys: list[str] = field(default_factory=list)
    base_dir: str = field(default_factory=os.getcwd)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def limits(self) -> Limits:
        """The node's limits from this config, as one object (node, site, pool)."""
        return Limits(**{name: getattr(self, name) for name in CONFIG_KEYS})


# -- loading ---------------------------------------------------------------------------------

_module_counter = itertools.count(1)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Execute the startup file at ``path`` and validate its ``config`` dict.

    The file runs as a fresh module under a unique name (any file name works); while it runs,
    its directory is first on ``sys.path`` so it can import modules beside it. ``sys.path``
    and ``sys.modules`` are restored afterwards (modules it imported stay imported). Relative
    paths in the config are resolved against the file's directory. Raises `ConfigError` for a
    missing file, a syntax error, an exception while executing, a missing or non-dict
    ``config``, and for every problem in the config itself.
    """
    source = os.path.abspath(os.fspath(path))
    if not os.path.isfile(source):
        what = "not a file" if os.path.exists(source) else "no such file"
        raise ConfigError([f"{source}: {what}"], source)
    name = f"_qewd_startup_{next(_module_counter)}"
    loader = importlib.machinery.SourceFileLoader(name, source)
    spec = importlib.util.spec_from_file_location(name, source, loader=loader)
    if spec is None:  # cannot happen with an explicit loader; keeps mypy honest
        raise ConfigError([f"{source}: cannot be loaded as a module"], source)
    module = importlib.util.module_from_spec(spec)
    base_dir = os.path.dirname(source)
    sys.path.insert(0, base_dir)
    sys.modules[name] = module  # dataclasses and the like look their module up while it runs
    try:
        loader.exec_module(module)
    except SyntaxError as e:
        where = f"{e.filename or source}:{e.lineno}" if e.lineno else source
        raise ConfigError([f"{where}: syntax error: {e.msg}"], source) from e
    except (Exception, SystemExit) as e:
        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == source]
        where = f"{source}:{lines[-1]}" if lines else source
        problem = f"{where}: exception while executing: {type(e).__name__}: {e}"
        raise ConfigError([problem], source) from e
    finally:
        sys.modules.pop(name, None)
        if base_dir in sys.path:  # the first occurrence is the one inserted above
            sys.path.remove(base_dir)
    if not hasattr(module, "config"):
        raise ConfigError([f"{source}: defines no 'config' (a dict of QEWD config keys)"], source)
    if not isinstance(module.config, dict):
        kind = type(module.config).__name__
        raise ConfigError([f"{source}: 'config' must be a dict, not {kind}"], source)
    return _build(module.config, base_dir, source, getattr(module, "routes", None))


def config_from_dict(d: dict[str, Any], base_dir: str | None = None,
                     routes: list[dict[str, Any]] | None = None) -> Config:
    """Validate a config dict given directly (embedding). Relative paths are resolved against
    ``base_dir`` (default: the current directory); ``routes``: the REST mount points a startup
    file would define. Raises `ConfigError` listing every problem."""
    return _build(d, os.path.abspath(base_dir if base_dir is not None else os.getcwd()), None,
                  routes)


# -- the top level ---------------------------------------------------------------------------


def _build(d: Any, base_dir: str, source: str | None, routes: Any = None) -> Config:
    if not isinstance(d, dict):
        raise ConfigError([f"config: must be a dict, got {show(d)}"], source)
    c = Checker(base_dir)
    ignored: list[str] = []
    for key in d:
        if key in IGNORED_KEYS:
            ignored.append(key)
        elif key in UNSUPPORTED_QEWD_KEYS:
            c.add(key_path("config", key), "QEWD.js key not supported by qewd-twisted")
        elif key not in SUPPORTED_KEYS:
            c.add(
                key_path("config", key), "unknown key" + suggest(key, SUPPORTED_KEYS + IGNORED_KEYS)
            )
    listen, port = _listen(c, d)
    jwt = _jwt(c, d)
    raw_services = d.get("u_services")
    micro_services = check_u_services(c, raw_services, "config.u_services")
    if isinstance(raw_services, dict):
        raw_services = raw_services.get("routes")
    if isinstance(raw_services, (list, tuple)) and raw_services and _off(d.get("jwt")):
        c.add(
            "config.u_services",
            "forwarding to micro-services needs JWT mode: set "
            "config.jwt.secret (the same secret on every node)",
        )
    config = Config(
        listen=listen,
        port=port,
        pool_size=c.get_int(d, "poolSize", 2, 1),
        pool_sched_batch=c.get_bool(d, "poolSchedBatch", True),
        jwt=jwt,
        module_map=(module_map := _module_map(c, d)),
        rest_mounts=check_routes(c, routes, module_map, ModuleSpec, _is_dotted_name),
        web_server_root=_web_server_root(c, d),
        server_name=c.get_str(d, "serverName", "config") or "qewd",
        management_password=c.get_str(d, "managementPassword", "config", secret=True)
        or "keepThisSecret",
        cors=c.get_bool(d, "cors", False),
        micro_services=micro_services,
        processes=check_processes(c, d, listen),
        **_limits(c, d),
        **_operations(c, d, listen),
        allowed_origins=_allowed_origins(c, d),
        database=(database := _database(c, d)),
        **_push(c, d, database),
        session_document_name=c.get_str(d, "sessionDocumentName", "config")
        or "CacheTempEWDSession",
        **message_feature_keys(c, d),
        ignored_keys=ignored,
        base_dir=base_dir,
        raw=d,
    )
    own = [source] + [m.path for m in config.module_map.values() if m.path]
    ssl = d.get("ssl")
    if isinstance(ssl, dict) and isinstance(ssl.get("keyFilePath"), str):
        own.append(c.resolve(ssl["keyFilePath"]))
    config = dataclasses.replace(config, own_files=tuple(f for f in own if f))
    if config.web_server_root is not None:
        served = own_files_in(config.web_server_root, config.own_files)
        if served:
            c.add("config.webServerRootPath", web_root_problem(config.web_server_root, served))
    if c.problems:
        raise ConfigError(_in_file_order(c.problems, d), source)
    return config


def own_files_in(web_root: str, own_files: Iterable[str]) -> list[str]:
    """The node's own files (real paths, symlinks resolved) that ``web_root`` would serve."""
    root = os.path.realpath(web_root).rstrip(os.sep) + os.sep
    reals = {os.path.realpath(f) for f in own_files if f}
    return sorted(real for real in reals if real.startswith(root))


def web_root_problem(web_root: str, served: list[str]) -> str:
    """The ConfigError line for a web root that holds files the node loads itself."""
    return (f"{web_root} holds files this node loads itself, which it would serve to anyone: "
            f"{', '.join(served)}; point it at a directory of public files only")


def _in_file_order(problems: list[str], d: dict[Any, Any]) -> list[str]:
    """Problems sorted by where their top-level key appears in the config (stable)."""
    order = {key_path("config", key): i for i, key in enumerate(d)}

    def position(problem: str) -> int:
        head = re.match(r"config(\.[\w$-]+|\[.*?\])?", problem)
        return order.get(head.group(0), len(order)) if head else len(order)

    return sorted(problems, key=position)


def _off(value: Any) -> bool:
    """QEWD's way of leaving a feature off: the key absent (None here) or ``false``."""
    return value is None or value is False


def _quote(argument: str) -> str:
    """Escape an endpoint-string argument: ``\\``, ``:`` and ``=`` are special there."""
    for ch in "\\:=":
        argument = argument.replace(ch, "\\" + ch)
    return argument


def check_endpoint(description: str) -> tuple[str | None, int | None]:
    """Parse a server endpoint string without listening: (problem or None, TCP port or None).

    The parsing is Twisted's own (``serverFromString`` against a memory reactor), so what
    passes here is what the node will listen on; for ``ssl:`` it also loads the PEM files.
    """
    try:
        endpoint = serverFromString(MemoryReactor(), description)
    except ImportError as e:
        return f"TLS needs pyOpenSSL (pip install 'twisted[tls]'): {e}", None
    except Exception as e:  # ValueError, TypeError, OSError, OpenSSL errors, plugin errors...
        if description.startswith("systemd:") and isinstance(e, (IndexError, KeyError)):
            return "systemd passed no socket at that index (LISTEN_FDS)", None
        return str(e) or type(e).__name__, None
    port = None
    if isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint, SSL4ServerEndpoint)):
        port = int(endpoint._port)  # no public accessor; there since endpoints were added
        if not 0 <= port <= 65535:
            return f"port {port} is out of range 0..65535", None
    return None, port


def _listen(c: Checker, d: dict[str, Any]) -> tuple[list[str], int | None]:
    """``listen`` (endpoint strings), or QEWD's ``port`` + ``ssl`` → (endpoints, first port)."""
    raw, ssl = d.get("listen"), d.get("ssl")
    if raw is None:
        port = c.get_int(d, "port", DEFAULT_PORT, 0, 65535)
        if _off(ssl):
            return [f"tcp:{port}"], port
        return _ssl(c, ssl, port), port
    if d.get("port") is not None:
        c.add(
            "config.listen",
            "cannot be used together with config.port "
            "(put the port in the endpoint string, e.g. 'tcp:8080')",
        )
    if not _off(ssl):
        c.add(
            "config.ssl",
            "cannot be used together with config.listen "
            "(use an endpoint such as 'ssl:8443:privateKey=key.pem:certKey=cert.pem')",
        )
    if isinstance(raw, str):
        items = [("config.listen", raw)]
    elif isinstance(raw, (list, tuple)) and raw:
        items = [(f"config.listen[{i}]", v) for i, v in enumerate(raw)]
    else:
        c.add(
            "config.listen",
            f"must be an endpoint string or a non-empty list of them, got {show(raw)}",
        )
        return [], None
    listen: list[str] = []
    first_port: int | None = None
    for path, value in items:
        if not isinstance(value, str):
            c.add(path, f"must be an endpoint string such as 'tcp:8080', got {show(value)}")
        elif value in listen:
            c.add(path, f"duplicate endpoint {value!r}")
        else:
            problem, tcp_port = check_endpoint(value)
            if problem:
                c.add(path, f"invalid endpoint {value!r}: {problem}")
                continue
            listen.append(value)
            first_port = tcp_port if first_port is None else first_port
    return listen, first_port


def _ssl(c: Checker, ssl: Any, port: int) -> list[str]:
    """QEWD's ``ssl: {keyFilePath, certFilePath}`` → ``['ssl:<port>:privateKey=..:certKey=..']``."""
    if not isinstance(ssl, dict):
        c.add("config.ssl", f"must be False or {{keyFilePath, certFilePath}}, got {show(ssl)}")
        return []
    c.check_keys(ssl, "config.ssl", ("keyFilePath", "certFilePath"))
    files = []
    for key in ("keyFilePath", "certFilePath"):
        value = c.get_str(ssl, key, "config.ssl", required="a PEM file path")
        if value is not None and not os.path.isfile(c.resolve(value)):
            c.add(key_path("config.ssl", key), f"file not found: {c.resolve(value)}")
        elif value is not None:
            files.append(_quote(c.resolve(value)))
    if len(files) != 2:
        return []
    description = f"ssl:{port}:privateKey={files[0]}:certKey={files[1]}"
    problem, _ = check_endpoint(description)
    if problem:
        c.add("config.ssl", f"cannot use this key and certificate: {problem}")
        return []
    return [description]


def _jwt(c: Checker, d: dict[str, Any]) -> JWTConfig | None:
    """QEWD's ``jwt: {secret}``; ``False`` or absent: session-token mode."""
    raw = d.get("jwt")
    if _off(raw):
        return None
    if not isinstance(raw, dict):
        c.add("config.jwt", f"must be False or {{'secret': '...'}}, got {show(raw)}")
        return None
    c.check_keys(raw, "config.jwt", ("secret", "algorithms", "previousSecrets", "cipher"))
    secret = c.get_str(raw, "secret", "config.jwt", secret=True, required="the signing secret")
    algorithms: tuple[str, ...] = ("HS256",)
    names = c.get_list(raw, "algorithms", "config.jwt", ", ".join(JWT_ALGORITHMS))
    if names is not None:
        bad = [a for a in names if a not in JWT_ALGORITHMS]
        for a in bad:
            c.add(
                "config.jwt.algorithms",
                f"unsupported algorithm {show(a)} (supported: {', '.join(JWT_ALGORITHMS)})",
            )
        algorithms = algorithms if bad else tuple(dict.fromkeys(names))
    previous = c.get_list(raw, "previousSecrets", "config.jwt", "strings") or []
    for i, s in enumerate(previous):
        if not isinstance(s, str) or not s:
            c.add(
                f"config.jwt.previousSecrets[{i}]",
                f"must be a non-empty string, got {show(s, secret=True)}",
            )
    previous_secrets = tuple(s for s in previous if isinstance(s, str) and s)
    cipher = raw.get("cipher", "qewd")
    if cipher not in JWT_CIPHERS:
        c.add("config.jwt.cipher", f"must be one of {', '.join(map(repr, JWT_CIPHERS))}, "
              f"got {show(cipher)}")
        cipher = "qewd"
    return JWTConfig(secret, algorithms, previous_secrets, cipher) if secret else None


def _is_dotted_name(name: str) -> bool:
    return all(p.isidentifier() and not keyword.iskeyword(p) for p in name.split("."))


def _module_map(c: Checker, d: dict[str, Any]) -> dict[str, ModuleSpec]:
    """``moduleMap``: application → ``.py`` file (relative to the base dir) or dotted module.

    A value ending in ``.py`` or containing a path separator is a file, and must exist; any
    other value must be a dotted Python name. Nothing is imported here."""
    raw = d.get("moduleMap")
    if raw is not None and not isinstance(raw, dict):
        c.add("config.moduleMap", f"must be a dict {{application: module}}, got {show(raw)}")
    specs: dict[str, ModuleSpec] = {}
    for app, value in (raw if isinstance(raw, dict) else {}).items():
        path = key_path("config.moduleMap", app)
        if not isinstance(app, str) or not app:
            c.add(path, "application names must be non-empty strings")
        elif not isinstance(value, str) or not value:
            c.add(path, f"must be a .py file path or a dotted module name, got {show(value)}")
        elif value.endswith(".py") or "/" in value or os.sep in value:
            resolved = c.resolve(value)
            if os.path.isfile(resolved):
                specs[app] = ModuleSpec(app, path=resolved)
            else:
                what = "not a file" if os.path.exists(resolved) else "file not found"
                c.add(path, f"{what}: {resolved}")
        elif _is_dotted_name(value):
            specs[app] = ModuleSpec(app, module=value)
        else:
            c.add(path, f"{value!r} is neither a .py file path nor a dotted Python module name")
    return specs


def _web_server_root(c: Checker, d: dict[str, Any]) -> str | None:
    """``webServerRootPath`` (an existing directory); by default ``<base dir>/www`` if present."""
    value = c.get_str(d, "webServerRootPath", "config")
    if value is None:
        default = os.path.join(c.base_dir, "www")
        return default if d.get("webServerRootPath") is None and os.path.isdir(default) else None
    if not os.path.isdir(c.resolve(value)):
        c.add("config.webServerRootPath", f"directory not found: {c.resolve(value)}")
        return None
    return c.resolve(value)


def _operations(c: Checker, d: dict[str, Any], listen: list[str]) -> dict[str, Any]:
    """``metrics`` (False, True: ``/metrics`` on the node's port, or ``{"listen": endpoint}``:
    on its own endpoint), ``status`` and ``logRequests`` (bools) → `Config` fields."""
    raw, metrics_listen = d.get("metrics"), None
    if isinstance(raw, dict):
        c.check_keys(raw, "config.metrics", ("listen",))
        metrics_listen = c.get_str(raw, "listen", "config.metrics",
                                   required="an endpoint string such as 'tcp:9100'")
        problem, port = check_endpoint(metrics_listen) if metrics_listen else (None, None)
        if not problem and metrics_listen in listen and port != 0:  # port 0: any free port
            problem = "it is also in config.listen (for that, use metrics: True)"
        if problem:
            c.add("config.metrics.listen", f"invalid endpoint {metrics_listen!r}: {problem}")
            metrics_listen = None
    elif not isinstance(raw, bool) and raw is not None:
        c.add("config.metrics",
              f"must be True, False or {{'listen': 'tcp:9100'}}, got {show(raw)}")
    return {
        "metrics": raw is True or metrics_listen is not None,
        "metrics_listen": metrics_listen,
        "status": c.get_bool(d, "status", True),
        "log_requests": c.get_bool(d, "logRequests", False),
    }


#: How each `Limits` field is read from its key (`CONFIG_KEYS`): the least integer it may be,
#: or a duration in seconds, > 0 (SECONDS) or >= 0 (SECONDS_OR_ZERO). The default is the
#: field's own, written once in `Limits`.
SECONDS, SECONDS_OR_ZERO = "seconds > 0", "seconds >= 0"
LIMIT_RULES: dict[str, int | str] = {
    "max_connections": 1,
    "max_in_flight": 1,
    "max_in_flight_link": 1,
    "max_buffered_bytes": 65536,
    "max_message_size": 1024,
    "max_queue_length": 1,
    "handler_timeout": SECONDS,
    "micro_service_timeout": SECONDS,
    "initial_session_timeout": 1,
    "shutdown_grace": SECONDS_OR_ZERO,
    "ping_interval": 1000,
    "ping_timeout": 1000,
    "max_pending_handshakes": 1,
    "header_timeout": SECONDS,
    "body_timeout": SECONDS,
    "max_connections_per_address": 1,  # absent: None, no cap
    "ws_ping_interval": SECONDS,
    "ws_ping_timeout": SECONDS,
    "register_timeout": SECONDS,
    "stall_timeout": SECONDS,
    "max_ranges": 1,
    "auth_failures": 1,
    "auth_window": SECONDS,
    "max_body_size": 0,
    "process_heartbeat_timeout": SECONDS,
}


def _limits(c: Checker, d: dict[str, Any]) -> dict[str, Any]:
    """Every `Limits` field from its config key, checked as `LIMIT_RULES` says."""
    out: dict[str, Any] = {}
    for name, key in CONFIG_KEYS.items():
        rule, default = LIMIT_RULES[name], getattr(Limits, name)
        if isinstance(rule, int):
            out[name] = c.get_int(d, key, default, rule)
        else:
            out[name] = c.get_seconds(d, key, default, zero_ok=rule == SECONDS_OR_ZERO)
    return out


_ORIGIN = re.compile(r"^(https?)://[^/?#\s]+$")


def _allowed_origins(c: Checker, d: dict[str, Any]) -> frozenset[str] | None:
    """``allowedOrigins``: browser origins (``https://app.example.com``, ``null``) allowed to
    open a WebSocket; unset: any origin."""
    raw = c.get_list(d, "allowedOrigins", "config", "origins such as 'https://example.com'")
    if raw is None:
        return None
    origins = set()
    for i, value in enumerate(raw):
        norm = value.strip().lower().rstrip("/") if isinstance(value, str) else None
        if norm is None or not (norm == "null" or _ORIGIN.match(norm)):
            c.add(f"config.allowedOrigins[{i}]",
                  f"must be an origin such as 'https://example.com:8443' (scheme://host[:port], "
                  f"no path), got {show(value)}")
        else:
            origins.add(norm)
    return frozenset(origins)


# QEWD.js database types that need an M or IRIS engine: named in the error, not "unknown".
_QEWD_ONLY_DATABASES = ("gtm", "yottadb", "cache", "iris", "dbx", "mongodb")
_DATABASE_PARAMS = {
    "memory": (),
    "sqlite": ("path", "busyTimeout"),
    "redis": ("host", "port", "password", "db", "timeout"),
}


def _push(c: Checker, d: dict[str, Any], database: dict[str, Any] | None) -> dict[str, Any]:
    """``push: {"redis": bool, "channel": name}``: server push across the nodes that share the
    database's Redis (on by default when ``database`` is Redis), on channel
    ``qewd-twisted:push:<name>`` (default ``db<N>``, N the database's Redis db number)."""
    raw = d.get("push")
    is_redis = database is not None and database["type"] == "redis"
    db = database["params"]["db"] if is_redis else 0
    out = {"push_redis": is_redis, "push_channel": f"db{db}"}
    if raw is None:
        return out
    path = "config.push"
    if not isinstance(raw, dict):
        c.add(path, f"must be {{'redis': True or False, 'channel': 'name'}}, got {show(raw)}")
        return out
    c.check_keys(raw, path, ("redis", "channel"))
    redis = raw.get("redis", is_redis)
    if not isinstance(redis, bool):
        c.add(f"{path}.redis", f"must be True or False, got {show(redis)}")
    elif redis and not is_redis:
        c.add(f"{path}.redis", "server push through Redis uses the database's Redis: set "
              "config.database to {'type': 'redis', 'params': {...}}")
    else:
        out["push_redis"] = redis
    channel = raw.get("channel")
    if channel is not None:
        if (not isinstance(channel, str) or not channel or len(channel) > 200
                or not channel.isprintable() or any(ch.isspace() for ch in channel)):
            c.add(f"{path}.channel", "must be a name of 1 to 200 printable characters without "
                  f"spaces, got {show(channel)}")
        else:
            out["push_channel"] = channel
    return out


def _database(c: Checker, d: dict[str, Any]) -> dict[str, Any] | None:
    """QEWD's ``database: {type, params}``: memory (the default), sqlite or redis."""
    raw = d.get("database")
    if raw is None:
        return None
    path = "config.database"
    if not isinstance(raw, dict):
        c.add(path, f"must be {{'type': 'sqlite' or 'redis', 'params': {{...}}}}, got {show(raw)}")
        return None
    c.check_keys(raw, path, ("type", "params"))
    kind = raw.get("type")
    if kind in _QEWD_ONLY_DATABASES:
        c.add(f"{path}.type", f"{kind!r} needs an M/IRIS engine: not supported by qewd-twisted "
              "(use 'sqlite', or 'redis' to share documents with QEWD.js nodes)")
        return None
    if kind not in _DATABASE_PARAMS:
        c.add(f"{path}.type", f"must be one of 'memory', 'sqlite', 'redis', got {show(kind)}")
        return None
    params = raw.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        c.add(f"{path}.params", f"must be a dict, got {show(params)}")
        return None
    ppath = f"{path}.params"
    c.check_keys(params, ppath, _DATABASE_PARAMS[kind])
    out: dict[str, Any] = {}
    if kind == "sqlite":
        out["path"] = c.resolve(c.get_str(params, "path", ppath) or "qewd.sqlite")
        out["busyTimeout"] = c.get_seconds(params, "busyTimeout", 5.0, path=ppath)
    elif kind == "redis":
        out["host"] = c.get_str(params, "host", ppath) or "127.0.0.1"
        out["port"] = c.get_int(params, "port", 6379, 1, 65535, path=ppath)
        out["password"] = c.get_str(params, "password", ppath, secret=True)
        out["db"] = c.get_int(params, "db", 0, 0, path=ppath)
        out["timeout"] = c.get_seconds(params, "timeout", 5.0, path=ppath)
    return {"type": kind, "params": out}
