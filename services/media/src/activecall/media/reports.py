"""The RTCP side of one leg (RFC 3550 section 6): what was sent and received, and the reports.

A compound report (SR, or RR when nothing was sent since the last one; then SDES CNAME; BYE when the
leg closes) leaves every ``RTCP_INTERVAL_S`` on average, randomised between 0.5 and 1.5 times it
(section 6.2) so that legs opened together do not report together.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Final

from activecall.media.rtcp import (
    RtcpByePacket,
    RtcpPacket,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpStats,
    ntp_from_unix,
    round_trip_time,
    serialize_compound,
)

log = logging.getLogger("activecall.media.reports")

RTCP_INTERVAL_S: Final = 5.0


class RtcpReports:
    """``received`` counts the peer's packets (the leg updates it per packet, as it does
    ``sent_packets`` and ``sent_octets``); ``build`` makes the next compound packet."""

    def __init__(self, ssrc: int, cname: str, clock_rate: int) -> None:
        self.ssrc = ssrc
        self.cname = cname
        self.received = RtpStats(clock_rate)
        self.remote_ssrc = 0
        self.sent_packets = 0
        self.sent_octets = 0
        self.sent_since_report = False
        self.rtt: float | None = None
        self.next_due = time.monotonic() + self._interval()

    @staticmethod
    def _interval() -> float:
        return RTCP_INTERVAL_S * random.uniform(0.5, 1.5)

    def due(self, now: float) -> bool:
        """True once per reporting interval."""
        if now < self.next_due:
            return False
        self.next_due = now + self._interval()
        return True

    def build(self, rtp_timestamp: int, bye: bool = False) -> bytes:
        """SR or RR with a report block on the peer's source, SDES CNAME, and BYE when asked
        (RFC 3550 sections 6.4, 6.5, 6.6); ``rtp_timestamp`` is the leg's RTP clock now."""
        blocks = []
        if self.received.started:
            blocks.append(self.received.report_block(self.remote_ssrc, time.monotonic()))
        report: RtcpPacket
        if self.sent_since_report:
            info = RtcpSenderInfo(
                ntp_from_unix(time.time()), rtp_timestamp, self.sent_packets, self.sent_octets
            )
            report = RtcpSrPacket(self.ssrc, info, blocks)
        else:
            report = RtcpRrPacket(self.ssrc, blocks)
        self.sent_since_report = False
        packets: list[RtcpPacket] = [report, RtcpSdesPacket.with_cname(self.ssrc, self.cname)]
        if bye:
            packets.append(RtcpByePacket([self.ssrc]))
        return serialize_compound(packets)

    def on_compound(self, packets: list[RtcpPacket]) -> None:
        """The peer's SR feeds LSR/DLSR; its report on our source gives the round-trip time."""
        for packet in packets:
            if isinstance(packet, RtcpSrPacket):
                self.received.on_sender_report(packet.sender_info.ntp_timestamp, time.monotonic())
            if isinstance(packet, RtcpSrPacket | RtcpRrPacket):
                for block in packet.reports:
                    if block.ssrc == self.ssrc:
                        rtt = round_trip_time(ntp_from_unix(time.time()), block.lsr, block.dlsr)
                        self.rtt = rtt if rtt is not None else self.rtt
