"""Your own logged outputs, from the CLI: a ladder file names the tiers (any model names, explicit prices),
items lacking a tier are dropped and counted, the samples' temperature goes into the policy."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from routerlab import load_policy
from routerlab.cli import main
from routerlab.data.evalset import load_evalset

MODELS = {"llama-3.1-8b-instruct": 0.5, "claude-3-haiku-20240307": 0.75, "mistralai/Mixtral-8x7B-Instruct-v0.1": 0.95}
LADDER = {
    "tiers": [
        {
            "source_model": "llama-3.1-8b-instruct",
            "provider": "openai",
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "base_url": "https://api.together.xyz/v1",
            "api_key_env": "TOGETHER_API_KEY",
            "price": {"input_usd_per_mtok": "0.18", "output_usd_per_mtok": "0.18"},
        },
        {
            "source_model": "claude-3-haiku-20240307",
            "provider": "anthropic",
            "base_url": "https://api.anthropic.com",
            "api_key_env": "ANTHROPIC_API_KEY",
        },
        {
            "source_model": "mistralai/Mixtral-8x7B-Instruct-v0.1",
            "provider": "openai",
            "base_url": "https://api.together.xyz/v1",
            "api_key_env": "TOGETHER_API_KEY",
            "price": {"input_usd_per_mtok": "0.6", "output_usd_per_mtok": "0.6"},
        },
    ]
}


def write_outputs(path: Path, *, n: int = 12, temperature: Any = 0.8, skip: tuple[str, str] | None = None) -> Path:
    rng = random.Random(7)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 50), rng.randint(2, 50)
        for m, acc in MODELS.items():
            if skip == (f"q{i}", m):
                continue
            samples = [f"Answer: {a + b if rng.random() < acc else a + b + 1}" for _ in range(3)]
            row = {"id": f"q{i}", "prompt": f"What is {a} + {b}?", "model": m, "samples": samples, "answer": str(a + b)}
            if temperature is not None:
                row["temperature"] = temperature if not isinstance(temperature, dict) else temperature[m]
            rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_ladder(path: Path, ladder: dict[str, Any] = LADDER) -> Path:
    path.write_text(json.dumps(ladder), encoding="utf-8")
    return path


def test_import_own_outputs_with_unknown_model_names_and_explicit_prices(tmp_path: Path, capsys: Any) -> None:
    outputs = write_outputs(tmp_path / "logs.jsonl", skip=("q3", "claude-3-haiku-20240307"))
    ladder = write_ladder(tmp_path / "ladder.json")
    root = tmp_path / "ws"
    assert main(["data", "import", str(outputs), "--ladder", str(ladder), "--study", "mine", "--root", str(root),
                 "--quiet"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "11 items" in captured.out and "routerlab sweep mine" in captured.out
    assert "1 item(s) left out" in captured.err and "q3 (no claude-3-haiku-20240307)" in captured.err
    policy = load_policy(root / "data" / "imported" / "mine" / "ladder-policy.json")
    assert [t.model for t in policy.tiers] == [
        "meta-llama/Llama-3.1-8B-Instruct",
        "claude-3-haiku-20240307",
        "mistralai/Mixtral-8x7B-Instruct-v0.1",
    ]
    assert policy.tiers[0].price is not None and str(policy.tiers[0].price.input_usd_per_mtok) == "0.18"
    assert policy.confidence.temperature == 0.8  # from the file, not an assumed 0.7
    assert len(load_evalset(root / "data" / "imported" / "mine" / "evalset.jsonl")) == 11
    assert main(["sweep", "mine", "--root", str(root), "--scorer", "exact", "--quiet"]) == 0
    assert (root / "reports" / "mine" / "sweep.csv").is_file()


def test_strict_refuses_an_item_lacking_a_tier(tmp_path: Path, capsys: Any) -> None:
    outputs = write_outputs(tmp_path / "logs.jsonl", skip=("q3", "claude-3-haiku-20240307"))
    ladder = write_ladder(tmp_path / "ladder.json")
    code = main(["data", "import", str(outputs), "--ladder", str(ladder), "--root", str(tmp_path), "--strict",
                 "--quiet"])  # fmt: skip
    assert code != 0 and "'q3' has no output for ladder model(s) ['claude-3-haiku-20240307']" in capsys.readouterr().err


def test_an_unpriced_tier_is_refused_before_anything_is_written(tmp_path: Path, capsys: Any) -> None:
    ladder = json.loads(json.dumps(LADDER))
    del ladder["tiers"][0]["price"]  # a model genai-prices does not know, and no price given
    outputs, path = write_outputs(tmp_path / "logs.jsonl"), write_ladder(tmp_path / "l.json", ladder)
    code = main(["data", "import", str(outputs), "--ladder", str(path), "--root", str(tmp_path / "ws"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "has no known price" in err and "'price'" in err
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["tiers"][0].pop("source_model"), "tiers[0].source_model"),
        (lambda d: d["tiers"][1].update(provider="azure"), "tiers[1].provider"),
        (lambda d: d["tiers"].pop(), None),  # two tiers are a valid ladder
        (lambda d: d.update(extra=1), '{"tiers": [...]}'),
    ],
)
def test_ladder_file_errors_name_the_file_and_field(tmp_path: Path, change: Any, message: str | None) -> None:
    from routerlab.data.importers import load_ladder
    from routerlab.errors import DataError

    ladder = json.loads(json.dumps(LADDER))
    change(ladder)
    path = write_ladder(tmp_path / "ladder.json", ladder)
    if message is None:
        assert len(load_ladder(path)) == 2
        return
    with pytest.raises(DataError) as info:
        load_ladder(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_samples_drawn_at_different_temperatures_give_each_tier_its_own(tmp_path: Path) -> None:
    temps = {"llama-3.1-8b-instruct": 0.7, "claude-3-haiku-20240307": 1.0, "mistralai/Mixtral-8x7B-Instruct-v0.1": 1}
    outputs = write_outputs(tmp_path / "logs.jsonl", temperature=temps)
    root = tmp_path / "ws"
    assert main(["data", "import", str(outputs), "--ladder", str(write_ladder(tmp_path / "l.json")), "--study", "t",
                 "--root", str(root), "--quiet"]) == 0  # fmt: skip
    policy = load_policy(root / "data" / "imported" / "t" / "ladder-policy.json")
    # two checked tiers at 0.7 and 1.0: one is confidence.temperature, the other the tier's own
    assert {policy.sample_temperature(0), policy.sample_temperature(1)} == {0.7, 1.0}
    assert sum(t.sample_temperature is not None for t in policy.tiers) == 1
    bodies = [
        json.loads(i["request"]["body"])
        for p in (root / "cassettes" / "t").glob("q*.json")
        for i in json.loads(p.read_text())["interactions"]
    ]
    by_model = {(b["model"], b.get("temperature")) for b in bodies if b.get("temperature")}
    assert ("meta-llama/Llama-3.1-8B-Instruct", 0.7) in by_model and ("claude-3-haiku-20240307", 1.0) in by_model


def test_a_model_with_rows_at_two_temperatures_records_both(tmp_path: Path, capsys: Any) -> None:
    """Rows of one model at two temperatures: the first is its tier's, the samples at the second are
    recorded too and listed in the manifest; a temperature some items lack is refused, naming them."""
    from routerlab.data.cassettes import read_manifest, recorded_temperatures

    path = write_outputs(tmp_path / "logs.jsonl", temperature=0.7)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    hot = [dict(r, temperature=1.2, samples=[s + " (hot)" for s in r["samples"]]) for r in rows
           if r["model"] == "llama-3.1-8b-instruct"]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + hot))
    root = tmp_path / "ws"
    assert main(["data", "import", str(path), "--ladder", str(write_ladder(tmp_path / "l.json")), "--study", "h",
                 "--root", str(root), "--quiet"]) == 0  # fmt: skip
    policy = load_policy(root / "data" / "imported" / "h" / "ladder-policy.json")
    assert policy.sample_temperature(0) == 0.7
    manifest = read_manifest(root / "cassettes" / "h")
    assert recorded_temperatures(policy, manifest) == {0: (0.7, 1.2)}
    texts = [
        (json.loads(i["request"]["body"]).get("temperature"), i["response"]["body"]["string"])
        for p in (root / "cassettes" / "h").glob("q*.json")
        for i in json.loads(p.read_text())["interactions"]
        if json.loads(i["request"]["body"])["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    ]
    assert any(t == 1.2 and "(hot)" in s for t, s in texts) and any(t == 0.7 and "(hot)" not in s for t, s in texts)
    assert not any(t == 0.7 and "(hot)" in s for t, s in texts)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + hot[1:]))  # one item lacks its hot row
    code = main(["data", "import", str(path), "--ladder", str(write_ladder(tmp_path / "l.json")), "--study", "h2",
                 "--root", str(root), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "temperature 1.2" in err and hot[0]["id"] in err


def test_boxed_answers_a_greedy_mid_tier_and_a_missing_answer(tmp_path: Path, capsys: Any) -> None:
    """The issue's case: model names outside the project's lists with explicit prices, a mid tier
    logged greedy-only between sampled tiers, \\boxed{} answers, one item without a gold answer. The
    cheap tier's check is swept (only there), and every tier scores above zero."""
    import pandas as pd

    rng = random.Random(11)
    rows = []
    for i in range(30):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        for m, acc in MODELS.items():
            n = 1 if m.startswith("claude") else 3  # the mid tier was logged greedy
            samples = [f"{a} plus {b}: \\boxed{{{a + b if rng.random() < acc else a + b + 2}}}" for _ in range(n)]
            row: dict[str, Any] = {"id": f"q{i}", "prompt": f"Add {a} and {b}.", "model": m, "samples": samples}
            if i != 5:
                row["answer"] = f"\\boxed{{{a + b}}}"
            if n > 1:
                row["temperature"] = 1.0
            rows.append(row)
    outputs = tmp_path / "logs.jsonl"
    outputs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    root = tmp_path / "ws"
    assert main(["data", "import", str(outputs), "--ladder", str(write_ladder(tmp_path / "l.json")), "--study",
                 "boxed", "--answer-pattern", "boxed", "--root", str(root), "--quiet"]) == 0  # fmt: skip
    policy = load_policy(root / "data" / "imported" / "boxed" / "ladder-policy.json")
    assert policy.confidence.tiers == (0,) and policy.confidence.answer_pattern == "boxed"
    assert policy.confidence.temperature == 1.0
    assert main(["sweep", "boxed", "--root", str(root), "--quiet"]) == 0  # scorer chosen: the items carry answers
    table = pd.read_csv(root / "reports" / "boxed" / "sweep.csv")
    checked = table[table["similarity"] != "none"]
    assert len(checked) > 0 and set(checked["check_tiers"]) == {"0"}
    assert checked["escalation_rate"].max() > 0  # the cheap tier's samples disagree on some items
    from routerlab.workbench.study import run_study

    st = run_study("boxed", root=root, progress=False, bootstrap=50)
    assert st.scorer == "exact" and st.scorer_warning is None
    assert (st.baselines["quality"] > 0).all(), st.baselines
    assert st.scorer_coverage is not None and "29 of 30" in st.scorer_coverage


