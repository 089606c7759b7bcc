"""The cascade router on httpx.MockTransport with a fake clock."""

from __future__ import annotations

import asyncio
import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from routerlab import (
    AsyncCascadeRouter,
    AuthenticationError,
    CascadeExhaustedError,
    CascadeRouter,
    CostCapError,
    MissingApiKeyError,
    RouteResult,
    RouterlabError,
    RouterPolicy,
    dump_policy,
    load_policy,
)
from routerlab.fakes import FakeClock, FakeProviders
from routerlab.policy import policy_from_dict
from routerlab.pricing import cost_usd
from routerlab.types import Usage

KEYS = {"OPENAI_API_KEY": "sk-test-openai-123", "ANTHROPIC_API_KEY": "sk-ant-test-456"}
MINI, SONNET, GPT4O = "gpt-4o-mini-2024-07-18", "claude-3-5-sonnet-20240620", "gpt-4o-2024-05-13"
# "what is" + short: simple; "compare": complex; anything else: medium
MEDIUM_Q = "Tell me the capital city of France in one word"


def policy_dict(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "schema_version": 1,
        "name": "test",
        "tiers": [
            {
                "name": "cheap",
                "provider": "openai",
                "model": MINI,
                "base_url": "https://api.openai.com/v1",
                "api_key_env": "OPENAI_API_KEY",
                "timeout_s": 5,
                "max_tokens": 100,
                "temperature": 0,
            },
            {
                "name": "mid",
                "provider": "anthropic",
                "model": SONNET,
                "base_url": "https://api.anthropic.com",
                "api_key_env": "ANTHROPIC_API_KEY",
                "timeout_s": 10,
                "max_tokens": 100,
                "temperature": 0,
            },
            {
                "name": "premium",
                "provider": "openai",
                "model": GPT4O,
                "base_url": "https://api.openai.com/v1",
                "api_key_env": "OPENAI_API_KEY",
                "timeout_s": 20,
                "max_tokens": 100,
                "temperature": 0,
            },
        ],
        "routing": {"simple": {"start_tier": 0}, "medium": {"start_tier": 0}, "complex": {"start_tier": 0}},
        "confidence": {
            "signal": "consistency",
            "classes": ["simple", "medium", "complex"],
            "k": 2,
            "similarity": "difflib",
            "temperature": 0.7,
            "thresholds": [0.8, 0.8],
        },
        "cascade": True,
        "breaker": {"failure_threshold": 2, "window_s": 60, "recovery_s": 30},
    }
    d.update(over)
    return d


def make(policy: RouterPolicy | None = None, **over: Any) -> tuple[CascadeRouter, FakeProviders, FakeClock]:
    clock = FakeClock()
    fake = FakeProviders(clock=clock)
    pol = policy or policy_from_dict(policy_dict(**over))
    router = CascadeRouter.from_policy(pol, client=httpx.Client(transport=fake.transport()), clock=clock, api_keys=KEYS)
    return router, fake, clock


def test_accepts_tier0_when_samples_agree() -> None:
    router, fake, _ = make()
    fake.enqueue(MINI, "Paris.", "Paris.")
    r = router.route(MEDIUM_Q)
    assert (r.tier, r.model, r.text, r.escalations) == ("cheap", MINI, "Paris.", 0)
    assert len(fake.requests) == 1  # one request with n=2, not two calls (and not a third)
    body = fake.requests[0]["body"]
    assert body["n"] == 2 and body["temperature"] == 0.7
    assert r.attempts[0].outcome == "accepted" and r.attempts[0].similarity == 1.0
    assert r.cost_usd == cost_usd(r.usage, MINI) > 0
    assert isinstance(r.cost_usd, Decimal)


