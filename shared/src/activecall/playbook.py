"""Playbooks: what the agent says and how a call flows, one Markdown file per use.

A playbook is Markdown with YAML front matter between two ``---`` lines. The front matter holds the
settings (greeting, LLM, ASR, TTS, barge-in, DTMF menu, variables, silence follow-ups, scripted rules);
the body is the system prompt, split into scenes by ``# Scene: name`` headings. Text before the first
scene heading is a preamble shared by every scene; the first scene is where a call starts. A scene may
carry its own scripted rules in a fenced ```` ```yaml ```` block whose top-level key is ``rules:``.

Templates (greeting, prompts, ``say`` lines, follow-ups) are Jinja2 in a sandbox. SIP headers are
variables by their own names, so ``{{ X-Twilio-CallSid }}`` works as written even though Jinja would read
it as a subtraction: a ``{{ ... }}`` holding nothing but a hyphenated name is rewritten into a
case-insensitive header lookup. An unknown variable renders empty with one logged warning.

Validation is strict and every problem names the file and line: an unknown key names the closest known
one, a value of the wrong type names the type expected, a template syntax error points at its line.
The user-facing description of the format is docs/playbooks.md.
"""

from __future__ import annotations

import argparse
import contextvars
import dataclasses
import datetime
import difflib
import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal, cast

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

log = logging.getLogger("activecall.playbook")

FRONT_MATTER_FENCE: Final = "---"
PLAYBOOK_SUFFIX: Final = ".md"
DEFAULT_SCENE: Final = "main"
# RFC 4733 section 3.2: events 0-15 are the sixteen DTMF keys.
DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")
LLM_PROVIDERS: Final = ("anthropic", "scripted", "auto")
ASR_ENGINES: Final = ("auto", "vosk", "pocketsphinx")
TTS_ENGINES: Final = ("piper", "coqui")
TURN_DETECTORS: Final = ("smart_turn", "text", "silence")
VAD_ENGINES: Final = ("webrtc", "silero")
DTMF_ACTIONS: Final = ("goto", "transfer", "hangup", "say")
RULE_ACTIONS: Final = ("hangup", "transfer", "goto")
# Names every call defines; a playbook variable may not shadow them.
CALL_VARIABLES: Final = ("caller", "callee", "call_id", "direction", "sip")

LlmProvider = Literal["anthropic", "scripted", "auto"]
DtmfActionName = Literal["goto", "transfer", "hangup", "say"]
RuleAction = Literal["hangup", "transfer", "goto"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SCENE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_SCENE_HEADING = re.compile(r"#[ \t]+Scene:[ \t]*(?P<name>.*?)[ \t]*#*[ \t]*\Z", re.IGNORECASE)
_FENCE = re.compile(r"(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*\Z")


# ---------------------------------------------------------------------------- errors


class PlaybookError(ValueError):
    """A playbook that cannot be used. ``str()`` is ``file:line: message``.

    When a file has several problems the first is raised and ``errors`` lists all of them.
    """

    def __init__(
        self, filename: str, line: int | None, message: str, errors: Sequence[PlaybookError] = ()
    ) -> None:
        self.filename = filename
        self.line = line
        self.message = message
        self.errors: tuple[PlaybookError, ...] = tuple(errors) or (self,)
        super().__init__(filename, line, message)

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.filename}: {self.message}"
        return f"{self.filename}:{self.line}: {self.message}"


class PlaybookNotFoundError(PlaybookError):
    """No playbook of that name in any playbook directory."""


# ---------------------------------------------------------------------------- model


@dataclass(frozen=True)
class LlmSettings:
    """Model settings; ``None`` leaves the value to the ``[llm]`` section of the service config."""

    provider: LlmProvider | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class AsrSettings:
    engine: str | None = None
    language: str | None = None
    hints: tuple[str, ...] = ()


@dataclass(frozen=True)
class TtsSettings:
    engine: str | None = None
    voice: str | None = None
    speed: float = 1.0


@dataclass(frozen=True)
class Interruption:
    """Barge-in: ``None`` leaves guard and minimum speech to the ``[media]`` config.

    ``backchannels`` are the words that pause the agent without stopping it ("uh-huh", "okay"; None:
    :data:`DEFAULT_BACKCHANNELS`); ``uninterruptible`` names the prompts that play out whatever the
    caller says (of :data:`PROMPT_KINDS`)."""

    enabled: bool = True
    guard_ms: int | None = None
    min_speech_ms: int | None = None
    backchannels: tuple[str, ...] | None = None
    uninterruptible: tuple[str, ...] = ()


# What a caller says to show they are listening, not to take the turn.
# ("yes" is not one: over the end of a question it is the answer.)
DEFAULT_BACKCHANNELS: Final = (
    "uh-huh", "mm-hmm", "mhm", "mm", "hmm", "uh", "um", "ah", "oh", "okay", "ok", "yeah", "yep",
    "right", "alright", "all right", "i see", "got it",
)  # fmt: skip
# The agent's prompts by kind: the greeting, answers to speech or keys, follow-ups and the last line.
PROMPT_KINDS: Final = ("greeting", "answer", "dtmf", "follow_up", "final")


