"""The workbench pipeline, one function per arrow: import -> outcomes -> sweep -> frontier -> choice -> files.

Notebooks and ``routerlab sweep/frontier/export/report/demo`` all call these,
so what a notebook shows is what the command line writes. The figures are in
:mod:`routerlab.workbench.plots`, the files written in :mod:`routerlab.workbench.report`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from routerlab.data.cassettes import replay_items
from routerlab.data.evalset import EvalItem, load_evalset
from routerlab.data.importers import DEFAULT_LADDERS, import_dataset
from routerlab.data.studies import study_paths
from routerlab.errors import DataError
from routerlab.policy import RouterPolicy, load_policy
from routerlab.pricing import PriceBook
from routerlab.workbench.certify import Bound
from routerlab.workbench.export import CHOOSERS, REFUSAL, Certified, Choice, certify, choose
from routerlab.workbench.frontier import (
    metrics_table,
    oracle_point,
    pareto_frontier,
    random_mix,
    rank_agreement,
    single_tier_baselines,
)
from routerlab.workbench.outcomes import Outcomes, build_outcomes
from routerlab.workbench.scoring import applicable_scorers, degenerate_scorer, resolve_scorer, scorer_coverage
from routerlab.workbench.sweep import default_grid, split_items, split_three, sweep

DEFAULT_SCORER = {"alpaca_eval": "rougeL", "arena_bench_v1": "label", "mot_date": "exact"}
SCORER_LABELS = {
    "rougeL": "ROUGE-L F vs reference",
    "exact": "exact-match accuracy",
    "label": "GPT-4 judge score, scaled to 0-1",
}
SPLIT_SEED = 0
#: tune / calibrate / test shares. Tune + calibrate is the point chooser's dev split (half the items, as
#: before). Calibration gets the larger part: the guarantee's power grows with it, while tune only orders
#: a frontier of a few dozen policies.
DEFAULT_SPLIT = (0.2, 0.3, 0.5)
DEFAULT_DELTA = 0.1


@dataclass
class Study:
    """Everything known about one eval set's routing trade-off."""

    name: str
    policy: RouterPolicy
    items: list[EvalItem]
    evalset_path: Path
    cassettes: Path
    outcomes: Outcomes
    scorer: str
    dev: np.ndarray
    test: np.ndarray
    sweep_dev: pd.DataFrame
    frontier: pd.DataFrame
    baselines: pd.DataFrame
    mix: pd.DataFrame
    oracle: dict[str, float]
    choice: Choice
    metrics: pd.DataFrame
    scorer_warning: str | None = None  # the scorer cannot tell the tiers apart (see degenerate_scorer)
    scorer_coverage: str | None = None  # e.g. "20 of 25 items have a gold answer; the other 5 are left out"
    tune: np.ndarray | None = None  # the certified chooser's splits (tune | calibrate == dev)
    calibrate: np.ndarray | None = None
    certified: Certified | None = None
    chooser: str = "certified"  # which choice export writes: "certified" or "point"
    split: tuple[float, float, float] = DEFAULT_SPLIT

    @property
    def quality_label(self) -> str:
        return SCORER_LABELS.get(self.scorer, self.scorer)

    @property
    def exported(self) -> Choice:
        """The choice ``export`` writes: the certified one (or the point estimate with ``chooser="point"``)."""
        if self.chooser == "certified" and self.certified is not None:
            return self.certified.choice
        return self.choice

    def export_refusal(self) -> str | None:
        """Why ``export`` refuses this study unless forced (None: it does not)."""
        if self.scorer_warning:
            return self.scorer_warning
        if self.chooser == "certified" and self.certified is not None and not self.certified.feasible:
            return self.certified.summary().removesuffix(REFUSAL)
        return None