def test_escalates_when_samples_disagree_and_anthropic_gets_k_calls() -> None:
    router, fake, _ = make()
    fake.enqueue(MINI, "Paris is the capital.", "I am not sure, maybe Lyon or Marseille?")
    fake.enqueue(SONNET, "Paris", "Paris")
    r = router.route(MEDIUM_Q)
    assert r.tier == "mid" and r.text == "Paris"
    assert [a.outcome for a in r.attempts] == ["low_confidence", "accepted"]
    assert r.escalations == 1 and "similarity" in r.escalation_reasons[0]
    sonnet_calls = fake.calls(SONNET)
    assert len(sonnet_calls) == 2  # Anthropic has no n: k separate calls
    for c in sonnet_calls:
        assert c["url"] == "https://api.anthropic.com/v1/messages"
        assert "n" not in c["body"] and c["body"]["temperature"] == 0.7
        assert c["headers"]["x-api-key"] == KEYS["ANTHROPIC_API_KEY"]
        assert c["headers"]["anthropic-version"] == "2023-06-01"
        assert "authorization" not in c["headers"]
    # the total cost is the sum of both tiers' calls, priced from the reported usage
    assert r.cost_usd == sum((a.cost_usd for a in r.attempts), Decimal(0))
    assert r.attempts[1].calls == 2


@pytest.mark.parametrize(
    "failure",
    [{"status": 429}, {"status": 500}, {"status": 529}, {"timeout": True}, {"body": b"<html>bad gateway</html>"}],
)
def test_escalates_on_retryable_failures(failure: dict[str, Any]) -> None:
    router, fake, _ = make()
    fake.enqueue(MINI, **failure)
    fake.enqueue(SONNET, "Paris", "Paris")
    r = router.route(MEDIUM_Q)
    assert r.tier == "mid"
    assert r.attempts[0].outcome == "error"
    expected = {429: "rate_limit", 500: "server", 529: "overloaded"}.get(failure.get("status", 0))
    if failure.get("timeout"):
        expected = "timeout"
    elif "body" in failure:
        expected = "malformed"
    assert r.attempts[0].error_kind == expected
    assert r.escalations == 1


def test_timeout_is_the_tiers_timeout() -> None:
    fake = FakeProviders()
    seen: list[Any] = []

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return fake.handle(request)

    router = CascadeRouter.from_policy(
        policy_from_dict(policy_dict()), client=httpx.Client(transport=httpx.MockTransport(spy)), api_keys=KEYS
    )
    fake.enqueue(MINI, "a", "completely different")
    fake.enqueue(SONNET, "b", "b")
    router.route(MEDIUM_Q)
    assert [t["read"] for t in seen] == pytest.approx([5, 10, 10], abs=0.05)  # what is left of each deadline


def test_a_refused_key_at_one_tier_moves_on_and_disables_that_tier() -> None:
    router, fake, clock = make()
    fake.enqueue(MINI, status=401)
    fake.enqueue(SONNET, "Paris", "Paris")
    r = router.route(MEDIUM_Q)
    assert r.tier == "mid" and r.attempts[0].error_kind == "auth"
    assert KEYS["OPENAI_API_KEY"] not in str(r.attempts[0].error_message)
    b = router.breaker(router.policy.tiers[0])
    assert b.state == "open"  # disabled for disable_s (default 300 s), longer than recovery_s (30 s)
    clock.advance(31)
    assert b.state == "open"
    clock.advance(270)
    assert b.state == "half_open"


def test_every_tier_refusing_its_key_raises_the_auth_error_through_cascade_exhausted() -> None:
    router, fake, _ = make()
    fake.enqueue(MINI, status=401)
    fake.enqueue(SONNET, status=401)
    fake.enqueue(SONNET, status=401)  # k=2 requests at the Anthropic tier
    fake.enqueue(GPT4O, status=401)
    with pytest.raises(CascadeExhaustedError) as ei:
        router.route(MEDIUM_Q)
    assert [a.error_kind for a in ei.value.attempts] == ["auth", "auth", "auth"]
    assert isinstance(AuthenticationError("x"), RouterlabError)


