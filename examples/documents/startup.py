# A node whose handlers keep persistent JSON (docs/documents.md):
#   twistd -n qewd --config examples/documents/startup.py
# Documents live in qewd.sqlite beside this file; for Redis shared with QEWD.js nodes use
#   "database": {"type": "redis", "params": {"host": "127.0.0.1", "port": 6379}}
config = {
    "port": 8080,
    "jwt": {"secret": "someSecret123"},
    "moduleMap": {"people": "people.py"},
    "database": {"type": "sqlite", "params": {"path": "qewd.sqlite"}},
}
