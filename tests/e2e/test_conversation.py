"""A real phone holds a conversation with the agent (scripted provider): greeting, a question and its
answer, then goodbye, after which the agent's hangup ends the call on both sides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from e2e_calls import (
    CallerScript,
    call_streams,
    find_call,
    heard_matches,
    latency_breakdown,
    latency_summary,
    record_latencies,
    report,
    wait_record,
)

from activecall.audio import corpus_word_accuracy, read_wav
from activecall.messages import CallEnded, PlaybackStarted, TranscriptFinal, TurnStarted
from activecall.testing.baresip import BaresipPhone
from activecall.testing.system import System

QUESTION = "What are your opening hours?"
GOODBYE = "Thank you very much. Goodbye."


def converse(
    system: System,
    folder: Path,
    user: str,
    before_question_s: float = 7.0,
    meanwhile: Callable[[], None] | None = None,
) -> tuple[BaresipPhone, str]:
    """Call the agent, ask a question, say goodbye; the call ends when the agent hangs up.
    ``meanwhile`` runs once the call is established, while the caller is still silent."""
    script = CallerScript([before_question_s, QUESTION, 6.0, GOODBYE, 20.0])
    wav = script.write(folder / "caller.wav")
    phone = BaresipPhone(folder / "phone", wav, user, certificate=system.certificate).start()
    try:
        assert phone.dial(f"sip:agent@127.0.0.1:{system.tls_port};transport=tls")["ok"]
        phone.wait_event("CALL_ESTABLISHED", 30)
        if meanwhile is not None:
            meanwhile()
        phone.wait_event("CALL_CLOSED", 45)  # the agent hangs up after its goodbye
    finally:
        phone.stop()
    return phone, find_call(system.redis_url, user).call_id


def check_conversation(system: System, phone: BaresipPhone, call_id: str, end_reason: str) -> None:
    record = wait_record(system.redis_url, call_id, lambda r: r.state == "ended")
    streams = call_streams(system.redis_url, call_id)

    finals = [t.text for t in streams.of_type(TranscriptFinal)]
    accuracy = corpus_word_accuracy(zip([QUESTION, GOODBYE], finals + [""] * 2, strict=False))
    report(f"caller said {[QUESTION, GOODBYE]}, the asr heard {finals}: word accuracy {accuracy:.0%}")
    assert accuracy >= 0.7

    turns = [t.turn_id for t in streams.of_type(TurnStarted)]
    assert turns[0] == "greeting" and len(turns) >= 3, turns
    played = {p.turn_id for p in streams.of_type(PlaybackStarted)}
    assert set(turns) <= played, f"turns never played: {set(turns) - played}"

    heard_file, _ = phone.dumps()
    assert heard_file is not None
    heard, rate = read_wav(heard_file)
    assert rate == 8000
    for turn in turns:
        assert heard_matches(heard, streams.turn_audio(turn), f"turn {turn}") >= 0.9

    (ended,) = streams.of_type(CallEnded)
    assert ended.by == "llm" and record.end_reason == ended.reason == end_reason, (ended, record.end_reason)
    assert record.answered > 0 and record.timings["first_audio"] >= record.answered
    answer_latencies = [v for k, v in record.timings.items() if k.startswith("turn_latency:")]
    assert len(answer_latencies) >= 2, record.timings
    latencies = record_latencies(streams)
    for line in latency_breakdown(streams):
        report(f"after the end of caller speech: {line}")
    report(f"turn latency (end of speech -> first answer RTP packet): {latency_summary(latencies)}")

    speakers = [(line["speaker"], line["text"]) for line in record.transcript]
    report("transcript " + " | ".join(f"{who}: {text}" for who, text in speakers))
    assert [who for who, _ in speakers][:3] == ["agent", "caller", "agent"], speakers
    assert "help you today" in speakers[0][1]
    assert "goodbye" in speakers[-1][1].lower() and speakers[-1][0] == "agent"


def test_a_caller_asks_a_question_and_says_goodbye(system: System, tmp_path: Path) -> None:
    phone, call_id = converse(system, tmp_path, "asker")
    check_conversation(system, phone, call_id, "agent")
    record = wait_record(system.redis_url, call_id, lambda r: r.state == "ended")
    answer = [line["text"] for line in record.transcript if line["speaker"] == "agent"][1]
    assert "monday to friday" in answer.lower(), answer
