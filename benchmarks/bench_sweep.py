"""Sweep vs router replay: time per policy of the vectorised sweep against replaying the real router.

Goal (issue 4): the sweep evaluates a policy at least 1000x faster than
replaying the CascadeRouter through the cassettes, with identical results
(checked here on the replayed policies: per-item tier and exact cost).
"""

from __future__ import annotations

import argparse
import random
import time

from _common import machine, table, workspace

from routerlab.cassettes import replay_items
from routerlab.outcomes import build_outcomes
from routerlab.scoring import applicable_scorers
from routerlab.sweep import default_grid, per_item, sweep


def run(name: str, n_replay: int, root: str | None) -> list[str]:
    policy, items, cassettes, base = workspace(name, root)
    o = build_outcomes(
        items,
        policy,
        cassettes,
        scorers=applicable_scorers(items, [t.model for t in policy.tiers]),
        cache_dir=base / "outcomes",
        progress=False,
    )
    points = default_grid(o).points(o)
    timed = points * max(1, -(-1000 // len(points)))  # small grids are repeated to >= 1000 policies: fixed setup
    t0 = time.perf_counter()
    sweep(o, timed, bootstrap=0)
    sweep_s = (time.perf_counter() - t0) / len(timed)
    rng = random.Random(0)
    chosen = rng.sample(points, min(n_replay, len(points)))
    t0 = time.perf_counter()
    mismatches = 0
    for pt in chosen:
        sim = per_item(o, pt).set_index("item_id")
        for item, res in replay_items(pt.to_policy(policy), cassettes, items, keep_errors=True):
            row = sim.loc[item.id]
            if (
                getattr(res, "tier", None) != row["tier"]
                or getattr(res, "cost_usd", row["cost_usd"]) != row["cost_usd"]
            ):
                mismatches += 1
    replay_s = (time.perf_counter() - t0) / len(chosen)
    return [
        name,
        str(len(items)),
        f"{len(points)} (timed on {len(timed)})",
        f"{sweep_s * 1000:.3f}",
        f"{replay_s * 1000:.0f}",
        f"{replay_s / sweep_s:,.0f}x",
        str(mismatches),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="mot_date,alpaca_eval")
    ap.add_argument("--replays", type=int, default=5, help="random policies replayed through the router per dataset")
    ap.add_argument("--root", help="workspace with the imported datasets (default: import into a temp dir)")
    args = ap.parse_args()
    rows = [run(n, args.replays, args.root) for n in args.datasets.split(",")]
    print(
        f"# sweep vs real router replay, per policy\nmachine: {machine()}; sweep without bootstrap CIs, "
        f"router replay of {args.replays} random grid policies over every item\n"
    )
    print(
        table(
            [
                "dataset",
                "items",
                "policies swept",
                "sweep ms/policy",
                "replay ms/policy",
                "ratio",
                "per-item mismatches",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
