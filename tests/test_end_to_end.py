"""The whole loop on an eval set written for this test, all through the CLI, against a loopback provider
that plays three models of different quality: record -> sweep -> frontier -> report -> export -> route
the exported policy with CascadeRouter.from_policy_file. No file is copied by hand. (README: "Your own
eval set, end to end".)"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from loopback_provider import ladder_policy_dict, loopback_provider

from routerlab import CascadeRouter, load_policy
from routerlab.cli import main


def write_evalset(path: Path, n: int = 40, seed: int = 3) -> Path:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        lines.append(json.dumps({"id": f"calc-{i:03d}", "prompt": f"What is {a} + {b}?", "answer": str(a + b)}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_own_eval_set_end_to_end_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPBACK_API_KEY", "sk-loopback-e2e")
    root = tmp_path / "ws"
    evalset = write_evalset(tmp_path / "calc.jsonl")
    with loopback_provider() as server:
        port = server.server_address[1]
        policy = tmp_path / "policy.json"
        policy.write_text(json.dumps(ladder_policy_dict(port)), encoding="utf-8")
        q = ["--root", str(root), "--quiet"]
        # record in a fresh interpreter, as a user runs it: recording threads must not race vcr's own imports
        rec = subprocess.run(
            [sys.executable, "-m", "routerlab", "record", "--evalset", str(evalset), "--policy", str(policy),
             "--study", "calc", *q],
            capture_output=True, text=True, timeout=300, env={**os.environ, "LOOPBACK_API_KEY": "sk-loopback-e2e"},
        )  # fmt: skip
        assert rec.returncode == 0, rec.stderr
        recorded = len(server.requests)
        assert recorded > 0 and any(r.get("n") == 3 for r in server.requests)  # n honoured for the k samples
        assert main(["sweep", "calc", *q]) == 0
        assert main(["frontier", "calc", *q]) == 0
        assert main(["report", "calc", *q]) == 0
        out = tmp_path / "tuned.json"
        # a small eval set: the certified chooser may certify nothing cheaper (then export refuses and says
        # why); the point-estimate chooser exports, labelled as such
        code = main(["export", "calc", "--floor", "0.9", "--out", str(out), *q])
        assert code == 0 or not out.exists()
        if code != 0:
            assert main(["export", "calc", "--floor", "0.9", "--chooser", "point", "--out", str(out), *q]) == 0
        assert main(["replay", "calc", "--policy", str(out), "--root", str(root)]) == 0  # the tuned policy, offline
        assert len(server.requests) == recorded  # the workbench steps replayed the cassettes: no request

        reports = root / "reports" / "calc"
        assert (reports / "sweep.csv").is_file() and (reports / "frontier.png").stat().st_size > 1000
        assert "exact" in (reports / "report.md").read_text()
        assert "## Smarter escalation" in (reports / "report.md").read_text()  # also on a small own eval set
        tuned = load_policy(out)
        assert tuned.max_cost_per_query_usd == Decimal("0.05")  # the production cap survives the export
        assert tuned.provenance["tier_models"] == ["small-1", "medium-1", "large-1"]

        with httpx.Client() as client:
            router = CascadeRouter.from_policy_file(out, client=client)
            result = router.route("What is 41 + 17?")
        assert result.text.endswith(("Answer: 58", "Answer: 59", "Answer: 60", "Answer: 61"))
        assert result.cost_usd > 0 and len(server.requests) > recorded  # a real route over HTTP


def test_a_failed_re_record_leaves_the_study_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """record --force that stops before sending (no key) must not swap in the new eval set; and the
    manifest names the study's own copy of the eval set (a byte-for-byte copy of the user's file)."""
    from routerlab.data.cassettes import read_manifest
    from routerlab.data.evalset import evalset_sha256
    from routerlab.data.studies import study_paths

    monkeypatch.setenv("LOOPBACK_API_KEY", "sk-loopback-e2e")
    root = tmp_path / "ws"
    with loopback_provider() as server:
        policy = tmp_path / "policy.json"
        policy.write_text(json.dumps(ladder_policy_dict(server.server_address[1])), encoding="utf-8")
        evalset = write_evalset(tmp_path / "calc.jsonl", n=6)
        q = ["--policy", str(policy), "--study", "calc", "--root", str(root), "--quiet", "--concurrency", "1"]
        assert main(["record", "--evalset", str(evalset), *q]) == 0
        paths = study_paths("calc", root=root)
        assert read_manifest(paths.cassettes)["evalset_sha256"] == evalset_sha256(paths.evalset)
        before = paths.evalset.read_bytes()
        monkeypatch.delenv("LOOPBACK_API_KEY")
        smaller = write_evalset(tmp_path / "calc3.jsonl", n=3)
        assert main(["record", "--evalset", str(smaller), "--force", *q]) == 1  # the key is missing: nothing sent
        assert paths.evalset.read_bytes() == before


def test_record_a_second_sample_temperature_and_sweep_it_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """record --sample-temperatures: the cheap tier's samples at T=1.2 too, listed in the manifest; the
    outcome table replays them as a variant; a policy with that temperature, through the real router
    over the cassettes, gives exactly what the sweep says, and differs from the T=0.8 policy."""
    from test_reference import mismatches

    from routerlab.classifier import COMPLEXITY_CLASSES
    from routerlab.data.cassettes import replay_items
    from routerlab.data.evalset import load_evalset
    from routerlab.data.studies import study_paths
    from routerlab.workbench.outcomes import build_outcomes
    from routerlab.workbench.reference import simulate_reference
    from routerlab.workbench.sweep import PolicyPoint, per_item, point_from_policy, simulate

    monkeypatch.setenv("LOOPBACK_API_KEY", "sk-loopback-e2e")
    root = tmp_path / "ws"
    with loopback_provider() as server:
        policy_path = tmp_path / "policy.json"
        policy_path.write_text(json.dumps(ladder_policy_dict(server.server_address[1])), encoding="utf-8")
        evalset = write_evalset(tmp_path / "calc.jsonl", n=16)
        q = ["--policy", str(policy_path), "--study", "hot", "--root", str(root), "--quiet", "--concurrency", "1"]
        assert main(["record", "--evalset", str(evalset), *q, "--sample-temperatures", "cheap=1.2"]) == 0
        temps = {(r["model"], r.get("temperature")) for r in server.requests}
        assert ("small-1", 1.2) in temps and ("medium-1", 1.2) not in temps and ("small-1", 0.8) in temps
        bad = main(["record", "--evalset", str(evalset), *q, "--sample-temperatures", "premium=1.2"])
        assert bad == 1  # the final tier takes no samples: refused before anything is sent
    paths = study_paths("hot", root=root)
    items, policy = load_evalset(paths.evalset), load_policy(paths.policy)
    o = build_outcomes(items, policy, paths.cassettes, scorers=["exact"], cache_dir=tmp_path / "cache", progress=False)
    assert o.temperatures == (0.8, 0.8) and list(o.variants) == [(1.2, 0.8)]
    base = PolicyPoint((0, 0, 0), True, "answer", 3, COMPLEXITY_CLASSES, (1.0, 1.0), None)
    hot = PolicyPoint((0, 0, 0), True, "answer", 3, COMPLEXITY_CLASSES, (1.0, 1.0), None, temperatures=(1.2, None))
    sims = simulate(o, [base, hot])
    assert not mismatches(sims, simulate_reference(o, [base, hot]))
    assert (sims.tier[0] != sims.tier[1]).any() or (sims.cost_pico[0] != sims.cost_pico[1]).any()
    for pt in (base, hot):
        tuned = pt.to_policy(o.policy)
        assert point_from_policy(tuned, o.policy) == pt
        want = per_item(o, pt).set_index("item_id")
        for item, res in replay_items(tuned, paths.cassettes, items, keep_errors=True):
            assert not isinstance(res, Exception), res
            row = want.loc[item.id]
            assert (res.tier, res.cost_usd, res.escalations) == (row["tier"], row["cost_usd"], row["escalations"])
    assert load_policy(paths.policy).tiers[0].sample_temperature is None  # the study's policy is unchanged
