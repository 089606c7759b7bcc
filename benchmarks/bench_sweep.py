"""Sweep vs router replay: time per policy of the vectorised sweep against replaying the real router.

Goal (issue 4): routerlab.workbench.sweep.sweep evaluates a policy at least 1000x faster
than replaying the CascadeRouter through the cassettes (cassettes.replay_items),
with identical results, checked here on the replayed policies: per item, the
tier and the exact cost. Both sides start from an imported workspace; the sweep
also needs the outcome table (one replay + scoring of every recorded call),
built once per dataset: its time is printed but not in the per-policy ratio.
Sweep times are medians of --repeat runs over the whole default grid, without
bootstrap CIs (the replay gives point estimates only); one row with the default
200 bootstrap resamples shows what CIs cost, and one the first sweep of a
table, which also builds the dense arrays the sweep keeps on the table.
"""

from __future__ import annotations

import argparse
import random
import time

from _common import machine, median_time, table, workspace

from routerlab.data.cassettes import replay_items
from routerlab.workbench.outcomes import build_outcomes
from routerlab.workbench.scoring import applicable_scorers
from routerlab.workbench.sweep import default_grid, per_item, sweep


def run(name: str, n_replay: int, repeat: int, root: str | None) -> list[list[str]]:
    policy, items, cassettes, base = workspace(name, root)
    t0 = time.perf_counter()
    scorers = applicable_scorers(items, [t.model for t in policy.tiers])
    o = build_outcomes(
        items, policy, cassettes, scorers=scorers, cache_dir=base / f"outcomes-{time.time_ns()}", progress=False
    )
    build_s = time.perf_counter() - t0
    points = default_grid(o).points(o)

    def first_sweep() -> None:
        o.__dict__.pop("_sweep_arrays", None)  # the dense arrays the sweep builds once per outcome table
        sweep(o, points)

    first_s = median_time(first_sweep, 1) / len(points)
    sweep_s = median_time(lambda: sweep(o, points, bootstrap=0), repeat) / len(points)
    boot_s = median_time(lambda: sweep(o, points), 1) / len(points)
    chosen = random.Random(0).sample(points, min(n_replay, len(points)))
    replay_t, mismatches = [], 0
    for pt in chosen:
        t0 = time.perf_counter()
        got = list(replay_items(pt.to_policy(policy), cassettes, items, keep_errors=True))
        replay_t.append(time.perf_counter() - t0)
        sim = per_item(o, pt).set_index("item_id")
        for item, res in got:
            row = sim.loc[item.id]
            mismatches += getattr(res, "tier", None) != row["tier"] or getattr(res, "cost_usd", None) != (
                row["cost_usd"] if row["tier"] is not None else None
            )
    replay_s = sum(replay_t) / len(replay_t)
    common = [name, str(len(items)), str(len(points)), f"{build_s:.1f}"]
    return [
        [
            *common,
            "sweep, no bootstrap",
            f"{sweep_s * 1000:.3f}",
            f"{replay_s * 1000:.0f}",
            f"{replay_s / sweep_s:,.0f}x",
            str(mismatches),
        ],
        [
            *common,
            "sweep, 200 bootstrap",
            f"{boot_s * 1000:.3f}",
            f"{replay_s * 1000:.0f}",
            f"{replay_s / boot_s:,.0f}x",
            "-",
        ],
        [
            *common,
            "first sweep of the table, 200 bootstrap (arrays built)",
            f"{first_s * 1000:.3f}",
            f"{replay_s * 1000:.0f}",
            f"{replay_s / first_s:,.0f}x",
            "-",
        ],
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="mot_date,alpaca_eval")
    ap.add_argument("--replays", type=int, default=5, help="random grid policies replayed through the router")
    ap.add_argument("--repeat", type=int, default=5, help="sweep runs over the whole grid (median reported)")
    ap.add_argument("--root", help="workspace with the imported datasets (default: import into a temp dir)")
    args = ap.parse_args()
    rows = [r for n in args.datasets.split(",") for r in run(n, args.replays, args.repeat, args.root)]
    print("# vectorised sweep vs real router replay, time per policy over every item")
    print(
        f"machine: {machine()}; sweep: median of {args.repeat} runs of the whole default grid (1 run with bootstrap); "
        f"replay: mean of {args.replays} random grid policies (seed 0), 1 run each; outcome table built cold\n"
    )
    head = ["dataset", "items", "grid policies", "outcome table s (once)", "sweep", "sweep ms/policy"]
    print(table([*head, "replay ms/policy", "ratio", "per-item mismatches (tier, cost)"], rows))


if __name__ == "__main__":
    main()
