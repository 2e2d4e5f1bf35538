# test-case-name: tests.test_fuzz
"""
Hostile input, property-based (issue 7): malformed Engine.IO and socket.io frames, invalid UTF-8,
binary frames, deep and huge JSON, every field of a message with a value of every JSON type,
and random sequences of register / reregister / login / unknown / internal messages.

The properties, at every level:

* the node never raises out of its entry points (``Node.receive``, the protocols'
  ``onMessage``) and logs no failure (a logged failure is a bug in the node: handlers here never
  raise);
* a message that is a JSON object with a non-empty string ``type`` always gets an answer: zero
  or more intermediate frames, then exactly one final frame with the request's ``type``
  (``finished: true``, or QEWD's JWT rejection, which has no ``finished``); never silence;
* anything else gets exactly one ``{"type": "error", ...}`` frame;
* a well-behaved client on another connection receives nothing meanwhile and keeps working;
* a token the node hands out always verifies, is never authenticated unless the request's own
  token was or the request was a successful login, and is never the answer to an internal type.

Two levels:

1. In memory (``NodeHarness``, a ``Clock``, no threads): hundreds of examples per property,
   deterministic (``derandomize=True``, no example database, no deadline). Frames are encoded
   with the same ``wire`` functions the Engine.IO connection uses, so a reply a real socket could
   not carry fails here too. The framing layer (``web.EngineIOProtocol`` / ``web.PlainProtocol``
   ``onMessage``) is driven in memory as well.
2. On loopback (``start_node``, real Autobahn clients): a bounded, seeded corpus of 200 mutated
   frames on each endpoint, binary frames, invalid UTF-8 (Autobahn closes with 1007), deep and
   huge JSON, lone surrogates.

Strings in the strategies include lone surrogates (``"\\ud800"`` as a JSON escape is valid UTF-8
on the wire but has no UTF-8 form): this suite found that they dropped the connection
(``LoneSurrogateTests``, fixed since). ``RetentionTests`` checks what a client's messages leave
in the node's memory after it has gone.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import json
import random
import tracemalloc
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from qewd_twisted import errors as E
from qewd_twisted.transports import site as web
from qewd_twisted.transports import wire
from qewd_twisted.testing import MemoryConnection, NodeHarness
from qewd_twisted.auth.tokens import SecretCipher, TokenCodec, TokenError
from tests.integration.nodes import eio_url, plain_url, start_node
from tests.wsclient import Closed, EIOClient, PlainClient

SECRET = "someSecret123"

IN_MEMORY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEQUENCES = settings(IN_MEMORY, max_examples=100, stateful_step_count=30)


# -- the applications the node serves -----------------------------------------------------------

def app(**exports: Any) -> SimpleNamespace:
    return SimpleNamespace(**exports)


GOOD_LOGIN = {"username": "rob", "password": "secret"}


def login(messageObj, session, send, finished):
    # Not test_node's login: this one accepts exactly GOOD_LOGIN, which is what the model below
    # predicts (junk params may hold the right username and password among other keys).
    params = messageObj.get("params")
    send({"text": "checking credentials"})
    if params == GOOD_LOGIN:
        session["username"] = "rob"
        session.make_secret("username")
        session["authenticated"] = True
        session.make_secret("authenticated")
        session.timeout = 1200
        finished({"ok": True})
    else:
        finished({"error": "Invalid login"})


def echo(messageObj, session, send, finished):
    finished({"you sent": messageObj.get("params")})


def whoami(messageObj, session, send, finished):
    finished({"authenticated": session.get("authenticated") is True})


def progress(messageObj, session, send, finished):
    send({"type": "progress", "step": 1})
    send({"step": 2})
    finished({"done": True})


def must_be_logged_in(messageObj, session, send, finished):
    if session.get("authenticated") is not True:
        finished({"error": "You must be logged in"})
        return False


def make_apps() -> dict[str, Any]:
    return {
        "demo": app(handlers={"login": login, "echo": echo, "whoami": whoami,
                              "progress": progress}),
        "guarded": app(beforeHandler=must_be_logged_in, handlers={"whoami": whoami}),
    }


# -- a memory connection that encodes like the real one -------------------------------------

class WireConnection(MemoryConnection):
    """Encodes every frame exactly as ``web.EngineIOConnection`` does (``wire.event_bytes``) and
    decodes it back, so what a real socket could not carry raises here as there."""

    framing = "memory-engine.io"

    def encode(self, frame: Any) -> bytes:
        return wire.event_bytes(frame)

    def send_encoded(self, data: bytes) -> None:
        packet = wire.decode(data.decode("utf-8"))
        assert packet.kind == "event" and packet.name == "ewdjs", packet
        self.frames.append(packet.args[0])


def wire_connection(h: NodeHarness, ip: str = "127.0.0.1") -> WireConnection:
    """A new connection on ``h``'s node; ids count per harness, so no state is left in the
    module from one test to the next."""
    n = h.__dict__.get("_fuzz_sockets", 0) + 1
    h.__dict__["_fuzz_sockets"] = n
    conn = WireConnection(f"fuzzSocket{n:010d}", ip)
    h.node.connection_opened(conn)
    return conn


# -- tokens an attacker can present ------------------------------------------------------------

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(header: dict, payload: dict, key: str | None, digest=hashlib.sha256) -> str:
    """A JWT with any header and payload, HMAC-signed with ``key`` (or unsigned)."""
    signing_input = (b64(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64(json.dumps(payload, separators=(",", ":")).encode()))
    if key is None:
        return signing_input + "."
    return signing_input + "." + b64(hmac.new(key.encode(), signing_input.encode(),
                                              digest).digest())


class Symbol(str):
    """A token named in a strategy, made for the node under test when the example runs."""


TOKEN_NAMES = ("own", "expired", "other-secret", "alg-none", "hs512", "tampered", "session",
               "public-authenticated", "no-qewd", "unknown-app", "guarded", "truncated")


def attacker_tokens(h: NodeHarness, conn: MemoryConnection) -> dict[str, str]:
    """Tokens of every kind an attacker could hold, for ``h``'s node; registers ``conn``."""
    own = h.register(conn, "demo")
    payload = h.tokens.decode(own)
    past = Clock()
    past.advance(h.clock.seconds() - 10_000)
    head, _, sig = own.split(".")
    return {
        "own": own,
        "expired": TokenCodec(SECRET, clock=past).register_token(
            "demo", {"socketId": conn.id, "ipAddress": conn.ip, "authenticated": True}),
        "other-secret": TokenCodec("anotherSecret", clock=h.clock).register_token(
            "demo", {"socketId": conn.id, "ipAddress": conn.ip, "authenticated": True}),
        "alg-none": forge({"typ": "JWT", "alg": "none"}, {**payload, "authenticated": True}, None),
        "hs512": forge({"typ": "JWT", "alg": "HS512"}, payload, SECRET, hashlib.sha512),
        "tampered": head + "." + b64(json.dumps({**payload, "authenticated": True}).encode())
                    + "." + sig,
        "session": h.register(conn, "demo", jwt=False),
        # The next three are signed with the secret: insiders' tokens, still never trusted
        # beyond what their encrypted claim says.
        "public-authenticated": h.tokens.encode({**payload, "authenticated": True}),
        "no-qewd": h.tokens.encode({k: v for k, v in payload.items() if k != "qewd"}
                                   | {"authenticated": True}),
        "unknown-app": h.tokens.encode({**payload, "application": "os"}),
        "guarded": h.register(conn, "guarded"),
        "truncated": own[:-3],
    }


