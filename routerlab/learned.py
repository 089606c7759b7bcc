"""A learned start-tier router, evaluated in pure Python (no numpy, no scikit-learn).

The workbench trains it (:mod:`routerlab.workbench.learn`, scikit-learn's
logistic regression on the tuning split of an outcome table); the policy JSON
carries it as ``start_router``; the production router evaluates it here with
the standard library alone, so the bare ``pip install routerlab`` routes with
it exactly as the workbench's sweep does (both call :meth:`StartRouter.scores`).

Features, computed from the request alone (the text the keyword classifier
reads, see :func:`routerlab.decision.classifier_text`):

- word n-grams (``word_ngrams``, default 1-2) of the lower-cased ``\\w+``
  tokens and character n-grams (``char_ngrams``, default 3-5) of the
  lower-cased text with runs of whitespace collapsed, each hashed with CRC-32
  (``zlib.crc32`` of ``"w:" + gram`` or ``"c:" + gram``, UTF-8) into
  ``n_features`` buckets; each of the two blocks is scaled to unit Euclidean
  length;
- dense signals at indices ``n_features + j``: ``log1p(characters) / 10``,
  ``log1p(words) / 10``, the keyword classifier's class (one-hot: simple,
  medium, complex), and its numbers of simple and complex pattern hits.

For each non-final tier the model holds an intercept and sparse weights; its
score is ``p = 1 / (1 + exp(-(intercept + sum of weight x value)))``, summed
over the features in ascending index order: the estimated probability that
the tier's answer is as good as the final tier's. The route starts at the
first non-final tier whose ``p`` reaches its threshold (a threshold above 1
never does), else at the final tier.

JSON (``start_router`` in a policy)::

    {"kind": "hashed-logistic", "version": 1,
     "hashing": {"n_features": 32768, "word_ngrams": [1, 2], "char_ngrams": [3, 5]},
     "tiers": [{"intercept": -0.4, "weights": [[17, 0.31], ...], "threshold": 0.5}, ...],
     "trained": {...provenance: data, split, scorer, validation...}}
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from routerlab.classifier import COMPLEXITY_CLASSES, Classification

KIND = "hashed-logistic"
VERSION = 1
DENSE_FEATURES = (
    "log_chars",
    "log_words",
    "class_simple",
    "class_medium",
    "class_complex",
    "simple_hits",
    "complex_hits",
)
_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Hashing:
    """How a request's text becomes sparse features (see the module docstring)."""

    n_features: int = 2**15
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)

    def to_json(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "word_ngrams": list(self.word_ngrams),
            "char_ngrams": list(self.char_ngrams),
        }


def _block(grams: Mapping[int, float]) -> dict[int, float]:
    norm = math.sqrt(math.fsum(v * v for v in grams.values()))
    return {i: v / norm for i, v in grams.items()} if norm > 0 else {}


def _hashed(prefix: str, grams: Sequence[str], n: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for g in grams:
        i = zlib.crc32((prefix + g).encode("utf-8")) % n
        out[i] = out.get(i, 0.0) + 1.0
    return out


def features(text: str, classification: Classification | None, hashing: Hashing) -> dict[int, float]:
    """The feature vector of one request: ``{index: value}`` (indices ascending when iterated sorted)."""
    low = text.lower()
    words = _WORD.findall(low)
    wlo, whi = hashing.word_ngrams
    wgrams = [" ".join(words[i : i + k]) for k in range(wlo, whi + 1) for i in range(len(words) - k + 1)]
    flat = _SPACE.sub(" ", low).strip()
    clo, chi = hashing.char_ngrams
    cgrams = [flat[i : i + k] for k in range(clo, chi + 1) for i in range(len(flat) - k + 1)]
    n = hashing.n_features
    out = _block(_hashed("w:", wgrams, n))
    for i, v in _block(_hashed("c:", cgrams, n)).items():
        out[i] = out.get(i, 0.0) + v
    cls = classification.value if classification is not None else "medium"
    dense = [
        math.log1p(len(text)) / 10.0,
        math.log1p(len(words)) / 10.0,
        *(1.0 if cls == c else 0.0 for c in COMPLEXITY_CLASSES),
        float(len(classification.simple_hits)) if classification is not None else 0.0,
        float(len(classification.complex_hits)) if classification is not None else 0.0,
    ]
    for j, v in enumerate(dense):
        if v:
            out[n + j] = v
    return out


@dataclass(frozen=True)
class TierModel:
    """One non-final tier's logistic model and threshold."""

    intercept: float
    weights: tuple[tuple[int, float], ...]  # (feature index, weight), ascending index
    threshold: float = 0.5
    _w: dict[int, float] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_w", dict(self.weights))

    def probability(self, x: Mapping[int, float]) -> float:
        w = self._w
        z = self.intercept
        for i in sorted(x):
            wi = w.get(i)
            if wi is not None:
                z += wi * x[i]
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)


