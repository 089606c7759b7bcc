"""Recording and replaying cassettes: secrets, latency, resume, interruption, errors, replay, misses.

Recording goes through the real recorder (vcrpy in ``new_episodes`` mode) in
front of :class:`FakeProviders`; replay goes through the real
:class:`CascadeRouter` on a :class:`ReplayTransport`. The last tests compare
the fast replay path with vcrpy's own playback, on a small recorded set and on
20 items of the real mot_date set imported at test time from the shared
mirror (never copied into the repository).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from routerlab.data import cassettes, importers, paths
from routerlab.data.cassettes import (
    ESTIMATED_HEADER,
    LATENCY_HEADER,
    RecordReport,
    ReplayTransport,
    cassette_name,
    needed_requests,
    record,
    replay_items,
    vcr_playback,
)
from routerlab.data.evalset import EvalItem, load_evalset
from routerlab.errors import ReplayMissError
from routerlab.fakes import FakeProviders
from routerlab.policy import RouterPolicy, load_policy, policy_from_dict
from routerlab.providers import RequestSpec
from routerlab.router import CascadeRouter
from routerlab.types import RouteResult

MINI, SONNET, GPT4O = "gpt-4o-mini-2024-07-18", "claude-3-5-sonnet-20240620", "gpt-4o-2024-05-13"
KEYS = {"OPENAI_API_KEY": "sk-test-openai-111", "ANTHROPIC_API_KEY": "sk-ant-test-222"}

Handler = Callable[[httpx.Request], httpx.Response]


def policy_dict(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "schema_version": 1,
        "name": "cassette-test",
        "tiers": [
            {
                "name": "cheap",
                "provider": "openai",
                "model": MINI,
                "base_url": "https://api.openai.com/v1",
                "api_key_env": "OPENAI_API_KEY",
                "max_tokens": 64,
            },
            {
                "name": "mid",
                "provider": "anthropic",
                "model": SONNET,
                "base_url": "https://api.anthropic.com",
                "api_key_env": "ANTHROPIC_API_KEY",
                "max_tokens": 64,
            },
            {
                "name": "premium",
                "provider": "openai",
                "model": GPT4O,
                "base_url": "https://api.openai.com/v1",
                "api_key_env": "OPENAI_API_KEY",
                "max_tokens": 64,
            },
        ],
        "confidence": {"k": 2, "similarity": "difflib", "temperature": 0.7},
    }
    d.update(over)
    return d


def ladder(**over: Any) -> RouterPolicy:
    return policy_from_dict(policy_dict(**over))


# Per item: per model, the answer to the single (temperature 0) request and the
# answers to the sample requests in order (an int is an HTTP error status).
SCRIPT: dict[str, dict[str, dict[str, list[Any]]]] = {
    "agree": {
        MINI: {"single": ["Paris."], "samples": ["Paris is the capital.", "Paris is the capital."]},
        SONNET: {"single": ["Paris, France."], "samples": ["Paris", "Paris"]},
        GPT4O: {"single": ["The capital of France is Paris."]},
    },
    "to-mid": {
        MINI: {"single": ["Lyon."], "samples": ["Lyon, probably", "Definitely Marseille and nowhere else"]},
        SONNET: {"single": ["Nice."], "samples": ["The capital is Paris.", "The capital is Paris!"]},
        GPT4O: {"single": ["Paris"]},
    },
    "to-premium": {
        MINI: {"single": ["Blue."], "samples": ["Blue whales sing", "Quantum chromodynamics is hard"]},
        SONNET: {"single": ["Red."], "samples": ["Seven bridges of Koenigsberg", "A lighthouse at dusk"]},
        GPT4O: {"single": ["Final premium answer"]},
    },
    "errors": {
        MINI: {"single": ["Ok."], "samples": [429]},
        SONNET: {"single": ["Ok!"], "samples": [500, "a sample after the error"]},
        GPT4O: {"single": ["premium after two provider errors"]},
    },
}
PROMPTS = {
    "agree": "Tell me the capital city of France in one word",
    "to-mid": "Name the capital of France for a school quiz",
    "to-premium": "Give me one sentence that would surprise a sailor",
    "errors": "Tell me something while the providers misbehave today",
}


def script_items() -> list[EvalItem]:
    return [EvalItem.from_prompt(i, PROMPTS[i]) for i in SCRIPT]


class ScriptedProviders:
    """Answers by request, not by arrival order: (item, model, single/samples) -> next scripted answers.

    The recorder sends every request the router could send and the live router
    only the ones it needs; keying the script by request lets both see the
    same answers. The wire format comes from :class:`FakeProviders`.
    """

    def __init__(self) -> None:
        self.fake = FakeProviders()
        self.taken: Counter[tuple[str, str, str]] = Counter()
        self.by_prompt = {p: i for i, p in PROMPTS.items()}

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        model = body["model"]
        item = self.by_prompt[body["messages"][-1]["content"]]
        kind = "single" if body.get("temperature") == 0 else "samples"
        key = (item, model, kind)
        n = int(body.get("n", 1))
        start = self.taken[key]
        self.taken[key] += n
        answers = SCRIPT[item][model][kind][start : start + n]
        assert answers, f"script has no answer {start} for {key}"
        if isinstance(answers[0], int):
            self.fake.enqueue(model, status=answers[0])
        else:
            self.fake.enqueue(model, *answers)
        return self.fake.handle(request)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))


def interactions(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data["interactions"], list)
    return list(data["interactions"])


def header_values(headers: dict[str, Any], name: str) -> list[str]:
    return [str(v) for k, vals in headers.items() if k.lower() == name for v in vals]


def record_with(
    handler: Handler, items: Sequence[EvalItem], policy: RouterPolicy, out: Path, **kwargs: Any
) -> RecordReport:
    kwargs.setdefault("api_keys", KEYS)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        return record(items, policy, out, client=client, progress=False, **kwargs)


def total_needed(policy: RouterPolicy, items: Sequence[EvalItem]) -> int:
    return sum(n.count for it in items for n in needed_requests(policy, it))


def summary(r: RouteResult) -> tuple[Any, ...]:
    return (
        r.text,
        r.tier,
        r.cost_usd,
        r.usage,
        r.escalations,
        tuple((a.tier, a.outcome, a.texts, a.error_kind, a.cost_usd, a.usage, a.calls) for a in r.attempts),
    )


@pytest.fixture(scope="module")
def scripted_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RecordReport]:
    out = tmp_path_factory.mktemp("scripted") / "cassettes"
    fake = ScriptedProviders()
    return out, record_with(fake.handle, script_items(), ladder(), out)


# ---------------------------------------------------------------- 1. secrets


PLANTED = {
    "OPENAI_API_KEY": "sk-PLANTED-openai-XYZ123",
    "ANTHROPIC_API_KEY": "sk-ant-PLANTED-987",
    "GATEWAY_API_KEY": "sk-PLANTED-gateway-456",
}
PLANTED_QUERY = "PLANTEDquerykey555"


def secret_policy() -> RouterPolicy:
    d = policy_dict()
    # the OpenAI adapter appends "/chat/completions" to base_url, so a query string in base_url is not kept
    # as a query of its own (it swallows the path); its key-like parameter must still never be saved
    d["tiers"][2] |= {
        "base_url": f"https://gateway.example.test/v1?key={PLANTED_QUERY}",
        "api_key_env": "GATEWAY_API_KEY",
    }
    return policy_from_dict(d)


def test_recording_with_planted_secrets_saves_none(tmp_path: Path) -> None:
    fake = FakeProviders(default_text="an answer")
    fake.enqueue(GPT4O, f"here is your key back: {PLANTED['GATEWAY_API_KEY']}")  # echoed in a 200 body

    def echo(request: httpx.Request) -> httpx.Response:
        key = request.headers.get("authorization") or request.headers.get("x-api-key") or ""
        if len(fake.requests) == 0:  # the very first request: an error body quoting the key
            fake.requests.append({"body": json.loads(request.content)})
            msg = f"Incorrect API key provided: {key}. You passed {key.removeprefix('Bearer ')}."
            resp = httpx.Response(401, json={"error": {"message": msg, "type": "invalid_request_error"}})
        else:
            resp = fake.handle(request)
        resp.headers["x-echo-key"] = key
        return resp

    out = tmp_path / "cassettes"
    items = [EvalItem.from_prompt("s1", "Tell me a fact about otters"), EvalItem.from_prompt("s2", "And one on owls")]
    report = record_with(echo, items, secret_policy(), out, api_keys=PLANTED)
    assert report.requests_recorded == total_needed(secret_policy(), items)
    assert report.errors_by_kind["auth"] == 1

    files = sorted(out.iterdir())
    assert {p.name for p in files} == {"manifest.json", "s1.json", "s2.json"}
    for p in files:
        text = p.read_text(encoding="utf-8")
        for planted in [*PLANTED.values(), PLANTED_QUERY]:
            assert planted not in text, f"{p.name} contains the planted secret {planted}"
        assert "Bearer sk-" not in text and "PLANTED" not in text, p.name

    echoed = 0
    for p in (out / "s1.json", out / "s2.json"):
        for it in interactions(p):
            req_headers = {k.lower() for k in it["request"]["headers"]}
            assert not req_headers & {"authorization", "x-api-key", "api-key"}, req_headers
            assert "key=" not in it["request"]["uri"]
            echo_values = header_values(it["response"]["headers"], "x-echo-key")
            assert echo_values in (["Bearer REDACTED"], ["REDACTED"]), echo_values  # the echo was recorded, scrubbed
            echoed += 1
    first = interactions(out / "s1.json")[0]["response"]
    assert first["status"]["code"] == 401
    assert "Incorrect API key provided: Bearer REDACTED. You passed REDACTED." in first["body"]["string"]
    assert echoed == report.requests_recorded

    # the recorded (scrubbed) cassettes still replay
    results = list(replay_items(secret_policy(), out, items))
    assert len(results) == 2


def test_secret_query_parameters_are_stripped() -> None:
    strip = cassettes._strip_secret_query
    assert strip("https://x.test/v1/chat?key=PLANTED&alt=json") == "https://x.test/v1/chat?alt=json"
    assert strip("https://x.test/v1/chat?api_key=PLANTED") == "https://x.test/v1/chat"
    assert strip("https://x.test/v1?Token=PLANTED&x=1&ACCESS_TOKEN=PLANTED") == "https://x.test/v1?x=1"
    assert strip("https://x.test/v1?KEY=a&apikey=b&api-key=c") == "https://x.test/v1"
    assert strip("https://x.test/v1/chat") == "https://x.test/v1/chat"
    assert strip("https://x.test/v1?model=m&n=2") == "https://x.test/v1?model=m&n=2"


def test_resume_with_a_secret_query_url_rerecords_nothing(tmp_path: Path) -> None:
    # regression: recorded URIs are stored without key-like query parameters, so vcrpy must match
    # live requests the same way, or every resume re-records (and duplicates) that tier's answers
    items = [EvalItem.from_prompt("q1", "Tell me a fact about otters")]
    first = record_with(FakeProviders(default_text="x").handle, items, secret_policy(), tmp_path, api_keys=PLANTED)
    before = (tmp_path / "q1.json").read_bytes()
    fake = FakeProviders(default_text="x")
    again = record_with(fake.handle, items, secret_policy(), tmp_path, api_keys=PLANTED)
    assert fake.requests == []
    assert (again.requests_recorded, again.requests_replayed) == (0, first.requests_recorded)
    assert (tmp_path / "q1.json").read_bytes() == before
    specs = [n.spec for n in needed_requests(secret_policy(), items[0]) for _ in range(n.count)]
    assert len(vcr_playback(tmp_path / "q1.json", specs)) == len(specs)


# ---------------------------------------------------------------- 2. latency


@pytest.mark.parametrize("measure", [True, False])
def test_latency_header_only_when_measured(tmp_path: Path, measure: bool) -> None:
    items = [EvalItem.from_prompt("l1", "Tell me a fact about otters")]
    record_with(FakeProviders(default_text="x").handle, items, ladder(), tmp_path, measure_latency=measure)
    recorded = interactions(tmp_path / "l1.json")
    assert len(recorded) == total_needed(ladder(), items)
    for it in recorded:
        values = header_values(it["response"]["headers"], LATENCY_HEADER)
        if measure:
            assert len(values) == 1
            assert float(values[0]) >= 0.0
        else:
            assert values == []


# ---------------------------------------------------------------- 3. resume


def test_resume_sends_exactly_the_missing_requests(tmp_path: Path) -> None:
    policy = ladder()
    items = [EvalItem.from_prompt(f"r{i}", f"Tell me fact number {i} about otters") for i in range(3)]
    per_item = total_needed(policy, items[:1])
    first_fake = FakeProviders(default_text="an answer")
    first = record_with(first_fake.handle, items, policy, tmp_path)
    assert first.requests_recorded == len(first_fake.requests) == 3 * per_item == total_needed(policy, items)

    untouched = (tmp_path / "r0.json").read_bytes()
    trimmed = json.loads((tmp_path / "r1.json").read_text(encoding="utf-8"))
    removed = trimmed["interactions"].pop()
    (tmp_path / "r1.json").write_text(json.dumps(trimmed), encoding="utf-8")
    cassettes.seal_cassettes(tmp_path)  # an interrupted run seals what it wrote before it stops
    (tmp_path / "r2.json").unlink()

    fake = FakeProviders(default_text="a new answer")
    again = record_with(fake.handle, items, policy, tmp_path)
    assert len(fake.requests) == 1 + per_item
    assert again.requests_recorded == 1 + per_item
    assert again.requests_replayed == 3 * per_item - (1 + per_item)
    assert again.items == 3 and again.items_skipped == 1
    # the one request sent for r1 is the removed interaction's
    sent_r1 = fake.requests[0]
    assert sent_r1["url"] == removed["request"]["uri"]
    assert sent_r1["body"] == json.loads(removed["request"]["body"])
    assert all(r["body"]["messages"][0]["content"] == items[2].prompt for r in fake.requests[1:])
    # nothing overwritten: r0 is byte for byte the same; r1 kept its interactions and gained one
    assert (tmp_path / "r0.json").read_bytes() == untouched
    assert len(interactions(tmp_path / "r1.json")) == per_item
    assert interactions(tmp_path / "r1.json")[:-1] == trimmed["interactions"]
    assert len(interactions(tmp_path / "r2.json")) == per_item

    # nothing is missing any more
    idle = FakeProviders()
    done = record_with(idle.handle, items, policy, tmp_path)
    assert idle.requests == [] and done.requests_recorded == 0 and done.items_skipped == 3

    forced_fake = FakeProviders(default_text="forced")
    forced = record_with(forced_fake.handle, items, policy, tmp_path, force=True)
    assert len(forced_fake.requests) == 3 * per_item
    assert (forced.requests_recorded, forced.requests_replayed) == (3 * per_item, 0)
    assert (tmp_path / "r0.json").read_bytes() != untouched
    assert all(len(interactions(tmp_path / f"r{i}.json")) == per_item for i in range(3))


def test_resume_records_each_of_k_identical_requests(tmp_path: Path) -> None:
    # regression: on a resumed (rewound) cassette vcrpy played the first new Anthropic sample back to the
    # second identical request, so only one of the k samples was ever recorded
    policy = ladder()
    items = [EvalItem.from_prompt("k1", "Tell me a fact about otters")]
    record_with(FakeProviders(default_text="old").handle, items, policy, tmp_path)
    data = json.loads((tmp_path / "k1.json").read_text(encoding="utf-8"))

    def is_sample(it: dict[str, Any]) -> bool:
        body = json.loads(it["request"]["body"])
        return bool(body["model"] == SONNET and body["temperature"] == 0.7)

    assert sum(map(is_sample, data["interactions"])) == 2
    data["interactions"] = [it for it in data["interactions"] if not is_sample(it)]
    (tmp_path / "k1.json").write_text(json.dumps(data), encoding="utf-8")
    cassettes.seal_cassettes(tmp_path)  # an interrupted run seals what it wrote before it stops

    fake = FakeProviders().enqueue(SONNET, "first sample", "second sample")
    report = record_with(fake.handle, items, policy, tmp_path)
    assert len(fake.requests) == 2 and report.requests_recorded == 2
    routing = {c: {"start_tier": 1} for c in ("simple", "medium", "complex")}
    [(_, result)] = list(replay_items(ladder(routing=routing), tmp_path, items))
    assert result.attempts[0].texts == ("first sample", "second sample")


# ---------------------------------------------------------------- 4. interruption


def test_interrupted_run_leaves_valid_cassettes_and_a_rerun_completes(tmp_path: Path) -> None:
    policy = ladder()
    items = [EvalItem.from_prompt(f"i{i}", f"Tell me fact number {i} about owls") for i in range(3)]
    per_item = total_needed(policy, items[:1])
    stop_at = per_item + 2  # in the middle of the second item
    fake = FakeProviders(default_text="an answer")

    def flaky(request: httpx.Request) -> httpx.Response:
        if len(fake.requests) + 1 == stop_at:
            raise KeyboardInterrupt
        return fake.handle(request)

    with pytest.raises(KeyboardInterrupt):
        record_with(flaky, items, policy, tmp_path)
    assert len(fake.requests) == stop_at - 1

    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("*.tmp"))
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert names == ["i0.json", "i1.json", "manifest.json"]
    for p in tmp_path.glob("*.json"):
        data = json.loads(p.read_text(encoding="utf-8"))
        if p.name != "manifest.json":
            assert isinstance(data["interactions"], list)
    assert len(interactions(tmp_path / "i0.json")) == per_item
    assert len(interactions(tmp_path / "i1.json")) == stop_at - 1 - per_item

    fresh = FakeProviders(default_text="an answer")
    report = record_with(fresh.handle, items, policy, tmp_path)
    assert len(fresh.requests) == 3 * per_item - (stop_at - 1) == report.requests_recorded
    assert all(len(interactions(tmp_path / f"i{i}.json")) == per_item for i in range(3))
    assert [r.text for _, r in replay_items(policy, tmp_path, items)] == ["an answer"] * 3


# ---------------------------------------------------------------- 5. provider errors


def test_provider_errors_are_recorded_and_replay_the_escalation(scripted_set: tuple[Path, RecordReport]) -> None:
    out, report = scripted_set
    assert report.errors_by_kind == Counter({"rate_limit": 1, "server": 1})
    statuses = Counter(it["response"]["status"]["code"] for it in interactions(out / "errors.json"))
    assert statuses == Counter({200: 4, 429: 1, 500: 1})

    item = next(i for i in script_items() if i.id == "errors")
    [(_, result)] = list(replay_items(ladder(), out, [item]))
    assert [(a.tier, a.outcome, a.error_kind) for a in result.attempts] == [
        ("cheap", "error", "rate_limit"),
        ("mid", "error", "server"),
        ("premium", "accepted", None),
    ]
    assert result.tier == "premium" and result.text == "premium after two provider errors"
    assert result.escalation_reasons == ("cheap: rate_limit", "mid: server")


# ---------------------------------------------------------------- 6. replay equals live


def test_replay_equals_live_routing(scripted_set: tuple[Path, RecordReport]) -> None:
    out, _ = scripted_set
    policy = ladder()
    items = script_items()
    live_fake = ScriptedProviders()
    with live_fake.client() as client:
        live = {}
        for item in items:
            router = CascadeRouter.from_policy(policy, client=client, api_keys=KEYS)
            live[item.id] = router.route(list(item.messages), query_id=item.id)
    replayed = dict((i.id, r) for i, r in replay_items(policy, out, items))
    for item in items:
        assert summary(replayed[item.id]) == summary(live[item.id]), item.id
    assert [replayed[i.id].tier for i in items] == ["cheap", "mid", "premium", "premium"]
    assert all(r.cost_usd > 0 for r in replayed.values())

    # Anthropic's two identical sample requests get the recorded samples in order
    mid = next(a for a in replayed["to-mid"].attempts if a.tier == "mid")
    assert mid.calls == 2
    assert mid.texts == ("The capital is Paris.", "The capital is Paris!")
    assert replayed["to-mid"].text == "The capital is Paris."
    mid = next(a for a in replayed["to-premium"].attempts if a.tier == "mid")
    assert mid.texts == ("Seven bridges of Koenigsberg", "A lighthouse at dusk")


def test_replay_with_async_router_matches_sync(scripted_set: tuple[Path, RecordReport]) -> None:
    import asyncio

    from routerlab.router import AsyncCascadeRouter

    out, _ = scripted_set
    policy = ladder()
    sync = dict((i.id, r) for i, r in replay_items(policy, out, script_items()))
    transport = ReplayTransport(out, tiers=cassettes.tier_map(policy))

    async def run() -> dict[str, RouteResult]:
        res = {}
        async with httpx.AsyncClient(transport=transport) as client:
            for item in script_items():
                router = AsyncCascadeRouter.from_policy(policy, client=client, api_keys=cassettes.replay_keys(policy))
                transport.select(item.id)
                res[item.id] = await router.route(list(item.messages), query_id=item.id)
        return res

    got = asyncio.run(run())
    # the async router sends Anthropic's k samples concurrently, but they are the same request:
    # the transport hands out the recorded answers in order either way
    assert {k: (r.text, r.tier, r.cost_usd) for k, r in got.items()} == {
        k: (r.text, r.tier, r.cost_usd) for k, r in sync.items()
    }


# ---------------------------------------------------------------- 7. misses


def test_miss_names_item_tier_model_and_the_differing_field(scripted_set: tuple[Path, RecordReport]) -> None:
    out, _ = scripted_set
    d = policy_dict()
    d["tiers"][0]["max_tokens"] = 65
    item = next(i for i in script_items() if i.id == "agree")
    with pytest.raises(ReplayMissError) as exc:
        list(replay_items(policy_from_dict(d), out, [item]))
    err = exc.value
    assert (err.item_id, err.tier, err.model) == ("agree", "cheap", MINI)
    msg = str(err)
    assert "'agree'" in msg and "'cheap'" in msg and MINI in msg
    assert "max_tokens: recorded 64, requested 65" in msg


def test_miss_when_more_samples_are_asked_than_recorded(scripted_set: tuple[Path, RecordReport]) -> None:
    out, _ = scripted_set
    # start at the Anthropic tier, whose k samples are k identical requests: the third is not recorded
    routing = {c: {"start_tier": 1} for c in ("simple", "medium", "complex")}
    policy = ladder(routing=routing, confidence={"k": 3, "temperature": 0.7})
    item = next(i for i in script_items() if i.id == "to-premium")
    with pytest.raises(ReplayMissError) as exc:
        list(replay_items(policy, out, [item]))
    assert (exc.value.item_id, exc.value.tier, exc.value.model) == ("to-premium", "mid", SONNET)
    assert "recorded 2 time(s)" in str(exc.value)


def test_miss_without_a_cassette(scripted_set: tuple[Path, RecordReport]) -> None:
    out, _ = scripted_set
    with pytest.raises(ReplayMissError) as exc:
        list(replay_items(ladder(), out, [EvalItem.from_prompt("never-recorded", "hello")]))
    assert exc.value.item_id == "never-recorded"
    assert "never-recorded" in str(exc.value)


# ---------------------------------------------------------------- 8. fast path == vcrpy playback


def sorted_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers)


def compare_with_vcrpy(policy: RouterPolicy, cassette_dir: Path, items: Sequence[EvalItem], **need_kw: Any) -> int:
    """Send every needed request through vcrpy's playback and through ReplayTransport; return how many."""
    transport = ReplayTransport(cassette_dir)
    compared = 0
    with httpx.Client(transport=transport) as client:
        for item in items:
            specs: list[RequestSpec] = [
                n.spec for n in needed_requests(policy, item, **need_kw) for _ in range(n.count)
            ]
            reference = vcr_playback(cassette_dir / cassette_name(item.id), specs)
            transport.select(item.id)
            for spec, ref in zip(specs, reference, strict=True):
                got = client.send(
                    client.build_request(spec.method, spec.url, headers=spec.headers, content=spec.content())
                )
                assert got.status_code == ref.status, (item.id, spec.body)
                assert got.content == ref.body, (item.id, spec.body)
                assert sorted_headers(got.headers.multi_items()) == sorted_headers(ref.headers), (item.id, spec.body)
                compared += 1
    return compared