def test_breaker_opens_skips_and_probes_after_recovery() -> None:
    router, fake, clock = make()
    for _ in range(2):  # threshold 2
        fake.enqueue(MINI, status=500)
        fake.enqueue(SONNET, "ok", "ok")
        assert router.route(MEDIUM_Q).tier == "mid"
    assert router.breaker(router.policy.tiers[0]).state == "open"
    n_mini = len(fake.calls(MINI))
    fake.enqueue(SONNET, "ok", "ok")
    r = router.route(MEDIUM_Q)
    assert len(fake.calls(MINI)) == n_mini  # skipped: no request went out
    assert r.attempts[0].outcome == "skipped_breaker" and r.tier == "mid"
    clock.advance(29)
    fake.enqueue(SONNET, "ok", "ok")
    assert router.route(MEDIUM_Q).attempts[0].outcome == "skipped_breaker"
    clock.advance(1)  # recovery period over: half-open, one probe
    assert router.breaker(router.policy.tiers[0]).state == "half_open"
    fake.enqueue(MINI, "fine", "fine")
    r = router.route(MEDIUM_Q)
    assert r.tier == "cheap" and len(fake.calls(MINI)) == n_mini + 1
    assert router.breaker(router.policy.tiers[0]).state == "closed"


def test_failed_probe_reopens_the_breaker() -> None:
    router, fake, clock = make()
    for _ in range(2):
        fake.enqueue(MINI, status=503)
        fake.enqueue(SONNET, "ok", "ok")
        router.route(MEDIUM_Q)
    clock.advance(30)
    fake.enqueue(MINI, status=503)
    fake.enqueue(SONNET, "ok", "ok")
    router.route(MEDIUM_Q)
    assert router.breaker(router.policy.tiers[0]).state == "open"


def test_cost_cap_prevents_a_call_and_returns_the_best_answer() -> None:
    # tier 0's worst case is tiny; sonnet at 100 output tokens x2 costs ~$0.003: a cap of $0.001 blocks it
    router, fake, _ = make(max_cost_per_query_usd="0.001")
    fake.enqueue(MINI, "Paris is the capital.", "Honestly I do not know at all.")
    r = router.route(MEDIUM_Q)
    assert fake.calls(SONNET) == [] and fake.calls(GPT4O) == []
    assert r.text == "Paris is the capital." and r.tier == "cheap"
    assert [a.outcome for a in r.attempts] == ["low_confidence", "skipped_cost_cap", "skipped_cost_cap", "fallback"]
    assert r.cost_usd <= Decimal("0.001")


def test_cost_cap_with_no_answer_is_a_clear_error() -> None:
    router, fake, _ = make(max_cost_per_query_usd="0.0000001")
    with pytest.raises(CostCapError, match="cost cap"):
        router.route(MEDIUM_Q)
    assert fake.requests == []


def test_cost_cap_is_never_exceeded_by_worst_case() -> None:
    router, fake, _ = make(max_cost_per_query_usd="0.004")
    fake.enqueue(MINI, "a b c", "x y z w")
    fake.enqueue(SONNET, "one", "two two two")
    fake.enqueue(GPT4O, "three")
    r = router.route(MEDIUM_Q)
    assert r.cost_usd <= Decimal("0.004")


def test_exhausted_cascade_raises_with_attempts() -> None:
    router, fake, _ = make()
    fake.enqueue(MINI, status=500)
    fake.enqueue(SONNET, status=529)
    fake.enqueue(SONNET, "one of the two samples came back")
    fake.enqueue(GPT4O, timeout=True)
    with pytest.raises(CascadeExhaustedError) as ei:
        router.route(MEDIUM_Q)
    assert [a.error_kind for a in ei.value.attempts] == ["server", "overloaded", "timeout"]
    # the sample that did come back was paid for, and is counted
    assert ei.value.attempts[1].cost_usd > 0 and ei.value.attempts[1].calls == 2


def test_final_tier_makes_one_call_without_consistency() -> None:
    router, fake, _ = make()
    fake.enqueue(MINI, "a", "completely different")
    fake.enqueue(SONNET, "b", "also not the same at all")
    fake.enqueue(GPT4O, "final")
    r = router.route(MEDIUM_Q)
    assert r.tier == "premium" and r.text == "final" and r.escalations == 2
    body = fake.calls(GPT4O)[0]["body"]
    assert "n" not in body and body["temperature"] == 0


