# -*- test-case-name: tests.integration.test_service -*-
"""
qewd-twisted: QEWD's micro-service platform on Twisted and Autobahn.

A node serves QEWD's WebSocket protocol, runs handler modules in a worker pool, keeps JWT
sessions any node sharing the secret can read, and forwards chosen application/type pairs to
other QEWD nodes (Python or QEWD.js) over self-healing links.
"""

from qewd_twisted._version import __version__
from qewd_twisted.config import ConfigError, config_from_dict, load_config
from qewd_twisted.service import QEWDService

__all__ = ["QEWDService", "load_config", "config_from_dict", "ConfigError", "__version__"]
