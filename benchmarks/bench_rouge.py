"""ROUGE-L: our fast path (memoised stemming, rapidfuzz LCS) vs rouge-score's RougeScorer.

Goal (issue 4): at least 30x faster with identical scores, on real answer
pairs (AlpacaEval: gpt4_1106_preview's answer as reference vs another model's).
"""

from __future__ import annotations

import argparse
import json
import time

from _common import machine, table

from routerlab import rouge
from routerlab.datasets import fetch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--model", default="gpt-4o-mini-2024-07-18")
    args = ap.parse_args()
    from rouge_score.rouge_scorer import RougeScorer

    files = fetch("alpaca_eval", progress=False)
    ref = json.loads(files["results/gpt4_1106_preview/model_outputs.json"].read_text())
    out = json.loads(files[f"results/{args.model}/model_outputs.json"].read_text())
    pairs = [(r["output"], o["output"]) for r, o in zip(ref, out, strict=True)][: args.pairs]
    scorer = RougeScorer(["rougeL"], use_stemmer=True)
    t0 = time.perf_counter()
    want = [scorer.score(a, b)["rougeL"].fmeasure for a, b in pairs]
    t_ref = time.perf_counter() - t0
    rouge.tokenize.cache_clear()
    rouge._stem_cached.cache_clear()
    t0 = time.perf_counter()
    cold = [rouge.rouge_l_f(a, b) for a, b in pairs]
    t_cold = time.perf_counter() - t0
    rouge.tokenize.cache_clear()  # warm stems, fresh token lists: a new set of answers in a warm process
    t0 = time.perf_counter()
    warm = [rouge.rouge_l_f(a, b) for a, b in pairs]
    t_warm = time.perf_counter() - t0
    bad = sum(x != y for x, y in zip(want, cold, strict=True)) + sum(x != y for x, y in zip(want, warm, strict=True))
    n = len(pairs)
    print(f"# ROUGE-L F on {n} real AlpacaEval answer pairs\nmachine: {machine()}; one pass each\n")
    print(
        table(
            ["implementation", "total s", "ms per pair", "ratio vs RougeScorer", "mismatching scores"],
            [
                ["rouge_score RougeScorer(use_stemmer=True)", f"{t_ref:.2f}", f"{t_ref / n * 1000:.2f}", "1x", "-"],
                [
                    "routerlab.rouge, cold caches",
                    f"{t_cold:.2f}",
                    f"{t_cold / n * 1000:.2f}",
                    f"{t_ref / t_cold:.0f}x",
                    str(sum(x != y for x, y in zip(want, cold, strict=True))),
                ],
                [
                    "routerlab.rouge, warm stem cache",
                    f"{t_warm:.2f}",
                    f"{t_warm / n * 1000:.2f}",
                    f"{t_ref / t_warm:.0f}x",
                    str(sum(x != y for x, y in zip(want, warm, strict=True))),
                ],
            ],
        )
    )
    if bad:
        raise SystemExit(f"{bad} scores differ from rouge-score")


if __name__ == "__main__":
    main()
