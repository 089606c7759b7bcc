"""Scorers: named answer extractors, exact match with the eval set's extractor, plugin scorers, the mixed
scorer, choosing a scorer (three distinct messages) and the outcome table following the answer pattern."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from test_outcomes import POLICY  # the two-tier ladder the outcome-table tests record

from routerlab.consistency import (
    ANSWER_EXTRACTORS,
    DEFAULT_ANSWER_PATTERN,
    check_answer_pattern,
    extract_answer,
    get_similarity,
    gold_answer,
)
from routerlab.data.cassettes import record
from routerlab.data.evalset import EvalItem
from routerlab.errors import ConfigError, PolicyError, WorkbenchError
from routerlab.fakes import FakeProviders
from routerlab.policy import policy_from_dict
from routerlab.workbench.outcomes import build_outcomes
from routerlab.workbench.scoring import (
    applicable_scorers,
    degenerate_scorer,
    get_scorer,
    register_scorer,
    resolve_scorer,
    scorer_coverage,
    scorer_fingerprint,
    scorer_names,
)

MODELS = ["gpt-4o-mini", "claude-3-5-sonnet-20240620"]


def item(i: int, **kw: Any) -> EvalItem:
    return EvalItem.from_prompt(f"q{i}", f"question {i}?", **kw)


# ---------------------------------------------------------------- named extractors


@pytest.mark.parametrize(
    ("text", "pattern", "expected"),
    [
        ("So \\boxed{\\frac{1}{2}}, no wait: \\boxed{18}.", "boxed", "18"),
        ("\\boxed{x^{2}+1}", "boxed", "x^{2}+1"),  # nested braces
        ("\\boxed{1,000}", "boxed", "1000"),  # numbers are canonical
        ("\\boxed{\\text{Paris}} is it", "boxed", "\\text{paris}"),
        ("no box here: 5", "boxed", ""),  # no fallback
        ("\\boxed{3", "boxed", ""),  # unclosed
        ("Total: $1,234.50.", "last_number", "1234.5"),
        ("-7 apples", "last_number", "-7"),
        ("step 2 gives 3.0", "last_number", "3"),
        ("no digits", "last_number", ""),
        ("Answer: C", "letter", "c"),
        ("The correct answer is (B).", "letter", "b"),
        ("**Final answer:** D", "letter", "d"),
        ("Between them I pick\nE\n", "letter", "e"),
        ("A dog runs", "letter", ""),  # the article is not an answer
        ("Answer: Clearly the second", "letter", ""),
        ("reasoning\nParis.\n\n", "final_line", "paris"),
        ("Answer: 18", "default", "18"),
        ("A: x\nA: Y", "default", "y"),
        ("nothing matches\nlast line", "default", "last line"),
    ],
)
def test_named_extractors(text: str, pattern: str, expected: str) -> None:
    assert extract_answer(text, pattern) == expected


def test_default_name_equals_the_default_regex() -> None:
    for text in ("Answer: **Paris**", "The answer is 7.\nNo wait, the answer is 9.", "a\nb.", "", "A: 3.14"):
        assert extract_answer(text, "default") == extract_answer(text, DEFAULT_ANSWER_PATTERN) == extract_answer(text)


def test_regexes_still_work_and_bad_patterns_are_config_errors() -> None:
    assert extract_answer("RESULT=17 ok", r"RESULT=(\d+)") == "17"
    assert ANSWER_EXTRACTORS == ("boxed", "default", "final_line", "last_number", "letter")
    for name in ANSWER_EXTRACTORS:
        check_answer_pattern(name)
    with pytest.raises(ConfigError, match="neither an extractor name"):
        check_answer_pattern("(unclosed")


def test_gold_answers_go_through_the_extractor() -> None:
    assert gold_answer("\\boxed{12}", "boxed") == "12"
    assert gold_answer("12", "boxed") == "12"  # a bare gold answer stays itself
    assert gold_answer("Answer: 12", DEFAULT_ANSWER_PATTERN) == "12"
    assert gold_answer("B) Paris", "letter") == "b"
    assert gold_answer("b", "letter") == "b"
    assert gold_answer("1,000", "last_number") == "1000"
    assert gold_answer("Paris.", DEFAULT_ANSWER_PATTERN) == "paris"


def test_answer_similarity_uses_the_named_extractor() -> None:
    sim = get_similarity("answer", answer_pattern="boxed")
    assert sim("so \\boxed{4}", "thus \\boxed{4.0}") == 1.0
    assert sim("so \\boxed{4}", "thus \\boxed{5}") == 0.0
    assert sim("no box", "no box") == 0.0  # nothing extracted: no agreement
    assert get_similarity("answer", answer_pattern="letter")("Answer: B", "(B)") == 1.0


def test_policy_accepts_extractor_names_and_names_the_field_for_bad_regexes() -> None:
    base: dict[str, Any] = {
        "schema_version": 1,
        "tiers": [{"name": "t", "provider": "openai", "model": "gpt-4o-mini", "base_url": "https://api.openai.com/v1"}],
    }
    for name in ANSWER_EXTRACTORS:
        p = policy_from_dict({**base, "confidence": {"answer_pattern": name}})
        assert p.confidence.answer_pattern == name
    with pytest.raises(PolicyError, match="confidence.answer_pattern") as ei:
        policy_from_dict({**base, "confidence": {"answer_pattern": "(unclosed"}})
    assert "not a valid regular expression" in str(ei.value) and "boxed" in str(ei.value)


# ---------------------------------------------------------------- exact with the eval set's extractor


BOXED_SET = [item(i, answer=f"\\boxed{{{i * 3}}}") for i in range(4)] + [item(4)]  # q4 has no gold answer


def test_exact_on_a_boxed_set_follows_the_extractor() -> None:
    texts = [f"Reasoning {i}... so the result is \\boxed{{{i * 3}}}." for i in range(5)]
    texts[1] = "I think \\boxed{99}"  # one wrong answer
    default = get_scorer("exact")
    boxed = get_scorer("exact", answer_pattern="boxed")
    assert [default(it, t, "m") for it, t in zip(BOXED_SET, texts, strict=True)] == [0.0, 0.0, 0.0, 0.0, None]
    scores = [boxed(it, t, "m") for it, t in zip(BOXED_SET, texts, strict=True)]
    assert scores == [1.0, 0.0, 1.0, 1.0, None]
    valued = [s for s in scores if s is not None]
    assert sum(valued) / len(valued) == 0.75  # the item without an answer is left out
    cov = scorer_coverage("exact", BOXED_SET, MODELS)
    assert cov.sentence == "4 of 5 items have a gold answer" and cov.applies
    assert cov.note is not None and "the other 1 item is left out" in cov.note


def test_exact_on_an_answer_line_set() -> None:
    items = [item(i, answer=f"Answer: {i + 10}") for i in range(3)]  # the gold itself is an answer line
    texts = ["Let me think.\nAnswer: 10", "Answer: 11.", "Answer: 99"]
    fn = get_scorer("exact")
    assert [fn(it, t, "m") for it, t in zip(items, texts, strict=True)] == [1.0, 1.0, 0.0]
    nums = get_scorer("exact", answer_pattern="last_number")
    assert nums(item(0, answer="1,000"), "so it costs $1000.00 in total", "m") == 1.0


def test_exact_with_a_letter_extractor() -> None:
    fn = get_scorer("exact", answer_pattern="letter")
    it = item(0, answer="C")
    assert fn(it, "Looking at the options...\nThe answer is (C).", "m") == 1.0
    assert fn(it, "Answer: B", "m") == 0.0


def test_get_scorer_refuses_a_bad_pattern() -> None:
    with pytest.raises(WorkbenchError, match="'exact'.*neither an extractor name"):
        get_scorer("exact", answer_pattern="(unclosed")


# ---------------------------------------------------------------- plugins


PLUGIN = """
def length_score(item, text, model):
    return min(len(text), 10) / 10