def test_start_tier_per_class_and_classes_without_check() -> None:
    router, fake, _ = make(
        routing={
            "simple": {"start_tier": 0, "max_tokens": 20},
            "medium": {"start_tier": 1},
            "complex": {"start_tier": 2},
        },
        confidence={"classes": ["medium"], "thresholds": [0.8, 0.8]},
    )
    fake.enqueue(MINI, "Paris")
    r = router.route("What is the capital of France?")
    assert r.complexity == "simple" and r.tier == "cheap"
    assert fake.requests[-1]["body"]["max_tokens"] == 20 and "n" not in fake.requests[-1]["body"]
    fake.enqueue(GPT4O, "long analysis")
    r = router.route("Compare the tradeoffs of Rust and Go for a web service")
    assert r.complexity == "complex" and r.tier == "premium" and len(r.attempts) == 1


def test_cascade_off_accepts_start_tier_but_still_falls_back_on_failure() -> None:
    router, fake, _ = make(cascade=False)
    fake.enqueue(MINI, "whatever")
    r = router.route(MEDIUM_Q)
    assert r.tier == "cheap" and "n" not in fake.requests[0]["body"]
    fake.enqueue(MINI, status=429)
    fake.enqueue(SONNET, "fallback")
    r = router.route(MEDIUM_Q)
    assert r.tier == "mid" and len(fake.calls(SONNET)) == 1


def test_logprob_signal() -> None:
    d = policy_dict(confidence={"signal": "logprob", "logprob_thresholds": [-0.3, -0.3]})
    d["tiers"][1] = dict(d["tiers"][2], name="mid", model="gpt-3.5-turbo")
    router, fake, _ = make(policy_from_dict(d))
    fake.enqueue(MINI, "Paris", logprob=-0.9)
    fake.enqueue("gpt-3.5-turbo", "Paris")  # no logprobs in the answer: not trusted, escalates again
    fake.enqueue(GPT4O, "Paris")
    r = router.route(MEDIUM_Q)
    assert fake.calls(MINI)[0]["body"]["logprobs"] is True and "n" not in fake.calls(MINI)[0]["body"]
    assert r.attempts[0].confidence == pytest.approx(-0.9)
    assert r.attempts[1].outcome == "low_confidence" and "no log-probabilities" in r.escalation_reasons[1]
    assert r.tier == "premium" and len(fake.requests) == 3
    fake.enqueue(MINI, "Paris", logprob=-0.1)
    assert router.route(MEDIUM_Q).tier == "cheap"


def test_logprob_signal_needs_openai_compatible_tiers() -> None:
    from routerlab import PolicyError

    with pytest.raises(PolicyError, match="confidence.signal.*mid"):
        policy_from_dict(policy_dict(confidence={"signal": "logprob"}))


def test_missing_api_key_names_the_variable() -> None:
    fake = FakeProviders()
    router = CascadeRouter.from_policy(
        policy_from_dict(policy_dict()), client=httpx.Client(transport=fake.transport()), environ={}
    )
    with pytest.raises(MissingApiKeyError, match="OPENAI_API_KEY"):
        router.route(MEDIUM_Q)
    assert fake.requests == []


def test_one_json_log_line_per_route_without_prompt(caplog: pytest.LogCaptureFixture) -> None:
    router, fake, _ = make()
    fake.enqueue(MINI, "Paris", "Paris")
    with caplog.at_level(logging.INFO, logger="routerlab.router"):
        router.route(MEDIUM_Q, query_id="q-1")
    lines = [r.getMessage() for r in caplog.records if r.name == "routerlab.router"]
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["query_id"] == "q-1" and rec["tier"] == "cheap" and rec["model"] == MINI
    assert Decimal(rec["cost_usd"]) > 0
    assert "capital" not in lines[0] and KEYS["OPENAI_API_KEY"] not in lines[0]