# -- strategies ---------------------------------------------------------------------------------

def text(**kw: Any) -> st.SearchStrategy[str]:
    """Any string a JSON parser can produce: lone surrogates included (``"\\ud800"``)."""
    return st.text(alphabet=st.characters(blacklist_categories=()), **kw)


def raw_text(**kw: Any) -> st.SearchStrategy[str]:
    """Text a WebSocket text frame can carry as it is (UTF-8: no lone surrogates)."""
    return st.text(alphabet=st.characters(blacklist_categories=("Cs",)), **kw)


def json_text(value: Any) -> str:
    """``value`` as JSON text for a frame; NaN/Infinity written as Python (and the node)
    accept them, lone surrogates escaped."""
    out = json.dumps(value, ensure_ascii=False)
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        out = json.dumps(value)
    return out


SCALARS = (st.none() | st.booleans() | st.integers(-(10**30), 10**30)
           | st.sampled_from([10**400, -(10**400)])  # JSON integers have no size limit
           | st.floats(allow_nan=True, allow_infinity=True) | text(max_size=24))
JSON = st.recursive(
    SCALARS,
    lambda children: (st.lists(children, max_size=5)
                      | st.dictionaries(text(max_size=10), children, max_size=5)),
    max_leaves=16,
)
# Deep nesting that a JSON parser on the wire still accepts (it stops at ~1000 levels).
DEEP = st.integers(1, 400).flatmap(
    lambda n: st.sampled_from(["[" * n + "]" * n, '{"a":' * n + "1" + "}" * n])
).map(json.loads)
HUGE = st.sampled_from([
    "x" * 200_000,
    list(range(20_000)),
    {f"k{i}": i for i in range(5_000)},
])
ANY = JSON | DEEP | HUGE

TYPE_NAMES = sorted(
    {"ewd-register", "ewd-reregister", "login", "echo", "whoami", "progress", "noSuchType",
     "", " ", "EWD-REGISTER", "ewd-register ", "__proto__", "constructor", "x" * 5000}
    | E.INTERNAL_TYPES | E.UNSUPPORTED_TYPES)
TYPES = st.sampled_from(TYPE_NAMES)
TOKENS = st.sampled_from(TOKEN_NAMES).map(Symbol) | st.sampled_from(
    ["", "a.b.c", "..", "a.b", "a" * 20_000, "a." * 9000, "null", "undefined",
     "00000000-0000-4000-8000-000000000000"])
APPLICATIONS = st.sampled_from(["demo", "guarded", "os", "", "x" * 5000, "__init__",
                                "../demo", "demo\x00", "tests.apps.demo"])
PARAMS = st.just(GOOD_LOGIN) | st.just({"username": "rob", "password": "wrong"})


def field(meaningful: st.SearchStrategy[Any], junk: st.SearchStrategy[Any] = ANY
          ) -> st.SearchStrategy[Any]:
    return meaningful | junk


def fields(junk: st.SearchStrategy[Any]) -> dict[str, st.SearchStrategy[Any]]:
    """Every field a client message can carry but ``type``: meaningful values or ``junk``."""
    return {
        "token": field(TOKENS, junk),
        "params": field(PARAMS, junk),
        "application": field(APPLICATIONS, junk),
        "jwt": junk,
        "ms_requestId": field(st.integers(0, 2**53) | text(max_size=8), junk),
        "qewd_twisted": junk,
        "service": junk,
    }


