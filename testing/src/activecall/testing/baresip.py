"""A real SIP phone for tests: baresip, headless, driven through its ``ctrl_tcp`` module.

Each instance gets its own config folder: loopback only, TLS with a certificate, SDES SRTP
(``mediaenc``), a WAV file as the microphone (``aufile``) and a dump of what it hears and sends
(``sndfile``: ``dump-<time>-dec.wav`` and ``-enc.wav``, written completely at hang-up). ctrl_tcp
speaks netstrings of JSON: commands ``{"command", "params", "token"}`` out, responses and events in.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activecall.testing.redis_server import free_port


class BaresipError(RuntimeError):
    pass


def make_certificate(folder: Path, common_name: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A self-signed certificate: (cert, key, cert+key in one PEM for baresip)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key, combined = folder / "cert.pem", folder / "key.pem", folder / "combined.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", str(key), "-out", str(cert)]
    command += [
        "-days",
        "2",
        "-nodes",
        "-subj",
        f"/CN={common_name}",
        "-addext",
        f"subjectAltName=IP:{common_name}",
    ]
    subprocess.run(command, check=True, capture_output=True)
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    return cert, key, combined


def free_port_pair() -> int:
    """A port P with P and P + 1 free on loopback (baresip listens for TLS on its SIP port + 1)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise BaresipError("no pair of free ports")


def _netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


@dataclass
class BaresipPhone:
    """One baresip process. ``start()``, then ``dial``/``hangup``/``send_digits``, then ``stop()``.

    ``sip_trace`` writes every SIP message baresip sends and receives to its log (``-s``).
    """

    folder: Path
    audio_source: Path | None = None
    user: str = "phone"
    mediaenc: str = "srtp-mand"
    auto_answer: bool = False
    certificate: Path | None = None
    sip_trace: bool = False
    sip_port: int = field(default_factory=lambda: free_port_pair())
    ctrl_port: int = field(default_factory=free_port)
    events: list[dict[str, Any]] = field(default_factory=list)
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Condition()
        self._token = 0

    @property
    def tls_port(self) -> int:
        """baresip listens for TLS on its SIP port + 1."""
        return self.sip_port + 1

    @property
    def dump_folder(self) -> Path:
        return self.folder / "dumps"

    def write_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dump_folder.mkdir(exist_ok=True)
        lines = [
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            "net_interface 127.0.0.1",
            "net_prefer_ipv6 no",
            f"audio_source aufile,{self.audio_source or self._silence()}",
            "audio_alert aufile,/dev/null",
            "audio_player aufile,/dev/null",
            "ausrc_srate 8000",
            "auplay_srate 8000",
            "ausrc_channels 1",
            "auplay_channels 1",
            f"snd_path {self.dump_folder}",
            "rtp_tos 0",
            "jitter_buffer_delay 1-10",
            "module_path /usr/lib/baresip/modules",
            "module g711.so",
            "module aufile.so",
            "module sndfile.so",
            "module srtp.so",
            "module_app account.so",
            "module_app menu.so",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
        ]
        if self.certificate is not None:
            lines.append(f"sip_certificate {self.certificate}")
        (self.folder / "config").write_text("\n".join(line for line in lines if line) + "\n")
        params = ["regint=0", f"mediaenc={self.mediaenc}" if self.mediaenc else ""]
        if self.auto_answer:
            params.append("answermode=auto")
        account = f"<sip:{self.user}@127.0.0.1>;" + ";".join(p for p in params if p)
        (self.folder / "accounts").write_text(account + "\n")
        (self.folder / "contacts").write_text("")

    def _silence(self, seconds: int = 120) -> Path:
        """A silent microphone (aufile needs a WAV at the codec rate; the call ends when it ends)."""
        path = self.folder / "silence.wav"
        with wave.open(str(path), "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(8000)
            handle.writeframes(bytes(8000 * 2 * seconds))
        return path

    def start(self, timeout: float = 10.0, attempts: int = 3) -> BaresipPhone:
        """Start baresip; a port taken between choosing it and binding it means another try."""
        for attempt in range(attempts):
            try:
                return self._start(timeout)
            except BaresipError:
                if attempt == attempts - 1 or "Address already in use" not in self.log_text():
                    raise
                self.sip_port, self.ctrl_port = free_port_pair(), free_port()
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> BaresipPhone:
        binary = shutil.which("baresip")
        if binary is None:
            raise BaresipError("baresip is not installed; run `make setup`")
        self.write_config()
        log = (self.folder / "baresip.log").open("wb")
        command = [binary, "-f", str(self.folder)] + (["-s"] if self.sip_trace else [])
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise BaresipError(f"baresip did not start; see {self.folder / 'baresip.log'}") from None
                time.sleep(0.1)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name="baresip-ctrl", daemon=True)
        self._reader.start()
        return self

    def _read_loop(self) -> None:
        assert self._sock is not None
        buffer = b""
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while True:
                colon = buffer.find(b":")
                if colon < 0:
                    break
                length = int(buffer[:colon])
                if len(buffer) < colon + 1 + length + 1:
                    break
                payload = buffer[colon + 1 : colon + 1 + length]
                buffer = buffer[colon + 1 + length + 1 :]
                self._dispatch(json.loads(payload))

    def _dispatch(self, message: dict[str, Any]) -> None:
        with self._lock:
            if message.get("response"):
                self.responses[str(message.get("token", ""))] = message
            elif message.get("event"):
                self.events.append(message)
            self._lock.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 10.0) -> dict[str, Any]:
        if self._sock is None:
            raise BaresipError("not started")
        self._token += 1
        token = str(self._token)
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(_netstring(body))
        with self._lock:
            if not self._lock.wait_for(lambda: token in self.responses, timeout):
                raise BaresipError(f"no response to {command!r}")
            return self.responses.pop(token)

    def wait_event(self, kind: str, timeout: float = 15.0, after: int = 0) -> dict[str, Any]:
        """The first event of type ``kind`` (``CALL_ESTABLISHED``, ``CALL_CLOSED``, ...) at index >= after."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.events[after:] if e.get("type") == kind), None)

        with self._lock:
            if not self._lock.wait_for(lambda: found() is not None, timeout):
                kinds = [e.get("type") for e in self.events]
                raise BaresipError(f"no {kind} event within {timeout:.0f} s; events so far: {kinds}")
            event = found()
            assert event is not None
            return event

    def dial(self, uri: str) -> dict[str, Any]:
        return self.command("dial", uri)

    def hangup(self) -> dict[str, Any]:
        return self.command("hangup")

    def send_digits(self, digits: str) -> None:
        for digit in digits:
            self.command("sndcode", digit)
            time.sleep(0.3)

    def dumps(self) -> tuple[Path | None, Path | None]:
        """The newest (heard, sent) WAV dumps."""
        heard = sorted(self.dump_folder.glob("dump-*-dec.wav"))
        sent = sorted(self.dump_folder.glob("dump-*-enc.wav"))
        return (heard[-1] if heard else None, sent[-1] if sent else None)

    def log_text(self) -> str:
        path = self.folder / "baresip.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._sock is not None:
            try:
                self.command("quit", timeout=2)
            except (BaresipError, OSError):
                pass
            self._sock.close()
            self._sock = None
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