def test_fast_path_equals_vcrpy_playback_on_a_recorded_set(scripted_set: tuple[Path, RecordReport]) -> None:
    out, report = scripted_set
    assert compare_with_vcrpy(ladder(), out, script_items()) == report.requests_recorded


@pytest.fixture(scope="module")
def mot_date_20(tmp_path_factory: pytest.TempPathFactory) -> Iterator[importers.ImportResult]:
    if paths.mirror_dir() is None:
        pytest.skip("no dataset mirror (set ROUTERLAB_MIRROR or provide ../shared/datasets/github): mot_date not read")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(paths.DATA_DIR_ENV, str(tmp_path_factory.mktemp("data-cache")))
        rows = importers.dataset_rows("mot_date", progress=False)
    first = sorted({r.id for r in rows})[:20]
    rows = [r for r in rows if r.id in first]
    rungs = importers.make_ladder(importers.DEFAULT_LADDERS["mot_date"])
    root = tmp_path_factory.mktemp("mot_date_20")
    yield importers.import_outputs(rows, rungs, name="mot_date", root=root, progress=False)


def test_fast_path_equals_vcrpy_playback_on_imported_mot_date(mot_date_20: importers.ImportResult) -> None:
    policy = load_policy(mot_date_20.policy)
    items = load_evalset(mot_date_20.evalset)
    assert len(items) == 20
    manifest = cassettes.read_manifest(mot_date_20.cassettes)
    limits = {int(k): v for k, v in manifest["sample_limits"].items()}
    temps = cassettes.recorded_temperatures(policy, manifest)  # gpt-3.5's samples at T=0.8 too
    assert temps == {1: (0.4, 0.8)}
    n = compare_with_vcrpy(
        policy, mot_date_20.cassettes, items, ks=manifest["ks"], sample_limits=limits, sample_temperatures=temps
    )
    assert n == mot_date_20.requests_recorded
    # the imported responses carry the estimated-usage mark, and vcrpy plays it back too
    some = cassettes.load_cassette_index(mot_date_20.cassettes / cassette_name(items[0].id))
    assert all((ESTIMATED_HEADER, "1") in r.headers for rs in some.values() for r in rs)
    # and the same cassettes replay through the router with a policy variant on the same ladder
    variant = policy.with_changes(confidence=replace(policy.confidence, similarity="answer"))
    assert len(list(replay_items(variant, mot_date_20.cassettes, items))) == 20