def messages(junk: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a message object with a meaningful ``type`` and each other field absent,
    meaningful or ``junk``; sometimes any ``type`` at all; sometimes just junk."""
    typed = st.fixed_dictionaries({"type": TYPES}, optional=fields(junk))
    anything = st.fixed_dictionaries({}, optional={"type": junk, **fields(junk)})
    return st.one_of(typed, typed, typed, anything, junk)


MESSAGES = messages(ANY)
SMALL_MESSAGES = messages(JSON)  # for the sequences: deep and huge values are covered above


def resolve(message: Any, tokens: dict[str, str]) -> Any:
    if isinstance(message, dict) and isinstance(message.get("token"), Symbol):
        return {**message, "token": tokens[message["token"]]}
    return message


# -- the properties ------------------------------------------------------------------------------

def is_final(frame: Any) -> bool:
    """``finished: true``, or QEWD's JWT rejection (an error, no ``finished``)."""
    if not isinstance(frame, dict):
        return False
    if frame.get("finished") is True:
        return True
    message = frame.get("message")
    return "finished" not in frame and isinstance(message, dict) and "error" in message


def tokens_in(value: Any) -> list[str]:
    """Every string anywhere in ``value`` that has the shape of a JWT."""
    if isinstance(value, str):
        return [value] if value.count(".") == 2 and len(value) > 20 else []
    if isinstance(value, dict):
        return [t for v in value.values() for t in tokens_in(v)]
    if isinstance(value, list):
        return [t for v in value for t in tokens_in(v)]
    return []


def verifies(h: NodeHarness, token: Any) -> bool:
    try:
        h.tokens.decode(token)
        return True
    except TokenError:
        return False


def authenticated(h: NodeHarness, token: Any) -> bool:
    """Whether ``token`` is a live session token or JWT whose *secret* claims say authenticated.

    The JWT's ``qewd`` claim is decrypted here with our own ``SecretCipher``, not through
    ``TokenCodec.session``, so this oracle does not share the code it checks.
    """
    session = h.sessions.get(token) if isinstance(token, str) else None
    if session is not None:
        return session.get("authenticated") is True
    try:
        secrets = SecretCipher(SECRET).decrypt(h.tokens.decode(token).get("qewd"))
    except (TokenError, TypeError, ValueError):
        return False
    return isinstance(secrets, dict) and secrets.get("authenticated") is True


def live(h: NodeHarness, token: str) -> bool:
    """Whether ``token`` is one the node would accept now (a JWT or a session token)."""
    if h.sessions.get(token) is not None:
        return True
    try:
        h.tokens.session(token)
        return True
    except TokenError:
        return False


class Checks:
    """Assertions shared by the in-memory tests (mixed into trial test cases and the machine)."""

    case: SynchronousTestCase

    def check_no_failures_logged(self) -> None:
        logged = self.case.flushLoggedErrors()
        if logged:
            raise AssertionError("the node logged a failure:\n" + logged[0].getTraceback())

    def check_answer(self, h: NodeHarness, message: Any, frames: list[Any]) -> None:
        tc = self.case
        mtype = message.get("type") if isinstance(message, dict) else None
        for f in frames:
            tc.assertIsInstance(f, dict)
            tc.assertIsInstance(f.get("type"), str)
        if not (isinstance(mtype, str) and mtype):
            tc.assertEqual(len(frames), 1, frames)
            tc.assertEqual(frames[0]["type"], "error")
            tc.assertIn(frames[0]["message"]["error"], (E.NOT_AN_OBJECT, E.BAD_TYPE))
            return
        tc.assertTrue(frames, f"no answer to a message of type {mtype[:40]!r}")
        finals = [f for f in frames if is_final(f)]
        tc.assertEqual(finals, frames[-1:], "exactly one final frame, and it comes last")
        final = frames[-1]
        tc.assertEqual(final["type"], mtype, "the final frame carries the request's type")
        error = final["message"].get("error") if isinstance(final["message"], dict) else None
        tc.assertNotEqual(error, "Internal server error")
        for f in frames[:-1]:
            tc.assertIs(f["finished"], False)
        if mtype in E.INTERNAL_TYPES:
            for candidate in tokens_in(frames):
                tc.assertFalse(verifies(h, candidate), "an internal type returned a signed token")
        issued = [f["message"]["token"] for f in frames
                  if isinstance(f.get("message"), dict) and "token" in f["message"]]
        presented = message.get("token")
        may_be_authenticated = authenticated(h, presented) or (
            mtype == "login" and message.get("params") == GOOD_LOGIN)
        for token in issued:
            tc.assertTrue(live(h, token), "the node handed out a token it does not accept")
            if authenticated(h, token):
                tc.assertTrue(may_be_authenticated,
                              f"{mtype!r} turned an unauthenticated token into an authenticated one")


class Bystander:
    """A well-behaved client: logged in before the attack, must see nothing and keep working."""

    def __init__(self, h: NodeHarness) -> None:
        self.h = h
        self.conn = wire_connection(h, ip="10.0.0.1")
        token = h.register(self.conn, "demo")
        frames = h.send(self.conn, {"type": "login", "token": token, "params": GOOD_LOGIN})
        self.token = frames[-1]["message"]["token"]
        self.n = 0

    def check(self, tc: SynchronousTestCase) -> None:
        tc.assertEqual(self.conn.take(), [], "another client's traffic reached the bystander")
        self.n += 1
        if not authenticated(self.h, self.token):  # the attacker advanced the clock past expiry
            frames = self.h.send(self.conn, {"type": "ewd-register", "application": "demo",
                                             "jwt": True})
            token = frames[-1]["message"]["token"]
            frames = self.h.send(self.conn, {"type": "login", "token": token,
                                             "params": GOOD_LOGIN})
            self.token = frames[-1]["message"]["token"]
        frames = self.h.send(self.conn, {"type": "echo", "token": self.token,
                                         "params": ["ping", self.n]})
        tc.assertEqual(len(frames), 1, frames)
        tc.assertEqual(frames[0]["message"]["you sent"], ["ping", self.n])
        self.token = frames[0]["message"]["token"]
        tc.assertTrue(authenticated(self.h, self.token))


# -- level 1: the node, in memory ---------------------------------------------------------------

class NodeFuzzTests(SynchronousTestCase, Checks):
    """``Node.receive`` with anything a client can send, one example at a time."""

    def setUp(self) -> None:
        self.case = self

    def fresh(self) -> tuple[NodeHarness, WireConnection, dict[str, str], Bystander]:
        h = NodeHarness(make_apps(), jwt_secret=SECRET)
        bystander = Bystander(h)
        attacker = wire_connection(h, ip="192.0.2.66")
        tokens = attacker_tokens(h, attacker)
        attacker.take()
        return h, attacker, tokens, bystander

    @IN_MEMORY
    @given(st.lists(MESSAGES, min_size=1, max_size=6))
    def test_any_message_is_answered(self, messages: list[Any]) -> None:
        h, attacker, tokens, bystander = self.fresh()
        for message in messages:
            message = resolve(message, tokens)
            h.node.receive(attacker, message)  # must not raise
            self.check_no_failures_logged()
            self.check_answer(h, message, attacker.take())
        bystander.check(self)
        h.disconnect(attacker)
        self.assertEqual(list(h.node.connections), [bystander.conn.id])
        self.assertEqual(h.node.in_flight, 0)

    @settings(IN_MEMORY, max_examples=150)
    @given(st.fixed_dictionaries({}, optional=fields(ANY)))
    def test_every_type_with_any_fields(self, rest: dict[str, Any]) -> None:
        """The same fields under every type: each type's path sees every kind of value."""
        h, attacker, tokens, bystander = self.fresh()
        for mtype in TYPE_NAMES:
            message = resolve({**rest, "type": mtype}, tokens)
            h.node.receive(attacker, message)
            self.check_no_failures_logged()
            self.check_answer(h, message, attacker.take())
        bystander.check(self)

    @settings(IN_MEMORY, max_examples=100)
    @given(st.sampled_from(sorted(E.INTERNAL_TYPES)), st.sampled_from(TOKEN_NAMES), JSON,
           st.booleans())
    def test_internal_types_never_sign(self, mtype: str, token: str, params: Any,
                                       jwt: bool) -> None:
        """QEWD.js answers ``ewd-jwt-encode`` with any payload signed (§9 item 2); never here."""
        h, attacker, tokens, _ = self.fresh()
        for message in ({"type": mtype, "params": {"payload": {"application": "demo",
                                                                "authenticated": True}}},
                        {"type": mtype, "token": tokens[token], "jwt": jwt, "params": params},
                        {"type": mtype, "params": {"jwt": tokens[token], "application": "x"}}):
            [frame] = h.send(attacker, message)
            self.assertEqual(frame["message"]["error"], E.RESERVED_TYPE.format(type=mtype))
            self.assertFalse(any(verifies(h, t) for t in tokens_in(frame)))
        self.check_no_failures_logged()

    @IN_MEMORY
    @given(st.sampled_from(["[", '{"a":']), st.integers(100, 600))
    def test_deep_params_are_echoed(self, opener: str, depth: int) -> None:
        """JSON as deep as the wire lets through goes through a handler and back."""
        h, attacker, tokens, bystander = self.fresh()
        close = "]" if opener == "[" else "}"
        params = json.loads(opener * depth + ("1" if close == "}" else "") + close * depth)
        frames = h.send(attacker, {"type": "echo", "token": tokens["own"], "params": params})
        self.check_no_failures_logged()
        self.assertEqual(frames[-1]["message"]["you sent"], params)
        bystander.check(self)


class SequenceMachine(RuleBasedStateMachine):
    """Random orders of everything a client can do, over several attacker connections."""

    conns = Bundle("conns")
    tokens = Bundle("tokens")

    case: SynchronousTestCase  # set by the test before the run

    def __init__(self) -> None:
        super().__init__()
        self.h = NodeHarness(make_apps(), jwt_secret=SECRET)
        self.bystander = Bystander(self.h)
        first = wire_connection(self.h)
        self.forged = attacker_tokens(self.h, first)
        first.take()
        self.first = first
        self.checks = Checks()
        self.checks.case = self.case

    def _send(self, conn: WireConnection, message: Any) -> list[Any]:
        self.h.node.receive(conn, message)  # must not raise
        frames = conn.take()
        self.checks.check_no_failures_logged()
        if conn.open:
            self.checks.check_answer(self.h, message, frames)
        return frames

    @staticmethod
    def _new_token(frames: list[Any]) -> Any:
        if frames and isinstance(frames[-1].get("message"), dict):
            token = frames[-1]["message"].get("token")
            if isinstance(token, str):
                return token
        return multiple()

    @initialize(target=conns)
    def first_connection(self) -> WireConnection:
        return self.first

    @initialize(target=tokens)
    def forged_tokens(self) -> Any:
        return multiple(*self.forged.values())

    @precondition(lambda self: len(self.h.node.connections) < 6)
    @rule(target=conns)
    def connect(self) -> WireConnection:
        return wire_connection(self.h)

    @rule(conn=consumes(conns))
    def disconnect(self, conn: WireConnection) -> None:
        self.h.disconnect(conn)
        self.case.assertNotIn(conn.id, self.h.node.connections)

    @rule(target=tokens, conn=conns, application=field(APPLICATIONS, JSON), jwt=JSON)
    def register(self, conn: WireConnection, application: Any, jwt: Any) -> Any:
        message = {"type": "ewd-register", "application": application, "jwt": jwt}
        return self._new_token(self._send(conn, message))

    @rule(target=tokens, conn=conns, token=tokens | TOKENS.filter(lambda t: not isinstance(
        t, Symbol)) | JSON, jwt=JSON)
    def reregister(self, conn: WireConnection, token: Any, jwt: Any) -> Any:
        return self._new_token(self._send(conn, {"type": "ewd-reregister", "token": token,
                                                 "jwt": jwt}))

    @rule(target=tokens, conn=conns, token=tokens, params=field(PARAMS, JSON))
    def login(self, conn: WireConnection, token: str, params: Any) -> Any:
        return self._new_token(self._send(conn, {"type": "login", "token": token,
                                                 "params": params}))

    @rule(conn=conns, mtype=TYPES, token=tokens | JSON, params=JSON, jwt=JSON)
    def send(self, conn: WireConnection, mtype: str, token: Any, params: Any, jwt: Any) -> None:
        self._send(conn, {"type": mtype, "token": token, "params": params, "jwt": jwt})

    @rule(conn=conns, message=SMALL_MESSAGES)
    def anything(self, conn: WireConnection, message: Any) -> None:
        self._send(conn, resolve(message, self.forged))

    @rule(seconds=st.sampled_from([0.5, 60, 299, 301, 1201, 5000]))
    def time_passes(self, seconds: float) -> None:
        self.h.clock.advance(seconds)

    @invariant()
    def bystander_unaffected(self) -> None:
        self.bystander.check(self.case)
        self.case.assertEqual(self.h.node.in_flight, 0)

    def teardown(self) -> None:
        for conn in list(self.h.node.connections.values()):
            if conn is not self.bystander.conn:
                self.h.disconnect(conn)
        self.case.assertEqual(list(self.h.node.connections), [self.bystander.conn.id])


class SequenceFuzzTests(SynchronousTestCase):
    def test_random_sequences(self) -> None:
        SequenceMachine.case = self
        run_state_machine_as_test(SequenceMachine, settings=SEQUENCES)


# -- level 1: the framing layer, in memory ------------------------------------------------------

class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bool]] = []
        self.closed = 0


