# -*- test-case-name: tests.test_tokens -*-
"""
The ``qewd`` claim's ciphers (PROTOCOL.md §3.3) and the JSON and base64url primitives that
QEWD's JWTs need, byte for byte: JavaScript's ``JSON.stringify`` layout and jwt-simple's
canonical unpadded base64url. Used by tokens.py; nothing here logs or puts data in errors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from qewd_twisted import _json

__all__ = ["SCALARS", "GCMSecretCipher", "SecretCipher", "b64url", "b64url_decode", "bounded_put",
           "evp_bytes_to_key", "flat_object", "js_json", "load_json"]

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


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


def load_json(data: bytes) -> Any:
    """Strict JSON from UTF-8 bytes; ValueError on anything JSON.parse would refuse."""
    try:
        return _json.loads_strict(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def js_json(obj: Any) -> bytes:
    """UTF-8 of the JSON ``JSON.stringify`` would write: compact, non-ASCII kept, key order kept.

    A string with a lone surrogate cannot be UTF-8; like ES2019 ``JSON.stringify`` we then
    escape it (ensure_ascii escapes all non-ASCII, which parses back to the same value).
    """
    text = _json.dumps(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _json.dumps_ascii(obj).encode("ascii")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes | None:
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
    return raw if b64url(raw) == segment else None


SCALARS = frozenset({str, int, float, bool, type(None)})


def flat_object(obj: Any) -> dict[str, Any] | None:
    """``obj`` if it is a dict of str keys and scalar values (a shallow copy of it is then a
    full copy, and it is exactly what parsing its JSON gives back), else None."""
    if type(obj) is not dict:
        return None
    for key, value in obj.items():
        if type(key) is not str or type(value) not in SCALARS:
            return None
    return obj


def bounded_put(cache: dict[Any, Any], key: Any, value: Any, size: int) -> None:
    """Insert into a dict used as a bounded cache, dropping the oldest entry when full."""
    if key not in cache and len(cache) >= size:
        del cache[next(iter(cache))]
    cache[key] = value


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
        plain = js_json(obj)
        nonce = os.urandom(12)
        claim = self.PREFIX + b64url(nonce + self._aead.encrypt(nonce, plain, None))
        if self.cache_size > 0:
            bounded_put(self._plain_by_claim, claim, plain, self.cache_size)
        return claim

    def decrypt(self, claim: str) -> Any:
        if not isinstance(claim, str):
            raise TypeError("the claim must be a string")
        known = self._plain_by_claim.get(claim)
        if known is not None:
            return load_json(known)
        if not claim.startswith(self.PREFIX):
            raise ValueError("not an aes-256-gcm claim")
        raw = b64url_decode(claim[len(self.PREFIX):])
        if raw is None or len(raw) < 12 + 16:
            raise ValueError("malformed aes-256-gcm claim")
        try:
            plain = self._aead.decrypt(raw[:12], raw[12:], None)
        except InvalidTag:
            raise ValueError("the claim does not authenticate under this secret") from None
        obj = load_json(plain)
        if self.cache_size > 0:
            bounded_put(self._plain_by_claim, claim, plain, self.cache_size)
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
        # _plain_by_hex also keeps the parsed object when it is flat (``flat_object``): a client
        # sends back the claim we gave it, and a dict copy is cheaper than parsing the JSON.
        self._hex_by_plain: dict[bytes, str] = {}
        self._plain_by_hex: dict[str, tuple[bytes, dict[str, Any] | None]] = {}
        self.cache_size = cache_size

    def _remember(self, plain: bytes, hexed: str, obj: Any = None) -> None:
        if self.cache_size <= 0:
            return
        flat = flat_object(obj)
        bounded_put(self._hex_by_plain, plain, hexed, self.cache_size)
        bounded_put(self._plain_by_hex, hexed,
                     (plain, None if flat is None else dict(flat)), self.cache_size)

    def encrypt(self, obj: Any) -> str:
        """Lowercase hex of the encrypted ``JSON.stringify``-style JSON of ``obj``.

        Raises ValueError (NaN, circular) or TypeError (not JSON-able) for what JSON cannot hold.
        """
        plain = js_json(obj)
        hexed = self._hex_by_plain.get(plain)
        if hexed is not None:
            return hexed
        padder = padding.PKCS7(128).padder()
        data = padder.update(plain) + padder.finalize()
        encryptor = self._cipher.encryptor()
        hexed = (encryptor.update(data) + encryptor.finalize()).hex()
        self._remember(plain, hexed, obj)
        return hexed

    def decrypt(self, ciphertext: str) -> Any:
        """The object encrypted in ``ciphertext`` (hex). ValueError if it is not hex, not
        properly padded (wrong secret) or not JSON (TypeError if it is not a string); the
        message never includes the data."""
        if not isinstance(ciphertext, str):
            raise TypeError("ciphertext must be a hex string")
        known = self._plain_by_hex.get(ciphertext)
        if known is not None:
            return dict(known[1]) if known[1] is not None else load_json(known[0])
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
            obj = load_json(plain)
        except ValueError:
            raise ValueError("decrypted data is not JSON") from None
        self._remember(plain, ciphertext, obj)
        return obj
