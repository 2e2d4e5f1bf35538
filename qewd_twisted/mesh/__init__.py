# -*- test-case-name: tests.test_links -*-
"""
The mesh: forwarding chosen application/type pairs to other QEWD nodes over self-healing links.

- `links`: `MicroServices` (the routes from ``u_services``) and `Link` (one remote node: its life
  cycle and registration);
- `replicas`: `ReplicaSet`, one destination served by several nodes (each request to one live
  member);
- `correlation`: `Correlator`, request ids, queue, deadlines and reply attribution (pure,
  clock-driven);
- `protocol`: the link's Engine.IO/socket.io client protocol and its factory;
- `policy`: endpoints from URLs, the retry policy, the handshake guard.

May import: ``qewd_twisted.core.envelope`` and ``core.interfaces`` (the contracts it provides),
``qewd_twisted.errors``, ``qewd_twisted.transports`` (wire codecs and framing) and
Twisted/Autobahn. Never the node.
"""
