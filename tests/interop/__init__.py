"""Interoperability with real QEWD.js 2.52.3 nodes (the reference peer in ../shared/qewd-peer).

These tests need the peer running: scripts/test.sh starts a private one on ports of its own and
points the tests at it through ``QEWD_PEER_MASTER`` / ``QEWD_PEER_MS`` / ``QEWD_REDIS_PORT`` /
``QEWD_PEER_DIR``. A missing peer is a failure, in every environment; only
``QEWD_TEST_ALLOW_SKIP=interop`` skips them instead (tests/strict.py). docs/interop.md says what each test proves.
"""
