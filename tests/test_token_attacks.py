# test-case-name: tests.test_token_attacks
"""
Hostile tokens (issue 7): every way a client might try to get past JWT checks, at the node
(``NodeHarness``, a ``Clock``) and, where the socket matters, over real loopback WebSockets.

Each test states what the client sees, exactly: docs/security.md quotes these texts.

The attacker here does not hold the JWT secret unless a test says so ("an insider"): tokens
signed with the secret stand for what a node of the mesh (or a leaked secret) could make, and
show what the node still refuses even then.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from qewd_twisted import errors as E
from qewd_twisted.testing import NodeHarness
from qewd_twisted.auth.tokens import SecretCipher, TokenCodec, TokenError
from tests.integration.nodes import SECRET, eio_url, start_node
from tests.wsclient import EIOClient

HS256 = {"typ": "JWT", "alg": "HS256"}
PEM_LIKE = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def forge(header: Any, payload: Any, key: str | bytes | None = None,
          digest: Any = hashlib.sha256, signature: str | None = None) -> str:
    """A JWT with any header and payload: HMAC-signed with ``key``, or carrying ``signature``
    as given (``""`` for an empty third segment)."""
    signing_input = segment(header) + "." + segment(payload)
    if key is not None:
        key = key.encode() if isinstance(key, str) else key
        signature = b64(hmac.new(key, signing_input.encode(), digest).digest())
    return signing_input + "." + (signature or "")


def real_public_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# -- the applications -------------------------------------------------------------------------

class Calls:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []


def make_apps(calls: Calls) -> dict[str, Any]:
    def whoami(messageObj, session, send, finished):
        seen = {"application": session.get("application"),
                "authenticated": session.get("authenticated"),
                "socketId": session.get("socketId"), "ipAddress": session.get("ipAddress"),
                "username": session.get("username")}
        calls.seen.append(seen)
        finished(dict(seen))

    def login(messageObj, session, send, finished):
        if messageObj.get("params") == {"username": "rob", "password": "secret"}:
            session["username"] = "rob"
            session.make_secret("username")
            session["authenticated"] = True
            session.make_secret("authenticated")
            finished({"ok": True})
        else:
            finished({"error": "Invalid login"})

    def must_be_logged_in(messageObj, session, send, finished):
        if messageObj["type"] != "login" and not session.get("authenticated"):
            finished({"error": "You must be logged in"})
            return False

    return {
        "demo": SimpleNamespace(handlers={"whoami": whoami, "login": login}),
        "guarded": SimpleNamespace(beforeHandler=must_be_logged_in,
                                   handlers={"whoami": whoami, "login": login}),
        "other": SimpleNamespace(handlers={"whoami": whoami}),
    }


def rejection(mtype: str, text: str) -> dict[str, Any]:
    """The frame QEWD's master sends for a refused JWT (docs/protocol.md §1.4)."""
    return {"type": mtype, "message": {"error": text, "disconnect": True}}


class Base(SynchronousTestCase):
    def setUp(self, **harness: Any) -> None:
        self.calls = Calls()
        harness.setdefault("jwt_secret", SECRET)
        self.h = NodeHarness(make_apps(self.calls), **harness)
        self.c = self.h.connect(ip="10.0.0.7")
        self.token = self.h.register(self.c, "guarded")
        self.payload = self.h.tokens.decode(self.token)

    def signed(self, payload: Any, header: Any = HS256) -> str:
        """A token an insider (holding the secret) signed."""
        return forge(header, payload, SECRET)

    def assertRefused(self, token: Any, text: str) -> None:
        """Refused as a message's token and as ``ewd-reregister``'s, with ``text``; no handler
        ran and no token came back."""
        before = len(self.calls.seen)
        frames = self.h.send(self.c, {"type": "whoami", "token": token})
        self.assertEqual(frames, [rejection("whoami", text)])
        frames = self.h.send(self.h.connect(), {"type": "ewd-reregister", "token": token,
                                                "jwt": True})
        self.assertEqual(len(frames), 1)
        self.assertEqual(frames[0]["message"], {"error": text, "disconnect": True})
        self.assertIs(frames[0]["finished"], True)
        self.assertEqual(len(self.calls.seen), before, "a handler ran")

    def whoami(self, token: str, conn: Any = None) -> dict[str, Any]:
        [frame] = self.h.send(conn or self.c, {"type": "whoami", "token": token})
        return frame["message"]


