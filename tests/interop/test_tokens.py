# -*- test-case-name: tests.interop.test_tokens -*-
"""
Tokens cross between the runtimes (issue 4 item 3): a JWT minted by QEWD.js is accepted by our
node, one minted by our node is accepted by QEWD.js, and the secret claims (the encrypted
``qewd`` claim, PROTOCOL.md §3.3) are readable on both sides. Both sides share the secret
``someSecret123``. The peer is the running one (``QEWD_PEER_MASTER``, whose ``login`` goes to
its own micro-service).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from qewd_twisted.auth.tokens import SecretCipher
from tests.integration.nodes import eio_url as our_eio_url
from tests.integration.nodes import start_node
from tests.interop.peer import (
    EXAMPLE,
    PEER_MASTER,
    SECRET,
    claims,
    eio_url,
    login,
    register,
    request,
    require_peer,
)
from tests.wsclient import EIOClient


class TokenInteropTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        require_peer(self)

    async def _client(self, url: str) -> tuple[EIOClient, str]:
        c = EIOClient(url)
        self.addCleanup(c.close)
        return c, await register(c)

    @defer.inlineCallbacks
    def test_qewd_token_accepted_here(self):
        """QEWD.js registers and logs in (its master, its micro-service); our node decrypts
        its secret claims and our ``test`` handler (needs ``authenticated``) accepts the
        token. QEWD.js's registration token (``authenticated: false``) is refused."""
        peer, peer_token = yield defer.ensureDeferred(self._client(eio_url(PEER_MASTER)))
        frames = yield defer.ensureDeferred(request(peer, login(peer_token)))
        self.assertIs(frames[-1]["message"]["ok"], True)
        qewd_token = frames[-1]["message"]["token"]

        ours = start_node(self, base_dir=EXAMPLE, moduleMap={"jwt": "jwt_app.py"})
        session = ours.tokens.session(qewd_token)
        self.assertEqual((session["username"], session["authenticated"]), ("rob", True))
        self.assertEqual(sorted(session.secret_claims()),
                         ["authenticated", "ipAddress", "socketId", "username"])
        self.assertEqual(session["application"], "jwt")

        c, _ = yield defer.ensureDeferred(self._client(our_eio_url(ours)))
        frames = yield defer.ensureDeferred(request(c, {
            "type": "test", "token": qewd_token, "params": {"text": "from QEWD.js"}}))
        final = frames[-1]
        self.assertEqual(final["message"]["text"], "You sent: from QEWD.js")
        self.assertEqual(final["message"]["username"], "rob")
        reissued = ours.tokens.session(final["message"]["token"])
        self.assertEqual(reissued["socketId"], session["socketId"])  # QEWD.js's socket id kept

        frames = yield defer.ensureDeferred(request(c, {"type": "test", "token": peer_token}))
        self.assertEqual(frames[-1]["message"], {"error": "You must be logged in"})

    @defer.inlineCallbacks
    def test_our_token_accepted_by_qewd(self):
        """Our node logs rob in (tests/apps/demo.py, like the peer's test-app); QEWD.js's
        ``test`` handler decrypts our ``authenticated`` claim and answers; the token it
        issues carries our secret claims plus its own secret ``xxx``. Our registration
        token is refused there with "You must be logged in"."""
        ours = start_node(self, moduleMap={"jwt": "tests.apps.demo"})
        c, our_register_token = yield defer.ensureDeferred(self._client(our_eio_url(ours)))
        frames = yield defer.ensureDeferred(request(c, login(our_register_token)))
        our_token = frames[-1]["message"]["token"]
        self.assertNotIn("authenticated", claims(our_token))  # secret: inside qewd only

        peer, _ = yield defer.ensureDeferred(self._client(eio_url(PEER_MASTER)))
        frames = yield defer.ensureDeferred(request(peer, {
            "type": "test", "token": our_token, "params": {"text": "from Python"}}, broadcasts=True))
        self.assertIn({"test": "message 2"}, frames)
        final = frames[-1]
        self.assertEqual((final["type"], final["finished"]), ("test", True))
        self.assertEqual(final["message"]["text"], "You sent: from Python")
        session = ours.tokens.session(final["message"]["token"])
        self.assertEqual((session["username"], session["authenticated"]), ("rob", True))
        self.assertEqual(session["socketId"], ours.tokens.session(our_token)["socketId"])
        self.assertEqual(session["xxx"], "Test data")  # QEWD.js's handler made it secret
        self.assertTrue(session.is_secret("xxx"))
        self.assertIn("date", claims(final["message"]["token"]))  # and this one public

        frames = yield defer.ensureDeferred(request(peer, {
            "type": "test", "token": our_register_token, "params": {}}))
        self.assertEqual(frames[-1]["message"], {"error": "You must be logged in"})

    @defer.inlineCallbacks
    def test_secret_claim_ciphertext_is_identical(self):
        """The ``qewd`` claim is deterministic (fixed IV per secret): the plaintext QEWD.js
        encrypted, encrypted again by our cipher, is the same hex, byte for byte."""
        peer, peer_token = yield defer.ensureDeferred(self._client(eio_url(PEER_MASTER)))
        frames = yield defer.ensureDeferred(request(peer, login(peer_token)))
        reader = SecretCipher(SECRET, cache_size=0)
        writer = SecretCipher(SECRET, cache_size=0)  # no cache: really encrypts
        for token in (peer_token, frames[-1]["message"]["token"]):
            hexed = claims(token)["qewd"]
            secrets = reader.decrypt(hexed)
            self.assertEqual(list(secrets)[:3], ["socketId", "ipAddress", "authenticated"])
            self.assertEqual(writer.encrypt(secrets), hexed)
