# -*- test-case-name: tests.test_rest_http -*-
"""
QEWD's HTTP side (docs/rest.md): local REST routes, ``POST /ajax``, the REST micro-service
router of ``u_services`` and the remote side of ``restRequest``.

- routing.py: path templates and route tables (pure)
- mapping.py: HTTP bodies, bearer tokens, reply frame → HTTP (pure)
- jwt.py: the JWT helpers handlers call (``create_rest_session``...)
- dispatch.py: what the node does with a ``restRequest`` message
- resource.py: the twisted.web resources and the HTTP-backed connection

May import core, apps, auth and config; nothing imports it but service.py.
"""

from __future__ import annotations

from typing import Any

from qewd_twisted.rest.dispatch import RestDispatcher
from qewd_twisted.rest.jwt import (
    RestArgs,
    create_rest_session,
    get_claim,
    get_rest_jwt,
    issue_token,
    validate_rest_request,
)
from qewd_twisted.rest.resource import AjaxResource, HttpConnection, RestResource
from qewd_twisted.rest.routing import Mount, MountTable, PathTemplate, RouteTable

__all__ = [
    "AjaxResource",
    "HttpConnection",
    "RestArgs",
    "RestDispatcher",
    "RestResource",
    "attach",
    "create_rest_session",
    "get_claim",
    "get_rest_jwt",
    "install_rest",
    "issue_token",
    "validate_rest_request",
]


def attach(node: Any, dispatcher: RestDispatcher) -> None:
    """Make ``dispatcher`` the node's handler of ``restRequest`` messages."""
    node.builtins["restRequest"] = dispatcher.receive
    node.local.use_microservice = dispatcher.use_microservice


def install_rest(node: Any, root: Any, reactor: Any, config: Any,
                 micro_services: Any = None) -> RestDispatcher:
    """Give ``node`` its REST dispatcher and put the REST resources into the site's ``root``:
    one under the first segment of every mount point (and micro-service REST path), and
    ``/ajax``."""
    mounts = MountTable(Mount(m.path, m.application) for m in config.rest_mounts)
    forwarder = None
    rest_routes = getattr(config.micro_services, "rest_routes", ())
    if rest_routes:
        from qewd_twisted.rest.forwarding import RestForwarder

        forwarder = RestForwarder(node, config.micro_services, micro_services,
                                  timeout=config.micro_service_timeout)
    dispatcher = RestDispatcher(node, mounts, forwarder)
    attach(node, dispatcher)
    options = {"cors": config.cors, "max_body": config.max_body_size}
    resource = RestResource(node, reactor, **options)
    segments = mounts.first_segments()
    if forwarder is not None:
        segments |= forwarder.first_segments()
    for segment in sorted(segments):
        root.putChild(segment.encode("utf-8"), resource)
    root.putChild(b"ajax", AjaxResource(node, reactor, **options))
    return dispatcher
