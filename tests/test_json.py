# -*- test-case-name: tests.test_json -*-
"""
qewd_twisted._json: the stdlib codec with its set-up done once must behave exactly like it.
"""

from __future__ import annotations

import json
import math

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
