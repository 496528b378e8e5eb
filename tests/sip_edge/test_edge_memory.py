"""A finished call is freed by reference counting once its transactions end: nothing of it waits for the
garbage collector (which the edge runs seldom), so memory stays flat under a steady call rate."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

from sip_harness import SCENARIOS, EdgeFactory, poll
from test_edge_sipp import CALLEE

from activecall.testing.sipp import Sipp


async def test_a_finished_call_and_its_transactions_are_freed_without_a_collection(
    start_edge: EdgeFactory, tmp_path: Path
) -> None:
    harness = await start_edge()
    sipp = Sipp(
        SCENARIOS / "uac_call.xml", tmp_path, remote=harness.target(), pause_ms=500, extra=["-s", CALLEE]
    )
    gc.collect()
    gc.disable()
    try:
        run = asyncio.ensure_future(asyncio.to_thread(sipp.run))
        call = await poll(lambda: next((c for c in harness.edge.calls.values() if c.leg is not None), None))
        (tx,) = harness.edge.ua._incoming
        refs = {"call": weakref.ref(call), "leg": weakref.ref(call.leg), "invite": weakref.ref(tx)}
        del call, tx
        result = await run
        assert result.ok, result.describe()
        # The INVITE server transaction lingers 64 T1 after its 2xx (RFC 6026 Timer L; T1 is 0.1 s here).
        await poll(lambda: all(ref() is None for ref in refs.values()), within=12, every=0.1)
        assert {name: ref() for name, ref in refs.items()} == dict.fromkeys(refs)
    finally:
        gc.enable()
