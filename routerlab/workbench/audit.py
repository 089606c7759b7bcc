"""Does the choice hold on traffic it was not chosen on? The whole choice repeated over random re-splits.

For each of ``splits`` seeded re-splits (tune / calibrate / test, stratified,
as the study's own), both choosers run from scratch, the grid's thresholds
included: the *point-estimate* chooser on tune + calibrate (its dev split),
the *certified* chooser (Learn then Test) on tune, then calibrate. On the
held-out test part the audit records:

- whether the floor held (test quality >= floor x all-premium test quality);
- the ratio of the chosen policy's test cost to the cheapest policy that met
  the floor on test (best in hindsight, over every policy either chooser's
  grid held, all-premium included);
- whether the chooser's own paired bootstrap 95% CI of the share of premium
  quality (on the split it chose on) covered the test share.

A chooser whose floor holds in far fewer than 1 - delta of re-splits does not
keep its promise; the certified chooser's guarantee is that it holds in at
least 1 - delta (up to the audit's own sampling error, shown as a CI).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from routerlab.errors import WorkbenchError
from routerlab.jsonio import atomic_write
from routerlab.workbench.certify import Bound, ltt_select
from routerlab.workbench.export import budget_setup, paired_cis, premium_point, scored_mean
from routerlab.workbench.frontier import reaches
from routerlab.workbench.outcomes import PICO, Outcomes
from routerlab.workbench.sweep import Grid, PolicyPoint, simulate, split_three

CHOOSER_NAMES = {"point": "point estimate", "certified": "certified"}


class _Cache:
    """Per-item quality, cost and failure of each policy over every item, simulated once."""

    def __init__(self, o: Outcomes, scorer: str) -> None:
        self.o, self.scorer = o, scorer
        self.rows: dict[PolicyPoint, int] = {}
        self.q: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.f: list[np.ndarray] = []
        self._arrays = o.dense()

    def add(self, points: list[PolicyPoint]) -> None:
        new = list(dict.fromkeys(p for p in points if p not in self.rows))
        for i in range(0, len(new), 512):
            chunk = new[i : i + 512]
            sim = simulate(self.o, chunk, arrays=self._arrays)
            for j, pt in enumerate(chunk):
                self.rows[pt] = len(self.q)
                self.q.append(sim.quality[self.scorer][j])
                self.c.append(sim.cost_pico[j].astype(np.float64) / float(PICO))
                self.f.append(sim.tier[j] < 0)

    def arrays(self, points: list[PolicyPoint], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = [self.rows[p] for p in points]
        q = np.stack([self.q[r][idx] for r in rows])
        c = np.stack([self.c[r][idx] for r in rows])
        f = np.stack([self.f[r][idx] for r in rows])
        return q, c, f


def _binom_ci(k: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson 95% interval for a rate of k in n."""
    from scipy.stats import beta

    if n == 0:
        return math.nan, math.nan
    lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class AuditResult:
    """One row per (re-split, chooser) in ``runs``; ``summary`` aggregates per chooser."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    floor: float
    delta: float
    bound: str
    splits: int
    split: tuple[float, float, float]

    def words(self) -> str:
        """The audit's finding in words, including where a chooser missed its target."""
        out = []
        for _, r in self.summary.iterrows():
            held, lo, hi = r["floor_held_rate"], r["floor_held_lo"], r["floor_held_hi"]
            s = (
                f"{r['chooser']}: on the held-out part, the chosen policy's quality reached the {self.floor:.0%} "
                f"floor in {held:.0%} of {self.splits} re-splits (95% CI {lo:.0%}-{hi:.0%})"
            )
            if r["chooser"] == "certified":
                target = 1 - self.delta
                s += (
                    f"; its guarantee ({target:.0%}) is about the mean on new traffic, which a finite held-out "
                    "part estimates with noise, so only a rate whose CI lies below it is evidence against it"
                    + (
                        f" (here the CI lies below {target:.0%}: evidence that the guarantee failed)"
                        if hi < target
                        else " (none here)"
                    )
                    + f"; it certified something cheaper than all-premium in {r['feasible_rate']:.0%} of re-splits"
                )
            s += (
                f"; chosen cost / cheapest that met the floor in hindsight: median {r['cost_ratio_median']:.2f}x, "
                f"worst {r['cost_ratio_worst']:.2f}x; its 95% CI covered the held-out share in "
                f"{r['ci_coverage_rate']:.0%} of re-splits"
            )
            out.append(s + ".")
        return "\n".join(out)


