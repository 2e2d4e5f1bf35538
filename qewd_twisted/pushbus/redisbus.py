# -*- test-case-name: tests.test_redispush -*-
"""
``RedisPushBus``: server push between the nodes that share a Redis, over Redis pub/sub.

Every node process publishes its pushes (``core.push`` records, JSON) on one channel,
``qewd-twisted:push:<name>``, and subscribes to it. A record whose origin is this *node*
(``"<node id>/<process id>"``: every process of one node shares the node id) is skipped,
because the node's own processes already have it (delivered locally, and relayed between its
processes by their own bus); any other is handed to ``deliver`` (``Node.deliver_push``), which
sends it to this process's sockets only. So each matching socket gets each push once, and one
sender's pushes in the order it sent them (one publishing connection per process, and Redis
keeps a connection's order).

Two connections (a subscribed connection cannot PUBLISH), each a ``ClientService`` that
reconnects with backoff, authenticates (``AUTH``) and, for the subscriber, resubscribes. The
bus is *up* while both are ready. Nothing is queued while it is down: a push published then is
dropped and counted (``dropped[reason]``, ``qewd_push_dropped_total``), with one log line per
minute at most; local delivery is the node's and goes on regardless. Pushes sent but not yet
acknowledged by Redis are bounded in bytes (``MAX_UNACKED_BYTES``); one lost with its connection
is counted as dropped (``lost``: it may or may not have reached the other nodes; never resent).

May import: ``core.push``, ``_json``, ``pushbus``.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from qewd_twisted._json import dumps_ascii, loads_strict
from qewd_twisted.core.push import IPushBus, IPushBusStats, check_push
from qewd_twisted.pushbus.resp import RedisProtocol, SubscriberProtocol

__all__ = ["CHANNEL_PREFIX", "DROP_REASONS", "MAX_PUSH_BYTES", "MAX_UNACKED_BYTES",
           "RedisPushBus"]

log = Logger()

#: Every push channel's name starts with this; ``push.channel`` (default ``db<N>``) follows.
CHANNEL_PREFIX = "qewd-twisted:push:"
#: A push record larger than this (as JSON) is not published (dropped, ``too_large``).
MAX_PUSH_BYTES = 8 * 1024 * 1024
#: Bytes published and not yet acknowledged by Redis, at most; past it a push is dropped
#: (``backlog``) instead of piling up in memory behind a slow Redis.
MAX_UNACKED_BYTES = 16 * 1024 * 1024
#: Seconds without traffic after which a connection sends PING (a dead Redis is noticed).
KEEPALIVE = 15.0
#: Seconds between two log lines about dropped pushes.
DROP_LOG_INTERVAL = 60.0

#: Why a push was not carried: the bus was down (not connected, or not subscribed yet);
#: too many bytes awaiting Redis; its connection was lost before Redis acknowledged it; it is
#: larger than MAX_PUSH_BYTES; not JSON; (received) not a well-formed push record.
DROP_REASONS = ("down", "backlog", "lost", "too_large", "not_json", "malformed")


def default_retry() -> Callable[[int], float]:
    """Reconnect after 0.1 s, doubling up to 2 s, plus up to 0.25 s of jitter: Redis is near
    and cheap to dial, and pushes are dropped for as long as the bus is down."""
    return backoffPolicy(initialDelay=0.1, maxDelay=2.0, factor=2.0,
                         jitter=lambda: random.random() * 0.25)


class _Factory(Factory):
    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build

    def buildProtocol(self, addr: Any) -> Any:
        proto = self._build()
        proto.factory = self
        return proto


@implementer(IPushBus, IPushBusStats)
class RedisPushBus(MultiService):
    """The push bus over one Redis (see the module docstring); a service: start it, stop it.

    ``node_id``: this node's id (the first part of ``Node.origin``); ``deliver``: called with
    each push record from another node (``Node.deliver_push``). ``timeout``: seconds to connect,
    and for Redis to answer a command before the connection is dropped and made again.
    ``endpoint``: where Redis is, instead of ``host`` and ``port`` (tests).
    """

    kind = "redis"

    def __init__(self, reactor: Any, node_id: str, deliver: Callable[[dict[str, Any]], None], *,
                 host: str = "127.0.0.1", port: int = 6379, password: str | None = None,
                 channel: str = "db0", timeout: float = 5.0, keepalive: float | None = KEEPALIVE,
                 retry: Callable[[int], float] | None = None,
                 endpoint: IStreamClientEndpoint | None = None) -> None:
        super().__init__()
        self.setName("redis-push")
        self.reactor = reactor
        self.node_id = node_id
        self.deliver = deliver
        self.address = f"{host}:{port}"
        self.channel = (CHANNEL_PREFIX + channel).encode("utf-8")
        self.password = password
        self.timeout = timeout
        self.keepalive = keepalive
        # counts (IPushBusStats): acknowledged by Redis, delivered here from other nodes,
        # not carried; and this node's own pushes seen on the channel and skipped
        self.published = 0
        self.received = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.own_skipped = 0
        self._own = node_id + "/"
        self._publisher: RedisProtocol | None = None
        self._subscriber: SubscriberProtocol | None = None
        self._unacked = 0
        self._waiting: list[defer.Deferred[None]] = []
        self._was_up = False
        self._ever_up = False
        self._last_drop_log: float | None = None
        self._unlogged = 0
        self._down_since_log = 0
        self._stopping = False  # set by stopService: closing on purpose is not worth a warning
        self._first_check: Any = None
        if endpoint is None:
            endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
        self._retry = retry or default_retry()
        # connections that were made but refused (AUTH, SUBSCRIBE) in a row, per connection:
        # ClientService counts only connections that could not be made, so the backoff goes on
        # growing from these (see prepare_publisher)
        self.refusals = {"publisher": 0, "subscriber": 0}
        for build, kind in ((self._new_publisher, "publisher"),
                            (self._new_subscriber, "subscriber")):
            ClientService(endpoint, _Factory(build), retryPolicy=self._policy(kind),
                          clock=reactor).setServiceParent(self)

    # -- state

    @property
    def up(self) -> bool:
        """True while pushes are carried: publishing connection ready and channel subscribed."""
        return self._publisher is not None and self._subscriber is not None

    def when_up(self) -> defer.Deferred[None]:
        """A Deferred that fires once the bus is up (at once if it is)."""
        if self.up:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)
        return d

    def _changed(self) -> None:
        if self.up and not self._was_up:
            self._was_up = True
            if self._ever_up:
                log.info("push bus: Redis at {address} is back on channel {channel}; "
                         "{count} push(es) were dropped while it was unreachable",
                         address=self.address, channel=self.channel.decode("utf-8"),
                         count=self._down_since_log)
            else:
                log.info("push bus: carrying server push through Redis at {address}, "
                         "channel {channel}", address=self.address,
                         channel=self.channel.decode("utf-8"))
            self._ever_up = True
            self._down_since_log = 0
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)
        elif not self.up and self._was_up:
            self._was_up = False
            if self._stopping:
                return
            log.warn("push bus: lost Redis at {address}: server push reaches this node's "
                     "sockets only, pushes for other nodes are dropped (and counted) until it "
                     "is back", address=self.address)

    def startService(self) -> None:
        self._stopping = False
        super().startService()
        # not up within the connect timeout: say so once (ClientService retries quietly)
        self._first_check = self.reactor.callLater(self.timeout, self._still_down)

    def stopService(self) -> Any:
        self._stopping = True
        if self._first_check is not None and self._first_check.active():
            self._first_check.cancel()
        self._first_check = None
        return super().stopService()

    def _still_down(self) -> None:
        self._first_check = None
        if not self._ever_up:
            log.warn("push bus: Redis at {address} not reachable yet: server push reaches "
                     "this node's sockets only until it is (retrying)", address=self.address)

    # -- connections (each a ClientService that reconnects; the protocols prepare themselves)
    #
    # Not ClientService's prepareConnection: when a preparation fails it leaves the connection
    # open, and that connection closing later (we must close it) is a transition its state
    # machine does not have (automat NoTransition, Twisted 26.10). So a connection counts as
    # made once TCP is up, the bus authenticates and subscribes it from ``on_connected``, and
    # drops it when refused; the retry policy then backs off by the refusals in a row.

    def _policy(self, kind: str) -> Callable[[int], float]:
        def policy(attempt: int) -> float:
            return self._retry(max(attempt, self.refusals[kind]))

        return policy

    def _new_publisher(self) -> RedisProtocol:
        return RedisProtocol(self.reactor, reply_timeout=self.timeout, keepalive=self.keepalive,
                             on_connected=self.prepare_publisher, on_lost=self._publisher_lost)

    def _new_subscriber(self) -> SubscriberProtocol:
        return SubscriberProtocol(self.reactor, self.message_received,
                                  reply_timeout=self.timeout, keepalive=self.keepalive,
                                  on_connected=self.prepare_subscriber,
                                  on_lost=self._subscriber_lost)

    def _authenticate(self, proto: Any) -> defer.Deferred[Any]:
        if self.password is None:
            return defer.succeed(None)
        return proto.execute(b"AUTH", self.password)

    def _refused(self, failure: Failure, proto: Any, kind: str, what: str) -> None:
        self.refusals[kind] += 1
        if not self._stopping:
            log.warn("push bus: {what} Redis at {address} failed: {error}", what=what,
                     address=self.address, error=failure.getErrorMessage())
        if proto.connected:
            proto.transport.abortConnection()  # its ClientService dials again, backing off

    def prepare_publisher(self, proto: RedisProtocol) -> defer.Deferred[Any]:
        """A new publishing connection: authenticate, and once Redis has answered a PING (a
        connection the kernel accepted for a Redis that is hung is not up) it carries pushes."""
        def ready(_: Any) -> None:
            self.refusals["publisher"] = 0
            self._publisher = proto
            self._changed()

        d = self._authenticate(proto)
        d.addCallback(lambda _: proto.execute(b"PING"))
        d.addCallback(ready)
        d.addErrback(self._refused, proto, "publisher", "preparing the publishing connection to")
        return d

    def prepare_subscriber(self, proto: SubscriberProtocol) -> defer.Deferred[Any]:
        """A new subscribing connection: authenticate and subscribe to the channel."""
        def ready(_: Any) -> None:
            self.refusals["subscriber"] = 0
            self._subscriber = proto
            self._changed()

        d = self._authenticate(proto)
        d.addCallback(lambda _: proto.subscribe(self.channel))
        d.addCallback(ready)
        d.addErrback(self._refused, proto, "subscriber", "subscribing to")
        return d

    def _publisher_lost(self, proto: RedisProtocol, reason: Failure) -> None:
        if self._publisher is proto:
            self._publisher = None
            self._changed()

    def _subscriber_lost(self, proto: RedisProtocol, reason: Failure) -> None:
        if self._subscriber is proto:
            self._subscriber = None
            self._changed()

    # -- IPushBus

    def publish(self, push: dict[str, Any]) -> None:
        """Publish ``push`` to the other nodes; dropped and counted when that is not possible
        now. Never raises."""
        try:
            self._publish(push)
        except Exception:
            log.failure("push bus: publishing a push failed")

    def _publish(self, push: dict[str, Any]) -> None:
        publisher = self._publisher
        if publisher is None or self._subscriber is None:
            return self._drop("down")
        try:
            data = dumps_ascii(push).encode("ascii")
        except (TypeError, ValueError):
            return self._drop("not_json")
        size = len(data)
        if size > MAX_PUSH_BYTES:
            return self._drop("too_large")
        if self._unacked + size > MAX_UNACKED_BYTES:
            return self._drop("backlog")
        d = publisher.execute(b"PUBLISH", self.channel, data)
        self._unacked += size
        d.addCallbacks(self._acknowledged, self._not_acknowledged, callbackArgs=(size,),
                       errbackArgs=(size,))

    def _acknowledged(self, receivers: Any, size: int) -> None:
        self._unacked -= size
        self.published += 1

    def _not_acknowledged(self, failure: Failure, size: int) -> None:
        self._unacked -= size
        self._drop("lost")

    # -- from the channel

    def message_received(self, channel: bytes, data: bytes) -> None:
        """One message on the subscribed channel: a push from another node is delivered here."""
        if channel != self.channel:
            return
        try:
            record = check_push(loads_strict(data.decode("utf-8")))
        except (TypeError, ValueError):  # UnicodeDecodeError and JSONDecodeError included
            return self._drop("malformed")
        if record["origin"].startswith(self._own):
            self.own_skipped += 1
            return
        self.received += 1
        try:
            self.deliver(record)
        except Exception:
            log.failure("push bus: delivering a push from {origin} failed",
                        origin=record["origin"])

    # -- dropped pushes: counted, and logged at most once a DROP_LOG_INTERVAL

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        self._down_since_log += reason == "down"
        self._unlogged += 1
        if self._stopping:
            return
        now = self.reactor.seconds()
        if self._last_drop_log is None or now - self._last_drop_log >= DROP_LOG_INTERVAL:
            log.warn("push bus: {count} push(es) not carried to other nodes through Redis at "
                     "{address} (this one: {reason}); counted in qewd_push_dropped_total, "
                     "logged at most every {interval:.0f} s", count=self._unlogged,
                     address=self.address, reason=reason, interval=DROP_LOG_INTERVAL)
            self._last_drop_log = now
            self._unlogged = 0
