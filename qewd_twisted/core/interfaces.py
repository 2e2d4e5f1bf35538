# -*- test-case-name: tests.test_interfaces -*-
"""
The contracts between the node and its collaborators, as ``zope.interface`` interfaces.

Each is a role with more than one provider, or a provider and a test fake: whoever provides it
says so with ``@implementer`` and tests check it with ``verifyObject``.

- `IConnection`: one client, whatever its transport (transports, ``testing.MemoryConnection``);
- `IWorkerPool`: where sync handlers run (``apps.pool.WorkerPool``, ``testing.SyncPool``);
- `INodeObserver`: what the node reports (ops' metrics, status rates, request log);
- `IRoutes`: which (application, type) goes to a remote node (``mesh.links.MicroServices``);
- `ILink` and `IReplyReceiver`: forwarding one request to a remote node and getting its reply
  frames back, or one `LinkOutcome` (``mesh.links.Link``, ``core.forwarding``);
- `ILinkObserver`: what a link reports about itself (the status page's link events).
The session store's contract, ``ISessionStore``, lives with its providers in ``auth.sessions``.

May import: Twisted and zope.interface only.
"""

from __future__ import annotations

from enum import Enum

from zope.interface import Attribute, Interface

__all__ = ["IConnection", "ILink", "ILinkObserver", "INodeObserver", "IReplyReceiver",
           "IRoutes", "IWorkerPool", "LinkOutcome"]


class IConnection(Interface):
    """One client, whatever carries its frames (a WebSocket, an HTTP long-poll, a test).

    A transport makes one per client, hands it to ``Node.connection_opened``, passes each
    decoded message to ``Node.receive(conn, message)`` and calls ``Node.connection_lost``
    when the client has gone. The node answers only through this object.
    ``core.requests.Connection`` is a base class that provides the state and ``send``.
    """

    id = Attribute("str: unique among this node's connections (the socket id of QEWD)")
    ip = Attribute("str: the client's address, for sessions and logs")
    framing = Attribute("str: how frames are encoded; a broadcast encodes once per framing")
    application = Attribute("str | None: set by ewd-register / ewd-reregister")
    jwt = Attribute("bool: the client registered in JWT mode")
    open = Attribute("bool: frames can still be sent; the node stops sending once False")
    in_flight = Attribute("int: requests from this connection not yet finished (node-owned)")
    is_link = Attribute("bool: a master's link (registered with qewd_twisted: 1)")

    def send(frame):
        """Encode and send one frame (may raise TypeError/ValueError: not JSON-able)."""

    def encode(frame):
        """The frame as bytes in this connection's framing (may raise as ``send``)."""

    def send_encoded(data):
        """Send what ``encode`` made (a broadcast encodes once per framing)."""

    def close(code=1000, reason=""):
        """Close the connection (WebSocket close codes; other transports map them)."""

    def traffic():
        """(bytes received, bytes sent) on the wire so far; (0, 0) if unknown."""


class IWorkerPool(Interface):
    """Where sync handler code runs, off the reactor thread."""

    running = Attribute("bool: the pool accepts work")
    busy = Attribute("int: threads running a call")
    queued = Attribute("int: calls waiting for a thread")

    def run(fn, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` in a thread; a Deferred with its result. Fails with
        ``PoolFull`` when the queue is at its bound."""

    def post(fn, *args):
        """From a pool thread: call ``fn(*args)`` on the reactor thread."""

    def when_idle():
        """A Deferred that fires once no call runs or waits."""

    def lend_spare():
        """Add a thread in place of one stuck past its handler's deadline; False if none."""

    def return_spare():
        """The stuck thread finished: give its spare back."""


class INodeObserver(Interface):
    """What the node reports. Calls come on the reactor thread, in the middle of the node's
    work: be quick, never raise, never keep the request or its message."""

    def connection_opened(conn):
        """A client connection (any transport) opened."""

    def connection_closed(conn):
        """It closed; ``conn.traffic()`` gives its wire bytes."""

    def registered(conn, application, jwt, reregister):
        """``ewd-register`` / ``ewd-reregister`` succeeded."""

    def request_finished(req, outcome):
        """A request ended, exactly once; ``outcome`` is one of ``ops.observe.OUTCOMES``."""


class LinkOutcome(Enum):
    """How a forwarded request ended when no final reply frame came from the remote."""

    DOWN = "down"  # the link was down, or went down, or stopped (the client gets a 503)
    TIMEOUT = "timeout"  # its deadline passed (the client gets a 504)


class IReplyReceiver(Interface):
    """Gets what happens to one forwarded request: exactly one final frame through ``frame``
    (``core.envelope.is_final``) or one ``failed``, never both, and nothing after either."""

    def frame(frame):
        """A reply frame from the remote, ``ms_requestId`` removed (``envelope.from_link``)."""

    def failed(outcome):
        """The request ended without a final frame: a `LinkOutcome`."""


class ILink(Interface):
    """One remote node that requests can be forwarded to (``mesh.links.Link``), or a set of
    replicas of one, each request going to one live member (``mesh.replicas.ReplicaSet``)."""

    url = Attribute("str: the remote's base URL")
    application = Attribute("str: the remote application the link registered as")
    state = Attribute("mesh.links.LinkState")
    is_up = Attribute("bool: registered, requests are forwarded")
    in_flight = Attribute("int: requests sent, not yet answered")
    queued = Attribute("int: requests waiting to be sent")
    registrations = Attribute("int: ewd-register replies accepted")
    reregistrations = Attribute("int: ewd-reregister replies accepted")

    def send_request(message, receiver, timeout):
        """Forward one already-authenticated message (a dict, left unchanged) and report to
        ``receiver`` (an `IReplyReceiver`). When the link is down, ``receiver.failed(DOWN)``
        is called before this returns. ``timeout``: seconds, or None for none. Nothing is
        ever re-sent."""

    def add_observer(observer):
        """Report to ``observer`` (an `ILinkObserver`); returns a callable that removes it."""


class ILinkObserver(Interface):
    """What a link reports about itself, synchronously: observe, don't act on the link."""

    def link_state_changed(link, state):
        """``link`` is now in ``state`` (a ``mesh.links.LinkState``)."""

    def link_event(link, kind, text):
        """Something an operator should see: ``kind`` is ``"error"`` (connect, handshake or
        registration failures, a drop, no pong), ``"timeout"`` (a request's deadline passed)
        or ``"dropped"`` (a late, unknown or ambiguous frame was dropped); ``text`` says
        what, in a sentence that names the link's URL."""


class IRoutes(Interface):
    """Which requests are forwarded, and to which link."""

    def route(application, type):
        """``(link, remote_application)`` for an ``ILink``, or None: handled here. Called once
        per request: for a destination with replicas the link is the member chosen for it."""
