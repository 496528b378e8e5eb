"""Two llm worker processes; the one holding a call is killed and the other answers the next words."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from llm_harness import Harness, wait_for

from activecall.config import RedisSettings
from activecall.llm.history import CALL_ANSWERED_NOTE
from activecall.messages import CallEnded, TranscriptFinal
from activecall.testing.anthropic_server import FakeAnthropicServer, RecordedRequest, ScriptItem, text

PLAYBOOK = "---\ngreeting: Hello.\n---\nBe brief.\n"
ANSWERS = {"first": "Answer one.", "second": "Answer two."}


def pick(request: RecordedRequest) -> ScriptItem:
    said = request.body["messages"][-1]["content"][0]["text"]
    return text(ANSWERS.get(said, "What?"))


def write_config(path: Path, redis: RedisSettings, base_url: str, playbooks: Path) -> Path:
    path.write_text(
        f"""\
[redis]
url = "{redis.url}"
prefix = "{redis.prefix}"
lease_ttl = 1.0

[llm]
api_key = "test-key"
base_url = "{base_url}"
timeout = 5.0

[playbooks]
dirs = ["{playbooks}"]
""",
        encoding="utf-8",
    )
    return path


def spawn(config: Path, worker_id: str, log: Path) -> subprocess.Popen[bytes]:
    # The file is the whole configuration: nothing from this environment may override it.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ACTIVECALL_", "ANTHROPIC_", "REDIS_URL"))
    }
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "activecall.llm", "--config", str(config), "--worker-id", worker_id]
            + ["--metrics-port", "0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def message(role: str, text_: str) -> dict[str, object]:
    return {"role": role, "content": [{"type": "text", "text": text_}]}


async def test_a_killed_worker_s_call_goes_on_with_its_history(harness: Harness, tmp_path: Path) -> None:
    harness.playbook("brief.md", PLAYBOOK)
    workers: dict[str, subprocess.Popen[bytes]] = {}
    with FakeAnthropicServer(pick) as srv:
        config = write_config(tmp_path / "active-call.toml", harness.redis, srv.base_url, tmp_path)
        try:
            for name in ("llm-a", "llm-b"):
                workers[name] = spawn(config, name, tmp_path / f"{name}.log")

            async def both_live() -> bool:
                return len(await harness.bus.redis.hkeys(harness.bus.keys.workers("llm"))) == 2

            await wait_for(both_live, "both workers to register", limit_s=30)
            await harness.call("c1", "brief.md")
            assert await harness.wait_closed("c1", "greeting") == [(0, "Hello.", True)]
            turn_one = "t" + await harness.emit("c1", TranscriptFinal(text="first"))
            assert await harness.wait_closed("c1", turn_one) == [(0, "Answer one.", False), (1, "", True)]

            async def turn_one_committed() -> bool:
                # The pieces go out before the turn is written down; kill only after it is.
                answered = harness.bus.keys.call_stream("c1", "llm:answered")
                return bool(await harness.bus.redis.sismember(answered, turn_one[1:]))

            await wait_for(turn_one_committed, "the first turn to be committed")
            owner = (await harness.bus.redis.get(harness.bus.keys.lease("llm", "c1"))).decode()
            workers[owner].send_signal(signal.SIGKILL)
            workers[owner].wait()

            turn_two = "t" + await harness.emit("c1", TranscriptFinal(text="second"))
            answer = await harness.wait_closed("c1", turn_two)
            assert answer == [(0, "Answer two.", False), (1, "", True)]
            survivor = "llm-b" if owner == "llm-a" else "llm-a"
            assert await harness.bus.redis.get(harness.bus.keys.lease("llm", "c1")) == survivor.encode()
            assert len(srv.message_requests) == 2
            assert srv.message_requests[1].body["messages"] == [
                message("user", CALL_ANSWERED_NOTE),
                message("assistant", "Hello."),
                message("user", "first"),
                message("assistant", "Answer one."),
                message("user", "second"),
            ]
            pieces = [(p.turn_id, p.seq, p.text) for p in await harness.say("c1")]
            assert pieces == [
                ("greeting", 0, "Hello."),
                (turn_one, 0, "Answer one."),
                (turn_one, 1, ""),
                (turn_two, 0, "Answer two."),
                (turn_two, 1, ""),
            ]
            await harness.emit("c1", CallEnded(reason="bye"))
            await wait_for(lambda: harness.session_done("c1"), "the session to end")
        finally:
            for process in workers.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
