"""Interoperability with real QEWD.js 2.52.3 nodes (the reference peer in ../shared/qewd-peer).

These tests need the peer running (``bash scripts/peer.sh start``); they find it through
``QEWD_PEER_MASTER`` / ``QEWD_PEER_MS`` and skip without it, except under ``CI``, where a missing
peer is a failure. docs/interop.md says what each test proves.
"""
