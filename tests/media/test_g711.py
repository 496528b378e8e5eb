import hashlib
import warnings
from types import ModuleType

import numpy as np
import pytest

from activecall.media.g711 import (
    ALAW_DECODE_TABLE,
    CODECS_BY_NAME,
    CODECS_BY_PAYLOAD_TYPE,
    PCMA,
    PCMU,
    ULAW_ENCODE_TABLE,
    G711Codec,
    G711Error,
    pcma_decode,
    pcma_encode,
    pcmu_decode,
    pcmu_encode,
)

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


# SHA-256 of the reference's four tables, from the standard library's audioop of CPython 3.11: the audioop
# of Python 3.13 on (the audioop-lts port) must be the same reference.
REFERENCE_SHA256 = {
    "lin2ulaw": "81d633c9e6972a18c74a58720b96cb8ca0bdd096d4060b646dd708c3b846019a",
    "lin2alaw": "38488f6fd710f4686360edc4d38639f96c491595ef93f8eb8d62d5e07ca6ce7b",
    "ulaw2lin": "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827",
    "alaw2lin": "e04788d110e58ff8c70c93b8480190d973e3b67876b6119abbaec766cc75c174",
}


@pytest.fixture(scope="module")
def audioop() -> ModuleType:
    """The reference implementation, used by these tests only: the standard library's audioop up to
    Python 3.12 (deprecated), the audioop-lts port of it from 3.13 (requirements-dev.txt)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    return audioop


def test_the_reference_is_cpythons_audioop(audioop: ModuleType) -> None:
    got = {
        "lin2ulaw": audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2),
        "lin2alaw": audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2),
        "ulaw2lin": audioop.ulaw2lin(ALL_CODES, 2),
        "alaw2lin": audioop.alaw2lin(ALL_CODES, 2),
    }
    assert {name: hashlib.sha256(table).hexdigest() for name, table in got.items()} == REFERENCE_SHA256


def test_pcmu_encode_matches_audioop_on_all_65536_samples(audioop: ModuleType) -> None:
    expected = audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)
    assert pcmu_encode(ALL_SAMPLES) == expected
    assert pcmu_encode(ALL_SAMPLES.tobytes()) == expected
    assert PCMU.encode(ALL_SAMPLES) == expected


def test_pcma_encode_matches_audioop_on_all_65536_samples(audioop: ModuleType) -> None:
    expected = audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)
    assert pcma_encode(ALL_SAMPLES) == expected
    assert pcma_encode(ALL_SAMPLES.tobytes()) == expected
    assert PCMA.encode(ALL_SAMPLES) == expected


def test_pcmu_decode_matches_audioop_on_all_256_codes(audioop: ModuleType) -> None:
    decoded = pcmu_decode(ALL_CODES)
    assert decoded.dtype == np.int16
    assert decoded.tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert PCMU.decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)


def test_pcma_decode_matches_audioop_on_all_256_codes(audioop: ModuleType) -> None:
    decoded = pcma_decode(ALL_CODES)
    assert decoded.dtype == np.int16
    assert decoded.tobytes() == audioop.alaw2lin(ALL_CODES, 2)
    assert PCMA.decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)


def test_anchor_values() -> None:
    extremes = np.array([0, 32767, -32768, -1], dtype=np.int16)
    assert pcmu_encode(extremes) == bytes.fromhex("ff80007e")
    assert pcma_encode(extremes) == bytes.fromhex("d5aa2a55")
    assert pcmu_decode(bytes.fromhex("8000ff7f")).tolist() == [32124, -32124, 0, 0]
    assert pcma_decode(bytes.fromhex("d555aa2a")).tolist() == [8, -8, 32256, -32256]


def test_decoded_codes_re_encode_to_themselves() -> None:
    assert PCMA.encode(PCMA.decode(ALL_CODES)) == ALL_CODES
    # mu-law has two zeros: 0x7f (-0) decodes to 0, which encodes as 0xff (+0).
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF
    assert PCMU.encode(PCMU.decode(ALL_CODES)) == bytes(expected)


def test_quantisation_error_is_half_the_top_segment_step() -> None:
    # A-law's top step is 1024; mu-law's largest error is the clipping of 32767 to 32124.
    for codec, max_error in ((PCMU, 644), (PCMA, 512)):
        error = codec.decode(codec.encode(ALL_SAMPLES)).astype(np.int32) - ALL_SAMPLES
        assert int(np.abs(error).max()) == max_error
        small = np.abs(ALL_SAMPLES.astype(np.int32)) < 64
        assert int(np.abs(error[small]).max()) <= 8  # fine steps near zero


def test_packet_sizes_and_silence() -> None:
    frame = np.zeros(160, dtype=np.int16)
    assert PCMU.encode(frame) == PCMU.silence(160) == b"\xff" * 160
    assert PCMA.encode(frame) == PCMA.silence(160) == b"\xd5" * 160
    assert PCMU.decode(PCMU.silence(160)).tolist() == [0] * 160
    assert pcmu_encode(b"") == b""
    assert pcma_decode(b"").shape == (0,)


def test_codec_registry() -> None:
    assert CODECS_BY_PAYLOAD_TYPE == {0: PCMU, 8: PCMA}
    assert CODECS_BY_NAME["PCMA"] is PCMA


def test_bad_inputs() -> None:
    with pytest.raises(G711Error, match="^PCM16 input has an odd length of 3 bytes$"):
        pcmu_encode(b"\x00\x01\x02")
    with pytest.raises(G711Error, match="^PCM16 input must be int16, not float32$"):
        pcma_encode(np.zeros(4, dtype=np.float32))


def test_tables_are_read_only() -> None:
    with pytest.raises(ValueError, match="read-only"):
        ULAW_ENCODE_TABLE[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        ALAW_DECODE_TABLE[0] = 1


@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_decoding_many_payloads_at_once_is_decoding_each(codec: G711Codec) -> None:
    payloads = [ALL_CODES, ALL_CODES[:160], b"", ALL_CODES[7:8], ALL_CODES[::-1]]
    expected = [codec.decode(payload).tobytes() for payload in payloads]
    assert codec.decode_many(payloads) == expected
    assert [codec.decode_pcm16(payload) for payload in payloads] == expected
    assert codec.decode_many(payloads[:1]) == expected[:1]
