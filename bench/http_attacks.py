# -*- test-case-name: tests.test_http_hardening -*-
"""
The attacks of issue 20 against a real ``twistd qewd`` node on loopback, with what the node
answered and what it kept (open fds and RSS of the node process, read from /proc).

    python -m bench.http_attacks [ghost range slow body odd status static]
    QEWD_ATTACK_GHOSTS=1100 QEWD_ATTACK_MAXCONN=20000 python -m bench.http_attacks ghost

docs/reliability.md ("HTTP") has the figures before and after the hardening. Plain blocking
sockets: this is a measurement, not a test.
"""
import base64
import os
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHICH = sys.argv[1:] or ["ghost", "range", "slow", "body", "odd", "status", "static"]
tmp = tempfile.mkdtemp(prefix="qewd-attacks-")
GHOSTS = int(os.environ.get("QEWD_ATTACK_GHOSTS", "60"))  # ghost upgrades to send
MAXCONN = int(os.environ.get("QEWD_ATTACK_MAXCONN", "50"))  # the node's maxConnections
os.makedirs(tmp + "/www", exist_ok=True)
open(tmp + "/www/.env", "w").write("SECRET=1\n")
open(tmp + "/www/x.unknownext", "w").write("<script>alert(1)</script>")
try: os.symlink("/etc/passwd", tmp + "/www/passwd")
except FileExistsError: pass
with socket.socket() as _s:
    _s.bind(("127.0.0.1", 0))
    port = _s.getsockname()[1]
open(tmp + "/startup.py", "w").write(f"""
config = {{"port": {port}, "jwt": {{"secret": "s3cret-xyz"}}, "maxConnections": {MAXCONN},
  "managementPassword": "op-pass-123", "webServerRootPath": "www",
  "moduleMap": {{"demo": "tests.apps.demo"}}, "shutdownGracePeriod": 1}}
""")
env = dict(os.environ, PYTHONPATH=REPO)
p = subprocess.Popen([sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                      "--pidfile=", "-l", tmp + "/log", "qewd", "--config", tmp + "/startup.py"],
                     cwd=REPO, env=env)
def up():
    for _ in range(100):
        try: socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError: time.sleep(0.1)  # waiting for the child to listen
    raise SystemExit("node did not start")
up()
def fds(): return len(os.listdir(f"/proc/{p.pid}/fd"))
def rss(): return int([l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1]) // 1024
def req(data, timeout=3.0, read=True):
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(timeout); s.sendall(data)
    out = b""
    if read:
        try:
            while True:
                b = s.recv(65536)
                if not b: break
                out += b
        except socket.timeout: out += b"<TIMEOUT>"
        except ConnectionResetError: out += b"<RESET>"
    s.close(); return out
def get(path, headers=b"", **kw): return req(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n", **kw)
def status_of(r): return r.split(b"\r\n", 1)[0].decode(errors="replace")
KEY = base64.b64encode(os.urandom(16))
def upgrade(path=b"/ws", extra=b""):
    return (b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")
base_fd, base_rss = fds(), rss()
print(f"baseline fds={base_fd} rss={base_rss}MB")
if "ghost" in WHICH:
    for i in range(GHOSTS):
        s = socket.create_connection(("127.0.0.1", port)); s.sendall(upgrade() + b"x" * 20000); s.close()
    time.sleep(2)
    r = req(upgrade(), timeout=2)
    print(f"ghost: after {GHOSTS} ghosts fds={fds()} (+{fds()-base_fd}) rss={rss()}MB; "
          f"next upgrade -> {status_of(r)}; /health -> {status_of(get(b'/health'))}")
if "range" in WHICH:
    f0 = fds(); t = time.time()
    r = get(b"/ewd-client.js", headers=b"Range: bytes=" + b",".join([b"0-"] * 1500) + b"\r\n", timeout=3)
    print(f"range 1500x'0-': {status_of(r)} len={len(r)} in {time.time()-t:.1f}s fds +{fds()-f0}")
    r = get(b"/ewd-client.js", headers=b"Range: bytes=" + b",".join([b"0-"] * 300) + b"\r\n", timeout=3)
    print(f"range 300x'0-' (hdr {6*300} B): {status_of(r)} response {len(r)} bytes")
    f0 = fds()
    for i in range(20):
        r = get(b"/ewd-client.js", headers=b"Range: bytes=" + b",".join([b"0-0"] * 1500) + b"\r\n", timeout=2)
    print(f"range 20 x (1500 x '0-0'): {status_of(r) or repr(r[:40])} len={len(r)} fds +{fds()-f0}")
    r = get(b"/ewd-client.js", headers=b"Range: bytes=0-9,20-29\r\n", timeout=3)
    print(f"range 2 parts: {status_of(r)} len={len(r)}")
if "slow" in WHICH:
    socks = []
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"GET / HTTP/1.1\r\n"); socks.append(s)
    time.sleep(1)
    print(f"slow: 20 open header-trickle conns, fds +{fds()-base_fd}")
    for s in socks: s.close()
if "body" in WHICH:
    for path, method in ((b"/", b"POST"), (b"/status", b"GET"), (b"/ewd-client.js", b"GET")):
        s = socket.create_connection(("127.0.0.1", port)); s.settimeout(3)
        s.sendall(method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n" + b"a" * 65536)
        try: r = s.recv(4096)
        except socket.timeout: r = b"<TIMEOUT: still reading the body>"
        s.close(); print(f"body {method.decode()} {path.decode()} CL=300MB: {status_of(r)}")
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(3)
    s.sendall(b"POST /socket.io/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent = 0
    try:
        for i in range(200):
            s.sendall(b"10000\r\n" + b"a" * 0x10000 + b"\r\n"); sent += 0x10000
        s.sendall(b"0\r\n\r\n"); r = s.recv(4096)
    except OSError as e: r = repr(e).encode()
    except socket.timeout: r = b"<TIMEOUT>"
    print(f"chunked POST /socket.io/: sent {sent>>20} MiB -> {status_of(r)}")
    s.close()
if "odd" in WHICH:
    print("odd: 'status /status' ->", status_of(req(b"status /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")))
    r = get(b"/%00"); print(f"odd: GET /%00 -> {status_of(r)} ({len(r)} bytes)")
    r = get(b"/", headers=b"Range: " + b"Z" * 3000 + b"\r\n"); 
if "status" in WHICH:
    t = time.time(); codes = {}
    for i in range(200):
        r = get(b"/status", headers=b"Authorization: Basic " + base64.b64encode(b"u:wrong%d" % i) + b"\r\n")
        c = status_of(r).split(" ")[1]; codes[c] = codes.get(c, 0) + 1
    print(f"status: 200 wrong passwords in {time.time()-t:.2f}s -> {codes}")
if "static" in WHICH:
    for path in (b"/.env", b"/passwd", b"/x.unknownext"):
        r = get(path); head = r.split(b"\r\n\r\n")[0]
        ct = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-type")]
        ns = b"nosniff" in head.lower()
        print(f"static {path.decode()}: {status_of(r)} {ct} nosniff={ns}")
time.sleep(1)
print(f"end fds={fds()} rss={rss()}MB")
log = open(tmp + "/log").read()
print("errors in the node log:", log.count("CRITICAL") + log.count("Unhandled") + log.count("Traceback"), "log bytes", len(log))
p.terminate(); p.wait()
