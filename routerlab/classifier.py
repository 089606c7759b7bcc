"""Heuristic complexity classifier: keyword patterns and length rules.

The defaults are the seed article's: any complex pattern or more than 120
words -> complex; otherwise a simple pattern and fewer than 50 words ->
simple; otherwise medium. All of it is configurable through the policy's
``classifier`` section (:class:`ClassifierSettings`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Literal

ClassifierRead = Literal["last_user", "user", "all"]
CLASSIFIER_READS: tuple[str, ...] = ("last_user", "user", "all")


class Complexity(StrEnum):
    SIMPLE = "simple"
    MEDIUM = "medium"
    COMPLEX = "complex"


COMPLEXITY_CLASSES: tuple[str, ...] = tuple(c.value for c in Complexity)

DEFAULT_SIMPLE_PATTERNS: tuple[str, ...] = (
    r"\b(summarize|classify|translate|extract|list|format|convert)\b",
    r"\b(what is|define|who is|when did|spell)\b",
)
DEFAULT_COMPLEX_PATTERNS: tuple[str, ...] = (
    r"\b(analyze|compare|evaluate|critique|synthesize|debate)\b",
    r"\b(implement|write a function|refactor|design|architect)\b",
    r"\b(why does|how would|what are the tradeoffs)\b",
)


@dataclass(frozen=True)
class ClassifierSettings:
    """Patterns (case-insensitive regexes) and word-count limits."""

    simple_patterns: tuple[str, ...] = DEFAULT_SIMPLE_PATTERNS
    complex_patterns: tuple[str, ...] = DEFAULT_COMPLEX_PATTERNS
    complex_min_words: int = 121  # more than 120 words is complex
    simple_max_words: int = 49  # fewer than 50 words may be simple
    read: ClassifierRead = "user"  # what of a conversation it reads: the last user message, all user
    # messages, or all messages (system and assistant included)


@dataclass(frozen=True)
class Classification:
    """The class and the signals that decided it."""

    complexity: Complexity
    word_count: int
    simple_hits: tuple[str, ...]
    complex_hits: tuple[str, ...]
    reason: str

    @property
    def value(self) -> str:
        return self.complexity.value


@lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


@lru_cache(maxsize=64)
def _any_of(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One alternation of ``patterns`` (a quick "does any match?"), or None if they cannot be joined."""
    if not patterns:
        return None
    try:
        return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
    except re.error:  # e.g. a pattern with its own global flags
        return None


def _hits(patterns: tuple[str, ...], q: str) -> tuple[str, ...]:
    quick = _any_of(patterns)
    if quick is not None and quick.search(q) is None:
        return ()  # the common case: no pattern matches, found with one search
    return tuple(p.pattern for p in _compiled(patterns) if p.search(q))


def classify_complexity(query: str, settings: ClassifierSettings | None = None) -> Classification:
    """Classify ``query`` as simple, medium or complex, with the deciding signals."""
    s = settings or ClassifierSettings()
    q = query.strip()
    words = len(q.split())
    complex_hits = _hits(s.complex_patterns, q)
    simple_hits = _hits(s.simple_patterns, q)
    if complex_hits:
        c, why = Complexity.COMPLEX, f"matched complex pattern {complex_hits[0]!r}"
    elif words >= s.complex_min_words:
        c, why = Complexity.COMPLEX, f"{words} words >= {s.complex_min_words}"
    elif simple_hits and words <= s.simple_max_words:
        c, why = (
            Complexity.SIMPLE,
            f"matched simple pattern {simple_hits[0]!r} and {words} words <= {s.simple_max_words}",
        )
    else:
        c, why = Complexity.MEDIUM, "no complex signal and no short simple match"
    return Classification(c, words, simple_hits, complex_hits, why)
