# -*- test-case-name: tests.test_tokens -*-
"""
Tests for qewd_twisted.tokens: QEWD-compatible JWTs (docs/protocol.md §3) and our fixes (§9).

Vectors come from docs/protocol.md §3.3 and from real QEWD.js 2.52.3 tokens captured by the reference
peer (../shared/qewd-peer/transcripts/tokens.json, secret ``someSecret123``). Those tokens are
public test data and are copied here; they have expired, so the tests use a ``Clock`` set to
their ``iat``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt as pyjwt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted.auth.sessions import JWTSession, check_timeout
from qewd_twisted.auth.tokens import (
    GCMSecretCipher,
    ERRORS,
    SecretCipher,
    TokenCodec,
    TokenError,
    evp_bytes_to_key,
)

SECRET = "someSecret123"

# §3.3 test vectors.
KEY_HEX = "9a2220f5acab42a8550dbbe873bf387f07620adf022fbb83e9c73ce14ab6f4a2"
IV_HEX = "328384fcec5344814364796db73b081c"
PLAIN = {"socketId": "abc123", "ipAddress": "::ffff:127.0.0.1", "authenticated": False}
PLAIN_TEXT = '{"socketId":"abc123","ipAddress":"::ffff:127.0.0.1","authenticated":false}'
CIPHER_HEX = (
    "366b70136df6b4a96f516f5859278f04b4da3d0046792d3b3ea0fc5321d27b4c8c77c7e80f297622ccdb2d77"
    "cb82abcce9897d04c871c7b62b9ab168f0838d34c13aba8bdc3dbe10b7424c4997c1198c"
)
VECTOR_PAYLOAD = {
    "exp": 1700000300,
    "iat": 1700000000,
    "iss": "qewd.jwt",
    "application": "myApp",
    "timeout": 300,
    "qewd": CIPHER_HEX,
}
HEADER_SEGMENT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9"
VECTOR_SIGNATURE = "1jGxJ2e3GfcNfg7DQo6Fn5oFCFl5vhMFU5RkYiWr-IE"
VECTOR_NOW = 1700000000

# Real QEWD.js tokens (qewd-peer README "JWT layout"; tokens.json).
QEWD_REGISTER = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3OTU4MDE3MzYsImlhdCI6MTc5NTgwMTQzNiwiaXNzIj"
    "oicWV3ZC5qd3QiLCJhcHBsaWNhdGlvbiI6Imp3dCIsInRpbWVvdXQiOjMwMCwicWV3ZCI6IjU4M2NkZWE0MTE2MjZk"
    "MzY2NTRhYTM3NDJiOTQ0MzI2MGJlOTM5NjA4ZGFlNGZlMTQ5N2U1YTBkNzhhZTFlYTRiYjI5MDhiOTAwOGYxYzZhY2"
    "FkNzU0MDY1ZDdlNzI4ZjkwOGE0YjdiMDliODA5OTAwNjQ0ZWRhNDBkMzQyY2ZmOTUxMzJhZWRkOGNhYzI3ZTM1ZTcw"
    "MzIwYmEzNzg5YmJkYmI3YTVhNWU1MDBmODVkOTZhYzU1ZTljNjc0M2UzMyJ9.f2aWuTD54Yr0sUYaoHYcWhL1UeUzy"
    "qqQWD3sqZcAiZM"
)
QEWD_REGISTER_SECRETS = {
    "socketId": "IKHqGWwBlR1LLS2QAAAC",
    "ipAddress": "127.0.0.1",
    "authenticated": False,
}
QEWD_LOGIN = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3OTU4MDE0OTcsImlhdCI6MTc5NTgwMTQzNywiaXNzIj"
    "oicWV3ZC5qd3QiLCJhcHBsaWNhdGlvbiI6Imp3dCIsInRpbWVvdXQiOjYwLCJxZXdkIjoiMDdmOGNjOWQ1Y2NhZmRi"
    "NjZmNjFhM2E4NDI2YzdiMTYxZTJjNzFkNTM5MDZkYzBjZjZhMDEyOWI3YzMxZDEyYzI1ODkwOTE0NDU1MWI5OWNiMD"
    "djYTVmYjkxNGU0MWU3ZWE2MDU2MjJmZGM2YjFiYTFkODMxNTI5Mjk4MDU1NTZlODE4NGJjOWI0ZjUzZmEyMWMzOGQy"
    "YWViYTZjZjliMjFiMGUyMzY5N2M3ZDA5ZDg2ZTVjZWQ5MzE3ODU1Y2FmMzljOWU0MWZjY2VkNWUzNjRiZGMwNjA5NG"
    "U5MTgxMWYiLCJ1c2VyVGV4dCI6IlJvYiJ9.MUJdHhIDDmNPGT8QvTuyTNOOMLheFhv0YfTqJguepZo"
)
QEWD_LOGIN_SECRETS = {
    "socketId": "Af9fvPVjOgl_w5KYAAAD",
    "ipAddress": "127.0.0.1",
    "authenticated": True,
    "username": "rob",
}
QEWD_FORWARDED = (  # the master's rewrite (application test-app) of a browser token, §4.4 step 2
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3OTU4MDE3MzQsImlhdCI6MTc5NTgwMTQzNCwiaXNzIj"
    "oicWV3ZC5qd3QiLCJhcHBsaWNhdGlvbiI6InRlc3QtYXBwIiwidGltZW91dCI6MzAwLCJxZXdkIjoiNzFmOGYwMGM2"
    "M2EzZmJmN2E4ZjljNmZjYWQzNTI5N2I1MDk2NmNiNWYyYmFkYjgyODMxMTg1YjczYjJhODA0Y2ViOGQ3OWJiMDYwYT"
    "JiYzc5ZTIxOTc1OGI0ODIxMDllYzIyOWE4MWI1NjdhMjFlYTVkODVjOTJmOGJmZTU2ZGEyZjg3YjNiYWM2M2Q3NGM4"
    "OTAzOTAwY2NlN2E4ZWE2YWZiMjNlMmVlZTZlYmU5MWI1YjBlYzhkOTBmNWViMmZhIn0.p4C4h22HY7t_wtA2wVrVH8"
    "aS9x3T_rzx22jSZYSdvZM"
)

# Deterministic Hypothesis runs (no example database, fixed seed): a failure reproduces.
HYPOTHESIS = settings(max_examples=100, deadline=None, derandomize=True, database=None)
FUZZ = settings(HYPOTHESIS, max_examples=300)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(obj: object) -> str:
    return b64(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def make_token(header: object, payload: object, secret: str = SECRET, digest=hashlib.sha256) -> str:
    """A hand-made JWT: any header, any payload, HMAC with ``digest``."""
    signing_input = segment(header) + "." + segment(payload)
    mac = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return signing_input + "." + b64(mac)


def noncanonical(seg: str) -> str:
    """Another spelling of the same bytes: stray low bits in the last character."""
    raw = base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for c in alphabet:
        other = seg[:-1] + c
        if other != seg and base64.urlsafe_b64decode(other + "=" * (-len(seg) % 4)) == raw:
            return other
    raise AssertionError("segment length has a single spelling")


def split(token: str) -> list[str]:
    return token.split(".")


def claims_of(token: str) -> dict:
    body = split(token)[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def clock_at(seconds: float) -> Clock:
    clock = Clock()
    clock.advance(seconds)
    return clock


def codec_at(seconds: float = VECTOR_NOW, **kwargs) -> TokenCodec:
    return TokenCodec(kwargs.pop("secret", SECRET), clock=clock_at(seconds), **kwargs)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
secret_dicts = st.dictionaries(st.text(max_size=16), json_values, max_size=8)
times = st.integers(VECTOR_NOW - 1000, VECTOR_NOW + 1000) | st.floats() | json_values
qewd_values = st.one_of(
    st.just(CIPHER_HEX),
    secret_dicts.map(SecretCipher(SECRET).encrypt),
    secret_dicts.map(SecretCipher(SECRET).encrypt),
    st.text(alphabet="0123456789abcdef", max_size=64),
    json_values,
)


class EvpBytesToKeyTests(SynchronousTestCase):
    def test_vector(self) -> None:
        """§3.3: key and IV for ``someSecret123``."""
        key, iv = evp_bytes_to_key(b"someSecret123")
        self.assertEqual(key.hex(), KEY_HEX)
        self.assertEqual(iv.hex(), IV_HEX)

    def test_md5_chain(self) -> None:
        """D1 = MD5(secret), D2 = MD5(D1 || secret), D3 = MD5(D2 || secret)."""
        d1 = hashlib.md5(b"pw").digest()
        d2 = hashlib.md5(d1 + b"pw").digest()
        d3 = hashlib.md5(d2 + b"pw").digest()
        self.assertEqual(evp_bytes_to_key(b"pw"), (d1 + d2, d3))
        self.assertEqual(evp_bytes_to_key(b"pw", 16, 8), (d1, d2[:8]))


class SecretCipherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cipher = SecretCipher(SECRET)

    def test_encrypt_vector(self) -> None:
        """§3.3: the known plaintext gives the known lowercase hex."""
        self.assertEqual(self.cipher.encrypt(PLAIN), CIPHER_HEX)

    def test_decrypt_vector(self) -> None:
        self.assertEqual(self.cipher.decrypt(CIPHER_HEX), PLAIN)
        # Node accepts upper-case hex too.
        self.assertEqual(self.cipher.decrypt(CIPHER_HEX.upper()), PLAIN)

    def test_plaintext_is_js_json(self) -> None:
        """The plaintext is JSON.stringify's: compact, key order kept (checked with raw AES)."""
        key, iv = evp_bytes_to_key(SECRET.encode())
        dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        raw = dec.update(bytes.fromhex(self.cipher.encrypt(PLAIN))) + dec.finalize()
        self.assertEqual(raw[: -raw[-1]].decode(), PLAIN_TEXT)

    def test_non_ascii_kept_as_utf8(self) -> None:
        """``é`` is written as two UTF-8 bytes, not ``\\u00e9`` (JSON.stringify does not escape)."""
        # {"a":"éééééééé"} is 8 + 16 = 24 bytes: two AES blocks. Escaped it would be four.
        hexed = self.cipher.encrypt({"a": "é" * 8})
        self.assertEqual(len(hexed), 64)
        self.assertEqual(self.cipher.decrypt(hexed), {"a": "é" * 8})

    def test_lone_surrogate(self) -> None:
        """A string UTF-8 cannot hold is escaped, as ES2019 JSON.stringify does."""
        obj = {"s": "a\ud800b"}
        self.assertEqual(self.cipher.decrypt(self.cipher.encrypt(obj)), obj)

    def test_deterministic(self) -> None:
        """§3.3: the IV is fixed per secret, so the same object gives the same hex."""
        self.assertEqual(self.cipher.encrypt({"x": 1}), self.cipher.encrypt({"x": 1}))
        self.assertNotEqual(SecretCipher("other").encrypt({"x": 1}), self.cipher.encrypt({"x": 1}))

    def test_not_json_able(self) -> None:
        self.assertRaises(ValueError, self.cipher.encrypt, {"x": float("nan")})
        self.assertRaises(TypeError, self.cipher.encrypt, {"x": object()})

    def test_decrypt_errors(self) -> None:
        """Bad hex, bad length, wrong secret, non-JSON plaintext: all ValueError."""
        key, iv = evp_bytes_to_key(SECRET.encode())
        enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        not_json = (enc.update(b"not json, secret" + b"\x10" * 16) + enc.finalize()).hex()
        for bad in [
            "",
            "zz",
            "abc",
            "00" * 15,
            "00" * 16,
            CIPHER_HEX[:-2],
            SecretCipher("other").encrypt(PLAIN),
            not_json,
        ]:
            e = self.assertRaises(ValueError, self.cipher.decrypt, bad)
            self.assertNotIn("secret", str(e).replace("wrong secret", ""))
        self.assertRaises(TypeError, self.cipher.decrypt, None)
        self.assertRaises(TypeError, self.cipher.decrypt, b"00")

    def test_empty_secret(self) -> None:
        self.assertRaises(ValueError, SecretCipher, "")
        self.assertRaises(ValueError, SecretCipher, None)

    @HYPOTHESIS
    @given(secret_dicts)
    def test_round_trip(self, secrets: dict) -> None:
        """Any JSON-able dict of secret claims round-trips, and encryption is deterministic."""
        hexed = self.cipher.encrypt(secrets)
        self.assertEqual(hexed, hexed.lower())
        self.assertEqual(self.cipher.decrypt(hexed), secrets)
        self.assertEqual(self.cipher.encrypt(secrets), hexed)


