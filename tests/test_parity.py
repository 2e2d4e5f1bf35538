# -*- test-case-name: tests.test_parity -*-
"""
QEWD's remaining message features (issue 17): fragments, service modules, custom errors,
session locking, extra namespaces, application switch. Unit tests of each piece here; the
node-level tests (NodeHarness, loopback, the QEWD.js peer) are in test_parity_node and
tests/interop/test_parity_interop.
"""

from __future__ import annotations

import os
import tempfile
import types

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from qewd_twisted import errors as E
from qewd_twisted.apps.custom_errors import CustomErrors
from qewd_twisted.apps.fragments import fragment_path, js_str, read_fragment
from qewd_twisted.apps.modules import Applications
from qewd_twisted.apps.services import (
    ServiceRefused,
    allow_service,
    disallow_service,
    select_service,
)
from qewd_twisted.core.session_locks import (
    ISessionLocks,
    LockTimedOut,
    MemorySessionLocks,
    StoreSessionLocks,
)
from qewd_twisted.core.switch import ApplicationSwitch, SwitchRefused, wants_switch
from qewd_twisted.transports import wire
from qewd_twisted.transports.namespaces import NamespaceConnection, Namespaces, check_io_paths


def _tree() -> str:
    """A web root with an app folder, a services folder, a secret beside it and tricky links."""
    top = tempfile.mkdtemp()
    root = os.path.join(top, "www")
    os.makedirs(os.path.join(root, "app", "sub"))
    os.makedirs(os.path.join(root, "services"))
    os.makedirs(os.path.join(root, "other"))
    for path, text in [
        (("app", "main.html"), "<div>main é</div>"),
        (("app", "sub", "part.html"), "<p>part</p>"),
        (("services", "svc.html"), "<p>svc</p>"),
        (("other", "x.html"), "<p>other app</p>"),
    ]:
        with open(os.path.join(root, *path), "w", encoding="utf-8") as f:
            f.write(text)
    with open(os.path.join(top, "secret.txt"), "w") as f:
        f.write("TOP SECRET")
    os.symlink(os.path.join(top, "secret.txt"), os.path.join(root, "app", "leak.html"))
    os.symlink(os.path.join(top), os.path.join(root, "app", "up"))
    os.symlink(os.path.join(root, "other", "x.html"), os.path.join(root, "app", "sideways.html"))
    os.mkfifo(os.path.join(root, "app", "fifo.html"))
    return root


class FragmentTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = _tree()
        self.folder = os.path.join(self.root, "app")

    def read(self, name, **extra):
        return read_fragment(self.folder, {"type": "ewd-fragment",
                                           "params": {"file": name, **extra}})

    def test_reads_a_fragment(self) -> None:
        self.assertEqual(self.read("main.html"),
                         {"fragmentName": "main.html", "content": "<div>main é</div>"})
        self.assertEqual(self.read("sub/part.html")["content"], "<p>part</p>")

    def test_missing_file_gets_qewds_reply(self) -> None:
        self.assertEqual(self.read("nope.html"),
                         {"error": "Fragment file nope.html does not exist", "file": "nope.html"})

    def test_service_and_service_fragment_fields_are_echoed(self) -> None:
        reply = read_fragment(self.folder, {"params": {"file": "x", "isServiceFragment": True},
                                            "service": "svc"})
        self.assertEqual(reply, {"error": "Fragment file x does not exist", "file": "x",
                                 "service": "svc", "isServiceFragment": True})

    def test_names_leaving_the_folder_are_refused_as_missing(self) -> None:
        for name in ["../other/x.html", "../../secret.txt", "/etc/passwd",
                     os.path.join(self.root, "app", "main.html"), "sub/../../other/x.html",
                     "..%2fother%2fx.html", "%2e%2e/other/x.html", "..%252fsecret.txt",
                     "..\\other\\x.html", "leak.html", "up/secret.txt", "sideways.html",
                     "", ".", "sub/", "main.html\x00.txt", "C:/x", None, 5, ["main.html"]]:
            reply = self.read(name)
            self.assertNotIn("content", reply, name)
            self.assertEqual(reply["error"], f"Fragment file {js_str(name)} does not exist")

    def test_nothing_outside_is_opened(self) -> None:
        opened = []
        real_open = os.open

        def spy(path, *a, **kw):
            opened.append(path)
            return real_open(path, *a, **kw)

        self.patch(os, "open", spy)
        for name in ["../../secret.txt", "leak.html", "up/secret.txt", "sideways.html"]:
            self.read(name)
        self.assertEqual(opened, [])
        self.read("main.html")
        self.assertEqual(opened, [os.path.join(os.path.realpath(self.folder), "main.html")])

    def test_a_fifo_is_not_read(self) -> None:
        # would block forever if opened for reading without O_NONBLOCK and read
        self.assertEqual(self.read("fifo.html")["error"], "Fragment file fifo.html does not exist")

    def test_unreadable_file(self) -> None:
        def broken(fd, *a, **kw):
            raise OSError(5, "Input/output error")

        self.patch(os, "fdopen", broken)
        self.assertEqual(self.read("main.html"), {"error": "Unable to read file main.html"})

    def test_directory_is_not_a_fragment(self) -> None:
        self.assertIn("error", self.read("sub"))

    def test_fragment_path(self) -> None:
        self.assertIsNone(fragment_path(self.folder, "../app/main.html"))
        self.assertEqual(fragment_path(self.folder, "sub/part.html"),
                         os.path.join(os.path.realpath(self.folder), "sub", "part.html"))

    def test_js_str(self) -> None:
        self.assertEqual([js_str(v) for v in (None, True, 2.0, "a", {"a": 1})],
                         ["undefined", "true", "2", "a", "[object Object]"])


