# -*- test-case-name: tests.test_tokens -*-
"""
Tokens and sessions: QEWD's JWTs (signing, verification, the encrypted ``qewd`` claim) and
session-token mode's server-side sessions.

- `tokens`: `TokenCodec`, QEWD's JWT format bit for bit;
- `ciphers`: the ``qewd`` claim's ciphers and the JSON/base64url primitives tokens use;
- `sessions`: the session objects handlers see (`JWTSession`, `ServerSession`) and the
  session store.

May import: ``qewd_twisted._json``, PyJWT, cryptography and Twisted. Nothing else of ours.
"""