# -- algorithms --------------------------------------------------------------------------------

class AlgorithmTests(Base):
    def test_alg_none(self) -> None:
        """``alg: none``, with or without a signature: jwt-simple's own refusal text."""
        for header in ({"typ": "JWT", "alg": "none"}, {"alg": "none"}, {"alg": "None"},
                       {"alg": "NONE"}, {"alg": "nOnE"}, {"typ": "JWT"}, {"alg": None},
                       {"alg": ""}, {"alg": ["HS256"]}, {"alg": "hs256"}, {"alg": "HS256 "}):
            for signature in ("", "AAAA", None):
                if signature is None:  # even with a valid HMAC under the right secret
                    token = forge(header, self.payload, SECRET)
                else:
                    token = forge(header, self.payload, signature=signature)
                self.assertRefused(token, "Invalid JWT: Error: Algorithm not supported")
        # no third segment at all
        two = segment({"alg": "none"}) + "." + segment(self.payload)
        self.assertRefused(two, "Invalid JWT: Error: Not enough or too many segments")

    def test_alg_none_refused_whatever_is_configured(self) -> None:
        self.setUp(algorithms=("HS256", "HS384", "HS512"))
        self.assertRefused(forge({"alg": "none"}, self.payload, signature=""),
                           "Invalid JWT: Error: Algorithm not supported")

    def test_hs384_hs512_refused_by_default(self) -> None:
        """Signed with the right secret, but an algorithm the node does not accept (QEWD.js
        takes the algorithm from the header and accepts these, §3.1)."""
        for alg, digest in (("HS384", hashlib.sha384), ("HS512", hashlib.sha512)):
            token = forge({"typ": "JWT", "alg": alg}, self.payload, SECRET, digest)
            self.assertRefused(token, "Invalid JWT: Error: Algorithm not supported")

    def test_hs384_accepted_when_configured(self) -> None:
        self.setUp(algorithms=("HS256", "HS384"))
        demo = self.h.register(self.c, "demo")
        payload = self.h.tokens.decode(demo)
        token = forge({"typ": "JWT", "alg": "HS384"}, payload, SECRET, hashlib.sha384)
        reply = self.whoami(token)
        self.assertEqual((reply["application"], reply["socketId"]), ("demo", self.c.id))
        # what the node hands back is always HS256, as QEWD.js signs
        header = json.loads(base64.urlsafe_b64decode(reply["token"].split(".")[0] + "=="))
        self.assertEqual(header, HS256)
        token = forge({"typ": "JWT", "alg": "HS512"}, payload, SECRET, hashlib.sha512)
        self.assertRefused(token, "Invalid JWT: Error: Algorithm not supported")
        # the wrong HMAC under an allowed algorithm is still a bad signature
        token = forge({"typ": "JWT", "alg": "HS384"}, payload, SECRET, hashlib.sha256)
        self.assertRefused(token, "Invalid JWT: Error: Signature verification failed")

    def test_public_key_algorithms_never_accepted(self) -> None:
        """Key confusion: a header naming RS256/ES256/PS256 with an HMAC made from a PEM string
        (the classic trick against verifiers that feed a public key to HMAC), or even with the
        real secret. Only HS* is ever registered, so there is no public-key path to confuse."""
        for alg in ("RS256", "RS512", "ES256", "PS256", "EdDSA"):
            for key in (PEM_LIKE, real_public_key_pem(), SECRET):
                token = forge({"typ": "JWT", "alg": alg}, self.payload, key)
                self.assertRefused(token, "Invalid JWT: Error: Algorithm not supported")

    def test_hs256_signed_with_a_public_key(self) -> None:
        """HS256 with a public key as the HMAC secret: just another wrong secret."""
        for key in (PEM_LIKE, real_public_key_pem()):
            token = forge(HS256, {**self.payload, "authenticated": True}, key)
            self.assertRefused(token, "Invalid JWT: Error: Signature verification failed")

    def test_key_material_in_the_header_is_ignored(self) -> None:
        """``jwk`` / ``jku`` / ``x5u`` / ``kid`` pointing at the attacker's key change nothing:
        the node has one kind of key, its secret (and, while rotating, previous secrets)."""
        for extra in ({"jwk": {"kty": "oct", "k": b64(b"attacker")}},
                      {"jku": "http://attacker.invalid/keys"}, {"x5u": "http://attacker.invalid"},
                      {"kid": "attacker"}):
            token = forge({**HS256, **extra}, {**self.payload, "authenticated": True},
                          "attacker")
            self.assertRefused(token, "Invalid JWT: Error: Signature verification failed")
        for bad in ({"kid": 5}, {"crit": ["exp"]}, {"b64": False}):
            token = self.signed(self.payload, {**HS256, **bad})
            self.assertRefused(token, "Invalid JWT: SyntaxError: Invalid JWT header")