def _module(**attrs):
    return types.SimpleNamespace(**attrs)


def _h(message, session, send, finished):
    finished({"ok": True})


class ServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.apps = Applications.from_objects({
            "app": _module(handlers={}, servicesAllowed={"svc": True, "off": False}),
            "svc": _module(handlers={"hello": _h}),
            "off": _module(handlers={"hello": _h}),
            "plain": _module(handlers={}),
        })
        self.errors = CustomErrors()

    def select(self, service, session=None, type="hello", app="app"):
        return select_service(self.apps, self.apps.get(app), session or {},
                              {"type": type, "service": service}, self.errors)

    def refused(self, *a, **kw):
        with self.assertRaises(ServiceRefused) as cm:
            self.select(*a, **kw)
        return cm.exception.message

    def test_allowed_service(self) -> None:
        self.assertEqual(self.select("svc").name, "svc")

    def test_three_refusals(self) -> None:
        self.assertEqual(self.refused("off"), {
            "error": "off service is not permitted for the app application", "service": "off"})
        self.assertEqual(self.refused("svc", {"allowedServices": {"svc": False}}), {
            "error": "You are not allowed access to the svc service", "service": "svc"})
        self.assertEqual(self.refused("svc", type="nope"), {
            "error": "No handler defined for svc service messages of type nope",
            "service": "svc"})
        self.assertEqual(self.refused("svc", app="plain")["error"],
                         "svc service is not permitted for the plain application")

    def test_session_can_allow_what_the_app_does_not(self) -> None:
        session: dict = {}
        allow_service(session, "off")
        self.assertEqual(self.select("off", session).name, "off")
        disallow_service(session, "off")
        self.assertEqual(session, {"allowedServices": {"off": False}})
        self.assertIn("You are not allowed", self.refused("off", session)["error"])

    def test_service_not_in_module_map_is_a_load_error(self) -> None:
        apps = Applications.from_objects({"app": _module(handlers={},
                                                         servicesAllowed={"os": True})})
        with self.assertRaises(ServiceRefused) as cm:
            select_service(apps, apps.get("app"), {}, {"type": "x", "service": "os"})
        self.assertEqual(cm.exception.message["error"], "Unable to load handler module for: os")

    def test_custom_errors_replace_the_texts(self) -> None:
        for kind in ("serviceNotAllowed", "serviceNotAllowedForUser", "noServiceModuleType"):
            self.errors.set(application="app", errorType=kind, text=kind + "!", statusCode="403")
        self.assertEqual(self.refused("off"), {"error": "serviceNotAllowed!",
                                               "status": {"code": 403}, "service": "off"})
        self.assertEqual(self.refused("svc", {"allowedServices": {"svc": False}})["error"],
                         "serviceNotAllowedForUser!")
        self.assertEqual(self.refused("svc", type="x")["error"], "noServiceModuleType!")


class CustomErrorTests(SynchronousTestCase):
    def test_qewds_defaults_and_refusals(self) -> None:
        t = CustomErrors()
        self.assertFalse(t.set(errorType="noTypeHandler", text="x"))
        self.assertFalse(t.set(application="a", text="x"))
        self.assertFalse(t.set(application="a", errorType="noSuchType"))
        self.assertFalse(t)
        self.assertTrue(t.set({"application": "a", "errorType": "noTypeHandler"}))
        self.assertEqual(t.get("a", "noTypeHandler"), ("Unspecified Error", 400))
        self.assertEqual(t.apply("a", "noTypeHandler", {"error": "x", "file": 1}),
                         {"error": "Unspecified Error", "status": {"code": 400}, "file": 1})
        m = {"error": "x"}
        self.assertIs(t.apply("b", "noTypeHandler", m), m)
        self.assertIs(t.apply(None, "noTypeHandler", m), m)