def test_debug_logs_one_line_per_attempt(caplog: pytest.LogCaptureFixture) -> None:
    router, fake, _ = make()
    fake.enqueue(MINI, "a", "totally different")
    fake.enqueue(SONNET, "b", "b")
    with caplog.at_level(logging.DEBUG, logger="routerlab.router"):
        router.route(MEDIUM_Q)
    events = [json.loads(r.getMessage())["event"] for r in caplog.records if r.name == "routerlab.router"]
    assert events == ["attempt", "attempt", "route"]


def _script(fake: FakeProviders) -> None:
    fake.enqueue(MINI, "Paris is the capital.", "Maybe Lyon, I really cannot tell.")
    fake.enqueue(SONNET, status=529)
    fake.enqueue(SONNET, status=529)
    fake.enqueue(GPT4O, "Paris")
    fake.enqueue(MINI, "Rome", "Rome")


def _summary(r: RouteResult) -> tuple[Any, ...]:
    return (
        r.text,
        r.tier,
        r.model,
        r.cost_usd,
        r.usage,
        r.escalations,
        r.escalation_reasons,
        r.complexity,
        tuple(
            (a.tier, a.outcome, a.usage, a.cost_usd, a.calls, a.texts, a.similarity, a.error_kind) for a in r.attempts
        ),
    )


def test_sync_and_async_give_identical_results() -> None:
    pol = policy_from_dict(policy_dict())
    fake_s, fake_a = FakeProviders(), FakeProviders()
    _script(fake_s)
    _script(fake_a)
    sync = CascadeRouter.from_policy(
        pol, client=httpx.Client(transport=fake_s.transport()), api_keys=KEYS, clock=FakeClock()
    )
    results_s = [sync.route(MEDIUM_Q), sync.route(MEDIUM_Q)]

    async def run() -> list[RouteResult]:
        async with httpx.AsyncClient(transport=fake_a.async_transport()) as client:
            router = AsyncCascadeRouter.from_policy(pol, client=client, api_keys=KEYS, clock=FakeClock())
            return [await router.route(MEDIUM_Q), await router.route(MEDIUM_Q)]

    results_a = asyncio.run(run())
    assert [_summary(r) for r in results_s] == [_summary(r) for r in results_a]
    assert [r.latency_ms for r in results_s] == [r.latency_ms for r in results_a]
    assert [(q["url"], q["body"]) for q in fake_s.requests] == [(q["url"], q["body"]) for q in fake_a.requests]
    assert results_s[0].tier == "premium" and results_s[1].tier == "cheap"


def test_latency_comes_from_the_injected_clock() -> None:
    router, fake, _ = make()
    fake.enqueue(MINI, "a", "b c d e f", delay_s=0.25)
    fake.enqueue(SONNET, "x", delay_s=1.0)
    fake.enqueue(SONNET, "x", delay_s=1.0)
    r = router.route(MEDIUM_Q)
    assert r.attempts[0].latency_ms == pytest.approx(250.0)
    assert r.attempts[1].latency_ms == pytest.approx(2000.0)
    assert r.latency_ms == pytest.approx(2250.0)


def test_reloading_policy_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.json"
    dump_policy(policy_from_dict(policy_dict()), path)
    fake = FakeProviders()
    router = CascadeRouter.from_policy_file(path, client=httpx.Client(transport=fake.transport()), api_keys=KEYS)
    fake.enqueue(MINI, "a", "a")
    assert router.route(MEDIUM_Q).tier == "cheap"
    changed = policy_dict(routing={"medium": {"start_tier": 2}})
    path.write_text(json.dumps(changed))
    import os

    os.utime(path, ns=(1, 1))  # make sure the stamp differs even on coarse clocks
    fake.enqueue(GPT4O, "b")
    assert router.route(MEDIUM_Q).tier == "premium"
    path.write_text('{"schema_version": 1, "tiers": [], "oops": 1}')
    os.utime(path, ns=(2, 2))
    fake.enqueue(GPT4O, "c")
    with caplog.at_level(logging.ERROR, logger="routerlab.policy"):
        assert router.route(MEDIUM_Q).tier == "premium"  # the last good policy is kept
    assert any("policy_reload_failed" in r.getMessage() for r in caplog.records)
    with pytest.raises(Exception, match="tiers"):
        load_policy(path)


