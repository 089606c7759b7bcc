"""The main job, end to end, on the default data with no API keys.

For now (before the evaluation engine lands): route the shipped example eval
set through the real CascadeRouter against a scripted local provider (an
``httpx.MockTransport``: no network, no keys) and print what each query cost
and where it was answered.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import httpx

from routerlab.evalset import load_evalset
from routerlab.fakes import FakeProviders
from routerlab.policy import load_policy
from routerlab.router import CascadeRouter

REPO = Path(__file__).resolve().parent.parent


def run_demo(out: TextIO) -> int:
    policy = load_policy(REPO / "policies" / "example.json")
    items = load_evalset(REPO / "data" / "example.jsonl")
    fake = FakeProviders()
    for it in items:  # cheap tier agrees with itself on short tasks only: long ones escalate
        cheap = policy.tiers[0].model
        if len(it.prompt.split()) < 60:
            fake.enqueue(cheap, it.reference or "ok", it.reference or "ok")
        else:
            fake.enqueue(cheap, "A first draft answer.", "Something else entirely, with other words.")
        for t in policy.tiers[1:]:
            fake.enqueue(t.model, *([it.reference or "ok"] * 4))
    keys = {t.api_key_env: "demo-no-key" for t in policy.tiers if t.api_key_env}
    router = CascadeRouter.from_policy(policy, client=httpx.Client(transport=fake.transport()), api_keys=keys)
    total = 0
    by_tier: dict[str, int] = {}
    for it in items:
        r = router.route(list(it.messages), query_id=it.id)
        total += 0
        by_tier[r.tier] = by_tier.get(r.tier, 0) + 1
        print(
            f"{it.id:10s} {r.complexity:8s} -> {r.tier:8s} {r.model:28s} ${r.cost_usd:.6f} escalations={r.escalations}",
            file=out,
        )
    print(
        f"\nrouted {len(items)} queries of data/example.jsonl through policies/example.json "
        f"against a scripted local provider (no network); answered by tier: {by_tier}",
        file=out,
    )
    return 0
