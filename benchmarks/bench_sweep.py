"""Sweep vs router replay: time per policy of the vectorised sweep against replaying the real router.

Goal (issue 4): routerlab.workbench.sweep.sweep evaluates a policy at least 1000x faster
than replaying the CascadeRouter through the cassettes (cassettes.replay_items),
with identical results, checked here on the replayed policies: per item, the
tier and the exact cost. Both sides start from an imported workspace; the sweep
also needs the outcome table (one replay + scoring of every recorded call),
built once per dataset: its time is printed but not in the per-policy ratio.
Every row is --rounds interleaved rounds (at least 3; min / median / max): in
each round the whole default grid is swept without bootstrap CIs (the replay
gives point estimates only), with the default 200 resamples (what CIs cost),
and as the first sweep of a table (which also builds the dense arrays the sweep
keeps on it), then one random grid policy is replayed; each round's ratio is
its replay over its sweep, so load on a shared machine hits both sides.
"""

from __future__ import annotations

import argparse
import random
import time

from _common import interleaved, machine, spread, table, workspace

from routerlab.data.cassettes import replay_items
from routerlab.workbench.outcomes import build_outcomes
from routerlab.workbench.scoring import applicable_scorers
from routerlab.workbench.sweep import default_grid, per_item, sweep


def run(name: str, rounds: int, root: str | None) -> list[list[str]]:
    policy, items, cassettes, base = workspace(name, root)
    t0 = time.perf_counter()
    scorers = applicable_scorers(items, [t.model for t in policy.tiers])
    o = build_outcomes(
        items, policy, cassettes, scorers=scorers, cache_dir=base / f"outcomes-{time.time_ns()}", progress=False
    )
    build_s = time.perf_counter() - t0
    points = default_grid(o).points(o)
    chosen = random.Random(0).sample(points, min(rounds, len(points)))
    mismatches = [0]
    turn = [0]

    def first_sweep() -> None:
        o.__dict__["_dense"] = None  # drop the dense arrays the sweep builds once per outcome table
        sweep(o, points)

    def replay_one() -> None:  # one random grid policy per round through the real router and the cassettes
        pt = chosen[turn[0] % len(chosen)]
        turn[0] += 1
        got = list(replay_items(pt.to_policy(policy), cassettes, items, keep_errors=True))
        sim = per_item(o, pt).set_index("item_id")
        for item, res in got:
            row = sim.loc[item.id]
            mismatches[0] += getattr(res, "tier", None) != row["tier"] or getattr(res, "cost_usd", None) != (
                row["cost_usd"] if row["tier"] is not None else None
            )

    times = interleaved(
        {
            "first": first_sweep,
            "plain": lambda: sweep(o, points, bootstrap=0),
            "boot": lambda: sweep(o, points),
            "replay": replay_one,
        },
        rounds,
    )
    per = {k: [t / len(points) for t in v] for k, v in times.items() if k != "replay"}
    replay = times["replay"]  # one policy per round
    common = [name, str(len(items)), str(len(points)), f"{build_s:.1f}"]
    rows = []
    for key, label in (
        ("plain", "sweep, no bootstrap"),
        ("boot", "sweep, 200 bootstrap"),
        ("first", "first sweep of the table, 200 bootstrap (arrays built)"),
    ):
        ratios = [r / s_ for r, s_ in zip(replay, per[key], strict=True)]
        rows.append(
            [
                *common,
                label,
                spread([t * 1000 for t in per[key]], "{:.3f}"),
                spread([t * 1000 for t in replay]),
                spread(ratios, "{:,.0f}", "x"),
                str(mismatches[0]) if key == "plain" else "-",
            ]
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="mot_date,alpaca_eval")
    ap.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved rounds (at least 3): each sweeps the whole grid three "
        "ways and replays one random grid policy through the router",
    )
    ap.add_argument("--root", help="workspace with the imported datasets (default: import into a temp dir)")
    args = ap.parse_args()
    rows = [r for n in args.datasets.split(",") for r in run(n, args.rounds, args.root)]
    print("# vectorised sweep vs real router replay, time per policy over every item")
    print(
        f"machine: {machine()}; {args.rounds} interleaved rounds, each: the whole default grid swept three ways, "
        "then one random grid policy (seed 0) replayed through the router; min / median / max over rounds, the "
        "ratio taken within each round; outcome table built cold, once\n"
    )
    head = ["dataset", "items", "grid policies", "outcome table s (once)", "sweep", "sweep ms/policy"]
    print(table([*head, "replay ms/policy", "ratio (replay / sweep)", "per-item mismatches (tier, cost)"], rows))


if __name__ == "__main__":
    main()