def test_unpriced_model_is_refused_when_the_router_is_built() -> None:
    d = policy_dict()
    d["tiers"][0]["model"] = "claude-instant-1"
    d["tiers"][0]["provider"] = "anthropic"
    from routerlab import PricingError

    with pytest.raises(PricingError, match="claude-instant-1"):
        CascadeRouter.from_policy(policy_from_dict(d), client=httpx.Client(transport=FakeProviders().transport()))


def test_usage_totals_add_up() -> None:
    router, fake, _ = make()
    fake.enqueue(MINI, "a", "zzzz qqqq", input_tokens=10, output_tokens=3)
    fake.enqueue(SONNET, "b", input_tokens=20, output_tokens=4)
    fake.enqueue(SONNET, "b", input_tokens=20, output_tokens=4)
    r = router.route(MEDIUM_Q)
    assert r.usage == Usage(input_tokens=10 + 40, output_tokens=6 + 8)


def test_input_estimate_counts_non_ascii_by_bytes_and_symbols_one_each() -> None:
    from routerlab.decision import estimate_input_tokens

    assert estimate_input_tokens([{"role": "user", "content": "abc def gh"}]) == 4 + 8  # 10 letters/spaces
    assert estimate_input_tokens([{"role": "user", "content": "1+2=3\n"}]) == 6 + 8  # one each
    # 15 CJK characters are 45 UTF-8 bytes: a byte-level BPE never needs more tokens than bytes
    assert estimate_input_tokens([{"role": "user", "content": "你" * 15}]) == 45 + 8
    blocks = [{"role": "user", "content": [{"type": "text", "text": "héllo"}]}]
    assert estimate_input_tokens(blocks) > estimate_input_tokens([{"role": "user", "content": "héllo"}])


