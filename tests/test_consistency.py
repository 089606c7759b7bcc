"""Tests for routerlab.consistency and routerlab.rouge (exact parity with rouge-score)."""

from __future__ import annotations

import difflib
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from routerlab.consistency import (
    DEFAULT_ANSWER_PATTERN,
    SIMILARITY_NAMES,
    agreement,
    answer_similarity_fn,
    difflib_similarity,
    extract_answer,
    get_similarity,
    normalize_answer,
    rougel_similarity,
)
from routerlab.rouge import lcs_length, rouge_l_f, tokenize

REPO = Path(__file__).resolve().parents[1]
ALPACA = Path("tatsu-lab/alpaca_eval/cd543a149df89434d8a54582c0151c0b945c3d20/results")
MODEL_A, MODEL_B = "gpt4_1106_preview", "gpt-4o-mini-2024-07-18"

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def reference_rouge_l(a: str, b: str) -> float:
    return float(SCORER.score(a, b)["rougeL"].fmeasure)


PAIRS: list[tuple[str, str]] = [
    ("The cat is running.", "A cat runs!"),
    ("running", "runs"),
    ("running runs ran", "run"),
    ("The studies were studied", "study studying studies"),
    ("generously happily connected", "generous happy connect"),
    ("dogs cats", "dog cat"),
    ("ran", "running"),
    ("HELLO World", "hello world"),
    ("", "anything at all"),
    ("anything at all", ""),
    ("", ""),
    ("!!! ??? ...", "..."),
    ("!!! ??? ...", "words here"),
    ("Café naïve résumé — 東京", "cafe naive resume tokyo"),
    ("Straße İstanbul ǅemal", "strasse istanbul dzemal"),
    ("emoji 🎉 party 🎉 time", "party time 🎉"),
    ("Version 3.14.15 released in 2024", "version 3 14 15 release 2024"),
    ("1,000,000 dollars", "1000000 dollars"),
    ("a b a b a b", "b a b a"),
    ("line one\nline two\ttab", "line  two one"),
    ("snake_case_name", "snake case name"),
    ("don't can't won't", "dont cant wont"),
    ("The quick brown fox jumps over the lazy dog", "The quick brown dog jumps over the lazy fox"),
    ("x", "y"),
    ("Paris is the capital of France.", "The capital of France is Paris."),
    (
        "To make tea, boil water, steep the leaves for three minutes, then pour.",
        "Boiling the water first; steeping leaves three minutes; pouring afterwards makes tea.",
    ),
    ("relational relate relativity", "relation relating relatives"),
    ("agreed agreement agreeing", "agree"),
    ("It was his bus; it has its own", "was this bus his? yes it has"),
]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_rougel_equals_rouge_score_exactly(a: str, b: str) -> None:
    assert rougel_similarity(a, b) == reference_rouge_l(a, b)
    assert rougel_similarity(b, a) == reference_rouge_l(b, a)
    assert rouge_l_f(a, b) == reference_rouge_l(a, b)


def test_rougel_known_values() -> None:
    assert rougel_similarity("running", "runs") == 1.0  # both stem to "run"
    assert rougel_similarity("HELLO World", "hello world") == 1.0
    assert rougel_similarity("", "x") == 0.0 and rougel_similarity("", "") == 0.0
    assert rougel_similarity("!!!", "!!!") == 0.0  # no tokens at all
    assert rougel_similarity("x", "y") == 0.0
    # LCS 2 of 3 and 4 tokens: P=2/4, R=2/3
    assert rougel_similarity("a b c", "a x b y") == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))


def test_tokenize_matches_rouge_score_tokenizer() -> None:
    tok = SCORER._tokenizer  # the exact tokenizer RougeScorer uses
    for a, b in PAIRS:
        for text in (a, b):
            assert list(tokenize(text)) == tok.tokenize(text)
    assert tokenize("The cats were running, fast!") == ("the", "cat", "were", "run", "fast")
    assert tokenize("ran ran") == ("ran", "ran")
    assert tokenize("was has its bus") == ("was", "has", "its", "bus")  # three letters or fewer: not stemmed
    assert tokenize("wasn't") == ("wasn", "t")


def test_lcs_length() -> None:
    assert lcs_length(("a", "b", "c", "d"), ("b", "d")) == 2
    assert lcs_length(("a", "b"), ("c",)) == 0
    assert lcs_length((), ("a",)) == 0
    assert lcs_length(("x", "y", "x"), ("y", "x", "y", "x")) == 3


def _find_mirror() -> Path | None:
    env = os.environ.get("ROUTERLAB_MIRROR")
    if env:
        return Path(env) if Path(env).is_dir() else None
    fallback = REPO.parent / "shared" / "datasets" / "github"
    return fallback if fallback.is_dir() else None