def test_a_scorer_that_cannot_tell_the_tiers_apart_blocks_export_unless_forced(tmp_path: Path, capsys: Any) -> None:
    """Answers the default pattern cannot read: every tier scores 0. The report warns, export refuses,
    and with --force it exports and prints n/a (no raw TypeError) for the undefined share."""
    rows = [json.loads(line) for line in write_outputs(tmp_path / "logs.jsonl").read_text().splitlines()]
    for r in rows:
        r["samples"] = [t.replace("Answer: ", "=> ") for t in r["samples"]]
    outputs = tmp_path / "unreadable.jsonl"
    outputs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    q = ["--root", str(tmp_path / "ws"), "--quiet"]
    assert main(["data", "import", str(outputs), "--ladder", str(write_ladder(tmp_path / "l.json")), *q]) == 0
    assert main(["export", "unreadable", *q]) == 1
    err = capsys.readouterr().err
    assert "every answer scores 0" in err and "answer_pattern" in err and "--force" in err
    assert main(["export", "unreadable", "--force", *q]) == 0
    assert "n/a of premium" in capsys.readouterr().out
    (tmp_path / "ws" / "policies" / "unreadable.json").unlink(missing_ok=True)  # the one export --force wrote
    assert main(["report", "unreadable", *q]) == 0
    assert "**Warning: every answer scores 0" in (tmp_path / "ws" / "reports" / "unreadable" / "report.md").read_text()
    assert "no policy written" in capsys.readouterr().out
    assert not (tmp_path / "ws" / "policies" / "unreadable.json").exists()  # as export refuses, report writes none