def test_cost_cap_prices_input_as_cache_writes_when_the_prompt_asks_for_caching() -> None:
    from routerlab.decision import worst_case_cost_usd, writes_prompt_cache
    from routerlab.pricing import PriceBook

    cached = [
        {"role": "user", "content": [{"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}]}
    ]
    assert writes_prompt_cache(cached) and not writes_prompt_cache([{"role": "user", "content": "hi"}])
    tier = policy_from_dict(policy_dict()).tiers[1]  # sonnet: cache writes cost 1.25x input
    plain = worst_case_cost_usd(PriceBook(), tier, 1000, 0, 1, 1)
    writes = worst_case_cost_usd(PriceBook(), tier, 1000, 0, 1, 1, cache_writes=True)
    assert writes == plain * Decimal("1.25")


def test_an_unparseable_2xx_reply_counts_its_worst_case_against_the_cap() -> None:
    from routerlab.decision import estimate_input_tokens, worst_case_cost_usd
    from routerlab.pricing import PriceBook

    pol = policy_from_dict(policy_dict(max_cost_per_query_usd="1"))
    est = estimate_input_tokens([{"role": "user", "content": MEDIUM_Q}])
    w0 = worst_case_cost_usd(PriceBook(), pol.tiers[0], est, 100, 1, 2)
    w1 = worst_case_cost_usd(PriceBook(), pol.tiers[1], est, 100, 2, 2)
    # room for tier 0's worst case plus tier 1's, but not if tier 0's garbage reply is charged at its worst
    cap = w0 + w1 - Decimal("0.000000000001")
    assert cap > w1
    router, fake, _ = make(max_cost_per_query_usd=str(cap))
    fake.enqueue(MINI, status=200, body=b'{"choices": "garbage"}')
    fake.enqueue(GPT4O, "Paris")  # the final tier's single call still fits
    r = router.route(MEDIUM_Q)
    assert fake.calls(SONNET) == [] and r.tier == "premium"
    assert [a.outcome for a in r.attempts] == ["error", "skipped_cost_cap", "accepted"]
    router, fake, _ = make(max_cost_per_query_usd=str(w0 + w1))  # exactly enough: tier 1 is called
    fake.enqueue(MINI, status=200, body=b'{"choices": "garbage"}')
    fake.enqueue(SONNET, "Paris", "Paris")
    r = router.route(MEDIUM_Q)
    assert r.tier == "mid" and r.attempts[0].error_kind == "malformed" and r.attempts[0].cost_usd == 0


def test_a_missing_key_at_a_later_tier_skips_that_tier_and_says_so_loudly(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    fake = FakeProviders(clock=clock)
    router = CascadeRouter.from_policy(
        policy_from_dict(policy_dict()),
        client=httpx.Client(transport=fake.transport()),
        clock=clock,
        api_keys={"OPENAI_API_KEY": KEYS["OPENAI_API_KEY"]},  # no Anthropic key
        environ={},
    )
    fake.enqueue(MINI, "Paris is the capital.", "Maybe Lyon, I cannot tell.")
    fake.enqueue(GPT4O, "Paris")
    with caplog.at_level(logging.INFO, logger="routerlab.router"):
        r = router.route(MEDIUM_Q)
    assert r.tier == "premium" and r.text == "Paris"  # the tier without its key is skipped, the next answers
    assert [a.outcome for a in r.attempts] == ["low_confidence", "error", "accepted"]
    assert r.attempts[1].error_kind == "missing_api_key" and "ANTHROPIC_API_KEY" in (r.attempts[1].error_message or "")
    assert fake.calls(SONNET) == []
    assert any("ANTHROPIC_API_KEY" in rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING)
    assert sum(1 for rec in caplog.records if rec.getMessage().startswith("{")) == 1  # the route's JSON line


def test_a_reload_naming_an_unpriced_model_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import os

    path = tmp_path / "policy.json"
    dump_policy(policy_from_dict(policy_dict()), path)
    fake = FakeProviders()
    router = CascadeRouter.from_policy_file(path, client=httpx.Client(transport=fake.transport()), api_keys=KEYS)
    d = policy_dict(routing={"medium": {"start_tier": 2}})
    d["tiers"][2]["model"] = "my-private-finetune"  # valid file, but genai-prices has no price for it
    path.write_text(json.dumps(d))
    os.utime(path, ns=(1, 1))
    fake.enqueue(MINI, "a", "a")
    with caplog.at_level(logging.ERROR, logger="routerlab.policy"):
        r = router.route(MEDIUM_Q)
    assert r.tier == "cheap" and router.policy.tiers[2].model == GPT4O  # the last good policy still serves
    failed = [json.loads(x.getMessage()) for x in caplog.records if "policy_reload_failed" in x.getMessage()]
    assert failed and "my-private-finetune" in failed[0]["error"]


def test_an_answer_lost_after_the_request_went_out_counts_against_the_cap() -> None:
    """A read timeout may still be billed: its worst case is charged, so the next tier must fit beside it."""
    from routerlab.decision import estimate_input_tokens, worst_case_cost_usd
    from routerlab.pricing import PriceBook

    pol = policy_from_dict(policy_dict())
    est = estimate_input_tokens([{"role": "user", "content": MEDIUM_Q}])
    w0 = worst_case_cost_usd(PriceBook(), pol.tiers[0], est, 100, 1, 2)
    w1 = worst_case_cost_usd(PriceBook(), pol.tiers[1], est, 100, 2, 2)
    for cap, sonnet_called in ((w0 + w1 - Decimal("0.000000000001"), False), (w0 + w1, True)):
        router, fake, _ = make(max_cost_per_query_usd=str(cap))
        fake.enqueue(MINI, timeout=True)
        fake.enqueue(SONNET, "Paris", "Paris")
        fake.enqueue(GPT4O, "Paris")
        r = router.route(MEDIUM_Q)
        assert r.attempts[0].error_kind == "timeout" and r.attempts[0].cost_usd == 0
        assert (len(fake.calls(SONNET)) > 0) is sonnet_called, cap


def test_estimate_counts_each_letter_run_at_least_once() -> None:
    from routerlab.decision import estimate_input_tokens

    spaced = " ".join("ABCDEFGHIJKLMNOPQRST")  # 20 one-letter words: about 20 tokens in any tokenizer
    assert estimate_input_tokens([{"role": "user", "content": spaced}]) == 20 + 8


def test_a_route_never_mixes_two_policy_versions(tmp_path: Path) -> None:
    """The policy file changes while the cheap tier's call is in flight: the rest of that route (its
    thresholds, its next tier, the breaker settings) still follows the version it started with."""
    import os

    path = tmp_path / "policy.json"
    dump_policy(policy_from_dict(policy_dict()), path)
    v2 = policy_dict(confidence={**policy_dict()["confidence"], "thresholds": [0.0, 0.0]}, breaker={
        "failure_threshold": 9, "window_s": 60, "recovery_s": 30})  # fmt: skip
    fake = FakeProviders()

    def handler(request: httpx.Request) -> httpx.Response:
        if not fake.requests:  # the first request of the route: swap the file under it
            path.write_text(json.dumps(v2))
            os.utime(path, ns=(7, 7))
        return fake.handle(request)

    router = CascadeRouter.from_policy_file(path, client=httpx.Client(transport=httpx.MockTransport(handler)),
                                            api_keys=KEYS)  # fmt: skip
    fake.enqueue(MINI, "Paris", "Lyon is my guess")  # disagree: v1 (0.8) escalates, v2 (0.0) would accept
    fake.enqueue(SONNET, "Paris", "Paris")
    r = router.route(MEDIUM_Q)
    assert [a.outcome for a in r.attempts][:1] == ["low_confidence"] and r.tier == "mid"
    mid = router.policy.tiers[1]
    used = router._breakers[(mid.provider, mid.base_url, mid.model)]  # the breaker the route consulted
    assert used.settings.failure_threshold == 2  # v1's, though v2 (9) was on disk by then
    # the next route sees the new version
    fake.enqueue(MINI, "Paris", "Lyon is my guess")
    assert router.route(MEDIUM_Q).tier == "cheap"


def test_the_decision_module_does_no_io_of_its_own() -> None:
    """plan_route reads no environment, clock, logger or breaker: all of that comes through the driver."""
    import ast
    import inspect

    from routerlab import decision

    tree = ast.parse(inspect.getsource(decision))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"os", "time", "logging", "asyncio", "threading", "random", "routerlab.breaker"}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"os", "time", "logging", "environ", "CircuitBreaker"}


def _half_open(router: Any, clock: FakeClock, tier_index: int = 0) -> Any:
    b = router.breaker(router.policy.tiers[tier_index])
    for _ in range(router.policy.breaker.failure_threshold):
        b.record_failure()
    clock.advance(router.policy.breaker.recovery_s + 1)
    assert b.state == "half_open"
    return b


def test_a_cancelled_route_hands_the_half_open_probe_back() -> None:
    """asyncio.wait_for cancels the route while its probe call is in flight: the tier must not stay
    skipped until restart (the probe slot is released, so the next route may probe)."""
    clock = FakeClock()

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        raise AssertionError("never answered")

    router = AsyncCascadeRouter.from_policy(
        policy_from_dict(policy_dict()), client=httpx.AsyncClient(transport=httpx.MockTransport(slow)),
        clock=clock, api_keys=KEYS,
    )  # fmt: skip
    b = _half_open(router, clock)

    async def go() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(router.route(MEDIUM_Q), 0.05)

    asyncio.run(go())
    assert b.allow()  # the probe is free again


def test_a_request_that_cannot_be_built_hands_the_probe_back(monkeypatch: pytest.MonkeyPatch) -> None:
    router, fake, clock = make()
    b = _half_open(router, clock)

    def boom(self: Any) -> Any:
        raise ValueError("cannot build this request")

    monkeypatch.setattr("routerlab.decision.TierCall.requests", boom)
    with pytest.raises(RouterlabError, match="internal error.*cannot build"):  # never a bare ValueError
        router.route(MEDIUM_Q)
    assert b.allow()
