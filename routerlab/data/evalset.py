"""Eval sets: JSONL files of prompts with optional gold answers and labels.

One JSON object per line; blank lines are ignored and a UTF-8 byte-order mark
is tolerated. Keys of a line:

``id``         required, a non-empty string, unique in the file
``prompt``     a non-empty string (becomes a single user message), or
``messages``   a non-empty list of ``{"role": "system"|"user"|"assistant",
               "content": str}``; exactly one of ``prompt``/``messages``;
               the last message must be a user message and a system message
               may only come first
``reference``  optional string, a reference answer (for ROUGE-L)
``answer``     optional string, the gold answer (for exact match)
``labels``     optional object, model name -> number (external per-model
               quality scores, e.g. a judge score)
``meta``       optional object, free-form JSON

``null`` for an optional key means the same as leaving the key out. Any other
key is an error. Every problem raises :class:`~routerlab.errors.EvalSetError`
naming the file, the 1-based line and the field.

This module imports only the standard library and :mod:`routerlab.errors`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from routerlab.errors import EvalSetError
from routerlab.jsonio import atomic_write_text, iter_jsonl

__all__ = ["EvalItem", "dump_evalset", "evalset_sha256", "evalset_text", "load_evalset"]

ROLES = ("system", "user", "assistant")
ALLOWED_KEYS = ("id", "prompt", "messages", "reference", "answer", "labels", "meta")
_MESSAGE_KEYS = ("role", "content")


class _Invalid(Exception):
    """Internal: one bad field; turned into an EvalSetError with a location."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _got(value: Any) -> str:
    """Describe a JSON value for an error message: ``got ...``."""
    if value is None:
        return "got null"
    if isinstance(value, bool):
        return f"got boolean {'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"got number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"got string {shown!r}" if value.strip() else f"got blank string {value!r}"
    if isinstance(value, (list, tuple)):
        return f"got an array of {len(value)} element(s)"
    if isinstance(value, Mapping):
        return "got an object"
    return f"got {type(value).__name__} {value!r}"


def _text(value: Any, fieldname: str) -> str:
    """A non-empty, non-blank string."""
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be a non-empty string; {_got(value)}", fieldname)
    return value


def _norm_id(value: Any) -> str:
    text = _text(value, "id")
    if text != text.strip():
        raise _Invalid(f"must not start or end with whitespace; got {text!r}", "id")
    return text


