"""Soak: calls arriving and ending at a steady rate for a long time (``make soak``); whether anything
grows: Redis's memory, the processes' memory and file descriptors.

The system runs as ``make run`` runs it (``activecall up``, its own Redis with an append-only file)
with the scripted agent of ``make bench-turns``, so it runs offline. Every ``--interval`` seconds a
caller (the bench-turns phone: SIP over TLS, SRTP, every packet stamped on arrival) dials, hears the
greeting, asks a question, waits for the agent's answer and hangs up: a call lasts about 15 s, so
about 15 / interval are up at once. A call failed when it was refused, heard no greeting or no
answer, or its BYE was not answered 200.

What a call leaves in Redis is kept for the configured retention (``[redis] ended_retention`` for
the record and its events, ``ended_audio_retention`` for its audio and say streams): the soak runs
with both at ``--retention`` seconds (default 300), so Redis reaches its steady state within the
run. After a warm-up of the retention plus one minute (models loaded, caches full, the first calls'
keys expiring) it reads Redis's used memory and each process's RSS and open file descriptors (the
launcher, its Redis and every child, from /proc); once the last call is over and one more
retention has passed, it reads them again. The last line::

    soak: calls=N failed=N redis_mb_start=N redis_mb_end=N rss_growth_mb=N fds_growth=N

Run with ``make soak`` (``SOAK_MINUTES=60``) or::

    python bench/bench_soak.py --minutes 10 --interval 3 --retention 120
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from activecall.registry import ROLES
from chaos.calls import ChaosCall
from chaos.supervised import SupervisedSystem
from turns.voices import QUESTIONS, Clip, Synthesizer, available_voices

PLAYBOOKS = Path(__file__).resolve().parent / "turns" / "playbooks"
CALL_WAIT_S = 90.0
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Usage:
    redis_mb: float
    rss_mb: dict[int, float]  # pid -> resident memory
    fds: dict[int, int]  # pid -> open file descriptors

    def line(self) -> str:
        return (
            f"redis {self.redis_mb:.1f} MB, {len(self.rss_mb)} processes: "
            f"RSS {sum(self.rss_mb.values()):.1f} MB, {sum(self.fds.values())} open fds"
        )


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_KB / 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def processes(system: SupervisedSystem) -> list[int]:
    """The launcher, its Redis and every child that beats."""
    children = [pid for role in ROLES for pid in system.pids(role)]
    with system.client() as client:
        redis_pid = int(client.info("server")["process_id"])
    launcher = parent(children[0]) if children else 0
    return sorted({launcher, redis_pid, *children} - {0})


def usage(system: SupervisedSystem) -> Usage:
    with system.client() as client:
        redis_mb = int(client.info("memory")["used_memory"]) / 2**20
    pids = processes(system)
    return Usage(redis_mb, {p: rss_mb(p) for p in pids}, {p: open_fds(p) for p in pids})


def census(system: SupervisedSystem, top: int = 8) -> list[str]:
    """Redis's keys by kind (a call's id as ``{*}``): how many, how much memory, how many never expire."""
    kinds: dict[str, list[int]] = {}
    with system.client() as client:
        for raw in client.scan_iter(count=1000):
            key = raw.decode(errors="replace")
            kind = re.sub(r"\{[^}]*\}", "{*}", key)
            entry = kinds.setdefault(kind, [0, 0, 0])
            entry[0] += 1
            entry[1] += client.memory_usage(raw) or 0
            entry[2] += client.ttl(raw) == -1
    ordered = sorted(kinds.items(), key=lambda item: -item[1][1])[:top]
    return [
        f"  {kind}: {n} keys, {size / 2**20:.2f} MB, {never} without expiry"
        for kind, (n, size, never) in ordered
    ]


def finished(call: ChaosCall) -> bool:
    """Whether the call did all it should; releases its thread either way."""
    call.done.wait(CALL_WAIT_S)
    call.stop_listening.set()
    if call.thread is not None:
        call.thread.join(timeout=10.0)
    return not call.problems and call.survived and call.bye_status == 200


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="how long calls arrive (default 60)")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between calls (default 3)")
    parser.add_argument("--retention", type=int, default=300, help="ended calls' keys kept, s (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the system's log and config")
    args = parser.parse_args()
    synth, voices = Synthesizer(), available_voices()
    clips = [
        Clip("question", text, voice, synth.say(text, voice))
        for voice in voices[:2]
        for text in QUESTIONS[:3]
    ]
    root = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    extra = '[handler]\ndefault = "bench-turns.md"\n'
    redis_config = f"ended_retention = {args.retention}\nended_audio_retention = {args.retention}\n"
    system = SupervisedSystem(root, {}, [PLAYBOOKS], extra, redis_config=redis_config)
    warmup_s = args.retention + 60.0
    calls: list[ChaosCall] = []
    failed: list[ChaosCall] = []
    start: Usage | None = None
    end: Usage | None = None
    try:
        system.start()
        print(
            f"system up; calls every {args.interval:g} s for {args.minutes:g} min; logs in {root}", flush=True
        )
        began = time.monotonic()
        stop_at = began + 60 * args.minutes
        pending: list[ChaosCall] = []
        index = 0
        while time.monotonic() < stop_at:
            call = ChaosCall(index, f"soak-{index}", system.tls_port, clips[index % len(clips)])
            call.go.set()  # no event to wait for: ask once the greeting is over
            pending.append(call.start())
            index += 1
            for done in [c for c in pending if c.done.is_set()]:
                pending.remove(done)
                calls.append(done)
                if not finished(done):
                    failed.append(done)
                    why = "; ".join(done.problems) or f"BYE {done.bye_status}"
                    print(f"  call {done.user} failed: {why}")
            if start is None and time.monotonic() - began >= warmup_s:
                start = usage(system)
                print(f"after the warm-up ({warmup_s:.0f} s, {index} calls): {start.line()}", flush=True)
            time.sleep(max(0.0, began + index * args.interval - time.monotonic()))
        for call in pending:
            calls.append(call)
            if not finished(call):
                failed.append(call)
        time.sleep(args.retention + 5.0)  # what the last calls left expires
        end = usage(system)
        print(f"at the end ({len(calls)} calls): {end.line()}; the keys that take the most:", flush=True)
        print("\n".join(census(system)), flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        system.stop()
        if args.keep or end is None:
            print(f"log and config kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if start is None or end is None:
        print("soak: the run was too short for a warm-up; give --minutes more than the retention")
        return 1
    shared = start.rss_mb.keys() & end.rss_mb.keys()
    rss_growth = sum(end.rss_mb[p] - start.rss_mb[p] for p in shared)
    fds_growth = sum(end.fds[p] - start.fds[p] for p in shared)
    if len(shared) != len(start.rss_mb):
        print(f"  {len(start.rss_mb) - len(shared)} process(es) of the start were gone at the end")
    print(
        f"soak: calls={len(calls)} failed={len(failed)} redis_mb_start={start.redis_mb:.0f} "
        f"redis_mb_end={end.redis_mb:.0f} rss_growth_mb={rss_growth:.0f} fds_growth={fds_growth}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