def memory_protocol(h: NodeHarness, protocol: type) -> tuple[Any, _Recorder]:
    """A server protocol bound to ``h``'s node with its output recorded, past the handshake."""
    factory = web.make_factory(protocol, h.node, h.clock, 1 << 20)
    proto = factory.buildProtocol(None)
    rec = _Recorder()
    proto.sendMessage = lambda payload, isBinary=False, *a, **k: rec.sent.append(
        (payload, isBinary))
    # the connection writes open sockets' text frames through sendText / sendFramed
    # (framing.py), and batches broadcasts only where canSendFramed says so: record every
    # frame at once
    proto.state = proto.STATE_OPEN
    proto.sendFramed = lambda payload, frame: rec.sent.append((payload, False))
    proto.sendText = lambda payload: rec.sent.append((payload, False))
    proto.canSendFramed = lambda payload: False

    def close(*a: Any, **k: Any) -> None:
        rec.closed += 1

    proto.sendClose = close
    conn_class = web.EngineIOConnection if protocol is web.EngineIOProtocol else \
        web.PlainConnection
    proto.conn = conn_class(proto, "memoryProtocol000001", "127.0.0.1")
    h.node.connection_opened(proto.conn)
    return proto, rec


NAMESPACES = st.sampled_from(["", "/", "/admin", "/a,b", "/\u00e9"])
ACK_IDS = st.sampled_from(["", "0", "7", "12345678901234567890"])
JSON_TEXT = (SMALL_MESSAGES.map(lambda m: json_text(["ewdjs", m]))
             | JSON.map(json_text) | raw_text(max_size=30))
