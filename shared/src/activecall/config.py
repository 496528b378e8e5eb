"""The one configuration file of every service: ``active-call.toml``.

The integration guide's keys work exactly as written (``addr``, ``udp_port``, ``tls_port``,
``tls_cert_file``, ``tls_key_file``, ``enable_srtp``, ``external_ip``, ``rtp_start_port``,
``rtp_end_port``, ``http_addr``, ``[[sip_registrations]]``, ``[handler]``); the sections
``[redis]``, ``[acl]``, ``[media]``, ``[asr]``, ``[tts]``, ``[llm]``, ``[api]``, ``[playbooks]``
and ``[metrics]`` hold the rest.

Validation is strict: an unknown key is an error naming the key and the closest known one, a value
of the wrong type names the key and the type expected. Environment variables override the file:
``ACTIVECALL_<KEY>`` for a top-level key and ``ACTIVECALL_<SECTION>__<KEY>`` inside a section
(``ACTIVECALL_REDIS__URL``); ``REDIS_URL`` and ``ANTHROPIC_API_KEY`` are honoured as well.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ENV_PREFIX = "ACTIVECALL_"
ENV_CONFIG_FILE = "ACTIVECALL_CONFIG"
DEFAULT_CONFIG_FILE = "active-call.toml"
SECRET_MASK = "********"


class ConfigError(ValueError):
    """A configuration that cannot be used; ``problems`` lists every error found."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__("\n".join(f"{where}{p}" for p in problems))


def secret() -> Any:
    """Field metadata marking a value that is never printed or logged."""
    return {"secret": True}


@dataclass
class SipRegistration:
    name: str
    username: str
    password: str = field(metadata=secret())
    server: str
    realm: str = ""
    expires: int = 3600
    transport: Literal["udp", "tcp", "tls"] = "udp"
    register: bool = True  # false: credentials for 401/407 challenges only, no REGISTER
    caller: str = ""  # caller ID (From user) of outbound calls through this trunk that name none


@dataclass
class HandlerRule:
    playbook: str
    caller: str = ""
    callee: str = ""


@dataclass
class Handler:
    type: Literal["playbook", "webhook"] = "playbook"
    default: str = "greeting.md"
    rules: list[HandlerRule] = field(default_factory=list)
    url: str = ""
    method: Literal["POST", "PUT", "GET"] = "POST"
    timeout: float = 3.0
    fallback: str = ""
    fallback_reject_code: int = 503


@dataclass
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    # Redis Sentinel: "host:port" of each sentinel and the name of the master they watch. With them,
    # clients ask the sentinels where the master is (again after a failover) and ``url`` gives only
    # the database number and the credentials.
    sentinels: list[str] = field(default_factory=list)
    sentinel_master: str = "activecall"
    prefix: str = "ac:"
    events_maxlen: int = 10_000
    audio_maxlen: int = 3_000
    lease_ttl: float = 2.0
    heartbeat_interval: float = 1.0
    heartbeat_ttl: float = 5.0
    reply_timeout: float = 2.0
    # How long an ended call's keys are kept (seconds): its record, events, transcript, timings and
    # the llm's history; and its audio and say streams, most of its memory, which serve nobody once
    # its sessions stopped.
    ended_retention: int = 7 * 24 * 3600
    ended_audio_retention: int = 3600
    # The reaper (activecall.reaper): every reaper_interval one process ends the calls whose edge and
    # media legs are all gone, once their record is reaper_min_age old; a record no edge ever took
    # (an outbound call the api queued) only once it is reaper_unclaimed_age old.
    reaper_interval: float = 10.0
    reaper_min_age: float = 30.0
    reaper_unclaimed_age: float = 3600.0


@dataclass
class AclSettings:
    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)


