"""Tests for routerlab.classifier: the seed article's keyword and length rules."""

from __future__ import annotations

import pytest

from routerlab.classifier import (
    COMPLEXITY_CLASSES,
    DEFAULT_COMPLEX_PATTERNS,
    DEFAULT_SIMPLE_PATTERNS,
    ClassifierSettings,
    Complexity,
    classify_complexity,
)

SUMMARIZE, WHAT_IS = DEFAULT_SIMPLE_PATTERNS
ANALYZE, IMPLEMENT, WHY = DEFAULT_COMPLEX_PATTERNS


def words(n: int, lead: str = "") -> str:
    """A query of exactly ``n`` whitespace-separated words; ``lead`` (one word) comes first."""
    filler = ["word"] * (n - (1 if lead else 0))
    return " ".join(([lead] if lead else []) + filler)


def test_classes_in_order() -> None:
    assert COMPLEXITY_CLASSES == ("simple", "medium", "complex")
    assert [c.value for c in Complexity] == list(COMPLEXITY_CLASSES)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Compare X and Y", "complex"),
        ("Analyze this sales report", "complex"),
        ("Please evaluate my essay", "complex"),
        ("critique the plan", "complex"),
        ("Synthesize these findings", "complex"),
        ("Let's debate it", "complex"),
        ("Implement a trie in Rust", "complex"),
        ("Write a function that reverses a list", "complex"),  # complex wins over the simple "list"
        ("Refactor this module", "complex"),
        ("Design a cache", "complex"),
        ("Architect a data platform", "complex"),
        ("Why does the sky look blue?", "complex"),
        ("How would you scale this?", "complex"),
        ("What are the tradeoffs of SQL vs NoSQL?", "complex"),
        ("Summarize this paragraph", "simple"),
        ("Classify the sentiment: great movie", "simple"),
        ("Translate 'hello' to French", "simple"),
        ("Extract the dates", "simple"),
        ("List three colors", "simple"),
        ("Format this as JSON", "simple"),
        ("Convert 5 km to miles", "simple"),
        ("What is the capital of France?", "simple"),
        ("Define entropy", "simple"),
        ("Who is Ada Lovelace?", "simple"),
        ("When did WW2 end?", "simple"),
        ("Spell necessary", "simple"),
        ("Tell me a joke about cats", "medium"),
        ("Hello there", "medium"),
        ("", "medium"),
        ("   \n\t ", "medium"),
    ],
)
def test_seed_rules(query: str, expected: str) -> None:
    c = classify_complexity(query)
    assert c.value == expected
    assert c.complexity == Complexity(expected)


def test_length_rule_boundary_120_121() -> None:
    at_120 = classify_complexity(words(120))
    assert at_120.word_count == 120 and at_120.complexity is Complexity.MEDIUM
    at_121 = classify_complexity(words(121))
    assert at_121.word_count == 121 and at_121.complexity is Complexity.COMPLEX
    assert at_121.complex_hits == () and at_121.reason == "121 words >= 121"
    # a long query with a simple keyword is still complex
    long_simple = classify_complexity(words(130, lead="Summarize"))
    assert long_simple.complexity is Complexity.COMPLEX and long_simple.simple_hits == (SUMMARIZE,)


def test_length_rule_boundary_49_50() -> None:
    at_49 = classify_complexity(words(49, lead="Summarize"))
    assert at_49.word_count == 49 and at_49.complexity is Complexity.SIMPLE
    at_50 = classify_complexity(words(50, lead="Summarize"))
    assert at_50.word_count == 50 and at_50.complexity is Complexity.MEDIUM
    assert at_50.simple_hits == (SUMMARIZE,)  # the pattern matched, the length ruled it out


def test_simple_pattern_with_60_words_is_medium() -> None:
    c = classify_complexity(words(60, lead="Translate"))
    assert c.word_count == 60
    assert c.complexity is Complexity.MEDIUM
    assert c.reason == "no complex signal and no short simple match"


