"""The SIP edge process."""

from __future__ import annotations

from activecall.service import BaseService


class SipEdgeService(BaseService):
    role = "sip-edge"