# -- time ----------------------------------------------------------------------------------------

class TimeTests(Base):
    def test_expired(self) -> None:
        self.h.clock.advance(300)  # exp is iat + 300: still valid at exp itself
        self.assertEqual(self.whoami(self.token)["error"], "You must be logged in")
        self.h.clock.advance(1)
        self.assertRefused(self.token, "Invalid JWT: Error: Token expired")

    def test_expired_token_made_elsewhere(self) -> None:
        """A token another node issued long ago (same secret): refused by its exp."""
        past = Clock()
        past.advance(self.h.clock.seconds() - 3600)
        old = TokenCodec(SECRET, clock=past).register_token(
            "guarded", {"socketId": "x", "ipAddress": "y", "authenticated": True})
        self.assertRefused(old, "Invalid JWT: Error: Token expired")

    def test_exp_that_is_not_a_number_fails_closed(self) -> None:
        """jwt-simple ignores a falsy ``exp`` and coerces strings; we refuse (an insider's
        token, or a QEWD.js handler that set ``timeout`` to a string)."""
        for exp in ("9999999999", None, True, [1], {"a": 1}, 0, -1.5):
            self.assertRefused(self.signed({**self.payload, "exp": exp}),
                               "Invalid JWT: Error: Token expired")

    def test_huge_integer_time_claims(self) -> None:
        """JSON integers have no size limit (Python reads up to 4300 digits); one too big for
        a float in ``exp``, ``nbf`` or ``timeout`` of a correctly signed token must be answered
        like any other bad value."""
        self.addCleanup(self.flushLoggedErrors)
        huge = 10**400
        self.assertRefused(self.signed({**self.payload, "exp": -huge}),
                           "Invalid JWT: Error: Token expired")
        self.assertRefused(self.signed({**self.payload, "nbf": huge}),
                           "Invalid JWT: Error: Token not yet active")
        demo = self.h.tokens.decode(self.h.register(self.c, "demo"))
        for claims in ({"exp": huge}, {"timeout": huge}):
            frames = self.h.send(self.c, {"type": "whoami", "token": self.signed({**demo,
                                                                                 **claims})})
            self.assertEqual(len(frames), 1, f"{claims}: no answer")
            self.assertNotEqual(frames[0]["message"].get("error"), E.INTERNAL_ERROR)
        self.assertEqual(self.flushLoggedErrors(), [])


    def test_not_yet_valid(self) -> None:
        now = int(self.h.clock.seconds())
        token = self.signed({**self.payload, "nbf": now + 60})
        self.assertRefused(token, "Invalid JWT: Error: Token not yet active")
        self.assertRefused(self.signed({**self.payload, "nbf": str(now - 60)}),
                           "Invalid JWT: Error: Token not yet active")
        self.h.clock.advance(60)
        self.assertEqual(self.whoami(token)["error"], "You must be logged in")


# -- integrity -----------------------------------------------------------------------------------

