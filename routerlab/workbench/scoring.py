"""Quality scorers: how good one answer is for one eval item, in [0, 1].

A scorer is ``fn(item, text, model) -> float | None``; ``None`` means "not
applicable to this item" (no reference, no gold answer, no label). Built in:

- ``rougeL``: ROUGE-L F-measure against the item's ``reference``, exactly as
  rouge-score computes it (``use_stemmer=True``), via the fast path in
  :mod:`routerlab.rouge`.
- ``exact``: 1.0 when the final answer extracted from the text equals the
  item's gold ``answer`` after light normalisation, else 0.0.
- ``label``: the item's external label for that model (e.g. a GPT-4 judge
  score 1-10), scaled to [0, 1] as (score - 1) / 9.

Register your own with :func:`register_scorer`.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable
from importlib import metadata

from routerlab import consistency, rouge
from routerlab.consistency import DEFAULT_ANSWER_PATTERN, extract_answer, normalize_answer
from routerlab.data.evalset import EvalItem
from routerlab.errors import WorkbenchError

Scorer = Callable[[EvalItem, str, str], float | None]

LABEL_MIN, LABEL_MAX = 1.0, 10.0


def rougel_scorer(item: EvalItem, text: str, model: str) -> float | None:
    if item.reference is None:
        return None
    return rouge.rouge_l_f(item.reference, text)


def exact_scorer(item: EvalItem, text: str, model: str) -> float | None:
    if item.answer is None:
        return None
    return 1.0 if extract_answer(text, DEFAULT_ANSWER_PATTERN) == normalize_answer(item.answer) else 0.0


def label_scorer(item: EvalItem, text: str, model: str) -> float | None:
    score = item.labels.get(model)
    if score is None:
        return None
    return (float(score) - LABEL_MIN) / (LABEL_MAX - LABEL_MIN)


_SCORERS: dict[str, Scorer] = {"exact": exact_scorer, "label": label_scorer, "rougeL": rougel_scorer}


def register_scorer(name: str, fn: Scorer, *, replace: bool = False) -> None:
    """Make ``fn`` available as scorer ``name`` (for outcome tables, sweeps and reports)."""
    if name in _SCORERS and not replace:
        raise WorkbenchError(f"a scorer named {name!r} exists; pass replace=True to replace it")
    if not name.isidentifier():
        raise WorkbenchError(f"scorer names must be identifiers (they become column names), got {name!r}")
    _SCORERS[name] = fn


def get_scorer(name: str) -> Scorer:
    try:
        return _SCORERS[name]
    except KeyError:
        raise WorkbenchError(f"unknown scorer {name!r}; choose one of {', '.join(sorted(_SCORERS))}") from None


def scorer_fingerprint(name: str) -> str:
    """Name plus a hash of everything the scorer's values depend on, so a change to any of it
    invalidates cached outcome tables: the function's code and constants, the whole source of the
    module that defines it (helpers, patterns, constants), the answer extraction and ROUGE-L modules
    the built-in scorers use, and the versions of the packages behind them (nltk's stemmer)."""
    fn = get_scorer(name)
    h = hashlib.sha256(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}".encode())
    code = getattr(fn, "__code__", None) or getattr(type(fn).__call__, "__code__", None)
    if code is not None:
        h.update(code.co_code)
        h.update(repr(code.co_consts).encode())
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    for mod in (module, consistency, rouge):
        if mod is None:
            continue
        try:
            h.update(inspect.getsource(mod).encode())
        except (OSError, TypeError):  # defined interactively: its code above is all there is
            pass
    for dist in ("nltk", "rapidfuzz", "rouge-score"):
        try:
            h.update(f"{dist}=={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist} absent".encode())
    return f"{name}:{h.hexdigest()[:12]}"


def scorer_names() -> list[str]:
    return sorted(_SCORERS)


def applicable_scorers(items: list[EvalItem], models: list[str], *, min_coverage: float = 0.9) -> list[str]:
    """Scorers that give a value for at least ``min_coverage`` of the (item, model) pairs.

    (arena-bench-v1's judge left a few answers unscored: those cells are NaN
    and means skip them.)
    """
    out = []
    pairs = [(it, m) for it in items for m in models]
    for name in scorer_names():
        fn = _SCORERS[name]
        if name in ("rougeL", "exact"):  # depend on the item only
            have = sum(fn(it, "", models[0]) is not None for it in items) * len(models)
        else:
            have = sum(fn(it, "", m) is not None for it, m in pairs)
        if pairs and have >= min_coverage * len(pairs):
            out.append(name)
    return out
