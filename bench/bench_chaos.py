"""Chaos: live calls through the loss of each role and of Redis (``make chaos``).

The system runs as separate processes (bench/chaos/fleet.py): a private Redis, one sip-edge, and two
copies each of media, asr, llm and tts, with the scripted agent of ``make bench-turns`` (its
playbook, the tts cache as configured by default), so it runs offline. An independent caller (the
bench-turns phone: SIP over TLS, SRTP, every packet stamped on arrival; it answers a re-INVITE or
UPDATE that moves the media by sending to the new address and decrypting with the new key) places N
calls per scenario; each hears the greeting and waits.

Scenarios, each on fresh calls:
- ``asr``, ``llm``, ``tts``, ``media``: SIGKILL the copy serving the most of the calls (for media the
  worker holding their legs), start it again 3 s later under the same worker id.
- ``sip-edge``: SIGKILL the edge, start it again on the same ports 3 s later.
- ``rolling``: SIGTERM every copy of every role in turn, each started again and beating before the
  next one stops.
- ``redis``: SIGKILL Redis, start it again 3 s later from its append-only file (everything it had
  acknowledged is back; the services reconnect).
- ``busy-host``: stress-ng hogs every core (at the services' own priority) from 4 s before the
  callers speak until their calls are over; nothing is killed. The line before the scenario's
  says how many session leases were lost while their worker lived (it should be none).
- ``child-crash``: on a system run by ``activecall up`` (``--workers`` with the same copies, its
  own Redis), SIGKILL the media child holding the most calls; the launcher starts it again and the
  edge moves its calls to the sibling. A line says how many of the other children's calls were
  untouched (no re-offer, no gap over 500 ms).
- ``redis-sentinel``: on a system whose Redis is a master, a replica and three sentinels
  (Debian's redis-sentinel): SIGKILL the master; the sentinels promote the replica and the services
  find it through them; the old master is started again 3 s after the kill and rejoins as a replica.

A tts copy's capacity is raised to N when the default is smaller, so that one copy carries every
call while the other is down; an asr copy keeps its default capacity, what one process (one core)
recognises in real time, and there are as many asr copies as the calls need (at least two): the edge
admits a call only when every role has room.

4 s after the kill (after a rolling restart: once it is over) each call says a question and waits
up to 25 s for the agent's next turn, listens 1 s, and hangs up (BYE). The harness then waits up to
75 s for everything to be over and prints, per call, what happened, then one line per scenario::

    chaos ROLE: calls=N survived=N audio_gap_p90_ms=N zombies=N leaked_ports=N leaked_keys=N

- survived: calls that heard agent speech after their question.
- audio_gap_p90_ms: per call the longest time without a received audio packet from the kill to the
  agent's next turn (to the hang-up when none came); the 90th percentile (nearest rank) over calls.
- zombies: calls still in ``calls:active``, with a record not ``ended``, listed in a live media
  worker's ``media:{worker}:legs``, or whose caller still receives RTP 2 s after its BYE; at least
  the legs the live media workers' ``activecall_media_legs_active`` gauges report.
- leaked_ports: UDP sockets of the media processes in the RTP range and leased port blocks beyond
  what the workers held when the system had started.
- leaked_keys: keys of the scenario's calls without a TTL, their leases and cursors, and their
  ``sessions:{role}`` entries.

Run with ``make chaos`` (``CHAOS_CALLS=20``, ``CHAOS_ROLES=media,redis``) or::

    python bench/bench_chaos.py --calls 4 --roles media,sip-edge
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis

from activecall.bus import as_str
from activecall.config import AsrSettings, TtsSettings
from activecall.messages import decode
from chaos.calls import ChaosCall, wait_until
from chaos.events import (
    EventLog,
    crash_child,
    fail_redis_over,
    hog_the_cpus,
    holders,
    kill_and_restart,
    kill_and_restart_redis,
    rolling_restart,
    victim,
)
from chaos.fleet import KEYS, Fleet
from chaos.probes import Leftovers, PortUse, leftovers, port_use
from chaos.supervised import SupervisedSystem
from turns.voices import QUESTIONS, Clip, Synthesizer, available_voices

PLAYBOOKS = Path(__file__).resolve().parent / "turns" / "playbooks"
ROLES = (
    "asr",
    "llm",
    "tts",
    "media",
    "sip-edge",
    "rolling",
    "redis",
    "busy-host",
    "child-crash",
    "redis-sentinel",
)
UNTOUCHED_GAP_S = 0.5
CHILD_CRASH_ROLE = "media"  # the child of activecall up that child-crash kills: its calls must move
BUSY_HOST_S = 120.0  # stress-ng's own limit; it is stopped once the calls are over
ROLLING_ORDER = ["asr", "llm", "tts", "media", "sip-edge"]
COPIES = {"sip-edge": 1, "media": 2, "asr": 2, "llm": 2, "tts": 2}
RTP_RANGE = (30000, 34000)  # activecall.testing.system's rtp_start_port..rtp_end_port
SPEAK_AFTER_S = 4.0
READY_WAIT_S = 90.0
CALL_STAGGER_S = 0.3
SETTLE_WAIT_S = 75.0
RESTART_JOIN_S = 150.0


@dataclass
class Outcome:
    role: str
    calls: int
    survived: int
    gap_p90_ms: int
    zombies: int
    leaked_ports: int
    leaked_keys: int

    def line(self) -> str:
        return (
            f"chaos {self.role}: calls={self.calls} survived={self.survived} "
            f"audio_gap_p90_ms={self.gap_p90_ms} zombies={self.zombies} "
            f"leaked_ports={self.leaked_ports} leaked_keys={self.leaked_keys}"
        )


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def call_ids_by_sip(client: redis.Redis) -> dict[str, str]:
    """SIP Call-ID -> call id, from every call record."""
    found = {}
    for raw in client.scan_iter(match=f"{KEYS.prefix}call:{{*}}", count=1000):
        key = as_str(raw)
        if not key.endswith("}") or client.type(key) != b"hash":
            continue
        sip_call_id = client.hget(key, "sip_call_id")
        if sip_call_id is not None:
            found[as_str(sip_call_id)] = key[key.index("{") + 1 : -1]
    return found


def describe_call(call: ChaosCall, call_id: str, since: float, left: Leftovers, where: str) -> list[str]:
    def at(t: float) -> str:
        return f"{1000 * (t - since):+.0f}"

    receiver = call.receiver
    errors = sum(receiver.errors.values()) if receiver is not None else 0
    reoffers = ", ".join(f"{method} {status} at {at(t)} ms" for t, method, status in call.reoffers) or "none"
    reply = f"agent turn {1000 * (call.reply_at - call.question_end):.0f} ms after the question" if (
        call.survived) else "NO agent turn"  # fmt: skip
    lines = [
        f"  call {call.user} {call_id or '(no record)'} {where}: {reply}; longest gap "
        f"{1000 * call.longest_gap(since):.0f} ms; re-offers: {reoffers}; "
        f"BYE {call.bye_status or 'no answer'}"
        f"{' (system hung up first)' if call.remote_bye else ''}; reconnects {call.reconnects}; "
        f"packets {len(call.packets)}, srtp errors {errors}"
    ]
    lines += [f"    problem: {p}" for p in call.problems]
    lines += [f"    zombie: {', '.join(left.zombies[call_id])}"] if call_id in left.zombies else []
    lines += [f"    key left: {k}" for k in left.keys.get(call_id, [])]
    return lines


def place_calls(
    fleet: Fleet, role: str, count: int, synth: Synthesizer, voices: list[str]
) -> list[ChaosCall]:
    calls = []
    for index in range(count):
        voice = voices[index % len(voices)]
        text = QUESTIONS[index % len(QUESTIONS)]
        clip = Clip("question", text, voice, synth.say(text, voice))
        calls.append(ChaosCall(index, f"chaos-{role}-{index}", fleet.tls_port, clip).start())
        time.sleep(CALL_STAGGER_S)
    deadline = time.monotonic() + READY_WAIT_S
    for call in calls:
        call.ready.wait(max(0.1, deadline - time.monotonic()))
    return calls


def run_event(
    fleet: Fleet | SupervisedSystem, role: str, call_ids: list[str], calls: list[ChaosCall]
) -> EventLog:
    """The kill (or the rolling restart), then the callers' cue to speak."""
    if role == "rolling":
        log = EventLog(time.monotonic())
        rolling_restart(fleet, ROLLING_ORDER, log)
        for call in calls:
            call.go.set()
        return log
    restart: threading.Thread | None = None  # the event's own thread, when it takes time
    if role == "busy-host":
        log = EventLog(time.monotonic())
        log.hog = hog_the_cpus(BUSY_HOST_S, log)
    elif role == "child-crash":
        assert isinstance(fleet, SupervisedSystem)
        log = EventLog(time.monotonic())
        restart = threading.Thread(
            target=crash_child, args=(fleet, CHILD_CRASH_ROLE, call_ids, log), daemon=True
        )
    elif role in ("redis", "redis-sentinel"):
        assert isinstance(fleet, Fleet)
        log = EventLog(time.monotonic())
        event = kill_and_restart_redis if role == "redis" else fail_redis_over
        restart = threading.Thread(target=event, args=(fleet, log), daemon=True)
    else:
        counts = holders(fleet, role, call_ids)
        target = victim(fleet, role, call_ids)
        log = EventLog(time.monotonic())
        log.note(f"{target} serves {counts[target]} of the {len(call_ids)} calls ({dict(counts)})")
        restart = threading.Thread(target=kill_and_restart, args=(fleet, target, log), daemon=True)
    if restart is not None:
        restart.start()
    time.sleep(max(0.0, log.started + SPEAK_AFTER_S - time.monotonic()))
    log.note("callers speak")
    for call in calls:
        call.go.set()
    if restart is not None:
        restart.join(RESTART_JOIN_S)
    return log


