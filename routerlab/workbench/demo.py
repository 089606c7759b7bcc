"""The main job, end to end, on the default data with no API keys.

For each public dataset: fetch it (or read the mirror), import it as an eval
set plus cassettes, build the outcome table by replaying every recorded call
through the real adapters, sweep policies on the dev split, choose the
cheapest one at 95% of all-premium quality, and write
``reports/<name>/frontier.png``, ``reports/<name>/report.md`` and
``policies/<name>.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from routerlab.policy import load_policy
from routerlab.workbench.report import write_outputs
from routerlab.workbench.study import run_study


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
        paths = write_outputs(
            study,
            reports_dir=(base / "reports" / name) if base else None,
            policies_dir=(base / "policies") if base else None,
        )
        load_policy(paths["policy"])  # the production loader accepts what we wrote
        m = study.choice.metrics()
        print(
            f"   {study.outcomes.n_items} queries, {len(study.sweep_dev)} policies swept on dev, "
            f"{len(study.frontier)} on the frontier; scorer {study.scorer}",
            file=out,
        )
        print(f"   chosen: {study.choice.point.label()}", file=out)
        for split in ("dev", "test"):
            d = m[split]
            print(
                f"   {split:4s}: {d['quality_share_of_premium']:.1%} of premium quality at "
                f"${d['cost_per_1k_usd']:.4f} per 1k queries ({d['cost_reduction_vs_premium']:.1%} cheaper than "
                f"all-premium at ${d['premium_cost_per_1k_usd']:.4f})",
                file=out,
            )
        if m["dev"]["cost_reduction_vs_premium"] <= 0:
            print(
                f"   note: no policy cheaper than all-premium keeps {study.choice.floor:.0%} of its quality on dev; "
                "the report's 'other floors' table shows what lower floors save",
                file=out,
            )
        for kind, p in paths.items():
            print(f"   {kind}: {p}", file=out)
    return 0