def patterned(item, text, model, *, answer_pattern="default"):
    return 1.0 if answer_pattern == "boxed" else 0.0

class Judge:
    @staticmethod
    def score(item, text, model):
        return 0.5

NOT_CALLABLE = 3
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    mod = tmp_path / "rl_test_plugin.py"
    mod.write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield mod
    sys.modules.pop("rl_test_plugin", None)


def test_plugin_scorer_from_module_function(plugin: Path) -> None:
    fn = get_scorer("rl_test_plugin:length_score")
    assert fn(item(0), "hello", "m") == 0.5
    assert get_scorer("rl_test_plugin:Judge.score")(item(0), "", "m") == 0.5
    assert get_scorer("rl_test_plugin:patterned", answer_pattern="boxed")(item(0), "", "m") == 1.0
    assert get_scorer("rl_test_plugin:patterned")(item(0), "", "m") == 0.0
    assert resolve_scorer("rl_test_plugin:length_score", [item(0)], MODELS) == "rl_test_plugin:length_score"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rl_no_such_module:f", "cannot import module 'rl_no_such_module'.*not installed"),
        ("rl_test_plugin:missing", "has no attribute 'missing'"),
        ("rl_test_plugin:Judge.nope", "has no attribute 'Judge.nope'"),
        ("rl_test_plugin:NOT_CALLABLE", "is a int, not a callable"),
        ("rl_test_plugin:", "package.module:function"),
        ("not a module:f", "package.module:function"),
    ],
)
def test_plugin_errors_are_clear(plugin: Path, spec: str, message: str) -> None:
    with pytest.raises(WorkbenchError, match=message):
        get_scorer(spec)