class SessionLockTests(SynchronousTestCase):
    def test_one_at_a_time_per_session_in_order(self) -> None:
        clock = Clock()
        locks = MemorySessionLocks(clock)
        verifyObject(ISessionLocks, locks)
        got = []
        d1 = locks.acquire(1, 30)
        d2 = locks.acquire(1, 30)
        d3 = locks.acquire(1, 30)
        other = locks.acquire(2, 30)  # another session: not held up
        d1.addCallback(lambda r: got.append(("1", r)))
        d2.addCallback(lambda r: got.append(("2", r)))
        d3.addCallback(lambda r: got.append(("3", r)))
        self.assertTrue(other.called)
        self.assertEqual([n for n, _ in got], ["1"])
        got[0][1]()
        got[0][1]()  # releasing twice releases once
        self.assertEqual([n for n, _ in got], ["1", "2"])
        self.assertEqual(locks.waiting(1), 1)
        got[1][1]()
        got[2][1]()
        self.assertFalse(locks.held(1))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_timeout(self) -> None:
        clock = Clock()
        locks = MemorySessionLocks(clock)
        release = self.successResultOf(locks.acquire("s", 30))
        waiting = locks.acquire("s", 30)
        clock.advance(29.9)
        self.assertNoResult(waiting)
        clock.advance(0.2)
        self.failureResultOf(waiting, LockTimedOut)
        release()
        self.assertFalse(locks.held("s"))

    def test_store_locks(self) -> None:
        from twisted.internet import defer

        calls = []

        class Lock:
            def __init__(self, path):
                self.path = path

            def release(self):
                calls.append(("release", self.path))

        class Node:
            def __init__(self, path):
                self.path = path

            def lock(self, timeout):
                calls.append(("lock", self.path, timeout))
                if self.path[-1] == "busy":
                    raise TimeoutError()
                return Lock(self.path)

        class Documents:
            def use(self, name, *subscripts):
                return Node((name, *subscripts))

            def run(self, fn, *a):
                return defer.maybeDeferred(fn, *a)

        locks = StoreSessionLocks(Documents(), "CacheTempEWDSession")
        verifyObject(ISessionLocks, locks)
        release = self.successResultOf(locks.acquire(7, 30))
        release()
        release()
        self.failureResultOf(locks.acquire("busy", 1), LockTimedOut)
        self.assertEqual(calls, [
            ("lock", ("CacheTempEWDSession", "session", 7), 30),
            ("release", ("CacheTempEWDSession", "session", 7)),
            ("lock", ("CacheTempEWDSession", "session", "busy"), 1)])



class StoreSessionLockTests(TestCase):
    """StoreSessionLocks on a real DocumentStore (the in-memory back-end, its thread pool)."""

    @defer.inlineCallbacks
    def test_on_a_real_store(self):
        from twisted.internet import reactor

        from qewd_twisted.documents import DocumentStore
        from qewd_twisted.documents.memory import MemoryStore

        store = DocumentStore(MemoryStore(), reactor)
        self.addCleanup(store.close)
        locks = StoreSessionLocks(store, "CacheTempEWDSession")
        node = store.use("CacheTempEWDSession", "session", 3)
        release = yield locks.acquire(3, 5)
        with self.assertRaises(TimeoutError):
            yield store.run(node.lock, 0)  # held: QEWD's lock name, another taker waits
        other = yield locks.acquire(4, 5)  # another session: free
        other()
        release()
        again = yield locks.acquire(3, 5)  # released (in the store's thread, in order)
        again()


class Dest:
    def __init__(self, url, application):
        self.url, self.application = url, application


class SwitchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.links = []
        self.switch = ApplicationSwitch(
            {"login_service": Dest("http://127.0.0.1:3000", "login")},
            {"app": {"login": True, "nope": False}},
            lambda url, app: self.links.append((url, app)) or "LINK")

    def test_wants_switch(self) -> None:
        self.assertTrue(wants_switch({"qewd_destination": "d", "qewd_application": "a"}))
        self.assertFalse(wants_switch({"qewd_destination": "d"}))
        self.assertFalse(wants_switch([1]))

    def test_route_and_refusals(self) -> None:
        r = {"qewd_destination": "login_service", "qewd_application": "login"}
        self.assertEqual(self.switch.route("app", r), ("LINK", "login"))
        self.assertEqual(self.links, [("http://127.0.0.1:3000", "login")])
        for source, result, text in [
            ("app", {**r, "qewd_destination": "x"}, "x is not a valid microservice destination"),
            ("app", {**r, "qewd_application": "nope"},
             "No permissions set to allow a switch from app to nope"),
            ("other", r, "No permissions set to allow a switch from other to login"),
        ]:
            with self.assertRaises(SwitchRefused) as cm:
                self.switch.route(source, result)
            self.assertEqual(str(cm.exception), text)

    def test_destination_with_replicas(self) -> None:
        """A destination with several hosts (mesh/replicas.py): the switch gets the replica set
        for all its URLs and sends each request to the member its ``pick()`` chooses."""

        class Replicas:
            members = iter(["LINK-A", "LINK-B"])

            def pick(self) -> str:
                return next(self.members)

        replicas = Replicas()
        got = []
        dest = Dest("http://127.0.0.1:3000", "login")
        dest.urls = ("http://127.0.0.1:3000", "http://127.0.0.1:3001")
        switch = ApplicationSwitch({"login_service": dest}, {"app": {"login": True}},
                                   lambda urls, app: got.append((urls, app)) or replicas)
        r = {"qewd_destination": "login_service", "qewd_application": "login"}
        self.assertEqual([switch.route("app", r), switch.route("app", r)],
                         [("LINK-A", "login"), ("LINK-B", "login")])
        self.assertEqual(got, [(dest.urls, "login")] * 2)

    def test_message(self) -> None:
        self.assertEqual(
            ApplicationSwitch.message({"qewd_destination": "d", "ms_requestId": 3, "p": 1},
                                      "login", "T"),
            {"qewd_destination": "d", "p": 1, "type": "login", "token": "T"})


class FakeNode:
    def __init__(self) -> None:
        self.events = []

    def connection_opened(self, conn):
        self.events.append(("open", conn.id))

    def connection_lost(self, conn):
        self.events.append(("lost", conn.id))

    def receive(self, conn, message):
        self.events.append(("receive", conn.id, message))
        conn.send({"type": "x", "finished": True, "message": {"ok": True}})


class RawConnection:
    """The ``/`` connection of an Engine.IO client: records the packets written."""

    framing = "engine.io"

    def __init__(self) -> None:
        self.id, self.ip, self.open = "sid00000000000000000", "127.0.0.1", True
        self.packets = []

    def send_encoded(self, data):
        self.packets.append(data)


class NamespaceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = FakeNode()
        self.parent = RawConnection()
        self.ns = Namespaces(self.node, self.parent, check_io_paths(["/qewd", "x", "/", 3]))

    def test_io_paths(self) -> None:
        self.assertEqual(check_io_paths(["/a", "/a", "b", "/", None, "/c"]), ("/a", "/c"))
        self.assertEqual(check_io_paths("nope"), ())

    def test_connect_event_disconnect(self) -> None:
        self.ns.packet(wire.decode("40/qewd,"))
        conn = self.ns.connections["/qewd"]
        self.assertIsInstance(conn, NamespaceConnection)
        self.assertEqual(conn.id, "/qewd#sid00000000000000000")
        self.ns.packet(wire.decode('42/qewd,["ewdjs",{"type":"ewd-register"}]'))
        self.ns.packet(wire.decode("41/qewd,"))
        self.assertEqual(self.node.events, [
            ("open", conn.id), ("receive", conn.id, {"type": "ewd-register"}), ("lost", conn.id)])
        self.assertEqual(self.parent.packets, [
            b"40/qewd,", b'42/qewd,["ewdjs",{"type":"x","finished":true,"message":{"ok":true}}]'])

    def test_connect_with_query(self) -> None:
        self.ns.packet(wire.decode("40/qewd?token=1,"))
        self.assertIn("/qewd", self.ns.connections)

    def test_unknown_namespace_and_event(self) -> None:
        self.ns.packet(wire.decode("40/other,"))
        self.ns.packet(wire.decode('42/other,["ewdjs",{}]'))
        self.ns.packet(wire.decode("40/qewd,"))
        self.ns.packet(wire.decode('42/qewd,["chat",{}]'))
        self.assertEqual(self.parent.packets[:3], [
            b'44/other,"Invalid namespace"', b'44/other,"Invalid namespace"', b"40/qewd,"])
        self.assertIn(b"Unknown socket.io event chat", self.parent.packets[3])

    def test_close_all_and_server_close(self) -> None:
        self.ns.packet(wire.decode("40/qewd,"))
        conn = self.ns.connections["/qewd"]
        conn.close()
        self.assertEqual(self.parent.packets[-1], b"41/qewd,")
        conn.send({"late": 1})  # nothing after close
        self.ns.close_all()
        self.assertEqual(self.node.events[-1], ("lost", conn.id))
        self.assertEqual(self.ns.connections, {})
        self.assertEqual(E.BAD_NAMESPACE, "Invalid namespace")


class FragmentFolderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = _tree()
        svc_dir = tempfile.mkdtemp()
        os.makedirs(os.path.join(svc_dir, "fragments"))
        with open(os.path.join(svc_dir, "fragments", "f.html"), "w") as f:
            f.write("<b>service</b>")
        svc = _module(handlers={}, __file__=os.path.join(svc_dir, "svc.py"))
        self.apps = Applications.from_objects({
            "app": _module(handlers={}, servicesAllowed={"svc": True}), "svc": svc})

    def folder(self, message, application="app"):
        from qewd_twisted.apps.fragments import fragment_folder

        return fragment_folder(self.root, application, message, self.apps, CustomErrors())

    def test_folders(self) -> None:
        self.assertEqual(self.folder({"params": {"file": "x"}}), os.path.join(self.root, "app"))
        self.assertEqual(self.folder({"params": {"file": "x", "isServiceFragment": True}}),
                         os.path.join(self.root, "services"))
        svc_folder = self.folder({"params": {"file": "f.html"}, "service": "svc"})
        self.assertEqual(read_fragment(svc_folder, {"params": {"file": "f.html"}})["content"],
                         "<b>service</b>")
        self.assertIsNone(self.folder({"params": {}}, application="../etc"))

    def test_refused_service_as_the_peer_answers(self) -> None:
        # the QEWD.js peer: {"error": "svc service is not permitted for the jwt application"}
        self.assertEqual(self.folder({"params": {"file": "x"}, "service": "nope"}),
                         {"error": "nope service is not permitted for the app application"})
        self.assertEqual(self.folder({"params": {"file": "x"}, "service": "x"}, "unknown"),
                         {"error": "Unable to load handler module for: unknown",
                          "reason": "no moduleMap entry for application 'unknown'"})


class ConfigKeyTests(SynchronousTestCase):
    """lockSession, webSockets.io_paths and permit_application_switch (docs/configuration.md)."""

    def build(self, **d):
        from qewd_twisted.config import config_from_dict

        return config_from_dict(d, tempfile.mkdtemp())

    def problems(self, **d):
        from qewd_twisted.config import ConfigError

        with self.assertRaises(ConfigError) as cm:
            self.build(**d)
        return cm.exception.problems

    def test_defaults(self) -> None:
        c = self.build()
        self.assertEqual((c.lock_session, c.io_paths, c.permit_application_switch),
                         (None, (), {}))

    def test_lock_session(self) -> None:
        # QEWD.js: lockSession.timeout || 30, and any object is truthy
        self.assertEqual([self.build(lockSession=v).lock_session
                          for v in (False, True, {}, {"timeout": 5})], [None, 30.0, 30.0, 5.0])
        self.assertEqual(self.problems(lockSession="yes"), [
            "config.lockSession: must be true, false or {timeout: seconds}, got 'yes' (str)"])
        self.assertEqual(self.problems(lockSession={"timeout": -1}), [
            "config.lockSession.timeout: must be a positive number, got -1 (int)"])
        self.assertIn("config.lockSession.wait", self.problems(lockSession={"wait": 1})[0])

    def test_io_paths(self) -> None:
        self.assertEqual(self.build(webSockets={"io_paths": ["/a", "/b", "/a"],
                                                "module": "socket.io", "engine": "ws"}).io_paths,
                         ("/a", "/b"))
        self.assertEqual(self.problems(webSockets={"io_paths": ["a"]}), [
            "config.webSockets.io_paths: must be a list of namespaces such as '/qewd', "
            "got ['a'] (list)"])
        self.assertEqual(self.problems(webSockets={"module": "ws"}), [
            "config.webSockets.module: only 'socket.io' is served"])

    def test_permit_application_switch(self) -> None:
        permit = {"portal": {"login": True}}
        self.assertEqual(self.build(permit_application_switch=permit).permit_application_switch,
                         permit)
        self.assertEqual(self.problems(permit_application_switch={"portal": ["login"]}), [
            "config.permit_application_switch.portal: must be a dict of application -> "
            "true/false, got ['login'] (list)"])