@dataclass(frozen=True)
class TurnSettings:
    """End of the caller's turn (docs/turns.md): ``None`` leaves a key to the ``[asr]`` config."""

    turn_detector: str | None = None
    vad: str | None = None
    pause_ms: int | None = None
    complete_silence_ms: int | None = None
    incomplete_silence_ms: int | None = None
    max_silence_ms: int | None = None
    endpoint_silence_ms: int | None = None
    preemptive: bool | None = None


@dataclass(frozen=True)
class FollowUp:
    """After ``timeout_s`` of caller silence say ``text``; after ``max_count`` of them say ``final_text``
    and hang up."""

    timeout_s: float = 10.0
    max_count: int = 2
    text: str = "Are you still there?"
    final_text: str = "I can't hear anyone, so I'll hang up now. Goodbye."


@dataclass(frozen=True)
class DtmfAction:
    """What a key press does. ``text`` is said first; it is required for ``say``."""

    digit: str
    action: DtmfActionName
    scene: str | None = None
    target: str | None = None
    text: str | None = None
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class ScriptRule:
    """One rule of the scripted provider: a trigger, a line to say, an optional action."""

    say: str
    pattern: re.Pattern[str] | None = None
    keywords: tuple[str, ...] = ()
    dtmf: str | None = None
    action: RuleAction | None = None
    target: str | None = None
    scene: str | None = None
    line: int = field(default=0, compare=False)

    def matches_text(self, text: str) -> bool:
        """True when this rule's regex or keywords match an utterance (case-insensitive)."""
        return self.pattern is not None and self.pattern.search(text) is not None

    def matches_dtmf(self, digit: str) -> bool:
        return self.dtmf is not None and self.dtmf == digit.upper()


@dataclass(frozen=True)
class Scene:
    """A part of the conversation with its own prompt text and rules."""

    name: str
    text: str
    rules: tuple[ScriptRule, ...] = ()
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Playbook:
    filename: str
    scenes: tuple[Scene, ...]
    preamble: str = ""
    greeting: str | None = None
    llm: LlmSettings = field(default_factory=LlmSettings)
    asr: AsrSettings = field(default_factory=AsrSettings)
    tts: TtsSettings = field(default_factory=TtsSettings)
    interruption: Interruption = field(default_factory=Interruption)
    turn: TurnSettings = field(default_factory=TurnSettings)
    dtmf: Mapping[str, DtmfAction] = field(default_factory=dict)
    variables: Mapping[str, Any] = field(default_factory=dict)
    follow_up: FollowUp | None = None
    max_duration_s: float | None = None
    rules: tuple[ScriptRule, ...] = ()
    fallback: str | None = None
    transfer_target: str | None = None

    @property
    def start_scene(self) -> Scene:
        return self.scenes[0]

    @property
    def scene_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.scenes)

    def scene(self, name: str | None = None) -> Scene:
        """The scene of that name (the start scene for ``None``); KeyError when there is none."""
        if name is None:
            return self.start_scene
        for scene in self.scenes:
            if scene.name == name:
                return scene
        raise KeyError(f"{self.filename}: no scene {name!r}; scenes: {', '.join(self.scene_names)}")

    def rules_for(self, scene: str | None = None) -> tuple[ScriptRule, ...]:
        """Rules in the order the scripted provider tries them: the scene's, then the playbook's."""
        return self.scene(scene).rules + self.rules

    def match_text(self, text: str, scene: str | None = None) -> ScriptRule | None:
        """The first rule of the scripted provider matching what the caller said, if any."""
        return next((r for r in self.rules_for(scene) if r.matches_text(text)), None)

    def on_dtmf(
        self, digit: str, scene: str | None = None, *, scripted: bool
    ) -> DtmfAction | ScriptRule | None:
        """What a key press does: the scene's ``dtmf`` rules (scripted provider), then the ``dtmf``
        map (any provider), then the playbook's ``dtmf`` rules (scripted provider). ``None`` means
        the key is the model's to interpret."""
        if scripted:
            rule = next((r for r in self.scene(scene).rules if r.matches_dtmf(digit)), None)
            if rule is not None:
                return rule
        action = self.dtmf.get(digit.upper())
        if action is not None or not scripted:
            return action
        return next((r for r in self.rules if r.matches_dtmf(digit)), None)

    def merged_variables(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        """The playbook's defaults overridden by the call's variables."""
        return {**self.variables, **variables}

    def render(self, template: str, variables: Mapping[str, Any], *, name: str = "") -> str:
        """Render one of this playbook's templates with the call's variables over the defaults."""
        return render(template, self.merged_variables(variables), name=name or self.filename)

    def render_greeting(self, variables: Mapping[str, Any]) -> str:
        """The greeting for this call, or "" when the playbook has none."""
        if self.greeting is None:
            return ""
        return self.render(self.greeting, variables, name=f"{self.filename} greeting")

    def system_prompt(self, scene: str | None, variables: Mapping[str, Any]) -> str:
        """The preamble and the scene's text, rendered: the system prompt while in that scene."""
        current = self.scene(scene)
        parts = [
            self.render(self.preamble, variables, name=f"{self.filename} preamble"),
            self.render(current.text, variables, name=f"{self.filename} scene {current.name}"),
        ]
        return "\n\n".join(p.strip() for p in parts if p.strip())

    def summary(self) -> str:
        scenes = ", ".join(self.scene_names)
        rules = len(self.rules) + sum(len(s.rules) for s in self.scenes)
        parts = [
            f"{self.filename}: {len(self.scenes)} scene{_plural(len(self.scenes))} ({scenes})",
            f"llm {self.llm.provider or 'from config'}",
            f"greeting {'yes' if self.greeting else 'no'}",
            f"{rules} rule{_plural(rules)}",
        ]
        if self.dtmf:
            parts.append("dtmf " + " ".join(sorted(self.dtmf)))
        if self.variables:
            parts.append(f"{len(self.variables)} variable{_plural(len(self.variables))}")
        return ", ".join(parts)


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


# ---------------------------------------------------------------------------- templates


class HeaderMap(Mapping[str, Any]):
    """SIP headers by name, looked up without regard to case (RFC 3261 section 7.3.1)."""

    def __init__(self, headers: Mapping[str, Any] | None = None) -> None:
        self._items: dict[str, tuple[str, Any]] = {}
        for name, value in (headers or {}).items():
            self._items[name.lower()] = (name, value)

    def __getitem__(self, name: str) -> Any:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"HeaderMap({dict(self.items())!r})"


# Names of unknown variables met during the render running in this context.
_UNKNOWN_NAMES: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "activecall_playbook_unknown_names", default=None
)


