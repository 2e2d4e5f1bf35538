# -*- test-case-name: tests.documents.test_collation -*-
"""
Subscripts, values and M collation: the rules every back-end shares.

* A subscript is an ``int`` (a JavaScript safe integer) or a non-empty ``str``. A string that is
  a canonical integer (``"5"``, ``"-3"``, not ``"05"`` or ``"+5"``) *is* that integer, as in M
  and QEWD (``node.use("5")`` and ``node.use(5)`` are one node). ``None``, ``bool``, ``float``,
  containers: TypeError; ``""`` and strings holding ``"\\x01"`` (the separator of QEWD's Redis
  layout, refused everywhere so documents move between back-ends): ValueError.
* Collation (M's): integers first in numeric order, then strings in byte (code point) order.
  ``sort_key`` gives bytes whose ``memcmp`` order is that collation; ``path_key`` concatenates
  them (self-delimiting, so a path's key is a prefix of each descendant's).
* Values are stored as strings (QEWD's conversions on the way in: booleans ``"true"`` /
  ``"false"``, numbers as JavaScript prints them) and converted on the way out by
  ``convert`` (ewd-document-store's rules: ``"true"``/``"false"`` to bool, safe-integer
  numeric strings to int, anything else stays a string).

Imports nothing from the rest of the package.
"""

from __future__ import annotations

import math
import re
from typing import Any, Union

Subscript = Union[int, str]
Path = tuple  # tuple[Subscript, ...]

MAX_SAFE_INTEGER = 2**53 - 1
SEPARATOR = "\x01"

_CANONICAL_INT = re.compile(r"(?:0|-?[1-9][0-9]*)\Z")
_INT_TAG = b"\x01"
_STR_TAG = b"\x02"
_STR_END = b"\x00\x01"
_OFFSET = 2**63

__all__ = [
    "MAX_SAFE_INTEGER",
    "check_document_name",
    "check_subscript",
    "check_subscripts",
    "convert",
    "path_key",
    "prefix_bounds",
    "sort_key",
    "to_stored",
]


def check_document_name(name: Any) -> str:
    """``name`` if it can name a document (a non-empty str without ``\\x01``)."""
    if not isinstance(name, str):
        raise TypeError(f"a document name is a non-empty str, not {type(name).__name__}")
    if not name:
        raise ValueError("a document name cannot be empty")
    if SEPARATOR in name:
        raise ValueError("a document name cannot contain '\\x01'")
    return name


def check_subscript(sub: Any) -> Subscript:
    """The canonical form of one subscript (see the module docstring), or TypeError/ValueError."""
    t = type(sub)
    if t is str:
        if not sub:
            raise ValueError("a subscript cannot be an empty string")
        if SEPARATOR in sub:
            raise ValueError("a subscript cannot contain '\\x01'")
        c = sub[0]
        if (("0" <= c <= "9") or c == "-") and len(sub) <= 17 and _CANONICAL_INT.match(sub):
            n = int(sub)
            if -MAX_SAFE_INTEGER <= n <= MAX_SAFE_INTEGER:
                return n
        return sub
    if t is int:
        if -MAX_SAFE_INTEGER <= sub <= MAX_SAFE_INTEGER:
            return sub
        raise ValueError(f"integer subscript {sub} is outside ±(2**53-1)")
    if isinstance(sub, str):  # a str subclass: plain str from here on
        return check_subscript(str(sub))
    if isinstance(sub, int) and not isinstance(sub, bool):
        return check_subscript(int(sub))
    raise TypeError(f"a subscript is an int or a non-empty str, not {t.__name__}: {sub!r}")


def check_subscripts(subs: tuple) -> Path:
    """Canonical subscripts for a path (see ``check_subscript``)."""
    return tuple(check_subscript(s) for s in subs)


def _escape(s: str) -> bytes:
    b = s.encode("utf-8", "surrogatepass")
    return b.replace(b"\x00", b"\x00\xff") if b"\x00" in b else b


def sort_key(sub: Subscript) -> bytes:
    """Bytes whose memcmp order is M collation; self-delimiting (usable in ``path_key``)."""
    if type(sub) is int:
        return _INT_TAG + (sub + _OFFSET).to_bytes(8, "big")
    return _STR_TAG + _escape(sub) + _STR_END


def path_key(path: Path) -> bytes:
    """The concatenated sort keys of a path (b"" for a document's root)."""
    return b"".join([sort_key(s) for s in path])


def prefix_bounds(prefix: str) -> tuple[bytes, bytes]:
    """[low, high) of the sort keys of the string subscripts starting with ``prefix``."""
    low = _STR_TAG + _escape(prefix)
    return low, low + b"\xff"


def to_stored(value: Any) -> str:
    """A value as the store keeps it (a string), with QEWD's conversions.

    ``None`` stores ``""`` (as setDocument does with null); booleans ``"true"``/``"false"``;
    numbers as JavaScript prints them (``2.0`` is ``"2"``). Dicts and lists are refused: use
    ``set_document``.
    """
    t = type(value)
    if t is str:
        return value
    if t is int:
        return str(value)
    if t is bool:
        return "true" if value else "false"
    if value is None:
        return ""
    if t is float:
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return to_stored(int(value))
    if isinstance(value, float):
        return to_stored(float(value))
    if isinstance(value, (dict, list, tuple)):
        raise TypeError("a node's value is a scalar: use set_document() for a dict or list")
    raise TypeError(f"cannot store a {t.__name__} as a node's value")


# the first characters of anything convert() changes (numbers, whitespace, true/false)
_MAY_CONVERT = frozenset("0123456789+-. \t\n\r\x0b\x0c\u00a0\ufefftf")
_NUMERIC = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_RADIX = re.compile(r"0([xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)\Z")


def convert(stored: str | None) -> Any:
    """A stored string as QEWD's ``value`` returns it (ewd-document-store's convert).

    Missing is ``""``; ``"true"``/``"false"`` are booleans; a string JavaScript's ``Number()``
    reads as a safe integer (``"42"``, ``"-7"``, ``" 5 "``, ``"1e3"``, ``"0x10"``) is an int;
    everything else (``"1.5"`` included: QEWD only converts safe integers) is returned as is.
    """
    if stored is None:
        return ""
    if stored.isdigit() and stored.isascii():
        if len(stored) < 16:
            return int(stored)
        n = int(stored)
        return n if n <= MAX_SAFE_INTEGER else stored
    if not stored:
        return ""
    if stored[0] not in _MAY_CONVERT:
        return stored
    if stored == "true":
        return True
    if stored == "false":
        return False
    s = stored.strip()
    if not s:
        return stored  # JS: Number(" ") is 0 but parseFloat(" ") is NaN: stays a string
    if _NUMERIC.match(s):
        try:
            f = float(s)
        except ValueError:  # pragma: no cover - the pattern only admits float syntax
            return stored
        if f.is_integer() and abs(f) <= MAX_SAFE_INTEGER:
            return int(f)
        return stored
    m = _RADIX.match(s)
    if m:
        # Number("0x10") is 16 but parseFloat is 0 (not NaN): QEWD converts it
        n = int(s, 0)
        return n if n <= MAX_SAFE_INTEGER else stored
    return stored


def leading_int(stored: str | None) -> int:
    """The integer part QEWD's increment reads from a value (JS parseInt; 0 when none)."""
    if not stored:
        return 0
    m = re.match(r"\s*([+-]?[0-9]+)", stored)
    return int(m.group(1)) if m else 0
