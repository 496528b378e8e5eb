"""`python -m activecall.sip_edge` and the console script `activecall-sip-edge`."""

from __future__ import annotations

from collections.abc import Sequence

from activecall.service import run_service
from activecall.sip_edge.service import SipEdgeService


def main(argv: Sequence[str] | None = None) -> None:
    run_service("sip-edge", SipEdgeService, argv)


if __name__ == "__main__":
    main()
