# -*- test-case-name: tests.test_strict -*-
"""
Ports for servers the tests start, without bind-and-close races (issue 18 item 4).

A server in this process listens on port 0 and the test reads the port back. When a port must
be known before its server exists (a master dialling a micro-service that starts later, a peer
node restarted on the same port, a child process told its port), ``reserve_port`` binds a
socket to 127.0.0.1:0 with ``SO_REUSEADDR`` and keeps it bound, never listening, until the test
ends. While it is held:

- nobody else can take the port: a bind without ``SO_REUSEADDR`` fails, one with it fails as
  soon as our server listens, and Linux never picks a bound port for an outgoing connection;
- a connection to it is refused (nothing listens), just as if the server were down;
- our own servers can listen on it, because Twisted, Node.js (libuv) and redis-server all set
  ``SO_REUSEADDR`` before they bind.

``python -m tests.ports N`` holds N such ports for a shell script: it prints them, one a line,
and keeps them until its standard input closes (scripts/test.sh does this for the private
QEWD.js peer). May import only the standard library and twisted.trial.
"""

from __future__ import annotations

import socket
import sys

from twisted.trial.unittest import TestCase

__all__ = ["hold_port", "reserve_port"]


def hold_port() -> socket.socket:
    """A socket bound to a fresh port on 127.0.0.1 with SO_REUSEADDR, not listening."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


def reserve_port(test: TestCase) -> int:
    """A port on 127.0.0.1 that is this test's until it ends (see the module docstring)."""
    s = hold_port()
    test.addCleanup(s.close)
    return s.getsockname()[1]


def main(argv: list[str]) -> int:
    held = [hold_port() for _ in range(int(argv[1]) if len(argv) > 1 else 1)]
    for s in held:
        print(s.getsockname()[1])
    sys.stdout.flush()
    sys.stdin.read()  # hold until the caller closes our stdin (or exits)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