def open_dataset(
    name: str, *, root: str | os.PathLike[str] | None = None, mirror: str | Path | None = None, progress: bool = True
) -> tuple[RouterPolicy, list[EvalItem], Path, Path]:
    """The eval set, ladder policy and cassettes of study ``name`` (a name in the workspace, or a study
    folder's path; see :mod:`routerlab.data.studies`); a public dataset is imported first when missing."""
    paths = study_paths(name, root=root)
    if not paths.exists():
        if name not in DEFAULT_LADDERS:
            where = paths.folder if paths.evalset.is_file() else paths.folder.parent
            raise DataError(
                f"{where}: no complete study named {name!r} (it needs {paths.evalset.name}, {paths.policy.name} "
                f"and recorded cassettes in {paths.cassettes}); create one with `routerlab record --evalset E "
                f"--policy P --study {name}`, `routerlab data import OUTPUTS.jsonl --ladder LADDER.json --study "
                f"{name}`, or import a public dataset ({', '.join(DEFAULT_LADDERS)}) with `routerlab data import NAME`"
            )
        import_dataset(name, root=root, mirror=mirror, progress=progress)
    return load_policy(paths.policy), load_evalset(paths.evalset), paths.evalset, paths.cassettes


#: Bootstrap resamples of the study's dev-split sweep (its quality CIs).
SWEEP_BOOTSTRAP = 200


def _prepare(
    name: str, root: str | os.PathLike[str] | None, mirror: str | Path | None, scorer: str | None, progress: bool
) -> tuple[RouterPolicy, list[EvalItem], Path, Path, str, list[str]]:
    """The study's policy, items, eval set and cassette paths, its scorer and every scorer its table needs."""
    policy, items, evalset, cassettes = open_dataset(name, root=root, mirror=mirror, progress=progress)
    models = [t.model for t in policy.tiers]
    pattern = policy.confidence.answer_pattern
    # unknown, not applicable (with its coverage) and no scorer at all are three different errors
    scorer = resolve_scorer(scorer or DEFAULT_SCORER.get(name), items, models, answer_pattern=pattern)
    scorers = [*applicable_scorers(items, models), scorer]
    return policy, items, evalset, cassettes, scorer, sorted(set(scorers), key=scorers.index)


@dataclass
class StudySweep:
    """:func:`sweep_study`'s result: the dev-split sweep table, the scorer, the dev mask and the table."""

    table: pd.DataFrame
    scorer: str
    dev: np.ndarray
    outcomes: Outcomes


def sweep_study(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    mirror: str | Path | None = None,
    scorer: str | None = None,
    n_thresholds: int = 8,
    split: tuple[float, float, float] = DEFAULT_SPLIT,
    progress: bool = True,
    workers: int | None = None,
    executor: Any = None,
    load: bool | None = None,
    memory_mb: float | None = None,
) -> StudySweep:
    """The study's dev-split sweep alone: the table :func:`run_study` gives as ``sweep_dev`` (the same grid,
    split, bootstrap and numbers), without the choosers, reports and audit that need the whole table in
    memory, so it runs on a table of any size.

    ``load`` is :func:`~routerlab.workbench.outcomes.build_outcomes`'s: None (default) leaves a table with more
    calls rows than ``$ROUTERLAB_OUT_OF_CORE_ROWS`` on disk, and the sweep reads it item range by item range
    (DuckDB). ``workers``: the build's processes. ``executor`` (a ``concurrent.futures`` pool, a Dask
    ``distributed.Client``): the build's chunks and the sweep's shards run on it. ``memory_mb``: the sweep's
    memory budget (:func:`~routerlab.workbench.sweep.sweep`)."""
    policy, items, _evalset, cassettes, scorer, scorers = _prepare(name, root, mirror, scorer, progress)
    o = build_outcomes(
        items, policy, cassettes, scorers=scorers, progress=progress, load=load, workers=workers, executor=executor
    )
    tune, calibrate, _test = split_three(o, split, seed=SPLIT_SEED)
    dev = tune | calibrate
    grid = default_grid(o, n_thresholds=n_thresholds)
    df = sweep(o, grid, mask=dev, bootstrap=SWEEP_BOOTSTRAP, progress=progress, executor=executor, memory_mb=memory_mb)
    return StudySweep(table=df, scorer=scorer, dev=dev, outcomes=o)