def test_plugin_fingerprint_follows_its_source(plugin: Path) -> None:
    before = scorer_fingerprint("rl_test_plugin:length_score")
    assert before.startswith("rl_test_plugin:length_score:")
    assert scorer_fingerprint("rl_test_plugin:length_score") == before
    plugin.write_text(PLUGIN.replace("return 0.5", "return 0.25"))  # only another function changes
    importlib.reload(sys.modules["rl_test_plugin"])
    assert scorer_fingerprint("rl_test_plugin:length_score") != before


def test_entry_point_scorers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rl_ep_mod.py").write_text("def score(item, text, model):\n    return 0.25\n")
    dist = tmp_path / "rl_ep_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rl-ep-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[routerlab.scorers]\nep_quarter = rl_ep_mod:score\nep_broken = rl_ep_mod:nope\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert {"ep_quarter", "ep_broken"} <= set(scorer_names())
        assert get_scorer("ep_quarter")(item(0), "x", "m") == 0.25
        fp = scorer_fingerprint("ep_quarter")
        assert fp.startswith("ep_quarter:")
        with pytest.raises(WorkbenchError, match="entry point 'rl_ep_mod:nope'"):
            get_scorer("ep_broken")
    finally:
        sys.modules.pop("rl_ep_mod", None)


def test_registered_scorers_take_answer_pattern_when_they_ask_for_it() -> None:
    def custom(item: EvalItem, text: str, model: str, *, answer_pattern: str = "x") -> float | None:
        return float(answer_pattern == "letter")

    register_scorer("wants_pattern", custom, replace=True)
    assert get_scorer("wants_pattern", answer_pattern="letter")(item(0), "", "m") == 1.0
    assert get_scorer("wants_pattern")(item(0), "", "m") == 0.0


# ---------------------------------------------------------------- mixed


def test_mixed_scores_each_item_by_what_it_carries() -> None:
    items = [
        item(0, answer="\\boxed{4}", reference="four"),  # answer wins over reference
        item(1, reference="the cat sat on the mat"),
        item(2, labels={"m": 10.0}),
        item(3),
    ]
    fn = get_scorer("mixed", answer_pattern="boxed")
    assert fn(items[0], "so \\boxed{4}", "m") == 1.0
    assert fn(items[1], "the cat sat on the mat", "m") == pytest.approx(1.0)
    assert 0.0 < (fn(items[1], "a cat sat", "m") or 0.0) < 1.0
    assert fn(items[2], "whatever", "m") == 1.0
    assert fn(items[2], "whatever", "other-model") is None
    assert fn(items[3], "anything", "m") is None
    cov = scorer_coverage("mixed", items, ["m"])
    assert (cov.n_scored, cov.n_items) == (3, 4)


# ---------------------------------------------------------------- choosing a scorer: three messages


def test_unknown_scorer_message_lists_names_and_plugin_syntax() -> None:
    with pytest.raises(WorkbenchError) as ei:
        resolve_scorer("bleu", [item(0, answer="1")], MODELS)
    msg = str(ei.value)
    assert "unknown scorer 'bleu'" in msg
    assert all(n in msg for n in ("exact", "label", "mixed", "rougeL")) and "package.module:function" in msg
    with pytest.raises(WorkbenchError, match="unknown scorer 'bleu'"):
        get_scorer("bleu")


