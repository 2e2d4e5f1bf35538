# test-case-name: tests.test_docs
"""
docs/errors.md lists every error text a client can see; these tests keep it in step with the code,
in both directions.

A text counts as listed when it appears in backticks exactly as the code writes it, with its
``{placeholders}`` as written in the constant. Adding an error constant without documenting it
fails here; so does a text in errors.md, reliability.md or configuration.md that looks like a
client text but is not one the code sends (``DocsShowWhatTheCodeSendsTests``).
tests/test_documented.py drives a node to each of them.
"""

from __future__ import annotations

import inspect
import re
import os

from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted import errors
from qewd_twisted.core import node
from qewd_twisted.auth import sessions
from qewd_twisted.auth import tokens
from qewd_twisted.transports import wire

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def read_doc(name: str) -> str:
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        return f.read()


def public_texts(module: object) -> dict[str, str]:
    """The module's public string constants (UPPER_CASE names), by name."""
    return {
        name: value
        for name, value in sorted(vars(module).items())
        if name.isupper() and not name.startswith("_") and isinstance(value, str)
    }


class ErrorsDocTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.doc = read_doc("errors.md")

    def assertListed(self, texts: dict[str, str]) -> None:
        missing = [f"{name}: {text!r}" for name, text in texts.items() if f"`{text}`" not in self.doc]
        if missing:
            self.fail("docs/errors.md does not list (in backticks):\n  " + "\n  ".join(missing))

    def test_errors_module(self) -> None:
        """Every public string constant in qewd_twisted.errors, placeholders as written."""
        texts = public_texts(errors)
        self.assertGreaterEqual(len(texts), 20)  # the constants were found at all
        self.assertListed(texts)

    def test_refused_types(self) -> None:
        """The types refused as reserved or unsupported are named where those errors are."""
        types = sorted(errors.INTERNAL_TYPES | errors.UNSUPPORTED_TYPES)
        self.assertListed({t: t for t in types})

    def test_status_codes(self) -> None:
        for name, code in vars(errors).items():
            if name.startswith("STATUS_"):
                self.assertIn(f"`status: {{code: {code}}}`", self.doc, name)

    def test_token_errors(self) -> None:
        """tokens.ERRORS: its keys are the client texts (its values explain them)."""
        self.assertTrue(all(k.startswith("Invalid JWT: ") for k in tokens.ERRORS))
        self.assertListed({k: k for k in tokens.ERRORS})

    def test_jwt_simple_reasons(self) -> None:
        """jwt-simple's reasons, as the client sees them (TokenError's ``str()``)."""
        reasons = (tokens.NO_TOKEN, tokens.BAD_SEGMENTS, tokens.ALGORITHM_NOT_SUPPORTED,
                   tokens.BAD_SIGNATURE, tokens.NOT_ACTIVE, tokens.EXPIRED)
        self.assertListed({r: str(tokens.TokenError(r)) for r in reasons})
        self.assertIn("`Invalid JWT: Error: Token expired`", self.doc)

    def test_session_errors(self) -> None:
        texts = (*sessions.SESSION_ERRORS, sessions.TOO_MANY_SESSIONS)
        self.assertListed({t: t for t in texts})

    def test_wire_errors(self) -> None:
        """What wire.decode says about bad packets, as docs/errors.md writes it."""
        cases = [
            ("", "Empty Engine.IO packet"),
            ("9", "Unknown Engine.IO packet type: {char}"),
            ("4", "Empty socket.io packet"),
            ("49", "Unknown socket.io packet type: {char}"),
            ("42[1]", "socket.io event must be a JSON array starting with the event name"),
            ("42{", "Invalid JSON: {reason}"),
            ("42" + "[" * 100000, "Invalid JSON: nested too deeply"),
        ]
        for packet, documented in cases:
            with self.assertRaises(wire.WireError) as caught:
                wire.decode(packet)
            text = str(caught.exception)
            fixed, brace, _ = documented.partition("{")
            if brace:
                self.assertTrue(text.startswith(fixed), (packet[:10], text))
            else:
                self.assertEqual(text, documented)
            self.assertListed({packet[:10]: documented})


