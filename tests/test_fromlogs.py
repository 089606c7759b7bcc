"""routerlab data from-logs: the router's own log lines (log_prompts=True) become a new eval set."""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from routerlab import CascadeRouter, DataError, dump_policy
from routerlab.classifier import ClassifierSettings
from routerlab.data.evalset import load_evalset
from routerlab.data.fromlogs import (
    PROMPT_LOGGING_HINT,
    RouteLogs,
    add_from_logs_parser,
    allocate,
    from_logs_command,
    read_route_logs,
    sample_evalset,
    write_study_evalset,
)
from routerlab.fakes import FakeClock, FakeProviders
from routerlab.policy import RouterPolicy, load_policy, policy_from_dict

KEYS = {"OPENAI_API_KEY": "sk-test-openai-123"}
MINI, GPT4O = "gpt-4o-mini-2024-07-18", "gpt-4o-2024-05-13"

SIMPLE = [f"What is the capital of country number {i}?" for i in range(12)]  # "what is" + short
MEDIUM = [f"Tell me a fun fact about the number {i}" for i in range(6)]  # no pattern
COMPLEX = [f"Compare approach {i} with approach {i + 1} for caching" for i in range(3)]  # "compare"


def policy_dict() -> dict[str, Any]:
    tier = {"provider": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"}
    return {
        "schema_version": 1,
        "name": "logs-test",
        "tiers": [
            {**tier, "name": "cheap", "model": MINI, "timeout_s": 5, "max_tokens": 50, "temperature": 0},
            {**tier, "name": "premium", "model": GPT4O, "timeout_s": 5, "max_tokens": 50, "temperature": 0},
        ],
        "routing": {"simple": {"start_tier": 0}, "medium": {"start_tier": 0}, "complex": {"start_tier": 1}},
        "cascade": False,
    }


def router(policy: RouterPolicy, *, log_prompts: bool = True) -> CascadeRouter:
    clock = FakeClock()
    fake = FakeProviders(clock=clock, default_text="ok")
    client = httpx.Client(transport=fake.transport())
    return CascadeRouter.from_policy(policy, client=client, clock=clock, api_keys=KEYS, log_prompts=log_prompts)


@pytest.fixture
def route_log(tmp_path: Path) -> Iterator[Path]:
    """A log file written by the real router: prefixed and bare lines, duplicates, other events, junk."""
    path = tmp_path / "router.log"
    log = logging.getLogger("routerlab.router")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        pol = policy_from_dict(policy_dict())
        r = router(pol)
        for i, q in enumerate(SIMPLE + MEDIUM + COMPLEX):
            r.route(q, query_id=f"q{i}")
        handler.setFormatter(logging.Formatter("%(message)s"))  # bare JSON lines from here on
        r.route(SIMPLE[0], query_id="dup-exact")  # duplicate
        r.route("  What is the capital of   country number 1? ", query_id="dup-space")  # duplicate up to spaces
        r.route(
            [{"role": "system", "content": "Be terse."}, {"role": "user", "content": MEDIUM[0]}], query_id="sys"
        )  # distinct: a system prompt makes it another conversation
        log.setLevel(logging.DEBUG)  # adds "attempt" events
        r.route(COMPLEX[0], query_id="dup-debug")
        log.setLevel(logging.INFO)
        router(pol, log_prompts=False).route("What is never logged?", query_id="no-prompt")
        log.info("plain text line, not JSON")
        log.info(json.dumps({"event": "route", "query_id": "bad", "messages": [{"role": "assistant", "content": "x"}]}))
        handler.flush()
        with path.open("a", encoding="utf-8") as f:
            f.write("\n{not json at all\n")
        yield path
    finally:
        log.removeHandler(handler)
        handler.close()
        log.setLevel(old_level)


def test_reads_the_routers_own_lines(route_log: Path) -> None:
    routes = read_route_logs(route_log)
    st = routes.stats
    # 21 + 3 distinct-or-dup routes + 1 debug route + no-prompt + bad = 27 route records
    assert st.routes == 27
    assert st.without_messages == 1
    assert st.unusable == 1 and "messages[0].role" in st.problems[0] and f"{route_log}:" in st.problems[0]
    assert st.other_events >= 1  # the attempt record(s)
    assert st.not_json == 2  # the plain text line and "{not json at all"
    assert st.lines == st.routes + st.other_events + st.not_json
    assert len(routes) == 25
    by_id = {r.query_id: r for r in routes}
    assert by_id["q0"].complexity == "simple" and by_id["q0"].tier == "cheap" and by_id["q0"].model == MINI
    assert by_id["q12"].complexity == "medium"
    assert by_id["q18"].complexity == "complex" and by_id["q18"].tier == "premium"
    assert by_id["sys"].messages[0] == {"role": "system", "content": "Be terse."}
    prefixed = route_log.read_text(encoding="utf-8").splitlines()[0]
    assert " INFO routerlab.router {" in prefixed  # the prefix form was really read


def test_dedup_and_stratification(route_log: Path) -> None:
    routes = read_route_logs(route_log)
    items, rep = sample_evalset(routes, size=10, seed=1)
    assert rep.conversations == 25 and rep.duplicates_removed == 3
    assert dict(rep.available) == {"simple": 12, "medium": 7, "complex": 3}  # 7: six plus the system variant
    assert rep.distinct == 22 and rep.total_sampled == len(items) == 10
    got = Counter(it.meta["complexity"] for it in items)
    assert dict(got) == dict(rep.sampled)
    for c, n in rep.available.items():
        assert abs(got[c] - 10 * n / 22) < 1  # within rounding
    assert len({it.id for it in items}) == 10
    dup = next(it for it in _all(routes) if it.prompt == SIMPLE[0])
    assert dup.meta["occurrences"] == 2 and dup.meta["query_id"] == "q0" and dup.meta["source"] == "logs"
    spaced = next(it for it in _all(routes) if it.prompt == SIMPLE[1])
    assert spaced.meta["occurrences"] == 2  # the whitespace variant counted as the same conversation
    assert next(it for it in _all(routes) if it.prompt == COMPLEX[0]).meta["logged_tier"] == "premium"


def _all(routes: RouteLogs) -> list[Any]:
    items, _ = sample_evalset(routes, size=10_000)
    return items


def test_seeded_stable_ids_and_order_independent(route_log: Path) -> None:
    routes = read_route_logs(route_log)
    a, _ = sample_evalset(routes, size=8, seed=3)
    b, _ = sample_evalset(routes, size=8, seed=3)
    assert a == b
    shuffled = RouteLogs(list(reversed(routes)), routes.stats)
    c, _ = sample_evalset(shuffled, size=8, seed=3)
    assert [it.id for it in c] == [it.id for it in a]  # the draw ignores line order
    seeds = {tuple(it.id for it in sample_evalset(routes, size=8, seed=s)[0]) for s in range(6)}
    assert len(seeds) > 1
    everything = _all(routes)
    assert all(it.id.startswith("log-") and len(it.id) == 16 for it in everything)
    again = {it.prompt: it.id for it in _all(read_route_logs(route_log))}
    assert {it.prompt: it.id for it in everything} == again


def test_small_classes_get_one_and_allocation() -> None:
    assert allocate({"simple": 12, "medium": 7, "complex": 3}, 3) == {"simple": 1, "medium": 1, "complex": 1}
    assert allocate({"simple": 98, "medium": 1, "complex": 1}, 10) == {"simple": 8, "medium": 1, "complex": 1}
    assert allocate({"simple": 98, "medium": 1, "complex": 1}, 2) == {"simple": 2, "medium": 0, "complex": 0}
    assert allocate({"simple": 5, "medium": 0, "complex": 2}, 100) == {"simple": 5, "medium": 0, "complex": 2}
    assert sum(allocate({"simple": 7, "medium": 7, "complex": 7}, 10).values()) == 10
    with pytest.raises(DataError, match="at least 1"):
        allocate({"simple": 1}, 0)


def test_policy_classifier_overrides_logged_class(route_log: Path) -> None:
    routes = read_route_logs(route_log)
    everything_complex = ClassifierSettings(complex_min_words=1)
    _, rep = sample_evalset(routes, size=5, classifier=everything_complex)
    assert dict(rep.available) == {"simple": 0, "medium": 0, "complex": 22}
    assert "policy's classifier" in rep.summary()


def test_summary_table(route_log: Path) -> None:
    _, rep = sample_evalset(read_route_logs(route_log), size=10, seed=1)
    text = rep.summary()
    assert f"read {rep.lines} lines from {route_log}: 27 route records" in text
    assert PROMPT_LOGGING_HINT in text and "skipped: 1 route record(s) without messages" in text
    assert "3 duplicates removed -> 22 distinct" in text
    assert "skipped: 2 line(s) that are not JSON" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.startswith("  ")}
    assert rows["simple"] == [str(rep.available["simple"]), str(rep.sampled["simple"])]
    assert rows["total"] == ["22", "10"]
    _, big = sample_evalset(read_route_logs(route_log), size=100)
    assert "asked for 100; the logs hold only 22" in big.summary()