def settle(
    fleet: Fleet, calls: list[ChaosCall], call_ids: list[str], baseline: PortUse
) -> tuple[Leftovers, int]:
    """Wait (bounded) until the scenario's calls are over everywhere; what is left then."""
    deadline = time.monotonic() + SETTLE_WAIT_S
    with fleet.client() as client:
        while True:
            left = leftovers(client, [i for i in call_ids if i], fleet.workers("media"))
            now = time.monotonic()
            for call, call_id in zip(calls, call_ids, strict=True):
                if call.receiving(now):
                    left.zombies.setdefault(call_id or call.user, []).append("caller still receives RTP")
            ports = port_use(client, fleet.pids("media"), *RTP_RANGE).beyond(baseline)
            if (not left.zombie_count and not left.key_count and not ports) or now > deadline:
                return left, ports
            time.sleep(1.0)


def timeline(client: redis.Redis, call_id: str, since_wall: float) -> list[str]:
    """The call's events, ms after the scenario's event began (what the system says it did)."""
    stream = KEYS.events(call_id)
    lines = []
    for _, fields in client.xrange(stream):
        message = decode(fields[b"m"])
        detail = " ".join(
            f"{k}={getattr(message, k)!r}"
            for k in ("turn_id", "text", "reason", "eot", "reply_at_ms", "to_worker")
            if getattr(message, k, None) not in (None, "", 0)
        )
        lines.append(f"      {1000 * (message.ts - since_wall):8.0f} ms  {message.TYPE} {detail}")
    return lines