def audit(
    o: Outcomes,
    grid: Grid,
    *,
    scorer: str,
    floor: float = 0.95,
    delta: float = 0.1,
    bound: Bound = "wsr",
    split: tuple[float, float, float] = (0.2, 0.3, 0.5),
    splits: int = 50,
    seed: int = 1,
    bootstrap: int = 200,
    progress: bool = False,
    budget_usd: float | None = None,
    cost_bound_usd: float | None = None,
) -> AuditResult:
    """Repeat both choices over ``splits`` seeded re-splits (seeds ``seed``, ``seed + 1``, ...), each exactly
    as :func:`~routerlab.workbench.export.choose` and :func:`~routerlab.workbench.export.certify` (with the
    same budget, when one is given) would choose on that split."""
    if splits < 1:
        raise WorkbenchError(f"an audit needs at least 1 re-split, got {splits}")
    cache = _Cache(o, scorer)
    prem = premium_point(o)
    fallback = replace(prem, cap_usd=o.policy.max_cost_per_query_usd)
    cache.add([prem, fallback])
    valid = np.ones(o.n_items, bool)
    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=splits, desc="audit", unit="re-split")
    for r in range(splits):
        s = seed + r
        tune, cal, test = split_three(o, split, seed=s)
        dev = tune | cal
        pts_dev = grid.points(o, mask=dev)
        pts_tune, cost_bound = budget_setup(
            o, [p for p in grid.points(o, mask=tune) if p != prem], budget_usd, cost_bound_usd
        )
        cache.add(pts_dev + pts_tune)
        ix = {
            name: np.flatnonzero(m & valid) for name, m in (("tune", tune), ("cal", cal), ("dev", dev), ("test", test))
        }
        pq = {k: cache.arrays([prem, fallback], v) for k, v in ix.items()}  # premium, fallback

        def share_ok(qmean: np.ndarray, split_name: str, pq: dict[str, Any] = pq) -> np.ndarray:
            return reaches(qmean, floor * float(scored_mean(pq[split_name][0][:1])[0]))

        # point-estimate chooser on dev (as export.choose: no failures on dev, cheapest, then best quality)
        dq, dc, _ = cache.arrays(pts_dev, ix["dev"])
        failed = cache.arrays(pts_dev, np.flatnonzero(dev))[2].any(axis=1)  # as choose(): no failure on dev
        ok = np.flatnonzero(share_ok(scored_mean(dq), "dev") & ~failed)
        if len(ok):
            best = ok[np.lexsort((-scored_mean(dq[ok]), dc[ok].mean(axis=1)))[0]]
            point_choice = pts_dev[int(best)]
        else:
            point_choice = fallback
        # certified chooser: order on tune, test on calibration (items in a seeded random order)
        tq, tc, _ = cache.arrays(pts_tune, ix["tune"])
        tcm = tc.mean(axis=1)
        cheaper = [i for i in range(len(pts_tune)) if tcm[i] < float(pq["tune"][1][1].mean()) * (1 - 1e-12)]
        cand = [pts_tune[i] for i in cheaper]
        perm = np.random.default_rng(s).permutation(len(ix["cal"]))
        cert_choice = fallback
        if cand:
            cq, cc, _ = cache.arrays(cand, ix["cal"][perm])
            ref = pq["cal"][0][0][perm]
            seq = ltt_select(
                scored_mean(tq[cheaper])[:, None], tcm[cheaper][:, None], cq, ref, cc,
                floor=floor, delta=delta, bound=bound, budget=budget_usd, cost_bound=cost_bound,
            )  # fmt: skip
            if seq.chosen is not None and float(cc[seq.chosen].mean()) < float(pq["cal"][1][1].mean()) * (1 - 1e-12):
                cert_choice = cand[seq.chosen]
        # hindsight: the cheapest policy of either grid (or all-premium) that met the floor on test
        pool = list(dict.fromkeys([*pts_dev, *pts_tune, prem, fallback]))
        hq, hc, _ = cache.arrays(pool, ix["test"])
        meets = share_ok(scored_mean(hq), "test")
        hindsight = float(hc.mean(axis=1)[meets].min()) if bool(meets.any()) else math.nan
        for chooser, pt, on in (("point", point_choice, "dev"), ("certified", cert_choice, "cal")):
            (q_on, c_on, _), (q_te, c_te, _) = cache.arrays([pt, prem], ix[on]), cache.arrays([pt, prem], ix["test"])
            ci = paired_cis(q_on[0], q_on[1], c_on[0], c_on[1], bootstrap=bootstrap, seed=s)["quality_share_ci95"]
            means = scored_mean(q_te)
            prem_q = float(means[1])
            share = float(means[0]) / prem_q if prem_q else math.nan
            cost = float(c_te[0].mean())
            rows.append(
                {
                    "split_seed": s,
                    "chooser": chooser,
                    "policy": pt.label(len(o.tiers)),
                    "policy_id": pt.id,
                    "cheaper_than_premium": pt not in (prem, fallback),
                    "test_share": share,
                    "floor_held": bool(reaches(float(means[0]), floor * prem_q)) if prem_q else False,
                    "test_cost_per_1k_usd": cost * 1000,
                    "hindsight_cost_per_1k_usd": hindsight * 1000,
                    "cost_ratio_to_hindsight": cost / hindsight if hindsight > 0 else math.nan,
                    "ci_lo": math.nan if ci is None else ci[0],
                    "ci_hi": math.nan if ci is None else ci[1],
                    "ci_covered": bool(ci is not None and ci[0] <= share <= ci[1]),
                }
            )
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    runs = pd.DataFrame(rows)
    summary = []
    for chooser in ("point", "certified"):
        g = runs[runs["chooser"] == chooser]
        k = int(g["floor_held"].sum())
        lo, hi = _binom_ci(k, len(g))
        cov = int(g["ci_covered"].sum())
        ratios = g["cost_ratio_to_hindsight"].dropna()
        summary.append(
            {
                "chooser": chooser,
                "re_splits": len(g),
                "floor_held_rate": k / len(g) if len(g) else math.nan,
                "floor_held_lo": lo,
                "floor_held_hi": hi,
                "cost_ratio_median": float(ratios.median()) if len(ratios) else math.nan,
                "cost_ratio_worst": float(ratios.max()) if len(ratios) else math.nan,
                "ci_coverage_rate": cov / len(g) if len(g) else math.nan,
                "feasible_rate": float(g["cheaper_than_premium"].mean()) if len(g) else math.nan,
                "median_test_share": float(g["test_share"].median()) if len(g) else math.nan,
            }
        )
    return AuditResult(runs, pd.DataFrame(summary), floor, delta, bound, splits, tuple(split))  # type: ignore[arg-type]


