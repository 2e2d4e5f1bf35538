# -*- test-case-name: tests.test_sessions -*-
"""
Tests for qewd_twisted.sessions: the handler-facing session objects and the session-token store
(docs/protocol.md §2.1, §2.4, §3.4).
"""

from __future__ import annotations

import copy
import pickle
import uuid

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from qewd_twisted.auth.sessions import (
    ISessionStore,
    JWTSession,
    MemorySessionStore,
    ServerSession,
    SessionError,
    check_timeout,
)

BAD_TIMEOUTS = [0, -1, -0.5, "60", None, True, False, float("nan"), float("inf"), [60]]


class CheckTimeoutTests(SynchronousTestCase):
    def test_valid(self) -> None:
        for value in [1, 300, 0.5, 10**9]:
            self.assertEqual(check_timeout(value), value)

    def test_invalid(self) -> None:
        for value in BAD_TIMEOUTS:
            self.assertRaises(ValueError, check_timeout, value)


class JWTSessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.session = JWTSession(
            {"application": "x", "timeout": 300, "username": "rob", "userText": "Rob"},
            secret_names={"username"},
        )

    def test_mapping(self) -> None:
        """The claims are plain items; users can build one for their own tests."""
        self.assertIsInstance(self.session, dict)
        self.assertEqual(self.session["application"], "x")
        self.session["new"] = 1
        self.assertEqual(dict(self.session)["new"], 1)
        self.assertEqual(JWTSession(), {})
        self.assertEqual(JWTSession([("a", 1)]), {"a": 1})

    def test_internal_claims_kept_out(self) -> None:
        session = JWTSession({"a": 1, "qewd": "abc", "qewd_list": {"a": True}})
        self.assertEqual(dict(session), {"a": 1})

    def test_secret_helpers(self) -> None:
        """§3.4 step 4: makeSecret / isSecret / makePublic."""
        s = self.session
        self.assertTrue(s.is_secret("username"))
        self.assertFalse(s.is_secret("userText"))
        s.make_secret("userText")
        self.assertTrue(s.is_secret("userText"))
        s.make_public("username")
        self.assertFalse(s.is_secret("username"))
        self.assertEqual(s["username"], "rob")  # made public, not deleted
        s.make_public("never-secret")  # no error
        s.make_secret("not-yet-set")  # may be set later
        self.assertEqual(s.secret_names, frozenset({"userText", "not-yet-set"}))
        self.assertIsInstance(s.secret_names, frozenset)

    def test_camel_case_aliases(self) -> None:
        """Code ported from QEWD.js keeps its method names."""
        s = self.session
        s.makeSecret("userText")
        self.assertTrue(s.isSecret("userText"))
        s.makePublic("userText")
        self.assertFalse(s.isSecret("userText"))

    def test_reserved_names(self) -> None:
        """Claims the token layer reads cannot be made secret."""
        for name in ["exp", "nbf", "iat", "iss", "application", "timeout", "qewd", "qewd_list"]:
            self.assertRaises(ValueError, self.session.make_secret, name)
            self.assertRaises(ValueError, JWTSession, {}, secret_names=[name])
        self.assertRaises(TypeError, self.session.make_secret, 5)

    def test_secret_claims(self) -> None:
        """Only secret names present in the mapping, in the order they became secret."""
        s = JWTSession({"b": 2, "a": 1, "c": 3}, secret_names=["c", "missing", "a"])
        self.assertEqual(list(s.secret_claims().items()), [("c", 3), ("a", 1)])

    def test_timeout(self) -> None:
        """§3.7: a writable timeout, stored as the public claim."""
        self.assertEqual(self.session.timeout, 300)
        self.session.timeout = 1200
        self.assertEqual(self.session["timeout"], 1200)
        self.assertIsNone(JWTSession().timeout)
        for bad in BAD_TIMEOUTS:
            self.assertRaises(ValueError, setattr, self.session, "timeout", bad)
        self.assertEqual(self.session.timeout, 1200)

    def test_attribute_assignment_refused(self) -> None:
        """``session.username = ...`` (QEWD.js style) would be lost: it raises with a hint."""
        e = self.assertRaises(AttributeError, setattr, self.session, "username", "x")
        self.assertIn("session['username'] = value", str(e))

    def test_copy_keeps_secrets(self) -> None:
        for clone in [
            self.session.copy(),
            copy.copy(self.session),
            copy.deepcopy(self.session),
            pickle.loads(pickle.dumps(self.session)),
        ]:
            self.assertIsInstance(clone, JWTSession)
            self.assertEqual(clone, self.session)
            self.assertEqual(clone.secret_names, frozenset({"username"}))
        clone = self.session.copy()
        clone.make_public("username")
        self.assertTrue(self.session.is_secret("username"))

    def test_repr_hides_secrets(self) -> None:
        text = repr(self.session)
        self.assertNotIn("rob", text)
        self.assertIn("Rob", text)
        self.assertIn("username", text)


class SessionErrorTests(SynchronousTestCase):
    def test_texts(self) -> None:
        """§2.4: QEWD's three strings, as ``str(e)``."""
        from qewd_twisted.auth import sessions

        self.assertEqual(
            sessions.SESSION_ERRORS,
            (
                "Missing authorization header",
                "Invalid token or session expired",
                "Session expired",
            ),
        )
        self.assertEqual(str(SessionError(sessions.SESSION_EXPIRED)), "Session expired")


class ServerSessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.session = ServerSession("tok", 7, "app", 300, 1300.0, "sock", "1.2.3.4")

    def test_fields(self) -> None:
        """§2.1: the record's fields are attributes; the mapping is application data."""
        s = self.session
        self.assertEqual(
            (s.token, s.id, s.application, s.timeout, s.expiry), ("tok", 7, "app", 300, 1300.0)
        )
        self.assertEqual(
            dict(s), {"socketId": "sock", "ipAddress": "1.2.3.4", "authenticated": False}
        )

    def test_timeout(self) -> None:
        self.session.timeout = 60
        self.assertEqual(self.session.timeout, 60)
        self.assertNotIn("timeout", self.session)
        for bad in BAD_TIMEOUTS:
            self.assertRaises(ValueError, setattr, self.session, "timeout", bad)
        self.assertRaises(ValueError, ServerSession, "t", 1, "a", 0, 0.0)

    def test_secret_helpers_are_no_ops(self) -> None:
        """Server-side data never leaves the server: nothing to make secret."""
        s = self.session
        for make in (s.make_secret, s.makeSecret, s.make_public, s.makePublic):
            make("authenticated")
        self.assertFalse(s.is_secret("authenticated"))
        self.assertFalse(s.isSecret("authenticated"))
        self.assertEqual(s["authenticated"], False)

    def test_attribute_assignment_refused(self) -> None:
        self.assertRaises(AttributeError, setattr, self.session, "username", "x")

    def test_repr_hides_token(self) -> None:
        self.assertNotIn("tok", repr(self.session))
        self.assertIn("app", repr(self.session))


class MemorySessionStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = MemorySessionStore(self.clock)

    def assertSessionError(self, token: object, text: str) -> None:
        e = self.assertRaises(SessionError, self.store.authenticate, token)
        self.assertEqual(str(e), text)

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(ISessionStore, self.store))

    def test_create(self) -> None:
        """§2.1: uuid4 token, counter id, expiry = now + timeout, initial record."""
        a = self.store.create("app", 300, "sock", "::1")
        b = self.store.create("app", 60)
        self.assertEqual(uuid.UUID(a.token).version, 4)
        self.assertNotEqual(a.token, b.token)
        self.assertEqual((a.id, b.id), (1, 2))
        self.assertEqual((a.application, a.timeout, a.expiry), ("app", 300, 1300))
        self.assertEqual(dict(a), {"socketId": "sock", "ipAddress": "::1", "authenticated": False})
        self.assertEqual(len(self.store), 2)
        self.assertRaises(ValueError, self.store.create, "app", 0)

    def test_authenticate_slides_expiry(self) -> None:
        """§2.4: each successful authentication sets expiry = now + timeout."""
        s = self.store.create("app", 300)
        self.clock.advance(200)
        self.assertIs(self.store.authenticate(s.token), s)
        self.assertEqual(s.expiry, 1500)
        self.clock.advance(299)
        self.assertIs(self.store.authenticate(s.token), s)
        self.assertEqual(s.expiry, 1799)

    def test_changed_timeout_used_when_sliding(self) -> None:
        s = self.store.create("app", 300)
        s.timeout = 3600
        self.store.authenticate(s.token)
        self.clock.advance(3000)
        self.assertIs(self.store.authenticate(s.token), s)

    def test_missing_token(self) -> None:
        for token in [None, ""]:
            self.assertSessionError(token, "Missing authorization header")

    def test_unknown_token(self) -> None:
        self.store.create("app", 300)
        for token in [str(uuid.uuid4()), "x", 5, ["list"], {"a": 1}]:
            self.assertSessionError(token, "Invalid token or session expired")

    def test_expired(self) -> None:
        """Exactly at expiry is still valid; after it the session is deleted."""
        s = self.store.create("app", 300)
        self.clock.advance(300)
        self.store.authenticate(s.token)
        self.clock.advance(300.5)
        # what the running QEWD.js answers (ewd-session never reaches "Session expired")
        self.assertSessionError(s.token, "Invalid token or session expired")
        self.assertEqual(len(self.store), 0)
        self.assertSessionError(s.token, "Invalid token or session expired")

    def test_get(self) -> None:
        """get() does not slide the expiry and hides expired sessions."""
        s = self.store.create("app", 300)
        self.clock.advance(100)
        self.assertIs(self.store.get(s.token), s)
        self.assertEqual(s.expiry, 1300)
        self.assertIsNone(self.store.get("nope"))
        self.assertIsNone(self.store.get(None))
        self.clock.advance(201)
        self.assertIsNone(self.store.get(s.token))
        self.assertEqual(len(self.store), 0)

    def test_delete(self) -> None:
        s = self.store.create("app", 300)
        self.assertTrue(self.store.delete(s.token))
        self.assertFalse(self.store.delete(s.token))
        self.assertFalse(self.store.delete(None))
        self.assertSessionError(s.token, "Invalid token or session expired")

    def test_collect_garbage(self) -> None:
        short = [self.store.create("app", 10) for _ in range(3)]
        long = self.store.create("app", 100)
        self.assertEqual(self.store.collect_garbage(), 0)
        self.clock.advance(11)
        self.assertEqual(self.store.collect_garbage(), 3)
        self.assertEqual(len(self.store), 1)
        self.assertIsNone(self.store.get(short[0].token))
        self.assertIs(self.store.get(long.token), long)

    def test_max_sessions(self) -> None:
        """A full store collects garbage first, then refuses with ``Too many sessions``."""
        store = MemorySessionStore(self.clock, max_sessions=2)
        store.create("app", 10)
        store.create("app", 100)
        e = self.assertRaises(SessionError, store.create, "app", 100)
        self.assertEqual(str(e), "Too many sessions")
        self.clock.advance(11)
        third = store.create("app", 100)
        self.assertEqual(len(store), 2)
        self.assertIs(store.authenticate(third.token), third)

    def test_bad_max_sessions(self) -> None:
        for bad in [0, -1, 1.5, "10"]:
            self.assertRaises(ValueError, MemorySessionStore, self.clock, bad)
