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
