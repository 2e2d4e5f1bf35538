# -*- test-case-name: tests.test_cluster -*-
"""
The processes of one node (``config["processes"] = N``, docs/reliability.md "Processes").

``twistd qewd`` with N > 1 runs a `Supervisor` (supervisor.py): it opens the node's listening
sockets itself, starts N node processes (child.py) that adopt those sockets and serve them, and
watches them over one AMP control channel each (protocol.py): heartbeats, server push between
the processes (an ``IPushBus``), and the whole node's figures for ``/health``, ``/metrics`` and
the status page (aggregate.py).

May import: ``config``, ``core.push``, ``errors``, ``_json``, ``ops``, ``service`` (a process is
a ``QEWDService``), ``transports``.
"""