def test_no_command_ends_in_a_traceback(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import routerlab.cli as cli

    def broken(args: Any) -> int:
        raise KeyError("boom")

    monkeypatch.setattr(cli, "_data_list", broken)
    monkeypatch.delenv("ROUTERLAB_DEBUG", raising=False)
    assert main(["data", "list"]) == 70
    err = capsys.readouterr().err
    assert "internal error: KeyError" in err and "Traceback" not in err


def test_importing_another_eval_set_into_a_study_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    ladder = str(write_ladder(tmp_path / "l.json"))
    first = write_outputs(tmp_path / "a.jsonl")
    assert main(["data", "import", str(first), "--ladder", ladder, "--study", "s", "--root", str(root), "--quiet"]) == 0
    evalset = root / "data" / "imported" / "s" / "evalset.jsonl"
    before = evalset.read_bytes()
    other = write_outputs(tmp_path / "b.jsonl", n=5)
    assert main(["data", "import", str(other), "--ladder", ladder, "--study", "s", "--root", str(root), "--quiet"]) == 1
    assert evalset.read_bytes() == before  # untouched: the study still matches its cassettes


def test_a_ladder_name_the_outputs_never_use_is_named_with_a_suggestion(tmp_path: Path, capsys: Any) -> None:
    ladder = json.loads(json.dumps(LADDER))
    ladder["tiers"][1]["source_model"] = "claude-3-haiku-2024037"  # a typo
    code = main(["data", "import", str(write_outputs(tmp_path / "o.jsonl")), "--ladder",
                 str(write_ladder(tmp_path / "l.json", ladder)), "--root", str(tmp_path), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "'claude-3-haiku-2024037' (did you mean 'claude-3-haiku-20240307'?)" in err


def test_a_few_short_items_that_cost_a_tier_its_check_are_named(tmp_path: Path, capsys: Any) -> None:
    rows = [json.loads(line) for line in write_outputs(tmp_path / "o.jsonl").read_text().splitlines()]
    rows[0]["samples"] = rows[0]["samples"][:1]  # q0 of the cheap tier logged greedy
    path = tmp_path / "short.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    q = ["--ladder", str(write_ladder(tmp_path / "l.json")), "--root", str(tmp_path / "ws"), "--quiet"]
    assert main(["data", "import", str(path), *q]) == 0
    err = capsys.readouterr().err
    assert "tier 'cheap' (llama-3.1-8b-instruct) is not checked: 1 of 12 items" in err and "q0" in err
