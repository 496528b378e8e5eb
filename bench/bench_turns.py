"""Turn-taking as the caller hears it: voice-to-voice latency, replies over the caller, premature ends
of turn, backchannels and coughs that stop the agent, missed interruptions, barge-in time and the time
to the greeting, measured at an independent phone.

The phone (bench/turns/) is written here, not taken from the project: a SIP UAC over TLS to the
system's TLS port (INVITE offering PCMU + telephone-event with an SDES ``a=crypto`` key, ACK, BYE,
200 OK to the system's BYE), SRTP through pylibsrtp, RTP packets built by hand and paced on a 20 ms
monotonic grid from a thread of their own, G.711 from its own tables. Every packet received is stamped
with time.monotonic() on arrival in a receiving thread, and a 20 ms packet whose decoded audio is above
-40 dBFS counts as agent speech.

The caller speaks recorded audio: espeak-ng voices (en-us, en-gb, en+f3, en-us+m3, en-gb-scotland+f2)
and the Piper voice, at 8 kHz, rotating from one utterance to the next. Per call (after the greeting):
a question; "uh-huh" (or another backchannel) over the answer; a question split by a 400-700 ms pause;
a cough (a 150-300 ms noise burst) over the answer; a question; a real interruption (a full question)
over the answer; a backchannel over the answer to the interruption; a split question; a backchannel or
cough over its answer. The system answers from bench/turns/playbooks/bench-turns.md, whose answers run
to three sentences so there is always something to talk over.

Figures (times on the caller's clock):
- v2v: send of the packet holding the caller's last speech -> arrival of the first agent speech packet
  after it (questions, split questions, interruptions); p50 and p90 over every call of a configuration.
- over_caller: agent talk that began while the caller was sending speech (the pause of a split question
  excluded). When the caller began over agent audio, that audio going on or resuming does not count,
  only a new reply (after at least 1 s of agent silence).
- premature N/M: split questions whose answer began after the pause began and before the caller's last
  speech packet, over all split questions.
- backchannel_stops N/M: backchannels and coughs said within 1 s of agent speech after which the turn
  did not go on: no agent speech from 0.5 s to 2 s after their end; or less than 70 % of the speech of
  the playbook's shortest answer heard in the reply; or the talk that came back begins the way one of
  the playbook's answers begins (a new turn, so the rest of the old one was lost: the start of that
  talk, 1.5 s, against each answer synthesized with the same Piper voice, by dynamic time warping of
  band energies; the same words score 0.00 to 0.06, other talk 0.12 or more, a new turn <= 0.08).
- missed_interruptions N/M: interruptions said within 1 s of agent speech while the agent still talked
  1 s after the interruption began (the stretch of agent talk in progress, gaps under 0.6 s joined, or
  that talk taken up again before the caller finished).
- bargein_p90: interruption onset -> arrival of the last agent speech packet of that stretch.
- first_greeting: 200 OK read -> first agent speech packet; the worst call's.

With -v every call is also printed as a time line (ms after the 200 OK): what the caller said, the
stretches of agent talk heard, the call's events read back from Redis (a cross-check only: the figures
come from the audio), and the verdict on every backchannel, cough and interruption.

Three configurations, each its own system (``activecall up`` via activecall.testing.system):
``cached`` (scripted answers, the tts cache and pre-synthesis as configured by default),
``uncached`` (scripted, ``[tts] cache_entries = 0`` and ``presynthesize = false`` where that key
exists), ``claude`` (the Anthropic provider against a local Messages API stand-in answering the same
texts after a fixed 300 ms before the first token). The last line is ``turns: ...`` with the figures
of the first configuration run. Run with ``make bench-turns`` or::

    python bench/bench_turns.py                 # three configurations, 3 calls each
    python bench/bench_turns.py --quick         # one call each
    python bench/bench_turns.py --config cached --calls 5 -v
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import pickle
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from activecall.config import TtsSettings
from activecall.testing.anthropic_server import FakeAnthropicServer, RecordedRequest, Reply, text
from activecall.testing.system import running_system
from turns import g711
from turns.caller import CallResult, run_call
from turns.metrics import (
    CallFigures,
    Summary,
    analyse,
    format_summary,
    segments,
    speech_frames,
    summarize,
)
from turns.voices import PIPER, Synthesizer, available_voices, plan_call

HOST = "127.0.0.1"
PLAYBOOKS = Path(__file__).resolve().parent / "turns" / "playbooks"
PLAYBOOK = "bench-turns.md"
CONFIGS = ("cached", "uncached", "claude")
API_KEY = "sk-ant-bench-turns"
FIRST_TOKEN_DELAY_S = 0.3
SHOWN_EVENTS = frozenset(
    ("barge_in", "turn.cancelled", "playback.paused", "playback.resumed", "transcript.final")
    + ("turn.started", "playback.started", "speech.started", "speech.stopped", "turn.timings")
)
TARGETS = (
    "v2v p50 <= 500 ms, p90 <= 800 ms (cached; uncached p50 <= 800), over_caller 0, premature <= 5 %, "
    "backchannel_stops 0, missed_interruptions 0, bargein p90 <= 200 ms, first greeting <= 300 ms"
)


def load_answers() -> tuple[list[tuple[re.Pattern[str], str]], str]:
    """The playbook's scripted rules (pattern, answer) and fallback, for the Claude stand-in."""
    front = (PLAYBOOKS / PLAYBOOK).read_text().split("---", 2)[1]
    data = yaml.safe_load(front)
    rules = [(re.compile(r["match"], re.IGNORECASE), str(r["say"])) for r in data["rules"]]
    return rules, str(data["fallback"])


