"""The main job, end to end, on the default data with no API keys.

For each public dataset: fetch it (or read the mirror), import it as an eval
set plus cassettes, build the outcome table by replaying every recorded call
through the real adapters, sweep policies on the dev split, choose at 95% of
all-premium quality with both choosers (point estimate; certified with
delta 0.1), audit both over 50 re-splits, and write
``reports/<name>/frontier.png``, ``reports/<name>/report.md``,
``reports/<name>/audit.png`` and, where the certified choice is cheaper than
all-premium, ``policies/<name>.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from routerlab.policy import load_policy
from routerlab.workbench.audit import audit
from routerlab.workbench.report import write_outputs
from routerlab.workbench.study import run_study
from routerlab.workbench.sweep import default_grid


def _pct(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{v:.1%}"


def _ci(v: list[float] | None) -> str:
    return "" if v is None else f"[{v[0]:.1%}, {v[1]:.1%}]"


def run_demo(
    out: TextIO,
    *,
    datasets: Sequence[str] = ("alpaca_eval", "arena_bench_v1", "mot_date"),
    root: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> int:
    base = Path(root) if root is not None else None
    for name in datasets:
        print(f"== {name}", file=out, flush=True)
        study = run_study(name, root=base, progress=progress)
        res = audit(
            study.outcomes, default_grid(study.outcomes), scorer=study.scorer, floor=study.choice.floor, splits=50
        )
        paths = write_outputs(
            study,
            reports_dir=(base / "reports" / name) if base else None,
            policies_dir=(base / "policies") if base else None,
            audit=res,
        )
        refusal = study.export_refusal()
        if refusal is None:
            load_policy(paths["policy"])  # the production loader accepts what we wrote
        print(
            f"   {study.outcomes.n_items} queries, {len(study.sweep_dev)} policies swept on dev, "
            f"{len(study.frontier)} on the frontier; scorer {study.scorer}",
            file=out,
        )
        choices = [("point estimate", study.choice)]
        if study.certified is not None:
            choices.append(("certified", study.certified.choice))
        for what, ch in choices:
            t = ch.metrics()["test"]
            share = t["quality_share_of_premium"]
            print(
                f"   {what}: {ch.label()}\n     test: {_pct(share)} of premium quality "
                f"{_ci(t['quality_share_ci95'])}, {_pct(t['cost_reduction_vs_premium'])} cheaper "
                f"{_ci(t['cost_reduction_ci95'])}; floor {ch.floor:.0%} "
                + ("met" if ch.meets_floor("test") else "MISSED"),
                file=out,
            )
        for line in res.words().splitlines():
            print(f"   audit, {line}", file=out)
        if refusal is not None:
            print(f"   no policy written: {refusal}", file=out)
        for kind, p in paths.items():
            if kind != "policy" or refusal is None:
                print(f"   {kind}: {p}", file=out)
    return 0