def _norm_messages(value: Any) -> tuple[Mapping[str, str], ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _Invalid(f"must be an array of {{role, content}} objects; {_got(value)}", "messages")
    if not value:
        raise _Invalid("must contain at least one message; got an empty array", "messages")
    out: list[Mapping[str, str]] = []
    last = len(value) - 1
    for i, msg in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise _Invalid(f"must be an object with keys role and content; {_got(msg)}", where)
        for key in msg:
            if key not in _MESSAGE_KEYS:
                raise _Invalid(
                    f"unknown key {key!r} in a message; allowed keys are role, content",
                    f"{where}.{key}",
                )
        if "role" not in msg:
            raise _Invalid("missing required key", f"{where}.role")
        if "content" not in msg:
            raise _Invalid("missing required key", f"{where}.content")
        role = msg["role"]
        if not isinstance(role, str) or role not in ROLES:
            got = f"got {role!r}" if isinstance(role, str) else _got(role)
            raise _Invalid(f"must be one of {', '.join(ROLES)}; {got}", f"{where}.role")
        content = _text(msg["content"], f"{where}.content")
        if role == "system" and i != 0:
            raise _Invalid("a system message may only be the first message", f"{where}.role")
        if i == last and role != "user":
            raise _Invalid(f"the last message must be a user message; got {role!r}", f"{where}.role")
        out.append(types.MappingProxyType({"role": role, "content": content}))
    return tuple(out)


def _norm_optional_text(value: Any, fieldname: str) -> str | None:
    return None if value is None else _text(value, fieldname)


def _norm_labels(value: Any) -> Mapping[str, float]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise _Invalid(f"must be an object mapping model name to a number; {_got(value)}", "labels")
    out: dict[str, float] = {}
    for model, score in value.items():
        where = f"labels[{json.dumps(model) if isinstance(model, str) else repr(model)}]"
        if not isinstance(model, str) or not model.strip():
            raise _Invalid("model names must be non-empty strings", where)
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise _Invalid(f"must be a number; {_got(score)}", where)
        try:
            number = float(score)
        except OverflowError:
            raise _Invalid(f"is too large for a float; got {score!r}", where) from None
        if not math.isfinite(number):
            raise _Invalid(f"must be a finite number; got {score!r}", where)
        out[model] = number
    return types.MappingProxyType(out)


def _json_copy(value: Any, where: str) -> Any:
    """A deep copy of plain JSON data (tuples become lists); raises on anything else."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(f"must be plain JSON; NaN and infinities are not allowed; got {value!r}", where)
        return value
    if isinstance(value, (list, tuple)):
        return [_json_copy(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Invalid(f"object keys must be strings; got {type(k).__name__} {k!r}", where)
            out[k] = _json_copy(v, f"{where}.{k}")
        return out
    raise _Invalid(f"must be plain JSON; got {type(value).__name__} {value!r}", where)


def _norm_meta(value: Any) -> Mapping[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise _Invalid(f"must be an object; {_got(value)}", "meta")
    copied: dict[str, Any] = _json_copy(value, "meta")
    return types.MappingProxyType(copied)


@dataclass(frozen=True)
class EvalItem:
    """One eval item: a conversation ending in a user turn, plus gold data.

    Construction validates and normalises every field (raising
    :class:`EvalSetError` naming the field): ``messages`` becomes a tuple of
    read-only mappings, ``labels`` a read-only mapping of floats and ``meta``
    a read-only mapping over a private deep copy of plain JSON data. An item
    that constructs therefore always dumps and loads back unchanged.
    """

    id: str
    messages: tuple[Mapping[str, str], ...]
    reference: str | None = None
    answer: str | None = None
    labels: Mapping[str, float] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            values = {
                "id": _norm_id(self.id),
                "messages": _norm_messages(self.messages),
                "reference": _norm_optional_text(self.reference, "reference"),
                "answer": _norm_optional_text(self.answer, "answer"),
                "labels": _norm_labels(self.labels),
                "meta": _norm_meta(self.meta),
            }
        except _Invalid as exc:
            item = f"eval item {self.id!r}" if isinstance(self.id, str) else "eval item"
            raise EvalSetError(f"{exc.message} (in {item})", field=exc.field) from None
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        """Pickled as its eval-set JSON object (its read-only mappings do not pickle), so items travel to
        worker processes and cluster workers (a parallel outcome-table build) and load back unchanged."""
        return (_item_from_object, (self.to_json(),))

    @classmethod
    def from_prompt(cls, id: str, prompt: str, **kwargs: Any) -> EvalItem:
        """An item whose conversation is the single user message ``prompt``."""
        return cls(id=id, messages=({"role": "user", "content": prompt},), **kwargs)

    @property
    def prompt(self) -> str:
        """The text of the last user message."""
        return self.messages[-1]["content"]

    def to_json(self) -> dict[str, Any]:
        """The item as the JSON object of its eval-set line.

        Uses ``prompt`` when the conversation is a single user message, else
        ``messages``; leaves out ``reference``/``answer`` when ``None`` and
        ``labels``/``meta`` when empty.
        """
        out: dict[str, Any] = {"id": self.id}
        if len(self.messages) == 1 and self.messages[0]["role"] == "user":
            out["prompt"] = self.messages[0]["content"]
        else:
            out["messages"] = [{"role": m["role"], "content": m["content"]} for m in self.messages]
        if self.reference is not None:
            out["reference"] = self.reference
        if self.answer is not None:
            out["answer"] = self.answer
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.meta:
            out["meta"] = _json_copy(self.meta, "meta")
        return out


def _item_from_object(obj: dict[str, Any]) -> EvalItem:
    """Validate one decoded line; raises :class:`_Invalid`."""
    for key in obj:
        if key not in ALLOWED_KEYS:
            raise _Invalid(f"unknown key {key!r}; allowed keys are {', '.join(ALLOWED_KEYS)}", key)
    if "id" not in obj:
        raise _Invalid("missing required key", "id")
    item_id = _norm_id(obj["id"])
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    if has_prompt and has_messages:
        raise _Invalid("give either 'prompt' or 'messages', not both", "messages")
    if has_prompt:
        messages: Any = ({"role": "user", "content": _text(obj["prompt"], "prompt")},)
    elif has_messages:
        messages = _norm_messages(obj["messages"])
    else:
        raise _Invalid("missing: give 'prompt' (a string) or 'messages' (an array)", "prompt")
    return EvalItem(
        id=item_id,
        messages=messages,
        reference=_norm_optional_text(obj.get("reference"), "reference"),
        answer=_norm_optional_text(obj.get("answer"), "answer"),
        labels=_norm_labels(obj.get("labels")),
        meta=_norm_meta(obj.get("meta")),
    )


def load_evalset(path: str | os.PathLike[str]) -> list[EvalItem]:
    """Read and validate an eval set; items come back in file order."""
    where = os.fspath(path)

    def error(message: str, line: int | None, fieldname: str | None) -> EvalSetError:
        return EvalSetError(message, path=where, line=line, field=fieldname)

    items: list[EvalItem] = []
    first_line: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path, error, what="eval set"):
        if not isinstance(obj, dict):
            raise EvalSetError(f"each line must be a JSON object; {_got(obj)}", path=where, line=lineno)
        try:
            item = _item_from_object(obj)
        except _Invalid as exc:
            raise EvalSetError(exc.message, path=where, line=lineno, field=exc.field) from None
        if item.id in first_line:
            raise EvalSetError(
                f"duplicate id {item.id!r}: first on line {first_line[item.id]}, again on line {lineno}",
                path=where,
                line=lineno,
                field="id",
            )
        first_line[item.id] = lineno
        items.append(item)
    if not items:
        raise EvalSetError("the eval set is empty (no item lines)", path=where)
    return items


def dump_evalset(items: Iterable[EvalItem], path: str | os.PathLike[str]) -> None:
    """Write ``items`` as an eval set, atomically.

    The lines go to a temporary file in the target's directory which then
    replaces ``path``; if anything fails the old file is left untouched and
    the temporary file is removed. One compact JSON object per line,
    non-ASCII kept as UTF-8. Duplicate ids raise :class:`EvalSetError`
    before anything is written.
    """
    where = os.fspath(path)
    batch: Sequence[EvalItem] = list(items)
    first_line: dict[str, int] = {}
    for lineno, item in enumerate(batch, start=1):
        if not isinstance(item, EvalItem):
            raise EvalSetError(f"item {lineno} is a {type(item).__name__}, not an EvalItem", path=where, line=lineno)
        if item.id in first_line:
            raise EvalSetError(
                f"duplicate id {item.id!r}: items {first_line[item.id]} and {lineno}",
                path=where,
                line=lineno,
                field="id",
            )
        first_line[item.id] = lineno

    atomic_write_text(path, evalset_text(batch))


def evalset_text(items: Iterable[EvalItem]) -> str:
    """The eval-set file :func:`dump_evalset` writes for ``items`` (its sha256 identifies the set)."""
    return "".join(
        json.dumps(item.to_json(), ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n" for item in items
    )


def evalset_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the file's bytes (identifies the exact eval set used)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise EvalSetError(f"cannot read eval set: {reason}", path=os.fspath(path)) from exc
    return digest.hexdigest()