class _EmptyUndefined(jinja2.ChainableUndefined):
    """Renders as "" and remembers its name, so the render can log one warning."""

    __slots__ = ()

    def __str__(self) -> str:
        names = _UNKNOWN_NAMES.get()
        if names is not None:
            names.add(str(self._undefined_name or "?"))
        return ""


class _TemplateEnvironment(ImmutableSandboxedEnvironment):
    def getitem(self, obj: Any, argument: Any) -> Any:
        # A missing header must not fall back to an attribute of the mapping (sip["items"]).
        if isinstance(obj, HeaderMap):
            if isinstance(argument, str) and argument in obj:
                return obj[argument]
            return self.undefined(obj=obj, name=str(argument))
        return super().getitem(obj, argument)


_ENV: Final = _TemplateEnvironment(
    undefined=_EmptyUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True
)

# `{{ X-Twilio-CallSid }}`, optionally with whitespace control and filters: a bare hyphenated name.
_HEADER_EXPRESSION = re.compile(
    r"\{\{(?P<open>-?)[ \t]*(?P<name>[A-Za-z][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)+)[ \t]*"
    r"(?P<filters>\|[^{}\n]*?)?(?P<close>-?)\}\}"
)
_RAW_BLOCK = re.compile(r"(\{%-?\s*raw\s*-?%\}.*?\{%-?\s*endraw\s*-?%\})", re.DOTALL)


def rewrite_header_names(source: str) -> str:
    """Turn ``{{ X-Twilio-CallSid }}`` into ``{{ sip["X-Twilio-CallSid"] }}`` outside raw blocks.

    The rewrite keeps every newline, so Jinja's line numbers still match the source.
    """

    def replace(m: re.Match[str]) -> str:
        filters = (m["filters"] or "").rstrip()
        tail = f" {filters}" if filters else ""
        return f'{{{{{m["open"]} sip["{m["name"]}"]{tail} {m["close"]}}}}}'

    parts = _RAW_BLOCK.split(source)
    return "".join(p if i % 2 else _HEADER_EXPRESSION.sub(replace, p) for i, p in enumerate(parts))


@functools.lru_cache(maxsize=1024)
def _compile(source: str) -> jinja2.Template:
    return _ENV.from_string(rewrite_header_names(source))


