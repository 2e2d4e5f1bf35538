"""Streams many large intermediate frames, yielding to the reactor between them, so a client
that reads keeps up and one that stops reading fills the node's buffers."""

from twisted.internet import reactor
from twisted.internet.task import deferLater


async def flood(messageObj, session, send, finished):
    params = messageObj.get("params") or {}
    chunk = "x" * int(params.get("size", 1024))
    for i in range(int(params.get("frames", 10))):
        send({"i": i, "data": chunk})
        await deferLater(reactor, 0, lambda: None)
    finished({"sent": params.get("frames")})


handlers = {"flood": flood}
