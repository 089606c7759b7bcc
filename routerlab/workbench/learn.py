"""Train the learned start-tier router, and compare it with the keyword classifier, a random router
and the oracle the way RouteLLM does (APGR and CPT, with bootstrap intervals).

:func:`train_start_router` fits, for each non-final tier, scikit-learn's
``LogisticRegression`` on the hashed request features of
:mod:`routerlab.learned`, with the label "this tier's single answer scores at
least as well as the final tier's" (items whose score is missing are left
out), on the items of ``mask`` (the tuning split). The result is a
:class:`~routerlab.learned.StartRouter`: plain coefficients that the policy
JSON carries and the production router evaluates in pure Python. The sweep
uses the same pure-Python scores (:meth:`Outcomes.start_scores`), so what it
simulates is what production does; scikit-learn's own probabilities are
compared with them once, at training, and the largest difference is kept in
the model's ``trained`` record.

:func:`compare_start_routers` scores routers between two models as RouteLLM
(Ong et al., 2024) does: *weak* is tier 0 and *strong* the final tier, a
router sends its most "strong-looking" items to the strong model, and the
curve of quality against the share of strong calls gives APGR (area under
PGR) and CPT(50%) (the strong-call share that recovers half the gap), by
:func:`routerlab.workbench.frontier.apgr` and :func:`~routerlab.workbench.frontier.cpt`.
Items the router cannot tell apart (one keyword class) are sent together, and
the curve interpolates linearly between such groups (what random tie-breaking
gives in expectation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from routerlab.classifier import classify_complexity
from routerlab.errors import WorkbenchError
from routerlab.learned import DENSE_FEATURES, Hashing, StartRouter, TierModel, features
from routerlab.workbench.frontier import apgr, cpt
from routerlab.workbench.outcomes import Outcomes


def good_enough(o: Outcomes, scorer: str) -> np.ndarray:
    """(non-final tiers, items): 1.0 where the tier's single answer scores at least the final tier's,
    0.0 where it scores less, NaN where either score is missing."""
    if scorer not in o.scorers:
        raise WorkbenchError(f"unknown scorer {scorer!r}; the outcome table has {o.scorers}")
    q = o.dense().s_q[scorer]  # (N, T)
    final = q[:, -1]
    out = np.where(q[:, :-1] >= final[:, None] - 1e-12, 1.0, 0.0).T
    missing = np.isnan(q[:, :-1]).T | np.isnan(final)[None, :]
    return np.where(missing, np.nan, out)


def _design(o: Outcomes, hashing: Hashing) -> Any:
    from scipy.sparse import csr_matrix

    if "request_text" not in o.items:
        raise WorkbenchError(
            "this outcome table has no request texts (items.request_text); build it with build_outcomes"
        )
    cl = o.policy.classifier
    indptr, indices, values = [0], [], []
    for text in o.items["request_text"].astype(str):
        x = features(text, classify_complexity(text, cl), hashing)
        for i in sorted(x):
            indices.append(i)
            values.append(x[i])
        indptr.append(len(indices))
    width = hashing.n_features + len(DENSE_FEATURES)
    return csr_matrix((np.array(values, np.float64), np.array(indices, np.int64), np.array(indptr)), (o.n_items, width))


def train_start_router(
    o: Outcomes,
    scorer: str,
    *,
    mask: np.ndarray | None = None,
    hashing: Hashing | None = None,
    c: float = 1.0,
    thresholds: Sequence[float] | None = None,
) -> StartRouter:
    """Fit one logistic model per non-final tier on the ``mask`` items (default: all); see the module
    docstring. ``c`` is scikit-learn's inverse regularisation strength; ``thresholds`` (default 0.5
    each) are the start thresholds the exported router uses until a sweep picks others."""
    from sklearn import __version__ as sklearn_version
    from sklearn.linear_model import LogisticRegression

    hashing = hashing or Hashing()
    t = len(o.tiers)
    if t < 2:
        raise WorkbenchError("a one-tier ladder has no start tier to learn")
    use = np.ones(o.n_items, bool) if mask is None else np.asarray(mask, bool)
    x = _design(o, hashing)
    y_all = good_enough(o, scorer)
    thr = [0.5] * (t - 1) if thresholds is None else [float(v) for v in thresholds]
    models: list[TierModel] = []
    record: dict[str, Any] = {"scorer": scorer, "items": int(use.sum()), "c": c, "sklearn": sklearn_version}
    worst_gap = 0.0
    per_tier = []
    for ti in range(t - 1):
        y = y_all[ti]
        rows = np.flatnonzero(use & ~np.isnan(y))
        pos = int(y[rows].sum())
        if len(rows) == 0:
            raise WorkbenchError(f"no training item has a {scorer!r} score at tier {ti} and the final tier")
        if pos in (0, len(rows)):  # one class only: a constant model (Laplace-smoothed share)
            share = (pos + 1) / (len(rows) + 2)
            models.append(TierModel(math.log(share / (1 - share)), (), thr[ti]))
            per_tier.append({"tier": ti, "items": len(rows), "good": pos, "constant": True})
            continue
        lr = LogisticRegression(C=c, solver="liblinear", max_iter=1000, random_state=0)
        lr.fit(x[rows], y[rows].astype(int))
        coef = lr.coef_[0]
        nz = np.flatnonzero(coef)
        model = TierModel(float(lr.intercept_[0]), tuple((int(i), float(coef[i])) for i in nz), thr[ti])
        models.append(model)
        ref = lr.predict_proba(x[rows])[:, 1]
        ours = np.array([model.probability(_row(x, int(r))) for r in rows])
        worst_gap = max(worst_gap, float(np.max(np.abs(ref - ours))))
        per_tier.append({"tier": ti, "items": len(rows), "good": pos, "weights": len(nz)})
    record["tiers"] = per_tier
    record["max_abs_diff_vs_sklearn"] = worst_gap
    return StartRouter(hashing, tuple(models), record)


def _row(x: Any, r: int) -> dict[int, float]:
    lo, hi = x.indptr[r], x.indptr[r + 1]
    return {int(i): float(v) for i, v in zip(x.indices[lo:hi], x.data[lo:hi], strict=True)}


# ---------------------------------------------------------------- RouteLLM-style comparison


def _curve(strongness: np.ndarray, q_weak: np.ndarray, q_strong: np.ndarray) -> pd.DataFrame:
    """(premium_call_share, quality) at every cut of ``strongness`` (ties sent together), plus none."""
    order = np.argsort(-strongness, kind="stable")
    s = strongness[order]
    gain = (q_strong - q_weak)[order]
    n = len(s)
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) + 1  # the group boundaries, ties kept together
    base = float(q_weak.mean())
    cum = np.cumsum(gain)
    shares = np.r_[0.0, ends / n]
    quality = np.r_[base, base + cum[ends - 1] / n]
    return pd.DataFrame({"premium_call_share": shares, "quality": quality})


def _metrics(strongness: np.ndarray, qw: np.ndarray, qs: np.ndarray) -> tuple[float, float]:
    curve = _curve(strongness, qw, qs)
    w, s = float(qw.mean()), float(qs.mean())
    return apgr(curve, quality="quality", weak=w, strong=s), cpt(curve, 0.5, quality="quality", weak=w, strong=s)


def compare_start_routers(
    o: Outcomes,
    router: StartRouter,
    scorer: str,
    *,
    mask: np.ndarray | None = None,
    bootstrap: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """APGR and CPT(50%) on the ``mask`` items (the test split) for the learned router, the keyword
    classifier, a random router (seeded) and the oracle; 95% bootstrap intervals (items resampled).
    Weak: tier 0, strong: the final tier, each answering with its single call."""
    use = np.ones(o.n_items, bool) if mask is None else np.asarray(mask, bool)
    q = o.dense().s_q[scorer]
    qw_all, qs_all = q[:, 0], q[:, -1]
    keep = use & ~np.isnan(qw_all) & ~np.isnan(qs_all)
    idx = np.flatnonzero(keep)
    if len(idx) < 2:
        raise WorkbenchError(f"fewer than 2 items with {scorer!r} scores at tier 0 and the final tier")
    rng = np.random.default_rng(seed)
    p0 = o.start_scores(router)[0]
    cls = o.items["class_index"].to_numpy().astype(float)
    routers = {
        "learned start router": 1.0 - p0,  # a low P(tier 0 is good enough) goes to the strong model
        "keyword classifier": cls,  # complex first, then medium
        "random router": rng.random(o.n_items),
        "oracle": qs_all - qw_all,
    }
    rows = []
    boots = rng.integers(0, len(idx), size=(bootstrap, len(idx)))
    for name, s in routers.items():
        a, c = _metrics(s[idx], qw_all[idx], qs_all[idx])
        ba, bc = [], []
        for b in boots:
            j = idx[b]
            x, y = _metrics(s[j], qw_all[j], qs_all[j])
            ba.append(x)
            bc.append(y)
        rows.append(
            {
                "router": name,
                "items": len(idx),
                "APGR": a,
                "APGR_lo": _pct(ba, 2.5),
                "APGR_hi": _pct(ba, 97.5),
                "CPT50": c,
                "CPT50_lo": _pct(bc, 2.5),
                "CPT50_hi": _pct(bc, 97.5),
                "resamples_reaching_50": int(np.sum(~np.isnan(np.array(bc, float)))),
            }
        )
    df = pd.DataFrame(rows)
    df.attrs["weak_quality"] = float(qw_all[idx].mean())
    df.attrs["strong_quality"] = float(qs_all[idx].mean())
    df.attrs["bootstrap"] = bootstrap
    return df


def _pct(values: Sequence[float], p: float) -> float:
    v = np.array(values, float)
    v = v[~np.isnan(v)]
    return float(np.percentile(v, p)) if len(v) else math.nan


def router_threshold_grid(
    o: Outcomes, router: StartRouter, *, mask: np.ndarray | None = None, n: int = 6
) -> list[list[float]]:
    """Per non-final tier: start thresholds at quantiles of the ``mask`` items' scores (plus 1.01: never
    start there), for a sweep."""
    s = o.start_scores(router)
    use = np.ones(o.n_items, bool) if mask is None else np.asarray(mask, bool)
    out = []
    for ti in range(s.shape[0]):
        vals = s[ti][use]
        qs = np.quantile(vals, np.linspace(0, 1, n)) if len(vals) else []
        out.append(sorted({float(v) for v in qs} | {1.01}))
    return out


__all__ = ["compare_start_routers", "good_enough", "router_threshold_grid", "train_start_router"]
