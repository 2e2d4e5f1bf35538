# -*- test-case-name: tests.test_edges -*-
"""
Edge cases found by the mutation check (scripts/mutation.sh, docs/testing.md): each test here
fails for a deliberately broken line that every other test let through. Grouped by the layer
they pin down: tokens (auth/tokens.py), links (mesh/links.py), the node (core/node.py; those
about a documented text are in tests/test_documented.py, next to the text).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from types import SimpleNamespace
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from twisted.trial.unittest import SynchronousTestCase

from zope.interface.verify import verifyObject

from qewd_twisted.auth.tokens import TokenCodec
from qewd_twisted.core.interfaces import INodeObserver
from qewd_twisted.mesh.links import LinkState
from qewd_twisted.ops.observe import NodeObserver
from qewd_twisted.testing import MemoryConnection, NodeHarness
from tests.test_links import MemoryLinkMixin

NOW = 1_700_000_000


def clock() -> Clock:
    c = Clock()
    c.advance(NOW)
    return c


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(token: str, i: int) -> dict:
    s = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))


class TokenEdgeTests(SynchronousTestCase):
    def test_empty_or_non_string_secrets_refused(self) -> None:
        """A node can never sign with, or accept tokens of, an empty or non-string secret."""
        for kwargs in ({"secret": ""}, {"secret": "s", "previous_secrets": [""]},
                       {"secret": "s", "previous_secrets": ["ok", ""]},
                       {"secret": 123}, {"secret": "s", "previous_secrets": [b"bytes"]}):
            with self.assertRaises(ValueError, msg=repr(kwargs)):
                TokenCodec(**kwargs)

    def test_reissue_after_rotation_is_signed_with_the_current_secret(self) -> None:
        """A token signed with a previous secret is accepted, but what the node hands back for
        it, even unchanged in the same second, is signed with the current one (a node that
        knows only the new secret accepts it): docs/security.md's rotation."""
        c = clock()
        old = TokenCodec("old-secret", clock=c)
        rotated = TokenCodec("new-secret", previous_secrets=["old-secret"], clock=c)
        new_only = TokenCodec("new-secret", clock=c)
        # a token as the old node issues them after a request (claims in issue()'s order)
        token = old.issue(old.session(old.register_token("app", {"socketId": "s1"})))
        reissued = rotated.issue(rotated.session(token))
        self.assertEqual(new_only.session(reissued)["socketId"], "s1")

    def test_reissue_of_a_foreign_header_uses_ours(self) -> None:
        """A correctly signed token whose header is not byte for byte ours (here with a
        ``kid``) is accepted; the token issued for it has QEWD's standard header."""
        c = clock()
        codec = TokenCodec("someSecret123", clock=c)
        ours = codec.register_token("app", {"socketId": "s1"})
        header = b64(b'{"typ":"JWT","alg":"HS256","kid":"k1"}')
        signing_input = header + "." + ours.split(".")[1]
        mac = hmac.new(b"someSecret123", signing_input.encode(), hashlib.sha256).digest()
        foreign = signing_input + "." + b64(mac)
        reissued = codec.issue(codec.session(foreign))
        self.assertEqual(segment(reissued, 0), {"typ": "JWT", "alg": "HS256"})
        self.assertEqual(reissued.split(".")[0], ours.split(".")[0])

    def test_a_value_that_changes_type_only_is_reissued(self) -> None:
        """``1`` and ``True`` are equal in Python but not in JSON: a handler that turns one
        into the other within the same second gets a token that says so."""
        c = clock()
        codec = TokenCodec("someSecret123", clock=c)
        session = codec.session(codec.register_token("app", {}))
        session["n"] = 1
        first = codec.issue(session)
        self.assertEqual(codec.issue(codec.session(first)), first)  # unchanged: the same token
        session = codec.session(first)
        session["n"] = True
        second = codec.issue(session)
        self.assertIs(segment(second, 1)["n"], True)
        self.assertIs(codec.session(second)["n"], True)


    def test_a_claim_made_secret_is_reissued_secret(self) -> None:
        """A handler that makes an existing public claim secret within the same second gets a
        token where that claim is encrypted, not the old token with it in clear."""
        c = clock()
        codec = TokenCodec("someSecret123", clock=c)
        session = codec.session(codec.register_token("app", {}))
        session["userText"] = "Rob"
        first = codec.issue(session)
        self.assertEqual(segment(first, 1)["userText"], "Rob")
        session = codec.session(first)
        self.assertEqual(codec.issue(session), first)  # unchanged: the same token
        session = codec.session(first)
        session.make_secret("userText")
        second = codec.issue(session)
        self.assertNotIn("userText", segment(second, 1))
        reread = codec.session(second)
        self.assertEqual(reread["userText"], "Rob")
        self.assertTrue(reread.is_secret("userText"))

    def test_float_times_are_numbers(self) -> None:
        """``exp`` and ``nbf`` may be floats (JavaScript numbers): a float ``exp`` in the
        future and ``nbf`` in the past are accepted, as jwt-simple does."""
        c = clock()
        codec = TokenCodec("someSecret123", clock=c)
        payload = codec.decode(codec.register_token("app", {}))
        token = codec.encode({**payload, "exp": NOW + 60.5, "nbf": NOW - 0.5})
        self.assertEqual(codec.decode(token)["exp"], NOW + 60.5)

    def test_no_algorithm_is_refused_by_name(self) -> None:
        with self.assertRaises(ValueError) as caught:
            TokenCodec("s", algorithms=())
        self.assertTrue(str(caught.exception).endswith("got 'nothing'"), str(caught.exception))


