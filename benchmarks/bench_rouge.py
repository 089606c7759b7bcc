"""ROUGE-L: our fast path (routerlab.rouge.rouge_l_f) vs rouge-score's RougeScorer(["rougeL"], use_stemmer=True).

Goal (issue 4): at least 30x faster with identical scores, on real answer pairs
(AlpacaEval: gpt4_1106_preview's answer as reference vs another model's answer,
read from the public mirror, $ROUTERLAB_MIRROR). Cold = routerlab.rouge's
token and stem caches cleared before each run (modules already imported);
warm stems = stem cache kept from a previous run, token cache cleared (new texts
whose vocabulary was seen before, as in one outcome-table build). Every score
of every run is compared with RougeScorer's: mismatches must be 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import interleaved, machine, spread, table

from routerlab import rouge
from routerlab.data.datasets import fetch, get_dataset
from routerlab.data.paths import mirror_dir


def load(model: str) -> list[dict[str, str]]:
    ds, rel = get_dataset("alpaca_eval"), f"results/{model}/model_outputs.json"
    mirror = mirror_dir()
    f = next(f for f in ds.files if f.path == rel)
    path = mirror / ds.relpath(f) if mirror is not None else Path(fetch("alpaca_eval", progress=False)[rel])
    return list(json.loads(path.read_text(encoding="utf-8")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200, help="answer pairs (at most 805)")
    ap.add_argument("--model", default="gpt-4o-mini-2024-07-18", help="the model compared with gpt4_1106_preview")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds, at least 3 (default 3)")
    args = ap.parse_args()
    from rouge_score.rouge_scorer import RougeScorer

    ref, out = load("gpt4_1106_preview"), load(args.model)
    pairs = [(r["output"], o["output"]) for r, o in zip(ref, out, strict=True)][: args.pairs]
    scorer = RougeScorer(["rougeL"], use_stemmer=True)
    scorer.score("warm up imports", "warming up imports")
    rouge.rouge_l_f("warm up imports", "warming up imports")
    scores: dict[str, list[float]] = {}

    def ref_run() -> None:
        scores["ref"] = [scorer.score(a, b)["rougeL"].fmeasure for a, b in pairs]

    def cold_run() -> None:
        rouge.clear_caches()  # inside the timed call: cheap next to the scoring, and the same every round
        scores["cold"] = [rouge.rouge_l_f(a, b) for a, b in pairs]

    def warm_run() -> None:
        rouge.tokenize.cache_clear()
        scores["warm"] = [rouge.rouge_l_f(a, b) for a, b in pairs]

    times = interleaved({"ref": ref_run, "cold": cold_run, "warm": warm_run}, args.repeat)
    want, got_cold, got_warm = scores["ref"], scores["cold"], scores["warm"]
    n = len(pairs)

    def row(label: str, key: str, got: list[float] | None) -> list[str]:
        bad = "-" if got is None else str(sum(x != y for x, y in zip(want, got, strict=True)))
        t = times[key]
        ratios = [r / x for r, x in zip(times["ref"], t, strict=True)]
        return [
            label,
            spread(t, "{:.3f}"),
            spread([x / n * 1000 for x in t], "{:.3f}"),
            spread(ratios, "{:.0f}", "x"),
            bad,
        ]

    rows = [
        row("rouge_score RougeScorer(['rougeL'], use_stemmer=True)", "ref", None),
        row("routerlab.rouge.rouge_l_f, cold caches", "cold", got_cold),
        row("routerlab.rouge.rouge_l_f, warm stem cache", "warm", got_warm),
    ]
    print(f"# ROUGE-L F on {n} real AlpacaEval pairs (gpt4_1106_preview vs {args.model})")
    print(
        f"machine: {machine()}; {args.repeat} interleaved rounds (reference, cold, warm in turn), min / median / max; "
        "the speed-up is taken within each round; imports done beforehand\n"
    )
    print(table(["implementation", "total s", "ms per pair", "speed-up vs RougeScorer", "mismatching scores"], rows))

    def cold() -> None:
        rouge.clear_caches()

    t_ref = statistics.median(times["ref"])
    t_cold, t_warm = statistics.median(times["cold"]), statistics.median(times["warm"])
    cold()
    words = {w for a, b in pairs for w in rouge._NON_ALNUM.sub(" ", f"{a} {b}".lower()).split() if len(w) > 3}
    t0 = time.perf_counter()
    for w in words:
        rouge._stem(w)
    t_stem = time.perf_counter() - t0
    print(f"\nof the cold time, {t_stem:.3f} s is nltk's PorterStemmer on the {len(words)} distinct words (1 run)")
    verdict = {True: "met", False: "MISSED"}
    print(
        f"goal >= 30x (medians): cold {verdict[t_ref / t_cold >= 30]}, warm stem cache {verdict[t_ref / t_warm >= 30]}"
    )
    bad = sum(x != y for got in (got_cold, got_warm) for x, y in zip(want, got, strict=True))
    if bad:
        raise SystemExit(f"{bad} scores differ from rouge-score")


if __name__ == "__main__":
    main()
