"""Per-packet cost of the media worker's synchronous building blocks, in microseconds.

Run: .venv/bin/python bench/bench_media_codecs.py [--number N] [--repeat R]

Each figure is the best of R runs of N calls (the least disturbed run on a shared machine). The last
column repeats /work/shared/LIMITS.md where it has a figure; compare ratios measured in one run, the
machines are noisy.
"""

from __future__ import annotations

import argparse
import timeit
import warnings
from collections.abc import Callable, Iterator
from itertools import count, repeat
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pylibsrtp
import webrtcvad

from activecall.media import g711
from activecall.media.jitterbuffer import JitterBuffer
from activecall.media.resample import Resampler
from activecall.media.rtcp import (
    RtcpReportBlock,
    RtcpRrPacket,
    RtcpSdesPacket,
    parse_compound,
    serialize_compound,
)
from activecall.media.rtp import RtpPacket
from activecall.media.srtp import SrtpProfile, SrtpSession
from activecall.media.vad import WebRtcVad

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the stdlib reference (audioop-lts from Python 3.13), for comparison only

KEY_A = bytes(range(30))
KEY_B = bytes(range(30, 60))
PAYLOAD = bytes(160)
BATCH_FRAMES = 50
T = TypeVar("T")

# name -> (callable, operations per call)
Cases = dict[str, tuple[Callable[[], object], int]]

REFERENCES = {
    "pylibsrtp protect _80 (no wrapper)": "1.45",
    "pylibsrtp unprotect _80 (no wrapper)": "1.35",
    "PCMU decode+encode numpy": "2.4",
    "PCMU decode+encode audioop": "0.41",
    "webrtcvad 20 ms @8k (raw)": "1.4",
}


def speech_like_frame(samples: int = 160, rate: int = 8000) -> npt.NDArray[np.int16]:
    t = np.arange(samples) / rate
    wave = sum(np.sin(2 * np.pi * 130 * k * t) / k for k in range(1, 25))
    frame: npt.NDArray[np.int16] = (wave / np.abs(wave).max() * 8000).astype(np.int16)
    return frame


def bind(function: Callable[[T], object], arguments: Iterator[T]) -> Callable[[], object]:
    """A no-argument call of `function` on the next argument."""
    return lambda: function(next(arguments))


def rtp_bytes(seq: int) -> bytes:
    packet = RtpPacket(
        sequence_number=seq & 0xFFFF, timestamp=(seq * 160) & 0xFFFFFFFF, ssrc=7, payload=PAYLOAD
    )
    return bytes(packet)


def rtp_cases(calls: int) -> Cases:
    data = rtp_bytes(1)
    return {
        "RTP parse (172 B)": (lambda: RtpPacket.parse(data), 1),
        "RTP parse + serialize": (lambda: bytes(RtpPacket.parse(data)), 1),
    }


def rtcp_cases(calls: int) -> Cases:
    compound = serialize_compound(
        [
            RtcpRrPacket(1, [RtcpReportBlock(2, 3, 4, 5, 6, 7, 8)]),
            RtcpSdesPacket.with_cname(1, "media@10.0.0.1"),
        ]
    )
    return {"RTCP RR+SDES parse + serialize": (lambda: serialize_compound(parse_compound(compound)), 1)}