class LinkEdgeTests(MemoryLinkMixin, unittest.TestCase):
    """The link's registration, in memory (tests/test_links.py's fake remote and Clock)."""

    def handshake_failures(self) -> list[str]:
        failures: list[str] = []

        def observe(event: dict) -> None:
            if "handshake failed" in (event.get("log_format") or ""):
                failures.append(event["why"])

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return failures

    def register_reply(self, message: Any, **frame: Any) -> None:
        self.remote.emit({"type": "ewd-register", "finished": True, "message": message,
                          "responseTime": "1ms", **frame})
        self.flush()

    def test_other_frames_while_registering_are_not_the_reply(self) -> None:
        """Pushes of any type (before and after ``ewd-register`` in sort order), and a
        type-less frame without an error, that come before the register reply are ignored."""
        link = self.make_link(start=False)
        self.remote.answer_registration = False
        self.assertFalse(link.echoes_request_ids)  # nothing known before a registration
        link.startService()
        self.flush()
        self.assertFalse(link.echoes_request_ids)
        for push in ({"type": "announce", "finished": False, "message": {"n": 1}},
                     {"type": "zebra", "finished": False, "message": {"n": 2}},
                     {"message": {"n": 3}}):
            self.remote.emit(push)
            self.flush()
            self.assertEqual(link.state, LinkState.REGISTERING, push)
        self.register_reply({"token": "t1", "qewd_twisted": 1})
        self.assertTrue(link.is_up)
        self.assertEqual((link.registrations, link.reregistrations), (1, 0))

    def test_a_crash_frame_refuses_the_registration_with_its_text(self) -> None:
        """QEWD's crash shape (``type: "error"``, ``message`` a string) in answer to
        ``ewd-register``: refused, the connection closed, the text logged; the next attempt
        registers."""
        failures = self.handshake_failures()
        link = self.make_link(start=False)
        self.remote.answer_registration = False
        link.startService()
        self.flush()
        self.remote.emit({"type": "error", "finished": True, "message": "worker crashed"})
        self.flush()
        self.assertEqual(link.state, LinkState.DOWN)
        self.assertEqual(self.remote.closed, 1)
        self.assertEqual(failures, ["worker crashed"])
        self.remote.answer_registration = True
        self.advance(1.0)
        self.assertTrue(link.is_up)

    def test_an_error_reply_is_logged_with_its_text(self) -> None:
        failures = self.handshake_failures()
        self.make_link(start=False)
        self.remote.register_replies = [{"error": "no JWT support"}]
        self.link.startService()
        self.flush()
        self.assertEqual(failures, ["no JWT support"])

    def test_a_reply_without_a_message(self) -> None:
        failures = self.handshake_failures()
        link = self.make_link(start=False)
        self.remote.answer_registration = False
        link.startService()
        self.flush()
        self.remote.emit({"type": "ewd-register", "finished": True})
        self.flush()
        self.assertEqual(link.state, LinkState.DOWN)
        self.assertEqual(failures, ["no token in the register reply"])

    def test_connection_lost_while_registering(self) -> None:
        """The remote goes away before answering ``ewd-register``: the link is down, nothing
        is logged as an error, and it registers on the next attempt."""
        link = self.make_link(start=False)
        self.remote.answer_registration = False
        link.startService()
        self.flush()
        self.remote.drop_all()
        self.flush()
        self.assertEqual(link.state, LinkState.DOWN)
        self.remote.answer_registration = True
        self.advance(1.0)
        self.assertTrue(link.is_up)

    def test_a_reregister_reply_without_ok_means_register_afresh(self) -> None:
        link = self.make_link()
        self.remote.reregister_replies = [{"token": "no-ok-here"}]
        self.assertEqual(self.reconnect(), ["ewd-register", "ewd-reregister", "ewd-register"])
        self.assertEqual(link.reregistrations, 0)

    def test_stop_while_never_connected_or_registering(self) -> None:
        """Stopping a link that has no connection, or one still registering, just stops it
        (no socket.io disconnect is sent before a registration)."""
        self.make_link(start=False)
        self.endpoint.refuse = True
        self.link.startService()
        self.flush()
        self.assertEqual(self.link.state, LinkState.DOWN)
        d = self.link.stopService()
        self.flush()
        self.successResultOf(d)
        self.assertEqual(self.link.state, LinkState.STOPPED)

        link = self.make_link(start=False)
        self.remote.answer_registration = False
        link.startService()
        self.flush()
        self.assertEqual(link.state, LinkState.REGISTERING)
        d = link.stopService()
        self.flush()
        self.successResultOf(d)
        self.assertNotIn("41", self.remote.raw)

    def test_reregistrations_are_counted(self) -> None:
        link = self.make_link()
        self.assertEqual((link.registrations, link.reregistrations), (1, 0))
        self.reconnect()
        self.assertEqual((link.registrations, link.reregistrations), (1, 1))