class TokenErrorTests(SynchronousTestCase):
    def test_text(self) -> None:
        """§3.4 step 1: ``Invalid JWT: `` + the JavaScript error's text."""
        e = TokenError("Token expired")
        self.assertEqual(str(e), "Invalid JWT: Error: Token expired")
        self.assertEqual(e.reason, "Token expired")
        self.assertEqual(e.kind, "Error")
        s = TokenError("Invalid JSON in JWT payload", "SyntaxError")
        self.assertEqual(str(s), "Invalid JWT: SyntaxError: Invalid JSON in JWT payload")

    def test_errors_documented(self) -> None:
        """Every extra reason is listed in ERRORS by its client text."""
        for text, why in ERRORS.items():
            self.assertTrue(
                text.startswith(("Invalid JWT: Error: ", "Invalid JWT: SyntaxError: ")), text
            )
            self.assertTrue(why)
        self.assertIn("Invalid JWT: Error: Invalid qewd claim", ERRORS)
        self.assertIn("Invalid JWT: Error: Token too long", ERRORS)
        self.assertIn("Invalid JWT: SyntaxError: JWT payload is not a JSON object", ERRORS)


class CodecConfigTests(SynchronousTestCase):
    def test_algorithms(self) -> None:
        self.assertEqual(TokenCodec(SECRET).algorithms, ("HS256",))
        self.assertEqual(TokenCodec(SECRET, "HS512").algorithms, ("HS512",))
        self.assertEqual(TokenCodec(SECRET, ["HS256", "HS384"]).algorithms, ("HS256", "HS384"))
        for bad in [(), ("RS256",), ("none",), ("HS256", "ES256")]:
            self.assertRaises(ValueError, TokenCodec, SECRET, bad)

    def test_bad_arguments(self) -> None:
        self.assertRaises(ValueError, TokenCodec, "")
        self.assertRaises(ValueError, TokenCodec, SECRET, previous_secrets=[""])
        self.assertRaises(ValueError, TokenCodec, SECRET, initial_timeout=0)
        self.assertRaises(ValueError, TokenCodec, SECRET, max_token_length=0)

    def test_secret_not_in_errors(self) -> None:
        e = self.assertRaises(ValueError, TokenCodec, "", previous_secrets=["hunter2"])
        self.assertNotIn("hunter2", str(e))

    def test_default_clock_is_lazy(self) -> None:
        """With no clock the global reactor is looked up at first use, not at construction."""
        from twisted.internet import reactor

        codec = TokenCodec(SECRET)
        self.assertIsNone(codec._clock)
        now = int(reactor.seconds())
        token = codec.register_token("app", {})
        self.assertIs(codec._clock, reactor)
        self.assertIn(codec.decode(token)["iat"], (now, now + 1))


