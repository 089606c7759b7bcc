"""Confidence signals: self-consistency similarity and mean token log-probability.

A similarity function maps two answers to a score in [0, 1]:

- ``difflib``: ``difflib.SequenceMatcher`` ratio on the lower-cased texts
  (the seed's choice: cheap, character level).
- ``rougeL``: ROUGE-L F-measure as rouge-score computes it (its tokenizer and
  Porter stemmer); loaded lazily so the production import stays light.
- ``answer``: 1.0 when the final answers extracted by a regex are equal after
  normalisation, else 0.0.

With k samples the agreement is the mean similarity of the first sample (the
one the router would return) to each of the others, so k=2 is simply the
similarity of the pair.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from routerlab.errors import ConfigError

SimilarityFn = Callable[[str, str], float]

# The last "A: ...", "Answer: ..." or "Final answer: ..." line; else "the answer is ...".
DEFAULT_ANSWER_PATTERN = r"(?im)^\s*(?:a|answer|final answer)\s*:\s*(?P<answer>.+?)\s*$"
_ANSWER_IS = re.compile(r"(?i)\bthe (?:final )?answer is\s*:?\s*(?P<answer>[^\n]+)")
_TRAILING = re.compile(r"[\s.。!]+$")
_SPACES = re.compile(r"\s+")
_WRAPPERS = "\"'`*()[] "


def difflib_similarity(a: str, b: str) -> float:
    """Character-level ratio of the lower-cased texts."""
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def rougel_similarity(a: str, b: str) -> float:
    """ROUGE-L F-measure (rouge-score's tokenizer, Porter stemmer); symmetric."""
    from routerlab.rouge import rouge_l_f  # lazy: keeps nltk out of the import path

    return rouge_l_f(a, b)


def normalize_answer(ans: str) -> str:
    """Light normalisation: lower case, collapse spaces, drop wrappers and trailing dots."""
    s = _SPACES.sub(" ", ans.strip().lower())
    s = s.strip(_WRAPPERS)
    s = _TRAILING.sub("", s)
    return s.strip(_WRAPPERS)


@lru_cache(maxsize=16)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def extract_answer(text: str, pattern: str = DEFAULT_ANSWER_PATTERN) -> str:
    """The normalised final answer of ``text``.

    The last match of ``pattern`` (its ``answer`` group, else group 1, else the
    whole match); failing that "the answer is ..."; failing that the last
    non-empty line.
    """
    rx = _pattern(pattern)
    matches = list(rx.finditer(text))
    if not matches:
        matches = list(_ANSWER_IS.finditer(text))
    if matches:
        m = matches[-1]
        if "answer" in m.re.groupindex:
            raw = m.group("answer")
        elif m.re.groups:
            raw = m.group(1)
        else:
            raw = m.group(0)
        return normalize_answer(raw or "")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return normalize_answer(lines[-1]) if lines else ""


def answer_similarity_fn(pattern: str = DEFAULT_ANSWER_PATTERN) -> SimilarityFn:
    """A similarity function comparing extracted final answers (1.0 or 0.0)."""

    def answer_similarity(a: str, b: str) -> float:
        ea, eb = extract_answer(a, pattern), extract_answer(b, pattern)
        return 1.0 if ea and ea == eb else 0.0

    return answer_similarity


SIMILARITY_NAMES: tuple[str, ...] = ("answer", "difflib", "rougeL")


def require_similarity(name: str) -> None:
    """Raise :class:`ConfigError` now if similarity ``name`` cannot run in this install (``rougeL``
    needs the ``rouge`` extra), rather than on the first query that reaches a consistency check."""
    if name == "rougeL":
        missing = [m for m in ("nltk", "rapidfuzz") if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(
                f"the rougeL similarity needs {' and '.join(missing)}, which this install lacks; "
                "run pip install 'routerlab[rouge]' (or choose the difflib or answer similarity)"
            )


def get_similarity(name: str, *, answer_pattern: str = DEFAULT_ANSWER_PATTERN) -> SimilarityFn:
    """The similarity function called ``name`` (one of :data:`SIMILARITY_NAMES`)."""
    if name == "difflib":
        return difflib_similarity
    if name == "rougeL":
        require_similarity(name)
        return rougel_similarity
    if name == "answer":
        return answer_similarity_fn(answer_pattern)
    raise ValueError(f"unknown similarity {name!r}; choose one of {', '.join(SIMILARITY_NAMES)}")


def agreement(samples: Sequence[str], similarity: SimilarityFn) -> float:
    """Mean similarity of the first sample to each other sample (k >= 2)."""
    if len(samples) < 2:
        raise ValueError("agreement needs at least two samples")
    first = samples[0]
    return sum(similarity(first, other) for other in samples[1:]) / (len(samples) - 1)
