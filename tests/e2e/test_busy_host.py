"""Leases that a live worker does not lose, on a host whose every core is hogged: stress-ng (at the
services' own priority) runs for five minutes while ten real phones (baresip over TLS and SRTP,
started a second apart) each ask a question every 12 s, then say goodbye. No session lease is lost
while its worker lives (the services log none), and every question each caller asked is in its
call's transcript."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_calls import CallerScript, find_call, report, wait_record

from activecall.testing.baresip import BaresipPhone
from activecall.testing.system import System, running_system

HOG_S = 300
CALLS = 10
QUESTION = "What are your opening hours?"
GOODBYE = "Thank you very much. Goodbye."
# The answer takes about 4 s; the next question comes before the playbook's 8 s of silence asks
# whether the caller is still there.
BETWEEN_S = 10.0
QUESTIONS = int((HOG_S - 20) // (BETWEEN_S + 2))


@pytest.fixture(scope="module")
def busy_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    # Two asr workers: one recognises 8 callers at once in real time on an idle core.
    with running_system(tmp_path_factory.mktemp("busy-host"), workers={"asr": 2}) as running:
        yield running


@pytest.mark.timeout(HOG_S + 300)
def test_a_hogged_host_loses_no_lease_and_no_sentence(busy_system: System, tmp_path: Path) -> None:
    script = CallerScript(
        [4.0, *[part for _ in range(QUESTIONS) for part in (QUESTION, BETWEEN_S)], GOODBYE, 30.0]
    )
    wav = script.write(tmp_path / "caller.wav")
    hog = subprocess.Popen(
        ["stress-ng", "--cpu", str(os.cpu_count() or 1), "--timeout", f"{HOG_S}s", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    phones: list[BaresipPhone] = []
    try:
        for index in range(CALLS):
            phone = BaresipPhone(
                tmp_path / f"phone-{index}", wav, f"busy-{index}", certificate=busy_system.certificate
            )
            phones.append(phone.start())
            assert phone.dial(f"sip:agent@127.0.0.1:{busy_system.tls_port};transport=tls")["ok"]
            time.sleep(1.0)
        for phone in phones:
            phone.wait_event("CALL_ESTABLISHED", 30)
        deadline = time.monotonic() + HOG_S + 120
        for phone in phones:
            phone.wait_event("CALL_CLOSED", max(1.0, deadline - time.monotonic()))  # the agent's goodbye
    finally:
        for phone in phones:
            phone.stop()
        hog.terminate()
        hog.wait(timeout=10)

    missing = {}
    for index in range(CALLS):
        call_id = find_call(busy_system.redis_url, f"busy-{index}").call_id
        record = wait_record(busy_system.redis_url, call_id, lambda r: r.state == "ended", 30)
        said = " ".join(line["text"] for line in record.transcript if line["speaker"] == "caller").lower()
        heard = said.count("hours")
        if heard < QUESTIONS:
            missing[f"busy-{index}"] = f"{QUESTIONS - heard} of {QUESTIONS} questions missing: {said!r}"
    lost = busy_system.log.read_text().count('"session lease lost"')
    report(
        f"busy host ({HOG_S} s of stress-ng on every core, {CALLS} calls of {QUESTIONS} questions): "
        f"{lost} session leases lost, {len(missing)} calls with questions missing"
    )
    assert lost == 0
    assert not missing, missing
