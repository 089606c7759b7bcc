"""Cassette storage at scale: one file per item against packs (``routerlab data pack``).

A study of --items items is made from mot_date's recorded cassettes: item i is mot_date item i mod 369
under a new id, with that item's cassette bytes under the new name (the requests do not depend on the
id, so every copy replays). The same folder is then timed loose and packed, every row --rounds
interleaved rounds (at least 3), min / median / max:

- copying the whole folder (``shutil.copytree``: what a backup or a move to another disk costs);
- packing it (``pack_cassettes`` on a fresh loose copy each round; the copy is not timed);
- the build's cache-key pass over every cassette (``outcomes._hashes``: read each one, hash it);
- building the outcome table of the first --build-items items (ms per item, one process).

The files are in the OS file cache in every row (the folder was just written); a cold disk adds the
same bytes read to both layouts, plus a seek per file to the loose one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from _common import interleaved, machine, scaled_folder, spread, table, workspace

from routerlab.data.cassettes import MANIFEST
from routerlab.data.packs import PACKS, pack_cassettes
from routerlab.workbench.outcomes import _hashes, build_outcomes
from routerlab.workbench.scoring import applicable_scorers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=50_000, help="items in the study (default 50,000: about 2 GB)")
    ap.add_argument("--build-items", type=int, default=1_500, help="items of the timed builds (default 1,500)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (at least 3)")
    ap.add_argument("--root", help="workspace with mot_date imported (default: import into a temp dir)")
    args = ap.parse_args()
    policy, items, cassettes, _base = workspace("mot_date", args.root)
    scorers = applicable_scorers(items, [t.model for t in policy.tiers])
    tmp = Path(tempfile.mkdtemp(prefix="rl-storage-"))
    try:
        loose = tmp / "loose"
        made = scaled_folder(cassettes, items, args.items, loose)
        packed = tmp / "packed"
        shutil.copytree(loose, packed)
        pack_cassettes(packed)
        ks = json.loads((loose / MANIFEST).read_text())["ks"]
        sub = made[: args.build_items]
        build_outcomes(sub[:20], policy, packed, scorers=scorers, cache_dir=tempfile.mkdtemp(), progress=False)

        def copy(src: Path):  # noqa: ANN202
            def run() -> None:
                dst = tmp / "copy"
                shutil.copytree(src, dst)
                shutil.rmtree(dst)

            return run

        took: list[float] = []  # the pack alone, each round (the copy before it is not counted)

        def pack_fresh() -> None:
            dst = tmp / "topack"
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(loose, dst)
            t0 = time.perf_counter()
            pack_cassettes(dst)
            took.append(time.perf_counter() - t0)

        def key_pass(folder: Path):  # noqa: ANN202
            return lambda: _hashes(policy, folder, made, ks, scorers)

        def build(folder: Path):  # noqa: ANN202
            return lambda: build_outcomes(sub, policy, folder, scorers=scorers, cache_dir=tempfile.mkdtemp(),
                                          progress=False, variants=False, workers=1)  # fmt: skip

        assert key_pass(loose)() == key_pass(packed)(), "the two layouts must give the same table key"
        times = interleaved(
            {
                "copy/loose": copy(loose),
                "copy/packed": copy(packed),
                "pack": pack_fresh,
                "key/loose": key_pass(loose),
                "key/packed": key_pass(packed),
                "build/loose": build(loose),
                "build/packed": build(packed),
            },
            args.rounds,
        )
        files_loose = sum(1 for p in loose.iterdir() if p.is_file())
        files_packed = sum(1 for _ in packed.rglob("*") if _.is_file())
        size = sum(p.stat().st_size for p in loose.iterdir())
        psize = sum(p.stat().st_size for p in (packed / PACKS).iterdir()) + (packed / MANIFEST).stat().st_size
        per = args.items / 1000
        print("# cassette storage: one file per item against packs (mot_date's cassettes, copied under new ids)")
        print(f"machine: {machine()}; {args.items:,} items; {args.rounds} interleaved rounds, min / median / max;"
              " files in the OS cache\n")  # fmt: skip
        print(table(["layout", "files", "bytes", "copy the folder, s", "cache-key pass, s", "per 1k items, s"], [
            ["one file per item", f"{files_loose:,}", f"{size / 1e9:.2f} GB", spread(times["copy/loose"], "{:.1f}"),
             spread(times["key/loose"], "{:.1f}"), spread([t / per for t in times["key/loose"]], "{:.3f}")],
            ["packed", f"{files_packed:,}", f"{psize / 1e9:.2f} GB", spread(times["copy/packed"], "{:.1f}"),
             spread(times["key/packed"], "{:.1f}"), spread([t / per for t in times["key/packed"]], "{:.3f}")],
        ]))  # fmt: skip
        print(f"\npacking {args.items:,} loose cassettes: {spread(took, '{:.1f}')} s "
              f"({spread([t / per for t in took], '{:.3f}')} s per 1k items)")  # fmt: skip
        ms = {k: [t / len(sub) * 1000 for t in times[f"build/{k}"]] for k in ("loose", "packed")}
        print(f"\n# outcome-table build of {len(sub):,} of those items, one process, ms per item")
        print(table(["layout", "ms per item"], [["one file per item", spread(ms["loose"], "{:.2f}")],
                                                 ["packed", spread(ms["packed"], "{:.2f}")]]))  # fmt: skip
        ratio = [p / q for p, q in zip(ms["packed"], ms["loose"], strict=True)]
        print(f"\npacked / loose build time, per round: {spread(ratio, '{:.3f}')}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
