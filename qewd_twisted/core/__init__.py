# -*- test-case-name: tests.test_node -*-
"""
The node core: admission, authentication, dispatch, the QEWD envelope and the contracts.

- `node`: the `Node`, the one door (``Node.receive(conn, message)``) every transport's
  messages enter by, with its dispatch table of built-in types;
- `envelope`: every frame a client or a link sees (pure; imports only ``errors``);
- `interfaces`: the zope.interface contracts (IConnection, IWorkerPool, INodeObserver, ILink,
  IReplyReceiver, ILinkObserver, IRoutes) and `LinkOutcome`;
- `requests`: a `Connection` (one client, whatever its transport) and a `Request` (one message
  being handled);
- `inflight`: `InFlight`, the requests in flight (begin, end, drain, abort);
- `forwarding`: `Forwarder`, a request sent over an ``ILink`` and its reply relayed;
- `q`: `Q`, the small surface application code gets.

May import: ``qewd_twisted.errors``, ``qewd_twisted.auth``, ``qewd_twisted.apps``,
``qewd_twisted.config.limits`` and
``qewd_twisted.ops.observe``. Never a transport, never the mesh (links are ``ILink``s).
"""
