"""The outcome table: schema, exact costs, Parquet cache keyed by cassettes and settings, custom scorers."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from routerlab.data.cassettes import cassette_name, record
from routerlab.data.evalset import EvalItem
from routerlab.fakes import FakeProviders
from routerlab.policy import policy_from_dict
from routerlab.pricing import cost_usd
from routerlab.types import Usage
from routerlab.workbench.outcomes import PICO, build_outcomes
from routerlab.workbench.scoring import register_scorer

POLICY = {
    "schema_version": 1,
    "tiers": [
        {
            "name": "cheap",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "base_url": "https://api.openai.com/v1",
            "api_key_env": "OPENAI_API_KEY",
            "max_tokens": 50,
        },
        {
            "name": "mid",
            "provider": "anthropic",
            "model": "claude-3-5-sonnet-20240620",
            "base_url": "https://api.anthropic.com",
            "api_key_env": "ANTHROPIC_API_KEY",
            "max_tokens": 50,
        },
    ],
    "confidence": {"k": 2, "temperature": 0.7},
}
ITEMS = [
    EvalItem.from_prompt(f"q{i}", f"What is {i} plus {i}?", reference=f"{2 * i}", answer=f"{2 * i}") for i in range(4)
]


def record_all(policy: Any, fake: FakeProviders, out: Path) -> Path:
    """Record ITEMS with the fake providers' queued answers into ``out``."""
    record(
        ITEMS,
        policy,
        out,
        client=httpx.Client(transport=fake.transport()),
        progress=False,
        api_keys={"OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "sk-2"},
    )
    return out


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Any, Path]:
    policy = policy_from_dict(POLICY)
    fake = FakeProviders()
    for i in range(4):
        fake.enqueue(
            "gpt-4o-mini", f"A: {2 * i}", f"A: {2 * i}", f"A: {2 * i + (i % 2)}", input_tokens=12, output_tokens=4
        )
        fake.enqueue("claude-3-5-sonnet-20240620", f"A: {2 * i}", input_tokens=15, output_tokens=5)
    out = record_all(policy, fake, tmp_path / "cassettes")
    return policy, out


def test_schema_and_exact_costs(recorded: tuple[Any, Path], tmp_path: Path) -> None:
    policy, cdir = recorded
    o = build_outcomes(ITEMS, policy, cdir, scorers=["exact", "rougeL"], cache_dir=tmp_path / "cache", progress=False)
    calls = o.calls
    for col in (
        "item_id",
        "complexity",
        "tier_index",
        "tier",
        "model",
        "variant",
        "k",
        "n_requests",
        "error_kind",
        "cost_usd",
        "cost_pico",
        "worst_pico",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "latency_ms",
        "latency_estimated",
        "usage_estimated",
        "agree_difflib",
        "agree_rougeL",
        "agree_answer",
        "q_exact",
        "q_rougeL",
    ):
        assert col in calls.columns, col
    assert "text" not in calls.columns and "text" not in o.samples.columns  # texts live in their own file
    assert sorted(calls["variant"].unique()) == ["k2", "single"]
    assert len(calls) == 4 * 3  # single on both tiers + k2 on the non-final one
    single0 = calls[(calls["variant"] == "single") & (calls["tier_index"] == 0)].iloc[0]
    want = cost_usd(Usage(input_tokens=12, output_tokens=4), "gpt-4o-mini")
    assert Decimal(int(single0["cost_pico"])) / PICO == want
    k2 = calls[calls["variant"] == "k2"].set_index("item_id")
    assert k2.loc["q0", "agree_answer"] == 1.0 and k2.loc["q1", "agree_answer"] == 0.0
    assert not calls["latency_estimated"].any()  # recorded latencies came with the cassettes
    assert set(o.samples.columns) >= {"item_id", "tier_index", "variant", "sample", "q_exact"}
    assert len(o.samples) == 4 * (1 + 2 + 1)
    texts = o.sample_texts()
    assert len(texts) == len(o.samples) and texts.index.equals(o.samples.index)
    assert o.texts_path is not None and (o.texts_path.stat().st_mode & 0o777) == 0o644
    assert all(t.startswith("A: ") for t in texts)


def test_cached_and_rebuilt_when_a_cassette_changes(recorded: tuple[Any, Path], tmp_path: Path) -> None:
    policy, cdir = recorded
    cache = tmp_path / "cache"
    a = build_outcomes(ITEMS, policy, cdir, scorers=["exact"], cache_dir=cache, progress=False)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 3 and all(f.startswith(a.key) for f in files)  # calls, samples, texts
    b = build_outcomes(ITEMS, policy, cdir, scorers=["exact"], cache_dir=cache, progress=False)
    assert b.key == a.key and b.calls.equals(a.calls)
    path = cdir / cassette_name("q0")
    data = json.loads(path.read_text())
    data["interactions"][0]["response"]["body"]["string"] = data["interactions"][0]["response"]["body"][
        "string"
    ].replace("A: 0", "A: 7")
    path.write_text(json.dumps(data))
    from routerlab.data.cassettes import seal_cassettes

    seal_cassettes(cdir)  # a deliberate edit: re-hash the manifest, or the integrity check refuses the file
    c = build_outcomes(ITEMS, policy, cdir, scorers=["exact"], cache_dir=cache, progress=False)
    assert c.key != a.key
    assert "A: 7" in c.sample_texts().tolist()
    d = build_outcomes(ITEMS, policy, cdir, scorers=["exact", "rougeL"], cache_dir=cache, progress=False)
    assert d.key != c.key  # settings are part of the key too


