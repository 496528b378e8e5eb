"""Call recording: a stereo WAV with the caller on the left and the agent on the right."""

from __future__ import annotations

import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from activecall.bus import Bus
from activecall.config import Config
from activecall.media.recorder import StereoRecorder
from activecall.media.worker import MediaWorker, read_wav_mono
from activecall.messages import AudioChunk, CallError, PlayAudio, PlaybackFinished, StartRecording
from activecall.testing.media import LegClient, ncc_peak, poll, voiced

OpenLeg = Callable[..., Awaitable[LegClient]]


def read_stereo(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (2, 2)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return samples[0::2], samples[1::2], wav.getframerate()


def test_recorder_interleaves_aligned_frames_and_pads_the_caller(tmp_path: Path) -> None:
    recorder = StereoRecorder(tmp_path / "deep" / "r.wav")
    recorder.caller(np.full(160, 5, np.int16))
    recorder.tick(np.full(160, 9, np.int16))
    recorder.tick(None)  # no caller frame, no agent frame: silence on both
    recorder.caller(np.full(160, 6, np.int16))
    recorder.caller(np.full(160, 7, np.int16))
    recorder.tick(np.full(160, 8, np.int16))
    recorder.close()
    left, right, rate = read_stereo(tmp_path / "deep" / "r.wav")
    assert rate == 8000
    assert left.tolist() == [5] * 160 + [0] * 160 + [6] * 160
    assert right.tolist() == [9] * 160 + [0] * 160 + [8] * 160


async def test_recording_holds_both_sides_of_the_call(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg, media_config: Config
) -> None:
    client = await open_leg(worker, srtp=True)
    await client.command(StartRecording(path="calls/rec.wav"))
    await client.peer.wait_for(lambda: worker.legs[client.leg_id].recorder is not None)
    caller = voiced(1.2)
    agent = voiced(1.2, f0=210.0, seed=3.0)
    chunk = AudioChunk(
        call_id=client.call_id, turn_id="t1", seq=0, pcm=agent.astype("<i2").tobytes(), last=True
    )
    await bus.publish(bus.keys.audio_out(client.call_id), chunk)
    await client.peer.play(np.zeros(12000, np.int16))  # the caller listens (speech would barge in)...
    await client.peer.play(caller)  # ... then answers
    await client.peer.play(np.zeros(1600, np.int16))
    assert (await client.close()).ok
    left, right, rate = read_stereo(Path(media_config.media.recording_path) / "calls" / "rec.wav")
    assert rate == 8000 and len(left) >= len(caller) + len(agent)
    caller_score, _ = ncc_peak(caller[800:-800], left, max_lag=len(left) - len(caller) + 1600)
    agent_score, _ = ncc_peak(agent[800:-800], right, max_lag=len(right) - len(agent) + 1600)
    assert caller_score >= 0.9 and agent_score >= 0.9, (caller_score, agent_score)
    cross, _ = ncc_peak(caller[800:-800], right, max_lag=len(right) - len(caller) + 1600)
    assert cross < 0.5  # the agent channel does not carry the caller


async def test_play_audio_plays_a_wav_file_as_a_turn(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    monkeypatch.chdir(tmp_path)
    prompt = voiced(0.5, rate=16000)
    with wave.open("prompt.wav", "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(prompt.astype("<i2").tobytes())
    assert read_wav_mono(Path("prompt.wav")) == (prompt.astype("<i2").tobytes(), 16000)
    client = await open_leg(worker, srtp=False)
    await client.command(PlayAudio(path_or_url="prompt.wav", turn_id="p1"))
    await client.command(PlayAudio(path_or_url="../etc/passwd", turn_id="p2"))
    events = await poll(client.events, lambda events: any(isinstance(e, PlaybackFinished) for e in events))
    assert [e.played_ms for e in events if isinstance(e, PlaybackFinished)] == [500]
    (error,) = [e for e in events if isinstance(e, CallError)]
    assert error.error == "play: only WAV files below the working directory are played, not '../etc/passwd'"
