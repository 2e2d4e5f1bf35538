# -*- test-case-name: tests.test_correlation -*-
"""
Correlation of forwarded requests and their reply frames, for one link (docs/protocol.md §4.4,
§4.5, §4.9).

A `Correlator` numbers each request (``ms_requestId``, from 1), queues it, sends it when it may
go, keeps its deadline on a clock, finds the request each reply frame belongs to, and ends
every request exactly once: with its final frame, or with a `LinkOutcome` (down, timeout).

Our nodes echo ``ms_requestId`` on every frame. QEWD.js echoes it only on final frames (§4.5
item 6): towards a QEWD.js remote only one request is in flight at a time, so an id-less
frame is never ambiguous; a request that timed out there may still be running, so the queue
waits for its final frame (the *blocker*) and asks for a resync (a reconnect, to start clean)
if that never comes.

Pure and clock-driven: it knows the QEWD envelope's correlation fields (``core.envelope``),
nothing of sockets, Engine.IO or registration. The link gives it a ``transmit(id, message)``
callable, opens it when registered and closes it when the connection goes.

May import: ``qewd_twisted.core.envelope``, ``qewd_twisted.core.interfaces`` and Twisted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, formatEvent

from qewd_twisted.core import envelope
from qewd_twisted.core.interfaces import IReplyReceiver, LinkOutcome

__all__ = ["Correlator", "PendingRequest"]

log = Logger()

#: ``report(kind, text)``: an event for the link's observers (``ILinkObserver.link_event``)
Report = Callable[[str, str], None]


@dataclass(eq=False)
class PendingRequest:
    """One forwarded request: queued (with its ``message``) or sent (``message`` None)."""

    id: int
    type: Any
    receiver: IReplyReceiver
    message: dict[str, Any] | None = None
    timer: IDelayedCall | None = None


class Correlator:
    """Request ids, the send queue, deadlines and reply attribution for one link.

    ``clock`` runs the deadlines and the resync timer; ``transmit(id, message)`` sends one
    request now (``message`` without its id: the caller adds ``ms_requestId``);
    ``resync()`` is called when a QEWD.js remote never finished a timed-out request
    ``resync_after`` seconds on; ``report(kind, text)`` gets timeouts and dropped frames.
    ``label`` names the link in log events (its URL).
    """

    def __init__(
        self,
        clock: IReactorTime,
        transmit: Callable[[int, dict[str, Any]], None],
        *,
        resync: Callable[[], None] = lambda: None,
        resync_after: float = 5.0,
        report: Report | None = None,
        label: str = "",
    ) -> None:
        self._clock = clock
        self._transmit = transmit
        self._resync = resync
        self._resync_after = resync_after
        self._report = report
        self.label = label
        self._open = False
        self._echoes = False
        self._next_id = 0
        self._pending: dict[int, PendingRequest] = {}
        self._queue: deque[PendingRequest] = deque()
        self._blocker: int | None = None  # a timed-out request a QEWD.js remote still runs
        self._resync_call: IDelayedCall | None = None

    # -- state

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def echoes(self) -> bool:
        """The remote echoes ``ms_requestId`` on every frame: many requests may be in flight."""
        return self._echoes

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def blocker(self) -> int | None:
        """The id of a timed-out request the remote may still answer (QEWD.js), or None."""
        return self._blocker

    def open(self, echoes: bool) -> None:
        """The link is registered: requests may go; ``echoes`` as the remote said."""
        self._open = True
        self._echoes = echoes
        self._pump()

    def close(self, why: str) -> None:
        """The connection is gone (or the link stopped): every request ends with DOWN."""
        self._open = False
        self.fail_all(LinkOutcome.DOWN, why)

    # -- requests

    def submit(self, receiver: IReplyReceiver, request_type: Any, message: dict[str, Any],
               timeout: float | None) -> None:
        """Queue one request (``message`` is copied) and send it when it may go. Not open:
        ``receiver.failed(DOWN)`` at once."""
        if not self._open:
            self._fail(receiver, LinkOutcome.DOWN, request_type)
            return
        self._next_id += 1
        request = PendingRequest(self._next_id, request_type, receiver, dict(message))
        if timeout is not None:
            request.timer = self._clock.callLater(timeout, self._expired, request)
        self._queue.append(request)
        self._pump()

    def _pump(self) -> None:
        """Send what may go now: everything to an echoing remote; to a QEWD.js remote one
        request at a time, and none while it may still answer a timed-out one."""
        while self._queue and self._open and (
            self._echoes or (not self._pending and self._blocker is None)
        ):
            request = self._queue.popleft()
            message, request.message = request.message or {}, None
            self._pending[request.id] = request
            self._transmit(request.id, message)

    def fail_all(self, outcome: LinkOutcome, why: str) -> None:
        """End every pending and queued request with ``outcome``."""
        requests = list(self._pending.values()) + list(self._queue)
        self._pending.clear()
        self._queue.clear()
        self._clear_blocker()
        if requests:
            log.info("link {url}: {n} request(s) ended as {outcome} ({why})", url=self.label,
                     n=len(requests), outcome=outcome.value, why=why)
        for request in requests:
            self._stop_timer(request)
            self._fail(request.receiver, outcome, request.type)

    # -- replies

    def received(self, frame: Any) -> None:
        """A frame from the remote (registration is over): deliver it to its request, or
        drop it (and say why)."""
        if not isinstance(frame, dict):
            log.debug("link {url}: non-object frame dropped", url=self.label)
            return
        message = frame.get("message")
        rid = frame.get("ms_requestId")
        if rid is None and isinstance(message, dict):
            rid = message.get("ms_requestId")
        if rid is not None:
            valid = isinstance(rid, int) and not isinstance(rid, bool)
            request = self._pending.get(rid) if valid else None
            if request is None:
                self._late(rid, frame)
                return
        else:
            request = self._attribute(frame)
            if request is None:
                return
        final = envelope.is_final(frame)
        out = envelope.from_link(frame, request.type)
        if final:
            self._pending.pop(request.id, None)
            self._stop_timer(request)
        try:
            request.receiver.frame(out)
        except Exception:  # noqa: BLE001 - a receiver's bug must not break the link
            log.failure("link {url}: the receiver of a {type} reply failed",
                        url=self.label, type=request.type)
        if final:
            self._pump()

    def _attribute(self, frame: dict[str, Any]) -> PendingRequest | None:
        """Owner of a frame without ``ms_requestId``: only when unambiguous (never by type
        alone when several could match, §4.4 item 9)."""
        kind = frame.get("type")
        message = frame.get("message")
        # A frame with no `finished` counts as final (envelope.is_final); without an id it
        # is taken as a reply only if it is an error (a rejection). Other id-less unfinished
        # frames are broadcasts / socket pushes (§1.4), not part of any request.
        if "finished" not in frame and not (isinstance(message, dict) and "error" in message):
            log.debug("link {url}: unsolicited {type} frame dropped", url=self.label, type=kind)
            return None
        if not self._pending:
            if self._blocker is not None and envelope.is_final(frame):
                self._note("dropped", "link {url}: late final frame for timed-out request "
                           "{id} dropped", id=self._blocker)
                self._unblock()
            else:
                self._note("dropped", "link {url}: {type} frame with no request in flight "
                           "dropped", type=kind)
            return None
        same_type = [r for r in self._pending.values() if r.type == kind]
        if len(same_type) == 1:
            return same_type[0]
        if len(self._pending) == 1:
            return next(iter(self._pending.values()))
        self._note("dropped", "link {url}: ambiguous {type} frame without ms_requestId dropped "
                   "({same} of {n} requests in flight have that type)", warn=True,
                   type=kind, same=len(same_type), n=len(self._pending))
        return None

    def _late(self, rid: Any, frame: dict[str, Any]) -> None:
        self._note("dropped", "link {url}: frame for unknown or expired request {id} dropped",
                   id=rid)
        if rid == self._blocker and envelope.is_final(frame):
            self._unblock()

    # -- deadlines and the QEWD.js blocker

    def _expired(self, request: PendingRequest) -> None:
        request.timer = None
        if request in self._queue:
            self._queue.remove(request)
        elif self._pending.pop(request.id, None) is not None and not self._echoes:
            # QEWD.js may still send id-less frames for it: hold the queue until its final
            # frame comes, or resync (reconnect, to start clean) if it never does.
            self._blocker = request.id
            self._resync_call = self._clock.callLater(self._resync_after, self._resync_due)
        self._note("timeout", "link {url}: {type} request {id} timed out", warn=True,
                   type=request.type, id=request.id)
        self._fail(request.receiver, LinkOutcome.TIMEOUT, request.type)
        self._pump()

    def _unblock(self) -> None:
        self._clear_blocker()
        self._pump()

    def _clear_blocker(self) -> None:
        self._blocker = None
        if self._resync_call is not None and self._resync_call.active():
            self._resync_call.cancel()
        self._resync_call = None

    def _resync_due(self) -> None:
        self._resync_call = None
        self._note("error", "link {url}: remote never finished timed-out request {id}; "
                   "reconnecting", warn=True, id=self._blocker)
        self._resync()

    # -- helpers

    @staticmethod
    def _stop_timer(request: PendingRequest) -> None:
        if request.timer is not None and request.timer.active():
            request.timer.cancel()
        request.timer = None

    def _fail(self, receiver: IReplyReceiver, outcome: LinkOutcome, request_type: Any) -> None:
        try:
            receiver.failed(outcome)
        except Exception:  # noqa: BLE001 - a receiver's bug must not break the link
            log.failure("link {url}: the receiver of a {type} request failed",
                        url=self.label, type=request_type)

    def _note(self, kind: str, format: str, warn: bool = False, **fields: Any) -> None:
        """Log one event and report it to the link's observers."""
        (log.warn if warn else log.info)(format, url=self.label, **fields)
        if self._report is not None:
            self._report(kind, formatEvent({"log_format": format, "url": self.label,
                                            **fields}))
