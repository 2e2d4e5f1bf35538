# A lazy dropin: twistd imports qewd_twisted.tap only when "qewd" is asked for.
from twisted.application.service import ServiceMaker

qewd = ServiceMaker(
    "qewd",
    "qewd_twisted.tap",
    "A QEWD node: WebSocket clients, handler pool, JWT sessions, micro-service links",
    "qewd",
)