def srtp_cases(calls: int) -> Cases:
    """libsrtp refuses an index twice, so every call gets a fresh, pre-built packet."""
    plain = [rtp_bytes(seq) for seq in range(calls)]
    cases: Cases = {}
    for profile in SrtpProfile:
        suffix = profile.value.rsplit("_", 1)[1]
        reference_sender = SrtpSession(profile, KEY_A, KEY_B)
        protected = [reference_sender.protect(packet) for packet in plain]
        sender = SrtpSession(profile, KEY_A, KEY_B)
        receiver = SrtpSession(profile, KEY_B, KEY_A)
        cases[f"SRTP protect _{suffix}"] = (bind(sender.protect, iter(plain)), 1)
        cases[f"SRTP unprotect _{suffix}"] = (bind(receiver.unprotect, iter(protected)), 1)
    raw_sender = pylibsrtp.Session(pylibsrtp.Policy(key=KEY_A, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    raw_receiver = pylibsrtp.Session(pylibsrtp.Policy(key=KEY_A, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
    reference_sender = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, KEY_A, KEY_B)
    protected = [reference_sender.protect(packet) for packet in plain]
    cases["pylibsrtp protect _80 (no wrapper)"] = (bind(raw_sender.protect, iter(plain)), 1)
    cases["pylibsrtp unprotect _80 (no wrapper)"] = (bind(raw_receiver.unprotect, iter(protected)), 1)
    return cases


def g711_cases(calls: int) -> Cases:
    frame = speech_like_frame()
    pcm = frame.tobytes()
    ulaw, alaw = g711.pcmu_encode(frame), g711.pcma_encode(frame)
    batch_ulaw, batch_pcm = ulaw * BATCH_FRAMES, np.tile(frame, BATCH_FRAMES)
    return {
        "PCMU encode 160 numpy": (lambda: g711.pcmu_encode(frame), 1),
        "PCMU encode 160 audioop": (lambda: audioop.lin2ulaw(pcm, 2), 1),
        "PCMU decode 160 numpy": (lambda: g711.pcmu_decode(ulaw), 1),
        "PCMU decode 160 audioop": (lambda: audioop.ulaw2lin(ulaw, 2), 1),
        "PCMU decode+encode numpy": (lambda: g711.pcmu_encode(g711.pcmu_decode(ulaw)), 1),
        "PCMU decode+encode audioop": (lambda: audioop.lin2ulaw(audioop.ulaw2lin(ulaw, 2), 2), 1),
        "PCMA decode+encode numpy": (lambda: g711.pcma_encode(g711.pcma_decode(alaw)), 1),
        "PCMA decode+encode audioop": (lambda: audioop.lin2alaw(audioop.alaw2lin(alaw, 2), 2), 1),
        f"PCMU decode+encode numpy, {BATCH_FRAMES} frames/call": (
            lambda: (g711.pcmu_decode(batch_ulaw), g711.pcmu_encode(batch_pcm)),
            BATCH_FRAMES,
        ),
    }


def vad_cases(calls: int) -> Cases:
    frame = speech_like_frame()
    data = frame.tobytes()
    raw, wrapped = webrtcvad.Vad(2), WebRtcVad(2)
    return {
        "webrtcvad 20 ms @8k (raw)": (lambda: raw.is_speech(data, 8000), 1),
        "WebRtcVad.is_speech, bytes": (lambda: wrapped.is_speech(data, 8000), 1),
        "WebRtcVad.is_speech, int16 array": (lambda: wrapped.is_speech(frame, 8000), 1),
    }


def jitter_cases(calls: int) -> Cases:
    buffer = JitterBuffer()
    packets = [RtpPacket(sequence_number=seq, timestamp=seq * 160, payload=PAYLOAD) for seq in range(1 << 16)]
    ticks = count()

    def put_get() -> object:
        tick = next(ticks)
        now = tick * 0.02
        buffer.put(packets[tick & 0xFFFF], now)
        return buffer.get(now)

    return {"jitter buffer put + get": (put_get, 1)}


def resample_cases(calls: int) -> Cases:
    frame8k, frame22k = speech_like_frame(160, 8000), speech_like_frame(441, 22050)
    cases: Cases = {}
    for low_latency, label in ((True, "low latency"), (False, "fixed-rate")):
        up, down = (
            Resampler(8000, 16000, low_latency=low_latency),
            Resampler(22050, 8000, low_latency=low_latency),
        )
        cases[f"resample 20 ms 8k->16k, {label}"] = (bind(up.process, repeat(frame8k)), 1)
        cases[f"resample 20 ms 22.05k->8k, {label}"] = (bind(down.process, repeat(frame22k)), 1)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--number", type=int, default=20_000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best one is reported")
    args = parser.parse_args()
    calls = args.number * args.repeat
    groups = [rtp_cases, rtcp_cases, srtp_cases, g711_cases, vad_cases, jitter_cases, resample_cases]
    print(f"{'operation':48} {'us/op':>8}   LIMITS.md")
    for group in groups:
        for name, (function, per_call) in group(calls).items():
            best = min(timeit.repeat(function, number=args.number, repeat=args.repeat))
            print(f"{name:48} {best / args.number / per_call * 1e6:8.2f}   {REFERENCES.get(name, '')}")
        print()


if __name__ == "__main__":
    main()
