# -*- test-case-name: tests.test_replicas -*-
"""
Replicas: one micro-service destination served by several nodes (``host`` as a list, or
``hosts``; docs/configuration.md). Not a QEWD group (§4.6: a group sends each request to
*every* member); a replica set sends each request to *one* live member.

`ReplicaSet` holds one ``links.Link`` per host, each self-healing on its own, and provides
``ILink`` itself: ``send_request`` hands the request to the member `pick` chooses, whose
``Correlator`` then owns it exactly as for a lone link (request ids, deadline, the one final
frame or ``LinkOutcome``). Nothing is ever moved to another member: a member that goes down
fails what is in flight on it with ``DOWN`` (the client's 503), as a lone link does, because a
handler may have run already and handlers are not assumed idempotent. New requests go to the
members still up; with none up, ``DOWN`` at once, as a lone link that is down.

The choice: the live member with the fewest requests outstanding (in flight + queued), ties
broken round-robin. With equal loads that is plain round-robin (an even spread, and a
deterministic one for tests); a slow member, or a QEWD.js member (one request at a time, the
rest queued), gets fewer until it catches up.

May import: ``qewd_twisted.core.interfaces``, the rest of ``qewd_twisted.mesh`` and Twisted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from qewd_twisted.core.interfaces import ILink, ILinkObserver, IReplyReceiver

__all__ = ["ReplicaSet"]

log = Logger()

# The set's state from its members': the best one any member is in.
_STATE_ORDER = ("up", "registering", "down", "stopped")


@implementer(ILink)
class ReplicaSet:
    """Several links to replicas of one remote application; each request goes to one live
    member (see the module docstring). ``links``: two or more ``Link``s, one per host, all
    registering as the same ``application``.

    ``url`` names the set (its members' URLs joined with ``,``) in logs, metrics and status;
    ``state`` is the best member's; ``is_up`` is true while any member is up; ``in_flight``,
    ``queued``, ``registrations`` and ``reregistrations`` are the members' sums. ``sent``
    counts, by member URL, the requests handed to each member.
    """

    def __init__(self, links: Sequence[Any]) -> None:
        if len(links) < 2:
            raise ValueError("a replica set needs two or more links")
        self.links = tuple(links)
        self.urls = tuple(link.url for link in self.links)
        self.url = ",".join(self.urls)
        self.application = self.links[0].application
        self.sent = dict.fromkeys(self.urls, 0)
        self._next = 0  # where the round-robin tie-break starts
        self._was_live = self.live
        for link in self.links:
            link.add_observer(_Watch(self))

    def __repr__(self) -> str:
        return f"<ReplicaSet {self.url} ({self.application}) {self.live}/{len(self.links)} up>"

    # -- observable state

    @property
    def live(self) -> int:
        """How many members are up now."""
        return sum(1 for link in self.links if link.is_up)

    @property
    def state(self) -> Any:
        states = [link.state for link in self.links]
        return min(states, key=lambda s: _STATE_ORDER.index(getattr(s, "value", s)))

    @property
    def is_up(self) -> bool:
        return any(link.is_up for link in self.links)

    @property
    def in_flight(self) -> int:
        return sum(link.in_flight for link in self.links)

    @property
    def queued(self) -> int:
        return sum(link.queued for link in self.links)

    @property
    def registrations(self) -> int:
        return sum(link.registrations for link in self.links)

    @property
    def reregistrations(self) -> int:
        return sum(link.reregistrations for link in self.links)

    @property
    def ever_registered(self) -> bool:
        """Some member has registered at least once (readiness, ops/operations.py)."""
        return any(link.registrations + link.reregistrations for link in self.links)

    def add_observer(self, observer: ILinkObserver) -> Callable[[], None]:
        """Observe every member (each report names the member); returns an unsubscriber."""
        unsubscribers = [link.add_observer(observer) for link in self.links]

        def unsubscribe() -> None:
            for undo in unsubscribers:
                undo()

        return unsubscribe

    def _member_changed(self) -> None:
        """Log when the set loses its last live replica (its requests now get the 503) and
        when it has one again; each member logs its own ups and downs."""
        live = self.live
        if live == 0 and self._was_live:
            log.warn("replica set {url}: no replica up; its requests get the 503 until one "
                     "is back", url=self.url)
        elif live and not self._was_live and self.registrations + self.reregistrations > 1:
            log.info("replica set {url}: {live} of {n} replicas up again", url=self.url,
                     live=live, n=len(self.links))
        self._was_live = live

    # -- choosing and forwarding

    def pick(self) -> Any:
        """The member the next request goes to: the live one with the fewest requests
        outstanding, ties round-robin; with none up, the first member (down: its
        ``send_request`` answers ``DOWN`` at once, as a lone link that is down)."""
        links = self.links
        n = len(links)
        best, best_load, best_at = None, 0, 0
        for i in range(n):
            at = (self._next + i) % n
            link = links[at]
            if not link.is_up:
                continue
            load = link.in_flight + link.queued
            if best is None or load < best_load:
                best, best_load, best_at = link, load, at
        if best is None:
            return links[0]
        self._next = (best_at + 1) % n
        self.sent[best.url] += 1
        return best

    def send_request(self, message: dict[str, Any], receiver: IReplyReceiver,
                     timeout: float | None = None) -> None:
        """``ILink.send_request`` on the member `pick` chooses; none up: ``DOWN`` before
        this returns (from a down member, exactly as a lone link that is down)."""
        self.pick().send_request(message, receiver, timeout)


@implementer(ILinkObserver)
class _Watch:
    """Tells its set about each member's state changes."""

    def __init__(self, replicas: ReplicaSet) -> None:
        self.replicas = replicas

    def link_state_changed(self, link: Any, state: Any) -> None:
        self.replicas._member_changed()

    def link_event(self, link: Any, kind: str, text: str) -> None:
        pass