def audit_table(result: AuditResult) -> pd.DataFrame:
    """The summary for people: one row per chooser, rates as percentages with their CIs."""
    rows = []
    for _, r in result.summary.iterrows():
        rows.append(
            {
                "chooser": CHOOSER_NAMES[str(r["chooser"])],
                "held-out quality reached the floor (share of re-splits)": (
                    f"{r['floor_held_rate']:.0%} [{r['floor_held_lo']:.0%}, {r['floor_held_hi']:.0%}]"
                ),
                "cost / hindsight best, median": f"{r['cost_ratio_median']:.2f}x",
                "cost / hindsight best, worst": f"{r['cost_ratio_worst']:.2f}x",
                "CI covered held-out share": f"{r['ci_coverage_rate']:.0%}",
                "cheaper than all-premium": f"{r['feasible_rate']:.0%}",
                "median test share of premium": f"{r['median_test_share']:.1%}",
            }
        )
    return pd.DataFrame(rows)


def plot_audit(ax: Any, result: AuditResult, *, title: str = "") -> Any:
    """Each re-split's held-out share of premium quality against its cost ratio to the hindsight best."""
    colors = {"point": "#d62728", "certified": "#2ca02c"}
    for chooser, g in result.runs.groupby("chooser", sort=False):
        ax.scatter(
            g["cost_ratio_to_hindsight"],
            g["test_share"],
            s=22,
            alpha=0.7,
            color=colors.get(str(chooser), "#555555"),
            label=f"{CHOOSER_NAMES.get(str(chooser), chooser)} ({int(g['floor_held'].sum())}/{len(g)} held)",
            edgecolors="none",
        )
    ax.axhline(result.floor, color="#555555", ls=":", lw=1.2, label=f"floor {result.floor:.0%}")
    ax.axvline(1.0, color="#bbbbbb", lw=1)
    ax.set_xlabel("chosen cost / cheapest policy that met the floor on the held-out part")
    ax.set_ylabel("held-out quality, share of all-premium")
    ax.set_title(title or f"{result.splits} re-splits, delta {result.delta:g} ({result.bound})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return ax


def save_audit_png(result: AuditResult, path: str | os.PathLike[str], *, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=100)
    plot_audit(ax, result, title=title)
    fig.tight_layout()
    png = Path(path)
    try:
        atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return png