@dataclass
class MediaSettings:
    capacity: int = 400
    port_block_size: int = 1000
    rtp_timeout: float = 30.0
    vad: Literal["webrtc", "silero"] = "webrtc"
    vad_aggressiveness: int = 2
    jitter_min_ms: int = 20
    jitter_max_ms: int = 200
    barge_in_guard_ms: int = 100
    barge_in_min_speech_ms: int = 100
    barge_in_pause_max_ms: int = 3000
    speech_stop_ms: int = 200
    recording_path: str = "recordings"
    frames_per_message: int = 1
    # Seconds a leg that reported media.timeout waits for the edge to close or update it before the
    # worker closes it itself (also: after a call ended without its leg.close; docs/architecture.md).
    orphan_grace: float = 5.0
    # Seconds without a heartbeat after which the edge moves a media worker's calls to another worker
    # (a re-INVITE with the new leg). The media workers beat at a third of it, at most every
    # redis.heartbeat_interval, so a death is noticed within failover_after plus one edge poll.
    failover_after: float = 1.5
    # The moved call's re-INVITE offers a new SRTP key (RFC 4568 section 7.1.4). false keeps the first
    # leg's key (sent from the new worker's own SSRC, RFC 4568 section 6.4.2) for peers that cannot
    # re-key a running stream, such as baresip before 3.12.
    failover_new_key: bool = True
    # The media worker's CPU priority (nice, -20 to 19; 0 leaves it): a negative value keeps its 20 ms
    # pacing ahead of the other services on a busy host. Below 0 needs CAP_SYS_NICE (compose grants
    # it); without it the worker logs a warning and runs as it is.
    nice: int = 0


@dataclass
class AsrSettings:
    """``turn_detector`` decides when the caller's turn ends (docs/turns.md): ``smart_turn`` (text cues,
    the Smart Turn model and silence), ``text`` (cues and silence) or ``silence`` (``endpoint_silence_ms``
    of silence alone). The first pause of ``pause_ms`` is judged once; then a finished sentence ends
    after ``complete_silence_ms`` of silence, an unfinished one after ``incomplete_silence_ms`` (at most
    ``max_silence_ms``). ``vad`` classifies the frames: ``webrtc`` or ``silero``. With ``preemptive``
    the turn ends as soon as the pause is judged and the wait is kept at the reply's start instead,
    so the answer is made while the caller's silence runs."""

    engine: Literal["auto", "vosk", "pocketsphinx"] = "auto"
    vosk_model_path: str = ""
    endpoint_silence_ms: int = 500
    capacity: int = 8
    turn_detector: Literal["smart_turn", "text", "silence"] = "smart_turn"
    vad: Literal["webrtc", "silero"] = "webrtc"
    pause_ms: int = 200
    complete_silence_ms: int = 300
    incomplete_silence_ms: int = 1200
    max_silence_ms: int = 2000
    preemptive: bool = True

    def __post_init__(self) -> None:
        times = (self.pause_ms, self.complete_silence_ms, self.incomplete_silence_ms, self.max_silence_ms)
        if not all(type(t) is int for t in (*times, self.endpoint_silence_ms)):
            return  # the type problem is reported by the loader
        problems = []
        if not 0 < self.pause_ms <= self.complete_silence_ms <= self.incomplete_silence_ms:
            problems.append(
                "asr.pause_ms, asr.complete_silence_ms, asr.incomplete_silence_ms: need 0 < pause_ms"
                f" <= complete_silence_ms <= incomplete_silence_ms, got {times[0]}, {times[1]}, {times[2]}"
            )
        if self.max_silence_ms < self.complete_silence_ms:
            problems.append(
                f"asr.max_silence_ms: must be at least complete_silence_ms ({self.complete_silence_ms}),"
                f" got {self.max_silence_ms}"
            )
        if self.endpoint_silence_ms <= 0:
            problems.append(f"asr.endpoint_silence_ms: must be above 0, got {self.endpoint_silence_ms}")
        if problems:
            raise ConfigError(problems)


@dataclass
class TtsSettings:
    engine: Literal["piper", "coqui"] = "piper"
    voice: str = ""
    coqui_model: str = ""
    cache_entries: int = 256
    capacity: int = 20
    # The playbooks' fixed phrases synthesized at start-up and on change, kept out of LRU eviction.
    presynthesize: bool = True
    presynthesize_max: int = 1024


@dataclass
class LlmSettings:
    provider: Literal["auto", "anthropic", "scripted"] = "auto"
    model: str = "claude-haiku-5-5"
    max_tokens: int = 400
    temperature: float = 0.7
    base_url: str = ""
    api_key: str = field(default="", metadata=secret())
    timeout: float = 8.0
    max_retries: int = 3
    capacity: int = 200


@dataclass
class ApiSettings:
    tokens: list[str] = field(default_factory=list, metadata=secret())


@dataclass
class PlaybookSettings:
    dirs: list[str] = field(default_factory=lambda: ["playbooks", "docs/examples"])


