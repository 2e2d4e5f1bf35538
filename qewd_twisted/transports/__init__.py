# -*- test-case-name: tests.test_wire -*-
"""
The edge: how clients reach the node.

- `wire`: the Engine.IO 3 / socket.io 2 packet codecs and the plain JSON framing;
- `framing`: our changes to Autobahn's per-frame work;
- `site`: the `twisted.web` Site: ``/socket.io/``, ``/ws``, static files and the browser clients.

A transport turns bytes into messages for ``Node.receive(conn, message)`` and gives the node a
`Connection` to answer through. May import: ``qewd_twisted.core`` (Connection and the node's
door), ``qewd_twisted.errors``, ``qewd_twisted._json``, Twisted and Autobahn.
"""