class EncodeTests(SynchronousTestCase):
    def test_vector(self) -> None:
        """§3.3: the documented payload signs to the documented JWT, byte for byte."""
        token = codec_at().encode(VECTOR_PAYLOAD)
        header, _, signature = split(token)
        self.assertEqual(header, HEADER_SEGMENT)
        self.assertEqual(signature, VECTOR_SIGNATURE)
        self.assertEqual(claims_of(token), VECTOR_PAYLOAD)
        self.assertNotIn("=", token)

    def test_header(self) -> None:
        """§3.1: exactly ``{"typ":"JWT","alg":"HS256"}``."""
        header = split(codec_at().encode({}))[0]
        self.assertEqual(base64.urlsafe_b64decode(header + "=="), b'{"typ":"JWT","alg":"HS256"}')

    def test_js_json_payload(self) -> None:
        """Compact JSON, key order kept, non-ASCII as UTF-8."""
        token = codec_at().encode({"b": 1, "a": "é"})
        body = split(token)[1]
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        self.assertEqual(raw, '{"b":1,"a":"é"}'.encode())

    def test_pyjwt_agrees(self) -> None:
        """A standard library verifies what we sign."""
        secret = "a-long-enough-secret-for-pyjwt-warnings-0123456789"
        token = TokenCodec(secret).encode({"x": 1})
        self.assertEqual(pyjwt.decode(token, secret, algorithms=["HS256"]), {"x": 1})

    def test_refuses_session(self) -> None:
        """encode() would publish secret claims in clear, so a JWTSession is refused."""
        session = JWTSession({"username": "rob"}, secret_names={"username"})
        self.assertRaises(TypeError, codec_at().encode, session)
        self.assertRaises(TypeError, codec_at().encode, ["not", "a", "mapping"])


class DecodeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = clock_at(VECTOR_NOW)
        self.codec = TokenCodec(SECRET, clock=self.clock)
        self.token = self.codec.encode(VECTOR_PAYLOAD)

    def assertReason(
        self, token: object, reason: str, kind: str = "Error", codec: TokenCodec | None = None
    ) -> TokenError:
        e = self.assertRaises(TokenError, (codec or self.codec).decode, token)
        self.assertEqual((e.kind, e.reason), (kind, reason))
        self.assertEqual(str(e), f"Invalid JWT: {kind}: {reason}")
        if isinstance(token, str) and len(token) > 3:
            self.assertNotIn(token, str(e))
        self.assertNotIn(SECRET, str(e))
        return e

    def test_valid(self) -> None:
        payload = self.codec.decode(self.token)
        self.assertEqual(payload, VECTOR_PAYLOAD)
        self.assertEqual(list(payload), list(VECTOR_PAYLOAD))

    def test_real_qewd_tokens(self) -> None:
        """Tokens minted by QEWD.js verify and decrypt (qewd-peer tokens.json)."""
        for token, secrets, iat in [
            (QEWD_REGISTER, QEWD_REGISTER_SECRETS, 1795801436),
            (QEWD_LOGIN, QEWD_LOGIN_SECRETS, 1795801437),
        ]:
            codec = codec_at(iat)
            payload = codec.decode(token)
            self.assertEqual(
                list(payload)[:6], ["exp", "iat", "iss", "application", "timeout", "qewd"]
            )
            self.assertEqual(SecretCipher(SECRET).decrypt(payload["qewd"]), secrets)
            # Re-encrypting and re-signing reproduce QEWD.js's bytes exactly.
            self.assertEqual(SecretCipher(SECRET).encrypt(secrets), payload["qewd"])
            self.assertEqual(codec.encode(payload), token)
        self.assertEqual(codec_at(1795801434).decode(QEWD_FORWARDED)["application"], "test-app")

    def test_real_qewd_token_expired(self) -> None:
        self.assertReason(QEWD_LOGIN, "Token expired", codec=codec_at(1795801497 + 1))

    def test_no_token(self) -> None:
        for token in [None, "", 0, 123, [], {"a": 1}, b"abc.def.ghi"]:
            self.assertReason(token, "No token supplied")

    def test_segments(self) -> None:
        for token in ["abc", "a.b", "a.b.c.d", self.token + ".x", "...."]:
            self.assertReason(token, "Not enough or too many segments")

    def test_too_long(self) -> None:
        self.assertReason("a" * 16385, "Token too long")
        codec = TokenCodec(SECRET, clock=self.clock, max_token_length=len(self.token))
        self.assertEqual(codec.decode(self.token), VECTOR_PAYLOAD)
        self.assertReason(self.token + "x", "Token too long", codec=codec)

    def test_syntax_errors(self) -> None:
        h, p, s = split(self.token)
        self.assertReason("!!!." + p + "." + s, "Invalid base64url in JWT", "SyntaxError")
        self.assertReason(h + ".a." + s, "Invalid base64url in JWT", "SyntaxError")
        self.assertReason(h + "=." + p + "." + s, "Invalid base64url in JWT", "SyntaxError")
        self.assertReason(
            h + "." + noncanonical(segment({"a": 1})) + "." + s,
            "Invalid base64url in JWT",
            "SyntaxError",
        )
        self.assertReason(h + ".é." + s, "Invalid base64url in JWT", "SyntaxError")
        self.assertReason(
            b64(b"{nope") + "." + p + "." + s, "Invalid JSON in JWT header", "SyntaxError"
        )
        self.assertReason(
            h + "." + b64(b"{nope") + "." + s, "Invalid JSON in JWT payload", "SyntaxError"
        )
        self.assertReason(
            h + "." + b64(b'{"exp":NaN}') + "." + s, "Invalid JSON in JWT payload", "SyntaxError"
        )
        self.assertReason(
            h + "." + b64(b"[" * 5000) + "." + s, "Invalid JSON in JWT payload", "SyntaxError"
        )
        self.assertReason(
            segment([1]) + "." + p + "." + s, "JWT header is not a JSON object", "SyntaxError"
        )

    def test_header_fields_pyjwt_refuses(self) -> None:
        """jwt-simple ignores kid/crit; PyJWT refuses odd ones, even correctly signed."""
        for extra in [{"kid": 5}, {"crit": ["x"], "x": 1}, {"b64": False}]:
            token = make_token({"typ": "JWT", "alg": "HS256", **extra}, VECTOR_PAYLOAD)
            self.assertReason(token, "Invalid JWT header", "SyntaxError")
        token = make_token({"typ": "JWT", "alg": "HS256", "kid": "k1"}, VECTOR_PAYLOAD)
        self.assertEqual(self.codec.decode(token), VECTOR_PAYLOAD)

    def test_payload_not_object(self) -> None:
        """jwt-simple would return a list or a number; a signed non-object is still refused."""
        for payload in [[1, 2], 42, "text", None]:
            token = make_token({"typ": "JWT", "alg": "HS256"}, payload)
            self.assertReason(token, "JWT payload is not a JSON object", "SyntaxError")

    def test_parse_before_signature(self) -> None:
        """jwt-simple parses both segments before checking the signature (§3.1)."""
        h, _, s = split(self.token)
        self.assertReason(
            h + "." + b64(b"garbage") + "." + s, "Invalid JSON in JWT payload", "SyntaxError"
        )

    def test_alg_none(self) -> None:
        """§3.1: ``alg: none`` is not supported, with or without a signature segment."""
        h = segment({"typ": "JWT", "alg": "none"})
        p = segment(dict(VECTOR_PAYLOAD))
        self.assertReason(h + "." + p + ".", "Algorithm not supported")
        self.assertReason(h + "." + p + "." + split(self.token)[2], "Algorithm not supported")
        h = segment({"typ": "JWT", "alg": "None"})
        self.assertReason(h + "." + p + ".", "Algorithm not supported")

    def test_alg_missing_or_odd(self) -> None:
        for header in [
            {"typ": "JWT"},
            {"alg": None},
            {"alg": ["HS256"]},
            {"alg": "hs256"},
            {"alg": "RS256"},
            {"alg": "ES256"},
        ]:
            self.assertReason(make_token(header, VECTOR_PAYLOAD), "Algorithm not supported")

    def test_stronger_hs_refused_by_default(self) -> None:
        """QEWD.js accepts HS384/HS512 (peer README); we only accept what is configured (§9.6)."""
        for alg, digest in [("HS384", hashlib.sha384), ("HS512", hashlib.sha512)]:
            token = make_token({"typ": "JWT", "alg": alg}, VECTOR_PAYLOAD, digest=digest)
            self.assertReason(token, "Algorithm not supported")
            codec = TokenCodec(SECRET, ("HS256", alg), clock=self.clock)
            self.assertEqual(codec.decode(token), VECTOR_PAYLOAD)
            self.assertEqual(codec.session(token)["socketId"], "abc123")
            # The header says HS512 but the MAC is HS256: not a valid signature.
            wrong = make_token({"typ": "JWT", "alg": alg}, VECTOR_PAYLOAD)
            self.assertReason(wrong, "Signature verification failed", codec=codec)

    def test_tampered_payload(self) -> None:
        h, _, s = split(self.token)
        for change in [{"application": "admin"}, {"exp": 1800000000}, {"authenticated": True}]:
            forged = h + "." + segment({**VECTOR_PAYLOAD, **change}) + "." + s
            self.assertReason(forged, "Signature verification failed")

    def test_tampered_signature(self) -> None:
        h, p, s = split(self.token)
        flipped = ("A" if s[0] != "A" else "B") + s[1:]
        self.assertReason(h + "." + p + "." + flipped, "Signature verification failed")
        self.assertReason(h + "." + p + ".", "Signature verification failed")

    def test_signature_not_base64url(self) -> None:
        """jwt-simple compares signature strings: any other spelling is a failed signature."""
        h, p, s = split(self.token)
        for sig in ["a", "!!!", s + "=", noncanonical(s)]:
            self.assertReason(h + "." + p + "." + sig, "Signature verification failed")

    def test_wrong_secret(self) -> None:
        self.assertReason(
            make_token({"alg": "HS256"}, VECTOR_PAYLOAD, secret="other"),
            "Signature verification failed",
        )

    def test_expiry(self) -> None:
        """jwt-simple: expired when now > exp (§3.1, §3.7); exactly at exp is still valid."""
        self.clock.advance(300)
        self.assertEqual(self.codec.decode(self.token)["exp"], self.clock.seconds())
        self.clock.advance(0.001)
        self.assertReason(self.token, "Token expired")

    def test_nbf(self) -> None:
        token = self.codec.encode({**VECTOR_PAYLOAD, "nbf": VECTOR_NOW + 10})
        self.assertReason(token, "Token not yet active")
        self.clock.advance(10)
        self.assertEqual(self.codec.decode(token)["nbf"], VECTOR_NOW + 10)

    def test_nbf_checked_before_exp(self) -> None:
        token = self.codec.encode({"nbf": VECTOR_NOW + 10, "exp": VECTOR_NOW - 10})
        self.assertReason(token, "Token not yet active")

    def test_odd_time_claims_fail_closed(self) -> None:
        """jwt-simple skips falsy exp and coerces strings; we treat them as expired."""
        for exp in [None, 0, False, True, "9999999999", [], {}]:
            self.assertReason(self.codec.encode({"exp": exp}), "Token expired")
        for nbf in [None, "0", True]:
            self.assertReason(self.codec.encode({"nbf": nbf}), "Token not yet active")
        # No exp at all: no expiry, as in jwt-simple.
        self.assertEqual(self.codec.decode(self.codec.encode({"a": 1})), {"a": 1})

    def test_pyjwt_claim_checks_off(self) -> None:
        """Claims PyJWT would check (iat in the future, aud, iss, sub, jti) are ignored (§3.1)."""
        payload = {"iat": VECTOR_NOW + 1000, "aud": "x", "iss": 5, "sub": 1, "jti": 2}
        self.assertEqual(self.codec.decode(self.codec.encode(payload)), payload)

    def test_no_short_key_warning(self) -> None:
        """QEWD secrets are often short; verification must not warn on every token."""
        self.codec.decode(self.token)
        self.assertEqual(self.flushWarnings(), [])

    @FUZZ
    @given(st.text(max_size=300))
    def test_arbitrary_strings(self, token: str) -> None:
        """Nothing a client sends makes decode raise anything but TokenError."""
        for method in (self.codec.decode, self.codec.session):
            try:
                method(token)
            except TokenError:
                pass

    @FUZZ
    @given(
        st.one_of(
            st.just({"typ": "JWT", "alg": "HS256"}),
            st.fixed_dictionaries(
                {"alg": st.sampled_from(["HS256", "HS384", "none"])},
                optional={"kid": json_values, "crit": json_values, "b64": json_values},
            ),
            json_values,
        ),
        st.one_of(
            st.fixed_dictionaries(
                {"qewd": qewd_values},
                optional={
                    "exp": times,
                    "nbf": times,
                    "iat": times,
                    "timeout": times,
                    "application": json_values,
                    "authenticated": json_values,
                },
            ),
            json_values,
        ),
        st.booleans(),
        st.text(alphabet="abcdefghAB0123-_", max_size=50),
    )
    def test_arbitrary_structured_tokens(self, header, payload, signed, signature) -> None:
        """Well-formed segments with odd contents, signed or not: TokenError or a result,
        and whatever verifies can be re-issued."""
        token = make_token(header, payload)
        if not signed:
            token = token.rsplit(".", 1)[0] + "." + signature
        try:
            session = self.codec.session(token)
        except TokenError:
            pass
        else:
            self.assertNotIn("qewd", session)
            self.codec.with_application(session, "other")
            try:
                reissued = self.codec.issue(session)
            except ValueError:  # a signed but unusable timeout claim: refused, never minted
                self.assertRaises(ValueError, check_timeout, session["timeout"])
            else:
                self.codec.session(reissued)
        for method in (self.codec.decode, self.codec.refresh):
            try:
                method(token)
            except TokenError:
                pass


