"""Media worker metrics (prefixes ``activecall_rtp_``, ``activecall_srtp_``, ``activecall_media_``).

The packet path counts in plain integers on one :class:`MediaStats` per process; a collector turns
them into Prometheus samples at scrape time. A ``prometheus_client`` counter takes a lock per
increment, which at 100 packets per call-second would cost more than the SRTP itself.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import REGISTRY, CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from activecall.metrics import TURN_BUCKETS

SRTP_FAILURE_KINDS = ("auth", "replay", "malformed", "nokey")
DROP_REASONS = ("malformed", "payload_type", "not_ready", "source")
SEND_JITTER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05)


class FastHistogram:
    """A histogram whose ``observe`` is a bisect and two additions, exported by the collector."""

    __slots__ = ("buckets", "counts", "count", "total")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (inf past the last bucket)."""
        rank = q * self.count
        running = 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            if running >= rank and running:
                return bound
        return 0.0


class MediaStats:
    """Counters of one media worker process; the hot path adds to the attributes directly."""

    def __init__(self) -> None:
        self.packets_in = 0
        self.packets_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.rtcp_in = 0
        self.rtcp_out = 0
        self.srtp_failures = dict.fromkeys(SRTP_FAILURE_KINDS, 0)
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.jitter_late = 0
        self.jitter_lost = 0
        self.barge_ins = 0
        self.pauses = 0
        self.timeouts = 0
        self.dtmf_in = 0
        self.dtmf_out = 0
        self.frames_published = 0
        self.bus_dropped = 0
        self.ticks_skipped = 0
        self.send_jitter = FastHistogram(SEND_JITTER_BUCKETS)


STATS = MediaStats()

LEGS_ACTIVE = Gauge("activecall_media_legs_active", "RTP legs held by this media worker")
LEGS_ORPHANED = Counter(
    "activecall_media_legs_orphaned",
    "Legs this worker closed itself: media_timeout (no edge answered media.timeout within orphan_grace),"
    " no_edge (no RTP and the call's edge gone), call_ended (the call ended without its leg.close)",
    ["reason"],
)
TURN_LATENCY = Histogram(
    "activecall_turn_latency_seconds",
    "From the arrival of the caller's last speech (or key press) to the answer's first RTP packet",
    buckets=TURN_BUCKETS,
)


def _counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=list(labels) if labels else None)
    family.add_metric(list(labels.values()) if labels else [], value)
    return family


class _StatsCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        s = STATS
        packets = CounterMetricFamily("activecall_rtp_packets", "RTP packets", labels=["direction"])
        packets.add_metric(["in"], s.packets_in)
        packets.add_metric(["out"], s.packets_out)
        yield packets
        octets = CounterMetricFamily("activecall_rtp_bytes", "RTP bytes on the wire", labels=["direction"])
        octets.add_metric(["in"], s.bytes_in)
        octets.add_metric(["out"], s.bytes_out)
        yield octets
        rtcp = CounterMetricFamily("activecall_rtcp_packets", "RTCP compound packets", labels=["direction"])
        rtcp.add_metric(["in"], s.rtcp_in)
        rtcp.add_metric(["out"], s.rtcp_out)
        yield rtcp
        failures = CounterMetricFamily(
            "activecall_srtp_failures", "SRTP/SRTCP packets dropped by failure kind", labels=["kind"]
        )
        for kind, count in s.srtp_failures.items():
            failures.add_metric([kind], count)
        yield failures
        dropped = CounterMetricFamily(
            "activecall_rtp_dropped", "Received RTP packets dropped before playout", labels=["reason"]
        )
        for reason, count in s.dropped.items():
            dropped.add_metric([reason], count)
        yield dropped
        yield _counter("activecall_media_jitter_buffer_late", "Packets that missed their slot", s.jitter_late)
        yield _counter(
            "activecall_media_jitter_buffer_lost", "Slots concealed for a lost packet", s.jitter_lost
        )
        yield _counter(
            "activecall_media_barge_ins", "Turns stopped by caller speech or a key press", s.barge_ins
        )
        yield _counter(
            "activecall_media_pauses", "Turns paused by caller speech (resumed or cut later)", s.pauses
        )
        yield _counter("activecall_media_timeouts", "Legs that received no RTP for rtp_timeout", s.timeouts)
        dtmf = CounterMetricFamily("activecall_media_dtmf_digits", "DTMF digits", labels=["direction"])
        dtmf.add_metric(["in"], s.dtmf_in)
        dtmf.add_metric(["out"], s.dtmf_out)
        yield dtmf
        yield _counter(
            "activecall_media_frames_published",
            "Caller audio frames appended to audio:in",
            s.frames_published,
        )
        yield _counter(
            "activecall_media_bus_dropped", "Frames and events dropped while Redis was away", s.bus_dropped
        )
        yield _counter(
            "activecall_media_ticks_skipped",
            "Pacing ticks skipped after a stall of the loop",
            s.ticks_skipped,
        )
        hist = HistogramMetricFamily(
            "activecall_rtp_send_jitter_seconds",
            "Deviation of each leg's RTP send interval from the packet time",
        )
        hist.add_metric([], s.send_jitter.cumulative(), s.send_jitter.total)
        yield hist


REGISTRY.register(_StatsCollector())
