# -*- test-case-name: tests.test_redispush -*-
"""
Server push between nodes: ``redisbus.RedisPushBus``, an ``IPushBus`` (``core.push``) over
Redis pub/sub for the nodes that share a Redis database, on ``resp.py``, a small Twisted-native
Redis client (RESP2, in order, reconnecting through ``ClientService``). docs/configuration.md
(``push``) and docs/reliability.md ("Server push across nodes") are the guides.

May import: ``core.push``, ``_json``; nothing else of ``qewd_twisted`` (the bus reaches the node
through the ``deliver`` callable it is given).
"""
