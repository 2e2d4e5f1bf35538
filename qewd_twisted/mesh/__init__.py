"""
The mesh: forwarding chosen application/type pairs to other QEWD nodes over self-healing links.

- `links`: `MicroServices` (the routes from ``u_services``) and `Link` (one remote node);
- `protocol`: the link's Engine.IO/socket.io client protocol, its factory and endpoint.

May import: ``qewd_twisted.errors``, ``qewd_twisted.transports`` (wire codecs and framing) and
Twisted/Autobahn. Never the node core.
"""