def per_item_single(o: Outcomes, scorer: str, mask: np.ndarray | None = None) -> pd.DataFrame:
    """Each tier's single answer per item: item_id, tier_index, cost_usd, quality (for baselines).

    A call that failed scores 0, as a failed route does in the sweep (not NaN, which means
    "the scorer does not apply" and would drop the item from the tier's mean).
    """
    o.require_loaded("the per-item table")
    c = o.calls[o.calls["variant"] == "single"]
    if mask is not None:
        keep = set(o.items["item_id"][mask])
        c = c[c["item_id"].isin(keep)]
    q = np.where(c["error_kind"].notna(), 0.0, c[f"q_{scorer}"].to_numpy(dtype=float))
    return c[["item_id", "tier_index", "cost_usd"]].assign(quality=q)


def answer_options(o: Outcomes, scorer: str, mask: np.ndarray | None = None) -> pd.DataFrame:
    """Every answer a policy could return per item, with the least a route pays to get it: item_id,
    cost_usd, quality (for :func:`~routerlab.workbench.frontier.floor_oracle`).

    Each tier's single answer costs that call; a k-sample answer costs its n=k call, or only the short
    reply when a cap stops its completion. Failed calls are left out (a failed route scores 0, which the
    oracle's "unanswered" option already covers)."""
    from routerlab.workbench.outcomes import PICO

    a = o.dense()
    sel = np.ones(o.n_items, bool) if mask is None else np.asarray(mask, bool)
    ids = o.items["item_id"].to_numpy()
    frames = []
    q = a.s_q[scorer]
    for ti in range(a.t):
        ok = sel & (a.s_err[:, ti] == 0)
        frames.append(pd.DataFrame({"item_id": ids[ok], "cost_pico": a.s_cost[ok, ti], "quality": q[ok, ti]}))
    kq = a.k_q.get(scorer)
    if kq is not None:
        for j in range(len(a.ks)):
            for ti in range(a.t - 1):
                ok = sel & (a.k_err[j, :, ti] == 0) & (a.k_count[j, ti] > 0)
                c = np.where(
                    a.k_tuw[j, :, ti] > 0, np.minimum(a.k_cost[j, :, ti], a.k_scost[j, :, ti]), a.k_cost[j, :, ti]
                )
                frames.append(pd.DataFrame({"item_id": ids[ok], "cost_pico": c[ok], "quality": kq[j, ok, ti]}))
    df = pd.concat(frames, ignore_index=True)
    df["cost_usd"] = df.pop("cost_pico").astype(float) / float(PICO)
    return df.dropna(subset=["quality"])


def run_study(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    mirror: str | Path | None = None,
    scorer: str | None = None,
    floor: float = 0.95,
    n_thresholds: int = 8,
    bootstrap: int = 1000,
    progress: bool = True,
    delta: float = DEFAULT_DELTA,
    bound: Bound = "wsr",
    split: tuple[float, float, float] = DEFAULT_SPLIT,
    chooser: str = "certified",
    budget_usd: float | None = None,
    cost_bound_usd: float | None = None,
) -> Study:
    """Import (if needed), build the outcome table, sweep on dev, choose (point estimate on dev; certified
    on tune + calibrate), evaluate both on test. ``chooser`` says which one ``export`` writes."""
    if chooser not in CHOOSERS:
        raise DataError(f"chooser must be one of {', '.join(CHOOSERS)}; got {chooser!r}")
    policy, items, evalset, cassettes, scorer, scorers = _prepare(name, root, mirror, scorer, progress)
    models = [t.model for t in policy.tiers]
    pattern = policy.confidence.answer_pattern
    # a study's reports, audit and export need the whole table: in memory whatever its size
    o = build_outcomes(items, policy, cassettes, scorers=scorers, progress=progress, load=True)
    degenerate = degenerate_scorer(o.calls, scorer, answer_pattern=pattern)
    tune, calibrate, test = split_three(o, split, seed=SPLIT_SEED)
    dev = tune | calibrate
    grid = default_grid(o, n_thresholds=n_thresholds)
    sweep_dev = sweep(o, grid, mask=dev, bootstrap=SWEEP_BOOTSTRAP, progress=progress)
    q = f"quality_{scorer}"
    frontier = pareto_frontier(sweep_dev, quality=q)
    per_dev = per_item_single(o, scorer, dev)
    baselines = single_tier_baselines(per_dev, tier_names=o.tiers)
    choice = choose(o, sweep_dev, scorer=scorer, floor=floor, dev=dev, test=test, bootstrap=bootstrap)
    certified = certify(
        o,
        grid,
        scorer=scorer,
        floor=floor,
        delta=delta,
        bound=bound,
        tune=tune,
        calibrate=calibrate,
        test=test,
        budget_usd=budget_usd,
        cost_bound_usd=cost_bound_usd,
        bootstrap=bootstrap,
        seed=SPLIT_SEED,
    )
    return Study(
        name=name,
        policy=policy,
        items=items,
        evalset_path=evalset,
        cassettes=cassettes,
        outcomes=o,
        scorer=scorer,
        dev=dev,
        test=test,
        sweep_dev=sweep_dev,
        frontier=frontier,
        baselines=baselines,
        mix=random_mix(baselines),
        oracle=oracle_point(per_dev),
        choice=choice,
        metrics=_rounded(
            metrics_table(
                sweep_dev, per_dev, quality=q, tier_names=o.tiers, options=answer_options(o, scorer, dev), floor=floor
            )
        ),
        scorer_warning=degenerate,
        scorer_coverage=scorer_coverage(scorer, items, models, answer_pattern=pattern).note,
        tune=tune,
        calibrate=calibrate,
        certified=certified,
        chooser=chooser,
        split=split,
    )


