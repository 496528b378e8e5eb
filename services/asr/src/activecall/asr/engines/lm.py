"""A small trigram language model of a playbook's phrase hints, in ARPA format and queryable.

The phrases give the n-grams (each phrase is a sentence: callers say them alone or chain them); the
unigrams are mixed with a background distribution of common English words, so a caller who strays
from the phrases is still heard as words rather than forced onto the hints. Interpolated absolute
discounting (D = 0.5) at every order, written in back-off form with weights that make every
distribution sum to one.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping

from activecall.audio import split_words

DISCOUNT = 0.5
BACKGROUND_WEIGHT = 0.5  # share of the unigram mass given to the common-word background
START, END = "<s>", "</s>"
NO_PROBABILITY = -99.0  # ARPA's log10 for <s>, which is never predicted

History = tuple[str, ...]


class HintModelError(ValueError):
    """Hints that give no model (no phrase has a word the recognizer can pronounce)."""


def hint_sentences(phrases: Iterable[str], known: Callable[[str], bool]) -> list[list[str]]:
    """The phrases as word lists; a word the recognizer cannot say splits its phrase in two."""
    sentences: list[list[str]] = []
    for phrase in phrases:
        current: list[str] = []
        for word in split_words(phrase):
            if known(word):
                current.append(word)
            elif current:
                sentences.append(current)
                current = []
        if current:
            sentences.append(current)
    return sentences


class HintLanguageModel:
    """Trigram model of hint sentences with a background of common words (word -> probability)."""

    def __init__(self, sentences: list[list[str]], background: Mapping[str, float]) -> None:
        if not sentences:
            raise HintModelError("no hint phrase has a word the recognizer knows")
        padded = [[START, *words, END] for words in sentences]
        self.unigrams = self._unigrams(padded, background)
        self.bigrams, self.bigram_backoff = self._higher(padded, 2, self._unigram_of)
        self.trigrams, self.trigram_backoff = self._higher(padded, 3, self._bigram_of)

    @property
    def vocabulary(self) -> list[str]:
        """Words the model can predict (without the sentence markers)."""
        return sorted(w for w in self.unigrams if w not in (START, END))

    def prob(self, word: str, history: History = ()) -> float:
        """P(word | history), history oldest first; only its last two words matter."""
        if len(history) >= 2:
            return self._trigram_of(history[-2:], word)
        if history:
            return self._bigram_of((history[-1],), word)
        return self._unigram_of((), word)

    def arpa(self) -> str:
        """The model as ARPA text, as PocketSphinx and other decoders read it."""
        sections = [("\\1-grams:", self._arpa_unigrams())]
        sections.append(("\\2-grams:", self._arpa_ngrams(self.bigrams, self.trigram_backoff)))
        sections.append(("\\3-grams:", self._arpa_ngrams(self.trigrams, {})))
        counts = [f"ngram {order}={len(lines)}" for order, (_, lines) in enumerate(sections, 1)]
        lines = ["\\data\\", *counts, ""]
        for title, body in sections:
            lines += [title, *body, ""]
        return "\n".join([*lines, "\\end\\", ""])

    # --- estimation -------------------------------------------------------------------------------

    @staticmethod
    def _unigrams(padded: list[list[str]], background: Mapping[str, float]) -> dict[str, float]:
        counts = Counter(word for sentence in padded for word in sentence[1:])
        total = sum(counts.values())
        weight = BACKGROUND_WEIGHT if background else 0.0
        norm = sum(background.values()) or 1.0
        vocabulary = set(counts) | set(background)
        unigrams = {
            w: (1 - weight) * counts[w] / total + weight * background.get(w, 0.0) / norm for w in vocabulary
        }
        unigrams[START] = 0.0
        return unigrams

    @staticmethod
    def _higher(
        padded: list[list[str]], order: int, lower: Callable[[History, str], float]
    ) -> tuple[dict[History, dict[str, float]], dict[History, float]]:
        """Interpolated absolute discounting of one order over the next lower one."""
        counts: dict[History, Counter[str]] = defaultdict(Counter)
        for sentence in padded:
            for i in range(len(sentence) - order + 1):
                counts[tuple(sentence[i : i + order - 1])][sentence[i + order - 1]] += 1
        table: dict[History, dict[str, float]] = {}
        backoff: dict[History, float] = {}
        for history, following in counts.items():
            total = sum(following.values())
            spare = DISCOUNT * len(following) / total
            lower_history = history[1:]
            table[history] = {
                w: (c - DISCOUNT) / total + spare * lower(lower_history, w) for w, c in following.items()
            }
            left = 1.0 - sum(table[history].values())
            lower_left = 1.0 - sum(lower(lower_history, w) for w in following)
            backoff[history] = max(left, 1e-12) / max(lower_left, 1e-12)
        return table, backoff

    # --- queries ----------------------------------------------------------------------------------

    def _unigram_of(self, history: History, word: str) -> float:
        return self.unigrams.get(word, 0.0)

    def _bigram_of(self, history: History, word: str) -> float:
        seen = self.bigrams.get(history)
        if seen is not None and word in seen:
            return seen[word]
        return self.bigram_backoff.get(history, 1.0) * self._unigram_of((), word)

    def _trigram_of(self, history: History, word: str) -> float:
        seen = self.trigrams.get(history)
        if seen is not None and word in seen:
            return seen[word]
        return self.trigram_backoff.get(history, 1.0) * self._bigram_of(history[1:], word)

    # --- ARPA -------------------------------------------------------------------------------------

    def _arpa_unigrams(self) -> list[str]:
        lines = []
        for word in sorted(self.unigrams):
            p = self.unigrams[word]
            if word != START and p <= 0.0:
                continue
            logp = NO_PROBABILITY if word == START else math.log10(p)
            lines.append(_arpa_line(logp, (word,), self.bigram_backoff.get((word,))))
        return lines

    @staticmethod
    def _arpa_ngrams(table: dict[History, dict[str, float]], backoff: Mapping[History, float]) -> list[str]:
        lines = []
        for history in sorted(table):
            for word, p in sorted(table[history].items()):
                ngram = (*history, word)
                lines.append(_arpa_line(math.log10(p), ngram, backoff.get(ngram)))
        return lines


def _arpa_line(logp: float, ngram: History, backoff: float | None) -> str:
    line = f"{logp:.6f}\t{' '.join(ngram)}"
    return line if backoff is None else f"{line}\t{math.log10(backoff):.6f}"
