# -*- test-case-name: tests.documents.test_store -*-
"""
A real Debian ``redis-server`` on a free loopback port for the document tests: started by a
test class, stopped by it (``RedisServer.start()`` / ``stop()``), no persistence, no config
file. ``redis_server_path()`` is None when the package is not installed (the tests then skip;
scripts/test.sh installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

__all__ = ["RedisServer", "redis_server_path"]


def redis_server_path() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process bound to 127.0.0.1."""

    def __init__(self, *args: str) -> None:
        self.args = args  # more redis-server options, e.g. "--requirepass", "secret"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.dir = tempfile.mkdtemp(prefix="qewd-redis-")

    def start(self, port: int | None = None) -> int:
        """Start (or restart on the same port) and wait until it answers PING."""
        path = redis_server_path()
        if path is None:
            raise RuntimeError("redis-server is not installed")
        for _ in range(5):
            self.port = port or _free_port()
            self.proc = subprocess.Popen(
                [path, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
                 "--loglevel", "warning", *self.args],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_ready():
                return self.port
            self.proc.kill()
            self.proc.wait()
            if port:
                break
        raise RuntimeError("redis-server did not start")

    def _wait_ready(self) -> bool:
        # Process start-up: bounded polling of the port (no reactor is involved here).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    answer = s.recv(64)
                    # with --requirepass, NOAUTH is an answer too: the server is up
                    if answer.startswith((b"+PONG", b"-NOAUTH")):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