def stand_in(rules: list[tuple[re.Pattern[str], str]], fallback: str) -> Any:
    """A Messages API picker: the playbook's answer to the caller's last words, first token after 300 ms."""

    async def pick(request: RecordedRequest) -> Reply:
        content: Any = request.body["messages"][-1]["content"]
        if not isinstance(content, str):
            content = " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
        answer = next((say for pattern, say in rules if pattern.search(content)), fallback)
        await asyncio.sleep(FIRST_TOKEN_DELAY_S)
        return text(answer)

    return pick


def tts_keys(wanted: dict[str, str]) -> str:
    """``[tts]`` with those of ``wanted`` (TOML values) that TtsSettings has."""
    known = {f.name for f in dataclasses.fields(TtsSettings)}
    lines = [f"{k} = {v}" for k, v in wanted.items() if k in known]
    return "[tts]\n" + "\n".join(lines) + "\n" if lines else ""


@contextmanager
def system_for(
    config: str, root: Path, settings: dict[str, str] | None = None
) -> Iterator[tuple[Any, FakeAnthropicServer | None]]:
    extra = f'[handler]\ndefault = "{PLAYBOOK}"\n'
    env: dict[str, str] = dict(settings or {})
    with ExitStack() as stack:
        server = None
        if config == "uncached":
            extra += tts_keys({"cache_entries": "0", "presynthesize": "false"})
        elif config == "claude":
            server = stack.enter_context(FakeAnthropicServer(stand_in(*load_answers())))
            extra += f'[llm]\nbase_url = "{server.base_url}"\n'
            env["ANTHROPIC_API_KEY"] = API_KEY
        system = stack.enter_context(
            running_system(root, playbook_dirs=[PLAYBOOKS], extra_config=extra, env=env)
        )
        yield system, server


def answer_starts(synth: Synthesizer) -> tuple[float, list[np.ndarray]]:
    """The speech in the shortest of the playbook's answers, and how each answer begins, in the Piper
    voice the tts speaks (through G.711, as the caller hears it)."""
    rules, fallback = load_answers()
    spoken = [synth.say(answer, PIPER) for answer in [*(say for _, say in rules), fallback]]
    shortest = min(20.0 * sum(speech_frames(pcm)) for pcm in spoken)
    return shortest, [g711.decode(g711.encode(pcm[: 8000 * 2])) for pcm in spoken]


def call_events(redis_url: str, user: str) -> list[Any]:
    """The events the system recorded for the call from ``user`` (a cross-check only)."""
    import redis

    from activecall.messages import decode

    client = redis.Redis.from_url(redis_url)
    events: list[Any] = []
    try:
        for key in client.scan_iter(match="ac:call:{*}", count=1000):
            if not key.endswith(b"}") or client.type(key) != b"hash":
                continue
            if user.encode() not in (client.hget(key, "caller") or b""):
                continue
            for _, entry in client.xrange(key + b":events"):
                try:
                    events.append(decode(entry[b"m"]))
                except Exception:
                    pass
    finally:
        client.close()
    return events


def event_line(event: Any, result: CallResult) -> tuple[float, str]:
    at = 1000 * (event.ts - result.clock_offset - result.timeline.answered)
    fields = {
        k: getattr(event, k)
        for k in ("turn_id", "reason", "played_ms", "text", "eot", "p_finished", "stages")
        if hasattr(event, k)
    }
    detail = " ".join(f"{k}={v!r}" for k, v in fields.items() if v not in ("", 0, None))
    return at, f"    {at:7.0f} ms  event {event.TYPE} {detail}"


def describe(result: CallResult, figures: CallFigures) -> list[str]:
    tl = result.timeline
    v2v = " ".join(f"{v:.0f}" for v in figures.v2v_ms)
    barge = " ".join(f"{v:.0f}" for v in figures.bargein_ms)
    greeting = "NA" if figures.first_greeting_ms is None else f"{figures.first_greeting_ms:.0f}"
    lines = [
        f"  call {result.user}: SIP {result.statuses} BYE {result.bye_status or 'none'}"
        f"{' (system hung up)' if result.remote_bye else ''}; RTP sent {result.packets_sent} received "
        f"{result.packets_received} srtp errors {sum(result.srtp_errors.values())}; send late max "
        f"{result.send_late_max_ms:.1f} ms ({result.send_late_5ms} packets > 5 ms);"
        f" {len(tl.utterances)} utterances; greeting {greeting} ms; "
        f"v2v [{v2v}] ms; barge-in [{barge}] ms"
    ]
    lines += [f"    problem: {p}" for p in result.problems]
    return lines


