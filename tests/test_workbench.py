"""Choosing, exporting and reporting: provenance round trip, model-mismatch refusal, reproducible reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import require_mirror

from routerlab import ModelMismatchError, dump_policy, load_policy
from routerlab.workbench.export import choose, export_policy, premium_point
from routerlab.workbench.report import write_outputs
from routerlab.workbench.study import SPLIT_SEED, run_study
from routerlab.workbench.sweep import evaluate, point_from_policy


@pytest.fixture(scope="module")
def study(imported: Any) -> Any:
    require_mirror()
    ws = imported("mot_date").root
    return run_study("mot_date", root=ws, progress=False, bootstrap=300)


def test_choice_is_the_cheapest_policy_above_the_floor(study: Any) -> None:
    q = "quality_exact"
    for floor in (0.8, 0.9):
        c = choose(
            study.outcomes, study.sweep_dev, scorer="exact", floor=floor, dev=study.dev, test=study.test, bootstrap=100
        )
        prem = c.premium_dev[q]
        assert c.dev[q] >= floor * prem
        ok = study.sweep_dev[(study.sweep_dev[q] >= floor * prem) & (study.sweep_dev["failure_rate"] == 0)]
        assert c.dev["cost_per_1k_usd"] == pytest.approx(ok["cost_per_1k_usd"].min())
        assert c.test["n_items"] == int(study.test.sum())  # test numbers are on the held-out split


def test_export_round_trip_with_provenance_and_model_mismatch(study: Any, tmp_path: Path) -> None:
    path = tmp_path / "tuned.json"
    policy = export_policy(
        study.outcomes,
        study.choice,
        path,
        evalset_sha256="abc",
        dataset="mot_date",
        split_seed=SPLIT_SEED,
        date="2026-11-28",
    )
    loaded = load_policy(path)
    assert loaded == policy
    prov = loaded.provenance
    assert prov["tier_models"] == ["meta-llama/Llama-2-13b-chat-hf", "gpt-3.5-turbo", "gpt-4"]
    assert prov["price_source"].startswith("genai-prices")
    assert prov["scorer"] == "exact" and prov["evalset_sha256"] == "abc" and prov["date"] == "2026-11-28"
    assert set(prov["metrics"]) == {"dev", "test"} and len(prov["metrics"]["test"]["quality_ci95"]) == 2
    assert point_from_policy(loaded) == study.choice.point
    # the loaded policy evaluates to the numbers its provenance claims
    dev = evaluate(study.outcomes, point_from_policy(loaded), mask=study.dev, bootstrap=0)
    assert dev["quality_exact"] == pytest.approx(prov["metrics"]["dev"]["quality"], abs=1e-6)
    # a router for other models must not silently load it
    with pytest.raises(ModelMismatchError, match="tuned on"):
        load_policy(path, expect_models=("gpt-4o-mini", "gpt-4o", "claude-3-opus-20240229"))
    assert load_policy(path, expect_models=("gpt-4o-mini", "gpt-4o", "x"), force=True) == policy
    # editing the tiers of a tuned file is refused too
    data = json.loads(path.read_text())
    data["tiers"][0]["model"] = "gpt-4o-mini"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelMismatchError):
        load_policy(path)
    assert load_policy(path, force=True).tiers[0].model == "gpt-4o-mini"


def test_premium_point_is_all_premium(study: Any) -> None:
    row = evaluate(study.outcomes, premium_point(study.outcomes), mask=study.dev, bootstrap=0)
    assert row["share_tier_2"] == 1.0 and row["premium_call_share"] == 1.0


def test_reports_are_reproduced_exactly(study: Any, imported: Any, tmp_path: Path) -> None:
    ws = imported("mot_date").root
    a = write_outputs(study, reports_dir=tmp_path / "a", policies_dir=tmp_path / "pa", date="2026-11-28")
    again = run_study("mot_date", root=ws, progress=False, bootstrap=300)
    b = write_outputs(again, reports_dir=tmp_path / "b", policies_dir=tmp_path / "pb", date="2026-11-28")
    assert a["report"].read_text() == b["report"].read_text()
    # at 95% nothing cheaper than all-premium is certified on mot_date: no policy file, and the report says so
    assert study.export_refusal() is not None and not a["policy"].exists() and not b["policy"].exists()
    text = a["report"].read_text()
    for needle in (
        "All-premium",
        "Oracle",
        "Floor-constrained oracle",
        "Random mix",
        "two choosers side by side",
        "**Point estimate** (no guarantee)",
        "**Certified** (Learn then Test",
        "| point-estimate | dev |",
        "| certified | calibrate |",
        "| certified | test |",
        "meeting the 95% floor",
        "Not exported: No policy cheaper than all-premium can be certified",
        "apgr_calls",
        "frontier.png",
    ):
        assert needle in text, needle
    from routerlab.workbench.audit import audit
    from routerlab.workbench.sweep import default_grid

    res = audit(study.outcomes, default_grid(study.outcomes), scorer="exact", splits=3, bootstrap=50)
    c = write_outputs(study, reports_dir=tmp_path / "c", policies_dir=tmp_path / "pc", date="2026-11-28", audit=res)
    with_audit = c["report"].read_text()
    # the audit section goes between the main report and the smarter-escalation section, which are unchanged
    head, smarter = text.split("\n## Smarter escalation", 1)
    assert with_audit.startswith(head) and with_audit.endswith("\n## Smarter escalation" + smarter)
    assert "## Audit: the whole choice repeated over random re-splits" in with_audit
    assert "| point estimate |" in with_audit and "| certified |" in with_audit and "![audit](audit.png)" in with_audit
    assert c["audit"].stat().st_size > 1000
    assert a["frontier"].stat().st_size > 20_000


def test_dump_policy_of_a_point_loads_in_production(study: Any, tmp_path: Path) -> None:
    p = study.choice.point.to_policy(study.policy)
    dump_policy(p, tmp_path / "p.json")
    assert load_policy(tmp_path / "p.json") == p


def test_provenance_hashes_the_cassette_files(study: Any) -> None:
    import hashlib

    from routerlab.data.cassettes import cassette_name

    h = hashlib.sha256()
    for it in study.items:
        data = (study.cassettes / cassette_name(it.id)).read_bytes()
        h.update(f"{cassette_name(it.id)}\0{len(data)}\0".encode())
        h.update(data)
    assert study.outcomes.cassettes_sha256 == h.hexdigest()
    from routerlab.workbench.export import provenance

    prov = provenance(study.outcomes, study.choice, evalset_sha256="x", dataset="mot_date", split_seed=SPLIT_SEED)
    assert prov["cassettes_sha256"] == h.hexdigest() and prov["outcome_table_key"] == study.outcomes.key


def test_explorer_cap_box_zero_garbage_and_a_binding_cap(study: Any) -> None:
    from decimal import Decimal

    from routerlab.workbench.widgets import Explorer

    ex = Explorer(study, plot=False)
    base = ex.current
    ex.cap.value = "0"  # spend nothing: every route is refused by the cap
    assert ex.point().cap_usd == Decimal(0) and ex.current["failure_rate"] == 1.0
    ex.cap.value = "ten dollars"
    assert ex.point().cap_usd is None and "no cap applied" in ex.status.value
    assert ex.current["cost_per_1k_usd"] == base["cost_per_1k_usd"]
    ex.cap.value = "-1"
    assert ex.point().cap_usd is None and "no cap applied" in ex.status.value
    ex.cap.value = "1e16"  # far beyond any worst case: the same numbers as no cap, and no exception
    assert ex.current["cost_per_1k_usd"] == base["cost_per_1k_usd"]
    ex.cap.value = "0.0000000000019"  # finer than the sweep's 1e-12 USD: rounded down
    assert ex.point().cap_usd == Decimal("1e-12")
    ex.cap.value = ""
    assert ex.status.value == "" or "monotone" in ex.status.value


def test_demo_on_mot_date_says_when_the_floor_leaves_no_saving(imported: Any) -> None:
    import io

    from routerlab.workbench.demo import run_demo

    ws = imported("mot_date").root
    out = io.StringIO()
    assert run_demo(out, datasets=["mot_date"], root=ws, progress=False) == 0
    text = out.getvalue()
    assert "369 queries" in text and (ws / "reports" / "mot_date" / "report.md").exists()
    # on mot_date nothing cheaper than gpt-4 alone is certified at 95%, so the demo says so and writes no policy
    assert "point estimate: start 2/2/2; single tier (no escalation possible)" in text
    assert "0.0% cheaper" in text and "no policy written: No policy cheaper than all-premium can be certified" in text
    assert (
        "audit, certified: on the held-out part, the chosen policy's quality reached the 95% floor" in text
        and (ws / "reports" / "mot_date" / "audit.png").exists()
    )


def test_explorer_turns_the_new_knobs_and_agrees_with_evaluate(study: Any) -> None:
    """Majority answers, adaptive k and the learned start tier from the controls: each move gives the
    numbers of the single-policy evaluation of the policy the controls describe."""
    from routerlab.workbench.learn import train_start_router
    from routerlab.workbench.sweep import evaluate
    from routerlab.workbench.widgets import Explorer

    router = train_start_router(study.outcomes, study.scorer, mask=study.tune)
    ex = Explorer(study, plot=False, router=router)
    ex.similarity.value = "answer"
    ex.answer.value = "majority"
    assert ex.point().answer == "majority"
    ex.k_max.value = 6
    ex.stop_share.value = 0.6
    pt = ex.point()
    assert (pt.k_max, pt.stop_share) == (6, 0.6)
    ex.use_router.value = True
    ex.router_thresholds[0].value = 0.4
    pt = ex.point()
    assert pt.router == router and pt.router_thresholds[0] == 0.4
    want = evaluate(study.outcomes, pt, mask=study.dev, bootstrap=200)
    assert ex.current["cost_per_1k_usd"] == want["cost_per_1k_usd"]
    assert ex.current[f"quality_{study.scorer}"] == want[f"quality_{study.scorer}"]
    ex.router_thresholds[0].value = 1.01  # never start at the cheapest tier: the numbers move
    assert ex.current["share_tier_0"] <= want["share_tier_0"]