def test_a_scorer_that_does_not_apply_says_why_with_coverage() -> None:
    refs = [item(i, reference=f"ref {i}") for i in range(3)]
    with pytest.raises(WorkbenchError) as ei:
        resolve_scorer("exact", refs, MODELS)
    msg = str(ei.value)
    assert "scorer 'exact' does not apply to this eval set: 0 of 3 items have a gold answer" in msg
    assert "rougeL (3 of 3 items have a reference)" in msg
    assert "unknown" not in msg
    with pytest.raises(WorkbenchError, match="0 of 3 items have a label for one of the models"):
        resolve_scorer("label", refs, MODELS)
    bare = [item(i) for i in range(2)]
    with pytest.raises(WorkbenchError, match="no built-in scorer applies.*package.module:function"):
        resolve_scorer("exact", bare, MODELS)
    with pytest.raises(
        WorkbenchError,
        match="no scorer applies to this eval set: 0 of 2 items have a gold answer, 0 a reference, 0 a label",
    ):
        resolve_scorer(None, bare, MODELS)


def test_no_hidden_coverage_rule() -> None:
    items = [item(i, answer=str(i)) for i in range(20)] + [item(i) for i in range(20, 25)]
    assert resolve_scorer("exact", items, MODELS) == "exact"
    assert resolve_scorer(None, items, MODELS) == "exact"
    assert scorer_coverage("exact", items, MODELS).sentence == "20 of 25 items have a gold answer"
    assert "exact" in applicable_scorers(items, MODELS)
    assert "exact" not in applicable_scorers(items, MODELS, min_coverage=0.9)  # only when asked for


def test_choice_without_a_name() -> None:
    answers = [item(i, answer="1") for i in range(3)]
    refs = [item(i, reference="r") for i in range(3)]
    labels = [item(i, labels={MODELS[0]: 5.0}) for i in range(3)]
    both = [item(i, answer="1", reference="r") for i in range(3)]
    assert resolve_scorer(None, answers, MODELS) == "exact"
    assert resolve_scorer(None, refs, MODELS) == "rougeL"
    assert resolve_scorer(None, labels, MODELS) == "label"
    assert resolve_scorer(None, both, MODELS) == "exact"  # one kind covers every item: no need to mix
    assert resolve_scorer(None, answers[:2] + refs[2:], MODELS) == "mixed"
    assert resolve_scorer(None, refs[:1] + labels[1:], MODELS) == "mixed"
    # "rougeL" sorts after "label" and "exact": the choice is never alphabetical
    assert resolve_scorer(None, refs + [item(9, labels={MODELS[0]: 5.0}, reference="r")], MODELS) == "rougeL"
    assert "mixed" in applicable_scorers(answers[:2] + refs[2:], MODELS)
    assert "mixed" not in applicable_scorers(answers, MODELS)


def _calls(q: list[list[float]]) -> pd.DataFrame:
    """A calls table: q[item][tier] single-call scores (plus a k2 row that must be ignored)."""
    rows = []
    for i, per_tier in enumerate(q):
        for t, v in enumerate(per_tier):
            rows.append({"item_id": f"q{i}", "tier_index": t, "variant": "single", "q_exact": v})
        rows.append({"item_id": f"q{i}", "tier_index": 0, "variant": "k2", "q_exact": 0.5})
    return pd.DataFrame(rows)


def test_degenerate_scorer() -> None:
    assert degenerate_scorer(_calls([[0.0, 1.0], [1.0, 1.0]]), "exact") is None
    zero = degenerate_scorer(_calls([[0.0, 0.0], [0.0, np.nan]]), "exact", answer_pattern=DEFAULT_ANSWER_PATTERN)
    assert zero is not None and "every answer scores 0 under scorer 'exact'" in zero
    assert "confidence.answer_pattern" in zero and "boxed" in zero
    same = degenerate_scorer(_calls([[1.0, 1.0], [0.0, 0.0], [0.5, 0.5]]), "exact")
    assert same is not None and "every tier scores the same on every item" in same and "3 items" in same
    none = degenerate_scorer(_calls([[np.nan, np.nan]]), "exact")
    assert none is not None and "no value" in none
    assert degenerate_scorer(_calls([[0.2], [0.7]]), "exact") is None  # one tier: nothing to compare
    with pytest.raises(WorkbenchError, match="no column 'q_rougeL'"):
        degenerate_scorer(_calls([[1.0, 0.0]]), "rougeL")