def test_custom_scorer(recorded: tuple[Any, Path], tmp_path: Path) -> None:
    policy, cdir = recorded
    register_scorer("short", lambda item, text, model: 1.0 if len(text) < 5 else 0.0, replace=True)
    o = build_outcomes(ITEMS, policy, cdir, scorers=["short"], cache_dir=tmp_path / "c", progress=False)
    assert set(o.calls["q_short"].unique()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="identifier"):
        register_scorer("not a name", lambda i, t, m: 0.0)


def test_key_follows_the_answer_pattern_and_a_replaced_scorer(recorded: tuple[Any, Path], tmp_path: Path) -> None:
    policy, cdir = recorded
    cache = tmp_path / "cache"
    register_scorer("keyed", lambda item, text, model: 1.0, replace=True)
    a = build_outcomes(ITEMS, policy, cdir, scorers=["keyed"], cache_dir=cache, progress=False)
    assert set(a.calls["q_keyed"]) == {1.0}
    register_scorer("keyed", lambda item, text, model: 0.0, replace=True)  # same name, new code
    b = build_outcomes(ITEMS, policy, cdir, scorers=["keyed"], cache_dir=cache, progress=False)
    assert b.key != a.key and set(b.calls["q_keyed"]) == {0.0}
    other = policy_from_dict({**POLICY, "confidence": {**POLICY["confidence"], "answer_pattern": r"(A):"}})
    c = build_outcomes(ITEMS, other, cdir, scorers=["keyed"], cache_dir=cache, progress=False)
    assert c.key != b.key  # the "answer" agreement depends on the pattern
    k2 = c.calls[c.calls["variant"] == "k2"]
    assert (k2["agree_answer"] == 1.0).all()  # every sample's "answer" is now the letter A
    assert (b.calls[b.calls["variant"] == "k2"]["agree_answer"] == 0.0).any()


def test_a_partly_recorded_k_is_refused_by_the_sweep(recorded: tuple[Any, Path], tmp_path: Path) -> None:
    from dataclasses import replace as dc_replace

    from routerlab.workbench.sweep import PolicyPoint, default_grid, evaluate

    policy, cdir = recorded
    o = build_outcomes(ITEMS, policy, cdir, scorers=["exact"], cache_dir=tmp_path / "c", progress=False)
    pt = PolicyPoint((0, 0, 0), True, "answer", 2, ("simple", "medium", "complex"), (1.0,))
    assert evaluate(o, pt, bootstrap=0)["n_items"] == 4
    partial = dc_replace(o, calls=o.calls.drop(o.calls.index[(o.calls["variant"] == "k2")][:1]))
    with pytest.raises(ValueError, match="recorded for 3 of 4 items at tier 0"):
        evaluate(partial, pt, bootstrap=0)
    with pytest.warns(UserWarning, match="leaves this k out"):
        grid = default_grid(partial)
    assert grid.ks == () and grid.similarities == ()
    with pytest.raises(ValueError, match="k=3 was not recorded"):
        evaluate(o, dc_replace(pt, k=3), bootstrap=0)


def test_sweep_matches_the_router_when_an_unparseable_2xx_is_charged_to_the_cap(tmp_path: Path) -> None:
    """The cheap tier answers 200 with a body that is not a completion: the router charges its worst case
    against the cap and the sweep must decide exactly the same for caps on either side of the line."""
    from routerlab.data.cassettes import replay_items
    from routerlab.errors import RoutingError
    from routerlab.workbench.sweep import PolicyPoint, per_item

    policy = policy_from_dict(POLICY)
    fake = FakeProviders()
    for i in range(4):
        for _ in range(2):  # the single call and the n=2 call
            fake.enqueue("gpt-4o-mini", status=200, body=b'{"choices": "garbage"}')
        fake.enqueue("claude-3-5-sonnet-20240620", f"A: {2 * i}", input_tokens=15, output_tokens=5)
    out = record_all(policy, fake, tmp_path / "cassettes")
    o = build_outcomes(ITEMS, policy, out, scorers=["exact"], cache_dir=tmp_path / "c", progress=False)
    single0 = o.calls[(o.calls["variant"] == "single") & (o.calls["tier_index"] == 0)]
    assert (single0["error_kind"] == "malformed").all() and (single0["cost_pico"] == 0).all()
    assert (single0["reserve_pico"] == single0["worst_pico"]).all() and (single0["reserve_pico"] > 0).all()
    w0 = int(single0["worst_pico"].max())
    w1 = int(o.calls[o.calls["tier_index"] == 1]["worst_pico"].max())
    outcomes_seen = set()
    for cap_pico in (w0 + w1 - 1, w0 + w1, w1, w1 - 1):
        pt = PolicyPoint((0, 0, 0), True, "none", 2, (), (), Decimal(cap_pico) / PICO)
        sim = per_item(o, pt).set_index("item_id")
        for item, res in replay_items(pt.to_policy(policy), out, ITEMS, keep_errors=True):
            row = sim.loc[item.id]
            if isinstance(res, RoutingError):
                assert row["tier_index"] == -1
                outcomes_seen.add("failed")
            else:
                assert (res.tier, res.cost_usd, res.escalations) == (row["tier"], row["cost_usd"], row["escalations"])
                outcomes_seen.add(res.tier)
    assert outcomes_seen == {"failed", "mid"}  # the cap bound on both sides


