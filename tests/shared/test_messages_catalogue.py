"""docs/messages.md is written from the code and kept current."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_message_catalogue_is_current() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        catalogue = importlib.import_module("messages_catalogue")
    finally:
        sys.path.pop(0)
    rendered = catalogue.render()
    assert (REPO / "docs" / "messages.md").read_text() == rendered, (
        "run: python scripts/messages_catalogue.py > docs/messages.md"
    )
    assert "### `leg.update`: LegUpdate" in rendered and "| `remote_port` | int | `0` |" in rendered
