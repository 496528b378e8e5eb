"""baresip (Debian package, 1.0.0) as a headless SIP phone for tests, driven over ctrl_tcp.

Its folder holds ``config`` and ``accounts``; it plays a WAV file as its microphone (``aufile``) and
answers commands in netstring JSON (``{"command": "dial", "params": "sip:...", "token": "1"}``),
reporting call events (``CALL_ESTABLISHED``, ``CALL_MENC``, ``CALL_CLOSED``) the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from activecall.testing.redis_server import free_port

MODULES = Path("/usr/lib/baresip/modules")


def netstring(data: dict[str, Any]) -> bytes:
    payload = json.dumps(data).encode()
    return str(len(payload)).encode() + b":" + payload + b","


def silence_wav(path: Path, seconds: int = 30) -> Path:
    """A mono 16-bit 8 kHz WAV of silence (what aufile plays as the microphone)."""
    subprocess.run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(path), "trim", "0", str(seconds)],
        check=True,
        capture_output=True,
    )
    return path


class Baresip:
    """One baresip process with its own folder, SIP port and control port."""

    def __init__(self, folder: Path, account: str, certificate: Path | None = None) -> None:
        if shutil.which("baresip") is None:
            raise RuntimeError("baresip is not installed; run `make setup`")
        self.folder = folder
        self.sip_port = free_port(socket.SOCK_DGRAM)
        self.ctrl_port = free_port()
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.responses: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        audio = silence_wav(folder / "silence.wav")
        lines = [
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            "net_interface 127.0.0.1",
            f"audio_source aufile,{audio}",
            f"module_path {MODULES}",
            "module g711.so",
            "module aufile.so",
            "module srtp.so",
            "module_app account.so",
            "module_app menu.so",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
        ]
        if certificate is not None:
            lines.append(f"sip_certificate {certificate}")
        (folder / "config").write_text("\n".join(lines) + "\n")
        (folder / "accounts").write_text(account + "\n")

    @property
    def log(self) -> str:
        path = self.folder / "baresip.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def start(self) -> None:
        log = (self.folder / "baresip.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            "baresip",
            "-f",
            str(self.folder),
            "-s",
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            while True:
                try:
                    self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        self._pump = asyncio.create_task(self._read_messages())

    async def _read_messages(self) -> None:
        assert self._reader is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = int((await self._reader.readuntil(b":"))[:-1])
                message = json.loads((await self._reader.readexactly(length + 1))[:-1])
                (self.events if message.get("event") else self.responses).put_nowait(message)

    async def command(self, command: str, params: str = "") -> dict[str, Any]:
        assert self._writer is not None
        self._writer.write(netstring({"command": command, "params": params, "token": command}))
        await self._writer.drain()
        return await asyncio.wait_for(self.responses.get(), 5)

    async def event(self, kind: str, within: float = 10.0) -> dict[str, Any]:
        """The next event of ``kind`` (earlier events of other kinds are dropped)."""
        async with asyncio.timeout(within):
            while True:
                event = await self.events.get()
                if event.get("type") == kind:
                    return event

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.write(netstring({"command": "quit", "token": "quit"}))
                await self._writer.drain()
            self._writer.close()
        if self.process is not None and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), 3)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
