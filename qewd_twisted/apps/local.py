# -*- test-case-name: tests.test_node -*-
"""
Running a request with the application's own handler module (docs/protocol.md §5).

`LocalRunner.run(req)` loads the application, picks where the handler runs (the reactor or a
worker pool thread), gives it ``send`` / ``finished``, runs the beforeHandler / handler /
afterHandler chain, and turns crashes, handler timeouts and the final reply (with the
re-issued JWT, and the workerResponseHandler's say) into frames (``core.envelope``). The node
composes it: it hands over authenticated requests and owns the connections, the requests in
flight (``core.inflight.InFlight``) and the sender.

May import: ``qewd_twisted.errors``, ``qewd_twisted.core`` (envelope, requests, inflight,
interfaces, q), ``qewd_twisted.apps`` and ``qewd_twisted.auth.tokens``; Twisted.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Coroutine
from typing import Any, Callable, Generator

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from qewd_twisted import errors as E
from qewd_twisted.apps.custom_errors import CustomErrors
from qewd_twisted.apps.modules import Application, AppLoadError, Applications, runs_on_reactor
from qewd_twisted.apps.services import ServiceRefused, select_service
from qewd_twisted.apps.pool import PoolFull
from qewd_twisted.auth.tokens import TokenCodec
from qewd_twisted.config.limits import Limits
from qewd_twisted.core import envelope
from qewd_twisted.core.inflight import InFlight
from qewd_twisted.core.interfaces import IConnection, IWorkerPool
from qewd_twisted.core.q import Q
from qewd_twisted.core.requests import Request, positional_arity, snapshot
from qewd_twisted.core.switch import wants_switch

log = Logger()


@types.coroutine
def _resume(coro: Coroutine, awaited: Any) -> Generator[Any, Any, Any]:
    """Go on driving ``coro``, which has already run up to awaiting ``awaited``: hands that
    to whoever drives this (Twisted's coroutine runner), and its result or failure back in."""
    while True:
        try:
            value = yield awaited
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as e:
            try:
                awaited = coro.throw(e)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                awaited = coro.send(value)
            except StopIteration as stop:
                return stop.value



class LocalRunner:
    """Runs authenticated requests with their application's handler module.

    ``send(conn, frame)`` is the node's sender (it answers a frame that is not JSON-able);
    ``q`` is what workerResponseHandlers get; ``tokens`` re-issues JWTs (None: no JWT
    support); ``handler_timeout`` in seconds (None or 0: none).
    """

    def __init__(self, reactor: IReactorTime, apps: Applications, pool: IWorkerPool,
                 in_flight: InFlight,
                 send: Callable[[IConnection, Any], None], q: Q, *,
                 tokens: TokenCodec | None = None,
                 handler_timeout: float | None = Limits.handler_timeout,
                 custom_errors: CustomErrors | None = None) -> None:
        self.reactor = reactor
        self.custom_errors = custom_errors if custom_errors is not None else CustomErrors()
        # (req, result) -> None: takes over a final reply that asks for an application switch
        # (core.switch); None: such replies go to the client as they are
        self.switch: Callable[[Request, dict], None] | None = None
        self.apps = apps
        self.pool = pool
        self.tokens = tokens
        self.q = q
        self.handler_timeout = handler_timeout
        self._in_flight = in_flight
        self._send = send
        self._begin = in_flight.begin
        self._end = in_flight.end
        self._arity: dict[Any, int] = {}
        self._on_reactor: dict[Any, bool] = {}  # handler -> runs_on_reactor(handler)
        # How pool threads hand a call to the reactor: the pool's post() shares reactor
        # wake-ups between finished() and the thread's return; a pool without it (a user's
        # own) gets callFromThread.
        self._to_reactor: Callable[..., None] = (
            getattr(pool, "post", None) or getattr(reactor, "callFromThread", None))
        # WorkerPool.call: run() without a Deferred; a pool without it (a user's own, the
        # tests' SyncPool) is used through run().
        self._pool_call: Callable[..., None] | None = getattr(pool, "call", None)
        #: ``fn(req, result)`` for a reply ``{use_microservice: True, request}`` (§4.7): the
        #: REST router (rest/dispatch.py) sets it; None: such a reply is sent as it is.
        self.use_microservice: Callable[[Request, dict], None] | None = None

    def _elapsed(self, started: float) -> str:
        return envelope.response_time(started, self.reactor.seconds())

    def _reply(self, conn: IConnection, type: str, message: Any, started: float,
               rid: Any = None, finished: bool = True) -> None:
        self._send(conn, envelope.reply_since(type, message, started, self.reactor.seconds(),
                                              rid, finished))

    def _error(self, conn: IConnection, type: str, text: str, started: float, rid: Any = None,
               status: int | None = None, **extra: Any) -> None:
        self._send(conn, envelope.error(type, text, self._elapsed(started), rid, status=status,
                                        **extra))

    def run(self, req: Request) -> None:
        """Run ``req`` (authenticated, for ``req.application``); never raises."""
        try:
            app = self.apps.get(req.application)
        except AppLoadError as e:
            return self._refuse(req, "moduleLoadError", {"error": str(e), "reason": e.reason})
        if req.message.get("service"):
            # a service module's handler (§5.2): its hooks and workerResponseHandlers apply
            try:
                app = select_service(self.apps, app, req.session, req.message,
                                     self.custom_errors)
            except ServiceRefused as e:
                self._in_flight.ended_early(req, "error")
                return self._reply(req.conn, req.type, e.message, req.started,
                                   req.ms_request_id)
        req.app = app
        handler = app.handlers.get(req.type)
        if handler is None and app.before_handler is None:
            return self._refuse(req, "noTypeHandler", self._no_handler(req))
        self._start(req, app, handler, self._finished)

    def _start(self, req: Request, app: Application, handler: Any,
               finish: Callable[[Request, Any], None]) -> None:
        """Count ``req`` in flight and run ``app``'s chain for it (hooks and ``handler``) on
        the reactor or in the pool, with its deadline; ``finish(req, result)`` takes the
        handler's final reply (``_finished``, or ``_finish_express``)."""
        self._begin(req)
        target = handler if handler is not None else app.before_handler
        on_reactor = self._on_reactor.get(target)
        if on_reactor is None:
            on_reactor = self._on_reactor[target] = runs_on_reactor(target)
        if on_reactor:
            # The deadline starts once the handler returns without having finished (a reactor
            # handler cannot be interrupted while it runs anyway): most finish at once, and a
            # timer made and cancelled per request is pure cost (as in run_handler).
            send, finished = self._callbacks(req, False, finish)
            if app.before_handler is None and app.after_handler is None:
                self._call_on_reactor(handler, req, send, finished)
                return self._deadline(req)
            d = defer.ensureDeferred(self._chain_async(app, handler, req, send, finished))
            self._deadline(req)
        else:
            self._deadline(req)
            send, finished = self._callbacks(req, True, finish)
            return self._in_pool(req, self._chain_sync, app, handler, req, send, finished)
        d.addErrback(self._handler_failed, req)

    def express(self, conn: IConnection, obj: dict, mtype: str, started: float, rid: Any,
                token: str, seen: Any, application: str) -> bool:
        """``run`` for the node's express path (``Node._express``): a JWT request whose token
        the codec knows (``TokenCodec.known`` gave ``seen``), for an application already
        loaded, without a ``service``, whose handler exists. The same request record,
        in-flight count, deadline, hooks and frames as ``run``, and the common final reply
        taken in one step (``_finish_express``). False, having done nothing, for anything
        else."""
        app = self.apps.loaded(application)
        if app is None or obj.get("service"):
            return False
        handler = app.handlers.get(mtype)
        if handler is None:
            return False
        req = Request(conn, obj, mtype, started, rid, True,
                      self.tokens.session_of(token, seen), application)  # type: ignore
        req.app = app
        self._start(req, app, handler, self._finish_express)
        return True

    def _finish_express(self, req: Request, result: Any) -> None:
        """``_finished`` for an express request (a JWT one, ``result`` already a snapshot):
        a plain successful object reply re-issues the token and goes out at once; anything
        else (an error, a switch, ``use_microservice``, a workerResponseHandler, not an
        object, a second call) goes through ``_finished``."""
        if (req.done or type(result) is not dict or result.get("error")
                or (self.switch is not None and wants_switch(result))
                or (self.use_microservice is not None
                    and result.get("use_microservice") is True)
                or req.type in req.app.worker_response_handlers):  # type: ignore[union-attr]
            return self._finished(req, result)
        self._end(req, "ok")
        try:
            result["token"] = self.tokens.issue(req.session)  # type: ignore[union-attr]
        except (TypeError, ValueError) as e:
            return self._bad_session(req, e)
        self._send(req.conn, envelope.reply_since(req.type, result, req.started,
                                                  self.reactor.seconds(), req.ms_request_id))

    def _bad_session(self, req: Request, e: Exception) -> None:
        log.warn("session for {type} could not be encoded: {error}", type=req.type, error=e)
        self._error(req.conn, req.type, E.BAD_SESSION.format(type=req.type, reason=e),
                    req.started, req.ms_request_id)

    def run_handler(self, req: Request, target: Callable, call: Callable) -> None:
        """Run ``call(send, finished)`` for ``req`` as a handler runs: in the pool, or on the
        reactor when ``target`` (the user's function) is ``async def`` / ``@on_reactor``; with
        the handler timeout, and crashes answered. REST routes (rest/dispatch.py) use this."""
        self._begin(req)
        on_reactor = self._on_reactor.get(target)
        if on_reactor is None:
            on_reactor = self._on_reactor[target] = runs_on_reactor(target)
        if on_reactor:
            # The deadline starts only if the handler returns without having finished: most
            # finish at once, and a timer made and cancelled per request is pure cost.
            send, finished = self._callbacks(req, threaded=False)
            try:
                result = call(send, finished)
                if isinstance(result, Coroutine):
                    # most finish without awaiting: run them to the end before a Deferred
                    try:
                        awaited = result.send(None)
                    except StopIteration:
                        return self._deadline(req)
                    d = defer.Deferred.fromCoroutine(_resume(result, awaited))
                elif inspect.isawaitable(result):
                    d = defer.ensureDeferred(result)
                else:
                    return self._deadline(req)
            except Exception:
                return self._handler_failed(Failure(), req)
            self._deadline(req)
        else:
            self._deadline(req)
            send, finished = self._callbacks(req, threaded=True)
            return self._in_pool(req, call, send, finished)
        d.addErrback(self._handler_failed, req)

    def _in_pool(self, req: Request, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` (``req``'s handler chain) in the pool; crashes answered."""
        req.in_thread = True
        if self._pool_call is not None:  # our WorkerPool: no Deferred per request
            try:
                self._pool_call(fn, args, self._pool_returned, req)
            except PoolFull:
                self._handler_failed(Failure(), req)
            return
        d = self.pool.run(fn, *args)
        d.addBoth(self._thread_returned, req)
        d.addErrback(self._handler_failed, req)

    def _pool_returned(self, req: Request, failure: Failure | None) -> None:
        self._thread_returned(None, req)
        if failure is not None:
            self._handler_failed(failure, req)

    def _deadline(self, req: Request) -> None:
        """Start ``req``'s handler deadline, unless it is over already."""
        if self.handler_timeout and not req.done:
            req.timer = self.reactor.callLater(self.handler_timeout, self._timed_out, req)

    def _call_on_reactor(self, handler: Callable, req: Request, send: Callable,
                         finished: Callable) -> None:
        """A reactor handler with no before/after hooks, without a Deferred when it can.

        Most ``async def`` handlers finish without awaiting anything: the first ``send(None)``
        runs them to the end, and wrapping them in ``ensureDeferred`` would cost more than the
        handler itself. One that does await is handed to Twisted where it stopped.
        """
        try:
            result = self._invoke(handler, req.message, req.session, send, finished)
            if type(result) is types.CoroutineType or isinstance(result, Coroutine):
                try:
                    awaited = result.send(None)
                except StopIteration:
                    return
                d = defer.Deferred.fromCoroutine(_resume(result, awaited))
            elif inspect.isawaitable(result):  # @inlineCallbacks: a Deferred
                d = defer.ensureDeferred(result)
            else:  # @on_reactor: a plain function
                return
        except Exception:
            return self._handler_failed(Failure(), req)
        d.addErrback(self._handler_failed, req)

    def _invoke(self, fn: Callable, msg: Any, session: Any, send: Callable,
                finished: Callable) -> Any:
        """``fn(msg, session, send, finished)``, plus ``q`` when ``fn`` takes a fifth
        positional parameter (its arity is read once per function)."""
        n = self._arity.get(fn)
        if n is None:
            n = self._arity[fn] = positional_arity(fn)
        if n >= 5:
            return fn(msg, session, send, finished, self.q)
        return fn(msg, session, send, finished)

    def _thread_returned(self, result: Any, req: Request) -> Any:
        if req.spare:
            req.spare = False
            self.pool.return_spare()
        return result

    def _callbacks(self, req: Request, threaded: bool,
                   finish: Callable[[Request, Any], None] | None = None
                   ) -> tuple[Callable, Callable]:
        """A handler's ``send`` and ``finished`` for ``req``; ``finished`` hands a snapshot of
        its message to ``finish`` (default ``_finished``) on the reactor."""
        finish = finish or self._finished
        if threaded:
            call = self._to_reactor

            def send(message: Any = None) -> None:
                call(self._intermediate, req, snapshot(message))

            def finished(message: Any = None) -> None:
                call(finish, req, snapshot(message))
        else:
            def send(message: Any = None) -> None:
                self._intermediate(req, snapshot(message))

            def finished(message: Any = None) -> None:
                finish(req, snapshot(message))
        return send, finished

    def _refuse(self, req: Request, error_type: str, message: dict) -> None:
        """Answer ``req`` before it began with an error (the application's custom text and
        status for ``error_type`` when it set one)."""
        self._in_flight.ended_early(req, "error")
        self._reply(req.conn, req.type,
                    self.custom_errors.apply(req.application, error_type, message),
                    req.started, req.ms_request_id)

    def _no_handler(self, req: Request) -> dict:
        return self.custom_errors.apply(req.application, "noTypeHandler", {
            "error": E.NO_HANDLER.format(application=req.application, type=req.type)})

    def _chain_sync(self, app: Application, handler: Any, req: Request,
                    send: Callable, finished: Callable) -> None:
        """Runs in a pool thread: beforeHandler, the handler, afterHandler."""
        msg, session = req.message, req.session
        resolve = self._resolve
        invoke = self._invoke
        if app.before_handler is not None:
            if resolve(invoke(app.before_handler, msg, session, send, finished)) is False:
                return
        if handler is None:
            finished(self._no_handler(req))
            return
        resolve(invoke(handler, msg, session, send, finished))
        if app.after_handler is not None:
            resolve(invoke(app.after_handler, msg, session, send, finished))

    def _resolve(self, result: Any) -> Any:
        """In a pool thread: what a hook returned, awaited on the reactor if it is awaitable
        (an async hook called from a sync chain)."""
        if result is not None and inspect.isawaitable(result):
            return blockingCallFromThread(self.reactor, defer.ensureDeferred, result)
        return result

    async def _chain_async(self, app: Application, handler: Any, req: Request,
                           send: Callable, finished: Callable) -> None:
        """Runs on the reactor: the same chain, awaiting whatever the hooks return."""
        msg, session = req.message, req.session

        async def call(fn: Callable) -> Any:
            result = self._invoke(fn, msg, session, send, finished)
            if inspect.isawaitable(result):
                result = await result
            return result

        if app.before_handler is not None and await call(app.before_handler) is False:
            return
        if handler is None:
            finished(self._no_handler(req))
            return
        await call(handler)
        if app.after_handler is not None:
            await call(app.after_handler)

    def _handler_failed(self, failure: Failure, req: Request) -> None:
        if failure.check(PoolFull):
            log.warn("refusing {type}: {why}", type=req.type, why=failure.getErrorMessage())
            if not req.done:
                self._end(req, "503")
                self._error(req.conn, req.type, E.SERVER_BUSY, req.started, req.ms_request_id,
                            status=E.STATUS_BUSY)
            return
        if failure.check(E.ServiceUnavailable):
            # the database, not the handler, failed: a reply under the request's type (503)
            log.warn("handler for {application}/{type}: {error}", application=req.application,
                     type=req.type, error=failure.getErrorMessage())
            if not req.done:
                self._end(req, "503")
                self._error(req.conn, req.type,
                            E.DATABASE_DOWN.format(reason=failure.getErrorMessage()),
                            req.started, req.ms_request_id, status=E.STATUS_DATABASE_DOWN)
            return
        log.failure("handler for {application}/{type} raised", failure,
                    application=req.application, type=req.type, request_id=req.id)
        if req.done:
            return
        self._end(req, "error")
        # QEWD's crash reply: type "error", message is the exception's text (§5.4).
        self._send(req.conn, envelope.crash(failure.getErrorMessage() or failure.type.__name__,
                                            self._elapsed(req.started), req.ms_request_id))

    def _timed_out(self, req: Request) -> None:
        req.timer = None
        if req.done:
            return
        log.warn("handler for {application}/{type} did not finish in {seconds}s",
                 application=req.application, type=req.type, seconds=self.handler_timeout,
                 request_id=req.id)
        if req.in_thread and self.pool.lend_spare():
            req.spare = True  # its thread is still busy: keep the pool's capacity
        self._end(req, "timeout")
        self._error(req.conn, req.type,
                    E.HANDLER_TIMEOUT.format(type=req.type, seconds=f"{self.handler_timeout:g}"),
                    req.started, req.ms_request_id, status=E.STATUS_HANDLER_TIMEOUT)

    def _intermediate(self, req: Request, message: Any) -> None:
        if req.done:
            log.warn("send() after finished() ignored for {type}", type=req.type)
            return
        ftype = req.type
        if isinstance(message, dict) and isinstance(message.get("type"), str):
            ftype = message.pop("type")  # §5.2: a type in the payload is the frame's type
        elif message is None:
            message = {}
        self._reply(req.conn, ftype, message, req.started, req.ms_request_id, finished=False)

    def _finished(self, req: Request, result: Any) -> None:
        if req.done:
            log.warn("finished() called again for {application}/{type}: ignored",
                     application=req.application, type=req.type)
            return
        if self.switch is not None and wants_switch(result):
            return self.switch(req, result)
        self._end(req, "error" if isinstance(result, dict) and result.get("error") else "ok")
        if result is None:
            result = {}
        if isinstance(result, dict) and result.get("error"):
            return self._reply(req.conn, req.type, result, req.started, req.ms_request_id)
        if req.ms_request_id is not None and isinstance(result, list):
            result = {"results": result}  # §1.4: arrays are wrapped for micro-service requests
        if req.jwt and isinstance(result, dict):
            try:
                result["token"] = self.tokens.issue(req.session)
            except (TypeError, ValueError) as e:
                return self._bad_session(req, e)
        if (self.use_microservice is not None and isinstance(result, dict)
                and result.get("use_microservice") is True):
            return self.use_microservice(req, result)  # §4.7: the reply goes on via REST
        wrh = req.app.worker_response_handlers.get(req.type) if req.app else None
        if wrh is not None:
            try:
                replaced = self._call_wrh(wrh, req, result)
            except Exception:
                log.failure("workerResponseHandler for {type} raised", type=req.type)
                replaced = None
            if replaced is True:
                return
            if replaced is not None:
                result = replaced
        if result == {} and not req.jwt and not getattr(req.conn, "needs_reply", False):
            return  # §1.4: an empty reply sends nothing (session mode; HTTP always answers)
        self._reply(req.conn, req.type, result, req.started, req.ms_request_id)

    def _call_wrh(self, fn: Callable, req: Request, message: Any) -> Any:
        n = self._arity.get(fn)
        if n is None:
            n = self._arity[fn] = positional_arity(fn)

        def send(frame: Any) -> None:
            self._send(req.conn, frame)

        return fn(message, send, self.q) if n >= 3 else fn(message, send)
