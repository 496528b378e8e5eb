"""Turn-taking figures from what the caller sent and heard: pure functions on a timeline.

Times are seconds on the caller's monotonic clock. The agent's side is one entry per RTP packet
received, (arrival time, speech), speech meaning the decoded 20 ms has speech energy. The caller's side
is the utterances it sent, with the send times of their first and last speech packets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

FRAME = 160  # samples in 20 ms at 8 kHz
SPEECH_DBFS = -40.0  # a 20 ms frame above this RMS is speech (G.711 silence is -inf, line noise ~-70)
SEGMENT_GAP_S = 0.6  # agent speech with a shorter silence inside is one stretch of talk
NEW_REPLY_GAP_S = 1.0  # talk after at least this much silence is a new reply, not a resumption
PLAYING_WINDOW_S = 1.0  # the agent is in the middle of a reply at t when it had speech this shortly before t
RESUME_WINDOW_S = 2.0  # after a backchannel or cough the agent must be heard again within this
TAIL_S = 0.5  # ... and later than this (earlier speech is the tail of what it was saying)
MISSED_AFTER_S = 1.0  # an interruption is missed when the agent still talks this long after it began
REPLY_WAIT_S = 10.0  # a reply later than this after the caller's end does not count as the answer
TRUNCATED_SHARE = 0.7  # a reply heard for less than this share of its expected speech was cut


def frame_dbfs(pcm: np.ndarray) -> float:
    """RMS level of some int16 samples in dB below full scale (-inf for digital silence)."""
    if len(pcm) == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(np.square(pcm.astype(np.float64)))))
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


def is_speech(pcm: np.ndarray, threshold_dbfs: float = SPEECH_DBFS) -> bool:
    return frame_dbfs(pcm) > threshold_dbfs


def speech_frames(pcm: np.ndarray, threshold_dbfs: float = SPEECH_DBFS) -> list[bool]:
    """One flag per 20 ms frame (the last one padded)."""
    padded = np.concatenate([pcm, np.zeros(-len(pcm) % FRAME, dtype=pcm.dtype)])
    return [is_speech(padded[i : i + FRAME], threshold_dbfs) for i in range(0, len(padded), FRAME)]


@dataclass(frozen=True)
class Segment:
    """A stretch of agent talk: arrival of its first and last speech packets, and its speech packets."""

    start: float
    end: float
    packets: int


def segments(agent: Sequence[tuple[float, bool]], gap_s: float = SEGMENT_GAP_S) -> list[Segment]:
    """Agent speech packets joined into stretches wherever the silence between them is below ``gap_s``."""
    out: list[Segment] = []
    start = end = 0.0
    count = 0
    for at, speech in agent:
        if not speech:
            continue
        if count and at - end < gap_s:
            end, count = at, count + 1
            continue
        if count:
            out.append(Segment(start, end, count))
        start = end = at
        count = 1
    if count:
        out.append(Segment(start, end, count))
    return out


@dataclass
class Utterance:
    """One thing the caller said. ``kind``: question, split (a question with a mid-sentence pause),
    backchannel, cough or interruption. ``pause`` is (last speech packet before the pause, first after)."""

    kind: str
    text: str
    voice: str
    speech_start: float
    speech_end: float
    pause: tuple[float, float] | None = None
    expected_reply_ms: float = 0.0  # backchannel, cough: speech the reply in progress should have


@dataclass
class Timeline:
    answered: float  # the INVITE's 200 OK read
    agent: list[tuple[float, bool]]  # (arrival, speech) per received audio packet, in order
    utterances: list[Utterance]
    end: float = 0.0  # when listening stopped
    agent_audio: list[np.ndarray] = field(default_factory=list)  # decoded, one entry per packet of ``agent``


@dataclass
class CallFigures:
    first_greeting_ms: float | None = None
    v2v_ms: list[float] = field(default_factory=list)
    over_caller: int = 0
    premature: int = 0
    pauses: int = 0
    backchannel_stops: int = 0
    backchannels: int = 0
    missed: int = 0
    interruptions: int = 0
    bargein_ms: list[float] = field(default_factory=list)
    restarts: int = 0  # replies begun anew while the caller was silent (not a figure of the turns line)
    notes: list[str] = field(default_factory=list)


def _playing(agent: Sequence[tuple[float, bool]], t: float, window: float = PLAYING_WINDOW_S) -> bool:
    return any(speech and t - window <= at <= t for at, speech in agent)


def _speech_between(agent: Sequence[tuple[float, bool]], start: float, end: float) -> int:
    return sum(1 for at, speech in agent if speech and start <= at <= end)


def _speech_spans(u: Utterance) -> list[tuple[float, float]]:
    if u.pause is None:
        return [(u.speech_start, u.speech_end)]
    return [(u.speech_start, u.pause[0]), (u.pause[1], u.speech_end)]


def band_features(pcm: np.ndarray, frames: int) -> np.ndarray:
    """Per 20 ms frame, the log energy in five bands (0-200-600-1200-2400-4000 Hz), each band's mean
    removed and every frame scaled to unit length: a spectral outline that ignores level."""
    count = min(frames, len(pcm) // FRAME)
    blocks = pcm[: count * FRAME].reshape(count, FRAME).astype(np.float64) * np.hanning(FRAME)
    power = np.square(np.abs(np.fft.rfft(blocks, axis=1)))
    edges = ((1, 5), (5, 13), (13, 25), (25, 49), (49, 81))  # bins of 50 Hz
    bands = np.log10(np.stack([power[:, a:b].sum(axis=1) for a, b in edges], axis=1) + 1.0)
    bands -= bands.mean(axis=0) if count else 0.0
    return bands / (np.linalg.norm(bands, axis=1, keepdims=True) + 1e-9)


def dtw_distance(a: np.ndarray, b: np.ndarray, frames: int = 75, band: int = 15) -> float:
    """How unlike two stretches of speech are, both taken from their first frame: dynamic time warping
    of their band outlines (cosine distance, warping within ``band`` frames), per step of the path.
    The first 1.5 s of an answer spoken twice by Piper (its random noise on) score 0.02 to 0.06; other
    sentences of the bench's answers against those starts 0.17 or more, talk resumed mid-sentence
    0.12 or more."""
    length = min(frames, len(a) // FRAME, len(b) // FRAME)  # the shorter one decides
    if length < frames // 2:
        return 1.0
    fa, fb = band_features(a, length), band_features(b, length)
    n, m = len(fa), len(fb)
    cost = 1.0 - fa @ fb.T
    total = np.full((n + 1, m + 1), np.inf)
    total[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(max(1, i - band), min(m, i + band) + 1):
            total[i, j] = cost[i - 1, j - 1] + min(total[i - 1, j], total[i, j - 1], total[i - 1, j - 1])
    return float(total[n, m] / (n + m))


def speech_audio(timeline: Timeline, start: float, seconds: float) -> np.ndarray:
    """The agent audio heard from the first speech packet at or after ``start``, ``seconds`` long."""
    if not timeline.agent_audio:
        return np.zeros(0, dtype=np.int16)
    first = next((i for i, (at, speech) in enumerate(timeline.agent) if speech and at >= start), None)
    if first is None:
        return np.zeros(0, dtype=np.int16)
    count = round(seconds / 0.020)
    return np.concatenate(timeline.agent_audio[first : first + count])


RESTART_DISTANCE = 0.08  # talk whose start is this close to how an answer begins is a new turn
FINGERPRINT_S = 1.5
RESTART_LOOK_S = 8.0  # how far into a reply to look for it being begun anew
ONSET_SILENCE = 3  # packets of silence before speech that make it a word onset


def word_onsets(agent: Sequence[tuple[float, bool]], after: float, until: float) -> list[float]:
    """Arrivals of agent speech packets after ``after`` (up to ``until``) that follow at least 60 ms of
    silence: where a new turn could begin without a longer break."""
    onsets = []
    quiet = 0
    for at, speech in agent:
        if speech and quiet >= ONSET_SILENCE and after < at <= until:
            onsets.append(at)
        quiet = 0 if speech else quiet + 1
    return onsets


def analyse(timeline: Timeline, known_starts: Sequence[np.ndarray] = ()) -> CallFigures:
    """Every figure of one call; see bench_turns.py for what each means. ``known_starts``: how the
    agent's replies begin (its answers synthesized, speech from the first frame), to tell a new turn."""
    agent = timeline.agent
    segs = segments(agent)
    figures = CallFigures()
    # The first greeting: 200 OK -> first agent speech packet.
    first = next((s for s in segs if s.start >= timeline.answered), None)
    if first is not None and first.start - timeline.answered <= REPLY_WAIT_S:
        figures.first_greeting_ms = (first.start - timeline.answered) * 1000
    starts = [s.start for s in segs]
    # A segment starts a new reply when the agent was silent long enough before it.
    new_reply = {s.start: i == 0 or s.start - segs[i - 1].end >= NEW_REPLY_GAP_S for i, s in enumerate(segs)}
    utterances = sorted(timeline.utterances, key=lambda u: u.speech_start)
    for index, u in enumerate(utterances):
        window_end = utterances[index + 1].speech_start if index + 1 < len(utterances) else timeline.end
        over_playing = _playing(agent, u.speech_start)
        # Replies started over the caller: onsets inside the caller's speech. When the caller began
        # over agent audio, only a new reply counts (not the audio that was playing, nor its resumption).
        over = [
            t for t in starts
            if any(a <= t <= b for a, b in _speech_spans(u)) and (not over_playing or new_reply[t])
        ]  # fmt: skip
        figures.over_caller += len(over)
        for t in over:
            figures.notes.append(f"{u.kind} {u.text!r}: agent began {1000 * (t - u.speech_start):.0f} ms in")
        if u.kind == "split" and u.pause is not None:
            figures.pauses += 1
            early = [t for t in starts if u.pause[0] < t <= u.speech_end]
            if early:
                figures.premature += 1
                after = 1000 * (early[0] - u.pause[0])
                figures.notes.append(f"premature: {u.text!r} answered {after:.0f} ms after the pause began")
        if u.kind in ("question", "split", "interruption") and not over:
            reply = next((t for t in starts if u.speech_end < t <= u.speech_end + REPLY_WAIT_S), None)
            if reply is not None and reply <= window_end:
                figures.v2v_ms.append((reply - u.speech_end) * 1000)
                # A reply cut short and begun anew (a stretch after it starts the way an answer starts):
                # the caller heard the start of an answer it was not given.
                look = min(window_end, reply + RESTART_LOOK_S)
                for onset in word_onsets(agent, reply, look) if known_starts else []:
                    begins = speech_audio(timeline, onset, FINGERPRINT_S)
                    distance = min(dtw_distance(begins, r) for r in known_starts)
                    if distance <= RESTART_DISTANCE:
                        figures.restarts += 1
                        cut_ms = 1000 * (onset - reply)
                        figures.notes.append(
                            f"{u.kind} {u.text!r}: reply begun anew {cut_ms:.0f} ms after it began"
                        )
                        break
            else:
                figures.notes.append(f"no reply to {u.kind} {u.text!r}")
        if u.kind in ("backchannel", "cough"):
            if not over_playing:
                figures.notes.append(f"{u.kind} {u.text!r} not said over agent speech; not judged")
                continue
            figures.backchannels += 1
            # The tail of what was playing when the caller began does not count as going on.
            resumed = _speech_between(agent, u.speech_end + TAIL_S, u.speech_end + RESUME_WINDOW_S) > 0
            reply_start = max((s.start for s in segs if s.start <= u.speech_start and new_reply[s.start]),
                              default=u.speech_start)  # fmt: skip
            heard_ms = 20.0 * _speech_between(agent, reply_start, window_end)
            cut = u.expected_reply_ms > 0 and heard_ms < TRUNCATED_SHARE * u.expected_reply_ms
            # Talk that comes back after a gap and begins the way a reply began: a new turn, not the
            # rest of this one.
            after = next((s for s in segs if s.start > u.speech_start), None)
            distance = 1.0
            if after is not None and after.start <= u.speech_end + RESUME_WINDOW_S:
                heard = speech_audio(timeline, after.start, FINGERPRINT_S)
                distance = min((dtw_distance(heard, r) for r in known_starts), default=1.0)
            restart = distance <= RESTART_DISTANCE
            stopped = not resumed or cut or restart
            verdict = "STOPPED the agent" if stopped else "agent went on"
            if stopped:
                figures.backchannel_stops += 1
            within = "yes" if resumed else "no"
            figures.notes.append(
                f"{u.kind} {u.text!r}: {verdict} (agent speech 0.5-2 s after: {within}; "
                f"reply heard {heard_ms:.0f} of {u.expected_reply_ms:.0f} ms expected; "
                + (
                    f"talk after a break is {distance:.2f} from how an answer begins, a new turn at <= "
                    f"{RESTART_DISTANCE})"
                    if distance < 1.0
                    else "no break in the talk)"
                )
            )
        if u.kind == "interruption":
            if not over_playing:
                figures.notes.append(f"interruption {u.text!r} not said over agent speech; not judged")
                continue
            figures.interruptions += 1
            began = u.speech_start
            current = max(
                (s for s in segs if s.start <= began and s.end >= began - PLAYING_WINDOW_S),
                key=lambda s: s.start,
            )
            figures.bargein_ms.append(max(0.0, current.end - began) * 1000)
            # Still talking 1 s on: the stretch in progress, or the agent taking it up again (not a new
            # reply, which counts as over the caller) before the caller finished.
            later = [
                s
                for s in segs
                if s.start > current.end and s.start <= u.speech_end and not new_reply[s.start]
            ]
            if current.end > began + MISSED_AFTER_S or any(s.end > began + MISSED_AFTER_S for s in later):
                figures.missed += 1
                on = 1000 * (max([current.end, *(s.end for s in later)]) - began)
                figures.notes.append(f"interruption {u.text!r} MISSED: agent talked {on:.0f} ms on")
            else:
                figures.notes.append(
                    f"interruption {u.text!r}: agent stopped {1000 * (current.end - began):.0f} ms in"
                )
    return figures


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Summary:
    v2v_p50_ms: float | None
    v2v_p90_ms: float | None
    over_caller: int
    premature: tuple[int, int]
    backchannel_stops: tuple[int, int]
    missed_interruptions: tuple[int, int]
    bargein_p90_ms: float | None
    first_greeting_ms: float | None  # the worst call's
    v2v_samples: int = 0
    restarts: int = 0


