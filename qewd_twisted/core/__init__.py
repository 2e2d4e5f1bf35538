"""
The node core: admission, authentication, dispatch and the QEWD envelope.

- `node`: the `Node`, the one door every transport's messages enter by;
- `requests`: a `Connection` (one client, whatever its transport) and a `Request` (one message
  being handled).

May import: ``qewd_twisted.errors``, ``qewd_twisted.auth``, ``qewd_twisted.apps``,
``qewd_twisted.mesh`` (routing only) and ``qewd_twisted.ops.observe``. Never a transport.
"""