class RegisterTokenTests(SynchronousTestCase):
    def test_vector(self) -> None:
        """§3.2/§3.3: at the vector's time, registration mints exactly the documented JWT."""
        token = codec_at(VECTOR_NOW + 0.9).register_token("myApp", PLAIN)
        self.assertEqual(token, HEADER_SEGMENT + "." + split(token)[1] + "." + VECTOR_SIGNATURE)
        self.assertEqual(list(claims_of(token)), list(VECTOR_PAYLOAD))

    def test_timeout(self) -> None:
        codec = codec_at(initial_timeout=1200)
        self.assertEqual(claims_of(codec.register_token("a", {}))["exp"], VECTOR_NOW + 1200)
        claims = claims_of(codec.register_token("a", {}, timeout=60))
        self.assertEqual((claims["exp"], claims["timeout"]), (VECTOR_NOW + 60, 60))
        self.assertRaises(ValueError, codec.register_token, "a", {}, timeout=-1)

    def test_secrets_encrypted(self) -> None:
        token = codec_at().register_token("a", {"socketId": "s1", "authenticated": False})
        self.assertNotIn("s1", json.dumps(claims_of(token)))
        self.assertEqual(
            SecretCipher(SECRET).decrypt(claims_of(token)["qewd"]),
            {"socketId": "s1", "authenticated": False},
        )


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = clock_at(VECTOR_NOW)
        self.codec = TokenCodec(SECRET, clock=self.clock)
        self.token = self.codec.register_token("myApp", PLAIN)

    def assertInvalidQewd(self, token: str) -> None:
        e = self.assertRaises(TokenError, self.codec.session, token)
        self.assertEqual(str(e), "Invalid JWT: Error: Invalid qewd claim")

    def test_promoted(self) -> None:
        """§3.4: secrets at the top level, qewd/qewd_list kept out of the mapping."""
        session = self.codec.session(self.token)
        self.assertIsInstance(session, JWTSession)
        self.assertEqual(
            dict(session), {**{k: v for k, v in VECTOR_PAYLOAD.items() if k != "qewd"}, **PLAIN}
        )
        self.assertEqual(session.secret_names, frozenset(PLAIN))
        self.assertEqual(session.timeout, 300)

    def test_round_trip(self) -> None:
        """register → session → issue → session keeps every claim; iat/exp slide."""
        session = self.codec.session(self.token)
        session["userText"] = "Rob"
        session["username"] = "rob"
        session.make_secret("username")
        session.timeout = 60
        self.clock.advance(30)
        token = self.codec.issue(session)
        claims = claims_of(token)
        self.assertEqual(
            list(claims), ["exp", "iat", "iss", "application", "timeout", "qewd", "userText"]
        )
        self.assertEqual((claims["iat"], claims["exp"]), (VECTOR_NOW + 30, VECTOR_NOW + 90))
        again = self.codec.session(token)
        self.assertEqual(
            dict(again), {**dict(session), "iat": VECTOR_NOW + 30, "exp": VECTOR_NOW + 90}
        )
        self.assertTrue(again.is_secret("username"))
        self.assertFalse(again.is_secret("userText"))

    def test_unchanged_session_is_bit_identical(self) -> None:
        """Issuing an untouched session at its iat reproduces the token, ours or QEWD.js's."""
        self.assertEqual(self.codec.issue(self.codec.session(self.token)), self.token)
        for token, iat in [(QEWD_REGISTER, 1795801436), (QEWD_LOGIN, 1795801437)]:
            codec = codec_at(iat)
            self.assertEqual(codec.issue(codec.session(token)), token)

    def test_real_qewd_login(self) -> None:
        session = codec_at(1795801437).session(QEWD_LOGIN)
        self.assertEqual(session["userText"], "Rob")
        self.assertEqual(session["username"], "rob")
        self.assertIs(session["authenticated"], True)
        self.assertFalse(session.is_secret("userText"))
        self.assertEqual(session.timeout, 60)

    def test_secret_wins_over_public(self) -> None:
        """§9 item 4 fix: a public ``authenticated: true`` never beats the secret ``false``."""
        token = self.codec.encode({**VECTOR_PAYLOAD, "authenticated": True, "username": "admin"})
        session = self.codec.session(token)
        self.assertIs(session["authenticated"], False)
        self.assertNotIn("username", session.secret_names)
        reissued = claims_of(self.codec.issue(session))
        self.assertNotIn("authenticated", reissued)
        self.assertEqual(reissued["username"], "admin")

    def test_missing_qewd(self) -> None:
        """§9 item 4 fix: no qewd claim means no session, whatever the public claims say."""
        payload = {k: v for k, v in VECTOR_PAYLOAD.items() if k != "qewd"}
        self.assertInvalidQewd(self.codec.encode({**payload, "authenticated": True}))
        self.assertEqual(self.codec.decode(self.codec.encode(payload)), payload)

    def test_undecryptable_qewd(self) -> None:
        for qewd in [
            "",
            "zz",
            "00" * 16,
            CIPHER_HEX[:-32],
            SecretCipher("x").encrypt(PLAIN),
            SecretCipher(SECRET).encrypt([1, 2]),
            SecretCipher(SECRET).encrypt("s"),
            123,
            None,
            {"socketId": "x"},
            ["a"],
        ]:
            self.assertInvalidQewd(self.codec.encode({**VECTOR_PAYLOAD, "qewd": qewd}))

    def test_session_verifies(self) -> None:
        self.clock.advance(301)
        e = self.assertRaises(TokenError, self.codec.session, self.token)
        self.assertEqual(e.reason, "Token expired")

    def test_make_public_removes_from_qewd(self) -> None:
        """QEWD.js leaves the old copy inside qewd; a claim made public is really public."""
        session = self.codec.session(self.token)
        session.make_public("ipAddress")
        claims = claims_of(self.codec.issue(session))
        self.assertEqual(claims["ipAddress"], "::ffff:127.0.0.1")
        self.assertEqual(
            SecretCipher(SECRET).decrypt(claims["qewd"]),
            {"socketId": "abc123", "authenticated": False},
        )

    def test_deleted_secret_is_gone(self) -> None:
        session = self.codec.session(self.token)
        del session["socketId"]
        claims = claims_of(self.codec.issue(session))
        self.assertNotIn("socketId", SecretCipher(SECRET).decrypt(claims["qewd"]))
        self.assertNotIn("socketId", claims)

    def test_reserved_secret_names_dropped(self) -> None:
        """A qewd claim holding ``application`` or ``exp`` cannot override the public ones."""
        qewd = SecretCipher(SECRET).encrypt({"application": "admin", "exp": 9e99, "u": 1})
        session = self.codec.session(self.codec.encode({**VECTOR_PAYLOAD, "qewd": qewd}))
        self.assertEqual((session["application"], session["exp"]), ("myApp", 1700000300))
        self.assertEqual(session.secret_names, frozenset({"u"}))

    def test_issue_timeout(self) -> None:
        session = self.codec.session(self.token)
        del session["timeout"]
        claims = claims_of(TokenCodec(SECRET, clock=self.clock, initial_timeout=99).issue(session))
        self.assertEqual((claims["timeout"], claims["exp"]), (99, VECTOR_NOW + 99))
        for bad in ["3600", 0, -5, None, True, float("nan")]:
            session["timeout"] = bad
            if bad is None:
                self.assertEqual(claims_of(self.codec.issue(session))["timeout"], 300)
            else:
                self.assertRaises(ValueError, self.codec.issue, session)

    def test_issue_adds_iss(self) -> None:
        """A session built by hand gets QEWD's claims and order."""
        session = JWTSession({"x": 1, "application": "a"}, secret_names=["s"])
        session["s"] = "hidden"
        claims = claims_of(codec_at().issue(session))
        self.assertEqual(list(claims), ["exp", "iat", "iss", "application", "timeout", "qewd", "x"])
        self.assertEqual(claims["iss"], "qewd.jwt")

    def test_issue_ignores_internal_items(self) -> None:
        session = self.codec.session(self.token)
        session["qewd"] = "forged"
        session["qewd_list"] = {"x": True}
        claims = claims_of(self.codec.issue(session))
        self.assertEqual(claims["qewd"], CIPHER_HEX)
        self.assertNotIn("qewd_list", claims)

    @HYPOTHESIS
    @given(secret_dicts)
    def test_secrets_round_trip(self, secrets: dict) -> None:
        """Any JSON-able secret claims survive register → session → issue → session."""
        token = self.codec.register_token("app", secrets)
        session = self.codec.session(token)
        kept = {
            k: v
            for k, v in secrets.items()
            if k not in ("exp", "nbf", "iat", "iss", "application", "timeout", "qewd", "qewd_list")
        }
        self.assertEqual(session.secret_claims(), kept)
        self.assertEqual(self.codec.session(self.codec.issue(session)).secret_claims(), kept)


class WithApplicationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = clock_at(VECTOR_NOW)
        self.codec = TokenCodec(SECRET, clock=self.clock)
        self.token = self.codec.register_token("jwt", PLAIN)

    def test_payload(self) -> None:
        """§4.4 step 2: only ``application`` changes; exp/iat and the ciphertext are kept."""
        payload = self.codec.decode(self.token)
        self.clock.advance(100)
        rewritten = claims_of(self.codec.with_application(payload, "test-app"))
        self.assertEqual(rewritten, {**payload, "application": "test-app"})
        self.assertEqual(list(rewritten), list(payload))
        self.assertEqual(payload["application"], "jwt")  # the input is not modified

    def test_matches_qewd(self) -> None:
        """Rewriting a token and back gives the original bytes (§4.4 step 6)."""
        codec = codec_at(1795801434)
        back = codec.with_application(codec.decode(QEWD_FORWARDED), "jwt")
        self.assertEqual(codec.decode(back)["application"], "jwt")
        self.assertEqual(codec.with_application(codec.decode(back), "test-app"), QEWD_FORWARDED)

    def test_session(self) -> None:
        """§4.4: a session's secrets are re-encrypted, exp/iat untouched."""
        session = self.codec.session(self.token)
        session["username"] = "rob"
        session.make_secret("username")
        self.clock.advance(100)
        claims = claims_of(self.codec.with_application(session, "test-app"))
        self.assertEqual((claims["iat"], claims["exp"]), (VECTOR_NOW, VECTOR_NOW + 300))
        self.assertEqual(claims["application"], "test-app")
        self.assertEqual(list(claims), ["exp", "iat", "iss", "application", "timeout", "qewd"])
        self.assertEqual(SecretCipher(SECRET).decrypt(claims["qewd"]), {**PLAIN, "username": "rob"})
        self.assertEqual(session["application"], "jwt")


class RefreshTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = clock_at(VECTOR_NOW)
        self.codec = TokenCodec(SECRET, clock=self.clock, initial_timeout=120)
        self.token = self.codec.register_token("test-app", PLAIN, timeout=300)

    def test_expired_token_refreshed(self) -> None:
        """§3.6/§4.2 step 5: a link's expired token is revived, after a signature check."""
        self.clock.advance(1000)
        refreshed = self.codec.refresh(self.token)
        claims = claims_of(refreshed)
        self.assertEqual((claims["iat"], claims["exp"]), (VECTOR_NOW + 1000, VECTOR_NOW + 1300))
        self.assertEqual(list(claims), list(VECTOR_PAYLOAD))
        self.assertEqual(claims["qewd"], CIPHER_HEX)
        self.assertEqual(self.codec.decode(refreshed)["application"], "test-app")

    def test_verify_expiry(self) -> None:
        self.clock.advance(1000)
        e = self.assertRaises(TokenError, self.codec.refresh, self.token, verify_expiry=True)
        self.assertEqual(e.reason, "Token expired")

    def test_signature_always_checked(self) -> None:
        """§9 item 3 fix: QEWD.js re-signs forged tokens; we do not."""
        forged = make_token({"typ": "JWT", "alg": "HS256"}, claims_of(self.token), "other")
        e = self.assertRaises(TokenError, self.codec.refresh, forged)
        self.assertEqual(e.reason, "Signature verification failed")
        self.assertRaises(TokenError, self.codec.refresh, "not a token")

    def test_missing_timeout(self) -> None:
        """QEWD.js sets exp to 300 (absolute) here; we use the initial timeout."""
        token = self.codec.encode({"iat": 1, "exp": 2, "application": "a"})
        claims = claims_of(self.codec.refresh(token))
        self.assertEqual(list(claims), ["exp", "iat", "application"])
        self.assertEqual(claims["exp"], VECTOR_NOW + 120)
        token = self.codec.encode({"exp": 2, "timeout": "60"})
        self.assertEqual(claims_of(self.codec.refresh(token))["exp"], VECTOR_NOW + 120)


class PreviousSecretsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = clock_at(VECTOR_NOW)
        self.old = TokenCodec("old-secret", clock=self.clock)
        self.new = TokenCodec("new-secret", clock=self.clock, previous_secrets=["old-secret"])
        self.new_only = TokenCodec("new-secret", clock=self.clock)
        self.token = self.old.register_token("app", PLAIN)

    def test_old_tokens_accepted(self) -> None:
        session = self.new.session(self.token)
        self.assertEqual(session.secret_claims(), PLAIN)
        e = self.assertRaises(TokenError, self.new_only.session, self.token)
        self.assertEqual(e.reason, "Signature verification failed")

    def test_new_tokens_use_current_secret(self) -> None:
        reissued = self.new.issue(self.new.session(self.token))
        self.assertEqual(self.new_only.session(reissued).secret_claims(), PLAIN)
        self.assertRaises(TokenError, self.old.decode, reissued)

    def test_rekeyed_on_refresh_and_rewrite(self) -> None:
        """Re-signed tokens carry a qewd claim the current secret alone can read."""
        refreshed = self.new.refresh(self.token)
        self.assertEqual(self.new_only.session(refreshed).secret_claims(), PLAIN)
        rewritten = self.new.with_application(self.new.decode(self.token), "other")
        self.assertEqual(self.new_only.session(rewritten)["application"], "other")

    def test_old_key_decrypts_mixed_token(self) -> None:
        """A token signed with the new secret but carrying an old-secret qewd still reads."""
        payload = self.old.decode(self.token)
        mixed = self.new.encode(payload)
        self.assertEqual(self.new.session(mixed).secret_claims(), PLAIN)
        self.assertRaises(TokenError, self.new_only.session, mixed)