def test_write_study_loads_and_refuses_overwrite(route_log: Path, tmp_path: Path) -> None:
    items, _ = sample_evalset(read_route_logs(route_log), size=6)
    pol_path = tmp_path / "ladder.json"
    dump_policy(policy_from_dict(policy_dict()), pol_path)
    root = tmp_path / "ws"
    path = write_study_evalset(items, pol_path, name="week1", root=root)
    assert path == root / "data" / "imported" / "week1" / "evalset.jsonl"
    assert load_evalset(path) == items
    assert load_policy(path.parent / "ladder-policy.json") == load_policy(pol_path)
    with pytest.raises(DataError, match="already exists"):
        write_study_evalset(items[:2], None, name="week1", root=root)
    assert len(load_evalset(path)) == 6  # untouched
    write_study_evalset(items[:2], None, name="week1", root=root, force=True)
    assert load_evalset(path) == items[:2]
    with pytest.raises(DataError, match="study name"):
        write_study_evalset(items, None, name="../escape", root=root)
    with pytest.raises(DataError, match="no items"):
        write_study_evalset([], None, name="empty", root=root)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="routerlab data")
    add_from_logs_parser(parser.add_subparsers(dest="data_command"))
    return parser.parse_args(argv)


def test_cli(route_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pol_path = tmp_path / "ladder.json"
    dump_policy(policy_from_dict(policy_dict()), pol_path)
    root = tmp_path / "ws"
    args = _parse(["from-logs", str(route_log), "--size", "9", "--seed", "2", "--policy", str(pol_path)]
                  + ["--study", "wk", "--root", str(root)])  # fmt: skip
    assert args.func is from_logs_command
    assert from_logs_command(args) == 0
    out = capsys.readouterr().out
    evalset = root / "data" / "imported" / "wk" / "evalset.jsonl"
    assert len(load_evalset(evalset)) == 9
    assert (evalset.parent / "ladder-policy.json").is_file()
    assert "class" in out and "available" in out and "sampled" in out
    assert (
        f"next: routerlab record --evalset {evalset} --policy {evalset.parent / 'ladder-policy.json'} "
        f"--out {root / 'cassettes' / 'wk'}"
    ) in out
    assert "routerlab sweep wk --root" in out
    # a second run into the same study is refused unless --force
    with pytest.raises(DataError, match="already exists"):
        from_logs_command(_parse(["from-logs", str(route_log), "--size", "3", "--study", "wk", "--root", str(root)]))
    assert from_logs_command(_parse(["from-logs", str(route_log), "--size", "3", "--study", "wk", "--root",
                                     str(root), "--force"])) == 0  # fmt: skip
    assert len(load_evalset(evalset)) == 3
    out = capsys.readouterr().out
    assert "--policy POLICY.json" in out and "no --policy given" in out
    # default study name: the log file's stem; two log files are read together
    assert from_logs_command(_parse(["from-logs", str(route_log), str(route_log), "--size", "4", "--root",
                                     str(root)])) == 0  # fmt: skip
    assert "lines from " in capsys.readouterr().out
    assert len(load_evalset(root / "data" / "imported" / "router" / "evalset.jsonl")) == 4


def test_cli_argument_errors(route_log: Path) -> None:
    with pytest.raises(SystemExit):
        _parse(["from-logs", str(route_log), "--size", "0"])
    with pytest.raises(SystemExit):
        _parse(["from-logs", str(route_log)])  # --size is required


def test_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.log"
    with pytest.raises(DataError, match=f"{missing}.*cannot read log file"):
        read_route_logs(missing)
    latin = tmp_path / "latin1.log"
    latin.write_bytes(b'{"event": "route", "messages": [{"role": "user", "content": "caf\xe9"}]}\n')
    with pytest.raises(DataError, match=f"{latin}.*not UTF-8 text: byte 0xe9 on line 1"):
        read_route_logs(latin)
    off = tmp_path / "off.log"
    off.write_text('INFO routerlab.router {"event": "route", "query_id": "a", "complexity": "simple"}\n', "utf-8")
    routes = read_route_logs(off)
    assert routes == [] and routes.stats.without_messages == 1
    with pytest.raises(DataError, match=f"{off}: no logged route.*log_prompts=True"):
        sample_evalset(routes, size=3)


def test_plain_list_of_routes_is_accepted(route_log: Path) -> None:
    routes = list(read_route_logs(route_log))
    items, rep = sample_evalset(routes, size=4)
    assert len(items) == 4 and rep.lines == rep.routes == 25
