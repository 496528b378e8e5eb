"""End of turn: when has the caller finished speaking? (docs/turns.md)

- :mod:`.vad`: is a 20 ms frame speech (webrtcvad or Silero);
- :mod:`.features` and :mod:`.smart_turn`: the Smart Turn model's view of the voice;
- :mod:`.cues`: the partial transcript's view of the words;
- :mod:`.judge`: both, and the playbook's expected answers, in one verdict asked once per pause;
- :mod:`.detector`: the state machine that turns frames and verdicts into the end of the turn.

All synchronous; the asr service runs the judge in its thread pool.
"""