class VerifiedCacheTests(SynchronousTestCase):
    """The bounded caches make repeat verification cheap without weakening it."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.codec = TokenCodec("someSecret123", clock=self.clock, cache_size=4)

    def test_cached_token_still_expires(self) -> None:
        token = self.codec.register_token("app", {"socketId": "s"}, timeout=10)
        self.assertEqual(self.codec.decode(token)["application"], "app")
        self.clock.advance(11)
        with self.assertRaises(TokenError) as e:
            self.codec.decode(token)
        self.assertEqual(e.exception.reason, "Token expired")

    def test_tampered_copy_of_a_cached_token_is_rejected(self) -> None:
        token = self.codec.register_token("app", {"socketId": "s"})
        self.codec.decode(token)
        head, body, sig = token.split(".")
        forged = ".".join([head, body, sig[:-1] + ("A" if sig[-1] != "A" else "B")])
        with self.assertRaises(TokenError):
            self.codec.decode(forged)

    def test_sessions_from_cache_do_not_share_objects(self) -> None:
        token = self.codec.register_token("app", {"socketId": "s", "prefs": {"a": 1}})
        first = self.codec.session(token)
        first["prefs"]["a"] = 2
        self.assertEqual(self.codec.session(token)["prefs"], {"a": 1})

    def test_sessions_of_a_known_token_are_fresh_copies(self) -> None:
        """The session of a known flat token is built once and copied: every copy is what
        the full path gives (same items in the same order, same secret names), and changing
        one (items or secrecy) changes neither the next one nor the token's claims."""
        token = self.codec.register_token("app", {"socketId": "s", "authenticated": False})
        payload = self.codec.decode(token)
        slow = TokenCodec("someSecret123", clock=self.clock, cache_size=0).session(token)
        first = self.codec.session_from_payload(payload, token)
        self.assertIsNotNone(self.codec._seen[token].session)  # kept for the next ones
        first["authenticated"] = True
        first["extra"] = [1]
        first.make_secret("extra")
        first.make_public("socketId")
        for session in (self.codec.session_from_payload(self.codec.decode(token), token),
                        self.codec.session(token)):
            self.assertEqual(list(session.items()), list(slow.items()))
            self.assertEqual(list(session._secrets), list(slow._secrets))
            self.assertEqual(session["authenticated"], False)
            self.assertTrue(session.is_secret("socketId"))
            self.assertFalse(session.is_secret("extra"))

    def test_known_token_session_only_for_its_own_claims(self) -> None:
        """Claims that are not the token's own (a caller changed them) get their own session,
        not the token's; a token whose secrets are not all scalars is never shared."""
        token = self.codec.register_token("app", {"socketId": "s"})
        self.codec.session(token)
        payload = self.codec.decode(token)
        payload["application"] = "other"
        self.assertEqual(self.codec.session_from_payload(payload, token)["application"], "other")
        self.assertEqual(self.codec.session(token)["application"], "app")
        nested = self.codec.register_token("app", {"socketId": "s", "prefs": {"a": 1}})
        self.codec.session(nested)
        self.assertIsNone(self.codec._seen[nested].session)

    def test_cached_times_checked_as_the_full_path_does(self) -> None:
        """``exp`` / ``nbf`` of every shape give the same answer from the cache as from a codec
        without one, before and after they pass (a missing ``exp`` never expires; a
        non-numeric one fails closed)."""
        now = self.clock.seconds()
        uncached = TokenCodec("someSecret123", clock=self.clock, cache_size=0)
        claims = [{}, {"exp": now + 5}, {"exp": now + 5.5}, {"exp": "soon"}, {"exp": None},
                  {"nbf": now + 5}, {"nbf": now + 5, "exp": now + 10}, {"exp": True}]
        big = TokenCodec("someSecret123", clock=self.clock, cache_size=100)
        tokens = [big.encode({"application": "app", **c}) for c in claims]

        def outcome(codec: TokenCodec, token: str) -> object:
            try:
                return codec.decode(token)
            except TokenError as e:
                return e.reason

        for step in (0, 4.9, 0.6, 5):
            self.clock.advance(step)
            for token in tokens:
                self.assertEqual(outcome(big, token), outcome(uncached, token), (step, token))
                self.assertEqual(outcome(big, token), outcome(big, token))  # cached now

    def test_known_token_session_still_expires(self) -> None:
        token = self.codec.register_token("app", {"socketId": "s"}, timeout=10)
        self.codec.session(token)
        self.clock.advance(11)
        with self.assertRaises(TokenError) as e:
            self.codec.session(token)
        self.assertEqual(e.exception.reason, "Token expired")

    def test_bounded(self) -> None:
        tokens = [self.codec.register_token("app", {"socketId": str(i)}) for i in range(10)]
        self.assertLessEqual(len(self.codec._seen), 4)
        for t in tokens:  # evicted ones verify the slow way, with the same result
            self.assertEqual(self.codec.session(t)["application"], "app")

    def test_token_verified_elsewhere_is_cached_after_first_check(self) -> None:
        other = TokenCodec("someSecret123", clock=self.clock)
        token = other.register_token("app", {"socketId": "x"})
        self.assertNotIn(token, self.codec._seen)
        self.codec.decode(token)
        self.assertIn(token, self.codec._seen)
        wrong = TokenCodec("another", clock=self.clock).register_token("app", {})
        with self.assertRaises(TokenError):
            self.codec.decode(wrong)
        self.assertNotIn(wrong, self.codec._seen)