def _rounded(df: pd.DataFrame, digits: int = 6) -> pd.DataFrame:
    """Round float columns (and turn -0.0 into 0.0) so float noise like -2.2e-16 reads as 0."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(digits) + 0.0
    return out


def split_masks(o: Outcomes, split: tuple[float, float, float] = DEFAULT_SPLIT) -> tuple[np.ndarray, np.ndarray]:
    """The study's seeded dev/test split (:data:`SPLIT_SEED`); dev is the tune and calibrate splits together."""
    return split_items(o, dev_fraction=split[0] + split[1], seed=SPLIT_SEED)


def scorer_agreement(study: Study, other: str = "label", *, scorer: str | None = None) -> dict[str, float] | None:
    """How ``scorer`` (default: the study's) agrees with another (e.g. the judge's ``label``).

    Spearman rank correlation over every single answer (item level) and over the swept policies' dev
    means (policy level); None when either scorer is missing or they are the same.
    """
    o = study.outcomes
    scorer = scorer or study.scorer
    if other == scorer or other not in o.scorers or scorer not in o.scorers:
        return None
    single = o.calls[o.calls["variant"] == "single"]
    item_level = rank_agreement(single[f"q_{scorer}"].tolist(), single[f"q_{other}"].tolist())
    pol = study.sweep_dev
    policy_level = rank_agreement(pol[f"quality_{scorer}"].tolist(), pol[f"quality_{other}"].tolist())
    return {"item_level": float(item_level), "policy_level": float(policy_level)}


def tier_table(study: Study) -> pd.DataFrame:
    """The ladder with prices, and each tier alone on the dev split."""
    book = PriceBook()
    rows = []
    for i, t in enumerate(study.policy.tiers):
        p = book.price(t.model, provider=t.price_provider, override=t.price)
        b = study.baselines.iloc[i]
        rows.append(
            {
                "tier": t.name,
                "model": t.model,
                "provider": t.provider,
                "usd_per_mtok_in": float(p.input_usd_per_mtok),
                "usd_per_mtok_out": float(p.output_usd_per_mtok),
                "cost_per_1k_usd": float(b["cost_per_1k_usd"]),
                "quality": float(b["quality"]),
            }
        )
    return pd.DataFrame(rows)


def capture_summary(o: Outcomes) -> pd.DataFrame:
    """What the cassettes hold, per tier and call kind: items, requests, samples, tokens, spend, errors."""
    o.require_loaded("the capture summary")
    c = o.calls.assign(samples=o.calls["k"], errors=o.calls["error_kind"].notna())
    g = c.groupby(["tier_index", "tier", "model", "variant"], sort=True)
    out = g.agg(
        items=("item_id", "nunique"),
        requests=("n_requests", "sum"),
        samples=("samples", "sum"),
        input_tokens=("input_tokens", "sum"),
        output_tokens=("output_tokens", "sum"),
        spend_usd=("cost_usd", "sum"),
        errors=("errors", "sum"),
        usage_estimated=("usage_estimated", "mean"),
    ).reset_index()
    return out


