"""Speech synthesis engines: time to first audio, real-time factor, voices per core.

Run: .venv/bin/python bench/bench_tts.py [--engine piper|coqui] [--rounds 5] [--threads N]

- load: first use of the voice in the process (model and espeak-ng);
- time to first audio: wall time from synthesize() to its first chunk (the first sentence), per
  text, median over the rounds: what a turn waits for before the agent starts speaking;
- real-time factor: CPU seconds per second of speech made (voices per core = 1 / RTF), and the
  wall-clock RTF (ONNX Runtime spreads one synthesis over the cores);
- with --threads N, N syntheses at once: total speech seconds made per wall second.
LIMITS.md baseline (joe-medium, 12-word sentence): TTFA 87 ms (2 threads) / 158 ms (1 thread),
RTF 0.025 / 0.044, load 0.27 s, ~22 continuous voices per core. Shared machines are noisy:
compare figures from one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from activecall.config import TtsSettings
from activecall.tts.engines import TtsEngine, create_tts_engine

TEXTS = {
    "short": "Sure.",
    "12 words": "Your appointment with the dentist is booked for Friday at nine thirty.",
    "3 sentences": (
        "Thanks for calling the clinic. I can book, move or cancel an appointment for you. "
        "What would you like to do today?"
    ),
}


def first_audio_and_total(engine: TtsEngine, text: str) -> tuple[float, float, float, int]:
    """(seconds to the first chunk, wall seconds in all, CPU seconds in all, samples made)."""
    cpu, wall = time.process_time(), time.perf_counter()
    chunks = engine.synthesize(text)
    first = next(chunks)
    ttfa = time.perf_counter() - wall
    samples = len(first) // 2 + sum(len(c) // 2 for c in chunks)
    return ttfa, time.perf_counter() - wall, time.process_time() - cpu, samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", default="piper")
    parser.add_argument("--coqui-model", default="")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="also run N syntheses at once")
    args = parser.parse_args()

    started = time.perf_counter()
    engine = create_tts_engine(args.engine, TtsSettings(coqui_model=args.coqui_model))
    rate = engine.sample_rate
    print(f"{args.engine}: load {time.perf_counter() - started:.2f} s, {rate} Hz")
    engine.warm_up()

    print(f"{'text':<12} {'TTFA p50':>9} {'RTF cpu':>8} {'voices/core':>12} {'RTF wall':>9} {'speech':>7}")
    for name, text in TEXTS.items():
        runs = [first_audio_and_total(engine, text) for _ in range(args.rounds)]
        ttfa = statistics.median(r[0] for r in runs)
        speech_s = statistics.median(r[3] for r in runs) / rate
        rtf_cpu = min(r[2] / (r[3] / rate) for r in runs)
        rtf_wall = min(r[1] / (r[3] / rate) for r in runs)
        print(
            f"{name:<12} {1000 * ttfa:>6.0f} ms {rtf_cpu:>8.3f} {1 / rtf_cpu:>12.1f} {rtf_wall:>9.3f} "
            f"{speech_s:>5.1f} s"
        )

    if args.threads:
        text = TEXTS["12 words"]
        jobs = args.threads * args.rounds
        with ThreadPoolExecutor(max_workers=args.threads) as pool:
            wall = time.perf_counter()
            made = sum(pool.map(lambda _: first_audio_and_total(engine, text)[3], range(jobs)))
            elapsed = time.perf_counter() - wall
        print(f"{args.threads} at once: {made / rate / elapsed:.1f} s of speech per wall second")


if __name__ == "__main__":
    main()
