# -*- test-case-name: tests.test_parity -*-
"""
Application switch: a local handler hands its request on to another application on a remote
node (docs/protocol.md §4.7, QEWD.js 2.46.10).

A handler replies ``finished({"type": ..., "qewd_destination": "<destination>",
"qewd_application": "<application>", ...})``. The node checks that ``<destination>`` is a
``u_services.destinations`` entry (``{host, application}``) and that
``permit_application_switch[<this application>][<application>]`` is true; then it sends that
reply object, with the session's refreshed JWT, to the destination's node and relays whatever
comes back (intermediate and final frames) to the client, the token put back in the client's
own application. Refusals carry QEWD's texts: ``<destination> is not a valid microservice
destination`` and ``No permissions set to allow a switch from <a> to <b>``.

Differences from QEWD.js (docs/compatibility.md): a refusal is a normal error reply with the
request's ``type`` (QEWD.js sends a bare ``{error}`` that no client callback receives); the
forwarded token names the target application (so a QEWD.js destination needs no
``mode=microservice`` to dispatch it) and is put back in the caller's application on the way
back, as for any forwarded request; a session-token session cannot be switched (there is no
token a remote node could read).

On the destination side, a QEWD.js master sends the reply object with the caller's token (its
``application`` claim unchanged) and expects ``qewd_application`` to pick the handler module;
here that is honoured when the destination's own ``permit_application_switch`` allows the
switch (`ApplicationSwitch.accepts`). The reply's token stays in the caller's application.

`ApplicationSwitch` decides (pure); the node forwards through its ``Forwarder``. May import:
``qewd_twisted.errors``, ``qewd_twisted.core`` and Twisted.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from qewd_twisted import errors as E

__all__ = ["ApplicationSwitch", "SwitchRefused", "wants_switch"]


def wants_switch(result: Any) -> bool:
    """True for a handler's final reply that asks for an application switch."""
    return (isinstance(result, dict) and bool(result.get("qewd_destination"))
            and bool(result.get("qewd_application")))


class SwitchRefused(Exception):
    """The switch is not allowed; ``str()`` is the client's text."""


class ApplicationSwitch:
    """Checks switch requests against the destinations and ``permit_application_switch``.

    ``destinations``: name -> an object with ``url`` (and ``urls``, its replicas) and
    ``application`` (config's ``Destination``); ``permit``: ``permit_application_switch``;
    ``link_for(urls, application)``: the node's link to that URL, or the replica set of the
    links to several (made on first use); a set's ``pick()`` chooses each request's member.
    """

    def __init__(self, destinations: Mapping[str, Any], permit: Mapping[str, Any] | None,
                 link_for: Callable[[str, str], Any]) -> None:
        self.destinations = dict(destinations)
        self.permit = dict(permit or {})
        self._link_for = link_for

    def route(self, source: str, result: Mapping[str, Any]) -> tuple[Any, str]:
        """``(link, target application)`` for a handler of ``source`` that replied
        ``result``; raises `SwitchRefused` with QEWD's text."""
        destination = result.get("qewd_destination")
        target = result.get("qewd_application")
        dest = self.destinations.get(destination) if isinstance(destination, str) else None
        if dest is None:
            raise SwitchRefused(E.SWITCH_BAD_DESTINATION.format(destination=destination))
        allowed = self.permit.get(source)
        if not (isinstance(allowed, Mapping) and isinstance(target, str)
                and allowed.get(target) is True):
            raise SwitchRefused(E.SWITCH_NOT_PERMITTED.format(source=source, target=target))
        link = self._link_for(getattr(dest, "urls", None) or dest.url, dest.application)
        pick = getattr(link, "pick", None)  # a destination with replicas: one member per request
        return (pick() if pick is not None else link), target

    def accepts(self, application: str, message: Mapping[str, Any]) -> str:
        """The application a switched request runs as on this node, the destination: the
        message's ``qewd_application`` when it also has a ``qewd_destination`` and this node's
        own ``permit_application_switch`` allows ``application`` (the token's) to switch to
        it; else ``application``. (QEWD.js honours it whenever the node runs with env
        ``mode=microservice``; here the destination's operator says which switches.)"""
        target = message.get("qewd_application")
        if not (isinstance(target, str) and target and message.get("qewd_destination")):
            return application
        allowed = self.permit.get(application)
        if isinstance(allowed, Mapping) and allowed.get(target) is True:
            return target
        return application

    @staticmethod
    def message(result: Mapping[str, Any], request_type: str, token: str) -> dict[str, Any]:
        """What goes to the destination: the handler's reply as the new request (its
        ``type``, else the request's), with the session's token."""
        out = {k: v for k, v in result.items() if k not in ("ms_requestId", "qewd_twisted")}
        if not isinstance(out.get("type"), str) or not out.get("type"):
            out["type"] = request_type
        out["token"] = token
        return out