# ---------------------------------------------------------------- request keys without re-parsing


def _random_json(rng: Any, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.choice([0, -1, 7, 10**20, 2**63])
    if kind == 1:
        return rng.choice([0.1, 1e-7, 1e21, -0.0, 2.5, 1 / 3, 0.30000000000000004])
    if kind == 2:
        return rng.choice(["", "plain", "ünïcødé ✓", 'quote " and \\ back', "line\nbreak", "\u2028", "\x00"])
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["model", "messages", "n", "temperature", "b", "a", "Z", "é", "tools", "10", "2"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_spec_key_equals_the_key_of_the_encoded_request() -> None:
    import random

    seed = 1515
    print(f"seed {seed}")
    rng = random.Random(seed)
    urls = ["https://api.openai.com/v1/chat/completions", "https://x.test/v1/messages?api-key=sk-1&x=2",
            "HTTPS://Host.Example:8443/a%20b/c?key=secret"]  # fmt: skip
    for _ in range(2000):
        extra = _random_json(rng, 1)
        body = {"model": "m", "payload": _random_json(rng), **(extra if isinstance(extra, dict) else {})}
        spec = RequestSpec(rng.choice(["post", "POST"]), rng.choice(urls), {}, body)
        assert cassettes.spec_key(spec) == cassettes.request_key(spec.method, spec.url, spec.content()), body
    # and every request a real policy needs for a multi-turn item with tools
    policy = load_policy(Path(__file__).resolve().parents[1] / "policies" / "example.json")
    item = EvalItem.from_prompt("t1", "What is the date tomorrow? ✓")
    specs = [n.spec for n in needed_requests(policy, item, ks=[2, 3])]
    assert len(specs) >= 3
    for spec in specs:
        assert cassettes.spec_key(spec) == cassettes.request_key(spec.method, spec.url, spec.content())
