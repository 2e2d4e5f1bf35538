"""
python-socketio 4.x's client with its default options against a node (run as a script by
tests/integration/test_polling_clients.py): it connects on polling and upgrades to WebSocket.
Registers (JWT), logs in as rob / secret, echoes; prints each ewdjs payload as one JSON line
and a last line {"done": true, "transport": ...}. ``URL polling`` forces transports=['polling'].
"""

import json
import sys
import threading

import socketio

_out = threading.Lock()


def emit_line(obj) -> None:
    # python-engineio 3 reads the polling and the WebSocket transport on two threads while it
    # upgrades, so handlers may run on either: one line at a time
    with _out:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def main(url: str, mode: str) -> int:
    sio = socketio.Client(reconnection=False)
    done = threading.Event()
    state: dict = {"token": None, "error": None}

    @sio.on("connect")
    def connect():
        sio.emit("ewdjs", {"type": "ewd-register", "application": "demo", "jwt": True})

    @sio.on("ewdjs")
    def on_ewdjs(msg):
        emit_line(msg)
        token = (msg.get("message") or {}).get("token") if isinstance(msg, dict) else None
        if token:
            state["token"] = token
        if msg["type"] == "ewd-register":
            sio.emit("ewdjs", {"type": "login", "token": state["token"],
                               "params": {"username": "rob", "password": "secret"}})
        elif msg["type"] == "login" and msg.get("finished"):
            sio.emit("ewdjs", {"type": "echo", "token": state["token"], "params": "from python"})
        elif msg["type"] == "echo":
            done.set()

    kwargs = {"transports": ["polling"]} if mode == "polling" else {}
    sio.connect(url, **kwargs)
    if not done.wait(15):
        print("timed out", file=sys.stderr)
        sio.disconnect()
        return 1
    # the upgrade runs on its own thread; give it the time engine.io gives it
    for _ in range(100):
        if mode == "polling" or sio.transport() == "websocket":
            break
        done.clear()
        done.wait(0.1)
    emit_line({"done": True, "transport": sio.transport(), "sid": sio.sid})
    sio.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "default"))
