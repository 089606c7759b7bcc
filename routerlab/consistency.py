"""Confidence signals: self-consistency similarity and mean token log-probability.

A similarity function maps two answers to a score in [0, 1]:

- ``difflib``: ``difflib.SequenceMatcher`` ratio on the lower-cased texts
  (the seed's choice: cheap, character level).
- ``rougeL``: ROUGE-L F-measure as rouge-score computes it (its tokenizer and
  Porter stemmer); loaded lazily so the production import stays light.
- ``answer``: 1.0 when the final answers extracted by the policy's
  ``confidence.answer_pattern`` are equal after normalisation, else 0.0.

``answer_pattern`` is either a regular expression (its ``answer`` group, else
group 1, else the whole last match) or the name of a built-in extractor (see
:data:`ANSWER_EXTRACTORS`): ``default`` (the default regex, with its fallbacks),
``last_number``, ``boxed`` (the last ``\\boxed{...}``), ``letter`` (a
multiple-choice letter A-E) and ``final_line``. A name always means the
extractor; to match such a word literally write e.g. ``(?:boxed)``.

With k samples the agreement is the mean similarity of the sample the router
returns to each of the others: the first sample (``confidence.answer``
``first``), or the medoid, the sample most similar to the rest (``majority``;
with the ``answer`` similarity, a sample carrying the most common answer). So
k=2 is simply the similarity of the pair either way.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections import deque
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


def _matcher() -> type[difflib.SequenceMatcher[str]]:
    """cydifflib's SequenceMatcher when it is installed (a C++ port of difflib: the same matching
    blocks, so the same ratio, about 4x faster; the workbench extra installs it), else difflib's own."""
    try:
        import cydifflib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return difflib.SequenceMatcher
    return cydifflib.SequenceMatcher  # type: ignore[no-any-return]


_MATCHER: list[type[difflib.SequenceMatcher[str]]] = []  # chosen at the first comparison


@lru_cache(maxsize=8192)  # the samples of one item are compared again by each k and each draw
def difflib_similarity(a: str, b: str) -> float:
    """Character-level ratio of the lower-cased texts (``difflib.SequenceMatcher(None, a, b).ratio()``)."""
    if not _MATCHER:
        _MATCHER.append(_matcher())
    return float(_MATCHER[0](None, a.lower(), b.lower()).ratio())


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


def _group(m: re.Match[str]) -> str:
    if "answer" in m.re.groupindex:
        return m.group("answer") or ""
    if m.re.groups:
        return m.group(1) or ""
    return m.group(0)


