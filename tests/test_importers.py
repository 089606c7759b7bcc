"""Importing public model outputs: the three mirrored datasets and the generic JSONL format.

The datasets are read at test time from the shared mirror
(``$ROUTERLAB_MIRROR`` or ``<repo>/../shared/datasets/github``); the fetch
cache, the eval sets and the cassettes all go to pytest's tmp dirs, never into
the repository. Without a mirror the dataset tests skip and say why.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from routerlab.consistency import extract_answer
from routerlab.data import importers, paths
from routerlab.data.cassettes import ESTIMATED_HEADER, cassette_name, read_manifest, replay_items
from routerlab.data.evalset import EvalItem, load_evalset
from routerlab.data.importers import ImportResult, OutputRow, dump_outputs, load_outputs
from routerlab.errors import DataError
from routerlab.policy import RouterPolicy, load_policy
from routerlab.pricing import cost_usd
from routerlab.types import Usage

REPO = Path(__file__).resolve().parents[1]
EXPECTED_ITEMS = {"mot_date": 369, "arena_bench_v1": 300, "alpaca_eval": 805}
# mean GPT-4 judge score per model, measured on this data (shared/datasets/README.md)
ARENA_MEAN_SCORE = {"mistralai/Mistral-7B-Instruct-v0.1": 3.57, "gpt-3.5-turbo": 6.76, "gpt-4-1106-preview": 8.87}


def _snapshot(*dirs: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(REPO)): (p.stat().st_size, p.stat().st_mtime_ns)
        for d in dirs
        if d.exists()
        for p in d.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], ImportResult]]:
    """Import a dataset on first use (each at most once per run) into its own tmp root."""
    if paths.mirror_dir() is None:
        pytest.skip(
            "no dataset mirror: set ROUTERLAB_MIRROR or provide ../shared/datasets/github "
            "(the public datasets are read from it at test time, never stored in the repo)"
        )
    done: dict[str, ImportResult] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(paths.DATA_DIR_ENV, str(tmp_path_factory.mktemp("data-cache")))

        def get(name: str) -> ImportResult:
            if name not in done:
                watched = (REPO / "cassettes", REPO / "data", REPO / ".routerlab-data")
                before = _snapshot(*watched)
                root = tmp_path_factory.mktemp(f"import-{name}")
                done[name] = importers.import_dataset(name, root=root, progress=False)
                assert _snapshot(*watched) == before, "importing with root=tmp_path touched the repository"
                for p in (done[name].evalset, done[name].cassettes, done[name].policy):
                    assert p.is_relative_to(root)
            return done[name]

        yield get


def loaded(res: ImportResult) -> tuple[RouterPolicy, list[EvalItem]]:
    return load_policy(res.policy), load_evalset(res.evalset)


def responses(cassette: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for it in json.loads(cassette.read_text(encoding="utf-8"))["interactions"]:
        yield it["request"], it["response"]


# ---------------------------------------------------------------- the three datasets


@pytest.mark.parametrize("name", list(EXPECTED_ITEMS))
def test_import_dataset(imported: Callable[[str], ImportResult], name: str) -> None:
    res = imported(name)
    policy, items = loaded(res)
    assert res.items == len(items) == EXPECTED_ITEMS[name]
    assert len({i.id for i in items}) == len(items)
    ladder_models = [t.model for t in policy.tiers]
    assert len(ladder_models) == 3
    assert policy.provenance["ladder_source_models"] == list(importers.DEFAULT_LADDERS[name])

    # a cassette for every item, and nothing else but the manifest
    files = {p.name for p in res.cassettes.iterdir()}
    assert files == {cassette_name(i.id) for i in items} | {"manifest.json"}
    assert read_manifest(res.cassettes)["policy"]["tiers"] == json.loads(res.policy.read_text())["tiers"]

    if name == "mot_date":
        assert policy.confidence.k == 2 and policy.confidence.classes  # two samples decide escalation
        assert all(i.answer and re.fullmatch(r"\d\d/\d\d/\d{4}", i.answer) for i in items)
    elif name == "arena_bench_v1":
        assert all(i.reference and len(i.reference) > 20 for i in items)
        assert all(set(i.labels) <= set(ladder_models) for i in items)
        assert sum(len(i.labels) == 3 for i in items) >= 290  # a few judgments were unparseable
        for model, expected in ARENA_MEAN_SCORE.items():
            scores = [i.labels[model] for i in items if model in i.labels]
            assert all(1 <= s <= 10 for s in scores)
            assert statistics.mean(scores) == pytest.approx(expected, abs=0.02), model
    else:
        assert all(i.reference for i in items)  # gpt4_1106_preview's answer, the AlpacaEval 2 baseline
        assert not any(i.labels for i in items)

    # estimated usage: every response is marked and has plausible token counts
    checked = 0
    for item in items:
        for req, resp in responses(res.cassettes / cassette_name(item.id)):
            assert resp["status"]["code"] == 200
            assert resp["headers"].get(ESTIMATED_HEADER) == ["1"], (item.id, resp["headers"])
            body = json.loads(resp["body"]["string"])
            usage = body["usage"]
            assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
            # cl100k tokens never span whitespace and never hold less than a byte: words <= tokens <= bytes
            texts = [c["message"]["content"] for c in body["choices"]]
            words = sum(len(t.split()) for t in texts)
            assert words <= usage["completion_tokens"] <= sum(len(t.encode()) for t in texts)
            prompt = [m["content"] for m in json.loads(req["body"])["messages"]]
            assert (
                sum(len(t.split()) for t in prompt) < usage["prompt_tokens"] <= sum(len(t.encode()) + 8 for t in prompt)
            )
            checked += 1
    assert checked == res.requests_recorded

    # every item replays through the real router with the imported policy: no miss
    results = list(replay_items(policy, res.cassettes, items))
    assert len(results) == len(items)
    assert all(r.usage.input_tokens > 0 and r.usage.output_tokens > 0 and r.cost_usd > 0 for _, r in results)
    if name != "mot_date":  # one answer per model: nothing to check consistency on, tier 0 answers
        assert all(r.tier_index == 0 and r.escalations == 0 for _, r in results)


def test_mot_date_token_estimates_are_the_cl100k_counts(imported: Callable[[str], ImportResult]) -> None:
    res = imported("mot_date")
    _, items = loaded(res)
    for item in items[:15]:
        for req, resp in responses(res.cassettes / cassette_name(item.id)):
            body = json.loads(resp["body"]["string"])
            sent = json.loads(req["body"])
            assert body["usage"]["prompt_tokens"] == importers.estimate_prompt_tokens(sent["messages"])
            out = sum(importers.count_tokens(c["message"]["content"]) for c in body["choices"])
            assert body["usage"]["completion_tokens"] == out


def test_mot_date_consistency_escalates_some_items_only(imported: Callable[[str], ImportResult]) -> None:
    res = imported("mot_date")
    policy, items = loaded(res)
    assert policy.confidence.k == 2
    # the imported policy compares samples with difflib; on date answers compare the final answers
    policy = policy.with_changes(confidence=replace(policy.confidence, similarity="answer"))
    escalated = kept = 0
    for _, r in replay_items(policy, res.cassettes, items):
        first = r.attempts[0]
        assert first.tier_index == 0 and len(first.texts) == 2
        agree = extract_answer(first.texts[0]) == extract_answer(first.texts[1]) != ""
        assert first.outcome == ("accepted" if agree else "low_confidence"), first
        if agree:
            kept += 1
            assert r.tier_index == 0 and r.escalations == 0
        else:
            escalated += 1
            assert r.escalations >= 1 and r.tier_index >= 1
    assert kept > 0 and escalated > 0
    assert kept + escalated == EXPECTED_ITEMS["mot_date"]


# ---------------------------------------------------------------- the generic format

SMALL, BIG = "gpt-4o-mini-2024-07-18", "gpt-4o-2024-05-13"


def usage(*pairs: tuple[int, int]) -> list[dict[str, int]]:
    return [{"input_tokens": i, "output_tokens": o} for i, o in pairs]


GENERIC_ROWS: list[dict[str, Any]] = [
    {
        "id": "sky",
        "prompt": "Which colour is a cloudless sky at noon?",
        "model": SMALL,
        "samples": ["Blue.", "Blue."],
        "usage": usage((17, 3), (17, 4)),
        "score": 8,
        "reference": "Blue",
        "answer": "blue",
        "meta": {"topic": "weather", "difficulty": 1},
    },
    {
        "id": "sky",
        "prompt": "Which colour is a cloudless sky at noon?",
        "model": BIG,
        "samples": ["A clear sky at noon is blue.", "Blue, mostly."],
        "usage": usage((17, 11), (17, 5)),
        "score": 9.5,
    },
    {
        "id": "tortoise",
        "messages": [
            {"role": "system", "content": "You name pets."},
            {"role": "user", "content": "Invent a name for a very slow tortoise."},
        ],
        "model": SMALL,
        "samples": ["Sheldon the Swift", "Captain Pebblesworth of the Lettuce Patch"],
        "usage": usage((29, 6), (29, 12)),
    },
    {
        "id": "tortoise",
        "messages": [
            {"role": "system", "content": "You name pets."},
            {"role": "user", "content": "Invent a name for a very slow tortoise."},
        ],
        "model": BIG,
        "samples": ["Gerald", "Tortellini"],
        "usage": usage((31, 2), (31, 4)),
    },
]


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines), "utf-8")
    return path


def test_load_outputs_and_round_trip(tmp_path: Path) -> None:
    rows = load_outputs(write_jsonl(tmp_path / "outputs.jsonl", [*GENERIC_ROWS[:2], "", *GENERIC_ROWS[2:]]))
    assert [(r.id, r.model) for r in rows] == [("sky", SMALL), ("sky", BIG), ("tortoise", SMALL), ("tortoise", BIG)]
    sky = rows[0]
    assert sky.messages == ({"role": "user", "content": "Which colour is a cloudless sky at noon?"},)
    assert sky.samples == ("Blue.", "Blue.")
    assert sky.usage == tuple(GENERIC_ROWS[0]["usage"])
    assert (sky.score, sky.reference, sky.answer, sky.greedy) == (8.0, "Blue", "blue", None)
    assert sky.meta == {"topic": "weather", "difficulty": 1}
    assert rows[2].messages[0] == {"role": "system", "content": "You name pets."}

    dumped = tmp_path / "dumped.jsonl"
    dump_outputs(rows, dumped)
    again = load_outputs(dumped)
    assert again == rows
    dump_outputs(again, tmp_path / "twice.jsonl")
    assert (tmp_path / "twice.jsonl").read_bytes() == dumped.read_bytes()
    assert rows[0] == OutputRow(
        "sky",
        ({"role": "user", "content": "Which colour is a cloudless sky at noon?"},),
        SMALL,
        ("Blue.", "Blue."),
        usage=tuple(GENERIC_ROWS[0]["usage"]),
        score=8.0,
        reference="Blue",
        answer="blue",
        meta={"topic": "weather", "difficulty": 1},
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r | {"colour": "blue"}, "colour"),
        (lambda r: {k: v for k, v in r.items() if k != "samples"}, "samples"),
        (lambda r: r | {"usage": usage((17, 3))}, "usage"),
        (lambda r: r | {"samples": []}, "samples"),
        (lambda r: r | {"score": "high"}, "score"),
        (lambda r: r | {"usage": usage((17, -3), (17, 5))}, "usage[0].output_tokens"),
        (lambda r: r | {"usage": [{"input_tokens": True, "output_tokens": 1}] * 2}, "usage[0].input_tokens"),
        (lambda r: r | {"meta": ["not", "an", "object"]}, "meta"),
        (
            lambda r: {k: v for k, v in r.items() if k != "prompt"} | {"messages": [{"role": "user"}]},
            "messages[0].content",
        ),
        (lambda r: {k: v for k, v in r.items() if k != "prompt"} | {"messages": "hi"}, "messages"),
    ],
    ids=[
        "unknown-key",
        "missing-samples",
        "usage-length",
        "empty-samples",
        "score-type",
        "usage-negative",
        "usage-bool",
        "meta-type",
        "message-shape",
        "messages-type",
    ],
)
def test_bad_rows_name_file_line_and_field(
    tmp_path: Path, change: Callable[[dict[str, Any]], dict[str, Any]], field: str
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [GENERIC_ROWS[0], "", change(dict(GENERIC_ROWS[1]))])
    with pytest.raises(DataError) as exc:
        load_outputs(path)
    assert f"{path}:3: field '{field}'" in str(exc.value)


def test_outputs_file_problems_are_data_errors_naming_the_place(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing.jsonl: cannot read outputs file"):
        load_outputs(tmp_path / "missing.jsonl")
    dup = write_jsonl(tmp_path / "dup.jsonl", [GENERIC_ROWS[0], GENERIC_ROWS[1], GENERIC_ROWS[0]])
    with pytest.raises(DataError, match=re.escape(f"{dup}:3: field 'model'") + ".*line 1"):
        load_outputs(dup)
    nan = write_jsonl(tmp_path / "nan.jsonl", [json.dumps(GENERIC_ROWS[0])[:-1] + ', "score": NaN}'])
    with pytest.raises(DataError, match=re.escape(f"{nan}:1: invalid JSON")):
        load_outputs(nan)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(
        json.dumps(GENERIC_ROWS[0]).encode() + b"\n" + json.dumps(GENERIC_ROWS[1]).encode()[:-2] + b'\xe9"}\n'
    )
    with pytest.raises(DataError, match=re.escape(f"{latin}:2: is not UTF-8 text")):
        load_outputs(latin)


def test_outputs_rows_name_the_prompt_field_and_accept_any_line_ending(tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [GENERIC_ROWS[0] | {"prompt": 5}])
    with pytest.raises(DataError, match=re.escape(f"{bad}:1: field 'prompt'")):
        load_outputs(bad)
    lines = [json.dumps(r) for r in GENERIC_ROWS]
    cr = tmp_path / "cr.jsonl"
    cr.write_bytes("\r".join(lines).encode() + b"\r")
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes("\r\n".join(lines).encode())
    assert load_outputs(cr) == load_outputs(crlf) == load_outputs(write_jsonl(tmp_path / "lf.jsonl", GENERIC_ROWS))


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [GENERIC_ROWS[0], '{"id": "x",'])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: invalid JSON")):
        load_outputs(path)


def test_import_outputs_with_reported_usage_prices_exact_tokens(tmp_path: Path) -> None:
    rows = load_outputs(write_jsonl(tmp_path / "outputs.jsonl", GENERIC_ROWS))
    ladder = importers.make_ladder([SMALL, BIG])
    res = importers.import_outputs(rows, ladder, name="generic", root=tmp_path / "root", progress=False)
    assert res.evalset == tmp_path / "root" / "data" / "imported" / "generic" / "evalset.jsonl"
    policy, items = loaded(res)
    assert [t.model for t in policy.tiers] == [SMALL, BIG]
    assert policy.confidence.k == 2 and policy.confidence.classes
    sky = next(i for i in items if i.id == "sky")
    assert (sky.reference, sky.answer, dict(sky.labels)) == ("Blue", "blue", {SMALL: 8.0, BIG: 9.5})

    for item in items:  # reported usage: nothing is marked estimated
        for _, resp in responses(res.cassettes / cassette_name(item.id)):
            assert ESTIMATED_HEADER not in {k.lower() for k in resp["headers"]}

    results = {i.id: r for i, r in replay_items(policy, res.cassettes, items)}
    # sky: the two small samples agree -> one n=2 call, usage as reported (input once, both outputs)
    r = results["sky"]
    assert (r.tier, r.text) == ("tier0", "Blue.")
    assert r.usage == Usage(input_tokens=17, output_tokens=3 + 4)
    assert r.cost_usd == cost_usd(Usage(input_tokens=17, output_tokens=7), SMALL)
    # tortoise: the small samples disagree -> escalate; the big tier's single call is its first sample
    r = results["tortoise"]
    assert (r.tier, r.text) == ("tier1", "Gerald")
    small_cost = cost_usd(Usage(input_tokens=29, output_tokens=6 + 12), SMALL)
    big_cost = cost_usd(Usage(input_tokens=31, output_tokens=2), BIG)
    assert [a.cost_usd for a in r.attempts] == [small_cost, big_cost]
    assert r.cost_usd == small_cost + big_cost
    assert r.cost_usd > Decimal(0)
    assert r.usage == Usage(input_tokens=29 + 31, output_tokens=6 + 12 + 2)


def test_import_outputs_drops_or_with_strict_rejects_an_item_missing_a_ladder_model(tmp_path: Path) -> None:
    rows = load_outputs(write_jsonl(tmp_path / "outputs.jsonl", GENERIC_ROWS[:3]))
    with pytest.raises(DataError, match="tortoise"):
        importers.import_outputs(
            rows, importers.make_ladder([SMALL, BIG]), name="generic", root=tmp_path / "root", progress=False,
            strict=True,
        )  # fmt: skip
    res = importers.import_outputs(
        rows, importers.make_ladder([SMALL, BIG]), name="generic", root=tmp_path / "root", progress=False
    )
    assert res.dropped == 1 and res.items == 1