@dataclass(frozen=True, eq=False)
class StartRouter:
    """The learned start-tier router of a policy (see the module docstring). Two routers are equal when
    their models are (:attr:`fingerprint`), whatever their thresholds."""

    hashing: Hashing
    tiers: tuple[TierModel, ...]  # one per non-final tier, cheapest first
    trained: Mapping[str, Any] = field(default_factory=dict)
    _fp: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        body = {
            "hashing": self.hashing.to_json(),
            "tiers": [[repr(t.intercept), [[i, repr(w)] for i, w in t.weights]] for t in self.tiers],
        }
        object.__setattr__(self, "_fp", hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StartRouter) and other._fp == self._fp

    def __hash__(self) -> int:
        return hash(self._fp)

    @property
    def thresholds(self) -> tuple[float, ...]:
        return tuple(t.threshold for t in self.tiers)

    def scores(self, text: str, classification: Classification | None) -> tuple[float, ...]:
        """Each non-final tier's probability that its answer is as good as the final tier's."""
        x = features(text, classification, self.hashing)
        return tuple(t.probability(x) for t in self.tiers)

    def start_tier(self, scores: Sequence[float], thresholds: Sequence[float] | None = None) -> int:
        """The first non-final tier whose score reaches its threshold (the models' own unless given);
        the final tier when none does."""
        thr = [t.threshold for t in self.tiers] if thresholds is None else list(thresholds)
        for i, (s, th) in enumerate(zip(scores, thr, strict=True)):
            if s >= th:
                return i
        return len(self.tiers)

    def with_thresholds(self, thresholds: Sequence[float]) -> StartRouter:
        if len(thresholds) != len(self.tiers):
            raise ValueError(f"{len(thresholds)} thresholds for {len(self.tiers)} non-final tiers")
        tiers = tuple(
            TierModel(t.intercept, t.weights, float(th)) for t, th in zip(self.tiers, thresholds, strict=True)
        )
        return StartRouter(self.hashing, tiers, self.trained)

    @property
    def fingerprint(self) -> str:
        """A content hash of the model (not its thresholds): the same model has the same fingerprint."""
        return self._fp

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "version": VERSION,
            "hashing": self.hashing.to_json(),
            "tiers": [
                {"intercept": t.intercept, "weights": [[i, w] for i, w in t.weights], "threshold": t.threshold}
                for t in self.tiers
            ],
            **({"trained": dict(self.trained)} if self.trained else {}),
        }


