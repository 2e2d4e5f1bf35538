# -*- test-case-name: tests.test_edges -*-
"""
Edge cases found by the mutation check (scripts/mutation.sh, docs/testing.md): each test here
fails for a deliberately broken line that every other test let through. Grouped by the layer
they pin down: tokens (auth/tokens.py), links (mesh/links.py), the web layer
(transports/site.py). The node's are in tests/test_documented.py, next to the texts they
concern.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted.auth.tokens import TokenCodec

NOW = 1_700_000_000


def clock() -> Clock:
    c = Clock()
    c.advance(NOW)
    return c


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(token: str, i: int) -> dict:
    s = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))


class TokenEdgeTests(SynchronousTestCase):
    def test_empty_or_non_string_secrets_refused(self) -> None:
        """A node can never sign with, or accept tokens of, an empty or non-string secret."""
        for kwargs in ({"secret": ""}, {"secret": "s", "previous_secrets": [""]},
                       {"secret": "s", "previous_secrets": ["ok", ""]},
                       {"secret": 123}, {"secret": "s", "previous_secrets": [b"bytes"]}):
            with self.assertRaises(ValueError, msg=repr(kwargs)):
                TokenCodec(**kwargs)

    def test_reissue_after_rotation_is_signed_with_the_current_secret(self) -> None:
        """A token signed with a previous secret is accepted, but what the node hands back for
        it, even unchanged in the same second, is signed with the current one (a node that
        knows only the new secret accepts it): docs/security.md's rotation."""
        c = clock()
        old = TokenCodec("old-secret", clock=c)
        rotated = TokenCodec("new-secret", previous_secrets=["old-secret"], clock=c)
        new_only = TokenCodec("new-secret", clock=c)
        # a token as the old node issues them after a request (claims in issue()'s order)
        token = old.issue(old.session(old.register_token("app", {"socketId": "s1"})))
        reissued = rotated.issue(rotated.session(token))
        self.assertEqual(new_only.session(reissued)["socketId"], "s1")

    def test_reissue_of_a_foreign_header_uses_ours(self) -> None:
        """A correctly signed token whose header is not byte for byte ours (here with a
        ``kid``) is accepted; the token issued for it has QEWD's standard header."""
        c = clock()
        codec = TokenCodec("someSecret123", clock=c)
        ours = codec.register_token("app", {"socketId": "s1"})
        header = b64(b'{"typ":"JWT","alg":"HS256","kid":"k1"}')
        signing_input = header + "." + ours.split(".")[1]
        mac = hmac.new(b"someSecret123", signing_input.encode(), hashlib.sha256).digest()
        foreign = signing_input + "." + b64(mac)
        reissued = codec.issue(codec.session(foreign))
        self.assertEqual(segment(reissued, 0), {"typ": "JWT", "alg": "HS256"})
        self.assertEqual(reissued.split(".")[0], ours.split(".")[0])

    def test_a_value_that_changes_type_only_is_reissued(self) -> None:
        """``1`` and ``True`` are equal in Python but not in JSON: a handler that turns one
        into the other within the same second gets a token that says so."""
        c = clock()
        codec = TokenCodec("someSecret123", clock=c)
        session = codec.session(codec.register_token("app", {}))
        session["n"] = 1
        first = codec.issue(session)
        self.assertEqual(codec.issue(codec.session(first)), first)  # unchanged: the same token
        session = codec.session(first)
        session["n"] = True
        second = codec.issue(session)
        self.assertIs(segment(second, 1)["n"], True)
        self.assertIs(codec.session(second)["n"], True)
