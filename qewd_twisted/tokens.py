"""
QEWD-compatible JWTs (PROTOCOL.md §3): what QEWD.js's jwt-simple writes and reads, bit for bit.

A token is ``b64url(header).b64url(payload).b64url(HMAC)`` with the header
``{"typ":"JWT","alg":"HS256"}`` (§3.1). Its claims are, in order, ``exp, iat, iss,
application, timeout, qewd`` and then any public claims (§3.2); ``qewd`` holds the secret claims
encrypted with AES-256-CBC under a key and IV derived from the JWT secret (§3.3). A QEWD.js node
and ours sharing a secret read each other's tokens.

What we do differently from QEWD.js, on purpose (docs/compatibility.md):

* a token whose ``qewd`` claim is missing or cannot be decrypted is rejected; QEWD.js silently
  goes on with the public claims only (§9 item 4);
* a secret claim always wins over a public claim of the same name; QEWD.js lets a public
  ``authenticated: true`` stand (§3.4 step 3);
* ``make_public`` really removes the claim from ``qewd`` (§3.4 step 4);
* ``refresh`` re-signs only after checking the signature, and a missing ``timeout`` claim falls
  back to the configured initial timeout instead of an absolute ``exp`` of 300 (§3.6, §9 item 3);
* ``exp``/``nbf`` values that are not numbers fail closed (jwt-simple ignores falsy ones and
  coerces strings); only a token without the claim at all has no expiry;
* tokens longer than ``max_token_length`` are refused before any parsing.

Signature checks go through PyJWT's JWS layer, once per token: tokens this codec signed or
has verified are kept in a bounded cache (their expiry is still checked on every use), and the
deterministic ``qewd`` cipher keeps a bounded plaintext/ciphertext map, so re-issuing an
unchanged session costs no AES. Encoding is done here (it is a fixed header and
one HMAC) because the claim order and JSON layout must match QEWD.js exactly. Nothing in this
module logs, and no exception text contains a token, a secret or key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS
from jwt.exceptions import (
    InvalidAlgorithmError,
    InvalidSignatureError,
    PyJWTError,
)
from twisted.internet.interfaces import IReactorTime

from .sessions import INTERNAL_CLAIMS, RESERVED_CLAIMS, JWTSession, check_timeout

__all__ = ["ERRORS", "SecretCipher", "TokenCodec", "TokenError", "evp_bytes_to_key"]

ISSUER = "qewd.jwt"  # §3.2

# jwt-simple's own texts (§3.1), reused exactly.
NO_TOKEN = "No token supplied"
BAD_SEGMENTS = "Not enough or too many segments"
ALGORITHM_NOT_SUPPORTED = "Algorithm not supported"
BAD_SIGNATURE = "Signature verification failed"
NOT_ACTIVE = "Token not yet active"
EXPIRED = "Token expired"

# Ours.
INVALID_QEWD = "Invalid qewd claim"
TOO_LONG = "Token too long"
BAD_BASE64 = "Invalid base64url in JWT"
BAD_HEADER = "Invalid JWT header"

#: Client-visible texts this module adds to QEWD's (docs/errors.md lists them). Malformed
#: tokens give a ``SyntaxError`` text as in QEWD.js, but with our own short wording where
#: JavaScript's ``JSON.parse`` message would have been.
NO_APPLICATION = "No application claim"  # ours: checked by the node, which dispatches on it

ERRORS: dict[str, str] = {
    "Invalid JWT: Error: " + NO_APPLICATION: (
        "The token is valid but has no application claim (or it is not a non-empty string), "
        "so the node cannot tell which handler module to use."
    ),
    "Invalid JWT: Error: " + INVALID_QEWD: (
        "The token is correctly signed but its encrypted qewd claim is missing, is not a hex "
        "string, or does not decrypt to a JSON object under this node's secret. QEWD.js "
        "ignores this and trusts the public claims (PROTOCOL.md §9 item 4); we refuse it."
    ),
    "Invalid JWT: Error: " + TOO_LONG: (
        "The token is longer than max_token_length (16384 characters by default)."
    ),
    "Invalid JWT: SyntaxError: " + BAD_BASE64: (
        "The header or payload segment is not canonical unpadded base64url (jwt-simple would "
        "report a JSON.parse SyntaxError)."
    ),
    "Invalid JWT: SyntaxError: Invalid JSON in JWT header": "The header is not JSON.",
    "Invalid JWT: SyntaxError: Invalid JSON in JWT payload": "The payload is not JSON.",
    "Invalid JWT: SyntaxError: JWT header is not a JSON object": (
        "The header is JSON but not an object."
    ),
    "Invalid JWT: SyntaxError: JWT payload is not a JSON object": (
        "The payload is JSON but not an object (jwt-simple would accept it)."
    ),
    "Invalid JWT: SyntaxError: " + BAD_HEADER: (
        "The header has a field PyJWT refuses (a non-string kid, an unknown crit extension, "
        "b64:false)."
    ),
}

# The algorithms jwt-simple accepts with a shared secret (§3.1). RS256 needs a public key,
# which QEWD never configures, so it is not offered.
_HASHES = {
    "HS256": HMACAlgorithm.SHA256,
    "HS384": HMACAlgorithm.SHA384,
    "HS512": HMACAlgorithm.SHA512,
}
_HEAD_CLAIMS = ("exp", "iat", "iss", "application", "timeout")  # §3.2 order, then qewd
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class TokenError(Exception):
    """A token was refused. ``str(e)`` is QEWD's client text, ``Invalid JWT: Error: <reason>``.

    ``reason`` is the jwt-simple text (``Token expired``...) or one of ours (see ``ERRORS``);
    ``kind`` is ``Error`` or, for a malformed token, ``SyntaxError`` (§3.4 step 1).
    """

    def __init__(self, reason: str, kind: str = "Error") -> None:
        super().__init__(f"Invalid JWT: {kind}: {reason}")
        self.reason = reason
        self.kind = kind


def _syntax(reason: str) -> TokenError:
    return TokenError(reason, "SyntaxError")


def evp_bytes_to_key(secret: bytes, key_len: int = 32, iv_len: int = 16) -> tuple[bytes, bytes]:
    """OpenSSL's EVP_BytesToKey with MD5, no salt, one iteration (§3.3).

    ``D1 = MD5(secret)``, ``Dn = MD5(Dn-1 || secret)``; key and IV are cut from ``D1 || D2 ||
    ...``. It is what Node's ``crypto.createCipher`` did, and QEWD.js still derives its key this
    way; MD5 is not our choice, it is the wire format.
    """
    out = b""
    block = b""
    while len(out) < key_len + iv_len:
        block = hashlib.md5(block + secret).digest()
        out += block
    return out[:key_len], out[key_len : key_len + iv_len]


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity; JSON.parse does not, and NaN would defeat exp checks.
    raise ValueError("non-standard JSON constant")


# Built once: json.loads/dumps with non-default options construct a codec per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _load_json(data: bytes) -> Any:
    """Strict JSON from UTF-8 bytes; ValueError on anything JSON.parse would refuse."""
    try:
        return _DECODER.decode(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _js_json(obj: Any) -> bytes:
    """UTF-8 of the JSON ``JSON.stringify`` would write: compact, non-ASCII kept, key order kept.

    A string with a lone surrogate cannot be UTF-8; like ES2019 ``JSON.stringify`` we then
    escape it (ensure_ascii escapes all non-ASCII, which parses back to the same value).
    """
    text = _ENCODER.encode(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(obj).encode("ascii")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_HS256_HEADER = _b64url(b'{"typ":"JWT","alg":"HS256"}')  # §3.1, byte for byte


def _b64url_decode(segment: str) -> bytes | None:
    """Decode canonical unpadded base64url, as jwt-simple writes it; None for anything else.

    Non-canonical spellings (padding, stray bits in the last character) are refused so that a
    token has exactly one spelling, as with jwt-simple, which compares signatures as strings.
    """
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if _b64url(raw) == segment else None


def _parse_segment(segment: str, what: str) -> dict[str, Any]:
    raw = _b64url_decode(segment)
    if raw is None:
        raise _syntax(BAD_BASE64)
    try:
        value = _load_json(raw)
    except ValueError:
        raise _syntax(f"Invalid JSON in JWT {what}") from None
    if not isinstance(value, dict):
        raise _syntax(f"JWT {what} is not a JSON object")
    return value


def _bounded_put(cache: dict[Any, Any], key: Any, value: Any, size: int) -> None:
    """Insert into a dict used as a bounded cache, dropping the oldest entry when full."""
    if key not in cache and len(cache) >= size:
        del cache[next(iter(cache))]
    cache[key] = value


def _is_number(value: Any) -> bool:
    # ints are compared exactly (math.isnan would overflow on a 400-digit JSON integer)
    return type(value) is int or (type(value) is float and not math.isnan(value))


class GCMSecretCipher:
    """An authenticated alternative for the ``qewd`` claim (opt-in: ``jwt.cipher``).

    AES-256-GCM with a random 96-bit nonce and a key derived from the secret with HKDF-SHA256
    (not MD5). The claim is ``gcm1.`` + base64url(nonce + ciphertext + tag): self-describing,
    so a node reads both formats while a mesh migrates. QEWD.js cannot read it: use it only
    between qewd-twisted nodes.
    """

    PREFIX = "gcm1."

    __slots__ = ("_aead", "_plain_by_claim", "cache_size")

    def __init__(self, secret: str, cache_size: int = 20000) -> None:
        if not isinstance(secret, str) or not secret:
            raise ValueError("the JWT secret must be a non-empty string")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"qewd-twisted qewd claim v1").derive(secret.encode("utf-8"))
        self._aead = AESGCM(key)
        self._plain_by_claim: dict[str, bytes] = {}
        self.cache_size = cache_size

    def encrypt(self, obj: Any) -> str:
        plain = _js_json(obj)
        nonce = os.urandom(12)
        claim = self.PREFIX + _b64url(nonce + self._aead.encrypt(nonce, plain, None))
        if self.cache_size > 0:
            _bounded_put(self._plain_by_claim, claim, plain, self.cache_size)
        return claim

    def decrypt(self, claim: str) -> Any:
        if not isinstance(claim, str):
            raise TypeError("the claim must be a string")
        known = self._plain_by_claim.get(claim)
        if known is not None:
            return _load_json(known)
        if not claim.startswith(self.PREFIX):
            raise ValueError("not an aes-256-gcm claim")
        raw = _b64url_decode(claim[len(self.PREFIX):])
        if raw is None or len(raw) < 12 + 16:
            raise ValueError("malformed aes-256-gcm claim")
        try:
            plain = self._aead.decrypt(raw[:12], raw[12:], None)
        except InvalidTag:
            raise ValueError("the claim does not authenticate under this secret") from None
        obj = _load_json(plain)
        if self.cache_size > 0:
            _bounded_put(self._plain_by_claim, claim, plain, self.cache_size)
        return obj


class SecretCipher:
    """The ``qewd`` claim's cipher (§3.3): AES-256-CBC, PKCS#7, key and IV from the secret.

    The IV is fixed per secret, so encryption is deterministic: QEWD.js and we produce the same
    hex for the same object, which is what makes a re-issued token bit-identical. There is no
    MAC here: the JWT signature covers the ciphertext, and it is always checked first.
    """

    __slots__ = ("_cipher", "_hex_by_plain", "_plain_by_hex", "cache_size")

    def __init__(self, secret: str, cache_size: int = 20000) -> None:
        if not isinstance(secret, str) or not secret:
            raise ValueError("the JWT secret must be a non-empty string")
        key, iv = evp_bytes_to_key(secret.encode("utf-8"))
        # Built once; each call only creates a (cheap) encryption or decryption context.
        self._cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
        # Deterministic cipher: a session whose secrets did not change since the last token
        # re-encrypts to the same hex. Both maps hold only pairs this cipher made or opened.
        self._hex_by_plain: dict[bytes, str] = {}
        self._plain_by_hex: dict[str, bytes] = {}
        self.cache_size = cache_size

    def _remember(self, plain: bytes, hexed: str) -> None:
        if self.cache_size <= 0:
            return
        _bounded_put(self._hex_by_plain, plain, hexed, self.cache_size)
        _bounded_put(self._plain_by_hex, hexed, plain, self.cache_size)

    def encrypt(self, obj: Any) -> str:
        """Lowercase hex of the encrypted ``JSON.stringify``-style JSON of ``obj``.

        Raises ValueError (NaN, circular) or TypeError (not JSON-able) for what JSON cannot hold.
        """
        plain = _js_json(obj)
        hexed = self._hex_by_plain.get(plain)
        if hexed is not None:
            return hexed
        padder = padding.PKCS7(128).padder()
        data = padder.update(plain) + padder.finalize()
        encryptor = self._cipher.encryptor()
        hexed = (encryptor.update(data) + encryptor.finalize()).hex()
        self._remember(plain, hexed)
        return hexed

    def decrypt(self, ciphertext: str) -> Any:
        """The object encrypted in ``ciphertext`` (hex). ValueError if it is not hex, not
        properly padded (wrong secret) or not JSON (TypeError if it is not a string); the
        message never includes the data."""
        if not isinstance(ciphertext, str):
            raise TypeError("ciphertext must be a hex string")
        known = self._plain_by_hex.get(ciphertext)
        if known is not None:
            return _load_json(known)
        try:
            raw = bytes.fromhex(ciphertext)
        except ValueError:
            raise ValueError("ciphertext is not hex") from None
        if not raw or len(raw) % 16:
            raise ValueError("ciphertext is not a whole number of AES blocks")
        decryptor = self._cipher.decryptor()
        padded = decryptor.update(raw) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            plain = unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise ValueError("bad padding: wrong secret or corrupted ciphertext") from None
        try:
            obj = _load_json(plain)
        except ValueError:
            raise ValueError("decrypted data is not JSON") from None
        self._remember(plain, ciphertext)
        return obj


class _SharedSecretHMAC(HMACAlgorithm):
    """PyJWT's HMAC for QEWD's shared passphrases.

    QEWD secrets are operator-chosen strings of any length (``someSecret123``) and every node in
    a mesh must use the same one, so PyJWT's short-key warning (emitted on every verification)
    has nothing actionable to say. Only HS* is ever registered, so its PEM-key guard against
    HS/RS confusion has nothing to guard either; the key is used as raw bytes, as jwt-simple does.
    """

    def prepare_key(self, key: Any) -> bytes:
        return key if isinstance(key, bytes) else str(key).encode("utf-8")

    def check_key_length(self, key: bytes) -> str | None:
        return None


def _default_clock() -> IReactorTime:
    from twisted.internet import reactor

    return reactor  # type: ignore[return-value]


class TokenCodec:
    """Makes, verifies and re-issues QEWD JWTs for one node (§3).

    ``secret`` signs every token we issue and keys the ``qewd`` cipher. ``algorithms`` are the
    ones accepted when verifying (a subset of HS256/HS384/HS512; we always sign with HS256, as
    QEWD.js does). ``clock`` is an ``IReactorTime`` for ``exp``/``nbf``/``iat`` (default: the
    global reactor, looked up on first use). ``previous_secrets`` are old secrets still accepted
    for verification and decryption during a rotation; new tokens always use ``secret``.
    """

    def __init__(
        self,
        secret: str,
        algorithms: Iterable[str] = ("HS256",),
        clock: IReactorTime | None = None,
        initial_timeout: float = 300,
        *,
        previous_secrets: Iterable[str] = (),
        max_token_length: int = 16384,
        cache_size: int = 20000,
        cipher: str = "qewd",
    ) -> None:
        secrets = [secret, *previous_secrets]
        if not all(isinstance(s, str) and s for s in secrets):
            raise ValueError("JWT secrets must be non-empty strings")
        algs = (algorithms,) if isinstance(algorithms, str) else tuple(dict.fromkeys(algorithms))
        unsupported = [a for a in algs if a not in _HASHES]
        if not algs or unsupported:
            raise ValueError(
                "JWT algorithms must be some of HS256, HS384, HS512; got "
                + ", ".join(map(repr, algs or ["nothing"]))
            )
        self.algorithms = algs
        self.initial_timeout = check_timeout(initial_timeout)
        if type(max_token_length) is not int or max_token_length < 1:
            raise ValueError("max_token_length must be a positive integer")
        self.max_token_length = max_token_length
        self._clock = clock

        self._keys = [s.encode("utf-8") for s in secrets]
        if cipher not in ("qewd", "aes-256-gcm"):
            raise ValueError("cipher must be 'qewd' or 'aes-256-gcm'")
        self._ciphers = [SecretCipher(s, cache_size) for s in secrets]
        # Claims in the GCM format are read whatever ``cipher`` says (a mesh can migrate);
        # ``cipher`` chooses what this codec writes.
        self._gcm_ciphers = [GCMSecretCipher(s, cache_size) for s in secrets]
        # Tokens this codec signed, or whose signature it has verified, with their payload
        # JSON: a client sends back the token we gave it, so most verifications are a lookup.
        # exp/nbf are still checked on every use. Bounded; oldest entries go first.
        self._seen: dict[str, bytes] = {}
        self._cache_size = cache_size
        self._cipher: SecretCipher | GCMSecretCipher = (
            self._gcm_ciphers[0] if cipher == "aes-256-gcm" else self._ciphers[0])
        # HMAC with the key already absorbed; encode() copies it instead of re-keying.
        self._mac = hmac.new(self._keys[0], digestmod=hashlib.sha256)
        self._jws = PyJWS(algorithms=list(algs))
        for alg in algs:
            self._jws.unregister_algorithm(alg)
            self._jws.register_algorithm(alg, _SharedSecretHMAC(_HASHES[alg]))

    # -- time ---------------------------------------------------------------------------

    def _now(self) -> float:
        if self._clock is None:
            self._clock = _default_clock()
        return self._clock.seconds()

    # -- verification ---------------------------------------------------------------------

    def decode(self, token: str) -> dict[str, Any]:
        """Verify ``token`` as jwt-simple does and return its claims (``qewd`` still encrypted).

        Checks, in jwt-simple's order (§3.1): presence, 3 segments, header and payload JSON,
        algorithm allowed, signature, ``nbf``, ``exp``. Raises TokenError.
        """
        return self._verify(token, check_times=True)

    def _verify(self, token: Any, check_times: bool) -> dict[str, Any]:
        if not isinstance(token, str) or not token:
            raise TokenError(NO_TOKEN)
        if len(token) > self.max_token_length:
            raise TokenError(TOO_LONG)
        known = self._seen.get(token)
        if known is not None:
            payload = _load_json(known)
            if check_times:
                self._check_times(payload)
            return payload
        segments = token.split(".")
        if len(segments) != 3:
            raise TokenError(BAD_SEGMENTS)
        header = _parse_segment(segments[0], "header")
        payload = _parse_segment(segments[1], "payload")
        # The allow-list is checked before the signature, so ``alg: none`` (or HS512 when only
        # HS256 is allowed) gets jwt-simple's text (§3.1), whatever the signature segment holds.
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise TokenError(ALGORITHM_NOT_SUPPORTED)
        if _b64url_decode(segments[2]) is None:
            raise TokenError(BAD_SIGNATURE)  # jwt-simple: a string that is not the signature
        self._check_signature(token)
        self._remember(token, _b64url_decode(segments[1]) or b"")
        if check_times:
            self._check_times(payload)
        return payload

    def _remember(self, token: str, payload_json: bytes) -> None:
        # bounded in count by cache_size and per entry by max_token_length
        if self._cache_size > 0 and payload_json and len(token) <= self.max_token_length:
            _bounded_put(self._seen, token, payload_json, self._cache_size)

    def _check_signature(self, token: str) -> None:
        # PyJWT's JWS layer checks the signature only (it has no claim checks to turn off).
        # Segments and algorithm were validated above, so anything else it refuses is a header
        # field jwt-simple would ignore but PyJWT will not (kid, crit, b64).
        for key in self._keys:
            try:
                self._jws.decode_complete(token, key=key, algorithms=list(self.algorithms))
                return
            except InvalidSignatureError:
                continue
            except InvalidAlgorithmError:
                raise TokenError(ALGORITHM_NOT_SUPPORTED) from None
            except (PyJWTError, ValueError, TypeError):
                raise _syntax(BAD_HEADER) from None
        raise TokenError(BAD_SIGNATURE)

    def _check_times(self, payload: Mapping[str, Any]) -> None:
        # jwt-simple: "not yet active" when now < nbf, "expired" when now > exp (both compared
        # in ms, which is the same thing). A present but non-numeric value fails closed.
        now = self._now()
        if "nbf" in payload:
            nbf = payload["nbf"]
            if not _is_number(nbf) or nbf > now:
                raise TokenError(NOT_ACTIVE)
        if "exp" in payload:
            exp = payload["exp"]
            if not _is_number(exp) or now > exp:
                raise TokenError(EXPIRED)

    def _decrypt_qewd(self, value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            gcm = value.startswith(GCMSecretCipher.PREFIX)
            for cipher in self._gcm_ciphers if gcm else self._ciphers:
                try:
                    secrets = cipher.decrypt(value)
                except ValueError:
                    continue
                if isinstance(secrets, dict):
                    return secrets
        raise TokenError(INVALID_QEWD)

    def session(self, token: str) -> JWTSession:
        """Verify ``token`` and return its claims as a ``JWTSession`` for a handler (§3.4).

        The secret claims are decrypted and promoted to the top level. A secret always wins
        over a public claim of the same name, so a forged public ``authenticated: true`` can
        never shadow the encrypted value (QEWD.js only promotes over falsy public values).
        Secret claims with a reserved name (``exp``, ``application``...) are dropped: they would
        contradict the claims the token layer reads. Raises TokenError.
        """
        return self.session_from_payload(self.decode(token))

    def session_from_payload(self, payload: Mapping[str, Any]) -> JWTSession:
        """``session`` for claims ``decode`` has already verified (no second verification)."""
        secrets = self._decrypt_qewd(payload.get("qewd"))
        claims = {k: v for k, v in payload.items() if k not in INTERNAL_CLAIMS}
        names = []
        for name, value in secrets.items():
            if name not in RESERVED_CLAIMS:
                claims[name] = value
                names.append(name)
        return JWTSession(claims, secret_names=names)

    # -- issuing ------------------------------------------------------------------------

    def encode(self, payload: Mapping[str, Any]) -> str:
        """Sign ``payload`` as it is: HS256, header ``{"typ":"JWT","alg":"HS256"}``, claims in
        the mapping's order, compact JSON with non-ASCII kept (§3.1).

        This is the low-level step; use ``issue`` for a ``JWTSession`` (encode would publish its
        secret claims in clear, so it refuses one).
        """
        if isinstance(payload, JWTSession):
            raise TypeError("encode() would put a JWTSession's secret claims in clear: use issue()")
        if not isinstance(payload, Mapping):
            raise TypeError("a JWT payload must be a mapping")
        payload_json = _js_json(dict(payload))
        signing_input = _HS256_HEADER + "." + _b64url(payload_json)
        mac = self._mac.copy()
        mac.update(signing_input.encode("ascii"))
        token = signing_input + "." + _b64url(mac.digest())
        self._remember(token, payload_json)
        return token

    def register_token(
        self, application: str, secret_claims: Mapping[str, Any], timeout: float | None = None
    ) -> str:
        """The token ``ewd-register`` returns in JWT mode (§2.2, §3.2).

        Claims ``exp, iat, iss, application, timeout, qewd``; ``qewd`` encrypts
        ``secret_claims`` (the node passes ``socketId``, ``ipAddress``, ``authenticated``).
        """
        timeout = self.initial_timeout if timeout is None else check_timeout(timeout)
        iat = int(self._now())
        return self.encode(
            {
                "exp": iat + timeout,
                "iat": iat,
                "iss": ISSUER,
                "application": application,
                "timeout": timeout,
                "qewd": self._cipher.encrypt(dict(secret_claims)),
            }
        )

    def _session_claims(self, session: JWTSession, **head: Any) -> dict[str, Any]:
        """The payload for ``session``: head claims in §3.2 order, ``qewd`` re-encrypted from
        the secret names present in the mapping, then the public claims in insertion order."""
        claims: dict[str, Any] = {}
        for name in _HEAD_CLAIMS:
            if name in head:
                claims[name] = head[name]
            elif name in session:
                claims[name] = session[name]
        secrets = session.secret_claims()
        claims["qewd"] = self._cipher.encrypt(secrets)
        for name, value in session.items():
            if name not in claims and name not in secrets and name not in INTERNAL_CLAIMS:
                claims[name] = value
        return claims

    def issue(self, session: JWTSession) -> str:
        """Re-issue a handler's session after a successful reply (§3.5).

        Secret claims go back into ``qewd`` (a name made public is left out of it, a deleted
        one too), ``iat = now``, ``exp = now + session.timeout`` (the configured initial
        timeout if the claim is missing), signed HS256 with this node's secret. Raises
        ValueError if a handler stored an unusable ``timeout`` (QEWD.js would mint a token that
        never expires), TypeError/ValueError if a claim is not JSON-able.
        """
        timeout = session.get("timeout")
        timeout = self.initial_timeout if timeout is None else check_timeout(timeout)
        iat = int(self._now())
        return self.encode(
            self._session_claims(
                session, exp=iat + timeout, iat=iat, iss=session.get("iss", ISSUER), timeout=timeout
            )
        )

    def with_application(
        self, payload_or_session: Mapping[str, Any] | JWTSession, application: str
    ) -> str:
        """Re-sign already verified claims with ``application`` replaced, ``exp``/``iat``
        untouched: what a primary does before forwarding to a micro-service and after its
        reply (§4.4 steps 2 and 6).

        A plain payload (from ``decode``) keeps its ``qewd`` ciphertext; a ``JWTSession`` has
        its secrets re-encrypted first, as ``issue`` does.
        """
        if isinstance(payload_or_session, JWTSession):
            return self.encode(self._session_claims(payload_or_session, application=application))
        claims = {k: v for k, v in payload_or_session.items() if k != "qewd_list"}
        claims["application"] = application
        self._rekey_qewd(claims)
        return self.encode(claims)

    def refresh(self, token: str, verify_expiry: bool = False) -> str:
        """Extend a link's own registration token for ``ewd-reregister`` (§3.6, §4.2 step 5).

        The signature is always verified (QEWD.js re-signs anything it can decode, §9 item 3);
        expiry (and ``nbf``) only if ``verify_expiry``. Then ``iat = now`` and ``exp = now +
        timeout`` (the token's ``timeout`` claim, else the configured initial timeout) and the
        token is re-signed with the current secret. Raises TokenError.
        """
        payload = self._verify(token, check_times=verify_expiry)
        try:
            timeout = check_timeout(payload.get("timeout"))
        except ValueError:
            timeout = self.initial_timeout
        iat = int(self._now())
        claims = {"exp": iat + timeout, "iat": iat}
        claims.update((k, v) for k, v in payload.items() if k not in claims)
        self._rekey_qewd(claims)
        return self.encode(claims)

    def _rekey_qewd(self, claims: dict[str, Any]) -> None:
        """During a secret rotation, move a ``qewd`` claim encrypted under an old secret to the
        current one, so a token we re-sign stays readable once the old secret is retired."""
        if len(self._ciphers) == 1 or not isinstance(claims.get("qewd"), str):
            return
        gcm = claims["qewd"].startswith(GCMSecretCipher.PREFIX)
        for index, cipher in enumerate(self._gcm_ciphers if gcm else self._ciphers):
            try:
                secrets = cipher.decrypt(claims["qewd"])
            except ValueError:
                continue
            if index:
                claims["qewd"] = self._cipher.encrypt(secrets)
            return
