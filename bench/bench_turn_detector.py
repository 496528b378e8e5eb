"""The end-of-turn detector on synthetic phone calls: judge AUC, premature ends, decision delay, VADs.

Run: .venv/bin/python bench/bench_turn_detector.py [--vad webrtc|silero] [--pause-ms 200]
     [--complete-ms 300] [--incomplete-ms 1200] [--max-ms 2000] [--silence-ms 500] [--voices ...]
     .venv/bin/python bench/bench_turn_detector.py --lm-table

Speech: each text said by espeak-ng (en-us, en-gb, en+f3) and by Piper (a seeded voice), resampled
to 8 kHz with a little line noise (-60 dBFS) and passed through G.711 u-law, as a caller's phone
delivers it. Three kinds of utterance, each followed by 2.5 s of line noise:
- complete sentences ("Can you tell me when the store opens tomorrow?");
- unfinished ones ("I'd like to, um"): the caller stopped to think;
- sentences with a 400-700 ms pause in the middle ("I'd like to book an appointment" ... "for Tuesday").
Each utterance goes through the service's path frame by frame: the frame VAD, the TurnDetector, and
at its pause the judge with the PocketSphinx partial transcript of the audio so far (the same engine
the asr runs by default). Printed for each mode (silence, text, smart_turn):
- AUC of the judge's P(finished) at the first pause: complete sentence ends against unfinished ends,
  and against mid-sentence pauses;
- premature ends: mid-sentence pauses where the turn was ended before the second part;
- decision delay after the end of the last speech frame (labelled on the clean synthesis), median
  and p90, for complete and unfinished sentences; the Smart Turn call runs beside the wait in the
  service, its own time is printed too;
- frame accuracy of webrtcvad and Silero against labels from the clean synthesis (frame RMS above
  -35 dB of the utterance's loudest frame).
--lm-table prints P(end of sentence | last word) from PocketSphinx's en-us language model for the
words of the text cues (activecall.asr.turn.cues).
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import time
import warnings
import wave
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from activecall.asr.engines import create_asr_engine
from activecall.asr.turn.cues import CLOSERS, FILLERS, TRAILING, text_cue
from activecall.asr.turn.detector import AskJudge, TurnDetector, TurnEnd, TurnSettings
from activecall.asr.turn.judge import Judge, Verdict
from activecall.asr.turn.smart_turn import shared_model
from activecall.asr.turn.vad import create_frame_vad
from activecall.audio import resample

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # G.711 reference (the audioop-lts package from Python 3.13)

RATE = 8000
FRAME = 160
FRAME_MS = 20
TAIL_S = 2.5
NOISE_DBFS = -60.0
LABEL_DB = -35.0
SEED = 11

COMPLETE = [
    "Can you tell me when the store opens tomorrow?",
    "I would like to speak with someone about my account.",
    "My phone number has changed since last year.",
    "Please call me back later this afternoon.",
    "Thank you very much for your help.",
    "I need to cancel my appointment on Tuesday.",
    "Is there a free slot next Wednesday at ten?",
    "That's all, thanks.",
    "Yes, that works for me.",
    "How much does the delivery cost?",
    "I have been waiting for a package for two weeks.",
    "What time do you close today?",
]
UNFINISHED = [
    "I'd like to, um",
    "My account number is",
    "I was wondering if",
    "Can you tell me about the",
    "I need to change my",
    "So the problem is that, uh",
    "I called yesterday because",
    "We wanted to book a table for",
    "The package was supposed to arrive on, um",
    "I think I would like a",
]
MID_PAUSE = [
    ("I'd like to book an appointment", "for next Tuesday morning."),
    ("I want to speak with", "someone in billing please."),
    ("My address is twelve Main Street", "in Springfield."),
    ("Can I get a large pizza", "with extra cheese?"),
    ("I was calling about my order", "from last week."),
    ("The meeting was moved to", "next Monday."),
    ("I need to change the address", "on my account."),
    ("Could you send me an email", "with the details?"),
    ("I have a question about", "the bill I received."),
    ("It's under the name", "John Smith."),
]
PAUSES_MS = (400, 500, 600, 700)
VERBOSE = "--verbose" in sys.argv
VOICES = ("en-us", "en-gb", "en+f3", "piper")


@dataclass
class Sample:
    kind: str  # complete, unfinished, mid
    voice: str
    text: str
    pcm: bytes  # the phone audio, 8 kHz PCM16
    labels: list[bool]  # clean-synthesis speech label per 20 ms frame
    speech_end_ms: int  # end of the last labelled speech frame
    pause_ms: tuple[int, int] = (0, 0)  # the mid-sentence pause: its start and end on the clock


@dataclass
class Outcome:
    asks: list[tuple[int, float]] = field(default_factory=list)  # (pause position, P(finished))
    texts: list[str] = field(default_factory=list)  # the partial transcript at each pause
    end: TurnEnd | None = None


def espeak(text: str, voice: str) -> tuple[bytes, int]:
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        return w.readframes(w.getnframes()), w.getframerate()


def synthesizer(voice: str) -> Callable[[str], bytes]:
    """Text -> clean 8 kHz PCM16 in that voice."""
    if voice == "piper":
        from activecall.tts.engines.piper import PiperEngine

        piper = PiperEngine(seed=SEED)
        return lambda text: resample(b"".join(piper.synthesize(text)), piper.sample_rate, RATE)

    def say(text: str) -> bytes:
        pcm, rate = espeak(text, voice)
        return resample(pcm, rate, RATE)

    return say


def trim(pcm: bytes) -> np.ndarray:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    loud = np.flatnonzero(np.abs(x) > 100)
    return x[loud[0] : loud[-1] + 1] if loud.size else x


def phone(clean: np.ndarray, rng: np.random.Generator) -> bytes:
    noisy = clean + rng.normal(0.0, 32768 * 10 ** (NOISE_DBFS / 20), clean.size)
    pcm = np.clip(np.rint(noisy), -32768, 32767).astype("<i2").tobytes()
    return audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)


def frame_labels(clean: np.ndarray) -> list[bool]:
    n = clean.size // FRAME
    rms = np.sqrt(np.mean(clean[: n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-9)
    return list(20 * np.log10(rms / rms.max()) > LABEL_DB)


def build(voices: list[str]) -> list[Sample]:
    rng = np.random.default_rng(SEED)
    samples = []
    silence = lambda ms: np.zeros(RATE * ms // 1000)  # noqa: E731
    for voice in voices:
        say = synthesizer(voice)
        parts: list[tuple[str, str, list[np.ndarray], tuple[int, int]]] = []
        for text in COMPLETE:
            parts.append(("complete", text, [silence(300), trim(say(text))], (0, 0)))
        for text in UNFINISHED:
            parts.append(("unfinished", text, [silence(300), trim(say(text))], (0, 0)))
        for i, (first, second) in enumerate(MID_PAUSE):
            gap = PAUSES_MS[i % len(PAUSES_MS)]
            a, b = trim(say(first)), trim(say(second))
            start = (RATE * 300 // 1000 + a.size) * 1000 // RATE
            parts.append(
                ("mid", f"{first} ... {second}", [silence(300), a, silence(gap), b], (start, start + gap))
            )
        for kind, text, pieces, pause in parts:
            n = sum(p.size for p in pieces)
            pieces.append(silence(int(TAIL_S * 1000)))
            pieces.append(np.zeros((-(n + RATE * int(TAIL_S * 1000) // 1000)) % FRAME))
            clean = np.concatenate(pieces)
            labels = frame_labels(clean)
            last = max(i for i, s in enumerate(labels) if s)
            samples.append(Sample(kind, voice, text, phone(clean, rng), labels, (last + 1) * FRAME_MS, pause))
    return samples


def vad_accuracy(samples: list[Sample]) -> None:
    for name in ("webrtc", "silero"):
        right = total = missed = false = 0
        spent = 0.0
        for s in samples:
            vad = create_frame_vad(name, RATE)
            started = time.perf_counter()
            flags = [vad.is_speech(s.pcm[i * 320 : (i + 1) * 320]) for i in range(len(s.labels))]
            spent += time.perf_counter() - started
            for got, want in zip(flags, s.labels, strict=True):
                right += got == want
                missed += want and not got
                false += got and not want
                total += 1
        print(
            f"  {name:7s} frame accuracy {right / total:.1%}  (speech missed {missed / total:.1%}, "
            f"silence called speech {false / total:.1%}; {spent / total * 1e6:.0f} us per frame)"
        )


def auc(positives: list[float], negatives: list[float]) -> float:
    if not positives or not negatives:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(values, q))


def run(samples: list[Sample], settings: dict[str, TurnSettings], vad_name: str) -> dict[str, list[Outcome]]:
    """Every sample through the VAD, the recognizer and one detector per mode (the judges answer at
    once: in the service the Smart Turn call overlaps the wait, see the model time printed)."""
    engine = create_asr_engine("pocketsphinx")
    engine.warm_up()
    model = shared_model()
    model_cache: dict[tuple[int, int], float] = {}
    model_times: list[float] = []

    class CachedModel:
        key = (0, 0)

        def probability(self, pcm16: bytes, sample_rate: int) -> float:
            if self.key not in model_cache:
                started = time.perf_counter()
                model_cache[self.key] = model.probability(pcm16, sample_rate)
                model_times.append(time.perf_counter() - started)
            return model_cache[self.key]

    cached = CachedModel()
    judges = {"text": Judge("text"), "smart_turn": Judge("smart_turn", cached)}
    results: dict[str, list[Outcome]] = {mode: [] for mode in settings}
    for index, s in enumerate(samples):
        vad = create_frame_vad(vad_name, RATE)
        detectors = {mode: TurnDetector(ts) for mode, ts in settings.items()}
        outcomes = {mode: Outcome() for mode in settings}
        stream = engine.open(RATE)
        partial = ""
        fed = 0
        for i in range(len(s.labels)):
            speech = vad.is_speech(s.pcm[i * 320 : (i + 1) * 320])
            for mode, detector in detectors.items():
                if outcomes[mode].end is not None:
                    continue
                event = detector.feed(speech, i * FRAME_MS)
                if isinstance(event, AskJudge):
                    if fed < (i + 1) * 320:
                        for result in stream.feed(s.pcm[fed : (i + 1) * 320]):
                            partial = result.text.strip() or partial
                        fed = (i + 1) * 320
                    cached.key = (index, i)
                    verdict: Verdict = judges[detector.settings.mode](
                        s.pcm[max(0, (i + 1) * 320 - 128000) : (i + 1) * 320], RATE, partial
                    )
                    outcomes[mode].asks.append((i * FRAME_MS, verdict.probability))
                    outcomes[mode].texts.append(f"{partial!r} {verdict.model_probability or 0:.2f}")
                    event = detector.answer(event.pause, verdict)
                if isinstance(event, TurnEnd) and event.speech_ms >= detector.settings.min_speech_ms:
                    outcomes[mode].end = event  # shorter: a click, dropped as the service drops it
            if fed + 1600 <= (i + 1) * 320:  # the service feeds the recognizer every 100 ms
                for result in stream.feed(s.pcm[fed : (i + 1) * 320]):
                    partial = result.text.strip() or partial
                fed = (i + 1) * 320
        stream.close()
        for mode in settings:
            results[mode].append(outcomes[mode])
        if VERBOSE:
            o = outcomes["smart_turn"]
            print(f"    {s.kind:10s} {s.voice:6s} {s.text!r}: {o.texts} -> {o.end.eot if o.end else None}")
        else:
            sys.stderr.write(f"\r{index + 1}/{len(samples)} utterances")
    sys.stderr.write("\n")
    if model_times:
        print(
            f"  Smart Turn call: median {statistics.median(model_times) * 1000:.0f} ms, "
            f"p90 {pct([int(t * 1000) for t in model_times], 90):.0f} ms (one core, {len(model_times)} calls)"
        )
    return results


def report(samples: list[Sample], results: dict[str, list[Outcome]]) -> None:
    print(
        f"  {'mode':13s} {'AUC end/unfin':>13s} {'AUC end/mid':>11s} {'premature mid':>13s} "
        f"{'complete: median p90':>21s} {'unfinished: median p90':>23s} {'never ended':>11s}"
    )
    for mode, outcomes in results.items():
        finished_p, unfinished_p, mid_p = [], [], []
        premature = mids = never = 0
        delays: dict[str, list[int]] = {"complete": [], "unfinished": []}
        for s, o in zip(samples, outcomes, strict=True):
            if s.kind == "mid":
                mids += 1
                in_pause = [p for at, p in o.asks if s.pause_ms[0] < at < s.pause_ms[1]]
                if in_pause:
                    mid_p.append(in_pause[0])
                if o.end is not None and o.end.decided_ms <= s.pause_ms[1]:
                    premature += 1
                continue
            if o.asks:
                (finished_p if s.kind == "complete" else unfinished_p).append(o.asks[-1][1])
            if o.end is None:
                never += 1
            else:
                delays[s.kind].append(o.end.decided_ms - s.speech_end_ms)
        c, u = delays["complete"], delays["unfinished"]
        print(
            f"  {mode:13s} {auc(finished_p, unfinished_p):13.2f} {auc(finished_p, mid_p):11.2f} "
            f"{premature:>6d}/{mids:<2d} {premature / max(1, mids):4.0%} "
            f"{pct(c, 50):>10.0f} {pct(c, 90):>5.0f} ms {pct(u, 50):>12.0f} {pct(u, 90):>5.0f} ms"
            f" {never:>11d}"
        )


def lm_table() -> None:
    import math

    import pocketsphinx as ps

    lm = ps.NGramModel(ps.Config(), ps.LogMath(), ps.get_model_path("en-us/en-us.lm.bin"))
    base = math.log(1.0001)

    def p_end(word: str) -> float:
        return math.exp(lm.prob(["</s>", word]) * base)

    print(f"P(end of sentence) overall: {math.exp(lm.prob(['</s>']) * base):.3f}")
    for title, words in (("trailing", TRAILING), ("closers", CLOSERS), ("fillers", FILLERS)):
        scored = sorted((p_end(w), w) for w in words)
        print(f"{title}: " + " ".join(f"{w} {p:.3f}" for p, w in scored))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vad", choices=("webrtc", "silero"), default="webrtc")
    parser.add_argument("--pause-ms", type=int, default=200)
    parser.add_argument("--complete-ms", type=int, nargs="+", default=[300])
    parser.add_argument("--incomplete-ms", type=int, default=1200)
    parser.add_argument("--max-ms", type=int, default=2000)
    parser.add_argument("--silence-ms", type=int, nargs="+", default=[500])
    parser.add_argument("--voices", nargs="+", default=list(VOICES), choices=VOICES)
    parser.add_argument("--lm-table", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="each utterance's transcripts at its pauses")
    args = parser.parse_args()
    if args.lm_table:
        lm_table()
        return
    texts = len(COMPLETE) + len(UNFINISHED) + len(MID_PAUSE)
    print(f"synthesising {texts} utterances x {len(args.voices)} voices")
    samples = build(args.voices)
    print("frame VAD against the clean synthesis:")
    vad_accuracy(samples)
    settings: dict[str, TurnSettings] = {}
    for ms in args.silence_ms:
        settings[f"silence{ms}" if len(args.silence_ms) > 1 else "silence"] = TurnSettings(
            mode="silence", silence_ms=ms, pause_ms=args.pause_ms, complete_silence_ms=max(ms, args.pause_ms)
        )
    for mode in ("text", "smart_turn"):
        for ms in args.complete_ms:
            name = f"{mode}{ms}" if len(args.complete_ms) > 1 else mode
            settings[name] = TurnSettings(
                mode=mode,
                pause_ms=args.pause_ms,
                complete_silence_ms=ms,
                incomplete_silence_ms=args.incomplete_ms,
                max_silence_ms=args.max_ms,
            )
    print(
        f"detectors ({args.vad} VAD, pause {args.pause_ms} ms, complete {args.complete_ms} ms, incomplete "
        f"{args.incomplete_ms} ms, max {args.max_ms} ms, silence mode {args.silence_ms} ms):"
    )
    results = run(samples, settings, args.vad)
    report(samples, results)
    cues = [text_cue(t).cue.value for t in UNFINISHED]
    print(
        f"  text cues of the unfinished texts as written: {cues.count('unfinished')}/{len(cues)} unfinished"
    )


if __name__ == "__main__":
    main()