PLAIN_TEXT = SMALL_MESSAGES.map(json_text) | raw_text(max_size=30)
SOCKETIO = st.builds(lambda t, ns, ack, body: "4" + t + (ns + "," if ns else "") + ack + body,
                     st.sampled_from(list("0123456789x")), NAMESPACES, ACK_IDS, JSON_TEXT)
EIO_TEXT = (SOCKETIO
            | st.builds(lambda t, rest: t + rest, st.sampled_from(list("0123456789")),
                        raw_text(max_size=30))
            | raw_text(max_size=40))
FRAMES = (EIO_TEXT.map(lambda s: (s.encode("utf-8"), False))
          | st.binary(max_size=40).map(lambda b: (b, False))  # bytes: often not UTF-8
          | st.binary(max_size=40).map(lambda b: (b, True)))


class FramingFuzzTests(SynchronousTestCase, Checks):
    """``onMessage`` of both endpoints, called directly with any payload."""

    def setUp(self) -> None:
        self.case = self

    @IN_MEMORY
    @given(st.lists(FRAMES, min_size=1, max_size=8))
    def test_engineio_frames(self, frames: list[tuple[bytes, bool]]) -> None:
        h = NodeHarness(make_apps(), jwt_secret=SECRET)
        bystander = Bystander(h)
        proto, rec = memory_protocol(h, web.EngineIOProtocol)
        for payload, is_binary in frames:
            proto.onMessage(payload, is_binary)  # must not raise
            self.check_no_failures_logged()
            sent, rec.sent = rec.sent, []
            for data, binary in sent:
                self.assertFalse(binary)
                wire.decode(data.decode("utf-8"))  # every frame sent is a valid text packet
            self.check_engineio_answer(h, payload, is_binary, [d.decode() for d, _ in sent])
        bystander.check(self)

    def check_engineio_answer(self, h: NodeHarness, payload: bytes, is_binary: bool,
                              sent: list[str]) -> None:
        def error_frames() -> list[Any]:
            return [json.loads(s[2:])[1] for s in sent if s.startswith("42")]

        if is_binary:
            self.assertEqual(error_frames(), [{"type": "error", "finished": True,
                                               "message": {"error": E.BINARY_FRAME}}])
            return
        try:
            packet = wire.decode(payload.decode("utf-8"))
        except (UnicodeDecodeError, wire.WireError):
            [frame] = error_frames()
            self.assertEqual(frame["type"], "error")
            self.assertEqual(len(sent), 1)
            return
        if packet.kind == "ping":
            self.assertEqual(sent, ["3" + packet.data])
        elif packet.kind == "event" and packet.namespace != "/":
            self.assertEqual(sent, [f'44{packet.namespace},"{E.BAD_NAMESPACE}"'])
        elif packet.kind == "event" and packet.name != "ewdjs":
            [frame] = error_frames()
            self.assertTrue(frame["message"]["error"].startswith("Unknown socket.io event "))
        elif packet.kind == "event":
            message = packet.args[0] if packet.args else None
            self.check_answer(h, message, error_frames())
        elif packet.kind == "binary":
            self.assertEqual(len(error_frames()), 1)
        elif packet.kind == "connect" and packet.namespace != "/":
            self.assertEqual(sent, [f'44{packet.namespace},"{E.BAD_NAMESPACE}"'])
        else:  # pong, noop, upgrade, ack, sio-error, connect "/", close, disconnect
            self.assertEqual(sent, [])

    @IN_MEMORY
    @given(st.lists(PLAIN_TEXT.map(lambda s: s.encode("utf-8")) | st.binary(max_size=40),
                    min_size=1, max_size=8), st.booleans())
    def test_plain_frames(self, payloads: list[bytes], is_binary: bool) -> None:
        h = NodeHarness(make_apps(), jwt_secret=SECRET)
        bystander = Bystander(h)
        proto, rec = memory_protocol(h, web.PlainProtocol)
        for payload in payloads:
            proto.onMessage(payload, is_binary)
            self.check_no_failures_logged()
            sent, rec.sent = rec.sent, []
            replies = [json.loads(d) for d, _ in sent]
            if is_binary:
                self.assertEqual([r["message"]["error"] for r in replies], [E.BINARY_FRAME])
                continue
            try:
                message = wire.decode_plain(payload.decode("utf-8"))
            except (UnicodeDecodeError, wire.WireError):
                self.assertEqual(len(replies), 1)
                self.assertEqual(replies[0]["type"], "error")
                continue
            self.check_answer(h, message, replies)
        self.assertEqual(rec.closed, 0)
        bystander.check(self)