class GCMCipherTests(SynchronousTestCase):
    """The opt-in authenticated cipher for the qewd claim (jwt.cipher = "aes-256-gcm")."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.gcm = TokenCodec("someSecret123", clock=self.clock, cipher="aes-256-gcm")
        self.cbc = TokenCodec("someSecret123", clock=self.clock)

    def test_round_trip_and_format(self) -> None:
        token = self.gcm.register_token("app", {"socketId": "s", "authenticated": False})
        claim = self.gcm.decode(token)["qewd"]
        self.assertTrue(claim.startswith("gcm1."))
        session = self.gcm.session(token)
        self.assertEqual((session["socketId"], session["authenticated"]), ("s", False))
        session["username"] = "rob"
        session.make_secret("username")
        self.assertEqual(self.gcm.session(self.gcm.issue(session))["username"], "rob")

    def test_random_nonce(self) -> None:
        a = GCMSecretCipher("k").encrypt({"x": 1})
        b = GCMSecretCipher("k").encrypt({"x": 1})
        self.assertNotEqual(a, b)
        self.assertEqual(GCMSecretCipher("k").decrypt(a), {"x": 1})

    def test_tampered_or_wrong_secret_claim_is_refused(self) -> None:
        claim = GCMSecretCipher("k", cache_size=0).encrypt({"authenticated": False})
        raw = bytearray(base64.urlsafe_b64decode(claim[5:] + "=" * (-len(claim[5:]) % 4)))
        raw[-1] ^= 1
        flipped = "gcm1." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        with self.assertRaises(ValueError):
            GCMSecretCipher("k", cache_size=0).decrypt(flipped)
        with self.assertRaises(ValueError):
            GCMSecretCipher("other", cache_size=0).decrypt(claim)

    def test_both_formats_read_during_migration(self) -> None:
        old = self.cbc.register_token("app", {"socketId": "old"})
        new = self.gcm.register_token("app", {"socketId": "new"})
        self.assertEqual(self.gcm.session(old)["socketId"], "old")
        self.assertEqual(self.cbc.session(new)["socketId"], "new")
        # a gcm node re-issues a migrated session in its own format
        self.assertTrue(self.gcm.decode(self.gcm.issue(self.gcm.session(old)))["qewd"]
                        .startswith("gcm1."))

    def test_unknown_cipher_refused(self) -> None:
        with self.assertRaises(ValueError):
            TokenCodec("s", cipher="rot13")


def _fresh_issue(codec: TokenCodec, session: JWTSession) -> str:
    """What issue() must return: the claims encoded and signed now, with no reuse."""
    timeout = session.get("timeout", codec.initial_timeout)
    iat = int(codec._now())
    return codec.encode(codec._session_claims(
        session, exp=iat + timeout, iat=iat, iss=session.get("iss", "qewd.jwt"), timeout=timeout))


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, -0.0, 1.0]),
                    st.sampled_from(["", "x", "é"]))


class IssueReuseTests(SynchronousTestCase):
    """issue() hands back the incoming token when nothing changed in the same second; it must
    always be exactly the token a fresh encode would give."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.codec = TokenCodec(SECRET, clock=self.clock)

    def _round(self, token: str) -> tuple[JWTSession, str]:
        session = self.codec.session(token)
        return session, self.codec.issue(session)

    def test_unchanged_session_same_second_gives_same_token(self) -> None:
        token = self.codec.register_token("app", {"socketId": "s"})
        first = self.codec.issue(self.codec.session(token))
        session, again = self._round(first)
        self.assertIs(again, first)
        self.assertEqual(again, _fresh_issue(self.codec, session))

    def test_next_second_gives_new_token(self) -> None:
        token = self.codec.issue(self.codec.session(self.codec.register_token("app", {})))
        self.clock.advance(1)
        session, again = self._round(token)
        self.assertNotEqual(again, token)
        self.assertEqual(self.codec.decode(again)["iat"], 1_700_000_001)

    def test_lookalike_values_are_not_the_same(self) -> None:
        """True == 1 and 0.0 == -0.0 in Python, but not in JSON."""
        for before, after in [(1, True), (True, 1), (0.0, -0.0), (0, 0.0)]:
            base = self.codec.register_token("app", {})
            session = self.codec.session(base)
            session["v"] = before
            token = self.codec.issue(session)
            session = self.codec.session(token)
            session["v"] = after
            reissued = self.codec.issue(session)
            self.assertEqual(reissued, _fresh_issue(self.codec, session), (before, after))
            self.assertIs(type(self.codec.decode(reissued)["v"]), type(after))

    def test_claim_order_matters(self) -> None:
        session = self.codec.session(self.codec.register_token("app", {}))
        session["a"], session["b"] = 1, 2
        token = self.codec.issue(session)
        session = self.codec.session(token)
        a = session.pop("a")
        session["a"] = a  # same claims, other order: other JSON
        self.assertNotEqual(self.codec.issue(session), token)
        self.assertEqual(self.codec.issue(session), _fresh_issue(self.codec, session))

    def test_secret_changes_are_seen(self) -> None:
        session = self.codec.session(self.codec.register_token("app", {"u": "rob"}))
        session["p"] = 1
        token = self.codec.issue(session)
        for change in (lambda s: s.make_public("u"), lambda s: s.make_secret("p"),
                       lambda s: s.__setitem__("u", "bob")):
            session = self.codec.session(token)
            change(session)
            self.assertNotEqual(self.codec.issue(session), token)
            self.assertEqual(self.codec.issue(session), _fresh_issue(self.codec, session))

    def test_previous_secret_token_is_resigned(self) -> None:
        old = TokenCodec("oldSecret", clock=self.clock)
        codec = TokenCodec(SECRET, clock=self.clock, previous_secrets=["oldSecret"])
        token = old.issue(old.session(old.register_token("app", {"u": 1})))
        reissued = codec.issue(codec.session(token))
        self.assertNotEqual(reissued, token)
        TokenCodec(SECRET, clock=self.clock).decode(reissued)  # signed with the current one

    def test_other_header_is_resigned(self) -> None:
        """A token with the same claims but another header (here HS512, or another field
        order) is not what encode() writes: it is never handed back."""
        codec = TokenCodec(SECRET, clock=self.clock, algorithms=("HS256", "HS512"))
        payload = codec.decode(codec.register_token("app", {}))
        token = pyjwt.encode(payload, SECRET, algorithm="HS512")
        reissued = codec.issue(codec.session(token))
        self.assertNotEqual(reissued, token)
        self.assertTrue(reissued.startswith(codec.encode({"a": 1}).split(".")[0] + "."))

    def test_other_json_layout_is_resigned(self) -> None:
        """A QEWD.js-style token whose JSON has spaces: same claims, other bytes."""
        payload = self.codec.decode(self.codec.register_token("app", {}))
        head = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"HS256"}').rstrip(b"=")
        body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=")
        signing = head + b"." + body
        sig = base64.urlsafe_b64encode(
            hmac.new(SECRET.encode(), signing, hashlib.sha256).digest()).rstrip(b"=")
        token = (signing + b"." + sig).decode()
        reissued = self.codec.issue(self.codec.session(token))
        self.assertNotEqual(reissued, token)
        self.assertEqual(self.codec.decode(reissued), payload)

    def test_nested_values_changed_in_place_are_seen(self) -> None:
        session = self.codec.session(self.codec.register_token("app", {}))
        session["cart"] = [1]
        token = self.codec.issue(session)
        session = self.codec.session(token)
        self.assertEqual(self.codec.issue(session), token)  # unchanged: same claims
        session["cart"].append(2)
        reissued = self.codec.issue(session)
        self.assertEqual(self.codec.decode(reissued)["cart"], [1, 2])
        self.assertEqual(reissued, _fresh_issue(self.codec, session))

    def test_same_session_shortcut_is_recorded_and_used(self) -> None:
        session = self.codec.session(self.codec.register_token("app", {"u": 1}))
        session["p"] = 2  # a public claim added after the secrets: other order than rebuilt
        token = self.codec.issue(session)
        self.assertIsNone(self.codec._seen[token].issued_from)
        self.assertIs(self.codec.issue(self.codec.session(token)), token)  # reused: recorded
        self.assertIsNotNone(self.codec._seen[token].issued_from)
        session = self.codec.session(token)
        session["u"] = 1  # same value, same type: the same token without building claims
        self.codec._session_claims = None  # would fail if called
        self.assertIs(self.codec.issue(session), token)

    def test_gcm_tokens_are_not_reused(self) -> None:
        codec = TokenCodec(SECRET, clock=self.clock, cipher="aes-256-gcm")
        token = codec.issue(codec.session(codec.register_token("app", {"u": 1})))
        codec.issue(codec.session(token))
        self.assertIsNone(codec._seen[token].issued_from)
        again = codec.issue(codec.session(token))
        self.assertEqual(codec.session(again).secret_claims(), {"u": 1})

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), _scalar), max_size=4),
           st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), _scalar), max_size=4),
           st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=2))
    def test_always_what_a_fresh_encode_gives(self, first, second, secret) -> None:
        session = self.codec.session(self.codec.register_token("app", {"socketId": "s"}))
        session.update(first)
        for name in secret:
            session.make_secret(name)
        token = self.codec.issue(session)
        session = self.codec.session(token)
        session.update(second)
        self.assertEqual(self.codec.issue(session), _fresh_issue(self.codec, session))


    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), _scalar), max_size=4),
           st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), _scalar), max_size=4),
           st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=2),
           st.lists(st.sampled_from(["a", "b", "c", "d", "socketId"]), max_size=2))
    def test_recorded_shortcut_is_what_a_fresh_encode_gives(self, first, second, secret,
                                                             moved) -> None:
        """Once a token has re-issued to itself (``issued_from`` recorded), any later session
        of it, changed in values, types, order (a claim taken out and put back) or secrecy,
        still re-issues to what a fresh encode gives."""
        session = self.codec.session(self.codec.register_token("app", {"socketId": "s"}))
        session.update(first)
        token = self.codec.issue(session)
        self.assertEqual(self.codec.issue(self.codec.session(token)), token)  # recorded
        session = self.codec.session(token)
        session.update(second)
        for name in moved:
            if name in session:
                session[name] = session.pop(name)
        for name in secret:
            session.make_secret(name)
        self.assertEqual(self.codec.issue(session), _fresh_issue(self.codec, session))


    def test_recorded_shortcut_sees_type_order_and_secrecy(self) -> None:
        """After the shortcut is recorded: another value, an equal value of another type (True
        for 1), the same claims in another order, or another secret set each give a fresh
        token."""
        session = self.codec.session(self.codec.register_token("app", {"socketId": "s"}))
        session.update({"b": "x", "a": 1, "c": 2})
        token = self.codec.issue(session)
        self.assertIs(self.codec.issue(self.codec.session(token)), token)
        self.assertIsNotNone(self.codec._seen[token].issued_from)
        changes = [lambda s: s.__setitem__("a", 2),
                   lambda s: s.__setitem__("a", True),
                   lambda s: s.__setitem__("a", s.pop("a")),  # b, c, a: same types in order
                   lambda s: s.make_secret("b")]
        for change in changes:
            session = self.codec.session(token)
            change(session)
            reissued = self.codec.issue(session)
            self.assertNotEqual(reissued, token)
            self.assertEqual(reissued, _fresh_issue(self.codec, session))


class RewriteTests(SynchronousTestCase):
    """rewrite(token, app): with_application(decode(token), app), remembered."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.codec = TokenCodec(SECRET, clock=self.clock, initial_timeout=10)

    def test_same_as_with_application_and_remembered(self) -> None:
        token = self.codec.register_token("app", {"u": 1})
        first = self.codec.rewrite(token, "remote")
        self.assertEqual(first, self.codec.with_application(self.codec.decode(token), "remote"))
        self.assertIs(self.codec.rewrite(token, "remote"), first)
        self.assertNotEqual(self.codec.rewrite(token, "other"), first)

    def test_still_verified_every_time(self) -> None:
        token = self.codec.register_token("app", {"u": 1})
        self.codec.rewrite(token, "remote")
        self.clock.advance(11)
        with self.assertRaises(TokenError) as e:
            self.codec.rewrite(token, "remote")
        self.assertEqual(e.exception.reason, "Token expired")
        forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        self.assertRaises(TokenError, self.codec.rewrite, forged, "remote")
