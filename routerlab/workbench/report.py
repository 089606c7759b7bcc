"""The Markdown report of a study: ladder, baselines, frontier, chosen policy, dev and test metrics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from routerlab.data.evalset import evalset_sha256
from routerlab.data.paths import workspace_root
from routerlab.jsonio import atomic_write_text
from routerlab.workbench.export import choose, export_policy
from routerlab.workbench.frontier import price_quality_inversions
from routerlab.workbench.plots import save_frontier_png
from routerlab.workbench.study import SPLIT_SEED, Study, scorer_agreement, tier_table
from routerlab.workbench.sweep import absent_classes

SCORER_TITLES = {"rougeL": "ROUGE-L", "exact": "exact match", "label": "the judge's label"}


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    if isinstance(v, float):
        return f"{v + 0.0:.{digits}f}".replace("-0.0000", "0.0000") if abs(v) < 0.5 * 10**-digits else f"{v:.{digits}f}"
    return str(v)


def _table(df: pd.DataFrame, digits: int = 4) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c], digits) for c in cols) + " |")
    return "\n".join(lines)


def render_report(study: Study, *, policy_path: Path, png_name: str) -> str:
    o = study.outcomes
    q = f"quality_{study.scorer}"
    ch = study.choice
    m = ch.metrics()
    calls = o.calls
    est_usage = bool(calls["usage_estimated"].any())
    est_latency = bool(calls["latency_estimated"].any())
    out: list[str] = []
    out.append(f"# {study.name}: what routing costs and what it keeps\n")
    out.append(
        f"{o.n_items} queries, split (seed {SPLIT_SEED}, stratified by complexity class) into "
        f"{int(study.dev.sum())} dev and {int(study.test.sum())} test. Policies are swept and chosen on dev; "
        f"the chosen policy's test numbers are reported beside its dev numbers. Quality is "
        f"**{study.quality_label}** (`{study.scorer}`); 95% CIs are bootstrap percentiles over queries.\n"
    )
    notes = []
    if est_usage:
        notes.append(
            "token counts of these imported outputs are estimated with the cl100k_base encoding "
            "(the outputs carry none), so costs are estimates at list prices"
        )
    if est_latency:
        notes.append("latencies are estimated (400 ms + 15 ms per output token): the outputs record no timing")
    if study.scorer_coverage:
        notes.append(study.scorer_coverage)
    unseen = absent_classes(o, study.dev)
    if unseen:
        notes.append(
            f"no dev query is {' or '.join(unseen)}, so the swept and exported policies start those classes at the "
            "final tier: there is no evidence to route them cheaper"
        )
    if study.scorer_warning:
        out.append(f"**Warning: {study.scorer_warning}.** `routerlab export` refuses this study unless forced.\n")
    if notes:
        out.append("Caveats: " + "; ".join(notes) + ".\n")
    out.append("## The ladder and each tier alone (dev split)\n")
    out.append(_table(tier_table(study), 4) + "\n")
    inv = price_quality_inversions(study.baselines)
    if inv:
        pairs = ", ".join(f"{a} scores higher than the pricier {b}" for a, b in inv)
        out.append(
            f"**The scorer ranks tiers against their price order**: {pairs}. Under this scorer a cheaper "
            f"model is not a worse one, so 'share of premium quality' can exceed 100% and the premium tier "
            f"is not a ceiling.\n"
        )
    out.append("## Baselines on the same axes\n")
    prem = study.baselines.iloc[-1]
    out.append(
        f"- All-premium ({prem['tier']}): ${prem['cost_per_1k_usd']:.4f} per 1k queries, quality {prem['quality']:.4f}."
    )
    out.append(
        f"- Oracle (per query, the cheapest tier as good as the best one): "
        f"${study.oracle['cost_per_1k_usd']:.4f} per 1k, quality {study.oracle['quality']:.4f}, "
        f"premium calls {study.oracle['premium_call_share']:.1%}."
    )
    out.append(
        f"- Random mix of tiers: the upper convex hull of the single tiers (dashed in the plot), "
        f"{len(study.mix)} points.\n"
    )
    out.append(f"![frontier]({png_name})\n")
    out.append("## Chosen policy\n")
    exported = (
        f"Exported to `{policy_path.name}` (load it with `routerlab.load_policy`)."
        if study.scorer_warning is None
        else "Not exported: the scorer cannot tell the tiers apart (see the warning above)."
    )
    out.append(
        f"The cheapest swept policy whose dev quality is at least {ch.floor:.0%} of all-premium: "
        f"`{ch.point.label()}`. {exported}\n"
    )
    rows = []
    for split in ("dev", "test"):
        d = m[split]
        rows.append(
            {
                "split": split,
                "queries": d["n_items"],
                "quality": d["quality"],
                "95% CI": f"[{d['quality_ci95'][0]:.4f}, {d['quality_ci95'][1]:.4f}]",
                "share of premium quality": d["quality_share_of_premium"],
                "USD per 1k": d["cost_per_1k_usd"],
                "premium USD per 1k": d["premium_cost_per_1k_usd"],
                "cost reduction": d["cost_reduction_vs_premium"],
                "escalation rate": d["escalation_rate"],
                "premium-call share": d["premium_call_share"],
            }
        )
    out.append(_table(pd.DataFrame(rows), 4) + "\n")
    out.append(_floors(study) + "\n")
    mix = m["test"]["tier_mix"]
    out.append(
        "Test-split tier mix: "
        + ", ".join(f"{t} {s:.1%}" for t, s in zip(o.tiers, mix, strict=False))
        + f"; estimated latency p50 {m['test']['latency_p50_ms']:.0f} ms, p95 "
        f"{m['test']['latency_p95_ms']:.0f} ms.\n"
    )
    out.append("## Metrics (dev split, whole sweep)\n")
    out.append(
        "Three-tier generalisations: 'weak' is the cheapest tier alone, 'strong' the premium tier alone; "
        "PGR = (quality - weak) / (strong - weak); APGR is the area under the best PGR as a function of "
        "the premium-call share (or of cost as a share of all-premium cost); CPT(x%) is the smallest such "
        "share that reaches PGR x% (RouteLLM, Ong et al. 2024).\n"
    )
    mt = study.metrics.copy()
    out.append(_table(mt[[c for c in ("metric", "value", "lo", "hi", "unit") if c in mt.columns]], 4) + "\n")
    # How the scorer in use (or, when the judge's label is in use, ROUGE-L) agrees with the judge.
    pair = (study.scorer, "label") if study.scorer != "label" else ("rougeL", "label")
    agree = scorer_agreement(study, pair[1], scorer=pair[0])
    if agree is not None:
        name = SCORER_TITLES.get(pair[0], pair[0])
        out.append(f"## How {name} agrees with the judge\n")
        out.append(
            f"Spearman rank correlation between {name} (`{pair[0]}`) and the judge's label (`label`): "
            f"{agree['item_level']:.3f} over every single answer (item level), {agree['policy_level']:.3f} "
            f"over the swept policies' dev means (policy level).\n"
        )
    out.append("## Pareto frontier (dev split)\n")
    cols = ["policy_id", "label", "cost_per_1k_usd", q, f"{q}_lo", f"{q}_hi", "escalation_rate", "premium_call_share"]
    fr = study.frontier[[c for c in cols if c in study.frontier.columns]]
    if len(fr) > 30:
        out.append(f"{len(fr)} policies; every third shown.\n")
        fr = fr.iloc[::3]
    out.append(_table(fr, 4) + "\n")
    return "\n".join(out)


def _floors(study: Study) -> str:
    """The cheapest dev policy at several quality floors, with its test numbers: the trade-off in one table."""
    rows = []
    for floor in (0.8, 0.85, 0.9, 0.95, 1.0):
        c = choose(
            study.outcomes,
            study.sweep_dev,
            scorer=study.scorer,
            floor=floor,
            dev=study.dev,
            test=study.test,
            bootstrap=200,
        )
        m = c.metrics()
        rows.append(
            {
                "floor (share of premium)": f"{floor:.0%}",
                "policy": c.point.label(),
                "dev quality share": m["dev"]["quality_share_of_premium"],
                "test quality share": m["test"]["quality_share_of_premium"],
                "test cost reduction": m["test"]["cost_reduction_vs_premium"],
            }
        )
    return "Other floors, for comparison (chosen on dev, measured on test):\n\n" + _table(pd.DataFrame(rows), 4)


def export_study(study: Study, path: str | os.PathLike[str], *, date: str | None = None) -> Path:
    """Write the study's chosen policy to ``path`` with its provenance (eval set, split, metrics)."""
    export_policy(
        study.outcomes,
        study.choice,
        path,
        evalset_sha256=evalset_sha256(study.evalset_path),
        dataset=study.name,
        split_seed=SPLIT_SEED,
        date=date,
    )
    return Path(path)


def write_outputs(
    study: Study,
    *,
    reports_dir: str | os.PathLike[str] | None = None,
    policies_dir: str | os.PathLike[str] | None = None,
    date: str | None = None,
) -> dict[str, Path]:
    """``reports/<name>/frontier.png``, ``reports/<name>/report.md`` and ``policies/<name>.json``.

    A study whose scorer cannot tell the tiers apart gets its report (with the warning) but no policy
    file, as ``routerlab export`` refuses it: the returned ``policy`` is then the path not written."""
    base = workspace_root()
    rdir = Path(reports_dir) if reports_dir is not None else base / "reports" / study.name
    pdir = Path(policies_dir) if policies_dir is not None else base / "policies"
    rdir.mkdir(parents=True, exist_ok=True)
    pdir.mkdir(parents=True, exist_ok=True)
    policy_path = pdir / f"{study.name}.json"
    if study.scorer_warning is None:
        export_study(study, policy_path, date=date)
    png = save_frontier_png(study, rdir / "frontier.png")
    md = rdir / "report.md"
    atomic_write_text(md, render_report(study, policy_path=policy_path, png_name=png.name))
    return {"report": md, "frontier": png, "policy": policy_path}
