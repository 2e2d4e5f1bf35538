# -*- test-case-name: tests.test_json -*-
"""
qewd_twisted._json: the stdlib codec with its set-up done once must behave exactly like it.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import re
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted import _json

_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(),
              st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12,
)


def _stdlib(obj, ensure_ascii=False):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=False)


class DumpsTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(_values)
    def test_same_text_as_stdlib(self, value) -> None:
        self.assertEqual(_json.dumps(value), _stdlib(value))
        self.assertEqual(_json.dumps_ascii(value), _stdlib(value, True))

    def test_same_errors_as_stdlib(self) -> None:
        loop: list = []
        loop.append(loop)
        for bad, kind in [(math.nan, ValueError), ({"x": math.inf}, ValueError),
                          ({"x": {1, 2}}, TypeError), ({(1, 2): 1}, TypeError),
                          (loop, ValueError)]:
            self.assertRaises(kind, _stdlib, bad)
            self.assertRaises(kind, _json.dumps, bad)
            self.assertRaises(kind, _json.dumps_ascii, bad)

    def test_usable_after_errors(self) -> None:
        shared = {"a": 1}
        self.assertRaises(TypeError, _json.dumps, [shared, object()])
        self.assertEqual(_json.dumps([shared, shared]), '[{"a":1},{"a":1}]')

    def test_keys_and_subclasses(self) -> None:
        class D(dict):
            pass
        value = {1: True, None: 2.5, "k": D(x=(1, 2))}
        self.assertEqual(_json.dumps(value), _stdlib(value))
        self.assertEqual(_json.dumps("é\u2028"), _stdlib("é\u2028"))


class LoadsTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(_values)
    def test_round_trip(self, value) -> None:
        text = _stdlib(value)
        self.assertEqual(_json.loads(text), json.loads(text))
        self.assertEqual(_json.loads_strict(text), json.loads(text))

    def test_whitespace_and_errors(self) -> None:
        self.assertEqual(_json.loads(' {"a": 1} \n'), {"a": 1})
        self.assertEqual(_json.loads('[1] '), [1])
        for bad in ["", " ", "[1] x", "{", "[1,]", "nul"]:
            with self.assertRaises(ValueError) as ours:
                _json.loads(bad)
            with self.assertRaises(ValueError) as theirs:
                json.loads(bad)
            self.assertEqual(str(ours.exception), str(theirs.exception))

    def test_constants(self) -> None:
        self.assertTrue(math.isnan(_json.loads("NaN")))
        self.assertEqual(_json.loads("[-Infinity]"), [-math.inf])
        for text in ["NaN", "[Infinity]", '{"exp": -Infinity}']:
            self.assertRaises(ValueError, _json.loads_strict, text)

    def test_too_deep(self) -> None:
        self.assertRaises(RecursionError, _json.loads, "[" * 100000 + "]" * 100000)


_no_floats = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12,
)


def _old_utf8(obj) -> bytes:
    """What the frames were before dumps_utf8: the stdlib's text, ASCII-escaped when it has a
    lone surrogate."""
    try:
        return _stdlib(obj).encode("utf-8")
    except UnicodeEncodeError:
        return _stdlib(obj, True).encode("ascii")


def _tiny_float(value) -> bool:
    if isinstance(value, float):
        return 0 < abs(value) < 1e-4
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, list) and any(_tiny_float(v) for v in value)


class DumpsUtf8Tests(SynchronousTestCase):
    """``dumps_utf8``: orjson where it accepts the value, the stdlib otherwise; the stdlib's
    bytes but for NaN, Infinity, tiny floats' notation, UUIDs and Enums."""

    @settings(max_examples=300, deadline=None)
    @given(_no_floats)
    def test_stdlib_bytes_without_floats(self, value) -> None:
        self.assertEqual(_json.dumps_utf8(value), _old_utf8(value))

    @settings(max_examples=300, deadline=None)
    @given(_values)
    def test_same_value_and_stdlib_bytes_but_tiny_floats(self, value) -> None:
        out = _json.dumps_utf8(value)
        self.assertEqual(json.loads(out), value)
        # the one difference in finite floats: below 1e-4 the notation (1e-05 / 0.00001)
        if not _tiny_float(value):
            self.assertEqual(out, _old_utf8(value))

    def test_as_json_stringify(self) -> None:
        self.assertEqual(_json.dumps_utf8([math.nan, math.inf, -math.inf]), b"[null,null,null]")
        self.assertEqual(_json.dumps_utf8([1e-7, 1e-5, 6.103515625e-05, 1e-4, 1e21, 0.1]),
                         b"[1e-7,0.00001,0.00006103515625,0.0001,1e+21,0.1]")
        u = uuid.UUID("00000000-0000-4000-8000-000000000000")
        self.assertEqual(_json.dumps_utf8({"id": u}),
                         b'{"id":"00000000-0000-4000-8000-000000000000"}')

        class Colour(enum.Enum):
            RED = "red"
        self.assertEqual(_json.dumps_utf8([Colour.RED]), b'["red"]')

    def test_what_orjson_refuses_is_the_stdlib_s(self) -> None:
        class D(dict):
            pass

        class S(str):
            pass

        class N(enum.IntEnum):
            ONE = 1
        deep: list = []
        for _ in range(400):
            deep = [deep]
        for value in [{1: True, None: 2.5, "k": D(x=(1, 2))}, [S("s"), N.ONE], 2**70, -(2**70),
                      "\ud800 é", {"\udfff": 1}, deep]:
            self.assertEqual(_json.dumps_utf8(value), _old_utf8(value))
        self.assertEqual(_json.dumps_utf8("\ud800 é"), b'"\\ud800 \\u00e9"')

    def test_errors(self) -> None:
        loop: list = []
        loop.append(loop)
        for bad, kind in [({"x": {1, 2}}, TypeError), ({(1, 2): 1}, TypeError),
                          ([object()], TypeError), (loop, ValueError),
                          ([datetime.datetime(2026, 1, 1)], TypeError),
                          (D2(1), TypeError), (D(x=math.nan), ValueError)]:
            self.assertRaises(kind, _json.dumps_utf8, bad)
        shared = {"a": 1}
        self.assertEqual(_json.dumps_utf8([shared, shared]), b'[{"a":1},{"a":1}]')


@dataclasses.dataclass
class D2:
    x: int


class D(dict):
    pass