def start_router_from_json(data: Any, n_tiers: int, where: str = "start_router") -> StartRouter:
    """Validate and read a ``start_router`` section; ``ValueError`` names the field that is wrong."""

    def fail(fieldname: str, message: str) -> ValueError:
        return ValueError(f"{where}.{fieldname}: {message}" if fieldname else f"{where}: {message}")

    def number(v: Any, fieldname: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise fail(fieldname, f"must be a finite number, got {v!r}")
        return float(v)

    def pair(v: Any, fieldname: str, lo: int, hi: int) -> tuple[int, int]:
        if (
            not isinstance(v, list)
            or len(v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            or not lo <= v[0] <= v[1] <= hi
        ):
            raise fail(fieldname, f"must be [low, high] whole numbers with {lo} <= low <= high <= {hi}, got {v!r}")
        return int(v[0]), int(v[1])

    if not isinstance(data, Mapping):
        raise fail("", f"must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - {"kind", "version", "hashing", "tiers", "trained"})
    if unknown:
        raise fail(unknown[0], "unknown key; valid keys: kind, version, hashing, tiers, trained")
    if data.get("kind") != KIND:
        raise fail("kind", f"must be {KIND!r}, got {data.get('kind')!r}")
    if data.get("version") != VERSION:
        raise fail("version", f"this routerlab reads version {VERSION}, got {data.get('version')!r}")
    h = data.get("hashing")
    if not isinstance(h, Mapping):
        raise fail("hashing", "must be a JSON object")
    bad = sorted(set(h) - {"n_features", "word_ngrams", "char_ngrams"})
    if bad:
        raise fail(f"hashing.{bad[0]}", "unknown key; valid keys: n_features, word_ngrams, char_ngrams")
    nf = h.get("n_features")
    if isinstance(nf, bool) or not isinstance(nf, int) or not 16 <= nf <= 2**24:
        raise fail("hashing.n_features", f"must be a whole number from 16 to {2**24}, got {nf!r}")
    hashing = Hashing(nf, pair(h.get("word_ngrams"), "hashing.word_ngrams", 1, 5),
                      pair(h.get("char_ngrams"), "hashing.char_ngrams", 1, 10))  # fmt: skip
    tiers = data.get("tiers")
    if not isinstance(tiers, list) or len(tiers) != n_tiers - 1:
        raise fail("tiers", f"must list one model per non-final tier ({n_tiers - 1}), got {tiers!r:.80}")
    models = []
    top = nf + len(DENSE_FEATURES)
    for ti, t in enumerate(tiers):
        f = f"tiers[{ti}]"
        if not isinstance(t, Mapping):
            raise fail(f, "must be a JSON object")
        bad = sorted(set(t) - {"intercept", "weights", "threshold"})
        if bad:
            raise fail(f"{f}.{bad[0]}", "unknown key; valid keys: intercept, weights, threshold")
        ws = t.get("weights", [])
        if not isinstance(ws, list):
            raise fail(f"{f}.weights", "must be a list of [index, weight] pairs")
        pairs: list[tuple[int, float]] = []
        last = -1
        for wi, pw in enumerate(ws):
            if not isinstance(pw, list) or len(pw) != 2 or isinstance(pw[0], bool) or not isinstance(pw[0], int):
                raise fail(f"{f}.weights[{wi}]", f"must be [index, weight], got {pw!r}")
            if not last < pw[0] < top:
                raise fail(f"{f}.weights[{wi}]", f"index must ascend and lie in [0, {top}), got {pw[0]}")
            last = pw[0]
            pairs.append((pw[0], number(pw[1], f"{f}.weights[{wi}]")))
        thr = number(t.get("threshold", 0.5), f"{f}.threshold")
        if not 0.0 <= thr <= 2.0:  # above 1: never start at this tier
            raise fail(f"{f}.threshold", f"must be in [0, 2] (above 1: never start here), got {thr}")
        models.append(TierModel(number(t.get("intercept"), f"{f}.intercept"), tuple(pairs), thr))
    trained = data.get("trained", {})
    if not isinstance(trained, Mapping):
        raise fail("trained", "must be a JSON object")
    return StartRouter(hashing, tuple(models), dict(trained))


__all__ = ["DENSE_FEATURES", "Hashing", "StartRouter", "TierModel", "features", "start_router_from_json"]