SURROGATES = ("\ud800", "a\udfffb", "\udc00" * 3)


class LoneSurrogateTests(SynchronousTestCase, Checks):
    """A JSON escape such as ``\\ud800`` is valid UTF-8 on the wire and decodes to a string with
    a lone surrogate, which has no UTF-8 form. Found by this suite (issue 7): when such a string
    was copied into a frame's envelope (``type``, ``ms_requestId``, a socket.io event name), the
    reply and the node's fallback both failed to encode, the exception left ``onMessage`` and
    the client was dropped with no answer. Fixed in d2acf31: the node escapes lone surrogates on
    the way out, as ES2019 ``JSON.stringify`` does; these tests keep it fixed."""

    def setUp(self) -> None:
        self.case = self
        self.h = NodeHarness(make_apps(), jwt_secret=SECRET)
        self.conn = wire_connection(self.h)
        self.token = self.h.register(self.conn, "demo")

    def answered(self, message: dict[str, Any]) -> list[Any]:
        self.h.node.receive(self.conn, message)
        self.check_no_failures_logged()
        frames = self.conn.take()
        self.check_answer(self.h, message, frames)
        return frames

    def test_type(self) -> None:
        for s in SURROGATES:
            [f] = self.answered({"type": s, "token": self.token})
            self.assertEqual(f["message"]["error"], "Handler not defined for demo messages of "
                             "type " + s)
            [f] = self.answered({"type": s})
            self.assertEqual(f["message"]["error"], E.MISSING_AUTH)

    def test_string_ms_request_id(self) -> None:
        for s in SURROGATES:
            [f] = self.answered({"type": "echo", "token": self.token, "ms_requestId": s})
            self.assertEqual((f["ms_requestId"], f["message"]["ms_requestId"]), (s, s))
            [f] = self.answered({"type": "echo", "ms_requestId": s})
            self.assertEqual(f["ms_requestId"], s)

    def test_params_and_application(self) -> None:
        for s in SURROGATES:
            [f] = self.answered({"type": "echo", "token": self.token, "params": s})
            self.assertEqual(f["message"]["you sent"], s)
            for jwt in (True, False):
                [f] = self.answered({"type": "ewd-register", "application": s, "jwt": jwt})
                [reply] = self.h.send(self.conn, {"type": "echo",
                                                  "token": f["message"]["token"]})
                self.assertEqual(reply["message"]["error"],
                                 E.UNABLE_TO_LOAD.format(application=s))

    def test_event_name(self) -> None:
        proto, rec = memory_protocol(self.h, web.EngineIOProtocol)
        proto.onMessage(b'42["\\ud800",{}]', False)
        [(data, _)] = rec.sent
        self.assertEqual(json.loads(data[2:])[1]["message"]["error"],
                         E.UNKNOWN_EVENT.format(name="\ud800"))

    def test_plain_endpoint_type(self) -> None:
        proto, rec = memory_protocol(self.h, web.PlainProtocol)
        proto.onMessage(b'{"type":"\\ud800"}', False)
        [(data, _)] = rec.sent
        self.assertEqual(json.loads(data), {"type": "\ud800", "finished": True, "message": {
            "error": E.MISSING_AUTH, "disconnect": True}, "responseTime": "0ms"})


