"""The LLM-judge scorer: config, record once / replay offline, parsing, no secrets on disk, spend, outcome table."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_outcomes import POLICY

from routerlab.data.evalset import EvalItem
from routerlab.errors import ConfigError, DataError, MissingApiKeyError, RateLimitError, ReplayMissError
from routerlab.types import Usage
from routerlab.workbench.judge import (
    JudgeConfig,
    judge_config_from_dict,
    load_judge_config,
    make_judge_scorer,
    parse_score,
    register_judge,
)

KEY = "sk-judgeTESTKEY-0123456789abcdef"
ENV = {"JUDGE_KEY": KEY}
CONFIG: dict[str, Any] = {
    "provider": "openai",
    "model": "judge-model",
    "base_url": "https://judge.example/v1",
    "api_key_env": "JUDGE_KEY",
    "price": {"input_usd_per_mtok": "1", "output_usd_per_mtok": "2"},
    "system": "You grade answers.",
    "prompt": "Question: {question}\nReference: {reference}\nAnswer: {answer}\nReply 'Score: N' from 1 to 10.",
    "scale": [1, 10],
}
ITEMS = [EvalItem.from_prompt(f"q{i}", f"What is {i} plus {i}?", reference=f"{2 * i}") for i in range(3)]


class FakeJudge:
    """A judge endpoint: 'Score: 10' when the answer holds the reference, else 'Score: 1' (or a fixed reply)."""

    def __init__(self, provider: str = "openai", reply: str | None = None, fail_first: int = 0) -> None:
        self.provider = provider
        self.reply = reply
        self.fail_first = fail_first
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail_first:
            self.fail_first -= 1
            return httpx.Response(429, headers={"retry-after": "0"}, json={"error": {"message": "slow down"}})
        body = json.loads(request.content)
        prompt = body["messages"][-1]["content"]
        ref = prompt.split("Reference: ")[1].split("\n")[0]
        answer = prompt.split("Answer: ")[1].split("\n")[0]
        text = self.reply if self.reply is not None else f"Score: {10 if ref in answer else 1}"
        if self.provider == "openai":
            assert request.url.path == "/v1/chat/completions"
            assert request.headers["authorization"] == f"Bearer {KEY}"
            payload: dict[str, Any] = {
                "id": "c1",
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 4},
            }
        else:
            assert request.url.path == "/v1/messages"
            assert request.headers["x-api-key"] == KEY
            assert body["system"] == "You grade answers."
            payload = {
                "id": "m1",
                "type": "message",
                "model": body["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 100, "output_tokens": 4},
            }
        return httpx.Response(200, json=payload, headers={"set-cookie": f"session={KEY}"})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))


ANSWERS = [("q0", "It is 0."), ("q1", "It is 2."), ("q2", "It is 5."), ("q1", "It is 2.")]  # the last repeats


def run(scorer: Any) -> list[float | None]:
    by_id = {it.id: it for it in ITEMS}
    return [scorer(by_id[i], text, "tier-model") for i, text in ANSWERS]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_records_once_then_replays_offline_with_identical_scores(tmp_path: Path, provider: str) -> None:
    cfg = {
        **CONFIG,
        "provider": provider,
        "base_url": "https://judge.example" + ("/v1" if provider == "openai" else ""),
    }
    config = judge_config_from_dict(cfg)
    cassette = tmp_path / "judge.json"
    fake = FakeJudge(provider)
    first = make_judge_scorer(config, cassette, client=fake.client(), environ=ENV)
    scores = run(first)
    assert scores == [1.0, 1.0, 0.0, 1.0]
    assert len(fake.requests) == 3  # the repeated answer is judged once
    s = first.stats()
    assert (s.sent, s.recorded, s.replayed, s.unparseable) == (3, 3, 1, 0)
    assert s.spend_usd == 3 * (Decimal(100) * 1 + Decimal(4) * 2) / Decimal(1_000_000)
    assert first.cassette_cost_usd() == s.spend_usd

    again = FakeJudge(provider)
    second = make_judge_scorer(config, cassette, client=again.client(), environ={})  # no key needed to replay
    assert run(second) == scores
    assert again.requests == []
    assert second.stats().sent == 0 and second.stats().replayed == 4 and second.stats().spend_usd == 0
    offline = make_judge_scorer(config, cassette, record=False)
    assert run(offline) == scores


def test_the_cassette_holds_no_api_key(tmp_path: Path) -> None:
    cassette = tmp_path / "judge.json"
    fake = FakeJudge()
    run(make_judge_scorer(judge_config_from_dict(CONFIG), cassette, client=fake.client(), environ=ENV))
    text = cassette.read_text()
    assert KEY not in text and "judgeTESTKEY" not in text
    assert "authorization" not in text.lower() and "set-cookie" not in text.lower()
    assert "JUDGE_KEY" not in text  # not even the variable's name
    assert "It is 5." in text  # the exchange itself is there


def test_replay_only_miss_names_the_item(tmp_path: Path) -> None:
    scorer = make_judge_scorer(judge_config_from_dict(CONFIG), tmp_path / "none.json", record=False)
    with pytest.raises(ReplayMissError, match="item 'q1'") as e:
        scorer(ITEMS[1], "It is 2.", "tier-model")
    assert e.value.item_id == "q1"
    assert isinstance(e.value, DataError)


def test_missing_api_key_is_a_config_error_and_nothing_is_sent(tmp_path: Path) -> None:
    fake = FakeJudge()
    scorer = make_judge_scorer(judge_config_from_dict(CONFIG), tmp_path / "j.json", client=fake.client(), environ={})
    with pytest.raises(MissingApiKeyError, match="JUDGE_KEY") as e:
        scorer(ITEMS[0], "0", "m")
    assert isinstance(e.value, ConfigError) and fake.requests == []
    assert not (tmp_path / "j.json").exists()


def test_unparseable_reply_is_none_and_counted(tmp_path: Path) -> None:
    fake = FakeJudge(reply="I cannot grade this.")
    scorer = make_judge_scorer(judge_config_from_dict(CONFIG), tmp_path / "j.json", client=fake.client(), environ=ENV)
    assert scorer(ITEMS[0], "0", "m") is None
    assert scorer(ITEMS[0], "0", "m") is None  # replayed, still unparseable
    assert scorer.stats().unparseable == 2 and scorer.unparseable_items == ["q0", "q0"]
    assert scorer.stats().sent == 1


def test_empty_answer_and_missing_reference_need_no_call(tmp_path: Path) -> None:
    fake = FakeJudge()
    scorer = make_judge_scorer(judge_config_from_dict(CONFIG), tmp_path / "j.json", client=fake.client(), environ=ENV)
    assert scorer(ITEMS[0], "  ", "m") == 0.0
    assert scorer(EvalItem.from_prompt("x", "hi"), "hello", "m") is None  # the prompt needs a reference
    assert fake.requests == []


def test_a_rate_limit_is_retried(tmp_path: Path) -> None:
    fake = FakeJudge(fail_first=1)
    scorer = make_judge_scorer(judge_config_from_dict(CONFIG), tmp_path / "j.json", client=fake.client(), environ=ENV)
    waits: list[float] = []
    scorer.sleep = waits.append
    assert scorer(ITEMS[1], "2", "m") == 1.0
    assert scorer.stats().sent == 2 and waits == [0.0]
    always = FakeJudge(fail_first=10)
    s2 = make_judge_scorer(
        judge_config_from_dict(CONFIG), tmp_path / "k.json", client=always.client(), environ=ENV, max_retries=1
    )
    s2.sleep = waits.append
    with pytest.raises(RateLimitError, match="judging item 'q1'"):
        s2(ITEMS[1], "2", "m")
    assert len(always.requests) == 2


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Score: 7", 6 / 9),
        ("score=10", 1.0),
        ("Rating: 1/10", 0.0),
        ("7", 6 / 9),
        ("I'd say 4 out of 10.", 3 / 9),
        ("Score: 11", None),
        ("between 3 and 4", None),
        ("no idea", None),
        ("", None),
    ],
)
def test_parse_score(text: str, want: float | None) -> None:
    got = parse_score(text, (1.0, 10.0))
    assert got == pytest.approx(want) if want is not None else got is None


def test_parse_score_with_a_pattern() -> None:
    assert parse_score("[[B]] 3", (0, 5), r"\]\]\s*(\d)") == pytest.approx(0.6)
    assert parse_score("nothing", (0, 5), r"(\d)") is None


def write(tmp_path: Path, data: Any) -> Path:
    p = tmp_path / "judge-config.json"
    p.write_text(json.dumps(data))
    return p


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"provider": "gemini"}, "provider"),
        ({"model": ""}, "model"),
        ({"base_url": "judge.example"}, "base_url"),
        ({"api_key_env": "sk-pasted-key-123456"}, "api_key_env"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"scale": [10, 1]}, "scale"),
        ({"scale": "1-10"}, "scale"),
        ({"prompt": "Grade {answer}"}, "prompt"),
        ({"prompt": "{question} {answer} {model}"}, "prompt"),
        ({"prompt": "{question} {answer!r}"}, "prompt"),
        ({"price": {"input_usd_per_mtok": "1"}}, "price.output_usd_per_mtok"),
        ({"price": {"input_usd_per_mtok": "-1", "output_usd_per_mtok": "1"}}, "price.input_usd_per_mtok"),
        ({"price": {"input_usd_per_mtok": 1, "output_usd_per_mtok": 1, "x": 1}}, "price.x"),
        ({"score_pattern": "no group"}, "score_pattern"),
        ({"score_pattern": "(unclosed"}, "score_pattern"),
    ],
)
def test_config_errors_name_the_file_and_field(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    p = write(tmp_path, {**CONFIG, **change})
    with pytest.raises(DataError, match=f"field '{field}'") as e:
        load_judge_config(p)
    assert str(p) in str(e.value)
    assert "sk-pasted" not in str(e.value)


def test_config_defaults_and_missing_keys(tmp_path: Path) -> None:
    minimal = {k: CONFIG[k] for k in ("provider", "model", "base_url", "prompt")}
    c = load_judge_config(write(tmp_path, minimal))
    assert (c.max_tokens, c.temperature, c.scale, c.api_key_env) == (16, 0.0, (1.0, 10.0), None)
    assert isinstance(c, JudgeConfig) and c.uses_reference
    with pytest.raises(DataError, match="field 'prompt': missing"):
        load_judge_config(write(tmp_path, {k: v for k, v in minimal.items() if k != "prompt"}))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_judge_config(tmp_path / "bad.json")


def test_the_request_is_built_by_the_adapter_with_the_config(tmp_path: Path) -> None:
    scorer = make_judge_scorer(judge_config_from_dict({**CONFIG, "max_tokens": 5}), tmp_path / "j.json")
    spec = scorer.request_for(ITEMS[2], "It is 4.")
    assert spec is not None
    assert spec.url == "https://judge.example/v1/chat/completions"
    assert spec.body["max_tokens"] == 5 and spec.body["temperature"] == 0.0
    assert spec.body["messages"][0] == {"role": "system", "content": "You grade answers."}
    assert "Reference: 4\nAnswer: It is 4." in spec.body["messages"][1]["content"]
    assert "authorization" not in {k.lower() for k in spec.headers}


def test_a_corrupt_or_edited_cassette_is_a_data_error(tmp_path: Path) -> None:
    cassette = tmp_path / "j.json"
    config = judge_config_from_dict(CONFIG)
    run(make_judge_scorer(config, cassette, client=FakeJudge().client(), environ=ENV))
    data = json.loads(cassette.read_text())
    ex = next(iter(data["interactions"].values()))
    ex["request"]["body"]["max_tokens"] = 99
    cassette.write_text(json.dumps(data))
    with pytest.raises(DataError, match="does not match its request"):
        make_judge_scorer(config, cassette)
    cassette.write_text("[]")
    with pytest.raises(DataError, match="not a judge cassette"):
        make_judge_scorer(config, cassette)


def test_batched_flush_writes_on_close(tmp_path: Path) -> None:
    cassette = tmp_path / "j.json"
    fake = FakeJudge()
    with make_judge_scorer(
        judge_config_from_dict(CONFIG), cassette, client=fake.client(), environ=ENV, flush_interval_s=3600
    ) as scorer:
        run(scorer)
        first = json.loads(cassette.read_text())  # the first exchange is written at once
        assert len(first["interactions"]) == 1
    assert len(json.loads(cassette.read_text())["interactions"]) == 3
    assert make_judge_scorer(judge_config_from_dict(CONFIG), cassette, record=False)(ITEMS[2], "It is 5.", "m") == 0


def test_fingerprint_follows_the_config_and_the_recordings(tmp_path: Path) -> None:
    from routerlab.workbench.scoring import scorer_fingerprint

    cfg_path = write(tmp_path, CONFIG)
    cassette = tmp_path / "j.json"
    register_judge("judge_fp", cfg_path, cassette, client=FakeJudge().client(), environ=ENV)
    a = scorer_fingerprint("judge_fp")
    register_judge("judge_fp", cfg_path, cassette, client=FakeJudge().client(), environ=ENV)
    assert scorer_fingerprint("judge_fp") == a  # a fresh object over the same config and cassette
    write(tmp_path, {**CONFIG, "prompt": CONFIG["prompt"] + " Be strict."})
    judge = register_judge("judge_fp", cfg_path, cassette, client=FakeJudge().client(), environ=ENV)
    b = scorer_fingerprint("judge_fp")
    assert b != a
    judge(ITEMS[0], "0", "m")  # a new recording
    assert scorer_fingerprint("judge_fp") != b


def test_unknown_judge_model_without_a_price_is_refused_up_front(tmp_path: Path) -> None:
    from routerlab.errors import PricingError

    cfg = {k: v for k, v in CONFIG.items() if k != "price"}
    with pytest.raises(PricingError, match="nothing was sent"):
        make_judge_scorer(judge_config_from_dict(cfg), tmp_path / "j.json", client=FakeJudge().client(), environ=ENV)


def test_usage_is_priced_with_the_price_book(tmp_path: Path) -> None:
    from routerlab.pricing import PriceOverride, cost_usd

    cfg = judge_config_from_dict({**CONFIG, "price": {"input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6}})
    scorer = make_judge_scorer(cfg, tmp_path / "j.json", client=FakeJudge().client(), environ=ENV)
    scorer(ITEMS[0], "0", "m")
    want = cost_usd(
        Usage(input_tokens=100, output_tokens=4), "judge-model", override=PriceOverride(Decimal("0.15"), Decimal("0.6"))
    )
    assert scorer.stats().spend_usd == want > 0


# ---------------------------------------------------------------- in an outcome table


def test_a_registered_judge_scores_an_outcome_table(tmp_path: Path) -> None:
    from routerlab.data.cassettes import record
    from routerlab.fakes import FakeProviders
    from routerlab.policy import policy_from_dict
    from routerlab.workbench.outcomes import build_outcomes

    policy = policy_from_dict(POLICY)  # the two-tier ladder of tests/test_outcomes.py
    fake = FakeProviders()
    for i in range(3):  # the cheap tier is right on q0 only; mid always
        wrong = f"It is {2 * i + 1}."
        cheap = f"It is {2 * i}." if i == 0 else wrong
        fake.enqueue("gpt-4o-mini", cheap, cheap, wrong, input_tokens=12, output_tokens=4)
        fake.enqueue("claude-3-5-sonnet-20240620", f"It is {2 * i}.", input_tokens=15, output_tokens=5)
    cdir = tmp_path / "cassettes"
    record(
        ITEMS,
        policy,
        cdir,
        client=httpx.Client(transport=fake.transport()),
        progress=False,
        api_keys={"OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "sk-2"},
    )
    cfg_path = write(tmp_path, CONFIG)
    judge_cassette = tmp_path / "judge.json"
    judge_fake = FakeJudge()
    judge = register_judge("judge10", cfg_path, judge_cassette, client=judge_fake.client(), environ=ENV)
    o = build_outcomes(ITEMS, policy, cdir, scorers=["judge10"], cache_dir=tmp_path / "cache", progress=False)
    single = o.calls[o.calls["variant"] == "single"].set_index(["item_id", "tier_index"])["q_judge10"]
    assert single[("q0", 0)] == 1.0 and single[("q1", 0)] == 0.0 and single[("q2", 0)] == 0.0
    assert all(single[(f"q{i}", 1)] == 1.0 for i in range(3))
    distinct = set(zip(o.samples["item_id"], o.sample_texts(), strict=True))
    assert len(judge_fake.requests) == judge.stats().sent == len(distinct)
    assert "q_judge10" in o.samples.columns and o.samples["q_judge10"].notna().all()

    # a fresh judge over the recorded cassette, offline: the same table, no request
    offline = FakeJudge()
    register_judge("judge10", cfg_path, judge_cassette, client=offline.client(), environ={}, record=False)
    o2 = build_outcomes(ITEMS, policy, cdir, scorers=["judge10"], cache_dir=tmp_path / "cache2", progress=False)
    assert offline.requests == []
    assert o2.calls["q_judge10"].tolist() == o.calls["q_judge10"].tolist()