def timed_lines(result: CallResult, figures: CallFigures, events: list[Any]) -> list[str]:
    """The caller's utterances, the agent's stretches of talk and the system's events, in time order
    (ms after the 200 OK), then the verdicts."""
    tl = result.timeline
    lines: list[tuple[float, str]] = []
    for u in tl.utterances:
        start, end = 1000 * (u.speech_start - tl.answered), 1000 * (u.speech_end - tl.answered)
        pause = f" (pause {1000 * (u.pause[1] - u.pause[0]):.0f} ms)" if u.pause else ""
        lines.append(
            (start, f"    {start:7.0f} ms  CALLER {u.kind} {u.voice} {u.text!r} until {end:.0f}{pause}")
        )
    for seg in segments(tl.agent):
        start, end = 1000 * (seg.start - tl.answered), 1000 * (seg.end - tl.answered)
        lines.append(
            (start, f"    {start:7.0f} ms  AGENT talks until {end:.0f} ({seg.packets * 20} ms of speech)")
        )
    lines += [event_line(e, result) for e in events if e.TYPE in SHOWN_EVENTS]
    return [line for _, line in sorted(lines)] + [f"    verdict: {note}" for note in figures.notes]


def run_config(
    config: str,
    calls: int,
    seed: int,
    verbose: bool,
    synth: Synthesizer,
    expected: float,
    starts: list[np.ndarray],
    save: Path | None = None,
    settings: dict[str, str] | None = None,
) -> Summary:
    voices = available_voices()
    results: list[CallFigures] = []
    started = time.monotonic()
    prefix = f"bench-turns-{config}-"
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as tmp,
        system_for(config, Path(tmp), settings) as (system, server),
    ):
        print(
            f"{config}: system up in {time.monotonic() - started:.1f} s (TLS port {system.tls_port})",
            flush=True,
        )
        events: Counter[str] = Counter()
        for index in range(calls):
            rng = random.Random(seed * 1000 + index)
            user = f"bench-{config}-{index}"
            result = run_call(HOST, system.tls_port, user, plan_call(synth, index, voices, rng), expected)
            figures = analyse(result.timeline, starts)
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                (save / f"{user}.pickle").write_bytes(pickle.dumps(result))
            results.append(figures)
            for line in describe(result, figures):
                print(line, flush=True)
            try:
                recorded = call_events(system.redis_url, user)
            except Exception as exc:
                print(f"    (no events from Redis: {exc})")
                recorded = []
            events.update(e.TYPE for e in recorded)
            if verbose:
                print("\n".join(timed_lines(result, figures, recorded)), flush=True)
        picked = ("barge_in", "turn.cancelled", "playback.paused", "playback.resumed", "transcript.final",
                  "turn.started")  # fmt: skip
        print(f"  events[{config}] (cross-check from Redis): " + " ".join(f"{k}={events[k]}" for k in picked))
        if server is not None:
            print(f"  the Messages API stand-in answered {len(server.message_requests)} requests")
    summary = summarize(results)
    print(
        f"  {summary.v2v_samples} v2v samples; {summary.restarts} replies heard cut and begun anew after "
        f"the caller had finished; targets: {TARGETS}"
    )
    print(format_summary(config, summary), flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", choices=CONFIGS, action="append", help="run only this one (repeatable)")
    parser.add_argument("--calls", type=int, default=3, help="calls per configuration (default 3)")
    parser.add_argument("--quick", action="store_true", help="one call per configuration")
    parser.add_argument("--seed", type=int, default=1, help="chooses pauses, backchannels and timings")
    parser.add_argument("-v", "--verbose", action="store_true", help="every utterance and verdict")
    parser.add_argument(
        "--save", type=Path, help="write each call's timeline here (pickle), to analyse again"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a config key for every service, e.g. asr.preemptive=true (repeatable)",
    )
    args = parser.parse_args()
    settings = {}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not (section and name and value):
            parser.error(f"--set wants SECTION.KEY=VALUE, not {item!r}")
        settings[f"ACTIVECALL_{section.upper()}__{name.upper()}"] = value
    sys.setswitchinterval(0.0005)  # the sending thread gets the GIL back within half a millisecond
    configs = args.config or list(CONFIGS)
    calls = 1 if args.quick else max(1, args.calls)
    voices = available_voices()
    if len(voices) == 1:
        print("espeak-ng is not installed (apt-get install espeak-ng): the caller speaks with Piper only")
    synth = Synthesizer()
    expected, starts = answer_starts(synth)
    print(
        f"caller voices: {', '.join(voices)}; shortest answer {expected:.0f} ms of speech; "
        f"{calls} call(s) per configuration"
    )
    summaries = {
        config: run_config(
            config, calls, args.seed, args.verbose, synth, expected, starts, args.save, settings
        )
        for config in configs
    }
    print(format_summary("", summaries[configs[0]]))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
