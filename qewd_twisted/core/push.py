# -*- test-case-name: tests.test_push -*-
"""
Server push beyond this process: the ``IPushBus`` role and the push record it carries.

``q.to_all``, ``q.to_application`` and ``q.send_to_socket`` deliver to this process's own
sockets first (``Node``), then hand the same push to every bus in ``Node.push_buses``: one that
reaches the node's other processes (processes of one node) and one that reaches the other nodes
sharing a Redis database. A bus carries the push record to its peers, and each peer calls
``Node.deliver_push(record)`` there, which delivers to that process's own sockets only (never
republishes), so a push reaches every matching socket exactly once.

A push record is a JSON object::

    {"scope": "all" | "application" | "socket",
     "message": <the JSON value sent to the clients, as is>,
     "application": "<name>",     # scope "application" only
     "socket_id": "<id>",         # scope "socket" only
     "origin": "<node id>/<process id>"}

``origin`` names the sending process (``Node.origin``); a bus uses it not to deliver a push back
to the process (or node) it came from. Order: a bus keeps one sender's pushes in the order they
were published (each carrier is one ordered channel per sender).

May import: nothing from ``qewd_twisted``; zope.interface.
"""

from __future__ import annotations

from typing import Any

from zope.interface import Attribute, Interface

__all__ = ["IPushBus", "IPushBusStats", "SCOPES", "make_push", "check_push"]

#: The push scopes: every socket, the sockets of one application, one socket by id.
SCOPES = ("all", "application", "socket")


class IPushBus(Interface):
    """Carries pushes from this process to its peers (other processes, other nodes)."""

    def publish(push: dict[str, Any]) -> None:
        """Send ``push`` (a record as above) to every peer; never back to this process.

        Never raises: a bus that cannot carry it (down, not serialisable) logs and counts it
        as dropped. Pushes one caller publishes arrive at each peer in the order published.
        """


class IPushBusStats(Interface):
    """What a bus reports, read when ``/metrics`` is scraped (``ops.metrics``); optional."""

    kind = Attribute("The bus's name in metric labels: 'redis', 'processes', ...")
    up = Attribute("True while the bus carries pushes to its peers.")
    published = Attribute("Pushes from this process the carrier accepted (an int).")
    received = Attribute("Pushes from peers delivered to this process's sockets (an int).")
    dropped = Attribute("{reason: count}: pushes not carried, or received and refused.")


def make_push(scope: str, message: Any, origin: str, *, application: str | None = None,
              socket_id: str | None = None) -> dict[str, Any]:
    """The push record for ``scope`` (one of ``SCOPES``)."""
    push: dict[str, Any] = {"scope": scope, "message": message, "origin": origin}
    if scope == "application":
        push["application"] = application
    elif scope == "socket":
        push["socket_id"] = socket_id
    elif scope != "all":
        raise ValueError(f"unknown push scope {scope!r}")
    return push


def check_push(obj: Any) -> dict[str, Any]:
    """``obj`` if it is a well-formed push record (as received from a peer), else ValueError."""
    if not isinstance(obj, dict):
        raise ValueError("a push record is a JSON object")
    scope = obj.get("scope")
    if scope not in SCOPES:
        raise ValueError(f"unknown push scope {scope!r}")
    if "message" not in obj:
        raise ValueError("a push record has a message")
    if not isinstance(obj.get("origin"), str):
        raise ValueError("a push record has an origin")
    if scope == "application" and not isinstance(obj.get("application"), str):
        raise ValueError("an application push names its application")
    if scope == "socket" and not isinstance(obj.get("socket_id"), str):
        raise ValueError("a socket push names its socket_id")
    return obj
