"""Pre-synthesis: the playbooks' fixed phrases are in the phrase cache before a call needs them.

The first call after start-up used to wait for Piper to synthesise its greeting: dead air before
the first words. The tts now reads every playbook in ``[playbooks] dirs`` before it takes sessions, and
again whenever one of those files is added, changed or removed (their mtimes are polled every
:data:`POLL_S` seconds), and synthesises their fixed phrases at the call rate (8 kHz):

- the greeting, rendered with the playbook's own default variables;
- the rule answers (``say`` of the playbook's rules and of every scene's rules), ``fallback``, the
  follow-up ``text`` and ``final_text``, the ``text`` of the DTMF map;
- the llm's apology (:data:`activecall.sentences.APOLOGY`).

A template that reads anything the playbook's defaults do not set (``{{ caller }}``, a SIP header,
a webhook variable, a variable set by a tool) depends on the call, so it cannot be said in advance: it
is skipped, with one log line per file version. The llm sends a text as the ``say`` pieces
:func:`activecall.sentences.split_text` gives and the phrase cache is keyed by piece, so each text is
split exactly that way (the apology goes out as one piece, so it is one entry).

The entries are pinned: live traffic never evicts them. A phrase no longer in any playbook is
unpinned (it becomes an ordinary LRU entry). At most ``[tts] presynthesize_max`` entries are pinned;
phrases beyond the bound are left to the live cache. A playbook that does not load is logged and
skipped; nothing here stops the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import jinja2
from jinja2 import meta

from activecall.playbook import PLAYBOOK_SUFFIX, Playbook, PlaybookError, open_playbook, rewrite_header_names
from activecall.sentences import APOLOGY, split_text
from activecall.tts import metrics
from activecall.tts.shared_phrases import SharedPhrases

log = logging.getLogger("activecall.tts.presynthesis")

PRESYNTHESIS_RATE: Final = 8000
POLL_S: Final = 3.0
# The llm sends its apology as a single piece (turns.TurnRunner._apologize).
APOLOGY_PIECES: Final = (APOLOGY,)

# Only parses templates (to find the names they read); playbook.render renders them.
_PARSER: Final = jinja2.Environment()

Stamp = tuple[str, int, int]  # file, mtime_ns, size
CacheKey = tuple[str, str, str, int]


@dataclass
class PlaybookPhrases:
    """The fixed phrases of one playbook: ``texts`` maps what a text is ("greeting", "rule at line 12",
    "fallback", ...) to the say pieces the llm sends for it; ``skipped`` maps what could not be
    rendered in advance to the call variables it reads."""

    texts: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def pieces(self) -> list[str]:
        seen: dict[str, None] = {}
        for pieces in self.texts.values():
            seen.update(dict.fromkeys(pieces))
        return list(seen)


def fixed_templates(playbook: Playbook) -> list[tuple[str, str]]:
    """(what, template) of every text of the playbook said word for word, greeting first."""
    found: list[tuple[str, str]] = []
    if playbook.greeting is not None:
        found.append(("greeting", playbook.greeting))
    for scene in playbook.scenes:
        found += [(f"scene {scene.name} rule at line {r.line}", r.say) for r in scene.rules]
    found += [(f"rule at line {r.line}", r.say) for r in playbook.rules]
    if playbook.fallback is not None:
        found.append(("fallback", playbook.fallback))
    if playbook.follow_up is not None:
        found.append(("follow_up.text", playbook.follow_up.text))
        found.append(("follow_up.final_text", playbook.follow_up.final_text))
    for digit, action in sorted(playbook.dtmf.items()):
        if action.text is not None:
            found.append((f"dtmf {digit}", action.text))
    return found


def call_names(playbook: Playbook, template: str) -> list[str]:
    """The names ``template`` reads that the playbook's default variables do not set: the call's
    variables (caller, SIP headers, webhook or tool variables). Empty when it can be said in advance."""
    try:
        parsed = _PARSER.parse(rewrite_header_names(template))
    except jinja2.TemplateSyntaxError:
        return ["<syntax error>"]
    names = meta.find_undeclared_variables(parsed)
    return sorted(n for n in names if n not in playbook.variables and n not in _PARSER.globals)


def playbook_phrases(playbook: Playbook) -> PlaybookPhrases:
    """The say pieces of the playbook's fixed texts, rendered as the llm renders them for a call
    that sets no variable of its own."""
    phrases = PlaybookPhrases()
    for what, template in fixed_templates(playbook):
        names = call_names(playbook, template)
        if names:
            phrases.skipped[what] = names
            continue
        if what == "greeting":
            text = playbook.render_greeting({})
        else:
            text = playbook.render(template, {}, name=f"{playbook.filename} {what}")
        pieces = split_text(text)
        if pieces:
            phrases.texts[what] = pieces
    return phrases


def playbook_names(dirs: Sequence[str | os.PathLike[str]]) -> dict[str, Path]:
    """Every playbook name in the directories and the file it resolves to (the first directory that
    has the name wins, as for calls). Hidden files and directories are not playbooks."""
    found: dict[str, Path] = {}
    for directory in dirs:
        root = Path(directory)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob(f"*{PLAYBOOK_SUFFIX}")):
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            found.setdefault(relative.as_posix(), path)
    return found


def stamps(dirs: Sequence[str | os.PathLike[str]]) -> dict[str, Stamp]:
    """Name -> (file, mtime_ns, size) of every playbook: what the poll compares."""
    result: dict[str, Stamp] = {}
    for name, path in playbook_names(dirs).items():
        try:
            status = path.stat()
        except OSError:
            continue  # removed while we looked
        result[name] = (os.fspath(path), status.st_mtime_ns, status.st_size)
    return result


def load_phrases(name: str, dirs: Sequence[str | os.PathLike[str]]) -> PlaybookPhrases:
    """The playbook's phrases; an empty set (logged) when it does not load."""
    try:
        playbook = open_playbook(name, dirs)
    except PlaybookError as exc:
        problems = "; ".join(str(e) for e in exc.errors) or str(exc)
        log.warning("playbook %s does not load, nothing pre-synthesised from it: %s", name, problems)
        return PlaybookPhrases()
    except Exception:  # a playbook is user content: it must never stop the service
        log.exception("playbook %s: pre-synthesis failed", name)
        return PlaybookPhrases()
    try:
        phrases = playbook_phrases(playbook)
    except Exception:
        log.exception("playbook %s: pre-synthesis failed", name)
        return PlaybookPhrases()
    for what, names in phrases.skipped.items():
        log.info(
            "playbook %s: %s reads call variables (%s), not pre-synthesised", name, what, ", ".join(names)
        )
    return phrases