class Recording(NodeObserver):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def connection_opened(self, conn: Any) -> None:
        self.events.append(("opened", conn.id))

    def connection_closed(self, conn: Any) -> None:
        self.events.append(("closed", conn.id))

    def registered(self, conn: Any, application: str, jwt: bool, reregister: bool) -> None:
        self.events.append(("registered", application, jwt, reregister))


class NodeEdgeTests(SynchronousTestCase):
    """The node's observer hooks (what /metrics and /status count), a session built-in's
    slot, and the safety net for a bug in the node (core/node.py)."""

    def test_observer_sees_each_connection_and_registration_once(self) -> None:
        h = NodeHarness({"a": SimpleNamespace(handlers={})})
        seen = Recording()
        verifyObject(INodeObserver, seen)
        h.node.observer = seen
        c = h.connect()
        token = h.register(c, "a")
        h.disconnect(c)
        h.disconnect(c)  # a second report of the same close is not a second close
        h.node.connection_lost(MemoryConnection("neverOpened000000001"))
        again = h.connect()
        [frame] = h.send(again, {"type": "ewd-reregister", "token": token, "jwt": True})
        self.assertIs(frame["message"]["ok"], True)
        self.assertEqual(seen.events, [
            ("opened", c.id), ("registered", "a", True, False), ("closed", c.id),
            ("opened", again.id), ("registered", "a", True, True)])

    def test_nothing_is_sent_to_a_client_that_has_gone(self) -> None:
        """A request still running when its client leaves: its reply goes nowhere."""
        d: defer.Deferred[None] = defer.Deferred()

        async def slow(m: Any, s: Any, send: Any, finished: Any) -> None:
            await d
            finished({"late": True})

        h = NodeHarness({"a": SimpleNamespace(handlers={"slow": slow})})
        c = h.connect()
        self.assertEqual(h.send(c, {"type": "slow", "token": h.register(c, "a")}), [])
        h.disconnect(c)
        d.callback(None)
        self.assertEqual(c.take(), [])
        self.assertEqual(h.node.in_flight, 0)

    def test_a_session_built_in_takes_only_its_own_type(self) -> None:
        """``session_builtins`` (where ``ewd-fragment`` goes): a built-in for one type leaves
        every other type to the application's handlers, in both session modes."""

        def echo(m: Any, s: Any, send: Any, finished: Any) -> None:
            finished({"handler": m["type"]})

        for jwt in (True, False):
            h = NodeHarness({"a": SimpleNamespace(handlers={"echo": echo})})
            calls: list[Any] = []
            h.node.session_builtins["x-builtin"] = calls.append
            c = h.connect()
            token = h.register(c, "a", jwt=jwt)
            [frame] = h.send(c, {"type": "echo", "token": token})
            self.assertEqual(frame["message"]["handler"], "echo", jwt)
            self.assertEqual(h.send(c, {"type": "x-builtin", "token": token}), [])
            self.assertEqual(len(calls), 1, jwt)

    def test_a_bug_in_the_node_answers_internal_server_error(self) -> None:
        """Whatever fails inside the node while it handles a message (here: an observer that
        raises), the client gets ``Internal server error`` under its type, the failure is
        logged, and the node serves on."""

        class Broken(NodeObserver):
            def registered(self, *args: Any) -> None:
                raise RuntimeError("observer bug")

        h = NodeHarness({"a": SimpleNamespace(handlers={})})
        h.node.observer = Broken()
        c = h.connect()
        [frame] = h.send(c, {"type": "ewd-register", "application": "a", "jwt": True})
        self.assertEqual(frame, {"type": "ewd-register", "finished": True,
                                 "message": {"error": "Internal server error"}})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        h.node.observer = NodeObserver()
        [frame] = h.send(c, {"type": "ewd-register", "application": "a", "jwt": True})
        self.assertIn("token", frame["message"])