def test_scorer_fingerprint_follows_the_helpers_it_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scorer whose own code is unchanged but whose helper changed must not reuse a cached table."""
    import importlib
    import sys

    from routerlab.workbench.scoring import scorer_fingerprint

    mod = tmp_path / "my_scorers.py"
    body = "def helper(text):\n    return {}\n\ndef score(item, text, model):\n    return helper(text)\n"
    mod.write_text(body.format("1.0"))
    monkeypatch.syspath_prepend(str(tmp_path))
    m = importlib.import_module("my_scorers")
    register_scorer("helped", m.score, replace=True)
    before = scorer_fingerprint("helped")
    mod.write_text(body.format("0.0"))  # only the helper changes
    m = importlib.reload(m)
    register_scorer("helped", m.score, replace=True)
    assert scorer_fingerprint("helped") != before
    sys.modules.pop("my_scorers", None)


@pytest.mark.parametrize("floor", [0.5, 1.0])
def test_export_keeps_the_production_cost_cap(recorded: tuple[Any, Path], tmp_path: Path, floor: float) -> None:
    """A ladder policy with a cap: the sweep simulates under that cap and the exported policy keeps it
    (it used to come back as null), whether a cheaper policy or all-premium is chosen."""
    from routerlab import load_policy
    from routerlab.workbench.export import choose, export_policy
    from routerlab.workbench.sweep import default_grid, split_items, sweep

    _, cdir = recorded
    capped = policy_from_dict({**POLICY, "max_cost_per_query_usd": "0.05", "breaker": {"failure_threshold": 3}})
    o = build_outcomes(ITEMS, capped, cdir, scorers=["exact"], cache_dir=tmp_path / "c", progress=False)
    grid = default_grid(o)
    assert grid.caps == (Decimal("0.05"),)
    dev, test = split_items(o, seed=0)
    table = sweep(o, grid, mask=dev, bootstrap=20)
    choice = choose(o, table, scorer="exact", floor=floor, dev=dev, test=test, bootstrap=20)
    out = tmp_path / "chosen.json"
    export_policy(o, choice, out, evalset_sha256="x", dataset="mine", split_seed=0)
    exported = load_policy(out)
    assert exported.max_cost_per_query_usd == Decimal("0.05")
    assert exported.breaker.failure_threshold == 3 and exported.tiers == capped.tiers


def test_a_parallel_build_gives_the_same_table(imported: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """80 mot_date items (draws, two sample temperatures) built by two processes in chunks equal the serial
    build, a scorer registered in this process included (the workers are forked)."""
    from routerlab.errors import WorkbenchError
    from routerlab.workbench import outcomes as mod

    ds = imported("mot_date")
    register_scorer("brevity", lambda item, text, model: min(len(text), 100) / 100, replace=True)
    kw: dict[str, Any] = {"scorers": ["exact", "brevity"], "progress": False}
    items = ds.items[:80]
    one = build_outcomes(items, ds.policy, ds.cassettes, cache_dir=tmp_path / "one", workers=1, **kw)
    monkeypatch.setattr(mod, "BUILD_CHUNK", 30)  # 3 chunks, the last one short
    two = build_outcomes(items, ds.policy, ds.cassettes, cache_dir=tmp_path / "two", workers=2, **kw)
    pd.testing.assert_frame_equal(one.calls, two.calls, check_exact=True)
    pd.testing.assert_frame_equal(one.samples, two.samples, check_exact=True)
    pd.testing.assert_series_equal(one.sample_texts(), two.sample_texts(), check_exact=True)
    # the texts file, streamed chunk by chunk, lines up row for row with the samples it was scored from
    brevity = two.sample_texts().map(lambda t: min(len(t), 100) / 100)
    assert brevity.to_numpy().tolist() == two.samples["q_brevity"].to_numpy().tolist()
    assert sorted(one.variants) == sorted(two.variants) and one.variants
    for vec, v in one.variants.items():
        pd.testing.assert_frame_equal(v.calls, two.variants[vec].calls, check_exact=True)
    assert one.calls["q_brevity"].notna().any()
    monkeypatch.setenv("ROUTERLAB_BUILD_WORKERS", "many")
    with pytest.raises(WorkbenchError, match="ROUTERLAB_BUILD_WORKERS must be a whole number"):
        build_outcomes(items, ds.policy, ds.cassettes, cache_dir=tmp_path / "three", **kw)
