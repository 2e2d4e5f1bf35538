# -*- test-case-name: tests.test_json -*-
"""
The stdlib's JSON codec without its per-call set-up (docs/performance.md).

``json.JSONEncoder.encode`` builds a new C encoder object on every call and ``json.loads`` runs
two regular expressions around the C scanner; a node encodes three or four small objects and
parses two or three per request. These helpers build the C encoder and scanner once and fall
back to the stdlib's own path for anything unusual, so output and errors are the same:

* ``dumps`` / ``dumps_ascii``: compact (``,`` and ``:``), key order kept, NaN and infinities
  refused (ValueError), anything not JSON-able refused (TypeError). Without the circular-check
  table a self-containing object would recurse: that RecursionError becomes the ValueError the
  stdlib raises ("Circular reference detected"), so callers see the same exception type.
* ``loads`` (Python's rules: NaN and Infinity accepted) and ``loads_strict`` (``JSON.parse``'s:
  refused): the C scanner on the whole text; leading or trailing whitespace and every error go
  through ``JSONDecoder.decode``, which gives the usual JSONDecodeError.

One more for the request path, where a node encodes every frame: ``dumps_utf8`` (UTF-8 bytes
out) uses orjson's codec, about 8x faster than the stdlib's on a reply (parsing stays with the
stdlib: orjson reads an integer beyond 64 bits as a float, where Python keeps it exact). Where
its text differs from the stdlib's: NaN and Infinity are written ``null``, as ``JSON.stringify``
writes them (the stdlib refuses them); a float below 1e-4 in magnitude has the same digits in
another notation (``0.00001`` and ``1e-6`` for the stdlib's ``1e-05`` and ``1e-06``: the same
value when parsed); a ``uuid.UUID`` is written as its text and an ``enum.Enum`` member as its
value (the stdlib refuses both). Everything else is the stdlib's text byte for byte
(tests/test_json.py): what orjson refuses (non-string keys, subclasses of dict, list, str and
int, datetimes, dataclasses, integers beyond 64 bits, lone surrogates, deep nesting, cycles) is
encoded by the stdlib path as before, with every non-ASCII character escaped when a string holds a lone surrogate
(ES2019 ``JSON.stringify`` escapes it; the text parses back to the same value).
"""

from __future__ import annotations

import json
from json import encoder as _enc
from typing import Any

try:
    import orjson
except ImportError:  # a declared dependency (setup.py); without it the stdlib does it all
    orjson = None  # type: ignore[assignment]

__all__ = ["dumps", "dumps_ascii", "dumps_utf8", "loads", "loads_strict"]


def _refuse(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity; JSON.parse does not, and NaN would defeat exp checks.
    raise ValueError("non-standard JSON constant")


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _c_encoder(ascii_only: bool) -> Any:
    if _enc.c_make_encoder is None:  # a Python without the _json accelerator
        return None
    escape = _enc.c_encode_basestring_ascii if ascii_only else _enc.c_encode_basestring
    if escape is None:
        return None
    # markers=None: no circular-reference table (see the module docstring); indent None,
    # separators ":" and ",", sort_keys False, skipkeys False, allow_nan False.
    return _enc.c_make_encoder(None, _refuse, escape, None, ":", ",", False, False, False)


_C_DUMPS = _c_encoder(False)
_C_DUMPS_ASCII = _c_encoder(True)


def _encode(c_encoder: Any, fallback: json.JSONEncoder, obj: Any) -> str:
    if c_encoder is None:
        return fallback.encode(obj)
    try:
        return "".join(c_encoder(obj, 0))
    except RecursionError:
        raise ValueError("Circular reference detected (or nested too deeply)") from None


def dumps(obj: Any) -> str:
    """Compact JSON with non-ASCII characters kept, as ``JSON.stringify`` writes it."""
    return _encode(_C_DUMPS, _ENCODER, obj)


def dumps_ascii(obj: Any) -> str:
    """The same with every non-ASCII character escaped (parses back to the same value)."""
    return _encode(_C_DUMPS_ASCII, _ASCII_ENCODER, obj)


_DECODER = json.JSONDecoder()
_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _decode(decoder: json.JSONDecoder, text: str) -> Any:
    try:
        obj, end = decoder.scan_once(text, 0)
    except StopIteration:  # empty, leading whitespace, or not JSON: let decode() say which
        return decoder.decode(text)
    if end != len(text):  # trailing whitespace is fine, anything else is "Extra data"
        return decoder.decode(text)
    return obj


def scanner() -> Any:
    """The C scanner ``loads`` uses: ``scan(text, offset) -> (value, end)``; StopIteration,
    ValueError or RecursionError where ``loads`` would raise (call ``loads`` then, for its
    error)."""
    return _DECODER.scan_once


def loads(text: str) -> Any:
    """``json.loads`` for a str (ValueError on bad JSON, RecursionError when too deep)."""
    return _decode(_DECODER, text)


def loads_strict(text: str) -> Any:
    """``loads`` refusing NaN, Infinity and -Infinity, as ``JSON.parse`` does."""
    return _decode(_STRICT_DECODER, text)


# orjson: subclasses, datetimes and dataclasses go to ``default`` (which refuses), so that the
# stdlib encodes them as it always has
_FAST_OPTIONS = 0 if orjson is None else (
    orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS)


def dumps_utf8(obj: Any) -> bytes:
    """JSON as ``JSON.stringify`` writes it, UTF-8 (with a lone surrogate, every non-ASCII
    character escaped, which parses back to the same value): orjson's bytes, or for what orjson
    refuses the stdlib's (see the module docstring). TypeError or ValueError for what is not
    JSON-able (a set, an object, a cycle)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj, _refuse, _FAST_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError: the stdlib decides
            pass
    text = dumps(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return dumps_ascii(obj).encode("ascii")