System = Fleet | SupervisedSystem


def run_scenario(fleet: System, role: str, count: int, synth: Synthesizer, voices: list[str],
                 baseline: PortUse, show_timeline: bool = False) -> Outcome:  # fmt: skip
    print(f"scenario {role}: {count} calls", flush=True)
    calls = place_calls(fleet, role, count, synth, voices)
    leases_lost_before = leases_lost(fleet)
    log: EventLog | None = None
    try:
        with fleet.client() as client:
            by_sip = call_ids_by_sip(client)
            call_ids = [by_sip.get(c.sip_call_id, "") for c in calls]
            where = [
                as_str(client.hget(KEYS.call(i), "media_worker") or b"?") if i else "?" for i in call_ids
            ]
        ready = sum(c.ready.is_set() and not c.problems for c in calls)
        print(f"  {ready}/{count} calls heard the greeting and are waiting", flush=True)
        event_wall = time.time()
        log = run_event(fleet, role, [i for i in call_ids if i], calls)
        for call in calls:
            call.done.wait(max(1.0, 60.0 + SPEAK_AFTER_S - (time.monotonic() - log.started)))
        stop_hog(log)
        left, ports = settle(fleet, calls, call_ids, baseline)
        if show_timeline:
            with fleet.client() as client:
                for call_id in call_ids:
                    print(f"  timeline of {call_id}:")
                    print("\n".join(timeline(client, call_id, event_wall)))
    finally:
        if log is not None:
            stop_hog(log)
        for call in calls:
            call.go.set()
            call.stop_listening.set()
        for call in calls:
            if call.thread is not None:
                call.thread.join(timeout=10.0)
    for call, call_id, worker in zip(calls, call_ids, where, strict=True):
        for line in describe_call(call, call_id, log.started, left, f"on {worker}"):
            print(line)
    if left.legs_open:
        print(f"  the live media workers still report {left.legs_open} open leg(s)")
    print(f"  session leases lost while their worker lived: {leases_lost(fleet) - leases_lost_before}")
    if log.victim:
        others = [c for c, w in zip(calls, where, strict=True) if w not in (log.victim, "?")]
        untouched = [c for c in others if not c.reoffers and c.longest_gap(log.started) < UNTOUCHED_GAP_S]
        print(
            f"  calls on the other children: {len(others)}, untouched (no re-offer, no gap over "
            f"{1000 * UNTOUCHED_GAP_S:.0f} ms): {len(untouched)}"
        )
    outcome = Outcome(
        role,
        count,
        sum(c.survived for c in calls),
        round(1000 * p90([c.longest_gap(log.started) for c in calls])),
        left.zombie_count,
        ports,
        left.key_count,
    )
    print(outcome.line(), flush=True)
    return outcome