@pytest.fixture(scope="module")
def real_pairs() -> list[tuple[str, str]]:
    mirror = _find_mirror()
    if mirror is None:
        pytest.skip(
            "no dataset mirror: set ROUTERLAB_MIRROR or provide "
            f"{REPO.parent / 'shared' / 'datasets' / 'github'} (alpaca_eval results)"
        )
    files = [mirror / ALPACA / m / "model_outputs.json" for m in (MODEL_A, MODEL_B)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        pytest.skip(f"alpaca_eval model outputs not in the mirror: {', '.join(missing)}")
    a, b = (json.loads(f.read_text(encoding="utf-8")) for f in files)
    by_instruction = {row["instruction"]: row["output"] for row in b}
    pairs = [(row["output"], by_instruction[row["instruction"]]) for row in a if row["instruction"] in by_instruction]
    assert len(pairs) >= 200, f"only {len(pairs)} paired answers"
    return pairs[:200]


def test_rougel_equals_rouge_score_on_200_real_answer_pairs(real_pairs: list[tuple[str, str]]) -> None:
    assert len(real_pairs) == 200
    mismatches = [
        (i, ours, ref)
        for i, (a, b) in enumerate(real_pairs)
        if (ours := rougel_similarity(a, b)) != (ref := reference_rouge_l(a, b))
    ]
    assert mismatches == []
    # the pairs are varied, not trivially equal or disjoint
    scores = {rougel_similarity(a, b) for a, b in real_pairs}
    assert len(scores) > 150 and min(scores) < 0.3


def test_difflib_on_real_pairs_matches_sequence_matcher(real_pairs: list[tuple[str, str]]) -> None:
    # all 200 pairs: most are far beyond 200 characters, where difflib's autojunk heuristic applies
    assert sum(len(b) > 200 for _a, b in real_pairs) > 100
    for a, b in real_pairs:
        assert difflib_similarity(a, b) == difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def test_the_dev_install_compares_with_cydifflib_and_it_agrees_with_difflib_on_random_texts() -> None:
    from routerlab.consistency import _matcher

    cyd = pytest.importorskip("cydifflib")  # the workbench extra installs it; the lean router does without
    assert _matcher() is cyd.SequenceMatcher
    seed = 4242
    print(f"seed {seed}")
    rng = random.Random(seed)
    words = ["the", "date", "is", "05/23/1943", "so", "yesterday", "was", "answer", ":", "(A)", "\n", " "]
    for _ in range(300):
        a, b = ("".join(rng.choices(words, k=rng.randint(0, 150))) for _ in range(2))
        if rng.random() < 0.3:
            b = a[: rng.randint(0, len(a))] + b  # shared prefixes: long matching blocks
        assert cyd.SequenceMatcher(None, a, b).ratio() == difflib.SequenceMatcher(None, a, b).ratio(), (a, b)


# ---------------------------------------------------------------- difflib


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_difflib_matches_sequence_matcher_on_lowercased_input(a: str, b: str) -> None:
    assert difflib_similarity(a, b) == difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def test_difflib_is_case_insensitive() -> None:
    assert difflib_similarity("PARIS", "paris") == 1.0
    assert difflib.SequenceMatcher(None, "PARIS", "paris").ratio() == 0.0  # the lower-casing matters
    assert difflib_similarity("abc", "xyz") == 0.0
    assert difflib_similarity("abcd", "abxy") == 0.5


# ---------------------------------------------------------------- answers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Let me work it out.\nThe date is in May.\nA: 05/01/2021", "05/01/2021"),
        ("Q: when?\nA: 05/01/2021\n", "05/01/2021"),
        ("The answer is 42.", "42"),
        ("So the final answer is: Paris!", "paris"),
        ("I think the answer is   B", "b"),
        ("Answer: **Paris**", "paris"),
        ("Final answer: (B)", "b"),
        ("  answer :  `x = 3`  ", "x = 3"),
        ("A: 3.14", "3.14"),
        ("Answer: first\nmore reasoning\nAnswer: second", "second"),  # the last match wins
        ("The answer is 7.\nAnswer: 8", "8"),  # an answer line beats "the answer is"
        ("The answer is 7.\nNo wait, the answer is 9.", "9"),  # the last one
        ("Some reasoning.\n\nParis.\n\n", "paris"),  # last non-empty line
        ("single line", "single line"),
        ("", ""),
        ("   \n  \n", ""),
        ("Area: 12\nA: **Twelve**.", "twelve"),  # "Area:" is not "A:"
    ],
)
def test_extract_answer(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


def test_extract_answer_with_custom_patterns() -> None:
    assert extract_answer("RESULT=17 ok", r"RESULT=(\d+)") == "17"  # group 1
    assert extract_answer("x ans=Foo. y ans=Bar.", r"ans=(?P<answer>\w+)") == "bar"  # named group, last match
    assert extract_answer("1 then 2", r"\d+") == "2"  # no group: the whole match
    # no match of the pattern: "the answer is", then the last line
    assert extract_answer("the answer is Rome", r"RESULT=(\d+)") == "rome"
    assert extract_answer("first\nlast line.", r"RESULT=(\d+)") == "last line"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  The   Answer.  ", "the answer"),
        ("**Paris**", "paris"),
        ("'Paris'.", "paris"),
        ('"Paris"', "paris"),
        ("`x`", "x"),
        ("42!!!", "42"),
        ("42...", "42"),
        ("3.14", "3.14"),
        ("东京。", "东京"),
        ("[A]", "a"),
        ("(B).", "b"),
        ("Hello\n\tWorld", "hello world"),
        ("", ""),
        ("...", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_answer_similarity() -> None:
    sim = get_similarity("answer")
    assert sim("Reasoning...\nA: Paris", "answer: paris.") == 1.0
    assert sim("The answer is 42.", "Answer: **42**") == 1.0
    assert sim("A: Paris", "A: London") == 0.0
    assert sim("", "") == 0.0  # two empty answers do not agree
    assert sim("\n\n", "   ") == 0.0
    custom = get_similarity("answer", answer_pattern=r"RESULT=(\d+)")
    assert custom("RESULT=3 because", "so RESULT=3") == 1.0
    assert custom("RESULT=3", "RESULT=4") == 0.0
    assert answer_similarity_fn()("A: x", "A: X") == 1.0
    assert isinstance(sim("A: 1", "A: 1"), float)


def test_get_similarity_names() -> None:
    assert SIMILARITY_NAMES == ("answer", "difflib", "rougeL")
    assert get_similarity("difflib") is difflib_similarity
    assert get_similarity("rougeL") is rougel_similarity
    assert get_similarity("answer", answer_pattern=DEFAULT_ANSWER_PATTERN)("A: 1", "A: 1") == 1.0


@pytest.mark.parametrize("name", ["cosine", "rougel", "Difflib", ""])
def test_get_similarity_unknown_name(name: str) -> None:
    with pytest.raises(ValueError) as ei:
        get_similarity(name)
    msg = str(ei.value)
    assert repr(name) in msg and "answer, difflib, rougeL" in msg


# ---------------------------------------------------------------- agreement and log-probabilities


def test_agreement_k2_is_the_pair_similarity() -> None:
    a, b = "The capital is Paris", "Paris is the capital"
    assert agreement([a, b], difflib_similarity) == difflib_similarity(a, b)
    assert agreement([a, b], rougel_similarity) == rougel_similarity(a, b)
    assert agreement(("A: 1", "A: 1"), get_similarity("answer")) == 1.0


def test_agreement_k3_is_mean_similarity_of_first_to_others() -> None:
    calls: list[tuple[str, str]] = []

    def sim(x: str, y: str) -> float:
        calls.append((x, y))
        return {"b": 0.2, "c": 0.6}[y]

    assert agreement(["a", "b", "c"], sim) == pytest.approx(0.4)
    assert calls == [("a", "b"), ("a", "c")]  # never b vs c

    answer = get_similarity("answer")
    assert agreement(["A: 1", "A: 1", "A: 2"], answer) == 0.5
    assert agreement(["A: 2", "A: 1", "A: 1"], answer) == 0.0  # the others agree, but not with the first
    texts = ["the cat sat", "the cat sat down", "a dog ran"]
    expected = (difflib_similarity(texts[0], texts[1]) + difflib_similarity(texts[0], texts[2])) / 2
    assert agreement(texts, difflib_similarity) == expected


@pytest.mark.parametrize("samples", [[], ["only one"]])
def test_agreement_needs_two_samples(samples: Sequence[str]) -> None:
    with pytest.raises(ValueError, match="at least two"):
        agreement(samples, difflib_similarity)


def test_tokenize_is_safe_when_threads_overflow_the_stem_cache(
    real_pairs: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stem cache is cleared when full; a thread must never see its own fresh entries vanish."""
    import threading

    from routerlab import rouge

    texts = [t for pair in real_pairs[:60] for t in pair]
    want = [SCORER._tokenizer.tokenize(t) for t in texts]
    monkeypatch.setattr(rouge, "_STEMS_MAX", 50)  # clear all the time
    errors: list[BaseException] = []
    got: dict[int, list[tuple[str, ...]]] = {}

    def work(n: int) -> None:
        try:
            out = []
            for t in texts:
                rouge.tokenize.cache_clear()
                out.append(rouge.tokenize(t))
            got[n] = out
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rouge.clear_caches()
    assert errors == []
    assert all([list(x) for x in got[n]] == want for n in range(6))
