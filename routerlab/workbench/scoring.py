"""Quality scorers: how good one answer is for one eval item, in [0, 1].

A scorer is ``fn(item, text, model) -> float | None``; ``None`` means "not
applicable to this item" (no reference, no gold answer, no label). A scorer
that also takes a keyword ``answer_pattern`` receives the policy's
``confidence.answer_pattern`` (a regex or an extractor name such as ``boxed``,
``last_number`` or ``letter``; see :mod:`routerlab.consistency`) from
:func:`get_scorer`. Built in:

- ``rougeL``: ROUGE-L F-measure against the item's ``reference``, exactly as
  rouge-score computes it (``use_stemmer=True``), via the fast path in
  :mod:`routerlab.rouge`.
- ``exact``: 1.0 when the final answer extracted from the text with the
  answer pattern equals the item's gold ``answer`` (itself passed through the
  same extractor, so a gold ``\\boxed{12}`` or ``Answer: 12`` means ``12``)
  after light normalisation, numbers compared by value, else 0.0.
- ``label``: the item's external label for that model (e.g. a GPT-4 judge
  score 1-10), scaled to [0, 1] as (score - 1) / 9.
- ``mixed``: per item, by what it carries: a gold answer -> ``exact``, else a
  reference -> ``rougeL``, else labels -> ``label``; None with none of them.

More scorers come from :func:`register_scorer`, from installed packages
through the entry-point group ``routerlab.scorers`` (name = ``module:function``)
and from any importable function named as ``package.module:function``.

:func:`resolve_scorer` picks (or checks) the scorer for an eval set, with one
clear error for an unknown name and another for a scorer that gives no value
on the set; :func:`degenerate_scorer` looks at a built outcome table for a
scorer that cannot tell the tiers apart.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pandas as pd

from routerlab import consistency, rouge
from routerlab.consistency import (
    DEFAULT_ANSWER_PATTERN,
    answers_equal,
    check_answer_pattern,
    extract_answer,
    gold_answer,
)
from routerlab.data.evalset import EvalItem
from routerlab.errors import ConfigError, WorkbenchError

Scorer = Callable[[EvalItem, str, str], float | None]

ENTRY_POINT_GROUP = "routerlab.scorers"
PLUGIN_SYNTAX = "package.module:function"
LABEL_MIN, LABEL_MAX = 1.0, 10.0


def rougel_scorer(item: EvalItem, text: str, model: str) -> float | None:
    if item.reference is None:
        return None
    return rouge.rouge_l_f(item.reference, text)


def exact_scorer(
    item: EvalItem, text: str, model: str, *, answer_pattern: str = DEFAULT_ANSWER_PATTERN
) -> float | None:
    if item.answer is None:
        return None
    got = extract_answer(text, answer_pattern)
    return 1.0 if answers_equal(got, gold_answer(item.answer, answer_pattern)) else 0.0


def label_scorer(item: EvalItem, text: str, model: str) -> float | None:
    score = item.labels.get(model)
    if score is None:
        return None
    return (float(score) - LABEL_MIN) / (LABEL_MAX - LABEL_MIN)


def mixed_scorer(
    item: EvalItem, text: str, model: str, *, answer_pattern: str = DEFAULT_ANSWER_PATTERN
) -> float | None:
    """``exact`` for an item with a gold answer, else ``rougeL`` with a reference, else ``label``."""
    if item.answer is not None:
        return exact_scorer(item, text, model, answer_pattern=answer_pattern)
    if item.reference is not None:
        return rougel_scorer(item, text, model)
    return label_scorer(item, text, model)


_BUILTIN: dict[str, Callable[..., float | None]] = {
    "exact": exact_scorer,
    "label": label_scorer,
    "mixed": mixed_scorer,
    "rougeL": rougel_scorer,
}
_SCORERS: dict[str, Callable[..., float | None]] = dict(_BUILTIN)

# What each built-in needs from an item, for the coverage sentences: (kind, "N of M items have ...").
_NEEDS = {"exact": "a gold answer", "rougeL": "a reference", "label": "a label for one of the models"}
_KIND_SCORER = {"answer": "exact", "reference": "rougeL", "labels": "label"}  # also mixed's order of preference


def register_scorer(name: str, fn: Scorer, *, replace: bool = False) -> None:
    """Make ``fn`` available as scorer ``name`` (for outcome tables, sweeps and reports). If ``fn`` takes a
    keyword ``answer_pattern`` it receives the policy's ``confidence.answer_pattern``."""
    if name in _SCORERS and not replace:
        raise WorkbenchError(f"a scorer named {name!r} exists; pass replace=True to replace it")
    if not name.isidentifier():
        raise WorkbenchError(f"scorer names must be identifiers (they become column names), got {name!r}")
    _SCORERS[name] = fn


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _check_callable(obj: object, name: str, where: str) -> Callable[..., float | None]:
    if not callable(obj):
        raise WorkbenchError(
            f"scorer {name!r}: {where} is a {type(obj).__name__}, not a callable; a scorer is a function "
            "(item, text, model) -> float | None"
        )
    fn: Callable[..., float | None] = obj
    return fn


