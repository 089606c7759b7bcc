"""The learned start-tier router: its JSON is validated like the rest of a policy, its pure-Python
scores match scikit-learn's, the sweep simulates it exactly (checked against the decision procedure),
and it is compared with the keyword classifier, a random router and the oracle."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest
from test_reference import mismatches, random_router

from routerlab.decision import prepare_query, start_tier_of
from routerlab.errors import PolicyError
from routerlab.learned import Hashing, features
from routerlab.policy import policy_from_dict, policy_to_dict
from routerlab.workbench.learn import compare_start_routers, good_enough, train_start_router
from routerlab.workbench.reference import simulate_reference
from routerlab.workbench.sweep import NO_CHECK, PolicyPoint, point_from_policy, simulate, simulate_cut, split_three

SEED = 20261203


def _ladder(n: int) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "tiers": [
            {"name": f"t{i}", "provider": "openai", "model": f"m{i}", "base_url": "https://x.example/v1",
             "price": {"input_usd_per_mtok": "1", "output_usd_per_mtok": "2"}}
            for i in range(n)
        ],
    }  # fmt: skip


def test_a_policy_carries_its_router_through_json() -> None:
    r = random_router(3, 1).with_thresholds([0.3, 0.7])
    d = _ladder(3) | {"start_router": r.to_json()}
    p = policy_from_dict(json.loads(json.dumps(d)))
    assert p.start_router == r and p.start_router.thresholds == (0.3, 0.7)
    assert policy_from_dict(policy_to_dict(p)) == p
    q = prepare_query("What is the capital of France?", p.classifier)
    scores = r.scores("What is the capital of France?", q.classification)
    assert start_tier_of(p, q) == r.start_tier(scores)
    assert all(0.0 < s < 1.0 for s in scores)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda j: j.update(kind="forest"), "start_router.kind"),
        (lambda j: j.update(version=2), "start_router.version"),
        (lambda j: j.update(extra=1), "start_router.extra"),
        (lambda j: j["hashing"].update(n_features=3), "start_router.hashing.n_features"),
        (lambda j: j["hashing"].update(char_ngrams=[4, 2]), "start_router.hashing.char_ngrams"),
        (lambda j: j["tiers"].pop(), "start_router.tiers"),
        (lambda j: j["tiers"][1].update(threshold=3), "start_router.tiers[1].threshold"),
        (lambda j: j["tiers"][0].update(intercept="x"), "start_router.tiers[0].intercept"),
        (lambda j: j["tiers"][0]["weights"].append([10**6, 1.0]), "start_router.tiers[0].weights[30]"),
        (lambda j: j["tiers"][0]["weights"].reverse(), "start_router.tiers[0].weights[1]"),
    ],
)
def test_a_broken_router_section_names_its_field(edit: Any, field: str) -> None:
    j = random_router(3, 2).to_json()
    edit(j)
    with pytest.raises(PolicyError) as e:
        policy_from_dict(_ladder(3) | {"start_router": j})
    assert field in str(e.value), str(e.value)


def test_features_are_deterministic_and_unit_scaled() -> None:
    h = Hashing()
    a = features("Explain  the   tradeoffs of B-trees", None, h)
    b = features("explain the tradeoffs of b-trees", None, h)
    assert a.keys() == b.keys()  # case and runs of spaces do not matter to the n-grams
    sparse = {i: v for i, v in a.items() if i < h.n_features}
    assert math.isclose(sum(v * v for v in sparse.values()), 2.0, rel_tol=1e-9)  # two unit blocks (may overlap)


def test_training_matches_scikit_learn_and_every_decision_is_reproduced(imported: Any) -> None:
    o = imported("mot_date").outcomes
    tune, _, test = split_three(o)
    r = train_start_router(o, "exact", mask=tune)
    assert r.trained["max_abs_diff_vs_sklearn"] < 1e-12
    labels = good_enough(o, "exact")
    assert labels.shape == (2, o.n_items) and 0 < np.nanmean(labels[0]) < 1
    # every item of the set: the production decision (from the messages) equals the sweep's (from the table)
    thr = (0.55, 0.5)
    policy = PolicyPoint((0, 0, 0), False, router=r, router_thresholds=thr).to_policy(o.policy)
    prod = [
        start_tier_of(policy, prepare_query(list(it.messages), policy.classifier)) for it in imported("mot_date").items
    ]
    sim = simulate(o, [PolicyPoint((0, 0, 0), False, router=r, router_thresholds=thr)])
    assert prod == sim.tier[0].tolist()
    assert len(set(prod)) > 1  # the router really tells items apart


def test_the_sweep_simulates_the_learned_router_exactly(imported: Any) -> None:
    print(f"seed={SEED}")
    rng = random.Random(SEED)
    o = imported("mot_date").outcomes
    tune, _, _ = split_three(o)
    r = train_start_router(o, "exact", mask=tune)
    s = o.start_scores(r)
    pts = []
    for _ in range(30):
        thr = tuple(float(rng.choice(list(s[ti]) + [0.0, 1.01])) for ti in range(2))  # ties with real scores
        sim = rng.choice(["answer", "difflib", NO_CHECK])
        check = {} if sim == NO_CHECK else {"thresholds": (rng.random(), rng.random())}
        extra = {"k_max": rng.choice([None, 4])} if sim != NO_CHECK else {}
        pts.append(PolicyPoint((2, 2, 2), rng.random() < 0.8, sim, router=r, router_thresholds=thr, **check, **extra))
    pts += [PolicyPoint((0, 1, 2), True, "answer", thresholds=(0.5, 0.5))]  # beside a keyword-routed policy
    fast, ref = simulate(o, pts), simulate_reference(o, pts)
    assert not mismatches(fast, ref)
    assert not mismatches(simulate_cut(o, pts), ref)
    assert point_from_policy(pts[0].to_policy(o.policy)) == pts[0]
    assert pts[0].id != pts[1].id or pts[0] == pts[1]


def test_comparison_reports_apgr_and_cpt_with_intervals(imported: Any) -> None:
    o = imported("mot_date").outcomes
    tune, _, test = split_three(o)
    r = train_start_router(o, "exact", mask=tune)
    df = compare_start_routers(o, r, "exact", mask=test, bootstrap=50, seed=SEED)
    assert list(df["router"]) == ["learned start router", "keyword classifier", "random router", "oracle"]
    assert (df["APGR_lo"] <= df["APGR"] + 1e-12).all() and (df["APGR"] <= df["APGR_hi"] + 1e-12).all()
    oracle = df.set_index("router").loc["oracle"]
    assert (oracle["APGR"] >= df["APGR"] - 1e-12).all()  # nothing beats knowing the answers
    # mot_date's prompts all fall in one keyword class: that router cannot rank them, APGR is the random mix
    assert df.set_index("router").loc["keyword classifier", "APGR"] == pytest.approx(0.5)
