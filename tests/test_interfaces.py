"""
Every provider and test fake of the node's contracts (qewd_twisted.core.interfaces and
auth.sessions.ISessionStore) really provides it (zope.interface's ``verifyObject``).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from qewd_twisted.apps.pool import WorkerPool
from qewd_twisted.auth.sessions import ISessionStore, MemorySessionStore
from qewd_twisted.core.interfaces import IConnection, INodeObserver, IRoutes, IWorkerPool
from qewd_twisted.core.requests import Connection
from qewd_twisted.mesh.links import MicroServices
from qewd_twisted.ops.observe import FanOut, NodeObserver
from qewd_twisted.ops.operations import RequestLog, RequestRates
from qewd_twisted.testing import MemoryConnection, NodeHarness, SyncPool
from qewd_twisted.transports.site import EngineIOConnection, PlainConnection


class ConnectionTests(SynchronousTestCase):
    def test_memory_connection(self) -> None:
        self.assertTrue(verifyObject(IConnection, MemoryConnection()))

    def test_websocket_connections(self) -> None:
        for cls in (EngineIOConnection, PlainConnection):
            self.assertTrue(verifyObject(IConnection, cls(None, "id", "127.0.0.1")))

    def test_base_class(self) -> None:
        self.assertTrue(verifyClass(IConnection, Connection))


class PoolTests(SynchronousTestCase):
    def test_worker_pool_and_fake(self) -> None:
        self.assertTrue(verifyObject(IWorkerPool, WorkerPool(Clock(), 2, 10)))
        self.assertTrue(verifyObject(IWorkerPool, SyncPool()))


class ObserverTests(SynchronousTestCase):
    def test_observers(self) -> None:
        clock = Clock()
        for observer in (NodeObserver(), FanOut([]), RequestLog(clock),
                         RequestRates(clock, None)):
            self.assertTrue(verifyObject(INodeObserver, observer), observer)

    def test_node_default_observer(self) -> None:
        self.assertTrue(verifyObject(INodeObserver, NodeHarness({}).node.observer))


class StoreAndRoutesTests(SynchronousTestCase):
    def test_session_store(self) -> None:
        self.assertTrue(verifyObject(ISessionStore, MemorySessionStore(Clock())))

    def test_routes(self) -> None:
        self.assertTrue(verifyObject(IRoutes, MicroServices([], Clock())))
