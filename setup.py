"""qewd-twisted: QEWD's micro-service platform on Twisted and Autobahn."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "README.md")

setup(
    name="qewd-twisted",
    version="0.1.0",
    description="QEWD-compatible micro-service nodes on Twisted and Autobahn",
    long_description=open(README, encoding="utf-8").read() if os.path.exists(README) else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # twisted.plugins is a namespace shared with every other Twisted plugin: it is listed
    # explicitly (find_packages does not see it) and ships no __init__.py (STYLE.md).
    packages=find_packages(include=["qewd_twisted", "qewd_twisted.*"])
    + ["qewd_twisted.static", "twisted.plugins"],
    # the browser clients the node serves (a data-only package)
    package_data={"qewd_twisted.static": ["*"], "twisted.plugins": ["qewd_dropin.py"]},
    include_package_data=True,
    install_requires=[
        "twisted[tls]>=23.8",
        "autobahn>=23.1",
        "pyjwt>=2.8",
        "cryptography>=41",
        "service-identity>=23.1",
        # /metrics: the Prometheus project's own, well-kept implementation of the exposition
        # formats (text and OpenMetrics), rather than a hand-written one (docs/operations.md)
        "prometheus-client>=0.17",
        # every frame a node writes is JSON: orjson (well kept, Rust) encodes a reply about 8x
        # faster than the stdlib's C encoder (qewd_twisted/_json.py dumps_utf8, with the stdlib
        # for what it refuses; docs/performance.md)
        "orjson>=3.9",
    ],
    # mutation: scripts/mutation.sh (issue 18 item 2); cosmic-ray runs any test command, so the
    # suite stays on trial, and its session database lets the script sample mutants.
    extras_require={
        # config["database"] = {"type": "redis", ...}: redis-py, the Redis project's own
        # maintained client (connection pool, reconnects, Lua scripts), not a hand-written RESP;
        # hiredis, the Redis project's C reply parser, which redis-py uses when installed
        # (a 1,000-member reply parses about 10x faster than in redis-py's Python parser)
        "redis": ["redis>=5", "hiredis>=2"],
        # python-socketio 4 / python-engineio 3: the socket.io 2 (EIO=3) Python client, tested
        # against our long-polling transport (tests/integration/test_polling_clients.py)
        "test": ["hypothesis>=6", "redis>=5", "hiredis>=2", "python-socketio[client]>=4.6,<5",
                 "python-engineio>=3.14,<4"],
        "mutation": ["cosmic-ray>=8.3,<9"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
    ],
)