def for_people(df: pd.DataFrame) -> pd.DataFrame:
    """A table formatted for reading: ``*_usd`` columns in dollars, shares and rates in percent, counts
    with thousands separators, columns that hold nothing dropped."""
    out = df.dropna(axis=1, how="all").copy()
    for c in out.columns:
        col = out[c]
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            continue
        if c.endswith("_usd") or c.startswith("cost_per_1k"):
            out[c] = col.map(lambda v: "" if pd.isna(v) else f"${v:,.4f}")
        elif c.endswith(("_share", "_rate", "_estimated")) or c.startswith("share_"):
            out[c] = col.map(lambda v: "" if pd.isna(v) else f"{v:.1%}")
        elif pd.api.types.is_integer_dtype(col) and not c.endswith("_index"):
            out[c] = col.map(lambda v: f"{v:,}")
    return out


def route_examples(policy: RouterPolicy, cassettes: Path, items: list[EvalItem], n: int = 5) -> pd.DataFrame:
    """Route the first ``n`` items through the production router from the cassettes; one row per attempt."""
    rows: list[dict[str, Any]] = []
    for item, res in replay_items(policy, cassettes, items[:n], keep_errors=True):
        if isinstance(res, Exception):
            rows.append({"item_id": item.id, "tier": None, "outcome": f"error: {res}"})
            continue
        for a in res.attempts:
            rows.append(
                {
                    "item_id": item.id,
                    "complexity": res.complexity,
                    "tier": a.tier,
                    "model": a.model,
                    "outcome": a.outcome,
                    "calls": a.calls,
                    "similarity": a.similarity,
                    "input_tokens": a.usage.input_tokens,
                    "output_tokens": a.usage.output_tokens,
                    "cost_usd": float(a.cost_usd),
                    "route_cost_usd": float(res.cost_usd),
                    "answer": res.text[:80],
                }
            )
    return pd.DataFrame(rows)


def missing_keys(policy: RouterPolicy) -> list[str]:
    """The API-key environment variables a policy needs that are not set (recording needs none missing)."""
    return sorted({t.api_key_env for t in policy.tiers if t.api_key_env and not os.environ.get(t.api_key_env)})


def choice_table(study: Study) -> pd.DataFrame:
    """The chosen policy's numbers on the dev and test splits, side by side."""
    m = study.choice.metrics()
    return pd.DataFrame(
        {split: {k: (str(v) if isinstance(v, list) else v) for k, v in m[split].items()} for split in ("dev", "test")}
    )


def choosers_table(study: Study) -> pd.DataFrame:
    """Both choosers side by side: for each, its policy and its numbers on the split it chose on and on test,
    with paired bootstrap CIs for the share of premium quality and the cost reduction, and whether the floor
    held on test."""
    rows = []
    choices = [study.choice] + ([study.certified.choice] if study.certified is not None else [])
    for ch in choices:
        m = ch.metrics()
        for split in ("dev", "test"):
            d = m[split]
            rows.append(
                {
                    "chooser": "certified" if ch.chooser == "certified" else "point estimate",
                    "policy": ch.label(),
                    "split": ch.dev_split if split == "dev" else "test",
                    "queries": d["n_items"],
                    "share of premium quality": d["quality_share_of_premium"],
                    "share CI": d["quality_share_ci95"],
                    "cost_per_1k_usd": d["cost_per_1k_usd"],
                    "cost reduction": d["cost_reduction_vs_premium"],
                    "reduction CI": d["cost_reduction_ci95"],
                    "floor met": ch.meets_floor(split),
                }
            )
    return pd.DataFrame(rows)


def frontier_table(study: Study) -> pd.DataFrame:
    """The frontier policies with their cost, quality (and CI), escalation rate and tier mix."""
    q = f"quality_{study.scorer}"
    cols = ["label", "cost_per_1k_usd", q, f"{q}_lo", f"{q}_hi", "escalation_rate", "premium_call_share"]
    cols += [c for c in study.frontier.columns if c.startswith("share_tier_")]
    return study.frontier[cols].reset_index(drop=True)
