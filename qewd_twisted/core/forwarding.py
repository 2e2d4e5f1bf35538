# -*- test-case-name: tests.test_node -*-
"""
Forwarding a request to a remote node over a link, and relaying what comes back
(docs/protocol.md §4.4).

`Forwarder.forward` re-signs the client's JWT for the remote application, hands the message to
the link (``ILink.send_request``) and counts the request in flight. The link reports through a
per-request `IReplyReceiver`: each reply frame is re-signed back for the client's application
and relayed (``envelope.relayed``); a `LinkOutcome` becomes the client's 503 or 504
(``envelope.link_down`` / ``link_timeout``). A request ends exactly once.

May import: ``qewd_twisted.core`` (envelope, interfaces, requests, inflight),
``qewd_twisted.auth.tokens`` and ``qewd_twisted.errors``. Never a transport, never the mesh's
internals: a link is an ``ILink``.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from qewd_twisted.auth.tokens import TokenCodec, TokenError
from qewd_twisted.core import envelope
from qewd_twisted.core.inflight import InFlight
from qewd_twisted.core.interfaces import IConnection, ILink, IReplyReceiver, LinkOutcome
from qewd_twisted.core.requests import Request

__all__ = ["Forwarder"]

log = Logger()

# What a link outcome means to the client and to the node's observer.
_FAILURES = {
    LinkOutcome.DOWN: (envelope.link_down, "503"),
    LinkOutcome.TIMEOUT: (envelope.link_timeout, "timeout"),
}


@implementer(IReplyReceiver)
class _Reply:
    """What one forwarded request's link reports to."""

    __slots__ = ("_forwarder", "_req")

    def __init__(self, forwarder: Forwarder, req: Request) -> None:
        self._forwarder = forwarder
        self._req = req

    def frame(self, frame: dict[str, Any]) -> None:
        self._forwarder.relay(self._req, frame)

    def failed(self, outcome: LinkOutcome) -> None:
        self._forwarder.failed(self._req, outcome)


class Forwarder:
    """Forwards authenticated JWT requests over links and relays the replies.

    ``send(conn, frame)`` is the node's sender; ``timeout`` is ``microServiceTimeout``
    (seconds, None for none).
    """

    def __init__(self, clock: IReactorTime, tokens: TokenCodec, in_flight: InFlight,
                 send: Callable[[IConnection, Any], None], timeout: float | None) -> None:
        self._clock = clock
        self._tokens = tokens
        self._in_flight = in_flight
        self._send = send
        self.timeout = timeout

    def forward(self, req: Request, link: ILink, remote_application: str) -> None:
        """Send ``req`` (a JWT request) to ``link`` as ``remote_application``."""
        out = {k: v for k, v in req.message.items() if k not in ("ms_requestId", "qewd_twisted")}
        out["token"] = self._tokens.rewrite(req.message["token"], remote_application)
        out["jwt"] = True
        req.link = link
        self._in_flight.begin(req)
        link.send_request(out, _Reply(self, req), self.timeout)

    def relay(self, req: Request, frame: dict[str, Any]) -> None:
        """One reply frame from the link, to the client."""
        if req.done:
            log.debug("late frame for {type} dropped", type=req.type)
            return
        frame = dict(frame)
        final = envelope.is_final(frame)
        message = frame.get("message")
        if isinstance(message, dict) and isinstance(message.get("token"), str):
            message = dict(message)
            try:
                message["token"] = self._tokens.rewrite(message["token"], req.application)
            except TokenError as e:
                # Never re-sign what we could not verify; and don't report success while the
                # session update that came with it is lost.
                log.warn("micro-service reply to {type} carries a token that does not verify "
                         "here: {error}", type=req.type, error=e.reason)
                del message["token"]
                if final:
                    message = envelope.bad_ms_token()
            frame["message"] = message
        frame = envelope.relayed(
            frame, req.type, envelope.response_time(req.started, self._clock.seconds()),
            req.ms_request_id, final)
        if final:
            message = frame.get("message")
            self._in_flight.end(req, "error" if isinstance(message, dict) and "error" in message
                                else "ok")
        self._send(req.conn, frame)

    def failed(self, req: Request, outcome: LinkOutcome) -> None:
        """The link ended ``req`` without a final frame: the client gets a 503 or 504."""
        if req.done:
            return
        build, observed = _FAILURES[outcome]
        self._in_flight.end(req, observed)
        self._send(req.conn, build(req.type,
                                   envelope.response_time(req.started, self._clock.seconds()),
                                   req.ms_request_id))