class RetentionTests(SynchronousTestCase):
    """What a client sends must not stay in the node's memory after its connection is gone,
    beyond small per-registration state (docs/reliability.md lists the bounded caches).

    ``ewd-register`` takes an application name of at most ``MAX_APPLICATION_LENGTH`` (128)
    characters and refuses a longer one at the door (docs/errors.md), so a client cannot
    make the node keep a large name: neither in TokenCodec's verified-token cache (JWT
    mode) nor in a ServerSession (session-token mode)."""

    def retained_after(self, jwt: bool, size: int, registrations: int = 20
                       ) -> tuple[float, list[Any]]:
        """(MiB still allocated, final frames) after ``registrations`` ``ewd-register``
        messages whose application name is ``size`` characters (each different), from one
        connection that then closes."""
        h = NodeHarness(make_apps(), jwt_secret=SECRET)
        conn = h.connect()
        finals = []
        gc.collect()
        tracemalloc.start()
        try:
            for i in range(registrations):
                name = f"{i:03d}" + "x" * (size - 3)
                [frame] = h.send(conn, {"type": "ewd-register", "application": name, "jwt": jwt})
                finals.append(frame)
                del name, frame
            h.disconnect(conn)
            gc.collect()
            return tracemalloc.get_traced_memory()[0] / 2**20, finals
        finally:
            tracemalloc.stop()

    def assert_registered(self, finals: list[Any], jwt: bool) -> None:
        for frame in finals:
            self.assertEqual((frame["type"], frame["finished"]), ("ewd-register", True))
            self.assertIsInstance(frame["message"]["token"], str)
            self.assertEqual(frame["message"]["token"].count("."), 2 if jwt else 0)

    def assert_refused(self, finals: list[Any]) -> None:
        for frame in finals:
            self.assertEqual(frame["message"], {"error": E.BAD_APPLICATION})

    def test_longest_names_retain_little(self) -> None:
        """20 registrations with the longest name accepted, in both modes: each gets its
        token, and less than 1 MiB stays behind once the connection is gone."""
        for jwt in (True, False):
            retained, finals = self.retained_after(jwt, E.MAX_APPLICATION_LENGTH)
            self.assert_registered(finals, jwt)
            self.assertLess(retained, 1)

    def test_huge_names_are_refused_and_not_kept(self) -> None:
        """1 MB names (up to maxMessageSize a client could send 20 MB of them): every one is
        refused with the exact docs/errors.md text, and none of them is kept."""
        for jwt in (True, False):
            retained, finals = self.retained_after(jwt, 1_000_000)
            self.assert_refused(finals)
            self.assertLess(retained, 1)

    def test_one_character_over_the_limit_is_refused(self) -> None:
        _, finals = self.retained_after(True, E.MAX_APPLICATION_LENGTH + 1, registrations=1)
        self.assert_refused(finals)

    def test_issued_tokens_are_accepted_by_every_node(self) -> None:
        """A token this node hands out, even for the longest application name, is one a node
        sharing the secret accepts (a 13,000-character name would give a token other nodes
        refuse as too long: the name limit keeps that from happening)."""
        h = NodeHarness(make_apps(), jwt_secret=SECRET)
        conn = h.connect()
        other_node = TokenCodec(SECRET, clock=h.clock)
        name = "x" * E.MAX_APPLICATION_LENGTH
        [frame] = h.send(conn, {"type": "ewd-register", "application": name, "jwt": True})
        payload = other_node.decode(frame["message"]["token"])
        self.assertEqual(payload["application"], name)


# -- level 2: real loopback ------------------------------------------------------------------

CORPUS = [
    '42["ewdjs",{"type":"ewd-register","application":"demo","jwt":true}]',
    '42["ewdjs",{"type":"echo","token":"a.b.c","params":{"x":[1,2,{"y":null}]}}]',
    ('42["ewdjs",{"type":"login","token":"00000000-0000-4000-8000-000000000000",'
     '"params":{"username":"rob","password":"secret"}}]'),
    '42["ewdjs",{"type":"ewd-jwt-encode","params":{"payload":{"authenticated":true}}}]',
    '42["ewdjs",{"type":"ewd-reregister","token":"x.y.z","jwt":true}]',
    '42["ewdjs",{"type":"ewd-register","application":"os"}]',
    '42["ewdjs",null]',
    '42["other",{"type":"x"}]',
    '42/admin,["ewdjs",{"type":"x"}]',
    '4212["ewdjs",{"type":"x"}]',
    '42["ewdjs",{"type":"\\ud800","ms_requestId":"\\udfff","application":"\\udc00"}]',
    '42["\\ud83d",{}]',
    '43["ewdjs"]', '44"boom"', '451-["ewdjs",{"_placeholder":true,"num":0}]',
    "2", "3", "5", "6", "40", "40/admin,", "0{}", "7", "", "4", "49",
]
MUTATION_CHARS = '{}[]",:0123456789.-eE\\/ntrufalsxyud42\x00\t\n\u00e9\u20ac\U0001f600'


def mutate(rng: random.Random, frame: str) -> str:
    """One to three random edits of ``frame`` (delete, insert, replace, duplicate, truncate)."""
    s = frame
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        i = rng.randrange(len(s) + 1)
        if op == 0 and s:
            s = s[:i] + s[i + 1:]
        elif op == 1:
            s = s[:i] + rng.choice(MUTATION_CHARS) + s[i:]
        elif op == 2 and s:
            j = min(len(s) - 1, i)
            s = s[:j] + rng.choice(MUTATION_CHARS) + s[j + 1:]
        elif op == 3:
            j = rng.randint(i, len(s))
            s = s[:j] + s[i:j] + s[j:]
        elif op == 4:
            s = s[:i]
        else:
            s = s[:2] + "[" * rng.randint(1, 40) + s[2:]
    return s


def loopback_corpus(seed: int, n: int) -> list[str]:
    """``n`` hostile frames, the same for a given seed. None holds a working token, so every
    answer is written at once, before the probe's."""
    rng = random.Random(seed)
    out = list(CORPUS)
    while len(out) < n:
        out.append(mutate(rng, rng.choice(CORPUS)))
    return out[:n]


def must_answer(text: str, plain: bool) -> bool:
    """Whether the node owes an ewdjs answer to this frame (by the decoder's own reading)."""
    try:
        if plain:
            return True  # every /ws frame is a message or a JSON error
        packet = wire.decode(text)
    except wire.WireError:
        return True
    if packet.kind == "event":
        return packet.namespace == "/"
    return packet.kind == "binary"


