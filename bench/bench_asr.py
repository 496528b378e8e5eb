"""Speech recognition engines on Piper speech: real-time factor, streams per core, final latency.

Run: .venv/bin/python bench/bench_asr.py [--engine pocketsphinx|vosk] [--vosk-model PATH]
     [--rate 8000] [--rounds 3] [--hints]
     .venv/bin/python bench/bench_asr.py --calibrate

Speech: Piper sentences (a seeded voice, so runs hear the same audio), at 8 kHz through a G.711
u-law round trip unless --rate says otherwise, fed in 20 ms frames as the asr service does.
- real-time factor: CPU seconds per second of audio, one stream at a time on one thread (streams
  per core = 1 / RTF, before the service's own costs);
- final latency: wall time of finish() once the speech and 200 ms of silence are in, i.e. what the
  engine adds after the service decides that an utterance ended;
- word accuracy of the finals, to see what a setting costs or buys;
- the RTF of a listening caller's line (10 s of digital silence, and of -70 dBFS line noise, both
  through G.711): what the asr saves by feeding the recognizer the caller's turns only.
With --hints the in-domain sentences are decoded with their phrase hints (PocketSphinx then runs
its hint decoder beside the general one). LIMITS.md baseline: PocketSphinx 16 kHz RTF 0.115,
final 117 ms, ~8.7 streams per core. The machines are shared: compare figures from one run.

--calibrate prints the initial cepstral means of the PocketSphinx engine (TELEPHONE_CMN_INIT and
WIDEBAND_CMN_INIT): the mean the decoder ends with after five Piper sentences that appear in no
test, through the stream's own front end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

from activecall.asr.engines import AsrEngine
from activecall.asr.engines.pocketsphinx import MODEL_RATE, FrontEnd, PocketSphinxEngine
from activecall.asr.engines.vosk import VoskEngine
from activecall.audio import corpus_word_accuracy, resample
from activecall.tts.engines.piper import PiperEngine

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # G.711 reference (the audioop-lts package from Python 3.13)

SEED = 7
SENTENCES = [
    "I would like to speak with someone about my account.",
    "The package should arrive by the end of the week.",
    "Could you send me an email with the details?",
    "I have been waiting for almost an hour.",
    "Please let me know when the doctor is available.",
    "Our flight was delayed because of the storm.",
]
IN_DOMAIN = [
    "I'd like to book an appointment with the dentist.",
    "Do you have anything on Tuesday morning?",
    "Please cancel my appointment on Friday.",
    "Thursday at three o'clock works for me.",
]
HINTS = [
    "I'd like to book an appointment", "with the dentist", "do you have anything", "cancel my appointment",
    "on Tuesday morning", "on Friday", "Thursday", "at three o'clock", "works for me",
]  # fmt: skip
CALIBRATION = [
    "Hello, thanks for calling, how can I help you today?",
    "I have a question about the bill I received last week.",
    "Could you repeat that one more time, please?",
    "Sure, let me check that for you right away.",
    "The office is open from nine to five on weekdays.",
]
FRAME_MS = 20


def speak(voice: PiperEngine, texts: list[str], rate: int) -> dict[str, bytes]:
    spoken = {}
    for text in texts:
        pcm = b"".join(voice.synthesize(text))
        if rate != voice.sample_rate:
            pcm = resample(pcm, voice.sample_rate, rate)
        if rate == 8000:
            pcm = audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)
        spoken[text] = pcm
    return spoken


def run(engine: AsrEngine, speech: dict[str, bytes], rate: int, hints: list[str] | None) -> dict[str, float]:
    frame = 2 * rate * FRAME_MS // 1000
    pad = bytes(2 * rate // 5)
    cpu = audio_s = 0.0
    finals: list[float] = []
    hypotheses = []
    for pcm in speech.values():
        stream = engine.open(rate, hints)
        audio = pad + pcm + pad
        started = time.process_time()
        for i in range(0, len(audio), frame):
            stream.feed(audio[i : i + frame])
        wall = time.perf_counter()
        result = stream.finish()
        finals.append(time.perf_counter() - wall)
        cpu += time.process_time() - started
        audio_s += len(audio) / 2 / rate
        stream.close()
        hypotheses.append(result.text if result else "")
    return {
        "rtf": cpu / audio_s,
        "final_p50_ms": 1000 * statistics.median(finals),
        "final_max_ms": 1000 * max(finals),
        "accuracy": corpus_word_accuracy(zip(speech, hypotheses, strict=True)),
    }


def quiet_line_rtf(engine: AsrEngine, rate: int, noise_dbfs: float | None) -> float:
    """CPU seconds per second of 10 s of a line with nobody speaking, fed like speech."""
    import numpy as np

    samples = np.zeros(10 * rate)
    if noise_dbfs is not None:
        samples = np.random.default_rng(SEED).normal(0.0, 32768 * 10 ** (noise_dbfs / 20), 10 * rate)
    pcm = np.clip(samples, -32768, 32767).astype(np.int16).tobytes()
    pcm = audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)
    frame = 2 * rate * FRAME_MS // 1000
    stream = engine.open(rate)
    started = time.process_time()
    for i in range(0, len(pcm), frame):
        stream.feed(pcm[i : i + frame])
    stream.finish()
    cpu = time.process_time() - started
    stream.close()
    return cpu / 10


def calibrate() -> None:
    import pocketsphinx

    voice = PiperEngine(seed=99)
    for name, rate in (("TELEPHONE_CMN_INIT", 8000), ("WIDEBAND_CMN_INIT", voice.sample_rate)):
        decoder = pocketsphinx.Decoder(samprate=MODEL_RATE, loglevel="FATAL")
        for pcm in speak(voice, CALIBRATION, rate).values():
            decoder.start_utt()
            decoder.process_raw(
                FrontEnd(rate).process(bytes(2 * (rate // 20)) + pcm, last=True), False, False
            )
            decoder.end_utt()
        mean = ",".join(f"{float(v):.1f}" for v in decoder.get_cmn(True).split(","))
        print(f'{name} = "{mean}"')


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=["pocketsphinx", "vosk"], default="pocketsphinx")
    parser.add_argument("--vosk-model", type=Path, help="model folder for --engine vosk")
    parser.add_argument("--rate", type=int, default=8000, help="call sample rate (8000: through G.711)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hints", action="store_true", help="also decode in-domain sentences with hints")
    parser.add_argument(
        "--calibrate", action="store_true", help="print PocketSphinx's initial cepstral means"
    )
    args = parser.parse_args()
    if args.calibrate:
        calibrate()
        return
    if args.engine == "vosk" and args.vosk_model is None:
        sys.exit("--engine vosk needs --vosk-model PATH")

    started = time.perf_counter()
    engine: AsrEngine = VoskEngine(args.vosk_model) if args.engine == "vosk" else PocketSphinxEngine()
    engine.warm_up()
    print(f"{args.engine}: warm-up {time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    engine.open(args.rate).close()
    print(f"open a stream (model loaded): {1000 * (time.perf_counter() - started):.1f} ms")

    voice = PiperEngine(seed=SEED)
    cases: list[tuple[str, dict[str, bytes], list[str] | None]] = [
        ("ordinary", speak(voice, SENTENCES, args.rate), None)
    ]
    if args.hints:
        in_domain = speak(voice, IN_DOMAIN, args.rate)
        cases += [("in-domain", in_domain, None), ("in-domain + hints", in_domain, HINTS)]
        started = time.perf_counter()
        engine.open(args.rate, HINTS).close()
        print(f"open a stream with new hints: {1000 * (time.perf_counter() - started):.1f} ms (then cached)")
    print(
        f"{'speech':<20} {'RTF':>6} {'streams/core':>13} {'final p50':>10} {'final max':>10} {'accuracy':>9}"
    )
    for name, speech, hints in cases:
        rounds = [run(engine, speech, args.rate, hints) for _ in range(args.rounds)]
        best = min(rounds, key=lambda r: r["rtf"])
        final_p50 = statistics.median(r["final_p50_ms"] for r in rounds)
        print(
            f"{name:<20} {best['rtf']:>6.3f} {1 / best['rtf']:>13.1f} {final_p50:>8.0f} ms "
            f"{max(r['final_max_ms'] for r in rounds):>7.0f} ms {best['accuracy']:>9.1%}"
        )
    for name, noise in (("quiet line, silence", None), ("quiet line, -70 dBFS", -70.0)):
        rtf = min(quiet_line_rtf(engine, args.rate, noise) for _ in range(args.rounds))
        print(f"{name:<20} {rtf:>6.3f} {1 / rtf:>13.1f}")


if __name__ == "__main__":
    main()
