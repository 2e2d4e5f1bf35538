"""A REST node: `twistd -n qewd --config examples/rest/startup.py`, then the curl session in
docs/rest.md. Routes under /api come from api.py."""

config = {
    "port": 8080,
    "jwt": {"secret": "someSecret123"},
    "cors": True,
}

routes = [{"path": "/api", "module": "api.py"}]