def client_templates() -> set[str]:
    """Every text the code can send a client, ``{placeholders}`` as written."""
    texts = set(public_texts(errors).values())
    texts |= set(tokens.ERRORS)
    texts |= {str(tokens.TokenError(r)) for r in (
        tokens.NO_TOKEN, tokens.BAD_SEGMENTS, tokens.ALGORITHM_NOT_SUPPORTED,
        tokens.BAD_SIGNATURE, tokens.NOT_ACTIVE, tokens.EXPIRED)}
    texts |= {*sessions.SESSION_ERRORS, sessions.TOO_MANY_SESSIONS}
    for packet in ("", "9", "4", "49", "42[1]", "42{", "42" + "[" * 100000):
        try:
            wire.decode(packet)
        except wire.WireError as e:
            texts.add(str(e))
    texts |= {"Empty Engine.IO packet", "Unknown Engine.IO packet type: {char}",
              "Unknown socket.io packet type: {char}", "Invalid JSON: {reason}"}
    return texts


_PLACEHOLDER = re.compile(r"\{[^}]*\}|<[^>]*>")


def _normal(text: str) -> str:
    return _PLACEHOLDER.sub("\x00", text)


def _matches(doc_text: str, template: str) -> bool:
    """The doc shows ``template`` itself (placeholders as ``{x}`` or ``<x>``) or an
    instance of it (each placeholder filled in)."""
    if _normal(doc_text) == _normal(template):
        return True
    if doc_text.endswith("...") and template.startswith(doc_text[:-3]):
        return True  # an abbreviation in prose: "Handler not defined..."
    if "<" in doc_text:  # a schema over several texts: "Invalid JWT: <kind>: <reason>"
        pattern = ".+".join(re.escape(part) for part in _normal(doc_text).split("\x00"))
        return re.fullmatch(pattern, template) is not None
    pattern = ".+".join(re.escape(part) for part in _normal(template).split("\x00"))
    return re.fullmatch(pattern, doc_text) is not None


class DocsShowWhatTheCodeSendsTests(SynchronousTestCase):
    """The other direction (issue 18 item 3): a text in the docs that looks like one the code
    sends (its first two words are those of a client text) must be that text, or an instance
    of it, so an example can't drift from the code (``within 60.0 seconds`` did)."""

    DOCS = ("errors.md", "reliability.md", "configuration.md")

    def near_misses(self, text: str, templates: set[str]) -> list[str]:
        errors_found = []
        for shown in re.findall(r"`([^`\n]{8,})`", text):
            words = shown.split()[:2]
            if len(words) < 2 or shown.startswith("<"):
                continue
            related = [t for t in templates if t.split()[:2] == words]
            if related and not any(_matches(shown, t) for t in related):
                errors_found.append(f"{shown!r} (code: {related})")
        return errors_found

    def test_examples_match_the_code(self) -> None:
        templates = client_templates()
        self.assertGreater(len(templates), 40)
        problems = []
        for name in self.DOCS:
            problems += [f"docs/{name}: {p}" for p in self.near_misses(read_doc(name), templates)]
        if problems:
            self.fail("texts in the docs that the code never sends:\n  " + "\n  ".join(problems))

    def test_the_check_catches_a_drifted_example(self) -> None:
        """(The number in ``within 60 seconds`` is checked through a node by
        tests/test_documented.py: any number fits ``{seconds}`` here.)"""
        templates = client_templates()
        drifted = "`Too many requests in flight on the connection`"
        self.assertEqual(len(self.near_misses(drifted, templates)), 1)
        self.assertEqual(self.near_misses(drifted.replace("the", "this"), templates), [])
        self.assertEqual(self.near_misses("`Handler for login did not finish within 60 seconds`",
                                          templates), [])

    def test_error_table_texts_are_code_texts(self) -> None:
        """Every text in the first column of docs/errors.md's tables is one the code sends
        (or a ``<...>`` stand-in for the handler's own text)."""
        templates = client_templates()
        unknown = []
        for line in read_doc("errors.md").splitlines():
            m = re.match(r"\| `([^`]+)` \|", line)
            if m and not m.group(1).startswith("<"):
                if not any(_matches(m.group(1), t) for t in templates):
                    unknown.append(m.group(1))
        self.assertEqual(unknown, [])