@dataclass
class MetricsSettings:
    addr: str = "127.0.0.1"
    sip_edge_port: int = 9101
    media_port: int = 9102
    asr_port: int = 9103
    llm_port: int = 9104
    tts_port: int = 9105
    supervisor_port: int = 9106  # activecall up's own (restarts of its children); -1 for none


@dataclass
class Config:
    addr: str = "0.0.0.0"
    udp_port: int = 5060
    tcp_port: int = 0
    tls_port: int = 0
    tls_cert_file: str = ""
    tls_key_file: str = ""
    enable_srtp: bool = False
    external_ip: str = ""
    rtp_start_port: int = 12000
    rtp_end_port: int = 42000
    http_addr: str = "0.0.0.0:8080"
    sip_registrations: list[SipRegistration] = field(default_factory=list)
    handler: Handler = field(default_factory=Handler)
    redis: RedisSettings = field(default_factory=RedisSettings)
    acl: AclSettings = field(default_factory=AclSettings)
    media: MediaSettings = field(default_factory=MediaSettings)
    asr: AsrSettings = field(default_factory=AsrSettings)
    tts: TtsSettings = field(default_factory=TtsSettings)
    llm: LlmSettings = field(default_factory=LlmSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    playbooks: PlaybookSettings = field(default_factory=PlaybookSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    @property
    def http_host(self) -> str:
        return self.http_addr.rpartition(":")[0] or "0.0.0.0"

    @property
    def http_port(self) -> int:
        return int(self.http_addr.rpartition(":")[2])

    def metrics_port(self, role: str) -> int:
        port: int = getattr(self.metrics, f"{role.replace('-', '_')}_port")
        return port


# ---------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (or defaults when ``path`` is None), apply the environment, validate."""
    env = os.environ if env is None else env
    source = str(path) if path is not None else "<defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"file not found: {path}"], source) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"not valid TOML: {exc}"], source) from None
    problems: list[str] = []
    _apply_environment(data, env, problems)
    config = _build(Config, data, "", problems)
    if not problems:  # the cross-key checks need a well-formed config
        problems.extend(_check_semantics(config))
    if problems:
        raise ConfigError(problems, source)
    assert isinstance(config, Config)
    return config


def config_path_from_env(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    if ENV_CONFIG_FILE in env:
        return env[ENV_CONFIG_FILE]
    return DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).exists() else None


def _check_semantics(config: Config) -> list[str]:
    problems = []
    if not 0 < config.rtp_start_port < config.rtp_end_port <= 65535:
        problems.append("rtp_start_port and rtp_end_port: need 0 < rtp_start_port < rtp_end_port <= 65535")
    if config.tls_port and not (config.tls_cert_file and config.tls_key_file):
        problems.append("tls_port is set: tls_cert_file and tls_key_file are required")
    host, sep, port = config.http_addr.rpartition(":")
    if not sep or not port.isdigit():
        problems.append(f"http_addr: expected HOST:PORT, got {config.http_addr!r}")
    handler = config.handler
    if handler.type == "webhook" and not handler.url:
        problems.append("handler.url: required when handler.type is 'webhook'")
    if handler.type == "playbook" and not handler.default:
        problems.append("handler.default: required when handler.type is 'playbook'")
    if config.media.failover_after <= 0:
        problems.append(f"media.failover_after: must be above 0, got {config.media.failover_after}")
    for address in config.redis.sentinels:
        host, sep, port = address.rpartition(":")
        if not (host and sep and port.isdigit()):
            problems.append(f"redis.sentinels: expected HOST:PORT, got {address!r}")
    for key in ("ended_retention", "ended_audio_retention"):
        if getattr(config.redis, key) <= 0:
            problems.append(f"redis.{key}: must be above 0, got {getattr(config.redis, key)}")
    if config.redis.reaper_interval <= 0:
        problems.append(f"redis.reaper_interval: must be above 0, got {config.redis.reaper_interval}")
    if not -20 <= config.media.nice <= 19:
        problems.append(f"media.nice: must be between -20 and 19, got {config.media.nice}")
    if config.media.orphan_grace < 0:
        problems.append(f"media.orphan_grace: must be 0 or more, got {config.media.orphan_grace}")
    names = [r.name for r in config.sip_registrations]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"sip_registrations: the name {dup!r} is used twice")
    return problems


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is str:
        return "a string"
    if tp is bool:
        return "a boolean"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        if dataclasses.is_dataclass(item):
            return "an array of tables"
        return f"a list of {_describe(item).removeprefix('a ').removeprefix('an ')}s"
    if dataclasses.is_dataclass(tp):
        return "a table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    return str(tp)


def _build(tp: Any, value: Any, key: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            problems.append(f"{key}: expected {_describe(tp)}, got {_typename(value)}")
            return tp() if _all_defaulted(tp) else None
        return _build_dataclass(tp, value, key, problems)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{key}: expected {_describe(tp)}, got {_typename(value)}")
            return []
        return [_build(item_tp, v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{key}: expected {_describe(tp)}, got {value!r}{hint}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{key}: expected {_describe(tp)}, got {_typename(value)}")
            return value
        return float(value)
    if tp is int and isinstance(value, bool):
        problems.append(f"{key}: expected {_describe(tp)}, got a boolean")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        problems.append(f"{key}: expected {_describe(tp)}, got {_typename(value)}")
    return value


def _all_defaulted(cls: type) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )


def _build_dataclass(cls: type, table: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            problems.append(_unknown_key_message(key, name, list(fields)))
            continue
        kwargs[name] = _build(hints[name], value, key, problems)
    for name, f in fields.items():
        if (
            name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            key = f"{prefix}.{name}" if prefix else name
            problems.append(f"{key}: required key is missing")
    try:
        return cls(**kwargs)
    except TypeError:
        return None


def _unknown_key_message(key: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(known)}"
    return f"{key}: unknown key{hint}"


def _typename(value: Any) -> str:
    return {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------- environment


def _apply_environment(data: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> None:
    if "REDIS_URL" in env:
        data.setdefault("redis", {})["url"] = env["REDIS_URL"]
    if "ANTHROPIC_API_KEY" in env:
        data.setdefault("llm", {})["api_key"] = env["ANTHROPIC_API_KEY"]
    hints = _type_hints(Config)
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var == ENV_CONFIG_FILE or var.startswith("ACTIVECALL_LOG"):
            continue
        path = var[len(ENV_PREFIX) :].lower().split("__")
        target_tp = _env_target_type(path, hints)
        if target_tp is None:
            known = [ENV_PREFIX + k.upper() for k in hints]
            problems.append(_unknown_key_message(f"environment {var}", var, known))
            continue
        value = _parse_env_value(env[var], target_tp, var, problems)
        table = data
        for part in path[:-1]:
            table = table.setdefault(part, {})
        table[path[-1]] = value


def _env_target_type(path: list[str], hints: dict[str, Any]) -> Any:
    tp: Any = None
    current = hints
    for i, part in enumerate(path):
        if part not in current:
            return None
        tp = current[part]
        if i < len(path) - 1:
            if not (dataclasses.is_dataclass(tp) and isinstance(tp, type)):
                return None
            current = _type_hints(tp)
    return tp


def _parse_env_value(raw: str, tp: Any, var: str, problems: list[str]) -> Any:
    try:
        if tp is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
        if typing.get_origin(tp) is list:
            stripped = raw.strip()
            if stripped.startswith("["):
                return json.loads(stripped)
            return [p.strip() for p in stripped.split(",") if p.strip()]
        if dataclasses.is_dataclass(tp):
            return json.loads(raw)
    except ValueError:
        problems.append(f"environment {var}: expected {_describe(tp)}, got {raw!r}")
        return raw
    return raw


# ---------------------------------------------------------------------------- printing


def masked(config: Config) -> dict[str, Any]:
    """The effective config as plain data, secrets replaced by a mask."""

    def walk(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            out: dict[str, Any] = {}
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                if f.metadata.get("secret") and value:
                    value = [SECRET_MASK] * len(value) if isinstance(value, list) else SECRET_MASK
                    out[f.name] = value
                else:
                    out[f.name] = walk(value)
            return out
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    result: dict[str, Any] = walk(config)
    return result


def to_toml(data: Mapping[str, Any]) -> str:
    """Render plain data as TOML (scalars first, then tables, then arrays of tables)."""
    lines: list[str] = []
    _emit_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _emit_table(data: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not _is_table_array(v)}
    for k, v in scalars.items():
        lines.append(f"{k} = {_toml_value(v)}")
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append("")
            lines.append(f"[{'.'.join([*path, k])}]")
            _emit_table(v, [*path, k], lines)
    for k, v in data.items():
        if _is_table_array(v):
            for item in v:
                lines.append("")
                lines.append(f"[[{'.'.join([*path, k])}]]")
                _emit_table(item, [*path, k], lines)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))