def stop_hog(log: EventLog) -> None:
    if log.hog is not None and log.hog.poll() is None:
        log.hog.terminate()
        log.hog.wait(timeout=10)
        log.note("stress-ng stopped")


def leases_lost(fleet: Fleet | SupervisedSystem) -> int:
    """How many times a worker logged that it lost a session's lease (another worker took it)."""
    return sum(path.read_text(errors="replace").count('"session lease lost"') for path in fleet.logs())


def stop_on_sigterm() -> None:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20, help="live calls per scenario (default 20)")
    parser.add_argument("--roles", default=",".join(ROLES), help=f"comma-separated, of {','.join(ROLES)}")
    parser.add_argument("--keep", action="store_true", help="keep the services' logs and config")
    parser.add_argument("--timeline", action="store_true", help="print every call's bus events")
    args = parser.parse_args()
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        parser.error(f"unknown role(s) {', '.join(unknown)}; choose from {', '.join(ROLES)}")
    stop_on_sigterm()
    synth, voices = Synthesizer(), available_voices()
    root = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    sized = f"[tts]\ncapacity = {max(TtsSettings().capacity, args.calls)}\n"  # see the docstring
    copies = {**COPIES, "asr": max(COPIES["asr"], math.ceil(args.calls / AsrSettings().capacity))}
    extra = '[handler]\ndefault = "bench-turns.md"\n' + sized
    # The redis-sentinel scenario needs Redis under sentinels: a system of its own, after the others.
    # child-crash needs activecall up, redis-sentinel Redis under sentinels: systems of their own.
    own = {"child-crash": "supervised", "redis-sentinel": "sentinel"}
    systems = [("system", [r for r in roles if r not in own])]
    systems += [(own[r], [r]) for r in roles if r in own]
    outcomes: list[Outcome] = []
    failed = True
    try:
        for name, scenarios in systems:
            if scenarios:
                fleet: Fleet | SupervisedSystem = (
                    SupervisedSystem(root / name, copies, [PLAYBOOKS], extra)
                    if name == "supervised"
                    else Fleet(root / name, copies, [PLAYBOOKS], extra, sentinel=name == "sentinel")
                )
                outcomes += run_on(fleet, scenarios, args.calls, synth, voices, args.timeline)
        failed = False
    except KeyboardInterrupt:
        print("interrupted: stopping everything", flush=True)
    finally:
        if args.keep or failed:
            print(f"logs and config kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print("\n".join(o.line() for o in outcomes))
    return 1 if failed else 0


def run_on(fleet: System, roles: list[str], count: int, synth: Synthesizer, voices: list[str],
           show_timeline: bool) -> list[Outcome]:  # fmt: skip
    """Start the system, run the scenarios on it one after the other, stop it (whatever happens)."""
    try:
        started = time.monotonic()
        fleet.start()
        with fleet.client() as client:
            wait_until(lambda: port_use(client, fleet.pids("media"), *RTP_RANGE).blocks >= 2, 10.0)
            baseline = port_use(client, fleet.pids("media"), *RTP_RANGE)
        redis_kind = (
            "under activecall up, with its Redis"
            if isinstance(fleet, SupervisedSystem)
            else "Redis under three sentinels"
            if fleet.sentinel
            else "Redis with an append-only file"
        )
        print(
            f"system up in {time.monotonic() - started:.1f} s: "
            + ", ".join(f"{role} x{n}" for role, n in fleet.copies.items())
            + f", {redis_kind}; baseline {baseline.bound} bound RTP ports, {baseline.blocks} port blocks; "
            f"logs in {fleet.root}",
            flush=True,
        )
        return [run_scenario(fleet, role, count, synth, voices, baseline, show_timeline) for role in roles]
    finally:
        fleet.stop()


if __name__ == "__main__":
    raise SystemExit(main())
