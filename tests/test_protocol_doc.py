# -*- test-case-name: tests.test_protocol_doc -*-
"""
docs/protocol.md is the protocol reference the code cites (``docs/protocol.md §N``); these tests
keep the facts it states that a reader would check an implementation against in step with the
code: the §3.3 test vectors (run through our cipher and token codec as written in the doc), the
section numbering code comments rely on, and Appendix A, the error texts (each one must be a
text the code sends, and every QEWD string the code sends must be there).
"""

from __future__ import annotations

import json
import os
import re

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted import errors
from qewd_twisted.auth import sessions, tokens
from qewd_twisted.auth.ciphers import SecretCipher, evp_bytes_to_key
from qewd_twisted.auth.tokens import TokenCodec, TokenError

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "protocol.md")


def read_doc() -> str:
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def section(doc: str, heading: str) -> str:
    """The text from the heading line that starts with ``heading`` to the next heading of the
    same or a higher level."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(heading):
            level = len(line) - len(line.lstrip("#"))
            end = len(lines)
            for j in range(i + 1, len(lines)):
                line_j = lines[j]
                hashes = len(line_j) - len(line_j.lstrip("#"))
                if 0 < hashes <= level and line_j[hashes:hashes + 1] == " ":
                    end = j
                    break
            return "\n".join(lines[i:end])
    raise AssertionError(f"docs/protocol.md has no heading {heading!r}")


def table_rows(text: str) -> dict[str, str]:
    """``| name | `value` |`` rows: name -> the value between the backticks."""
    rows = {}
    for m in re.finditer(r"^\| ([^|`]+?) \| `([^`]*)` \|$", text, re.M):
        rows[m.group(1)] = m.group(2)
    return rows


class VectorTests(SynchronousTestCase):
    """§3.3's test vectors, read from the doc, reproduced by the code."""

    def setUp(self) -> None:
        self.rows = table_rows(section(read_doc(), "### 3.3 "))
        self.secret = self.rows["secret"]

    def test_key_and_iv(self) -> None:
        key, iv = evp_bytes_to_key(self.secret.encode("utf-8"))
        self.assertEqual(key.hex(), self.rows["key"])
        self.assertEqual(iv.hex(), self.rows["IV"])

    def test_ciphertext(self) -> None:
        cipher = SecretCipher(self.secret)
        plaintext = json.loads(self.rows["plaintext"])
        self.assertEqual(cipher.encrypt(plaintext), self.rows["ciphertext"])
        self.assertEqual(cipher.decrypt(self.rows["ciphertext"]), plaintext)

    def test_token(self) -> None:
        payload = json.loads(
            self.rows["payload"].replace("<the ciphertext above>", self.rows["ciphertext"]))
        clock = Clock()
        clock.advance(payload["iat"])
        codec = TokenCodec(self.secret, clock=clock)
        token = self.rows["token"]
        self.assertEqual(codec.encode(payload), token)
        self.assertEqual(token.split(".")[0], "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9")
        self.assertIn(token.split(".")[0], read_doc())
        # what ewd-register makes at that time, for those secret claims (§3.2)
        secrets = json.loads(self.rows["plaintext"])
        self.assertEqual(codec.register_token(payload["application"], secrets), token)

    def test_peer_token(self) -> None:
        """The token the QEWD.js peer minted verifies and decrypts here, and our cipher gives
        back its exact ``qewd`` ciphertext."""
        token = self.rows["peer token"]
        clock = Clock()
        clock.advance(1795801436)
        codec = TokenCodec(self.secret, clock=clock)
        payload = codec.decode(token)
        expected = json.loads(self.rows["peer secrets"])
        self.assertEqual(SecretCipher(self.secret).decrypt(payload["qewd"]), expected)
        self.assertEqual(SecretCipher(self.secret).encrypt(expected), payload["qewd"])
        session = codec.session(token)
        self.assertEqual(session["socketId"], expected["socketId"])
        self.assertTrue(session.is_secret("authenticated"))
        clock.advance(301)
        self.assertRaises(TokenError, codec.decode, token)


