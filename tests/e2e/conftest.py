from collections.abc import Iterator

import pytest
from e2e_calls import FIGURES, TURN_LATENCIES_MS, latency_summary

from activecall.testing.system import System, running_system


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The whole system with the scripted provider, shared by the tests that don't need another one."""
    menu = '[[handler.rules]]\ncallee = "^menu$"\nplaybook = "ivr.md"\n'  # the phone menu for the DTMF test
    with running_system(tmp_path_factory.mktemp("system"), extra_config=menu) as running:
        yield running


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("end-to-end figures")
    for figure in FIGURES:
        terminalreporter.write_line(figure)
    terminalreporter.write_line(
        f"turn latency (end of speech -> first answer RTP packet): {latency_summary(TURN_LATENCIES_MS)}"
    )
