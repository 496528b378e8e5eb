"""The backchannel rule: what the caller's speech over the agent means."""

from __future__ import annotations

from activecall.llm.floor import Backchannels, Verdict
from activecall.playbook import DEFAULT_BACKCHANNELS

LISTENING, INTERRUPTING, UNDECIDED = Verdict.LISTENING, Verdict.INTERRUPTING, Verdict.UNDECIDED


def test_backchannel_phrases_in_any_spelling_are_listening() -> None:
    rule = Backchannels(DEFAULT_BACKCHANNELS)
    for text in ("uh-huh", "Uh huh.", "mm-hmm", "okay okay", "yeah, right", "I see", "", "all right"):
        assert rule.judge(text, 500, final=True) is LISTENING, text
    assert rule.judge("uh huh", 500, final=False) is UNDECIDED  # resuming waits for the end of speech


def test_real_words_stop_the_agent() -> None:
    rule = Backchannels(DEFAULT_BACKCHANNELS)
    assert rule.judge("what about saturday", 900, final=False) is INTERRUPTING  # long enough to tell
    assert rule.judge("what about saturday", 500, final=False) is UNDECIDED  # the agent is paused: wait
    assert rule.judge("what about saturday", 900, final=True) is INTERRUPTING
    assert rule.judge("okay but", 400, final=True) is INTERRUPTING  # a word that asks for the floor
    assert rule.judge("wait", 300, final=True) is INTERRUPTING
    assert rule.judge("", 1500, final=True) is INTERRUPTING  # long speech takes the floor, words or not


def test_a_short_sound_the_recognizer_misheard_is_a_backchannel() -> None:
    rule = Backchannels(DEFAULT_BACKCHANNELS)
    assert rule.judge("i'm home", 420, final=True) is LISTENING  # "mm-hmm"
    assert rule.judge("log on and let", 560, final=True) is LISTENING  # short, whatever was heard
    assert rule.judge("yes", 300, final=True) is LISTENING
    assert rule.judge("yes", 900, final=True) is INTERRUPTING  # ... but not a long one


def test_a_playbook_vocabulary_replaces_the_default() -> None:
    rule = Backchannels(["si", "vale"])
    assert rule.judge("vale vale", 500, final=True) is LISTENING
    assert rule.judge("okay fine", 900, final=True) is INTERRUPTING
    assert rule.judge("vale", 900, final=True) is LISTENING
