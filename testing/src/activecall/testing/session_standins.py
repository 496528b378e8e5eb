"""Registry entries of asr, llm and tts workers, for an edge tested without those services.

The edge admits a call only when every role has room in the worker registry
(:mod:`activecall.sip_edge.app.admission`). Tests of the edge's SIP and media behaviour run it with a
stand-in media worker and no session services: these entries give the session roles room.
"""

from __future__ import annotations

import os
import socket

from activecall.bus import Bus
from activecall.contract import SESSION_ROLES
from activecall.registry import Heartbeat, WorkerInfo


class SessionStandIns:
    """One live registry entry per session role, with ``capacity`` and the ``load`` it is given."""

    def __init__(self, bus: Bus, capacity: int = 1000, interval: float = 0.5) -> None:
        self.load = 0
        self.heartbeats = [
            Heartbeat(
                bus.redis,
                bus.keys,
                WorkerInfo(
                    id=f"{role}-stand-in",
                    role=role,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    metrics_port=0,
                    capacity=capacity,
                ),
                lambda: self.load,
                interval,
            )
            for role in SESSION_ROLES
        ]

    async def start(self) -> SessionStandIns:
        for heartbeat in self.heartbeats:
            await heartbeat.beat()  # live at once
            heartbeat.start()
        return self

    async def stop(self) -> None:
        for heartbeat in self.heartbeats:
            await heartbeat.stop()