def _last_line(text: str) -> str | None:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _last_match(rx: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = deque(rx.finditer(text), maxlen=1)
    return last[0] if last else None


def _regex_match(text: str, pattern: str) -> str | None:
    """The raw answer of the last match of ``pattern``, else of "the answer is ..."; None without either."""
    for rx in (_pattern(pattern), _ANSWER_IS):
        last = _last_match(rx, text)
        if last is not None:
            return _group(last)
    return None


_NUMBER = re.compile(r"(?<![\w.])[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])|(?<![\w.])[-+]?\.\d+(?!\w)")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_LETTER_PATTERNS = (
    # "Answer: C", "the correct answer is (B)", "**Final answer:** D"
    re.compile(r"(?i:\banswer)(?:\s+(?:is|would be|should be))?[\s:*\-]*[(\[]?\s*([A-E])(?![A-Za-z0-9])"),
    # "(B)" or "[b]" anywhere
    re.compile(r"[(\[]([A-Ea-e])[)\]]"),
    # a line that is just the letter: "B", "**B**", "B."
    re.compile(r"(?m)^[\s*]*([A-E])[\s*]*[.):]?[\s*]*$"),
)
_LETTER_GOLD = re.compile(r"\s*\(?([A-Ea-e])[).:](?:\s|$)")


def canonical_number(s: str) -> str | None:
    """``s`` as a canonical decimal string (``"1,000.50"`` -> ``"1000.5"``, ``"$-3"`` -> ``"-3"``), or None
    when ``s`` is not a plain number (optionally with a currency sign, thousands commas or a percent sign)."""
    t = s.strip().strip("$\u20ac\u00a3%").strip().replace("\u2212", "-").lstrip("+")
    if t.startswith("-$"):
        t = "-" + t[2:]
    if not re.fullmatch(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+", t):
        return None
    neg = t.startswith("-")
    t = t.lstrip("-").replace(",", "")
    whole, _, frac = t.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    out = f"{whole}.{frac}" if frac else whole
    return f"-{out}" if neg and out != "0" else out


def _last_number(text: str) -> str | None:
    last = _last_match(_NUMBER, text)
    if last is None:
        return None
    return canonical_number(last.group(0))


def _boxed(text: str) -> str | None:
    """The contents of the last complete ``\\boxed{...}`` (nested braces balanced), None without one."""
    found = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            found = text[m.end() : i - 1]
    if found is None:
        return None
    inner = found.strip().strip("$").strip()
    return canonical_number(inner) or inner


def _letter(text: str) -> str | None:
    for rx in _LETTER_PATTERNS:
        last = _last_match(rx, text)
        if last is not None:
            return last.group(1)
    return None


_EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": _boxed,
    "default": lambda text: _regex_match(text, DEFAULT_ANSWER_PATTERN),
    "final_line": _last_line,
    "last_number": _last_number,
    "letter": _letter,
}
ANSWER_EXTRACTORS: tuple[str, ...] = tuple(sorted(_EXTRACTORS))
"""The names ``answer_pattern`` accepts besides a regular expression."""


def is_extractor_name(pattern: str) -> bool:
    """True when ``pattern`` names a built-in extractor rather than being a regular expression."""
    return pattern in _EXTRACTORS


def check_answer_pattern(pattern: str) -> None:
    """Raise :class:`ConfigError` unless ``pattern`` is an extractor name or a valid regular expression."""
    if is_extractor_name(pattern):
        return
    try:
        _pattern(pattern)
    except re.error as e:
        raise ConfigError(
            f"answer pattern {pattern!r} is neither an extractor name ({', '.join(ANSWER_EXTRACTORS)}) "
            f"nor a valid regular expression: {e}"
        ) from None


@lru_cache(maxsize=16_384)  # each sample is compared with every other, so its answer is asked for again
def match_answer(text: str, pattern: str = DEFAULT_ANSWER_PATTERN) -> str | None:
    """The normalised answer ``pattern`` finds in ``text``, or None when it finds none.

    A regex (and ``default``) falls back to "the answer is ..."; the named
    extractors have no fallback: ``boxed`` needs a ``\\boxed{}``, ``letter`` a
    letter A-E given as an answer, ``last_number`` a number. Numbers found by
    ``last_number`` and ``boxed`` are canonical (``1,000.0`` -> ``1000``)."""
    fn = _EXTRACTORS.get(pattern)
    raw = fn(text) if fn is not None else _regex_match(text, pattern)
    return None if raw is None else normalize_answer(raw)


def extract_answer(text: str, pattern: str = DEFAULT_ANSWER_PATTERN) -> str:
    """The normalised final answer of ``text``.

    ``pattern`` is a regex or an extractor name (:data:`ANSWER_EXTRACTORS`). A
    regex (or ``default``): its last match (the ``answer`` group, else group 1,
    else the whole match); failing that "the answer is ..."; failing that the
    last non-empty line. A named extractor: what it finds (see
    :func:`match_answer`), else "".
    """
    found = match_answer(text, pattern)
    if found is not None:
        return found
    if is_extractor_name(pattern) and pattern != "default":
        return ""
    line = _last_line(text)
    return normalize_answer(line) if line is not None else ""


def gold_answer(gold: str, pattern: str = DEFAULT_ANSWER_PATTERN) -> str:
    """An eval item's gold answer, normalised as :func:`extract_answer` normalises an answer: what
    ``pattern`` finds in it (a gold ``\\boxed{12}`` or ``Answer: 12`` gives ``12``), else the whole gold
    answer normalised (a bare ``12``, ``B`` or ``Paris``); numbers made canonical as the extractor does."""
    found = match_answer(gold, pattern)
    if found is None and pattern == "letter":
        m = _LETTER_GOLD.match(gold)  # "B) Paris", "c. 12"
        found = m.group(1).lower() if m else None
    if found is None:
        found = normalize_answer(gold)
        if pattern in ("boxed", "last_number"):
            found = canonical_number(found) or found
    return found


def answers_equal(a: str, b: str) -> bool:
    """Two normalised answers are equal: the same non-empty text, or the same number
    (``1,000`` and ``1000.0``)."""
    if not a or not b:
        return False
    if a == b:
        return True
    na = canonical_number(a)
    return na is not None and na == canonical_number(b)


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


def similarity_rows(samples: Sequence[str], similarity: SimilarityFn) -> list[list[float]]:
    """``rows[j][i]`` = similarity(sample j, sample i) for i != j (the diagonal is 1.0, never read)."""
    return [[1.0 if i == j else similarity(a, b) for i, b in enumerate(samples)] for j, a in enumerate(samples)]


def medoid_of(rows: Sequence[Sequence[float]], m: int) -> tuple[int, float]:
    """The medoid of the first ``m`` samples given :func:`similarity_rows`: the sample with the highest
    total similarity to the other ``m - 1`` (the lowest index on ties), and its mean similarity to them.

    With the ``answer`` similarity this is a sample carrying the most common extracted answer (the one
    seen first on ties); with two samples it is the first, and its agreement is the pair's similarity."""
    if m < 2:
        raise ValueError("a medoid needs at least two samples")
    best, best_sum = 0, -1.0
    for j in range(m):
        total = sum(rows[j][i] for i in range(m) if i != j)
        if total > best_sum:
            best, best_sum = j, total
    return best, best_sum / (m - 1)


def medoid(samples: Sequence[str], similarity: SimilarityFn) -> tuple[int, float]:
    """:func:`medoid_of` the samples: (index of the majority answer, its mean similarity to the others)."""
    return medoid_of(similarity_rows(samples, similarity), len(samples))


def draw_share(agreement_value: float, m: int) -> float:
    """The share of ``m`` samples behind an answer whose mean similarity to the other ``m - 1`` is
    ``agreement_value``, itself counted: with the ``answer`` similarity, exactly the fraction of samples
    that give that answer. Adaptive k accepts once it reaches ``confidence.stop_share``."""
    return (1.0 + (m - 1) * agreement_value) / m