class LoopbackFuzzTests(TestCase):
    timeout = 60

    async def bystander(self, node: Any) -> Any:
        c = EIOClient(eio_url(node))
        self.addCleanup(c.close)
        await c.handshake()
        c.emit({"type": "ewd-register", "application": "demo", "jwt": True})
        c.token = (await c.message())["message"]["token"]
        return c

    async def bystander_check(self, c: Any, n: int) -> None:
        c.emit({"type": "echo", "token": c.token, "params": n})
        reply = await c.message()
        self.assertEqual(reply["message"]["you sent"], n)
        self.assertEqual(c.frames.pending, [])  # nothing else reached it
        c.token = reply["message"]["token"]

    async def run_corpus(self, plain: bool) -> None:
        node = start_node(self)
        good = await self.bystander(node)
        c = PlainClient(plain_url(node)) if plain else EIOClient(eio_url(node))
        self.addCleanup(c.close)
        if plain:
            await c.opened
        else:
            await c.handshake()
        for data in (b"", b"\x00\xff", b'42["ewdjs",{"type":"x"}]'):  # binary frames
            c.send_binary(data)
            got = await c.next()
            reply = json.loads(got if plain else got[2:])
            self.assertEqual(reply if plain else reply[1], {
                "type": "error", "finished": True, "message": {"error": E.BINARY_FRAME}})
        corpus = loopback_corpus(7 if plain else 3, 200)
        if plain:
            corpus = [f.removeprefix("42") for f in corpus]
        owed = 0
        for i, frame in enumerate(corpus):
            c.send_text(frame)
            probe = f"probe{i}"
            if plain:
                c.emit({"type": probe})  # answered at once: Missing authorization header
            else:
                c.send_text("2" + probe)
            answers: list[Any] = []
            while True:
                got = await c.next()
                self.assertIsInstance(got, str, f"frame {i} {frame!r}: binary reply")
                if plain:
                    reply = json.loads(got)
                    if reply.get("type") == probe:
                        break
                    answers.append(reply)
                else:
                    if got == "3" + probe:
                        break
                    wire.decode(got)  # a valid Engine.IO packet
                    if got.startswith("42"):
                        answers.append(json.loads(got[2:])[1])
            self.assertFalse(c.closed.called, f"frame {i} {frame!r} closed the connection")
            if must_answer(frame, plain):
                owed += 1
                self.assertTrue(answers, f"frame {i} {frame!r}: no answer")
                for a in answers:
                    self.assertNotEqual((a.get("message") or {}).get("error"),
                                        "Internal server error", frame)
            if i % 20 == 0:
                await self.bystander_check(good, i)
        await self.bystander_check(good, -1)
        self.assertGreater(owed, 100)  # the corpus really is mostly frames that need an answer
        self.assertEqual(len(node.node.connections), 2)

    def test_engineio_corpus(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self.run_corpus(plain=False))

    def test_plain_corpus(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self.run_corpus(plain=True))

    async def _invalid_utf8(self, plain: bool) -> None:
        node = start_node(self)
        good = await self.bystander(node)
        c = PlainClient(plain_url(node)) if plain else EIOClient(eio_url(node))
        self.addCleanup(c.close)
        await (c.opened if plain else c.handshake())
        # A text frame whose payload is not UTF-8: Autobahn's client does not validate what
        # it sends, the server does (RFC 6455 §8.1) and fails the connection with 1007.
        c.proto.sendMessage(b'42["ewdjs",{"type":"\xff\xfe"}]', isBinary=False)
        code, _ = await c.closed
        self.assertEqual(code, 1007)
        await self.bystander_check(good, 1)
        self.assertEqual(len(node.node.connections), 1)

    def test_invalid_utf8_engineio(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._invalid_utf8(plain=False))

    def test_invalid_utf8_plain(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._invalid_utf8(plain=True))

    async def _deep_and_huge(self) -> None:
        node = start_node(self)
        good = await self.bystander(node)
        c = await self.bystander(node)
        for depth in (100, 500, 900, 950, 975, 990, 1000, 5000, 100_000):
            nested = "[" * depth + "]" * depth
            c.send_text(f'42["ewdjs",{{"type":"echo","token":"{c.token}","params":{nested}}}]')
            reply = await c.message()
            if reply["type"] == "echo":  # parsed: the handler's echo comes back whole
                self.assertEqual(json.dumps(reply["message"]["you sent"]).count("["), depth)
                c.token = reply["message"]["token"]
            else:
                self.assertEqual(reply["message"]["error"], "Invalid JSON: nested too deeply")
        for params in ("x" * 900_000, list(range(100_000)), {str(i): i for i in range(50_000)}):
            c.emit({"type": "echo", "token": c.token, "params": params})
            reply = await c.message()
            self.assertEqual(reply["message"]["you sent"], params)
            c.token = reply["message"]["token"]
        await self.bystander_check(good, 2)

    def test_deep_and_huge_json(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._deep_and_huge())


class LoopbackLoneSurrogateTests(TestCase):
    """LoneSurrogateTests on a real socket: answered, in order, connection kept."""

    timeout = 10

    async def _frame(self, frame: str) -> None:
        """Send ``frame`` then a probe; the frame's answer must come before the probe's.

        With a token in the frame the answer comes from a handler on the (single) pool thread,
        so the probe is another handler request; otherwise it is an Engine.IO ping.
        """
        node = start_node(self, poolSize=1)
        c = EIOClient(eio_url(node))
        self.addCleanup(c.close)
        await c.handshake()
        if "TOKEN" in frame:
            c.emit({"type": "ewd-register", "application": "demo", "jwt": True})
            token = (await c.message())["message"]["token"]
            c.send_text(frame.replace("TOKEN", token))
            c.emit({"type": "echo", "token": token, "params": "probe"})
            probe = '42["ewdjs",{"type":"echo","finished":true,"message":{"you sent":"probe"'
        else:
            c.send_text(frame)
            c.send_text("2probe")
            probe = "3probe"
        for expected in ("42", probe):  # the frame's answer, then the probe's
            got = await c.next()
            self.assertFalse(isinstance(got, Closed), f"the connection was dropped: {got}")
            self.assertTrue(got.startswith(expected), got)
            self.assertFalse(got.startswith(probe) and expected != probe, "no answer: " + got)

    def test_type(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._frame('42["ewdjs",{"type":"\\ud800"}]'))

    def test_event_name(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._frame('42["\\ud800",{}]'))

    def test_ms_request_id(self) -> defer.Deferred[None]:
        """Before the fix the handler ran, its reply could not be sent and the request had
        already ended: the client never got an answer."""
        return defer.ensureDeferred(self._frame(
            '42["ewdjs",{"type":"echo","token":"TOKEN","ms_requestId":"\\ud800"}]'))
