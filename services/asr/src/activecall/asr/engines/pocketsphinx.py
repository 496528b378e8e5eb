"""PocketSphinx 5 with the US English model that ships in its wheel.

Front end: the acoustic model wants 16 kHz, so call audio is resampled in the stream (soxr).
Telephone audio (8 kHz) has nothing above 4 kHz, where a 16 kHz model expects fricatives and
where a quarter of its filterbank sits; the stream fills that band with a tilted mirror image of
the band below (cheap bandwidth extension: y + TILT * (y[n] - y[n-1]) * (-1)^n), and starts the
live cepstral mean from a value measured on telephone speech. On 30 Piper sentences through G.711
the band extension lifts word accuracy from about 0.79 to 0.87 (both with the narrowband mean;
without that mean, the first utterance of a stream scores near 0.2).

Phrase hints: the stream runs a second, much smaller decoder over the same audio, whose language
model is a trigram model of the hint phrases over a vocabulary of the hints and the most common
English words (:mod:`.lm`). At the end of an utterance both transcripts are scored by one language
model, the general model interpolated with the hint model, and the likelier one is the final:
in-domain speech takes the hint decoder's answer, other speech keeps the general one. Partials
come from the general decoder. The hint decoder, with its small vocabulary, adds 10-30% CPU.

Decoders hold one utterance's state, so each stream takes a general decoder from a per-model pool
(creating one costs about 0.7 s, mostly the 130k-word dictionary, with the GIL held all along) and
returns it on close. Decoders are made one at a time: calls that arrived together each made one at
once, which stalled the process's event loop for seconds, past its session leases; hint
decoders load a small dictionary and are made per stream in about 20 ms. PocketSphinx's Python
binding keeps the GIL while it decodes, so the streams of one process share one core: the asr
service scales PocketSphinx by processes (about 1 / RTF streams each, see bench/bench_asr.py).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from activecall.asr.engines.base import AsrEngine, AsrEngineError, AsrResult, AsrStream, AsrStreamClosedError
from activecall.asr.engines.lm import HintLanguageModel, HintModelError, hint_sentences
from activecall.audio import float_to_pcm16, pcm16_to_float32, split_words
from activecall.config import AsrSettings

log = logging.getLogger("activecall.asr.pocketsphinx")

MODEL_RATE = 16000
FRAME_MS = 10  # PocketSphinx's frame rate is 100 per second
NARROWBAND_MAX_RATE = 8000
TILT = 1.5
# Initial cepstral means (live CMN starts from them on every stream): the means PocketSphinx ends
# with after five Piper sentences (none of them in the tests), through G.711 and the front end
# above for telephone audio, at full band otherwise; `bench/bench_asr.py --calibrate` prints them.
# The model's own initial mean is far from telephone audio: from it, live decoding gets most words
# of the first utterances wrong while the mean adapts.
TELEPHONE_CMN_INIT = "54.1,-4.2,9.4,-4.7,8.2,-9.3,-1.7,-1.6,-11.4,8.4,-3.0,1.3,-1.0"
WIDEBAND_CMN_INIT = "50.7,4.9,-1.7,6.2,-0.7,-6.0,0.1,-7.9,-5.1,4.4,-2.3,5.2,-7.9"
PARTIAL_INTERVAL_MS = 200
BACKGROUND_WORDS = 1000  # common English words the hint model knows besides the hints
HINT_WEIGHT = 0.4  # weight of the hint model when the two transcripts are scored
HINT_MODELS_KEPT = 32
POOL_KEPT = 64
_FILLER = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")
_VARIANT = re.compile(r"\(\d+\)$")


def _pocketsphinx() -> Any:
    try:
        import pocketsphinx
    except ImportError as exc:
        raise AsrEngineError("PocketSphinx is not installed: pip install pocketsphinx") from exc
    return pocketsphinx


# --- Front end ------------------------------------------------------------------------------------


class FrontEnd:
    """Call audio to 16 kHz PCM16 for the model; narrowband audio gets its upper band rebuilt."""

    def __init__(self, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self.narrowband = sample_rate <= NARROWBAND_MAX_RATE
        self._resampler: Any = None
        if sample_rate != MODEL_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(sample_rate, MODEL_RATE, 1, dtype="float32", quality="HQ")
        self._previous = 0.0
        self._odd = False  # whether the next output sample has an odd index

    def process(self, pcm16: bytes, last: bool = False) -> bytes:
        """16 kHz audio for ``pcm16``; ``last`` flushes the resampler at the end of an utterance."""
        samples = pcm16_to_float32(pcm16)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
            if last:
                self._resampler.clear()
        if self.narrowband and len(samples):
            samples = self._extend_band(samples)
        return float_to_pcm16(samples)

    def _extend_band(self, samples: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        # Modulating by (-1)^n mirrors 0-4 kHz onto 4-8 kHz; the first difference tilts the image
        # down towards 8 kHz, as speech spectra fall.
        difference = np.diff(samples, prepend=self._previous)
        signs = np.where(np.arange(len(samples)) % 2 == int(self._odd), 1.0, -1.0)
        self._previous = float(samples[-1])
        self._odd = (int(self._odd) + len(samples)) % 2 == 1
        return samples + TILT * difference * signs


# --- Models ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPaths:
    hmm: str
    dictionary: str
    lm: str


@dataclass(frozen=True)
class HintModel:
    """A hint language model on disk (ARPA + its dictionary) and in memory (for scoring)."""

    lm_path: str
    dict_path: str
    model: HintLanguageModel


class SphinxModel:
    """What the streams of one model share: a pool of general decoders and hint models on disk."""

    def __init__(self, paths: ModelPaths) -> None:
        self.paths = paths
        self._lock = threading.Lock()
        self._making = threading.Lock()  # one decoder made at a time
        self._idle: list[Any] = []
        self._dictionary: dict[str, list[str]] | None = None
        self._background: dict[str, float] | None = None
        self._hints: OrderedDict[str, HintModel] = OrderedDict()
        self._files = tempfile.TemporaryDirectory(prefix="activecall-sphinx-")
        self.log_base = 1.0001

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"hmm": self.paths.hmm, "samprate": MODEL_RATE, "loglevel": "FATAL", **extra}

    def take_decoder(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        with self._making:
            with self._lock:  # one may have been given back meanwhile
                if self._idle:
                    return self._idle.pop()
            decoder = _pocketsphinx().Decoder(**self.options(dict=self.paths.dictionary, lm=self.paths.lm))
        self.log_base = float(decoder.config["logbase"])
        return decoder

    def give_back(self, decoder: Any) -> None:
        with self._lock:
            if len(self._idle) < POOL_KEPT:
                self._idle.append(decoder)

    def hint_decoder(self, hint: HintModel, cmn: str) -> Any:
        decoder = _pocketsphinx().Decoder(**self.options(dict=hint.dict_path, lm=hint.lm_path))
        decoder.set_cmn(cmn)
        return decoder

    def hint_model(self, hints: list[str]) -> HintModel | None:
        """The hint model of these phrases, built once per process (None if no word is known)."""
        key = hashlib.sha256("\n".join(hints).encode()).hexdigest()[:20]
        with self._lock:
            if key in self._hints:
                self._hints.move_to_end(key)
                return self._hints[key]
        dictionary = self.dictionary()
        unknown = sorted({w for w in _words(hints) if w not in dictionary})
        if unknown:
            log.info("hint words missing from the dictionary are ignored", extra={"words": unknown})
        try:
            model = HintLanguageModel(hint_sentences(hints, dictionary.__contains__), self.background())
        except HintModelError:
            return None
        folder = Path(self._files.name)
        lm_path, dict_path = folder / f"{key}.arpa", folder / f"{key}.dict"
        lm_path.write_text(model.arpa(), encoding="utf-8")
        dict_path.write_text(
            "".join(line for w in model.vocabulary for line in dictionary[w]), encoding="utf-8"
        )
        hint = HintModel(str(lm_path), str(dict_path), model)
        with self._lock:
            self._hints[key] = hint
            while len(self._hints) > HINT_MODELS_KEPT:
                self._hints.popitem(last=False)
        return hint

    def dictionary(self) -> dict[str, list[str]]:
        """Pronunciation lines of every word (variants included), read once."""
        if self._dictionary is None:
            entries: dict[str, list[str]] = {}
            with open(self.paths.dictionary, encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    entry = line.split(maxsplit=1)
                    if len(entry) == 2:
                        entries.setdefault(_VARIANT.sub("", entry[0]), []).append(f"{entry[0]} {entry[1]}")
            self._dictionary = entries
        return self._dictionary

    def background(self) -> dict[str, float]:
        """The most common words of the general model with their unigram probabilities."""
        if self._background is None:
            ps = _pocketsphinx()
            general = ps.NGramModel(ps.Config(), ps.LogMath(), self.paths.lm)
            scored = sorted(((general.prob([w]), w) for w in self.dictionary()), reverse=True)
            ln_base = math.log(self.log_base)
            self._background = {w: math.exp(s * ln_base) for s, w in scored[:BACKGROUND_WORDS]}
        return self._background


_MODELS: dict[ModelPaths, SphinxModel] = {}
_MODELS_LOCK = threading.Lock()


def shared_model(paths: ModelPaths) -> SphinxModel:
    with _MODELS_LOCK:
        if paths not in _MODELS:
            _MODELS[paths] = SphinxModel(paths)
        return _MODELS[paths]


def _words(phrases: Iterable[str]) -> set[str]:
    return {w for phrase in phrases for w in split_words(phrase)}


# --- Streams --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transcript:
    words: list[str]
    start_frame: int
    end_frame: int
    confidence: float


class PocketSphinxStream(AsrStream):
    def __init__(self, model: SphinxModel, sample_rate: int, hints: list[str] | None) -> None:
        self.model = model
        self.sample_rate = sample_rate
        self.front_end = FrontEnd(sample_rate)
        cmn = TELEPHONE_CMN_INIT if self.front_end.narrowband else WIDEBAND_CMN_INIT
        self.hint: HintModel | None = model.hint_model(hints) if hints else None
        self.hint_decoder: Any = model.hint_decoder(self.hint, cmn) if self.hint is not None else None
        self.decoder: Any = model.take_decoder()
        self.decoder.set_cmn(cmn)
        self.closed = False
        self.in_utterance = False
        self.fed_samples = 0
        self.utterance_start_ms = 0
        self.next_partial_ms = 0
        self.last_partial = ""

    @property
    def fed_ms(self) -> int:
        return self.fed_samples * 1000 // self.sample_rate

    def feed(self, pcm16: bytes) -> list[AsrResult]:
        if self.closed:
            raise AsrStreamClosedError("feed() on a closed stream")
        audio = self.front_end.process(pcm16)
        if not self.in_utterance:
            self._start_utterance()
        self.fed_samples += len(pcm16) // 2
        self._decode(audio)
        if self.fed_ms < self.next_partial_ms:
            return []
        self.next_partial_ms = self.fed_ms + PARTIAL_INTERVAL_MS
        hyp = self.decoder.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        if not text or text == self.last_partial:
            return []
        self.last_partial = text
        return [AsrResult(text, False, self.utterance_start_ms, self.fed_ms)]

    def finish(self) -> AsrResult | None:
        if self.closed:
            raise AsrStreamClosedError("finish() on a closed stream")
        if not self.in_utterance:
            return None
        self._decode(self.front_end.process(b"", last=True))
        self.decoder.end_utt()
        best = _transcript(self.decoder)
        if self.hint_decoder is not None and self.hint is not None:
            self.hint_decoder.end_utt()
            best = self._likelier(best, _transcript(self.hint_decoder))
        self.in_utterance = False
        if best is None or not best.words:
            return None
        start = self.utterance_start_ms + best.start_frame * FRAME_MS
        end = self.utterance_start_ms + (best.end_frame + 1) * FRAME_MS
        return AsrResult(" ".join(best.words), True, start, end, best.confidence)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.in_utterance:
            self.decoder.end_utt()
        self.model.give_back(self.decoder)
        self.decoder = self.hint_decoder = None

    def _start_utterance(self) -> None:
        self.decoder.start_utt()
        if self.hint_decoder is not None:
            self.hint_decoder.start_utt()
        self.in_utterance = True
        self.utterance_start_ms = self.fed_ms
        self.next_partial_ms = self.fed_ms + PARTIAL_INTERVAL_MS
        self.last_partial = ""

    def _decode(self, audio: bytes) -> None:
        if not audio:  # the resampler holds back its first milliseconds
            return
        self.decoder.process_raw(audio, False, False)
        if self.hint_decoder is not None:
            self.hint_decoder.process_raw(audio, False, False)

    def _likelier(self, general: Transcript | None, hinted: Transcript | None) -> Transcript | None:
        """Of the two transcripts, the one the general model interpolated with the hint model prefers."""
        if hinted is None or general is None:
            return general or hinted
        if self._score(hinted.words) > self._score(general.words):
            return hinted
        return general

    def _score(self, words: list[str]) -> float:
        assert self.hint is not None
        general = self.decoder.get_lm()
        ln_base = math.log(self.model.log_base)
        history: tuple[str, ...] = ("<s>",)
        total = 0.0
        for word in [*words, "</s>"]:
            p_general = math.exp(general.prob([word, *reversed(history[-2:])]) * ln_base)
            p = (1 - HINT_WEIGHT) * p_general + HINT_WEIGHT * self.hint.model.prob(word, history)
            total += math.log(max(p, 1e-300))
            history = (*history[-1:], word)
        return total


def _transcript(decoder: Any) -> Transcript | None:
    segments = [s for s in decoder.seg() if not _FILLER.match(s.word)]
    if not segments:
        return None
    words = [_VARIANT.sub("", s.word) for s in segments]
    confidence = sum(float(s.prob) for s in segments) / len(segments)
    return Transcript(words, segments[0].start_frame, segments[-1].end_frame, confidence)


# --- Engine ---------------------------------------------------------------------------------------


class PocketSphinxEngine(AsrEngine):
    """PocketSphinx with a model of its own (paths) or the US English one from the wheel."""

    name = "pocketsphinx"

    def __init__(self, hmm: str | None = None, dictionary: str | None = None, lm: str | None = None) -> None:
        ps = _pocketsphinx()
        self.paths = ModelPaths(
            hmm or ps.get_model_path("en-us/en-us"),
            dictionary or ps.get_model_path("en-us/cmudict-en-us.dict"),
            lm or ps.get_model_path("en-us/en-us.lm.bin"),
        )
        for path in (self.paths.hmm, self.paths.dictionary, self.paths.lm):
            if not Path(path).exists():
                raise AsrEngineError(f"PocketSphinx model file not found: {path}")

    @classmethod
    def from_settings(cls, settings: AsrSettings) -> PocketSphinxEngine:
        return cls()

    def warm_up(self) -> None:
        """Make one decoder for the pool and read the dictionary and the common words for hints."""
        model = shared_model(self.paths)
        model.give_back(model.take_decoder())
        model.background()

    def open(self, sample_rate: int, hints: list[str] | None = None) -> PocketSphinxStream:
        return PocketSphinxStream(shared_model(self.paths), sample_rate, hints)
