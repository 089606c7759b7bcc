"""One JSON reader for every format: policies, eval sets and outputs files agree on BOMs, duplicate keys,
deep nesting and non-JSON numbers, and the one writer is atomic and leaves files readable by others."""

from __future__ import annotations

import json
import os
import random
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from routerlab import PolicyError, load_policy
from routerlab.data.evalset import load_evalset
from routerlab.data.importers import load_outputs
from routerlab.errors import DataError
from routerlab.jsonio import MAX_DEPTH, _too_deep, atomic_write_text

REPO = Path(__file__).resolve().parent.parent
POLICY = (REPO / "policies" / "example.json").read_text(encoding="utf-8")
EVAL_LINE = '{"id": "a", "prompt": "What is 2+2?", "answer": "4"}'
OUTPUT_LINE = '{"id": "a", "prompt": "What is 2+2?", "model": "gpt-4o-mini", "samples": ["4"]}'

# (loader, the error it raises, a good document)
FORMATS: dict[str, tuple[Callable[[Path], Any], type[Exception], str]] = {
    "policy": (load_policy, PolicyError, POLICY),
    "evalset": (load_evalset, DataError, EVAL_LINE + "\n"),
    "outputs": (load_outputs, DataError, OUTPUT_LINE + "\n"),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_byte_order_mark_is_accepted(fmt: str, tmp_path: Path) -> None:
    load, _, good = FORMATS[fmt]
    path = tmp_path / "f.json"
    path.write_bytes(b"\xef\xbb\xbf" + good.encode())
    assert load(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_key_given_twice_is_an_error(fmt: str, tmp_path: Path) -> None:
    load, err, good = FORMATS[fmt]
    path = tmp_path / "f.json"
    doc = good.rstrip("\n")
    twice = (
        doc[: doc.rindex("}")] + ', "id": "b"}'
        if fmt != "policy"
        else doc.replace('"name":', '"name": "x", "name":', 1)
    )
    path.write_text(twice + "\n", encoding="utf-8")
    with pytest.raises(err, match="duplicate key") as info:
        load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_deep_nesting_is_an_error_naming_the_file_not_a_recursion_error(fmt: str, tmp_path: Path) -> None:
    load, err, good = FORMATS[fmt]
    path = tmp_path / "f.json"
    deep = "[" * 100_000 + "]" * 100_000
    doc = good.rstrip("\n")
    key = '"provenance"' if fmt == "policy" else '"meta"'
    nested = doc[: doc.rindex("}")] + f', {key}: {{"x": {deep}}}}}'
    path.write_text(nested + "\n", encoding="utf-8")
    with pytest.raises(err, match=f"nested more than {MAX_DEPTH}") as info:
        load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_nan_is_not_json(fmt: str, tmp_path: Path) -> None:
    load, err, good = FORMATS[fmt]
    path = tmp_path / "f.json"
    doc = good.rstrip("\n")
    path.write_text(doc[: doc.rindex("}")] + ', "z": NaN}\n', encoding="utf-8")
    with pytest.raises(err, match="NaN"):
        load(path)


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "[" * 5000 + "{" * 5000}) + "\n", encoding="utf-8")
    assert load_evalset(path)[0].prompt.startswith("[[[")


def _depth_by_walk(text: str) -> bool:
    """The plain character walk the regex-based depth check must agree with."""
    depth, in_str, esc = 0, False, False
    for ch in text:
        if in_str:
            esc, in_str = (False, True) if esc else (ch == "\\", ch != '"')
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def test_depth_check_agrees_with_a_character_walk() -> None:
    seed = 20261206
    print(f"seed {seed}")
    rng = random.Random(seed)
    alphabet = ['"', "\\", "[", "]", "{", "}", "a", ",", ":"]
    for _ in range(2000):
        n = rng.choice([50, 300, 1000])
        weights = [rng.random() for _ in alphabet]
        text = "".join(rng.choices(alphabet, weights, k=n))
        if rng.random() < 0.7:  # near the limit, so a bracket counted wrongly changes the answer
            text = "[" * rng.randint(180, 215) + text
        assert _too_deep(text) == _depth_by_walk(text), text


def test_atomic_write_is_readable_by_others_and_keeps_an_existing_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "out" / "policy.json"
        atomic_write_text(path, "{}\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o600)  # a secret file stays secret when rewritten
        atomic_write_text(path, "{ }\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "{ }\n"
        assert [p.name for p in path.parent.iterdir()] == ["policy.json"]  # no temporary left behind
    finally:
        os.umask(old)
