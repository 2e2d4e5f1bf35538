# -*- test-case-name: tests.test_node -*-
"""
Handler modules: found through ``moduleMap`` only, loaded once, wrapped as ``Application``.

QEWD falls back to ``require(application)`` for names missing from ``moduleMap``, so any
installed package name can be loaded by a client that registers with it (docs/protocol.md §9 item 7).
Here an application name is only ever a key into the operator's ``moduleMap``: nothing else is
imported.

A handler module exports (docs/protocol.md §5.2):

- ``handlers``: ``{type: fn(messageObj, session, send, finished)}``
- ``beforeHandler(messageObj, session, send, finished)``: returning ``False`` stops the request
- ``afterHandler(messageObj, session, send, finished)``
- ``workerResponseHandlers``: ``{type: fn(message, send[, q])}``, run on the reactor before a
  successful final reply is sent; return ``True`` (took over sending), ``None`` (keep) or a
  replacement message
- ``init(application)`` or ``init(application, q)``: run once when the module is loaded
- ``servicesAllowed``: ``{service: True}``, the service modules its messages may name
  (``apps.services``)

Plain ``def`` handlers run in the worker pool; ``async def`` handlers, ``@inlineCallbacks``
functions and functions marked with :func:`on_reactor` run on the reactor thread.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, TypeVar

from twisted.logger import Logger

from qewd_twisted.errors import UNABLE_TO_LOAD

log = Logger()

F = TypeVar("F", bound=Callable[..., Any])


def on_reactor(fn: F) -> F:
    """Mark a handler to run on the reactor thread (it must not block; it may return a Deferred)."""
    fn._qewd_on_reactor = True  # type: ignore[attr-defined]
    return fn


def runs_on_reactor(fn: Callable[..., Any]) -> bool:
    """True for ``async def`` functions, ``@inlineCallbacks`` functions and ``@on_reactor`` ones."""
    if getattr(fn, "_qewd_on_reactor", False) or inspect.iscoroutinefunction(fn):
        return True
    wrapped = getattr(fn, "__wrapped__", None)
    return wrapped is not None and (
        inspect.isgeneratorfunction(wrapped) or inspect.iscoroutinefunction(wrapped)
    )


class AppLoadError(Exception):
    """A handler module could not be loaded; ``reason`` is what the client is told."""

    def __init__(self, application: str, reason: str) -> None:
        super().__init__(UNABLE_TO_LOAD.format(application=application))
        self.application = application
        self.reason = reason


@dataclass
class Application:
    """One application's handler module, as the node uses it."""

    name: str
    handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    before_handler: Callable[..., Any] | None = None
    after_handler: Callable[..., Any] | None = None
    worker_response_handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    module: Any = None

    @classmethod
    def from_module(cls, name: str, module: Any) -> "Application":
        """Read the QEWD exports of a module (or any object with those attributes)."""
        problems = []

        def table(attr: str) -> dict[str, Callable[..., Any]]:
            value = getattr(module, attr, None) or {}
            if not isinstance(value, Mapping):
                problems.append(f"{attr} must be a dict of type -> function")
                return {}
            bad = [k for k, v in value.items() if not isinstance(k, str) or not callable(v)]
            if bad:
                problems.append(f"{attr}: not callable: {', '.join(map(str, bad))}")
            return {k: v for k, v in value.items() if isinstance(k, str) and callable(v)}

        def hook(attr: str) -> Callable[..., Any] | None:
            value = getattr(module, attr, None)
            if value is not None and not callable(value):
                problems.append(f"{attr} must be a function")
                return None
            return value

        app = cls(
            name=name,
            handlers=table("handlers"),
            before_handler=hook("beforeHandler"),
            after_handler=hook("afterHandler"),
            worker_response_handlers=table("workerResponseHandlers"),
            module=module,
        )
        if problems:
            raise AppLoadError(name, "; ".join(problems))
        return app


def _module_name_for(application: str) -> str:
    return "qewd_app_" + re.sub(r"\W", "_", application)


def load_module(application: str, path: str | None = None, module: str | None = None) -> Any:
    """Import a handler module from a .py file path or a dotted module name."""
    if module is not None:
        return importlib.import_module(module)
    if path is None:
        raise ValueError("a path or a module name is needed")
    name = _module_name_for(application)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    # Registered so that dataclasses, pickling and tracebacks can find it by name.
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def _call_init(init: Callable[..., Any], name: str, q: Any) -> None:
    """QEWD's ``init``: ``init(application, q)`` when it takes two positional parameters."""
    try:
        params = inspect.signature(init).parameters.values()
        n = sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
        varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    except (TypeError, ValueError):
        n, varargs = 1, False
    if n >= 2 or varargs:
        init(name, q)
    else:
        init(name)


class Applications:
    """The node's applications: only those the operator named in ``moduleMap``.

    ``specs`` maps application names to objects with ``path`` and ``module`` attributes
    (config.ModuleSpec). ``load_all()`` imports every module and runs its ``init``; failures are
    kept and reported per application, so one broken module does not stop the others.
    """

    def __init__(self, specs: Mapping[str, Any]) -> None:
        self._specs = dict(specs)
        self._apps: dict[str, Application] = {}
        self._errors: dict[str, AppLoadError] = {}

    @classmethod
    def from_objects(cls, apps: Mapping[str, Any], q: Any = None) -> "Applications":
        """Build from already imported modules or objects (embedding and tests)."""
        self = cls({})
        self.add_objects(apps, q)
        return self

    def add_objects(self, apps: Mapping[str, Any], q: Any = None) -> None:
        """Add already imported modules or objects and run their ``init``."""
        for name, obj in apps.items():
            self.add(name, obj)
            init = getattr(obj, "init", None)
            if callable(init) and not isinstance(obj, Application):
                _call_init(init, name, q)

    def add(self, name: str, module: Any) -> Application:
        app = module if isinstance(module, Application) else Application.from_module(name, module)
        self._apps[name] = app
        self._errors.pop(name, None)
        return app

    def load_all(self, q: Any = None) -> list[AppLoadError]:
        """Import every module not loaded yet and run its ``init(application)``, or
        ``init(application, q)`` when it takes two parameters."""
        if q is not None:
            self._q = q
        q = getattr(self, "_q", None)
        for name, spec in self._specs.items():
            if name in self._apps:
                continue
            try:
                mod = load_module(name, getattr(spec, "path", None), getattr(spec, "module", None))
                self.add(name, mod)
                init = getattr(mod, "init", None)
                if callable(init):
                    _call_init(init, name, q)
            except AppLoadError as e:
                self._errors[name] = e
            except Exception as e:
                log.failure("loading handler module for {application}", application=name)
                self._errors[name] = AppLoadError(name, f"{type(e).__name__}: {e}")
        return list(self._errors.values())

    def get(self, name: str) -> Application:
        """The loaded application, or AppLoadError (never imports a name not in moduleMap)."""
        app = self._apps.get(name)
        if app is not None:
            return app
        err = self._errors.get(name)
        if err is not None:
            raise err
        if name in self._specs:
            self.load_all()
            return self.get(name)
        raise AppLoadError(name, f"no moduleMap entry for application {name!r}")

    def loaded(self, name: str) -> Application | None:
        """The application if it is loaded already, else None (``get`` loads or refuses)."""
        return self._apps.get(name)

    def names(self) -> Iterable[str]:
        return sorted(set(self._specs) | set(self._apps))
