# -*- test-case-name: tests.test_tokens,tests.test_token_attacks -*-
"""
QEWD-compatible JWTs (docs/protocol.md §3): what QEWD.js's jwt-simple writes and reads, bit for bit.

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

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from typing import Any

from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS
from jwt.exceptions import (
    InvalidAlgorithmError,
    InvalidSignatureError,
    PyJWTError,
)
from twisted.internet.interfaces import IReactorTime

from qewd_twisted.auth.ciphers import (
    GCMSecretCipher,
    SecretCipher,
    SCALARS,
    b64url,
    b64url_decode,
    bounded_put,
    flat_object,
    js_json,
    load_json,
    evp_bytes_to_key,
)
from qewd_twisted.auth.sessions import INTERNAL_CLAIMS, RESERVED_CLAIMS, JWTSession, check_timeout

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
        "ignores this and trusts the public claims (docs/protocol.md §9 item 4); we refuse it."
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


_HS256_HEADER = b64url(b'{"typ":"JWT","alg":"HS256"}')  # §3.1, byte for byte
_STANDARD_HEADER = {"typ": "JWT", "alg": "HS256"}


def _parse_segment(segment: str, what: str) -> dict[str, Any]:
    raw = b64url_decode(segment)
    if raw is None:
        raise _syntax(BAD_BASE64)
    return _parse_json(raw, what)


def _parse_json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = load_json(raw)
    except ValueError:
        raise _syntax(f"Invalid JSON in JWT {what}") from None
    if not isinstance(value, dict):
        raise _syntax(f"JWT {what} is not a JSON object")
    return value


_SCALAR_TYPES = SCALARS - {float}  # floats never count as the same (see _Seen)


class _Seen:
    """What the token cache keeps per token: the payload's JSON, the payload itself when it is
    flat (``flat``: copying it is cheaper than parsing), and whether the token is exactly
    what ``encode`` would write for that payload (our header, current key, our JSON layout).

    For such a token ``issue`` can return the token itself when a handler leaves the session
    as it was and the second (``iat``) has not changed: same claims, same bytes, same
    signature, without the JSON encoding, base64 and HMAC. ``names`` and ``types`` (the
    payload's claim names and value types, in order) make that comparison cheap.

    ``issued_from`` is set once ``issue`` has returned this token for a session: ``(iat,
    secret names, items (a dict), names, value types)`` of that session. A later session equal to it, item for
    item and type for type, in the same second, re-issues to this very token without even
    building its claims (see ``TokenCodec.issue``).

    ``session`` is set once ``session_from_payload`` has built the session of a flat payload
    whose secret claims are scalars too: ``(claims, secret names)``, the secrets decrypted and
    promoted. A token's claims and this codec's keys never change, so later sessions of the
    same token are copies of it (no decryption, no promotion); expiry is still checked by
    ``decode`` on every use.
    """

    __slots__ = ("json", "flat", "ours", "names", "types", "issued_from", "session", "exp")

    def __init__(self, json: bytes, flat: dict[str, Any] | None, ours: bool) -> None:
        self.json = json
        self.flat = flat
        # ``exp`` for ``decode``'s shortcut: a flat payload with no ``nbf`` and a numeric (or
        # no: never expires) ``exp``; None for anything else, checked in full every time
        self.exp: float | None = None
        if flat is not None and "nbf" not in flat:
            exp = flat.get("exp", math.inf)
            if _is_number(exp):
                self.exp = exp
        self.issued_from: tuple[Any, ...] | None = None
        self.session: tuple[dict[str, Any], list[str]] | None = None
        types = tuple(map(type, flat.values())) if flat is not None else ()
        # floats never count as the same: 0.0 == -0.0, but they encode differently
        self.ours = ours and flat is not None and float not in types
        self.names = tuple(flat) if self.ours else ()
        self.types = types if self.ours else ()


def _session(claims: dict[str, Any], names: list[str], token: str | None,
             seen: _Seen | None) -> JWTSession:
    """A handler's session of ``claims`` (``from_verified`` copies them, scalars only when
    shared) with secret ``names``; it remembers the token it came from when ``issue`` may
    hand that token out again (``_Seen.ours``)."""
    session = JWTSession.from_verified(claims, names)
    if seen is not None and seen.ours:
        object.__setattr__(session, "_origin", (token, seen))
    return session


def _same_claims(claims: dict[str, Any], seen: _Seen) -> bool:
    """Whether ``claims`` would encode to the same JSON as ``seen``'s payload: same names in
    the same order, equal values of the same types (so ``True`` is not ``1``)."""
    return (claims == seen.flat and tuple(claims) == seen.names
            and tuple(map(type, claims.values())) == seen.types)


def _is_number(value: Any) -> bool:
    # ints are compared exactly (math.isnan would overflow on a 400-digit JSON integer)
    return type(value) is int or (type(value) is float and not math.isnan(value))


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
        # Tokens this codec signed, or whose signature it has verified: a client sends back
        # the token we gave it, so most verifications are a lookup (exp/nbf are still checked
        # on every use). Bounded; oldest entries go first. See ``_Seen``.
        self._seen: dict[str, _Seen] = {}
        self._rewritten: dict[tuple[str, str], str] = {}  # rewrite(): a quarter of the size
        self._cache_size = cache_size
        self._cipher: SecretCipher | GCMSecretCipher = (
            self._gcm_ciphers[0] if cipher == "aes-256-gcm" else self._ciphers[0])
        # HMAC with the key already absorbed; encode() copies it instead of re-keying.
        self._macs = [hmac.new(k, digestmod=hashlib.sha256) for k in self._keys]
        self._mac = self._macs[0]
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
        known = self._seen.get(token) if type(token) is str else None
        if known is not None and known.exp is not None:
            # verified before, plain claims: only the expiry is left to check (_check_times)
            if self._now() > known.exp:
                raise TokenError(EXPIRED)
            return dict(known.flat)  # type: ignore[arg-type]
        return self._verify(token, check_times=True)

    def known(self, token: str) -> _Seen | None:
        """The cache entry of ``token`` when ``session(token)`` would be a copy of a session
        already built from it, now: a token this codec issued or verified before, its claims
        flat, its session built once (``session_from_payload``) and its ``exp`` not passed.
        None for anything else, with nothing checked or changed (``session`` says why).
        The node's express path (``Node._express``) reads the entry's ``flat`` claims and
        makes the session with ``session_of``."""
        seen = self._seen.get(token)
        if seen is None or seen.session is None or seen.exp is None or self._now() > seen.exp:
            return None
        return seen

    @staticmethod
    def session_of(token: str, seen: _Seen) -> JWTSession:
        """The session ``session_from_payload(decode(token), token)`` returns for a token
        ``known`` gave ``seen`` for (a copy of the session built from it once)."""
        claims, names = seen.session  # type: ignore[misc]
        return _session(claims, names, token, seen)

    def _verify(self, token: Any, check_times: bool) -> dict[str, Any]:
        if not isinstance(token, str) or not token:
            raise TokenError(NO_TOKEN)
        if len(token) > self.max_token_length:
            raise TokenError(TOO_LONG)
        known = self._seen.get(token)
        if known is not None:
            payload = dict(known.flat) if known.flat is not None else load_json(known.json)
            if check_times:
                self._check_times(payload)
            return payload
        segments = token.split(".")
        if len(segments) != 3:
            raise TokenError(BAD_SEGMENTS)
        # QEWD's own header (every QEWD.js and qewd-twisted token has it, byte for byte) needs
        # no parsing; any other goes through JSON and, below, PyJWT.
        standard = segments[0] == _HS256_HEADER
        header = _STANDARD_HEADER if standard else _parse_segment(segments[0], "header")
        payload_json = b64url_decode(segments[1])
        if payload_json is None:
            raise _syntax(BAD_BASE64)
        payload = _parse_json(payload_json, "payload")
        # The allow-list is checked before the signature, so ``alg: none`` (or HS512 when only
        # HS256 is allowed) gets jwt-simple's text (§3.1), whatever the signature segment holds.
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise TokenError(ALGORITHM_NOT_SUPPORTED)
        signature = b64url_decode(segments[2])
        if signature is None:
            raise TokenError(BAD_SIGNATURE)  # jwt-simple: a string that is not the signature
        if standard:
            key_index = self._check_hs256(token, signature)
        else:
            key_index = self._check_signature(token)
        # Byte for byte what encode() would write for these claims (our header, our current
        # key, our JSON layout): issue() may hand the same token out again (see _Seen).
        ours = (key_index == 0 and segments[0] == _HS256_HEADER
                and flat_object(payload) is not None and js_json(payload) == payload_json)
        self._remember(token, payload_json, payload, ours)
        if check_times:
            self._check_times(payload)
        return payload

    def _remember(self, token: str, payload_json: bytes, payload: Any, ours: bool) -> None:
        # bounded in count by cache_size and per entry by max_token_length
        if self._cache_size > 0 and payload_json and len(token) <= self.max_token_length:
            flat = flat_object(payload)
            entry = _Seen(payload_json, None if flat is None else dict(flat), ours)
            bounded_put(self._seen, token, entry, self._cache_size)

    def _check_hs256(self, token: str, signature: bytes) -> int:
        """``_check_signature`` for QEWD's standard header: HMAC-SHA256 of the signing input
        under each secret, compared in constant time (what PyJWT does for this header, without
        its header parsing and key preparation per call)."""
        signing_input = token[: token.rindex(".")].encode("ascii")
        for index, base in enumerate(self._macs):
            mac = base.copy()
            mac.update(signing_input)
            if hmac.compare_digest(mac.digest(), signature):
                return index
        raise TokenError(BAD_SIGNATURE)

    def _check_signature(self, token: str) -> int:
        """The index in ``_keys`` of the secret that signed ``token``; TokenError if none."""
        # PyJWT's JWS layer checks the signature only (it has no claim checks to turn off).
        # Segments and algorithm were validated above, so anything else it refuses is a header
        # field jwt-simple would ignore but PyJWT will not (kid, crit, b64).
        for index, key in enumerate(self._keys):
            try:
                self._jws.decode_complete(token, key=key, algorithms=list(self.algorithms))
                return index
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
        return self.session_from_payload(self.decode(token), token)

    def session_from_payload(
        self, payload: Mapping[str, Any], token: str | None = None
    ) -> JWTSession:
        """``session`` for claims ``decode`` has already verified (no second verification).

        ``token`` is the token they came from, if the caller has it: when ``issue`` later
        finds the session unchanged within the same second, it returns that token again
        instead of encoding and signing identical claims.
        """
        seen = self._seen.get(token) if token is not None else None
        known = seen is not None and seen.flat is not None and payload == seen.flat
        if known and seen.session is not None:  # type: ignore[union-attr]
            claims, names = seen.session  # type: ignore[union-attr]
        else:
            secrets = self._decrypt_qewd(payload.get("qewd"))
            claims = {k: v for k, v in payload.items() if k not in INTERNAL_CLAIMS}
            names = []
            for name, value in secrets.items():
                if name not in RESERVED_CLAIMS:
                    claims[name] = value
                    names.append(name)
            if known and flat_object(claims) is not None:
                seen.session = (claims, names)  # type: ignore[union-attr]
        return _session(claims, names, token, seen)

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
        payload_json = js_json(dict(payload))
        signing_input = _HS256_HEADER + "." + b64url(payload_json)
        mac = self._mac.copy()
        mac.update(signing_input.encode("ascii"))
        token = signing_input + "." + b64url(mac.digest())
        self._remember(token, payload_json, payload, True)
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
        iat = int(self._now())
        origin = session._origin
        if origin is not None:
            was = origin[1].issued_from
            # equal items (a dict compare), in the same order, of the same types
            if (was is not None and was[0] == iat and was[2] == session
                    and was[3] == tuple(session) and was[1] == tuple(session._secrets)
                    and was[4] == tuple(map(type, session.values()))):
                return origin[0]  # the same session, the same second: the same token
        timeout = session.get("timeout")
        timeout = self.initial_timeout if timeout is None else check_timeout(timeout)
        claims = self._session_claims(
            session, exp=iat + timeout, iat=iat, iss=session.get("iss", ISSUER), timeout=timeout
        )
        if origin is not None and _same_claims(claims, origin[1]):
            # what encode(claims) would return, byte for byte (see _Seen)
            self._issued_from(origin[1], session, iat)
            return origin[0]
        return self.encode(claims)

    def _issued_from(self, seen: _Seen, session: JWTSession, iat: int) -> None:
        """Note on a token's cache entry a session built from that token (so its items are in
        the order ``session_from_payload`` gives them) that re-issues to the token itself.
        Only for the deterministic cipher (an AES-GCM ``qewd`` differs on every issue) and
        sessions of scalar, non-float values (nothing a handler could change in place)."""
        if self._cipher is not self._ciphers[0] or seen.issued_from is not None:
            return
        types = tuple(map(type, session.values()))
        if float in types or not _SCALAR_TYPES.issuperset(types):
            return
        seen.issued_from = (iat, tuple(session._secrets), dict(session), tuple(session), types)

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

    def rewrite(self, token: str, application: str) -> str:
        """``with_application(decode(token), application)``, remembered per (token,
        application): a master forwards a client's token, and relays a micro-service's, many
        times within the second it lives unchanged. The token is verified (a cache lookup for
        a known one, ``exp``/``nbf`` included) on every call. Raises TokenError."""
        payload = self.decode(token)
        key = (token, application)
        known = self._rewritten.get(key)
        if known is None:
            known = self.with_application(payload, application)
            if self._cache_size > 0:
                bounded_put(self._rewritten, key, known, max(1, self._cache_size // 4))
        return known

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
