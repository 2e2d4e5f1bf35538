# -*- test-case-name: tests.integration.test_service -*-
"""
``twistd qewd --config startup.py``: the plugin's Options and makeService.

A configuration problem is printed (every problem, each with its key path) and twistd exits
with status 1 before anything listens. With ``processes`` above 1 the service is the
supervisor of that many node processes (qewd_twisted/cluster).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.python import usage

from qewd_twisted.config import ConfigError, load_config


class Options(usage.Options):
    synopsis = "--config startup.py"
    longdesc = (
        "Run a QEWD node. The startup file is a Python module defining `config`, a dict with "
        "QEWD's keys (port, poolSize, jwt, moduleMap, u_services, ...)."
    )
    optParameters = [
        ["config", "c", None, "the startup file: a Python module that defines `config`"],
    ]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config startup.py is required")
        try:
            self.loaded = load_config(self["config"])
        except ConfigError as e:
            _fail(e)


def _fail(e: Exception) -> None:
    sys.stderr.write(f"qewd: {e}\n")
    sys.stderr.flush()
    raise SystemExit(1)


def makeService(options: Options) -> Any:
    from twisted.internet import reactor  # twistd has installed the reactor by now

    from qewd_twisted.service import QEWDService

    config = options.loaded
    if config.processes > 1:
        # a supervisor of N node processes on the same sockets (qewd_twisted/cluster)
        from qewd_twisted.cluster.supervisor import EX_CONFIG, Supervisor

        def give_up() -> None:
            # a process could not load the node: stop, and exit with its status (twistd
            # itself would exit 0), so that a service manager does not take it for a stop
            def leave() -> None:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(EX_CONFIG)

            reactor.addSystemEventTrigger("after", "shutdown", leave)
            reactor.stop()

        return Supervisor(config, reactor, config_path=os.path.abspath(options["config"]),
                          on_give_up=give_up)
    try:
        return QEWDService(config, reactor)
    except ConfigError as e:
        _fail(e)
