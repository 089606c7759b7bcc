"""The outcome-table build: milliseconds per item, in one process and in parallel worker processes.

Issue 15's goals: under 2 ms per item warm; 1M items under 30 minutes on two cores. The build replays
every recorded call of every item from its cassette through the router's own request and response code,
prices it, computes the sample agreements (three similarities) and majority votes, and scores every
answer and sample. Each row times whole ``build_outcomes`` calls into a fresh cache folder (so nothing is
read from the Parquet cache), the temperature variants left out (``variants=False``, one table). "Warm":
the process has built a table before (imports, the stemmer, the price book loaded) and the cassettes are
in the OS file cache; the memos of whole texts (difflib pairs, ROUGE tokenisations) are cleared before
each run, since at a million items every text is new. Every row is --rounds interleaved rounds (at
least 3), min / median / max. The 1M projection is the median ms per item x 1,000,000 (the build is
linear in items: no step looks across items).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
from pathlib import Path

from _common import interleaved, machine, scaled_folder, spread, table, workspace

from routerlab.consistency import difflib_similarity
from routerlab.rouge import tokenize
from routerlab.workbench.outcomes import build_outcomes
from routerlab.workbench.scoring import applicable_scorers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="mot_date,alpaca_eval,arena_bench_v1")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (at least 3)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes of the parallel rows")
    ap.add_argument("--root", help="workspace with the datasets imported (default: import into a temp dir)")
    ap.add_argument(
        "--scale",
        type=int,
        metavar="N",
        help="build N items per dataset: its items copied under new ids, each copy's answer texts marked so no "
        "text repeats (so the fixed cost of a build is spread over N items, and no memo helps across copies)",
    )
    args = ap.parse_args()
    sets = {}
    for name in args.datasets.split(","):
        policy, items, cassettes, _base = workspace(name, args.root)
        if args.scale and args.scale > len(items):
            out = Path(tempfile.mkdtemp(prefix="rl-build-scaled-")) / name
            atexit.register(shutil.rmtree, out.parent, True)
            items = scaled_folder(cassettes, items, args.scale, out, distinct=True)
            cassettes = out
        scorers = applicable_scorers(items, [t.model for t in policy.tiers])
        sets[name] = (policy, items, cassettes, scorers)
        build_outcomes(items[:20], policy, cassettes, scorers=scorers, cache_dir=tempfile.mkdtemp(), progress=False)

    def case(name: str, workers: int, half: bool = False) -> object:
        policy, items, cassettes, scorers = sets[name]
        if half:
            items = items[: len(items) // 2]

        def run() -> None:
            # no text-level memo survives from an earlier run: at a million items every text is new
            # (the stemmer's per-word table stays: words do repeat across a large corpus)
            difflib_similarity.cache_clear()
            tokenize.cache_clear()
            build_outcomes(
                items, policy, cassettes, scorers=scorers, cache_dir=tempfile.mkdtemp(prefix="rl-build-"),
                progress=False, variants=False, workers=workers,
            )  # fmt: skip

        return run

    cases = {(n, w): case(n, w) for n in sets for w in sorted({1, args.workers})}
    runs = {f"{n}/{w}": fn for (n, w), fn in cases.items()}
    runs.update({f"{n}/{args.workers}/half": case(n, args.workers, half=True) for n in sets})
    times = interleaved(runs, args.rounds)  # type: ignore[arg-type]
    rows = []
    verdicts = []
    for (name, w), _fn in cases.items():
        n = len(sets[name][1])
        t = times[f"{name}/{w}"]
        ms = [x / n * 1000 for x in t]
        med = sorted(ms)[len(ms) // 2]
        rows.append([name, f"{n:,}", str(w), spread(t, "{:.1f}"), spread(ms, "{:.1f}"), f"{med * 1e6 / 60_000:,.0f}"])
        if w == args.workers:
            proj = med * 1e6 / 60_000
            verdicts.append([name, f"{med:.2f} ms per item ({w} processes)", "met" if med < 2 else "MISSED",
                             f"{proj:,.0f} min", "met" if proj < 30 else "MISSED"])  # fmt: skip
    print("# outcome-table build, ms per item (warm; fresh cache folder each run; no temperature variants)")
    print(f"machine: {machine()}; {args.rounds} interleaved rounds, min / median / max\n")
    print(table(["dataset", "items", "processes", "seconds", "ms per item", "1M items, projected min"], rows))
    print()
    print(table(["dataset", "warm build", "goal < 2 ms/item", "1M items projected", "goal < 30 min"], verdicts))
    # the fixed part of a build (the worker pool, the Parquet writes) is spread over few items here; the
    # marginal cost, from the same round's half-set and full-set runs, is what a larger set adds per item
    slopes = []
    for name, (_p, items, _c, _s) in sets.items():
        n, h = len(items), len(items) // 2
        full, half = times[f"{name}/{args.workers}"], times[f"{name}/{args.workers}/half"]
        per = [(f - hf) / (n - h) * 1000 for f, hf in zip(full, half, strict=True)]  # ms per item, each round
        med_full = sorted(full)[len(full) // 2]
        med_per = sorted(per)[len(per) // 2]
        slopes.append([name, f"{h:,} -> {n:,}", spread(per, "{:.2f}"),
                       f"{(med_full + med_per / 1000 * (1_000_000 - n)) / 60:,.0f}"])  # fmt: skip
    print(f"\n# marginal cost per item ({args.workers} processes): (full-set s - half-set s) / items added, per round")
    print(table(["dataset", "items", "marginal ms per item", "1M items from the marginal cost, min"], slopes))
    mem = []
    for name, (policy, items, cassettes, scorers) in sets.items():
        o = build_outcomes(items, policy, cassettes, scorers=scorers, cache_dir=tempfile.mkdtemp(), progress=False,
                           variants=False)  # fmt: skip
        n = len(items)
        total = int(o.calls.memory_usage(deep=True).sum() + o.samples.memory_usage(deep=True).sum())
        text = int(o.sample_texts().memory_usage(deep=True))  # what reading the texts file costs, when wanted
        assert o.texts_path is not None
        disk = o.texts_path.stat().st_size
        mem.append([name, f"{len(o.calls) / n:.1f}", f"{len(o.samples) / n:.1f}", f"{total / n / 1e3:.1f}",
                    f"{total / n * 1e6 / 1e9:.1f}", f"{text / n / 1e3:.1f}", f"{disk / n / 1e3:.1f}"])  # fmt: skip
    print("\n# the built tables in memory (pandas deep memory_usage of calls + samples; the texts in their own file)")
    print(table(["dataset", "call rows per item", "sample rows per item", "tables kB per item",
                 "tables, 1M items projected GB", "texts kB per item (read on demand)",
                 "texts file, 1M items projected GB"], mem))  # fmt: skip


if __name__ == "__main__":
    main()
