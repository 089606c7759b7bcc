"""Tests for routerlab.data.evalset: loading, validation errors, dumping, hashing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from routerlab.data import evalset
from routerlab.data.evalset import EvalItem, dump_evalset, evalset_sha256, load_evalset
from routerlab.errors import DataError, EvalSetError

EXAMPLE = Path(__file__).resolve().parent.parent / "data" / "example.jsonl"

GOOD_LINE = '{"id": "ok-1", "prompt": "hello"}'


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load_error(tmp_path: Path, bad_line: str) -> EvalSetError:
    """Load a file whose line 3 is ``bad_line`` (line 2 is blank) and return the error."""
    path = write_lines(tmp_path / "set.jsonl", GOOD_LINE, "", bad_line)
    with pytest.raises(EvalSetError) as info:
        load_evalset(path)
    return info.value


def sample_items() -> list[EvalItem]:
    return [
        EvalItem.from_prompt("plain", "What is 2 + 2?", answer="4"),
        EvalItem.from_prompt(
            "unicode-ü",
            "Résumé en français, 日本語, emoji 🚀, and a line separator \u2028 inside",
            reference="Réponse — «ok» ✓",
            labels={"gpt-4o-mini": 0.5, "claude/haiku": 1, "modèle": -2.25},
        ),
        EvalItem(
            id="chat",
            messages=(
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name a prime."},
                {"role": "assistant", "content": "7"},
                {"role": "user", "content": "Another one?"},
            ),
            reference="11",
            answer="11",
            labels={"small": 0.0, "large": 1.0},
            meta={"task": "reasoning", "tags": ["a", "b"], "nested": {"x": [1, 2.5, None, True]}},
        ),
        EvalItem(
            id="sys-single-user",
            messages=({"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "{}"}),
        ),
        EvalItem.from_prompt("meta-only", "  leading and trailing spaces kept  ", meta={"task": "x"}),
    ]


# --------------------------------------------------------------------------- the example set


def test_example_set_loads() -> None:
    items = load_evalset(EXAMPLE)
    assert len(items) == 36
    counts = Counter(item.meta["task"] for item in items)
    assert counts == {
        "summarisation": 8,
        "extraction": 7,
        "classification": 7,
        "reasoning": 7,
        "coding": 7,
    }
    for item in items:
        assert item.reference, item.id
        assert len(item.messages) == 1 and item.messages[0]["role"] == "user"
        if item.meta["task"] in ("reasoning", "classification"):
            assert item.answer, item.id
    for item in items:
        if item.meta["task"] == "reasoning":
            assert item.reference is not None and item.answer is not None
            assert item.reference.endswith(f"Final answer: {item.answer}"), item.id
        if item.meta["task"] == "classification":
            assert item.answer is not None and item.answer in item.prompt, item.id


def test_example_set_prompt_lengths_vary() -> None:
    words = [len(item.prompt.split()) for item in load_evalset(EXAMPLE)]
    assert min(words) < 30
    assert sum(150 <= n <= 250 for n in words) >= 5


def test_example_set_is_canonical() -> None:
    """The committed file is exactly what dump_evalset writes for its items."""
    raw = EXAMPLE.read_bytes()
    lines = raw.decode("utf-8").splitlines()
    for line, item in zip(lines, load_evalset(EXAMPLE), strict=True):
        assert line == json.dumps(item.to_json(), ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- EvalItem


def test_prompt_becomes_single_user_message() -> None:
    item = EvalItem.from_prompt("a", "hi")
    assert item.messages == ({"role": "user", "content": "hi"},)
    assert item.prompt == "hi"
    assert item.to_json() == {"id": "a", "prompt": "hi"}


def test_prompt_property_is_last_user_message() -> None:
    item = sample_items()[2]
    assert item.prompt == "Another one?"


def test_to_json_uses_messages_unless_single_user_message() -> None:
    data = sample_items()[3].to_json()
    assert "prompt" not in data
    assert data["messages"] == [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "{}"},
    ]


def test_to_json_omits_empty_optionals_and_keeps_order() -> None:
    full = sample_items()[2].to_json()
    assert list(full) == ["id", "messages", "reference", "answer", "labels", "meta"]
    assert list(EvalItem.from_prompt("b", "x").to_json()) == ["id", "prompt"]


def test_item_is_immutable() -> None:
    source_labels = {"m": 1.0}
    source_meta: dict[str, Any] = {"tags": ["a"]}
    item = EvalItem.from_prompt("a", "hi", labels=source_labels, meta=source_meta)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.id = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        item.labels["m"] = 2.0  # type: ignore[index]
    with pytest.raises(TypeError):
        item.meta["new"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        item.messages[0]["role"] = "system"  # type: ignore[index]
    # the item holds copies: changing the inputs afterwards changes nothing
    source_labels["m"] = 5.0
    source_meta["tags"].append("b")
    assert item.labels == {"m": 1.0}
    assert item.meta == {"tags": ["a"]}
    # to_json hands out copies too
    out = item.to_json()
    out["meta"]["tags"].append("c")
    assert item.meta == {"tags": ["a"]}


def test_labels_become_floats() -> None:
    item = EvalItem.from_prompt("a", "hi", labels={"m": 3})
    assert item.labels == {"m": 3.0}
    assert isinstance(item.labels["m"], float)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"id": 7, "messages": ({"role": "user", "content": "x"},)}, "id"),
        ({"id": "", "messages": ({"role": "user", "content": "x"},)}, "id"),
        ({"id": "a", "messages": ()}, "messages"),
        ({"id": "a", "messages": "hello"}, "messages"),
        ({"id": "a", "messages": ({"role": "assistant", "content": "x"},)}, "messages[0].role"),
        ({"id": "a", "messages": ({"role": "user", "content": "x"},), "reference": ""}, "reference"),
        ({"id": "a", "messages": ({"role": "user", "content": "x"},), "labels": {"m": "high"}}, 'labels["m"]'),
        ({"id": "a", "messages": ({"role": "user", "content": "x"},), "labels": {"m": float("nan")}}, 'labels["m"]'),
        ({"id": "a", "messages": ({"role": "user", "content": "x"},), "meta": {"when": object()}}, "meta.when"),
        ({"id": "a", "messages": ({"role": "user", "content": "x"},), "meta": {1: "x"}}, "meta"),
    ],
)
def test_constructor_validates(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(EvalSetError) as info:
        EvalItem(**kwargs)
    assert info.value.field == field
    assert f"field '{field}'" in str(info.value)


def test_meta_tuples_normalise_to_lists() -> None:
    item = EvalItem.from_prompt("a", "hi", meta={"pair": (1, 2)})
    assert item.meta == {"pair": [1, 2]}


# --------------------------------------------------------------------------- load: errors


@pytest.mark.parametrize(
    ("line", "field", "needle"),
    [
        ('{"id": 7, "prompt": "x"}', "id", "must be a non-empty string; got number 7"),
        ('{"id": true, "prompt": "x"}', "id", "got boolean true"),
        ('{"id": null, "prompt": "x"}', "id", "got null"),
        ('{"prompt": "x"}', "id", "missing required key"),
        ('{"id": "", "prompt": "x"}', "id", "non-empty string"),
        ('{"id": "   ", "prompt": "x"}', "id", "non-empty string"),
        ('{"id": " a", "prompt": "x"}', "id", "whitespace"),
        ('{"id": "a"}', "prompt", "give 'prompt' (a string) or 'messages'"),
        (
            '{"id": "a", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}',
            "messages",
            "either 'prompt' or 'messages', not both",
        ),
        ('{"id": "a", "prompt": ""}', "prompt", "non-empty string"),
        ('{"id": "a", "prompt": ["x"]}', "prompt", "got an array"),
        ('{"id": "a", "messages": "hi"}', "messages", "must be an array"),
        ('{"id": "a", "messages": []}', "messages", "at least one message"),
        ('{"id": "a", "messages": ["hi"]}', "messages[0]", "must be an object"),
        ('{"id": "a", "messages": [{"role": "user"}]}', "messages[0].content", "missing required key"),
        ('{"id": "a", "messages": [{"content": "x"}]}', "messages[0].role", "missing required key"),
        ('{"id": "a", "messages": [{"role": "user", "content": 3}]}', "messages[0].content", "got number 3"),
        ('{"id": "a", "messages": [{"role": "user", "content": " "}]}', "messages[0].content", "non-empty"),
        (
            '{"id": "a", "messages": [{"role": "user", "content": "x", "name": "bob"}]}',
            "messages[0].name",
            "unknown key 'name' in a message; allowed keys are role, content",
        ),
        (
            '{"id": "a", "messages": [{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}]}',
            "messages[1].role",
            "must be one of system, user, assistant; got 'bot'",
        ),
        ('{"id": "a", "messages": [{"role": 1, "content": "x"}]}', "messages[0].role", "got number 1"),
        (
            '{"id": "a", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}',
            "messages[1].role",
            "the last message must be a user message; got 'assistant'",
        ),
        (
            '{"id": "a", "messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "y"},'
            ' {"role": "user", "content": "z"}]}',
            "messages[1].role",
            "a system message may only be the first message",
        ),
        ('{"id": "a", "prompt": "x", "reference": 5}', "reference", "must be a non-empty string; got number 5"),
        ('{"id": "a", "prompt": "x", "answer": ""}', "answer", "non-empty string"),
        ('{"id": "a", "prompt": "x", "labels": [1]}', "labels", "must be an object mapping model name"),
        ('{"id": "a", "prompt": "x", "labels": {"gpt-4o": "good"}}', 'labels["gpt-4o"]', "must be a number"),
        ('{"id": "a", "prompt": "x", "labels": {"m": true}}', 'labels["m"]', "got boolean true"),
        ('{"id": "a", "prompt": "x", "labels": {"": 1}}', 'labels[""]', "non-empty strings"),
        ('{"id": "a", "prompt": "x", "labels": {"m": 1e999}}', 'labels["m"]', "finite"),
        ('{"id": "a", "prompt": "x", "meta": "easy"}', "meta", "must be an object"),
        (
            '{"id": "a", "promt": "x"}',
            "promt",
            "unknown key 'promt'; allowed keys are id, prompt, messages, reference, answer, labels, meta",
        ),
        ('{"id": "a", "id": "b", "prompt": "x"}', "id", "duplicate key 'id'"),
    ],
)
def test_field_errors_are_located(tmp_path: Path, line: str, field: str, needle: str) -> None:
    err = load_error(tmp_path, line)
    path = str(tmp_path / "set.jsonl")
    assert err.path == path
    assert err.line == 3
    assert err.field == field
    assert str(err).startswith(f"{path}:3: field '{field}': ")
    assert needle in str(err)
    assert isinstance(err, DataError)


def test_error_message_format_exact(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "x.jsonl",
        *[f'{{"id": "i{n}", "prompt": "p"}}' for n in range(6)],
        '{"id": "a", "messages": [{"role": "system", "content": "s"}, {"role": "bot", "content": "y"}]}',
    )
    with pytest.raises(EvalSetError) as info:
        load_evalset(path)
    assert str(info.value) == (f"{path}:7: field 'messages[1].role': must be one of system, user, assistant; got 'bot'")


@pytest.mark.parametrize(
    ("line", "column"),
    [
        ('{"id": "a", "prompt": }', 23),
        ('{"id": "a" "prompt": "x"}', 12),
        ("{'id': 'a'}", 2),
        ('{"id": "a", "prompt": "x"} trailing', 28),
    ],
)
def test_invalid_json_names_line_and_column(tmp_path: Path, line: str, column: int) -> None:
    err = load_error(tmp_path, line)
    assert err.line == 3
    assert err.field is None
    assert "invalid JSON" in str(err)
    assert f"(column {column})" in str(err)
    assert str(err).startswith(f"{tmp_path / 'set.jsonl'}:3: ")


def test_nan_is_invalid_json(tmp_path: Path) -> None:
    err = load_error(tmp_path, '{"id": "a", "prompt": "x", "labels": {"m": NaN}}')
    assert err.line == 3
    assert "NaN is not valid JSON" in str(err)


@pytest.mark.parametrize(("line", "kind"), [("[1, 2]", "an array"), ('"text"', "string"), ("3", "number")])
def test_line_must_be_an_object(tmp_path: Path, line: str, kind: str) -> None:
    err = load_error(tmp_path, line)
    assert err.line == 3
    assert "each line must be a JSON object" in str(err)
    assert kind in str(err)


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "dup.jsonl",
        '{"id": "q1", "prompt": "a"}',
        '{"id": "q2", "prompt": "b"}',
        "",
        '{"id": "q1", "prompt": "c"}',
    )
    with pytest.raises(EvalSetError) as info:
        load_evalset(path)
    err = info.value
    assert err.line == 4
    assert err.field == "id"
    assert "duplicate id 'q1'" in str(err)
    assert "line 1" in str(err) and "line 4" in str(err)


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(GOOD_LINE.encode() + b'\n{"id": "b", "prompt": "caf\xe9"}\n')
    with pytest.raises(EvalSetError) as info:
        load_evalset(path)
    assert info.value.line == 2
    assert "UTF-8" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(EvalSetError) as info:
        load_evalset(path)
    assert info.value.path == str(path)
    assert "cannot read eval set" in str(info.value)
    with pytest.raises(EvalSetError):
        evalset_sha256(path)


# --------------------------------------------------------------------------- load: tolerated input


def test_bom_crlf_blank_lines_and_nulls(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    body = (
        "\n"
        '{"id": "a", "prompt": "x", "reference": null, "answer": null, "labels": null, "meta": null}\r\n'
        "   \r\n"
        "\t\n"
        '{"id": "b", "prompt": "line one\\nline two \u2028 still b"}\r\n'
    )
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    items = load_evalset(path)
    assert [i.id for i in items] == ["a", "b"]
    assert items[0] == EvalItem.from_prompt("a", "x")
    assert items[1].prompt == "line one\nline two \u2028 still b"


def test_bom_then_error_counts_lines_from_one(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"id": 1, "prompt": "x"}\n')
    with pytest.raises(EvalSetError) as info:
        load_evalset(path)
    assert info.value.line == 1
    assert info.value.field == "id"


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf"])
def test_empty_or_blank_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(EvalSetError, match="empty") as info:
        load_evalset(path)
    assert str(path) in str(info.value)


def test_accepts_str_path(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.jsonl", GOOD_LINE)
    assert load_evalset(str(path))[0].id == "ok-1"


# --------------------------------------------------------------------------- dump


def test_round_trip_is_identity(tmp_path: Path) -> None:
    items = sample_items()
    path = tmp_path / "rt.jsonl"
    dump_evalset(items, path)
    loaded = load_evalset(path)
    assert loaded == items
    assert [i.to_json() for i in loaded] == [i.to_json() for i in items]
    # dumping what was loaded gives the same bytes
    again = tmp_path / "rt2.jsonl"
    dump_evalset(iter(loaded), again)
    assert again.read_bytes() == path.read_bytes()


def test_round_trip_of_example_set(tmp_path: Path) -> None:
    items = load_evalset(EXAMPLE)
    out = tmp_path / "copy.jsonl"
    dump_evalset(items, out)
    assert load_evalset(out) == items
    assert out.read_bytes() == EXAMPLE.read_bytes()


def test_dump_format(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    dump_evalset(sample_items(), path)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[-1] == ""  # ends with a newline
    assert len(lines) - 1 == len(sample_items())
    assert "日本語" in text and "🚀" in text  # ensure_ascii=False
    assert '{"id":"plain","prompt":"What is 2 + 2?","answer":"4"}' == lines[0]
    assert not path.read_bytes().startswith(b"\xef\xbb\xbf")


def test_dump_duplicate_ids_write_nothing(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    items = [EvalItem.from_prompt("a", "x"), EvalItem.from_prompt("b", "y"), EvalItem.from_prompt("a", "z")]
    with pytest.raises(EvalSetError) as info:
        dump_evalset(items, path)
    assert info.value.field == "id"
    assert info.value.line == 3
    assert "duplicate id 'a'" in str(info.value) and "items 1 and 3" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_dump_rejects_non_items(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match="not an EvalItem"):
        dump_evalset([{"id": "a", "prompt": "x"}], tmp_path / "n.jsonl")  # type: ignore[list-item]
    assert list(tmp_path.iterdir()) == []


def test_dump_is_atomic_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "set.jsonl"
    dump_evalset([EvalItem.from_prompt("old", "old prompt")], path)
    old_bytes = path.read_bytes()

    real_dumps = json.dumps
    calls = {"n": 0}

    def failing_dumps(obj: Any, *args: Any, **kwargs: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return real_dumps(obj, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", failing_dumps)
    new_items = [EvalItem.from_prompt(f"new-{n}", "p") for n in range(5)]
    with pytest.raises(RuntimeError, match="disk on fire"):
        dump_evalset(new_items, path)
    monkeypatch.undo()

    assert calls["n"] == 3
    assert path.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.jsonl"]
    assert [i.id for i in load_evalset(path)] == ["old"]


def test_dump_leaves_no_temp_files_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    dump_evalset([EvalItem.from_prompt("a", "x")], path)
    dump_evalset([EvalItem.from_prompt("b", "y")], path)
    assert [p.name for p in tmp_path.iterdir()] == ["set.jsonl"]
    assert [i.id for i in load_evalset(path)] == ["b"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_dump_keeps_existing_permissions(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    dump_evalset([EvalItem.from_prompt("a", "x")], path)
    os.chmod(path, 0o640)
    dump_evalset([EvalItem.from_prompt("b", "y")], path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_new_file_is_not_private_tempfile_mode(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    dump_evalset([EvalItem.from_prompt("a", "x")], path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_dump_empty(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    dump_evalset([], path)
    assert path.read_bytes() == b""
    with pytest.raises(EvalSetError, match="empty"):
        load_evalset(path)


# --------------------------------------------------------------------------- sha256


def test_sha256(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    dump_evalset(sample_items(), path)
    digest = evalset_sha256(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(digest) == 64
    dump_evalset(sample_items()[:1], path)
    assert evalset_sha256(str(path)) != digest


# --------------------------------------------------------------------------- hygiene


def test_module_imports_only_stdlib_errors_and_jsonio() -> None:
    import ast
    import sys

    source = Path(evalset.__file__).read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or name in ("routerlab.errors", "routerlab.jsonio"), name
