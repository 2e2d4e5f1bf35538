# -*- test-case-name: tests.test_wire -*-
"""
The edge: how clients reach the node.

- `wire`: the Engine.IO 3 / socket.io 2 packet codecs and the plain JSON framing;
- `framing`: our changes to Autobahn's per-frame work;
- `site`: the resource tree: ``/socket.io/``, ``/ws``, static files and the browser clients;
- `http`: the HTTP layer under every resource: `NodeSite` (the node's one Site), its channel's
  deadlines, admission and body limits, the WebSocket hand-over, ``allowedOrigins``;
- `static`: static files (web root and the browser clients) and the start-up check of the web
  root. Their defaults are in ``config.limits.Limits``.

A transport turns bytes into messages for ``Node.receive(conn, message)`` and gives the node a
`Connection` to answer through. May import: ``qewd_twisted.core`` (Connection and the node's
door), ``qewd_twisted.errors``, ``qewd_twisted._json``, Twisted and Autobahn.
"""