class PinnedCache(Protocol):
    """What the pre-synthesiser needs of the phrase cache."""

    def peek(self, key: CacheKey) -> bytes | None: ...

    def pin(self, key: CacheKey, pcm: bytes) -> None: ...

    def unpin(self, key: CacheKey) -> None: ...

    def pinned_keys(self) -> frozenset[CacheKey]: ...


class Presynthesizer:
    """Keeps the fixed phrases of the playbooks in ``dirs`` pinned in ``cache``."""

    def __init__(
        self,
        cache: PinnedCache,
        key_of: Callable[[str, int], CacheKey],
        synthesize: Callable[[str, int], Awaitable[bytes]],
        dirs: Sequence[str | os.PathLike[str]],
        limit: int,
        poll_s: float = POLL_S,
        shared: SharedPhrases | None = None,
    ) -> None:
        self.shared = shared
        self.cache = cache
        self.key_of = key_of
        self.synthesize = synthesize
        self.dirs = list(dirs)
        self.limit = limit
        self.poll_s = poll_s
        self._stamps: dict[str, Stamp] | None = None
        self._phrases: dict[str, PlaybookPhrases] = {}
        self._loaded: dict[str, Stamp] = {}
        self.refreshes = 0

    async def run(self) -> None:
        """Poll the playbook files and refresh on any change, until cancelled."""
        while True:
            await asyncio.sleep(self.poll_s)
            await self.refresh()

    async def refresh(self, workers: int = 1) -> bool:
        """Bring the pinned phrases in line with the playbooks; False when no file had changed.
        ``workers`` phrases are synthesized at a time (one while calls are served, so pre-synthesis
        leaves the other engine thread to them). Never raises (but for cancellation)."""
        try:
            current = await asyncio.to_thread(stamps, self.dirs)
            if current == self._stamps:
                return False
            self._stamps = current
            await self._reload(current)
            await self._pin(self._wanted(), workers)
            self.refreshes += 1
            return True
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pre-synthesis failed; the phrase cache fills from calls")
            return False

    async def _reload(self, current: dict[str, Stamp]) -> None:
        for name in list(self._phrases):
            if name not in current:
                del self._phrases[name]
                del self._loaded[name]
        for name, stamp in current.items():
            if self._loaded.get(name) != stamp:
                self._phrases[name] = await asyncio.to_thread(load_phrases, name, self.dirs)
                self._loaded[name] = stamp

    def _wanted(self) -> list[str]:
        """Every piece to pin, in order (the apology, then each playbook's, greeting first), at most
        ``limit``."""
        wanted: dict[str, None] = dict.fromkeys(APOLOGY_PIECES)
        for name in sorted(self._phrases):
            wanted.update(dict.fromkeys(self._phrases[name].pieces))
        pieces = list(wanted)
        if len(pieces) > self.limit:
            log.warning(
                "%d fixed phrases in the playbooks, presynthesize_max is %d: %d are left to the live cache",
                len(pieces),
                self.limit,
                len(pieces) - self.limit,
            )
            pieces = pieces[: max(0, self.limit)]
        return pieces

    async def _pin(self, pieces: Iterable[str], workers: int) -> None:
        keys = {self.key_of(piece, PRESYNTHESIS_RATE): piece for piece in pieces}
        pinned = self.cache.pinned_keys()
        for key in pinned - keys.keys():
            self.cache.unpin(key)
        slots = asyncio.Semaphore(max(1, workers))

        async def pin(key: CacheKey, piece: str) -> bool:
            """Pin one phrase; True when it had to be synthesized."""
            pcm = self.cache.peek(key)  # a call may have said it already
            if pcm is not None:
                self.cache.pin(key, pcm)
                return False
            if self.shared is not None:
                pcm = await self.shared.get(key)  # another worker made it
                if pcm is not None:
                    metrics.PHRASES_LOADED.inc()
                    self.cache.pin(key, pcm)
                    return False
            async with slots:
                try:
                    pcm = await self.synthesize(piece, PRESYNTHESIS_RATE)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("pre-synthesis of %r failed", piece)
                    return False
            metrics.PRESYNTHESIZED.inc()
            self.cache.pin(key, pcm)
            if self.shared is not None:
                await self.shared.put(key, pcm)
            return True

        made = await asyncio.gather(*(pin(k, p) for k, p in keys.items() if k not in pinned))
        synthesized = sum(made)
        log.info(
            "fixed phrases pinned in the phrase cache",
            extra={"pinned": len(self.cache.pinned_keys()), "synthesized": synthesized},
        )
