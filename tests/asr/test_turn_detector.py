"""The end-of-turn detector with the real engines: webrtcvad and Silero, Smart Turn, PocketSphinx.

No wall-clock assertions: the detector runs on the media clock of the frames, so what is checked is
where on that clock a turn ends, and what the service emits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from asr_helpers import SILENCE, asr_config, end_call, finals, start_call, stream_audio

from activecall.asr.engines import AsrEngine, create_asr_engine
from activecall.asr.service import AsrService, turn_settings
from activecall.asr.turn.cues import Cue, text_cue
from activecall.asr.turn.detector import (
    SURE_FINISHED,
    SURE_UNFINISHED,
    AskJudge,
    TurnDetector,
    TurnEnd,
    TurnSettings,
)
from activecall.asr.turn.features import N_FRAMES, N_MELS, model_input
from activecall.asr.turn.judge import Judge, TurnContext, Verdict
from activecall.asr.turn.smart_turn import shared_model
from activecall.asr.turn.vad import create_frame_vad
from activecall.config import AsrSettings, ConfigError, RedisSettings, load_config
from activecall.playbook import PlaybookError, parse_playbook
from activecall.service import Runtime

RATE = 8000
FRAME_BYTES = 320
SETTINGS = TurnSettings(mode="smart_turn", pause_ms=200, complete_silence_ms=300, incomplete_silence_ms=1200)


def silence(ms: int) -> bytes:
    return bytes(RATE * 2 * ms // 1000)


@pytest.fixture(scope="module")
def recognizer() -> AsrEngine:
    engine = create_asr_engine("pocketsphinx")
    engine.warm_up()
    return engine


def run_detector(
    pcm: bytes, settings: TurnSettings, engine: AsrEngine, vad_name: str = "webrtc"
) -> tuple[list[TurnEnd], list[tuple[str, Verdict]]]:
    """The service's path without the bus: frames through the VAD and the detector, the judge (with the
    recognizer's partial so far) answering at once. Ends of less than min_speech_ms are dropped."""
    vad = create_frame_vad(vad_name, RATE)
    detector = TurnDetector(settings)
    model = shared_model() if settings.mode == "smart_turn" else None
    judge = Judge(settings.mode, model) if settings.mode != "silence" else None
    stream = engine.open(RATE)
    ends: list[TurnEnd] = []
    verdicts: list[tuple[str, Verdict]] = []
    partial, fed = "", 0
    for i in range(len(pcm) // FRAME_BYTES):
        upto = (i + 1) * FRAME_BYTES
        event = detector.feed(vad.is_speech(pcm[upto - FRAME_BYTES : upto]), i * 20)
        if isinstance(event, AskJudge):
            for result in stream.feed(pcm[fed:upto]):
                partial = result.text or partial
            fed = upto
            assert judge is not None
            verdict = judge(pcm[:upto], RATE, partial)
            verdicts.append((partial, verdict))
            event = detector.answer(event.pause, verdict)
        if isinstance(event, TurnEnd) and event.speech_ms >= settings.min_speech_ms:
            ends.append(event)
            stream.finish()
            partial = ""
    stream.close()
    return ends, verdicts


# ------------------------------------------------------------------ the detector on real speech


@pytest.mark.parametrize("vad_name", ["webrtc", "silero"])
def test_finished_sentence_ends_after_a_short_silence(
    phone_speech: Callable[[str], bytes], recognizer: AsrEngine, vad_name: str
) -> None:
    speech = phone_speech("Thank you very much for your help.")
    ends, verdicts = run_detector(silence(300) + speech + silence(1500), SETTINGS, recognizer, vad_name)
    assert len(ends) == 1, (ends, verdicts)
    (end,) = ends
    assert end.eot == "complete", verdicts
    loud = np.flatnonzero(np.abs(np.frombuffer(speech, dtype="<i2")) > 300)
    speech_end = 300 + int(loud[-1]) // 8  # ms: Piper ends its clips with some silence
    # The loudness gate leaves out a faint last plosive (the "p" of "help"): up to 150 ms early.
    assert speech_end - 150 <= end.speech_end_ms <= speech_end + 200
    assert end.decided_ms - end.speech_end_ms == SETTINGS.complete_silence_ms


def test_unfinished_sentence_is_not_ended_by_a_600_ms_pause(
    phone_speech: Callable[[str], bytes], recognizer: AsrEngine
) -> None:
    first, second = phone_speech("I'd like to, um"), phone_speech("book a table for two.")
    pause_end = 300 + len(first) // 16 + 600
    ends, verdicts = run_detector(
        silence(300) + first + silence(600) + second + silence(1500), SETTINGS, recognizer
    )
    assert verdicts and not verdicts[0][1].finished, verdicts
    assert len(ends) == 1, (ends, verdicts)
    assert ends[0].speech_end_ms > pause_end  # one turn, ended after the second part
    # The same audio in the silence mode (500 ms) is cut in the pause: what the judge is for.
    silent = TurnSettings(mode="silence", silence_ms=500)
    cut, _ = run_detector(silence(300) + first + silence(600) + second + silence(1500), silent, recognizer)
    assert len(cut) == 2 and cut[0].decided_ms < pause_end


def test_smart_turn_model_hears_an_unfinished_voice(phone_speech: Callable[[str], bytes]) -> None:
    model = shared_model()
    finished = model.probability(phone_speech("Thank you very much for your help.") + silence(200), RATE)
    unfinished = model.probability(phone_speech("I think I would like a") + silence(200), RATE)
    assert 0.0 <= unfinished < 0.5 < finished <= 1.0


# ------------------------------------------------------------------ the service over the bus


async def run_service(settings: RedisSettings, call_id: str, pcm: bytes, count: int, tmp: Path) -> list[str]:
    config = asr_config(settings)
    config.asr.max_silence_ms = 2000
    runtime = Runtime("asr", config, "asr-test", 0, 5.0)
    service = AsrService(runtime)
    await service.start()
    bus = runtime.bus
    try:
        await start_call(bus, call_id)
        await stream_audio(bus, call_id, pcm)
        got = await finals(bus, call_id, count, timeout_s=60)
        await end_call(bus, call_id)
        return got  # type: ignore[return-value]
    finally:
        await service.stop()
        await bus.close()


async def test_final_is_forced_at_the_decision(
    redis_settings: RedisSettings, phone_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    """The next sentence starts right after complete_silence_ms (+100 ms) of silence: the first final
    holds the first sentence alone, because the recogniser was finalised at the decision."""
    first, second = "Thank you very much for your help.", "Please call me back later this afternoon."
    gap = AsrSettings().complete_silence_ms + 100
    pcm = phone_speech(first) + silence(gap) + phone_speech(second) + SILENCE + SILENCE
    got = await run_service(redis_settings, "forced", pcm, 2, tmp_path)
    assert len(got) == 2, got
    one, two = got  # type: ignore[misc]
    assert one.eot == "complete" and one.utterance == 1 and two.utterance == 2
    assert "help" in one.text and "afternoon" not in one.text, one.text
    assert "afternoon" in two.text, two.text
    assert 0 < one.speech_end_ms <= len(phone_speech(first)) // 16 + 200
    assert one.decided_ts > 0


async def test_cough_gives_one_empty_final(redis_settings: RedisSettings, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = RATE * 250 // 1000
    envelope = np.sin(np.linspace(0, np.pi, n)) ** 0.5
    burst = np.convolve(rng.normal(0, 6000, n), np.ones(4) / 4, mode="same") * envelope
    cough = np.clip(burst, -32768, 32767).astype("<i2").tobytes()
    got = await run_service(redis_settings, "cough", silence(400) + cough + SILENCE + SILENCE, 2, tmp_path)
    assert len(got) == 1, got
    (final,) = got
    assert final.text == "" and final.eot in ("complete", "incomplete", "silence")
    assert 400 <= final.speech_end_ms <= 900


# ------------------------------------------------------------------ text cues


@pytest.mark.parametrize(
    "text",
    ["I'd like to, um", "i'd like to", "my account number is", "can you tell me about the",
     "i need to change my", "so the problem is that uh", "i called yesterday because",
     "we wanted to book a table for", "and so", "i want to speak with", "um"],
)  # fmt: skip
def test_unfinished_endings(text: str) -> None:
    assert text_cue(text).cue is Cue.UNFINISHED


@pytest.mark.parametrize(
    "text",
    ["okay thank you", "yes", "that's all thanks", "please call me back tomorrow",
     "I think so.", "what time do you close today", "see you tomorrow"],
)  # fmt: skip
def test_finished_endings(text: str) -> None:
    assert text_cue(text).cue is Cue.FINISHED


def test_question_and_content_endings_are_only_likely_finished() -> None:
    assert text_cue("how much does the delivery cost").cue is Cue.LIKELY_FINISHED
    assert text_cue("i'd like to book an appointment").cue is Cue.LIKELY_FINISHED
    assert text_cue("what is it about").cue is Cue.LIKELY_FINISHED  # a question may end on "about"
    assert text_cue("i think so").cue is Cue.LIKELY_FINISHED  # "so" after a verb of opinion
    assert text_cue("").cue is Cue.NEUTRAL


def test_playbook_context_tips_an_expected_answer() -> None:
    context = TurnContext.from_hints(["next Tuesday", "to", "pepperoni"])
    assert context.expects("next tuesday") and context.expects("on next tuesday")
    assert context.expects("pepperoni") and not context.expects("to") and not context.expects("tuesday")
    text_only, with_context = Judge("text"), Judge("text", context=context)
    assert (
        with_context(b"", RATE, "on next tuesday").probability
        > text_only(b"", RATE, "on next tuesday").probability
    )


# ------------------------------------------------------------------ features


def test_features_have_whisper_shape_and_range(phone_speech: Callable[[str], bytes]) -> None:
    speech = model_input(phone_speech("Thank you very much for your help."), RATE)
    quiet = model_input(silence(2000), RATE)
    assert speech.shape == quiet.shape == (1, N_MELS, N_FRAMES) and speech.dtype == np.float32
    # Whisper's normalisation: log10 clamped to 8 decades below the peak, then (x + 4) / 4.
    assert speech.max() - speech.min() <= 2.0 + 1e-6
    assert speech.min() > -1.5 and speech.max() < 2.5
    # The speech is at the end of the 8 s window (padded in front): the first frames are the floor.
    assert np.all(np.ptp(speech[0, :, :100], axis=1) == 0.0)
    assert np.ptp(speech[0, :, -150:]) > 1.0 > np.ptp(quiet)
    # Louder bands where the voice is: the mean over the last second exceeds the padding's.
    assert speech[0, :, -100:].mean() > speech[0, :, :100].mean() + 0.5


# ------------------------------------------------------------------ the state machine alone


def feed(detector: TurnDetector, flags: str, start_ms: int = 0) -> list[AskJudge | TurnEnd]:
    """'#' a speech frame, '.' a silent one."""
    events = []
    for i, flag in enumerate(flags):
        event = detector.feed(flag == "#", start_ms + i * 20)
        if event is not None:
            events.append(event)
    return events


def verdict(finished: bool) -> Verdict:
    return Verdict(finished, 0.9 if finished else 0.1, text_cue(""))


def test_detector_asks_once_and_speech_resuming_cancels_the_wait() -> None:
    detector = TurnDetector(SETTINGS)
    (ask,) = feed(detector, "#" * 20 + "." * 10)
    assert isinstance(ask, AskJudge) and ask.speech_end_ms == 400
    assert detector.answer(ask.pause, verdict(False)) is None
    assert feed(detector, "." * 20, 600) == []  # 600 ms of silence: less than incomplete_silence_ms
    assert feed(detector, "#" + "." * 5 + "###", 1000) == []  # a click does not resume, 60 ms does
    assert detector.answer(ask.pause, verdict(True)) is None  # the old pause's verdict is moot
    events = feed(detector, "." * 10, 1180)
    assert [type(e) for e in events] == [AskJudge]
    assert detector.answer(events[0].pause, verdict(True)) is None  # 200 ms of silence so far
    (end,) = feed(detector, "." * 5, 1380)
    assert isinstance(end, TurnEnd) and end.eot == "complete" and end.speech_end_ms == 1180
    assert end.decided_ms == 1180 + SETTINGS.complete_silence_ms


def test_detector_silence_mode_and_hangup() -> None:
    detector = TurnDetector(TurnSettings(mode="silence", silence_ms=500))
    events = feed(detector, "#" * 10 + "." * 30)
    assert len(events) == 1 and isinstance(events[0], TurnEnd) and events[0].eot == "silence"
    assert events[0].decided_ms - events[0].speech_end_ms == 500
    feed(detector, "#" * 5, 2000)
    end = detector.hangup()
    assert end is not None and end.eot == "hangup" and detector.hangup() is None


def test_detector_waits_for_a_late_verdict_and_advances_over_missing_audio() -> None:
    detector = TurnDetector(SETTINGS)
    (ask,) = feed(detector, "#" * 10 + "." * 30)  # 600 ms of silence, no verdict yet
    assert isinstance(ask, AskJudge)
    end = detector.answer(ask.pause, verdict(True))  # already past complete_silence_ms: ends now
    assert end is not None and end.eot == "complete" and end.decided_ms == 800
    (ask,) = feed(detector, "#" * 10, 1000) + feed(detector, "." * 10, 1200)
    detector.answer(ask.pause, verdict(False))
    end = detector.advance(1200 + SETTINGS.incomplete_silence_ms)
    assert isinstance(end, TurnEnd) and end.eot == "incomplete"


# ------------------------------------------------------------------ settings


def test_asr_settings_are_validated() -> None:
    assert load_config(None, env={}).asr.turn_detector == "smart_turn"
    with pytest.raises(ConfigError, match="pause_ms"):
        load_config(None, env={"ACTIVECALL_ASR__PAUSE_MS": "900"})
    with pytest.raises(ConfigError, match="max_silence_ms"):
        load_config(None, env={"ACTIVECALL_ASR__MAX_SILENCE_MS": "100"})
    with pytest.raises(ConfigError, match="turn_detector"):
        load_config(None, env={"ACTIVECALL_ASR__TURN_DETECTOR": "smart"})


def test_playbook_turn_section_overrides_the_config(tmp_path: Path) -> None:
    text = "---\nturn:\n  turn_detector: text\n  complete_silence_ms: 450\n  vad: silero\n---\nBe brief.\n"
    playbook = parse_playbook(text, "turns.md")
    settings, vad = turn_settings(AsrSettings(), playbook)
    assert settings.mode == "text" and settings.complete_silence_ms == 450 and vad == "silero"
    assert settings.pause_ms == AsrSettings().pause_ms
    with pytest.raises(PlaybookError, match="turn.pause_ms"):
        parse_playbook("---\nturn:\n  pause_ms: fast\n---\nBe brief.\n", "bad.md")
    # Keys that contradict the config once merged fall back to the config.
    broken = parse_playbook("---\nturn:\n  complete_silence_ms: 5000\n---\nBe brief.\n", "broken.md")
    assert turn_settings(AsrSettings(), broken)[0] == turn_settings(AsrSettings())[0]


def test_an_unsure_verdict_waits_in_between() -> None:
    settings = TurnSettings(complete_silence_ms=300, incomplete_silence_ms=1200, max_silence_ms=2000)
    assert settings.wait_ms(0.95) == settings.wait_ms(SURE_FINISHED) == 300
    assert settings.wait_ms(0.05) == settings.wait_ms(SURE_UNFINISHED) == 1200
    assert settings.wait_ms((SURE_FINISHED + SURE_UNFINISHED) / 2) == 750
    assert TurnSettings(incomplete_silence_ms=1200, max_silence_ms=900).wait_ms(0.0) == 900


def test_a_preemptive_detector_ends_at_the_verdict_and_moves_the_wait_to_the_reply() -> None:
    settings = TurnSettings(
        pause_ms=200, complete_silence_ms=300, incomplete_silence_ms=1200, preemptive=True
    )
    detector = TurnDetector(settings)
    (ask,) = feed(detector, "#" * 20 + "." * 10)  # speech to 400 ms, then 200 ms of silence
    unsure = Verdict(False, (SURE_FINISHED + SURE_UNFINISHED) / 2, text_cue("hello"))
    end = detector.answer(ask.pause, unsure)
    assert isinstance(end, TurnEnd) and end.eot == "incomplete"
    assert end.decided_ms == 600 and end.reply_at_ms == 400 + settings.wait_ms(unsure.probability) == 1150
    # The caller goes on: that is a turn of its own, judged again at its pause.
    (ask,) = feed(detector, "#" * 10 + "." * 10, 1300)
    end = detector.answer(ask.pause, verdict(True))
    assert end is not None and end.eot == "complete" and end.reply_at_ms == 1500 + 300
    # Without it the same verdict ends nothing until the wait is over, and says no reply time.
    plain = TurnDetector(TurnSettings(pause_ms=200, complete_silence_ms=300, incomplete_silence_ms=1200))
    (ask,) = feed(plain, "#" * 20 + "." * 10)
    assert plain.answer(ask.pause, unsure) is None
    (end,) = feed(plain, "." * 28, 600)
    assert isinstance(end, TurnEnd) and end.decided_ms == 1160 and end.reply_at_ms == 0


def test_preemptive_is_a_setting_and_a_playbook_key() -> None:
    assert turn_settings(AsrSettings())[0].preemptive
    assert not turn_settings(load_config(None, env={"ACTIVECALL_ASR__PREEMPTIVE": "false"}).asr)[0].preemptive
    playbook = parse_playbook("---\nturn:\n  preemptive: false\n---\nBe brief.\n", "late.md")
    assert not turn_settings(AsrSettings(), playbook)[0].preemptive