class IntegrityTests(Base):
    def test_tampered_payload(self) -> None:
        """Any change to the signed part without the secret: the signature no longer matches."""
        head, body, sig = self.token.split(".")
        for change in ({"authenticated": True}, {"application": "demo"},
                       {"exp": self.payload["exp"] + 10**6}, {"timeout": 10**9}):
            tampered = head + "." + segment({**self.payload, **change}) + "." + sig
            self.assertRefused(tampered, "Invalid JWT: Error: Signature verification failed")
        # a bit flipped in the encrypted qewd claim, signature kept
        qewd = self.payload["qewd"]
        flipped = qewd[:10] + format(int(qewd[10], 16) ^ 1, "x") + qewd[11:]
        tampered = head + "." + segment({**self.payload, "qewd": flipped}) + "." + sig
        self.assertRefused(tampered, "Invalid JWT: Error: Signature verification failed")
        # the signature itself changed, cut, or emptied
        other = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
        for bad_sig in (other, sig[:-4], ""):
            self.assertRefused(head + "." + body + "." + bad_sig,
                               "Invalid JWT: Error: Signature verification failed")
        # header swapped for an equivalent spelling: the signature covers the bytes
        respelled = segment({"alg": "HS256", "typ": "JWT"}) + "." + body + "." + sig
        self.assertRefused(respelled, "Invalid JWT: Error: Signature verification failed")

    def test_signed_with_another_secret(self) -> None:
        other = TokenCodec("anotherSecret", clock=self.h.clock).register_token(
            "guarded", {"socketId": self.c.id, "ipAddress": self.c.ip, "authenticated": True})
        self.assertRefused(other, "Invalid JWT: Error: Signature verification failed")
        self.assertRefused(forge(HS256, self.payload, ""),
                           "Invalid JWT: Error: Signature verification failed")

    def test_garbage_qewd_claim_from_an_insider(self) -> None:
        """Correctly signed, but the encrypted claim is not ours: refused, never trusted on
        the public claims (QEWD.js logs a warning and goes on, §3.4 step 3, §9 item 4)."""
        garbage = ["deadbeef" * 8, "zz", "", "00" * 16, 5, None, True, ["a"],
                   {"authenticated": True},
                   SecretCipher("anotherSecret").encrypt({"authenticated": True}),
                   SecretCipher(SECRET).encrypt(["authenticated", True]),
                   SecretCipher(SECRET).encrypt("authenticated"),
                   self.payload["qewd"][:-32]]
        for qewd in garbage:
            token = self.signed({**self.payload, "qewd": qewd, "authenticated": True})
            self.assertRefused(token, "Invalid JWT: Error: Invalid qewd claim")

    def test_removed_qewd_claim_with_public_authenticated(self) -> None:
        payload = {k: v for k, v in self.payload.items() if k != "qewd"}
        token = self.signed({**payload, "authenticated": True, "username": "rob"})
        self.assertRefused(token, "Invalid JWT: Error: Invalid qewd claim")
        self.assertEqual(self.calls.seen, [])

    def test_public_authenticated_true_next_to_secret_false(self) -> None:
        """The secret claim wins: the beforeHandler sees ``authenticated: False``. (QEWD.js
        promotes a secret only over a falsy public value, so the public ``true`` would stand.)
        """
        token = self.signed({**self.payload, "authenticated": True, "username": "admin"})
        self.assertEqual(self.whoami(token), {"error": "You must be logged in"})
        # and on an application without a beforeHandler: what a handler sees
        demo = self.h.tokens.decode(self.h.register(self.c, "demo"))
        token = self.signed({**demo, "authenticated": True})
        reply = self.whoami(token)
        self.assertIs(reply["authenticated"], False)
        # the public copy is dropped from the token the node hands back
        self.assertNotIn("authenticated", self.h.tokens.decode(reply["token"]))
        self.assertIs(self.h.tokens.session(reply["token"])["authenticated"], False)

    def test_public_claim_stands_when_there_is_no_secret_of_that_name(self) -> None:
        """The limit of "secret wins": an insider can sign a token whose encrypted claim has no
        ``authenticated`` at all; its public ``authenticated: true`` is then what the handler
        sees. Only a holder of the secret can do this (it could sign anything); a handler that
        wants more than the signature can check ``session.is_secret("authenticated")``."""
        qewd = SecretCipher(SECRET).encrypt({"socketId": self.c.id})
        token = self.signed({**self.payload, "qewd": qewd, "authenticated": True})
        self.assertIs(self.whoami(token)["authenticated"], True)
        session = self.h.tokens.session(token)
        self.assertFalse(session.is_secret("authenticated"))
        self.assertTrue(self.h.tokens.session(self.token).is_secret("authenticated"))

    def test_no_application_claim(self) -> None:
        for application in (None, "", 5, ["guarded"]):
            payload = {**self.payload, "application": application}
            if application is None:
                del payload["application"]
            self.assertEqual(self.h.send(self.c, {"type": "whoami",
                                                  "token": self.signed(payload)}),
                             [rejection("whoami", "Invalid JWT: Error: No application claim")])

    def test_malformed_tokens(self) -> None:
        head, body, sig = self.token.split(".")
        cases = [
            (head + "=." + body + "." + sig, "Invalid JWT: SyntaxError: Invalid base64url in JWT"),
            (head + "." + body + "==." + sig, "Invalid JWT: SyntaxError: Invalid base64url in JWT"),
            (b64(b"{") + "." + body + "." + sig,
             "Invalid JWT: SyntaxError: Invalid JSON in JWT header"),
            (head + "." + b64(b"{") + "." + sig,
             "Invalid JWT: SyntaxError: Invalid JSON in JWT payload"),
            (b64(b"[]") + "." + body + "." + sig,
             "Invalid JWT: SyntaxError: JWT header is not a JSON object"),
            (head + "." + b64(b"[]") + "." + sig,
             "Invalid JWT: SyntaxError: JWT payload is not a JSON object"),
            (head + "." + b64(b'{"exp":NaN}') + "." + sig,
             "Invalid JWT: SyntaxError: Invalid JSON in JWT payload"),
            ("a.b.c.d", "Invalid JWT: Error: Not enough or too many segments"),
            (self.token + ".", "Invalid JWT: Error: Not enough or too many segments"),
        ]
        for token, text in cases:
            self.assertRefused(token, text)
        frames = self.h.send(self.c, {"type": "whoami", "token": 12345})
        self.assertEqual(frames, [rejection("whoami", "Invalid JWT: Error: No token supplied")])