def _load_plugin(spec: str) -> Callable[..., float | None]:
    """The function ``package.module:function`` names (the attribute may be dotted: ``module:Class.method``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or not all(p.isidentifier() for p in module_name.split(".") + attr.split(".")):
        raise WorkbenchError(
            f"scorer {spec!r} is not a valid plugin reference; write it as {PLUGIN_SYNTAX} (e.g. mypkg.scores:judge)"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        why = "it is not installed or not on sys.path" if e.name == module_name else f"importing it failed: {e}"
        raise WorkbenchError(f"scorer {spec!r}: cannot import module {module_name!r}: {why}") from e
    except Exception as e:  # the plugin module itself is broken: say so, keep its traceback as the cause
        raise WorkbenchError(
            f"scorer {spec!r}: importing module {module_name!r} failed: {type(e).__name__}: {e}"
        ) from e
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise WorkbenchError(
                f"scorer {spec!r}: module {module_name!r} has no attribute {attr!r}"
                + (f" (it has no {part!r})" if part != attr else "")
            ) from None
    return _check_callable(obj, spec, f"{module_name}:{attr}")


def _lookup(name: str) -> Callable[..., float | None]:
    """The scorer function itself (before any ``answer_pattern`` is bound)."""
    fn = _SCORERS.get(name)
    if fn is not None:
        return fn
    if ":" in name:
        return _load_plugin(name)
    ep = _entry_points().get(name)
    if ep is not None:
        try:
            obj = ep.load()
        except Exception as e:
            raise WorkbenchError(
                f"scorer {name!r}: loading entry point {ep.value!r} (group {ENTRY_POINT_GROUP}) failed: "
                f"{type(e).__name__}: {e}"
            ) from e
        return _check_callable(obj, name, f"entry point {ep.value!r}")
    raise WorkbenchError(
        f"unknown scorer {name!r}; known scorers: {', '.join(scorer_names())}; "
        f"or name your own function as {PLUGIN_SYNTAX}"
    )


def _takes_answer_pattern(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # some builtins have no signature: a plain scorer
        return False
    p = params.get("answer_pattern")
    return p is not None and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)


def get_scorer(name: str, *, answer_pattern: str = DEFAULT_ANSWER_PATTERN) -> Scorer:
    """The scorer ``name`` as ``fn(item, text, model)``: a registered or built-in name, an entry point of the
    group ``routerlab.scorers``, or ``package.module:function``. A scorer taking a keyword ``answer_pattern``
    gets ``answer_pattern`` bound (the policy's ``confidence.answer_pattern``)."""
    fn = _lookup(name)
    if not _takes_answer_pattern(fn):
        return fn
    try:
        check_answer_pattern(answer_pattern)
    except ConfigError as e:
        raise WorkbenchError(f"scorer {name!r}: {e}") from None
    return functools.partial(fn, answer_pattern=answer_pattern)


def scorer_fingerprint(name: str) -> str:
    """Name plus a hash of everything the scorer's values depend on, so a change to any of it
    invalidates cached outcome tables: the function's code and constants (and the arguments a
    ``functools.partial`` binds), the whole source of the module that defines it (helpers, patterns,
    constants), the answer extraction and ROUGE-L modules the built-in scorers use, the version of the
    distribution a plugin comes from and the versions of the packages behind them (nltk's stemmer).
    Plugin scorers (``package.module:function`` and entry points) are fingerprinted the same way.
    The answer pattern is not part of it: the outcome table's key holds it."""
    fn: Any = _lookup(name)
    h = hashlib.sha256(name.encode())
    while isinstance(fn, functools.partial):
        h.update(repr((fn.args, sorted(fn.keywords.items()))).encode())
        fn = fn.func
    if callable(getattr(fn, "fingerprint", None)):  # a configured scorer object (e.g. an LLM judge)
        h.update(str(fn.fingerprint()).encode())
    h.update(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}".encode())
    code = getattr(fn, "__code__", None) or getattr(type(fn).__call__, "__code__", None)
    if code is not None:
        h.update(code.co_code)
        h.update(repr(code.co_consts).encode())
    module = sys.modules.get(getattr(fn, "__module__", None) or type(fn).__module__ or "")
    for mod in (module, consistency, rouge):
        if mod is None:
            continue
        try:
            h.update(inspect.getsource(mod).encode())
        except (OSError, TypeError):  # defined interactively: its code above is all there is
            pass
    ep = None if name in _SCORERS or ":" in name else _entry_points().get(name)
    if ep is not None:
        h.update(ep.value.encode())
        dist = getattr(ep, "dist", None)
        if dist is not None:
            h.update(f"{dist.name}=={dist.version}".encode())
    for d in ("nltk", "rapidfuzz", "rouge-score"):
        try:
            h.update(f"{d}=={metadata.version(d)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{d} absent".encode())
    return f"{name}:{h.hexdigest()[:12]}"


def scorer_names() -> list[str]:
    """Registered and built-in scorers plus those installed packages offer as entry points (not loaded)."""
    return sorted(set(_SCORERS) | set(_entry_points()), key=str.casefold)


# ---------------------------------------------------------------- coverage, choice, degenerate tables


def item_kinds(item: EvalItem, models: Sequence[str]) -> tuple[str, ...]:
    """What ``item`` carries to be scored against: any of ``answer``, ``reference``, ``labels`` (a label
    for one of ``models``), in mixed's order of preference."""
    out = []
    if item.answer is not None:
        out.append("answer")
    if item.reference is not None:
        out.append("reference")
    if any(m in item.labels for m in models):
        out.append("labels")
    return tuple(out)


@dataclass(frozen=True)
class ScorerCoverage:
    """How many items of an eval set a scorer gives a value for (items without one are left out of means)."""

    scorer: str
    n_scored: int
    n_items: int
    needs: str  # what an item needs, e.g. "a gold answer"

    @property
    def applies(self) -> bool:
        return self.n_scored > 0

    @property
    def complete(self) -> bool:
        return self.n_scored == self.n_items

    @property
    def sentence(self) -> str:
        """E.g. ``"20 of 25 items have a gold answer"``."""
        items = "item has" if self.n_items == 1 else "items have"
        return f"{self.n_scored} of {self.n_items} {items} {self.needs}"

    @property
    def note(self) -> str | None:
        """A sentence to show the user when some items go unscored; None when every item is scored."""
        if self.complete or not self.applies:
            return None
        left = self.n_items - self.n_scored
        return (
            f"scorer {self.scorer!r}: {self.sentence}; the other {left} item{'s are' if left != 1 else ' is'} "
            "left out of its quality means"
        )


def scorer_coverage(
    name: str, items: Sequence[EvalItem], models: Sequence[str], *, answer_pattern: str = DEFAULT_ANSWER_PATTERN
) -> ScorerCoverage:
    """How many ``items`` scorer ``name`` gives a value for (for at least one of ``models``). Built-ins are
    judged by what the items carry; any other scorer is asked, with an empty answer text."""
    if name in _NEEDS and _SCORERS.get(name) is _BUILTIN[name]:
        kind = next(k for k, s in _KIND_SCORER.items() if s == name)
        n = sum(kind in item_kinds(it, models) for it in items)
        return ScorerCoverage(name, n, len(items), _NEEDS[name])
    if name == "mixed" and _SCORERS.get(name) is _BUILTIN[name]:
        n = sum(bool(item_kinds(it, models)) for it in items)
        return ScorerCoverage(name, n, len(items), "a gold answer, a reference or a label for one of the models")
    fn = get_scorer(name, answer_pattern=answer_pattern)
    probe = list(models) or [""]
    n = sum(any(fn(it, "", m) is not None for m in probe) for it in items)
    return ScorerCoverage(name, n, len(items), f"a value from scorer {name!r}")


def _kind_counts(items: Sequence[EvalItem], models: Sequence[str]) -> str:
    """E.g. "0 of 3 items have a gold answer, 0 a reference, 0 a label for one of the models (a, b)"."""
    kinds = [item_kinds(it, models) for it in items]
    a, r, lab = (sum(k in ks for ks in kinds) for k in _KIND_SCORER)
    head = ScorerCoverage("", a, len(items), _NEEDS["exact"]).sentence
    return f"{head}, {r} a reference, {lab} a label for one of the models ({', '.join(models) or 'none given'})"


def _mixed_differs(items: Sequence[EvalItem], models: Sequence[str]) -> bool:
    """No single kind covers every item that carries one: only then does ``mixed`` differ from them all."""
    carrying = [ks for it in items if (ks := set(item_kinds(it, models)))]
    return bool(carrying) and not any(all(k in ks for ks in carrying) for k in _KIND_SCORER)


def resolve_scorer(
    name: str | None,
    items: Sequence[EvalItem],
    models: Sequence[str],
    *,
    answer_pattern: str = DEFAULT_ANSWER_PATTERN,
) -> str:
    """The scorer to use on ``items``; raises :class:`WorkbenchError` with a message saying what is wrong.

    With a ``name``: an unknown name is refused (the message lists the known names and the plugin syntax);
    a scorer that gives a value for no item is refused saying why ("0 of 25 items have a gold answer") and
    which scorers would apply. A scorer that applies to some items only is accepted (those items are left
    out of its means; :func:`scorer_coverage` gives the sentence to report).

    With ``name=None``: the one kind the items carry (``exact`` for gold answers, ``rougeL`` for
    references, ``label`` for labels), or ``mixed`` when no single kind covers every item that carries one.
    When one kind covers them all and another does too, the first of answer, reference, labels wins.
    """
    if not items:
        raise WorkbenchError("cannot choose a scorer for an empty eval set")
    if name is not None:
        _lookup(name)  # unknown names first, with their own message
        cov = scorer_coverage(name, items, models, answer_pattern=answer_pattern)
        if cov.applies:
            if _takes_answer_pattern(_lookup(name)):
                get_scorer(name, answer_pattern=answer_pattern)  # a bad pattern is refused now, not mid-build
            return name
        others = [
            c
            for s in ("exact", "rougeL", "label", "mixed")
            if s != name
            and (s != "mixed" or _mixed_differs(items, models))
            and (c := scorer_coverage(s, items, models)).applies
        ]
        alt = (
            "scorers that apply: " + "; ".join(f"{c.scorer} ({c.sentence})" for c in others)
            if others
            else f"no built-in scorer applies ({_kind_counts(items, models)}); name your own as {PLUGIN_SYNTAX}"
        )
        raise WorkbenchError(f"scorer {name!r} does not apply to this eval set: {cov.sentence}; {alt}")
    carrying = [ks for it in items if (ks := set(item_kinds(it, models)))]
    if not carrying:
        raise WorkbenchError(
            f"no scorer applies to this eval set: {_kind_counts(items, models)}; add gold answers, references "
            f"or labels to the items, or name your own scorer as {PLUGIN_SYNTAX}"
        )
    for kind, scorer in _KIND_SCORER.items():
        if all(kind in ks for ks in carrying):
            return scorer
    return "mixed"


def applicable_scorers(
    items: Sequence[EvalItem], models: Sequence[str], *, min_coverage: float | None = None
) -> list[str]:
    """The built-in and registered scorers that give a value for at least one item (or, with an explicit
    ``min_coverage``, for at least that share of the items), sorted by name. ``mixed`` is listed only
    when the items carry different kinds (otherwise it equals the one scorer of that kind); entry-point
    and ``module:function`` scorers are not probed. Prefer :func:`resolve_scorer`, which says why a
    scorer does not apply."""
    out = []
    mixed_differs = _mixed_differs(items, models)
    for name in sorted(_SCORERS, key=str.casefold):
        if name == "mixed" and _SCORERS[name] is _BUILTIN["mixed"] and not mixed_differs:
            continue
        cov = scorer_coverage(name, items, models)
        need = 1 if min_coverage is None else max(1, math.ceil(min_coverage * cov.n_items - 1e-9))
        if cov.n_scored >= need:
            out.append(name)
    return out


def degenerate_scorer(calls: pd.DataFrame, scorer: str, *, answer_pattern: str | None = None) -> str | None:
    """A sentence saying why ``scorer``'s values in an outcome table's ``calls`` cannot rank routing
    policies, or None when they can. Looks at the single-call rows (the answers the router returns):
    degenerate when no call got a value, when every value is 0, or when every tier scores the same on
    every item (then only cost separates the policies). ``answer_pattern``, if given, is named in the
    hint for answer-extracting scorers."""
    col = f"q_{scorer}"
    if col not in calls.columns:
        raise WorkbenchError(f"the outcome table has no column {col!r}; it was built without scorer {scorer!r}")
    rows = calls[calls["variant"] == "single"] if "variant" in calls.columns else calls
    vals = rows[["item_id", "tier_index", col]].dropna(subset=[col])
    hint = ""
    if scorer in ("exact", "mixed") or answer_pattern is not None:
        now = f" (now {answer_pattern!r})" if answer_pattern is not None else ""
        hint = (
            f"; if the final answers are extracted wrongly, set the policy's confidence.answer_pattern{now} "
            f"to one of {', '.join(consistency.ANSWER_EXTRACTORS)} or a regular expression"
        )
    if vals.empty:
        return f"scorer {scorer!r} gave no value for any of the {len(rows)} answers in the table"
    n_items = vals["item_id"].nunique()
    n_tiers = vals["tier_index"].nunique()
    q = vals[col].astype(float)
    if (q == 0).all():
        return (
            f"every answer scores 0 under scorer {scorer!r} ({len(vals)} answers, {n_items} items, "
            f"{n_tiers} tiers), so it cannot tell the tiers apart{hint}"
        )
    if n_tiers < 2:
        return None
    spread = vals.groupby("item_id")[col].agg(lambda s: float(s.max() - s.min()) if s.size > 1 else math.nan)
    compared = spread.dropna()
    if not compared.empty and bool((compared.abs() < 1e-12).all()):
        same = sorted(set(q.round(6)))
        shown_vals = ", ".join(f"{v:g}" for v in same[:4]) + (", ..." if len(same) > 4 else "")
        return (
            f"every tier scores the same on every item under scorer {scorer!r} ({len(compared)} items compared "
            f"across {n_tiers} tiers; values {shown_vals}), so quality cannot separate the routing policies "
            f"and only cost does{hint}"
        )
    return None