def call_variables(
    *,
    caller: str = "",
    callee: str = "",
    call_id: str = "",
    direction: str = "",
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The template variables of a call: every SIP header by its name, the call's own variables
    (``extra``, from the webhook or ``POST /call``), then the call's fields and ``sip``."""
    headers = headers or {}
    variables: dict[str, Any] = dict(headers)
    variables.update(extra or {})
    variables.update(caller=caller, callee=callee, call_id=call_id, direction=direction)
    variables["sip"] = HeaderMap(headers)
    return variables


def _template_context(variables: Mapping[str, Any]) -> dict[str, Any]:
    context = dict(variables)
    sip = variables.get("sip")
    if isinstance(sip, Mapping):
        context["sip"] = sip if isinstance(sip, HeaderMap) else HeaderMap(sip)
    else:
        context["sip"] = HeaderMap({k: v for k, v in variables.items() if "-" in k})
    return context


def render(template: str, variables: Mapping[str, Any], *, name: str = "<template>") -> str:
    """Render a playbook template in the sandbox.

    Unknown variables render as "" and log one warning naming them; a failure at render time (a
    template is user content) logs a warning and yields "" rather than ending the call. A syntax error
    raises PlaybookError, but playbooks are checked for those when they are loaded.
    """
    try:
        compiled = _compile(template)
    except jinja2.TemplateSyntaxError as exc:
        raise PlaybookError(name, exc.lineno, f"template syntax error: {exc.message}") from None
    unknown: set[str] = set()
    token = _UNKNOWN_NAMES.set(unknown)
    try:
        text = compiled.render(_template_context(variables))
    except Exception as exc:  # user content must never take a call down
        log.warning("%s: template failed to render (%s); using empty text", name, exc)
        return ""
    finally:
        _UNKNOWN_NAMES.reset(token)
    if unknown:
        log.warning(
            "%s: unknown variable%s %s rendered empty",
            name,
            _plural(len(unknown)),
            ", ".join(sorted(unknown)),
        )
    return text


# ---------------------------------------------------------------------------- YAML walking

_Converter = Callable[["_Source", yaml.Node, str], Any]


class _Unsupported:
    def __repr__(self) -> str:
        return "<unsupported>"


_UNSUPPORTED: Final = _Unsupported()


class _Source:
    """One YAML document inside a playbook file: turns node marks into file lines, collects errors."""

    def __init__(self, filename: str, first_line: int, errors: list[PlaybookError]) -> None:
        self.filename = filename
        self.first_line = first_line
        self.errors = errors
        self._constructor = yaml.SafeLoader("")
        self._refused: set[int] = set()

    def line(self, node: yaml.Node) -> int:
        return self.first_line + node.start_mark.line

    def fail(self, node: yaml.Node | int, message: str) -> None:
        line = node if isinstance(node, int) else self.line(node)
        self.errors.append(PlaybookError(self.filename, line, message))

    def value(self, node: yaml.Node) -> Any:
        """The Python value of a node; _UNSUPPORTED (reported once) for tags safe YAML refuses."""
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            if id(node) not in self._refused:
                self._refused.add(id(node))
                self.fail(node, f"unsupported YAML value: {exc.problem}")
            return _UNSUPPORTED

    def describe(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        value = self.value(node)
        kind = _type_name(value)
        shown = isinstance(value, str | int | float) and not isinstance(value, bool)
        return f"{kind} ({value!r})" if shown else kind

    def compose(self, text: str) -> yaml.Node | None:
        loader = yaml.SafeLoader(text)
        try:
            return loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = self.first_line + mark.line if mark is not None else self.first_line
            self.fail(line, f"not valid YAML: {exc.problem or exc.context}")
            return None
        finally:
            loader.dispose()


def _type_name(value: object) -> str:
    if value is _UNSUPPORTED:
        return "an unsupported value"
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, datetime.date):
        return "a date"
    return type(value).__name__


def _items(src: _Source, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node, yaml.Node]] | None:
    """The (key, key node, value node) triples of a mapping; duplicate keys are errors."""
    if not isinstance(node, yaml.MappingNode):
        src.fail(node, f"{path or 'front matter'}: expected a mapping, got {src.describe(node)}")
        return None
    seen: dict[str, int] = {}
    out: list[tuple[str, yaml.Node, yaml.Node]] = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            src.fail(key_node, f"{path or 'front matter'}: keys must be plain words")
            continue
        key = str(key_node.value)
        if key in seen:
            src.fail(key_node, f"{_join(path, key)}: duplicate key (first on line {seen[key]})")
            continue
        seen[key] = src.line(key_node)
        out.append((key, key_node, value_node))
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown_key(path: str, key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return f"{_join(path, key)}: unknown key {key!r}; {hint}"


def _fields(
    src: _Source,
    node: yaml.Node,
    path: str,
    spec: Mapping[str, _Converter],
    key_nodes: dict[str, yaml.Node] | None = None,
) -> dict[str, Any]:
    """Convert a mapping by a key -> converter table; unknown keys are errors. ``key_nodes``, when
    given, receives the node of each key, for errors that concern a key found valid on its own."""
    values: dict[str, Any] = {}
    for key, key_node, value_node in _items(src, node, path) or []:
        convert = spec.get(key)
        if convert is None:
            src.fail(key_node, _unknown_key(path, key, list(spec)))
            continue
        values[key] = convert(src, value_node, _join(path, key))
        if key_nodes is not None:
            key_nodes[key] = key_node
    return values


def _scalar(expected: str, accept: Callable[[Any], bool], hint: str = "") -> _Converter:
    def convert(src: _Source, node: yaml.Node, path: str) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value = src.value(node)
            if value is _UNSUPPORTED:
                return None
            if accept(value):
                return value
        src.fail(node, f"{path}: expected {expected}, got {src.describe(node)}{hint}")
        return None

    return convert


_string = _scalar("a string", lambda v: isinstance(v, str), " (quote it to keep it as text)")
_boolean = _scalar("a boolean (true or false)", lambda v: isinstance(v, bool))


def _integer(minimum: int) -> _Converter:
    base = _scalar("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))

    def convert(src: _Source, node: yaml.Node, path: str) -> int | None:
        value = base(src, node, path)
        if value is not None and value < minimum:
            src.fail(node, f"{path}: must be at least {minimum}, got {value}")
        return cast(int | None, value)

    return convert


def _number(minimum: float, maximum: float | None = None, *, above: bool = False) -> _Converter:
    base = _scalar("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool))

    def convert(src: _Source, node: yaml.Node, path: str) -> float | None:
        value = base(src, node, path)
        if value is None:
            return None
        if (above and value <= minimum) or value < minimum or (maximum is not None and value > maximum):
            low = f"greater than {minimum:g}" if above else f"at least {minimum:g}"
            bounds = f"{low} and at most {maximum:g}" if maximum is not None else low
            src.fail(node, f"{path}: must be {bounds}, got {value}")
        return float(value)

    return convert


def _choice(choices: Sequence[str]) -> _Converter:
    base = _string

    def convert(src: _Source, node: yaml.Node, path: str) -> str | None:
        value = base(src, node, path)
        if value is not None and value not in choices:
            close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            src.fail(node, f"{path}: expected one of {', '.join(choices)}, got {value!r}{hint}")
            return None
        return cast(str | None, value)

    return convert


def _template(src: _Source, node: yaml.Node, path: str) -> str | None:
    value = _string(src, node, path)
    if value is None:
        return None
    # A block scalar's text starts on the line after its `|` or `>` indicator.
    block = isinstance(node, yaml.ScalarNode) and node.style in ("|", ">")
    _check_template(src.filename, value, src.line(node) + (1 if block else 0), src.errors, path)
    return cast(str, value)


def _check_template(
    filename: str, source: str, first_line: int, errors: list[PlaybookError], what: str
) -> None:
    try:
        _compile(source)
    except jinja2.TemplateSyntaxError as exc:
        line = first_line + (exc.lineno or 1) - 1
        errors.append(PlaybookError(filename, line, f"{what}: template syntax error: {exc.message}"))


def _string_list(src: _Source, node: yaml.Node, path: str) -> tuple[str, ...] | None:
    if not isinstance(node, yaml.SequenceNode):
        src.fail(node, f"{path}: expected a list of strings, got {src.describe(node)}")
        return None
    items = [_string(src, item, f"{path}[{i}]") for i, item in enumerate(node.value)]
    if any(item is None for item in items):
        return None
    for i, item in enumerate(items):
        if not item.strip():
            src.fail(node.value[i], f"{path}[{i}]: must not be empty")
    return tuple(items)


def _digit(src: _Source, node: yaml.Node, path: str) -> str | None:
    # YAML reads an unquoted 1 as an integer; a key is a key, so accept both spellings.
    value = src.value(node) if isinstance(node, yaml.ScalarNode) else None
    digit = str(value).upper() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if digit not in DTMF_DIGITS:
        src.fail(
            node, f"{path}: expected a DTMF key (0-9, *, #, A-D; quote * and #), got {src.describe(node)}"
        )
        return None
    return digit


def _regex(src: _Source, node: yaml.Node, path: str) -> re.Pattern[str] | None:
    value = _string(src, node, path)
    if value is None:
        return None
    try:
        return re.compile(value, re.IGNORECASE)
    except re.error as exc:
        src.fail(node, f"{path}: invalid regular expression: {exc}")
        return None


def _keywords(src: _Source, node: yaml.Node, path: str) -> tuple[str, ...] | None:
    words = _string_list(src, node, path)
    if words is not None and not words:
        src.fail(node, f"{path}: needs at least one keyword")
    return words


def _keyword_pattern(words: Sequence[str]) -> re.Pattern[str]:
    # Whole words, any spacing between the words of a phrase; lookarounds instead of \b so that
    # keywords ending in punctuation still match.
    alternatives = (r"\s+".join(re.escape(part) for part in w.split()) for w in words)
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


# ---------------------------------------------------------------------------- front matter

_LLM_SPEC: Final[Mapping[str, _Converter]] = {
    "provider": _choice(LLM_PROVIDERS),
    "model": _string,
    "max_tokens": _integer(1),
    "temperature": _number(0.0, 1.0),
}
_ASR_SPEC: Final[Mapping[str, _Converter]] = {
    "engine": _choice(ASR_ENGINES),
    "language": _string,
    "hints": _string_list,
}
_TTS_SPEC: Final[Mapping[str, _Converter]] = {
    "engine": _choice(TTS_ENGINES),
    "voice": _string,
    "speed": _number(0.0, 4.0, above=True),
}


def _prompt_kinds(src: _Source, node: yaml.Node, path: str) -> tuple[str, ...] | None:
    kinds = _string_list(src, node, path)
    for i, kind in enumerate(kinds or ()):
        if kind not in PROMPT_KINDS:
            assert isinstance(node, yaml.SequenceNode)
            src.fail(node.value[i], f"{path}[{i}]: {kind!r} is not one of {', '.join(PROMPT_KINDS)}")
    return kinds


_INTERRUPTION_SPEC: Final[Mapping[str, _Converter]] = {
    "enabled": _boolean,
    "guard_ms": _integer(0),
    "min_speech_ms": _integer(0),
    "backchannels": _string_list,
    "uninterruptible": _prompt_kinds,
}
_TURN_SPEC: Final[Mapping[str, _Converter]] = {
    "turn_detector": _choice(TURN_DETECTORS),
    "vad": _choice(VAD_ENGINES),
    "pause_ms": _integer(1),
    "complete_silence_ms": _integer(1),
    "incomplete_silence_ms": _integer(1),
    "max_silence_ms": _integer(1),
    "endpoint_silence_ms": _integer(1),
    "preemptive": _boolean,
}
_FOLLOW_UP_SPEC: Final[Mapping[str, _Converter]] = {
    "timeout_s": _number(0.0, above=True),
    "max_count": _integer(0),
    "text": _template,
    "final_text": _template,
}
_DTMF_ACTION_SPEC: Final[Mapping[str, _Converter]] = {
    "action": _choice(DTMF_ACTIONS),
    "scene": _string,
    "target": _string,
    "text": _template,
}
_RULE_SPEC: Final[Mapping[str, _Converter]] = {
    "match": _regex,
    "keywords": _keywords,
    "dtmf": _digit,
    "say": _template,
    "action": _choice(RULE_ACTIONS),
    "target": _string,
    "scene": _string,
}
_TRIGGERS: Final = ("match", "keywords", "dtmf")
# Which of scene/target each action uses; the others are errors.
_ACTION_USES: Final[Mapping[str | None, tuple[str, ...]]] = {
    None: (),
    "say": (),
    "hangup": (),
    "goto": ("scene",),
    "transfer": ("target",),
}


def _section(cls: type[Any], spec: Mapping[str, _Converter]) -> _Converter:
    def convert(src: _Source, node: yaml.Node, path: str) -> Any:
        return cls(**_fields(src, node, path, spec))

    return convert


def _check_action(
    src: _Source, node: yaml.Node, path: str, values: Mapping[str, Any], key_nodes: Mapping[str, yaml.Node]
) -> None:
    action = values.get("action")
    if "action" in values and action is None:  # already reported by the converter
        return
    uses = _ACTION_USES[action]
    for name in ("scene", "target"):
        if name in values and name not in uses:
            owner = "goto" if name == "scene" else "transfer"
            src.fail(key_nodes[name], f"{path}.{name}: only used with action {owner}")
    if action == "goto" and "scene" not in values:
        src.fail(node, f"{path}: action goto needs a scene")


def _dtmf_actions(src: _Source, node: yaml.Node, path: str) -> dict[str, DtmfAction]:
    actions: dict[str, DtmfAction] = {}
    for key, key_node, value_node in _items(src, node, path) or []:
        digit = _digit(src, key_node, f"{path} key")
        where = f"{path}.{key}"
        key_nodes: dict[str, yaml.Node] = {}
        values = _fields(src, value_node, where, _DTMF_ACTION_SPEC, key_nodes)
        if "action" not in values:
            src.fail(value_node, f"{where}: 'action' is required ({', '.join(DTMF_ACTIONS)})")
            continue
        _check_action(src, value_node, where, values, key_nodes)
        if values["action"] == "say" and "text" not in values:
            src.fail(value_node, f"{where}: action say needs a text")
        if digit is not None and values["action"] is not None:
            actions[digit] = DtmfAction(digit=digit, line=src.line(key_node), **values)
    return actions


def _rules(src: _Source, node: yaml.Node, path: str) -> tuple[ScriptRule, ...]:
    if not isinstance(node, yaml.SequenceNode):
        src.fail(node, f"{path}: expected a list of rules, got {src.describe(node)}")
        return ()
    rules = (_rule(src, item, f"{path}[{i}]") for i, item in enumerate(node.value))
    return tuple(r for r in rules if r is not None)


def _rule(src: _Source, node: yaml.Node, path: str) -> ScriptRule | None:
    if not isinstance(node, yaml.MappingNode):
        src.fail(node, f"{path}: expected a mapping (a rule), got {src.describe(node)}")
        return None
    key_nodes: dict[str, yaml.Node] = {}
    values = _fields(src, node, path, _RULE_SPEC, key_nodes)
    triggers = [t for t in _TRIGGERS if t in values]
    if len(triggers) != 1:
        found = f" (found {', '.join(triggers)})" if triggers else ""
        src.fail(node, f"{path}: needs exactly one of match, keywords, dtmf{found}")
    if "say" not in values:
        src.fail(node, f"{path}: 'say' is required")
    _check_action(src, node, path, values, key_nodes)
    keywords = values.pop("keywords", None) or ()
    pattern = values.pop("match", None) or (_keyword_pattern(keywords) if keywords else None)
    return ScriptRule(
        say=values.pop("say", None) or "",
        pattern=pattern,
        keywords=keywords,
        line=src.line(node),
        **values,
    )


def _variables(src: _Source, node: yaml.Node, path: str) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    for key, key_node, value_node in _items(src, node, path) or []:
        if not _IDENTIFIER.match(key):
            src.fail(key_node, f"{path}.{key}: a variable name is letters, digits and _ (not {key!r})")
        elif key in CALL_VARIABLES:
            src.fail(key_node, f"{path}.{key}: {key!r} is set by every call and cannot be redefined")
        else:
            variables[key] = src.value(value_node)
    return variables


_TOP_SPEC: Final[Mapping[str, _Converter]] = {
    "greeting": _template,
    "llm": _section(LlmSettings, _LLM_SPEC),
    "asr": _section(AsrSettings, _ASR_SPEC),
    "tts": _section(TtsSettings, _TTS_SPEC),
    "interruption": _section(Interruption, _INTERRUPTION_SPEC),
    "turn": _section(TurnSettings, _TURN_SPEC),
    "dtmf": _dtmf_actions,
    "variables": _variables,
    "follow_up": _section(FollowUp, _FOLLOW_UP_SPEC),
    "max_duration_s": _number(0.0, above=True),
    "rules": _rules,
    "fallback": _template,
    "transfer_target": _string,
}


def _split_front_matter(lines: list[str], filename: str) -> tuple[list[str], int, int]:
    """(front matter lines, file line of the first of them, file line where the body starts)."""
    if not lines or lines[0].rstrip() != FRONT_MATTER_FENCE:
        return [], 0, 1
    for i in range(1, len(lines)):
        if lines[i].rstrip() in (FRONT_MATTER_FENCE, "..."):
            return lines[1:i], 2, i + 2
    raise PlaybookError(filename, 1, "front matter opened with '---' is never closed by a '---' line")


# ---------------------------------------------------------------------------- body


@dataclass
class _Part:
    """The preamble or one scene while the body is read."""

    name: str | None
    line: int
    text_start: int
    lines: list[str] = field(default_factory=list)
    # The same lines with rules blocks blanked, so template line numbers stay true.
    checked: list[str] = field(default_factory=list)
    rules: tuple[ScriptRule, ...] = ()
    rules_line: int = 0

    def add(self, line: str, *, in_rules: bool = False) -> None:
        self.checked.append("" if in_rules else line)
        if not in_rules:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines).strip("\n")


def _read_body(lines: list[str], first_line: int, filename: str, errors: list[PlaybookError]) -> list[_Part]:
    parts = [_Part(None, first_line, first_line)]
    i = 0
    while i < len(lines):
        line, lineno = lines[i], first_line + i
        fence = _FENCE.match(line)
        if fence:
            i = _read_fence(lines, i, first_line, fence, parts[-1], filename, errors)
            continue
        heading = _SCENE_HEADING.match(line)
        if heading:
            parts.append(_Part(heading["name"], lineno, lineno + 1))
        else:
            parts[-1].add(line)
        i += 1
    return parts


def _read_fence(
    lines: list[str],
    start: int,
    first_line: int,
    fence: re.Match[str],
    part: _Part,
    filename: str,
    errors: list[PlaybookError],
) -> int:
    """Consume a fenced block (so headings inside it are text); returns the index after it."""
    marker = fence["fence"]
    end = start + 1
    while end < len(lines):
        close = _FENCE.match(lines[end])
        if (
            close
            and close["fence"][0] == marker[0]
            and len(close["fence"]) >= len(marker)
            and not close["info"]
        ):
            break
        end += 1
    content = lines[start + 1 : end]
    is_rules = fence["info"].split(" ")[0].lower() == "yaml" and _first_yaml_key(content) == "rules"
    if not is_rules:
        for line in lines[start : end + 1]:
            part.add(line)
        return end + 1
    if end >= len(lines):
        errors.append(PlaybookError(filename, first_line + start, "rules block is never closed"))
    for line in lines[start : end + 1]:
        part.add(line, in_rules=True)
    _read_scene_rules(content, first_line + start + 1, part, filename, errors)
    return end + 1


def _first_yaml_key(content: list[str]) -> str:
    for line in content:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped.split(":", 1)[0].strip() if ":" in stripped else ""
    return ""


def _read_scene_rules(
    content: list[str], first_line: int, part: _Part, filename: str, errors: list[PlaybookError]
) -> None:
    block_line = first_line - 1
    if part.rules_line:
        message = f"this part already has a rules block (line {part.rules_line})"
        errors.append(PlaybookError(filename, block_line, message))
        return
    part.rules_line = block_line
    src = _Source(filename, first_line, errors)
    node = src.compose("\n".join(content))
    if node is not None:
        values = _fields(src, node, f"scene {part.name or DEFAULT_SCENE}", {"rules": _rules})
        part.rules = values.get("rules") or ()


def _scenes(parts: list[_Part], filename: str, errors: list[PlaybookError]) -> tuple[str, list[Scene]]:
    preamble, declared = parts[0], parts[1:]
    if declared and preamble.rules_line:
        message = "a rules block belongs in a scene; put shared rules in the front matter"
        errors.append(PlaybookError(filename, preamble.rules_line, message))
    if not declared:
        # A body without scene headings is one scene.
        preamble.name = DEFAULT_SCENE
        declared = [preamble]
        preamble = _Part(None, preamble.line, preamble.line)
    _check_template(filename, "\n".join(preamble.checked), preamble.text_start, errors, "preamble")
    scenes: list[Scene] = []
    seen: dict[str, int] = {}
    for part in declared:
        name = part.name or ""
        if not _SCENE_NAME.match(name):
            errors.append(
                PlaybookError(
                    filename, part.line, f"scene name {name!r}: use letters, digits, '_', '-' and '.'"
                )
            )
        elif name in seen:
            errors.append(
                PlaybookError(filename, part.line, f"scene {name!r} already defined on line {seen[name]}")
            )
            continue
        seen[name] = part.line
        _check_template(filename, "\n".join(part.checked), part.text_start, errors, f"scene {name}")
        scenes.append(Scene(name=name, text=part.text, rules=part.rules, line=part.line))
    return preamble.text, scenes


# ---------------------------------------------------------------------------- cross-checks


def _resolve_actions(
    settings: dict[str, Any], scenes: list[Scene], filename: str, errors: list[PlaybookError]
) -> list[Scene]:
    """Check that every goto names a scene; give transfers without a target the playbook's."""
    names = [s.name for s in scenes]
    default_target = settings.get("transfer_target")
    # A transfer_target of the wrong type is reported already; don't report each transfer too.
    target_reported = "transfer_target" in settings and default_target is None

    def resolve(item: Any, where: str) -> Any:
        if item.action == "goto" and item.scene is not None and item.scene not in names:
            close = difflib.get_close_matches(item.scene, names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; scenes: {', '.join(names)}"
            errors.append(PlaybookError(filename, item.line, f"{where}: no scene {item.scene!r}{hint}"))
        if item.action == "transfer" and not item.target:
            if default_target:
                return dataclasses.replace(item, target=default_target)
            if not target_reported:
                message = f"{where}: transfer needs a target or transfer_target"
                errors.append(PlaybookError(filename, item.line, message))
        return item

    if "rules" in settings:
        settings["rules"] = tuple(resolve(r, f"rules[{i}]") for i, r in enumerate(settings["rules"]))
    if "dtmf" in settings:
        settings["dtmf"] = {d: resolve(a, f"dtmf.{d}") for d, a in settings["dtmf"].items()}
    return [
        dataclasses.replace(
            s, rules=tuple(resolve(r, f"scene {s.name} rules[{i}]") for i, r in enumerate(s.rules))
        )
        for s in scenes
    ]


# ---------------------------------------------------------------------------- loading


def parse_playbook(text: str, filename: str = "<playbook>") -> Playbook:
    """Parse and validate a playbook; raises PlaybookError listing every problem found."""
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    front, front_line, body_line = _split_front_matter(lines, filename)
    errors: list[PlaybookError] = []
    settings: dict[str, Any] = {}
    if front_line:
        src = _Source(filename, front_line, errors)
        node = src.compose("\n".join(front))
        is_empty = isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")
        if node is not None and not is_empty:
            settings = _fields(src, node, "", _TOP_SPEC)
    preamble, scenes = _scenes(
        _read_body(lines[body_line - 1 :], body_line, filename, errors), filename, errors
    )
    scenes = _resolve_actions(settings, scenes, filename, errors)
    _raise_if_any(errors)
    return Playbook(filename=filename, scenes=tuple(scenes), preamble=preamble, **settings)


def _raise_if_any(errors: list[PlaybookError]) -> None:
    if errors:
        errors.sort(key=lambda e: e.line or 0)
        first = errors[0]
        raise PlaybookError(first.filename, first.line, first.message, errors)


def load_playbook(path: str | os.PathLike[str]) -> Playbook:
    """Read and validate a playbook file (UTF-8)."""
    filename = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlaybookNotFoundError(filename, None, "no such file") from None
    except UnicodeDecodeError as exc:
        raise PlaybookError(filename, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise PlaybookError(filename, None, f"cannot read: {exc.strerror or exc}") from None
    return parse_playbook(text, filename)


def find_playbook(name: str, dirs: Sequence[str | os.PathLike[str]]) -> Path:
    """The file of the playbook called ``name`` (such as "greeting.md") in the first directory that
    has it. Names come from webhooks and API requests, so anything that could leave the directories
    (absolute paths, "..", backslashes, hidden files) is refused."""
    relative = _safe_name(name)
    for directory in dirs:
        candidate = Path(directory) / relative
        if candidate.is_file():
            return candidate
    searched = ", ".join(os.fspath(d) for d in dirs) or "no directories"
    raise PlaybookNotFoundError(name, None, f"no such playbook (searched {searched})")


def _safe_name(name: str) -> PurePosixPath:
    def refuse(why: str) -> PlaybookError:
        return PlaybookError(name, None, f"invalid playbook name: {why}")

    if not name or "\x00" in name or "\\" in name:
        raise refuse("empty, or contains a NUL or a backslash")
    path = PurePosixPath(name)
    if path.is_absolute() or ":" in path.parts[0]:
        raise refuse("must be relative to the playbook directories")
    if any(part in ("", ".", "..") or part.startswith(".") for part in name.split("/")):
        raise refuse("path parts may not be empty or start with '.'")
    if path.suffix != PLAYBOOK_SUFFIX:
        raise refuse(f"must end with {PLAYBOOK_SUFFIX}")
    return path


def open_playbook(name: str, dirs: Sequence[str | os.PathLike[str]]) -> Playbook:
    """find_playbook then load_playbook."""
    return load_playbook(find_playbook(name, dirs))


# ---------------------------------------------------------------------------- command line


def check_playbook_main(argv: Sequence[str] | None = None) -> int:
    """``activecall check-playbook FILE...``: 0 when every file loads, else 1 with the errors."""
    parser = argparse.ArgumentParser(
        prog="activecall check-playbook", description="Validate playbook files and print a summary."
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    status = 0
    for filename in args.files:
        try:
            playbook = load_playbook(filename)
        except PlaybookError as exc:
            for error in exc.errors:
                print(error, file=sys.stderr)
            status = 1
        else:
            print(f"ok: {playbook.summary()}")
    return status