# -- size --------------------------------------------------------------------------------------

class SizeTests(Base):
    def padded(self, length: int) -> str:
        """A correctly signed token of exactly ``length`` characters (a public padding claim)."""
        base = len(self.signed({**self.payload, "pad": ""}))
        pad = "x" * ((length - base) * 3 // 4)
        token = self.signed({**self.payload, "pad": pad})
        while len(token) < length:
            pad += "x"
            token = self.signed({**self.payload, "pad": pad})
        while len(token) > length:
            pad = pad[:-1]
            token = self.signed({**self.payload, "pad": pad})
        return token

    def test_oversize_token(self) -> None:
        limit = self.h.tokens.max_token_length
        self.assertEqual(limit, 16384)
        for length in (limit - 1, limit):  # a signed token at the limit is read normally
            token = self.padded(length)
            if len(token) == length:
                self.assertEqual(self.whoami(token)["error"], "You must be logged in")
        big = self.padded(limit + 1)
        if len(big) <= limit:  # base64 steps by 4: one character more than the limit
            big = self.padded(limit + 4)
        self.assertGreater(len(big), limit)
        self.assertRefused(big, "Invalid JWT: Error: Token too long")
        self.assertRefused("x" * (limit + 1) + ".a.b", "Invalid JWT: Error: Token too long")
        self.assertRefused("." * 100_000, "Invalid JWT: Error: Token too long")


# -- routing and replay ----------------------------------------------------------------------

class PolicyTests(Base):
    def test_token_for_another_application(self) -> None:
        """QEWD routes by the token's ``application`` claim (§2.5), not by what the socket
        registered for: a token issued for ``other`` is served by ``other``'s handlers, on any
        socket. Registration is open (§2.1), so the claim says which module, not who may use
        it: an application protects itself in its beforeHandler."""
        other = self.h.register(self.h.connect(), "other")
        reply = self.whoami(other, self.c)  # self.c registered for "guarded"
        self.assertEqual((reply["application"], reply["authenticated"]), ("other", False))
        self.assertEqual(self.h.tokens.decode(reply["token"])["application"], "other")
        # an application that is not in moduleMap: nothing is imported
        stranger = self.h.register(self.h.connect(), "os")
        [frame] = self.h.send(self.c, {"type": "whoami", "token": stranger})
        self.assertEqual(frame["message"], {
            "error": "Unable to load handler module for: os",
            "reason": "no moduleMap entry for application 'os'"})

    def test_replay_on_another_socket(self) -> None:
        """JWTs are bearer tokens: a token works on any socket (needed for reconnects and for
        load-balanced masters). Its secret ``socketId`` is informational: a handler sees the
        socket the token was issued to until ``ewd-reregister`` rebinds it."""
        frames = self.h.send(self.c, {"type": "login", "token": self.token,
                                      "params": {"username": "rob", "password": "secret"}})
        logged_in = frames[-1]["message"]["token"]
        thief = self.h.connect(ip="203.0.113.9")
        reply = self.whoami(logged_in, thief)
        self.assertEqual((reply["username"], reply["authenticated"]), ("rob", True))
        self.assertEqual((reply["socketId"], reply["ipAddress"]), (self.c.id, "10.0.0.7"))
        # ewd-reregister rebinds the session to the new socket
        [frame] = self.h.send(thief, {"type": "ewd-reregister", "token": logged_in})
        self.assertIs(frame["message"]["ok"], True)
        rebound = frame["message"]["token"]
        reply = self.whoami(rebound, thief)
        self.assertEqual((reply["socketId"], reply["ipAddress"]), (thief.id, "203.0.113.9"))
        self.assertEqual(reply["username"], "rob")
        # no revocation: the earlier token keeps working until it expires
        self.assertEqual(self.whoami(logged_in, self.c)["username"], "rob")
        self.h.clock.advance(301)
        self.assertEqual(self.h.send(self.c, {"type": "whoami", "token": logged_in}),
                         [rejection("whoami", "Invalid JWT: Error: Token expired")])

    def test_session_token_replay_on_another_socket(self) -> None:
        """Session-token mode: the uuid is a bearer token too; reregister rebinds socketId."""
        token = self.h.register(self.c, "demo", jwt=False)
        other = self.h.connect()
        reply = self.whoami(token, other)
        self.assertEqual(reply["socketId"], self.c.id)
        self.assertEqual(self.h.send(other, {"type": "ewd-reregister", "token": token})[0]
                         ["message"], {"ok": True})
        self.assertEqual(self.whoami(token, other)["socketId"], other.id)

    def test_internal_types_never_return_a_signed_token(self) -> None:
        """No signing oracle (§9 item 2): QEWD.js answers ``ewd-jwt-encode`` with any payload
        signed; here every internal type is refused before authentication."""
        logged_in = self.h.send(self.c, {"type": "login", "token": self.token, "params": {
            "username": "rob", "password": "secret"}})[-1]["message"]["token"]
        for mtype in sorted(E.INTERNAL_TYPES):
            for message in (
                {"type": mtype, "params": {"payload": {"application": "guarded",
                                                       "authenticated": True}}},
                {"type": mtype, "params": {"jwt": self.token, "application": "demo"}},
                {"type": mtype, "token": logged_in, "jwt": True,
                 "params": {"jwt": logged_in, "timeout": 10**9}},
                {"type": mtype, "token": logged_in, "ms_requestId": 1},
            ):
                frames = self.h.send(self.c, message)
                self.assertEqual(len(frames), 1)
                text = json.dumps(frames)
                self.assertEqual(frames[0]["message"]["error"],
                                 f"Message type {mtype} is reserved for internal use")
                self.assertNotIn("token", frames[0]["message"])
                for word in text.replace('"', " ").split():
                    if word.count(".") == 2:
                        with self.assertRaises(TokenError):
                            self.h.tokens.decode(word)


class ImpersonationTests(SynchronousTestCase):
    """Claiming to be one of our masters' links."""

    def test_claiming_to_be_a_link_does_not_lift_the_in_flight_limit(self) -> None:
        """``qewd_twisted: 1`` on ewd-register marks the connection as a link from one of our
        masters. Nothing can prove that claim, so a link gets a higher limit
        (``maxInFlightPerLink``), never an exemption: an impersonator stays bounded."""
        h = NodeHarness({"a": SimpleNamespace(handlers={"never": lambda m, s, send, f: None})},
                        max_in_flight=2, max_in_flight_link=4, handler_timeout=None)
        c = h.connect()
        [frame] = h.send(c, {"type": "ewd-register", "application": "a", "jwt": True,
                             "qewd_twisted": 1})
        token = frame["message"]["token"]
        for _ in range(4):
            self.assertEqual(h.send(c, {"type": "never", "token": token}), [])
        frames = h.send(c, {"type": "never", "token": token})
        self.assertEqual([f["message"] for f in frames], [
            {"error": E.TOO_MANY_IN_FLIGHT, "status": {"code": E.STATUS_TOO_MANY}}])


# -- over a real socket --------------------------------------------------------------------------

class SocketTests(TestCase):
    """The same refusals through the Engine.IO endpoint of a real node on loopback."""

    async def client(self, node: Any, application: str = "demo") -> tuple[EIOClient, dict, str]:
        c = EIOClient(eio_url(node))
        self.addCleanup(c.close)
        handshake = await c.handshake()
        c.emit({"type": "ewd-register", "application": application, "jwt": True})
        token = (await c.message())["message"]["token"]
        return c, handshake, token

    async def ask(self, c: EIOClient, message: dict) -> dict:
        c.emit(message)
        return await c.message()

    async def _refusals(self) -> None:
        node = start_node(self)
        c, _, token = await self.client(node)
        payload = node.tokens.decode(token)
        past = Clock()
        past.advance(payload["iat"] - 3600)
        expired = TokenCodec(SECRET, clock=past).register_token(
            "demo", {"socketId": "x", "ipAddress": "y", "authenticated": True})
        huge = forge(HS256, {**payload, "pad": "x" * 500_000}, "attacker")
        cases = [
            (forge({"typ": "JWT", "alg": "none"}, {**payload, "authenticated": True},
                   signature=""), "Invalid JWT: Error: Algorithm not supported"),
            (forge({"typ": "JWT", "alg": "HS512"}, payload, SECRET, hashlib.sha512),
             "Invalid JWT: Error: Algorithm not supported"),
            (forge(HS256, payload, PEM_LIKE), "Invalid JWT: Error: Signature verification failed"),
            (expired, "Invalid JWT: Error: Token expired"),
            (forge(HS256, {**payload, "qewd": "00"}, SECRET), "Invalid JWT: Error: Invalid qewd claim"),
            (huge, "Invalid JWT: Error: Token too long"),  # a 670 kB message: under maxMessageSize
        ]
        for bad, text in cases:
            reply = await self.ask(c, {"type": "echo", "token": bad})
            self.assertEqual(reply, rejection("echo", text))
        reply = await self.ask(c, {"type": "echo", "token": token, "params": "still here"})
        self.assertEqual(reply["message"]["you sent"], "still here")

    def test_refusals(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._refusals())

    async def _replay(self) -> None:
        node = start_node(self)
        a, hs_a, token = await self.client(node)
        reply = await self.ask(a, {"type": "login", "token": token,
                                   "params": {"username": "rob", "password": "secret"}})
        while reply.get("finished") is False:
            reply = await a.message()
        logged_in = reply["message"]["token"]
        b, hs_b, _ = await self.client(node)
        reply = await self.ask(b, {"type": "echo", "token": logged_in, "params": 1})
        self.assertEqual(reply["message"]["user"], "rob")  # bearer: accepted on socket b
        self.assertEqual(node.tokens.session(reply["message"]["token"])["socketId"], hs_a["sid"])
        reply = await self.ask(b, {"type": "ewd-reregister", "token": logged_in})
        self.assertEqual(node.tokens.session(reply["message"]["token"])["socketId"], hs_b["sid"])

    def test_replay_on_another_socket(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._replay())

    async def _internal(self) -> None:
        node = start_node(self)
        c, _, token = await self.client(node)
        for mtype in ("ewd-jwt-encode", "ewd-jwt-updateExpiry", "ewd-jwt-decode",
                      "ewd-jwt-isValid"):
            for message in ({"type": mtype, "params": {"payload": {"authenticated": True}}},
                            {"type": mtype, "token": token, "params": {"jwt": token}}):
                reply = await self.ask(c, message)
                self.assertEqual(reply["message"], {
                    "error": f"Message type {mtype} is reserved for internal use"})

    def test_internal_types(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._internal())

    async def _algorithms(self) -> None:
        node = start_node(self, jwt={"secret": SECRET, "algorithms": ["HS256", "HS384"]})
        c, _, token = await self.client(node)
        payload = node.tokens.decode(token)
        hs384 = forge({"typ": "JWT", "alg": "HS384"}, payload, SECRET, hashlib.sha384)
        reply = await self.ask(c, {"type": "echo", "token": hs384, "params": 384})
        self.assertEqual(reply["message"]["you sent"], 384)
        hs512 = forge({"typ": "JWT", "alg": "HS512"}, payload, SECRET, hashlib.sha512)
        reply = await self.ask(c, {"type": "echo", "token": hs512})
        self.assertEqual(reply, rejection("echo", "Invalid JWT: Error: Algorithm not supported"))

    def test_algorithms_configured(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._algorithms())
