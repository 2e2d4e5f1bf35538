# test-case-name: tests.test_docs
"""
docs/errors.md lists every error text a client can see; these tests keep it in step with the code.

A text counts as listed when it appears in backticks exactly as the code writes it, with its
``{placeholders}`` as written in the constant. Adding an error constant without documenting it
fails here.
"""

from __future__ import annotations

import inspect
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