def test_complex_pattern_wins_at_any_length() -> None:
    assert classify_complexity("Compare").complexity is Complexity.COMPLEX
    assert classify_complexity(words(10, lead="compare")).complexity is Complexity.COMPLEX
    assert classify_complexity(words(200, lead="compare")).complexity is Complexity.COMPLEX


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("listing", "medium"),  # \blist\b does not match inside "listing"
        ("list", "simple"),
        ("Make a listing of pets", "medium"),
        ("summarized already", "medium"),
        ("the translator is here", "medium"),
        ("whatis this", "medium"),
        ("what\tis this", "medium"),  # the phrase needs a literal space
        ("a designer chair", "medium"),  # not "design"
        ("redesign nothing", "medium"),
        ("comparison shopping", "medium"),  # not "compare"
        ("implementation notes", "medium"),
        ("list, please", "simple"),  # punctuation is a boundary
        ("(translate) this", "simple"),
        ("re-design it", "complex"),  # the hyphen is a boundary
        ("why doesn't it work", "medium"),  # "why does" needs the whole word "does"
    ],
)
def test_word_boundaries(query: str, expected: str) -> None:
    assert classify_complexity(query).value == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("COMPARE apples and oranges", "complex"),
        ("cOmPaRe apples and oranges", "complex"),
        ("WHAT IS the time?", "simple"),
        ("wHaT iS the time?", "simple"),
        ("SUMMARIZE this", "simple"),
        ("WHY DOES it rain", "complex"),
    ],
)
def test_case_insensitive(query: str, expected: str) -> None:
    assert classify_complexity(query).value == expected


def test_signals_are_returned() -> None:
    c = classify_complexity("  Summarize and then compare these two reports  ")
    assert c.complexity is Complexity.COMPLEX
    assert c.word_count == 7  # surrounding whitespace ignored
    assert c.simple_hits == (SUMMARIZE,)
    assert c.complex_hits == (ANALYZE,)
    assert c.reason == f"matched complex pattern {ANALYZE!r}"

    c = classify_complexity("Implement a design, then analyze why does it fail")
    assert c.complex_hits == (ANALYZE, IMPLEMENT, WHY)  # in pattern order
    assert c.simple_hits == ()
    assert c.reason == f"matched complex pattern {ANALYZE!r}"

    c = classify_complexity("What is a monad? Define it and list examples.")
    assert c.complexity is Complexity.SIMPLE and c.word_count == 9
    assert c.simple_hits == (SUMMARIZE, WHAT_IS) and c.complex_hits == ()
    assert c.reason == f"matched simple pattern {SUMMARIZE!r} and 9 words <= 49"

    c = classify_complexity("tell\nme   a\tstory")
    assert c.word_count == 4 and c.simple_hits == () and c.complex_hits == ()
    assert c.complexity is Complexity.MEDIUM


def test_default_settings_are_the_seed_values() -> None:
    s = ClassifierSettings()
    assert s.complex_min_words == 121 and s.simple_max_words == 49
    assert s.simple_patterns == DEFAULT_SIMPLE_PATTERNS and s.complex_patterns == DEFAULT_COMPLEX_PATTERNS
    q = words(49, lead="list")
    assert classify_complexity(q, None) == classify_complexity(q, s) == classify_complexity(q)


def test_custom_settings_change_the_result() -> None:
    s = ClassifierSettings(
        simple_patterns=(r"\bping\b",),
        complex_patterns=(r"\bproof\b",),
        complex_min_words=10,
        simple_max_words=3,
    )
    assert classify_complexity("ping me now", s).complexity is Complexity.SIMPLE
    assert classify_complexity("ping me now please", s).complexity is Complexity.MEDIUM  # 4 words > 3
    assert classify_complexity("Summarize this", s).complexity is Complexity.MEDIUM  # default pattern gone
    assert classify_complexity("Summarize this").complexity is Complexity.SIMPLE
    assert classify_complexity("Compare X and Y", s).complexity is Complexity.MEDIUM
    assert classify_complexity("Write a PROOF", s).complexity is Complexity.COMPLEX  # still case-insensitive
    ten = classify_complexity(words(10), s)
    assert ten.complexity is Complexity.COMPLEX and ten.reason == "10 words >= 10"
    assert classify_complexity(words(9), s).complexity is Complexity.MEDIUM


def test_query_is_stripped_before_matching() -> None:
    s = ClassifierSettings(simple_patterns=(r"^ping$",), complex_patterns=(r"^deep dive$",))
    assert classify_complexity("  ping \n", s).complexity is Complexity.SIMPLE
    assert classify_complexity("\tdeep dive  ", s).complexity is Complexity.COMPLEX


def test_custom_settings_without_patterns() -> None:
    s = ClassifierSettings(simple_patterns=(), complex_patterns=())
    c = classify_complexity("Compare X and Y, then summarize", s)
    assert c.complexity is Complexity.MEDIUM and c.simple_hits == () and c.complex_hits == ()


def test_simple_max_words_zero_never_simple() -> None:
    s = ClassifierSettings(simple_max_words=0)
    assert classify_complexity("list", s).complexity is Complexity.MEDIUM