# ---------------------------------------------------------------- the outcome table follows the answer pattern


ITEMS = [item(i, answer=f"{i + 1}") for i in range(3)] + [item(3)]


@pytest.fixture
def boxed_cassettes(tmp_path: Path) -> Path:
    """Recorded answers in \\boxed{}: the cheap tier's single answer is wrong, its k=2 samples differ
    (wrong, right) and the mid tier is right; q3 has no gold answer."""
    policy = policy_from_dict(POLICY)
    fake = FakeProviders()
    for i in range(4):
        right, wrong = f"Work... \\boxed{{{i + 1}}}", f"Hmm \\boxed{{{i + 7}}}"
        fake.enqueue("gpt-4o-mini", wrong, wrong, right, input_tokens=10, output_tokens=4)
        fake.enqueue("claude-3-5-sonnet-20240620", right, input_tokens=10, output_tokens=4)
    cdir = tmp_path / "cassettes"
    record(
        ITEMS,
        policy,
        cdir,
        client=httpx.Client(transport=fake.transport()),
        progress=False,
        api_keys={"OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "sk-2"},
    )
    return cdir


def test_outcome_table_exact_follows_the_policy_answer_pattern(boxed_cassettes: Path, tmp_path: Path) -> None:
    policy, cdir = policy_from_dict(POLICY), boxed_cassettes
    cache = tmp_path / "cache"
    a = build_outcomes(ITEMS, policy, cdir, scorers=["exact"], cache_dir=cache, progress=False)
    single = a.calls[a.calls["variant"] == "single"]
    assert (single["q_exact"].dropna() == 0.0).all()  # the default pattern reads the last line: "work... \boxed{1}"
    msg = degenerate_scorer(a.calls, "exact", answer_pattern=policy.confidence.answer_pattern)
    assert msg is not None and "every answer scores 0" in msg

    boxed = policy_from_dict({**POLICY, "confidence": {**POLICY["confidence"], "answer_pattern": "boxed"}})
    b = build_outcomes(ITEMS, boxed, cdir, scorers=["exact"], cache_dir=cache, progress=False)
    assert b.key != a.key
    s = b.calls[b.calls["variant"] == "single"].set_index(["item_id", "tier_index"])["q_exact"]
    assert [s[(f"q{i}", 0)] for i in range(3)] == [0.0, 0.0, 0.0]
    assert [s[(f"q{i}", 1)] for i in range(3)] == [1.0, 1.0, 1.0]
    assert np.isnan(s[("q3", 0)]) and np.isnan(s[("q3", 1)])  # no gold answer: left out
    assert degenerate_scorer(b.calls, "exact", answer_pattern="boxed") is None
    k2 = b.calls[b.calls["variant"] == "k2"].set_index("item_id")
    assert (k2["agree_answer"] == 0.0).all()  # the two samples box different numbers
    samples = b.samples[(b.samples["variant"] == "k2") & (b.samples["item_id"] != "q3")]
    assert set(samples["q_exact"]) == {0.0, 1.0}
    assert resolve_scorer(None, ITEMS, MODELS, answer_pattern="boxed") == "exact"


def test_outcome_table_with_plugin_and_mixed_scorers(boxed_cassettes: Path, tmp_path: Path, plugin: Path) -> None:
    boxed = policy_from_dict({**POLICY, "confidence": {**POLICY["confidence"], "answer_pattern": "boxed"}})
    spec = "rl_test_plugin:length_score"
    o = build_outcomes(ITEMS, boxed, boxed_cassettes, scorers=[spec, "mixed"], cache_dir=tmp_path / "c", progress=False)
    assert o.scorers == [spec, "mixed"]
    assert (o.calls[f"q_{spec}"] == 1.0).all()  # every recorded text has 10+ characters
    single = o.calls[o.calls["variant"] == "single"].set_index(["item_id", "tier_index"])["q_mixed"]
    assert single[("q0", 1)] == 1.0 and single[("q0", 0)] == 0.0 and np.isnan(single[("q3", 1)])
    again = build_outcomes(
        ITEMS, boxed, boxed_cassettes, scorers=[spec, "mixed"], cache_dir=tmp_path / "c", progress=False
    )
    assert again.key == o.key and again.calls.equals(o.calls)  # read back from the Parquet cache