def summarize(calls: Sequence[CallFigures]) -> Summary:
    v2v = [v for c in calls for v in c.v2v_ms]
    greetings = [c.first_greeting_ms for c in calls if c.first_greeting_ms is not None]
    return Summary(
        v2v_p50_ms=percentile(v2v, 50),
        v2v_p90_ms=percentile(v2v, 90),
        over_caller=sum(c.over_caller for c in calls),
        premature=(sum(c.premature for c in calls), sum(c.pauses for c in calls)),
        backchannel_stops=(sum(c.backchannel_stops for c in calls), sum(c.backchannels for c in calls)),
        missed_interruptions=(sum(c.missed for c in calls), sum(c.interruptions for c in calls)),
        bargein_p90_ms=percentile([b for c in calls for b in c.bargein_ms], 90),
        first_greeting_ms=max(greetings) if greetings else None,
        v2v_samples=len(v2v),
        restarts=sum(c.restarts for c in calls),
    )


def _ms(value: float | None) -> str:
    return "NA" if value is None else str(round(value))


def format_summary(label: str, s: Summary) -> str:
    """``turns: ...`` (or ``turns[label]: ...``): the figures on one line."""
    head = "turns" if not label else f"turns[{label}]"
    return (
        f"{head}: v2v_p50_ms={_ms(s.v2v_p50_ms)} v2v_p90_ms={_ms(s.v2v_p90_ms)} over_caller={s.over_caller} "
        f"premature={s.premature[0]}/{s.premature[1]} "
        f"backchannel_stops={s.backchannel_stops[0]}/{s.backchannel_stops[1]} "
        f"missed_interruptions={s.missed_interruptions[0]}/{s.missed_interruptions[1]} "
        f"bargein_p90_ms={_ms(s.bargein_p90_ms)} first_greeting_ms={_ms(s.first_greeting_ms)}"
    )
