# -*- test-case-name: tests.documents.test_collation -*-
"""Tests for qewd_twisted.documents.collation: subscripts, M collation, value conversions."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted.documents.collation import (
    MAX_SAFE_INTEGER,
    check_document_name,
    check_subscript,
    convert,
    leading_int,
    path_key,
    prefix_bounds,
    sort_key,
    to_stored,
)


class SubscriptTests(SynchronousTestCase):
    def test_canonical_integers(self) -> None:
        """A canonical integer string is that integer (M); other numeric-looking strings
        stay strings."""
        self.assertEqual(check_subscript("5"), 5)
        self.assertEqual(check_subscript("-3"), -3)
        self.assertEqual(check_subscript("0"), 0)
        for s in ["05", "+5", "-0", "1.5", "1e3", " 5", "5 ", "x"]:
            self.assertEqual(check_subscript(s), s)
        self.assertEqual(check_subscript(str(MAX_SAFE_INTEGER + 1)), str(MAX_SAFE_INTEGER + 1))

    def test_bad_types(self) -> None:
        for bad in [None, {}, [], True, False, 1.5, 2.0, b"x", object()]:
            self.assertRaises(TypeError, check_subscript, bad)

    def test_bad_values(self) -> None:
        for bad in ["", "a\x01b", MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1]:
            self.assertRaises(ValueError, check_subscript, bad)

    def test_document_names(self) -> None:
        self.assertEqual(check_document_name("x"), "x")
        self.assertRaises(TypeError, check_document_name, None)
        self.assertRaises(TypeError, check_document_name, 5)
        self.assertRaises(ValueError, check_document_name, "")
        self.assertRaises(ValueError, check_document_name, "a\x01")


class CollationTests(SynchronousTestCase):
    def test_m_order(self) -> None:
        """Integers first in numeric order (negatives included), then strings by code point."""
        subs = ["b", 10, "a", -5, 2, "B", "é", "aa", "a\x00", 0, "10x", "日本", -MAX_SAFE_INTEGER,
                MAX_SAFE_INTEGER]
        ordered = sorted(subs, key=sort_key)
        self.assertEqual(ordered, [-MAX_SAFE_INTEGER, -5, 0, 2, 10, MAX_SAFE_INTEGER,
                                   "10x", "B", "a", "a\x00", "aa", "b", "é", "日本"])

    def test_path_keys_prefix_free(self) -> None:
        """A path's key is a prefix of its descendants' keys and of nobody else's."""
        self.assertTrue(path_key(("a", 1)).startswith(path_key(("a",))))
        self.assertFalse(path_key(("ab",)).startswith(path_key(("a",))))
        self.assertLess(path_key(("a",)), path_key(("a", 1)))

    def test_prefix_bounds(self) -> None:
        lo, hi = prefix_bounds("ab")
        inside = [sort_key(s) for s in ["ab", "abc", "ab\x00", "abé"]]
        outside = [sort_key(s) for s in ["a", "ac", "b", 5, "aa"]]
        for k in inside:
            self.assertTrue(lo <= k < hi, k)
        for k in outside:
            self.assertFalse(lo <= k < hi, k)


class ValueTests(SynchronousTestCase):
    def test_to_stored(self) -> None:
        cases = [("x", "x"), (5, "5"), (-1, "-1"), (True, "true"), (False, "false"),
                 (None, ""), (2.0, "2"), (1.5, "1.5"), (0.1, "0.1"), (float("nan"), "NaN"),
                 (float("inf"), "Infinity")]
        for value, stored in cases:
            self.assertEqual(to_stored(value), stored, value)
        for bad in [{}, [], (), object(), b"x"]:
            self.assertRaises(TypeError, to_stored, bad)

    def test_convert(self) -> None:
        """ewd-document-store's convert(): booleans and safe integers only."""
        cases = [(None, ""), ("", ""), ("true", True), ("false", False), ("42", 42),
                 ("-7", -7), (" 5 ", 5), ("1e3", 1000), ("0x10", 16), ("1.0", 1),
                 ("1.5", "1.5"), ("abc", "abc"), ("True", "True"), (" ", " "),
                 (str(MAX_SAFE_INTEGER), MAX_SAFE_INTEGER),
                 (str(MAX_SAFE_INTEGER + 1), str(MAX_SAFE_INTEGER + 1)), ("Infinity", "Infinity"),
                 ("12abc", "12abc"), ("007", 7)]
        for stored, value in cases:
            got = convert(stored)
            self.assertEqual((got, type(got)), (value, type(value)), stored)

    def test_leading_int(self) -> None:
        for stored, n in [(None, 0), ("", 0), ("12", 12), ("12abc", 12), ("abc", 0),
                          (" -3", -3), ("1.9", 1)]:
            self.assertEqual(leading_int(stored), n)
