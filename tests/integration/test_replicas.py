# test-case-name: tests.integration.test_replicas
"""
A micro-service destination with two replicas (issue 16 item 4), on loopback with three real
nodes: the master in this process, the two replicas as ``twistd`` processes so that one can be
killed with SIGKILL. Requests are spread over both; with one killed, what was in flight on it
gets the 503, and every later request is answered by the survivor; every request is accounted
for (each client request carries its own ``ms_requestId``, which every final frame echoes).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from qewd_twisted import errors as E
from qewd_twisted.mesh.links import LinkState
from tests.integration.nodes import SECRET, start_node
from tests.integration.processes import TwistdProcess, write_startup
from tests.integration.test_microservices import client, link_up
from tests.integration.test_ops import base, get, samples, when_state
from tests.ports import reserve_port

PASSWORD = "replicas-pw-5Hk2q"
DOWN_503 = {"error": E.MS_DOWN, "status": {"code": 503}}


def start_replica(test: TestCase, port: int) -> TwistdProcess:
    startup = write_startup(test, repr({
        "listen": f"tcp:{port}:interface=127.0.0.1",
        "jwt": {"secret": SECRET},
        "moduleMap": {"replica-app": "tests.apps.replica"},
    }))
    return TwistdProcess(test, startup).start()


class Finals:
    """Final frames on one client socket, by the ``ms_requestId`` its requests carried."""

    def __init__(self, c: Any) -> None:
        self.c = c
        self.by_id: dict[int, list[dict[str, Any]]] = {}
        self.intermediate: list[dict[str, Any]] = []

    async def until(self, ids: set[int]) -> None:
        while not ids <= set(self.by_id):
            frame = await self.c.message()
            if frame.get("finished") is False:
                self.intermediate.append(frame)
            else:
                self.by_id.setdefault(frame["ms_requestId"], []).append(frame)


class ReplicaFailoverTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_spread_kill_one_the_survivor_answers(self):
        ports = [reserve_port(self), reserve_port(self)]
        replicas = [start_replica(self, port) for port in ports]
        yield defer.gatherResults([r.wait_for("started: listening") for r in replicas])
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        master = start_node(
            self, moduleMap={"jwt": "tests.apps.jwt_app"}, metrics=True,
            managementPassword=PASSWORD, u_services={
                "destinations": {"svc": {"host": urls, "application": "replica-app"}},
                "routes": [{"application": "jwt", "types": {"whoami": {"destination": "svc"},
                                                            "hold": {"destination": "svc"}}}]})
        yield defer.ensureDeferred(link_up(master))
        [replica_set] = master.micro_services.replica_sets
        self.assertEqual(replica_set.live, 2)
        pids = [r.transport.pid for r in replicas]
        c, token = yield defer.ensureDeferred(client(self, master))
        finals = Finals(c)
        next_id = iter(range(1, 1000))

        def send(type: str) -> int:
            rid = next(next_id)
            c.emit({"type": type, "token": token, "params": {"n": rid}, "ms_requestId": rid})
            return rid

        def answered_by(rid: int) -> Any:
            [frame] = finals.by_id[rid]
            self.assertEqual(frame["type"], "whoami")
            return frame["message"].get("pid") or frame["message"]

        # 1. spread: ten in turn (each answered before the next) alternate exactly
        spread = []
        for _ in range(10):
            rid = send("whoami")
            yield defer.ensureDeferred(finals.until({rid}))
            spread.append(answered_by(rid))
        self.assertEqual(sorted(spread.count(pid) for pid in pids), [5, 5], spread)

        # 2. one request in flight on each replica, then replica 0 dies (SIGKILL)
        holds = [send("hold"), send("hold")]
        while len(finals.intermediate) < 2:
            finals.intermediate.append((yield defer.ensureDeferred(c.message())))
        holding = {f["ms_requestId"]: f["message"]["holding"] for f in finals.intermediate}
        self.assertEqual(sorted(holding.values()), sorted(pids))
        dead, survivor = pids[0], pids[1]
        dead_url = urls[0]
        down = when_state(master.micro_services.links[dead_url], LinkState.DOWN)
        ended = replicas[0].signal("KILL")
        # a burst at once, racing the death: the master may not have noticed it yet, so
        # some may go to the dying replica (and get its 503, or its answer if it was quicker)
        burst = [send("whoami") for _ in range(10)]
        yield ended
        yield down
        yield defer.ensureDeferred(finals.until(set(burst) | {h for h in holds
                                                              if holding[h] == dead}))
        # the request in flight on the dead replica: its 503, once
        [dead_hold] = [h for h in holds if holding[h] == dead]
        [frame] = finals.by_id[dead_hold]
        self.assertEqual((frame["type"], frame["message"]), ("hold", DOWN_503))
        # the burst: every request has exactly one final, a reply or the 503
        outcomes = [answered_by(rid) for rid in burst]
        for outcome in outcomes:
            self.assertIn(outcome, (survivor, dead, DOWN_503), outcomes)

        # 3. from now on: all answered by the survivor
        later = [send("whoami") for _ in range(10)]
        yield defer.ensureDeferred(finals.until(set(later)))
        self.assertEqual([answered_by(rid) for rid in later], [survivor] * 10)
        self.assertEqual(replica_set.live, 1)
        # every request accounted for: one final each (the survivor's hold still runs)
        sent = set(range(1, next(next_id)))
        [live_hold] = [h for h in holds if holding[h] == survivor]
        self.assertEqual(set(finals.by_id), sent - {live_hold})
        self.assertTrue(all(len(frames) == 1 for frames in finals.by_id.values()))

        # 4. per-host link status in /status.json and /metrics; still ready
        code, _, body = yield defer.ensureDeferred(get(base(master) + "/status.json",
                                                       PASSWORD))
        status = json.loads(body)
        self.assertEqual(code, 200)
        self.assertEqual({link["url"]: link["state"] for link in status["links"]},
                         {urls[0]: "down", urls[1]: "up"})
        [rs] = status["replica_sets"]
        self.assertEqual((rs["urls"], rs["links"], rs["up"], rs["state"]),
                         (urls, 2, 1, "up"))
        self.assertEqual(sum(rs["sent"].values()), len(sent))
        code, _, body = yield defer.ensureDeferred(get(base(master) + "/metrics"))
        values = samples(body)
        label = ",".join(urls)
        self.assertEqual(values[("qewd_replica_set_links_up",
                                 (("application", "replica-app"), ("replicas", label)))], 1)
        self.assertEqual(values[("qewd_link_up",
                                 (("application", "replica-app"), ("url", dead_url)))], 0)
        self.assertEqual(values[("qewd_link_up",
                                 (("application", "replica-app"), ("url", urls[1])))], 1)
        code, _, body = yield defer.ensureDeferred(get(base(master) + "/ready"))
        self.assertEqual((code, json.loads(body)["down"]), (200, [dead_url]))