class NumberingTests(SynchronousTestCase):
    """Code cites ``docs/protocol.md §N``: the sections it cites must be there, numbered as in
    QEWD's protocol description."""

    def test_sections(self) -> None:
        doc = read_doc()
        expected = {
            "1": ["1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7"],
            "2": ["2.1", "2.2", "2.3", "2.4", "2.5"],
            "3": [f"3.{i}" for i in range(1, 11)],
            "4": [f"4.{i}" for i in range(1, 10)],
            "5": [f"5.{i}" for i in range(1, 7)],
        }
        headings = [f"## {top}. " for top in ["0", *expected, "6", "7", "8", "9", "10", "11",
                                                   "12"]]
        headings += [f"### {sub} " for subs in expected.values() for sub in subs]
        lines = doc.splitlines()
        missing = [h for h in headings if not any(line.startswith(h) for line in lines)]
        self.assertEqual(missing, [])

    def test_numbered_items(self) -> None:
        """Items cited as "§N item M" keep their numbers."""
        doc = read_doc()
        for heading, count in (("### 4.2 ", 7), ("### 4.4 ", 9), ("### 4.5 ", 8),
                               ("### 3.4 ", 5), ("## 9. ", 13), ("## 11. ", 12)):
            text = section(doc, heading)
            numbers = [int(n) for n in re.findall(r"(?m)^(\d+)\. ", text)]
            self.assertEqual(numbers, list(range(1, count + 1)), heading)
        rows = re.findall(r"(?m)^\| (\d+) \| ", section(doc, "## 10. "))
        self.assertEqual([int(n) for n in rows], list(range(1, 53)))


def code_texts() -> set[str]:
    """Every client-visible text the code defines, placeholders as written."""
    texts = {v for k, v in vars(errors).items()
             if k.isupper() and not k.startswith("_") and isinstance(v, str)}
    texts |= set(tokens.ERRORS)
    texts |= {str(TokenError(r)) for r in (tokens.NO_TOKEN, tokens.BAD_SEGMENTS,
                                           tokens.ALGORITHM_NOT_SUPPORTED, tokens.BAD_SIGNATURE,
                                           tokens.NOT_ACTIVE, tokens.EXPIRED)}
    texts |= {*sessions.SESSION_ERRORS, sessions.TOO_MANY_SESSIONS}
    # transports/wire.py's frame errors (tests/test_docs.py decodes packets to check these)
    texts |= {"Invalid JSON: {reason}", "Invalid JSON: nested too deeply",
              "Empty Engine.IO packet", "Unknown Engine.IO packet type: {char}",
              "Empty socket.io packet", "Unknown socket.io packet type: {char}",
              "socket.io event must be a JSON array starting with the event name"}
    return texts


class ErrorTextTests(SynchronousTestCase):
    def setUp(self) -> None:
        appendix = section(read_doc(), "## A. ")
        self.listed = re.findall(r"(?m)^\| `([^`]+)` \|", appendix)

    def test_listed_texts_are_sent(self) -> None:
        self.assertGreaterEqual(len(self.listed), 40)
        unknown = sorted(set(self.listed) - code_texts())
        self.assertEqual(unknown, [], "docs/protocol.md Appendix A lists texts the code lacks")

    def test_qewd_texts_are_listed(self) -> None:
        qewd = {errors.NO_JWT_SUPPORT, errors.JWT_NOT_CONFIGURED, errors.MISSING_AUTH,
                errors.INVALID_SESSION, errors.SESSION_EXPIRED, errors.UNABLE_TO_LOAD,
                errors.NO_HANDLER, errors.MS_DOWN, *sessions.SESSION_ERRORS}
        qewd |= {str(TokenError(r)) for r in (tokens.NO_TOKEN, tokens.BAD_SEGMENTS,
                                              tokens.ALGORITHM_NOT_SUPPORTED,
                                              tokens.BAD_SIGNATURE, tokens.NOT_ACTIVE,
                                              tokens.EXPIRED)}
        self.assertEqual(sorted(qewd - set(self.listed)), [])

    def test_every_error_constant_is_listed(self) -> None:
        """errors.py's texts, ours included: a new one needs a line in Appendix A."""
        constants = {v for k, v in vars(errors).items()
                     if k.isupper() and not k.startswith("_") and isinstance(v, str)}
        self.assertEqual(sorted(constants - set(self.listed)), [])
