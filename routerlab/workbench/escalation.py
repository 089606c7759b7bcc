"""Smarter escalation, measured: majority answers, adaptive k and a learned start tier beside the
fixed two-sample check, each chosen on dev and measured on test.

:func:`compare_escalation` sweeps nested grids over the same outcome table
(each a superset of the one before, so on dev a family can only do as well or
better; on test it may not):

1. **fixed k=2** -- today's grid (:func:`~routerlab.workbench.sweep.default_grid`);
2. **+ majority answer** -- the check may return the samples' medoid;
3. **+ adaptive k** -- after two disagreeing samples, draw up to ``k_max``
   (each ``k_max`` and stopping share in ``adaptive``), where the table
   recorded the draws;
4. **+ sample temperature** -- the checks above at each other sample
   temperature the cassettes recorded for a tier (the outcome table's
   variants; thresholds from that variant's own agreement quantiles);
5. **+ learned start tier** -- a start router trained on the tuning split
   (:func:`~routerlab.workbench.learn.train_start_router`) picks each query's
   start tier (thresholds at quantiles of its tuning scores), the check
   deciding escalation from there.

For each family and floor the cheapest policy reaching the floor on the
choosing split (:func:`~routerlab.workbench.export.choose`) is measured on
test: share of premium quality and cost reduction against all-premium, each
with a paired bootstrap 95% interval, and whether the floor held on test.
With a learned start tier the router is trained on ``tune`` and every family
is chosen on ``dev`` minus ``tune`` (the calibration split), which the router
has not seen: choosing on the items it was fitted to would flatter it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from routerlab.errors import WorkbenchError
from routerlab.jsonio import atomic_write
from routerlab.workbench.export import choose
from routerlab.workbench.frontier import pareto_frontier
from routerlab.workbench.learn import router_threshold_grid, train_start_router
from routerlab.workbench.outcomes import Outcomes
from routerlab.workbench.sweep import PolicyPoint, default_grid, sweep

FAMILIES = ("fixed k=2", "+ majority answer", "+ adaptive k", "+ sample temperature", "+ learned start tier")


def adaptive_settings(o: Outcomes) -> tuple[tuple[int, float], ...]:
    """(k_max, stop_share) pairs the table supports: draws to 4 and to the most recorded, stopping at a
    simple majority or at three quarters."""
    top = o.dense().k_max
    kms = sorted({k for k in (4, top) if 2 < k <= top})
    return tuple((k, s) for k in kms for s in (0.5, 0.75))


def family_points(
    o: Outcomes, *, mask: np.ndarray, tune: np.ndarray | None = None, scorer: str | None = None, n_thresholds: int = 8
) -> dict[str, list[PolicyPoint]]:
    """The policies of each family (see the module docstring), thresholds from the ``mask`` items."""
    base = default_grid(o, n_thresholds=n_thresholds)
    fixed = base.points(o, mask=mask)
    out: dict[str, list[PolicyPoint]] = {FAMILIES[0]: fixed}
    if not base.similarities:
        return out
    checked, majority, drawn = _checks(o, fixed)
    out[FAMILIES[1]] = fixed + majority
    if drawn:
        out[FAMILIES[2]] = out[FAMILIES[1]] + drawn
    if o.variants:
        hot: list[PolicyPoint] = []
        for vec, ov in sorted(o.variants.items()):
            temps = tuple(None if a == b else a for a, b in zip(vec, o.temperatures, strict=True))
            c2, m2, d2 = _checks(ov, default_grid(ov, n_thresholds=n_thresholds).points(ov, mask=mask))
            hot += [replace(p, temperatures=temps) for p in c2 + m2 + d2]
        out[FAMILIES[3]] = out[list(out)[-1]] + hot
    if tune is not None and scorer is not None and "request_text" in o.items and len(o.tiers) > 1:
        try:
            router = train_start_router(o, scorer, mask=tune)
        except WorkbenchError:
            return out  # e.g. no tuning item with a score at both ends of the ladder: no learned family
        grid = router_threshold_grid(o, router, mask=tune, n=4)
        combos = list(itertools.product(*grid))
        prev = out[list(out)[-1]]
        # the learned start with the checks of the majority family (start tiers now come from the router,
        # so the class mappings collapse), and with no check
        shapes = {replace(p, start=(0, 0, 0)) for p in out[FAMILIES[1]] if p.cascade}
        shapes |= {PolicyPoint((0, 0, 0), True), PolicyPoint((0, 0, 0), False)}
        ordered = sorted(shapes, key=lambda p: p.id)
        learned = [replace(s, router=router, router_thresholds=tuple(c)) for s in ordered for c in combos]
        out[FAMILIES[4]] = prev + learned
    return out


def _checks(o: Outcomes, fixed: list[PolicyPoint]) -> tuple[list[PolicyPoint], list[PolicyPoint], list[PolicyPoint]]:
    """(the checked policies of ``fixed``, their majority-answer twins, their adaptive-k versions)."""
    checked = [p for p in fixed if p.similarity != "none"]
    majority = [replace(p, answer="majority") for p in checked]
    adaptive = adaptive_settings(o)
    drawn = [
        replace(p, k_max=km, stop_share=ss) for p in checked + majority if p.k == 2 and p.cascade for km, ss in adaptive
    ]
    return checked, majority, drawn


def compare_escalation(
    o: Outcomes,
    *,
    scorer: str,
    dev: np.ndarray,
    test: np.ndarray,
    tune: np.ndarray | None = None,
    floors: Sequence[float] = (0.9, 0.95),
    bootstrap: int = 500,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(table: one row per family and floor with its test numbers; each family's frontier on the choosing
    split, ``attrs["split"]`` naming it)."""
    choose_on = dev if tune is None else dev & ~np.asarray(tune, bool)
    fams = family_points(o, mask=choose_on, tune=tune, scorer=scorer)
    q = f"quality_{scorer}"
    rows: list[dict[str, Any]] = []
    frontiers: dict[str, pd.DataFrame] = {}
    for name, pts in fams.items():
        sw = sweep(o, pts, mask=choose_on, bootstrap=50, progress=progress)
        frontiers[name] = pareto_frontier(sw, quality=q)
        for floor in floors:
            ch = choose(o, sw, scorer=scorer, floor=floor, dev=choose_on, test=test, bootstrap=bootstrap)
            m = ch.metrics()["test"]
            rows.append(
                {
                    "family": name,
                    "policies": len(pts),
                    "floor": floor,
                    "policy": ch.label(),
                    "test quality share": m["quality_share_of_premium"],
                    "share CI": m["quality_share_ci95"],
                    "test cost reduction": m["cost_reduction_vs_premium"],
                    "reduction CI": m["cost_reduction_ci95"],
                    "floor met on test": ch.meets_floor("test"),
                }
            )
    table = pd.DataFrame(rows)
    table.attrs["split"] = "dev" if tune is None else "calibrate"
    table.attrs["items"] = int(np.asarray(choose_on, bool).sum())
    return table, frontiers


def save_escalation_png(
    frontiers: dict[str, pd.DataFrame], path: str | os.PathLike[str], *, quality: str, title: str, split: str = "dev"
) -> Path:
    """The dev frontier of each family on one plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["-o", "--s", "-.^", ":D"]
    for (name, fr), st in zip(frontiers.items(), styles, strict=False):
        fr = fr.sort_values("cost_per_1k_usd")
        ax.plot(fr["cost_per_1k_usd"], fr[quality], st, ms=3, lw=1.2, label=f"{name} ({len(fr)} frontier policies)")
    ax.set_xlabel(f"cost per 1k queries (USD, {split} split)")
    ax.set_ylabel(quality.removeprefix("quality_"))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out


__all__ = ["FAMILIES", "adaptive_settings", "compare_escalation", "family_points", "save_escalation_png"]
