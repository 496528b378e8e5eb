"""The caller's voices: espeak-ng voices and the Piper voice, at 8 kHz, plus coughs, and the plan of
what the caller says in one call."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import wave
from dataclasses import dataclass

import numpy as np
import soxr

from turns.metrics import FRAME, speech_frames

RATE = 8000
ESPEAK_VOICES = ("en-us", "en-gb", "en+f3", "en-us+m3", "en-gb-scotland+f2")
PIPER = "piper"
TARGET_DBFS = -20.0

QUESTIONS = (
    "What are your opening hours?",
    "How long does delivery take?",
    "Can I return an item I bought last week?",
    "Which payment methods do you accept?",
)
# Split questions: the part before and after a mid-sentence pause.
SPLITS = (
    ("I would like to know", "your opening hours on Saturday."),
    ("Could you tell me", "how long the delivery takes?"),
    ("I bought a jacket and", "I want to return it."),
    ("Please tell me", "which cards you accept for payment."),
)
BACKCHANNELS = ("uh-huh", "okay", "yeah", "mm-hmm", "right")
INTERRUPTIONS = (
    "Sorry, wait, how do I return something?",
    "Hold on, can I pay with my credit card?",
    "Actually, what time do you open on Saturday?",
    "Wait, how much does delivery cost?",
)


def available_voices() -> list[str]:
    """The espeak-ng voices (when espeak-ng is installed) and Piper."""
    return [*ESPEAK_VOICES, PIPER] if shutil.which("espeak-ng") else [PIPER]


def _to_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    audio = samples.astype(np.float32) / 32768
    if rate != RATE:
        audio = soxr.resample(audio, rate, RATE)
    return audio


def _level(audio: np.ndarray, dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Float audio scaled to an RMS of ``dbfs`` over its loud part, as int16."""
    loud = audio[np.abs(audio) > 0.01]
    rms = float(np.sqrt(np.mean(np.square(loud)))) if len(loud) else 0.0
    gain = 10 ** (dbfs / 20) / rms if rms > 0 else 1.0
    return np.clip(audio * gain * 32768, -32768, 32767).astype(np.int16)


def trim(pcm: np.ndarray) -> np.ndarray:
    """Whole frames, from the first speech frame to the last (by the bench's own speech measure)."""
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % FRAME, dtype=np.int16)])
    flags = speech_frames(pcm)
    if not any(flags):
        return pcm[:0]
    first = flags.index(True)
    last = len(flags) - 1 - flags[::-1].index(True)
    return pcm[first * FRAME : (last + 1) * FRAME]


class Synthesizer:
    def __init__(self) -> None:
        self._piper: object | None = None
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def say(self, text: str, voice: str) -> np.ndarray:
        """``text`` in ``voice``, 8 kHz int16, trimmed to whole frames of speech."""
        key = (text, voice)
        if key not in self._cache:
            audio = self._piper_say(text) if voice == PIPER else self._espeak_say(text, voice)
            self._cache[key] = trim(_level(audio))
        return self._cache[key]

    def _espeak_say(self, text: str, voice: str) -> np.ndarray:
        run = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", "165", "--stdout", text],
            capture_output=True,
            timeout=30,
            check=True,
        )
        with wave.open(io.BytesIO(run.stdout)) as wav:
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        return _to_rate(samples, rate)

    def _piper_say(self, text: str) -> np.ndarray:
        from activecall.tts.engines.piper import PiperEngine

        if self._piper is None:
            self._piper = PiperEngine(noise_scale=0.0, noise_w_scale=0.0)
        engine = self._piper
        assert isinstance(engine, PiperEngine)
        pcm = np.frombuffer(b"".join(engine.synthesize(text)), dtype=np.int16)
        return _to_rate(pcm, engine.sample_rate)


def cough(rng: random.Random) -> np.ndarray:
    """A short noise burst (150 to 300 ms): band-limited noise, a fast attack, an exponential decay."""
    n = rng.randrange(150, 301, 20) * RATE // 1000
    generator = np.random.default_rng(rng.randrange(1 << 30))
    noise = np.convolve(generator.normal(0, 1, n + 8), np.ones(4) / 4, mode="same")[:n]
    t = np.arange(n) / RATE
    envelope = np.minimum(1.0, t / 0.01) * np.exp(-t / 0.08)
    audio = noise * envelope
    audio = audio / np.max(np.abs(audio)) * 10 ** (-8 / 20)
    return trim((audio * 32767).astype(np.int16))


@dataclass
class Clip:
    """What the caller sends for one utterance; ``pause_frames`` marks (first, last) silent frames of a
    mid-sentence pause."""

    kind: str
    text: str
    voice: str
    pcm: np.ndarray
    pause_frames: tuple[int, int] | None = None


@dataclass
class Step:
    clip: Clip
    when: str  # "silence": after the agent finished; "reply": this long into an agent reply
    into_reply_s: float = 0.0


def split_clip(synth: Synthesizer, parts: tuple[str, str], voice: str, pause_ms: int) -> Clip:
    """``parts`` with ``pause_ms`` of silence (whole frames) between the speech of the two halves."""
    first, second = synth.say(parts[0], voice), synth.say(parts[1], voice)
    gap = np.zeros(pause_ms // 20 * FRAME, dtype=np.int16)
    start = len(first) // FRAME
    frames = (start, start + len(gap) // FRAME - 1)
    return Clip("split", f"{parts[0]} ... {parts[1]}", voice, np.concatenate([first, gap, second]), frames)


def plan_call(synth: Synthesizer, index: int, voices: list[str], rng: random.Random) -> list[Step]:
    """What the caller of call ``index`` says, in order; voices rotate from one utterance to the next."""
    turn = iter(range(1000))

    def voice() -> str:
        return voices[(index * 3 + next(turn)) % len(voices)]

    def say(kind: str, text: str) -> Clip:
        v = voice()
        return Clip(kind, text, v, synth.say(text, v))

    def pause() -> int:
        return rng.randrange(400, 701, 20)

    def bc() -> Clip:
        return say("backchannel", rng.choice(BACKCHANNELS))

    def noise() -> Clip:
        return Clip("cough", "(cough)", "noise", cough(rng))

    q = [QUESTIONS[(index + k) % len(QUESTIONS)] for k in range(2)]
    s = [SPLITS[(index + k) % len(SPLITS)] for k in range(2)]
    # Talk over the agent 2.5 to 4.5 s into its reply: past the first sentence, well before the end.
    return [
        Step(say("question", q[0]), "silence"),
        Step(bc(), "reply", rng.uniform(2.5, 4.5)),
        Step(split_clip(synth, s[0], voice(), pause()), "silence"),
        Step(noise(), "reply", rng.uniform(2.5, 4.5)),
        Step(say("question", q[1]), "silence"),
        Step(say("interruption", INTERRUPTIONS[index % len(INTERRUPTIONS)]), "reply", rng.uniform(2.5, 4.0)),
        Step(bc(), "reply", rng.uniform(2.5, 4.5)),
        Step(split_clip(synth, s[1], voice(), pause()), "silence"),
        Step(bc() if index % 2 else noise(), "reply", rng.uniform(2.5, 4.5)),
    ]
