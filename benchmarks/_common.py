"""Shared setup for the benchmark scripts: a temporary workspace with an imported public dataset."""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_TEMP: list[Path] = []


def workspace(name: str, root: str | None = None) -> tuple[Any, list[Any], Path, Path]:
    """(ladder policy, items, cassettes, root) for ``name``, imported into ``root`` (a temp dir by default,
    removed at exit). The import reads the public mirror ($ROUTERLAB_MIRROR); its time is not measured."""
    from routerlab.workbench.study import open_dataset

    if root:
        base = Path(root)
    else:
        if not _TEMP:
            _TEMP.append(Path(tempfile.mkdtemp(prefix="routerlab-bench-")))
            atexit.register(shutil.rmtree, _TEMP[0], True)
        base = _TEMP[0]
    policy, items, _evalset, cassettes = open_dataset(name, root=base, progress=False)
    return policy, items, cassettes, base


def interleaved(cases: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Wall times (s) of each case over ``rounds`` rounds, the cases run one after another within a round,
    so that a change in machine load hits every case alike instead of one case's block of repeats."""
    if rounds < 3:
        raise SystemExit(f"at least 3 interleaved rounds are needed for a min/median/max, got {rounds}")
    out: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def spread(values: list[float], fmt: str = "{:,.0f}", suffix: str = "") -> str:
    """``min / median / max`` of a list of numbers, each formatted with ``fmt``."""
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return " / ".join(fmt.format(v) + suffix for v in (lo, mid, hi))


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _marked(cassette: bytes, mark: str) -> bytes:
    """The cassette with ``mark`` put before every answer text (OpenAI choices, Anthropic text blocks)."""
    import json

    data = json.loads(cassette)
    for it in data["interactions"]:
        body = it["response"]["body"]
        try:
            payload = json.loads(body["string"])
        except (TypeError, ValueError, KeyError):
            continue
        if not isinstance(payload, dict):
            continue
        for ch in payload.get("choices") or []:
            msg = ch.get("message") if isinstance(ch, dict) else None
            if isinstance(msg, dict) and isinstance(msg.get("content"), str):
                msg["content"] = mark + msg["content"]
        for block in payload.get("content") or [] if isinstance(payload.get("content"), list) else []:
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                block["text"] = mark + block["text"]
        body["string"] = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(data, ensure_ascii=False, indent=4).encode("utf-8")


def scaled_folder(src: Path, items: list[Any], n: int, out: Path, *, distinct: bool = False) -> list[Any]:
    """``out``: a cassette folder of ``n`` items made from ``src``'s: item i is ``items[i % len(items)]``
    under a new id, with that item's cassette bytes under the new name (a recorded request does not
    depend on the item's id, so every copy replays). The manifest lists each copy's sha256.

    ``distinct``: every answer text of copy c >= 1 starts with a line ``(copy c)``, so no two copies
    share a text and no memo of whole texts (difflib pairs, answers, ROUGE tokens) is hit across copies,
    as at real scale, where every text is new; the answer (the last "A:" line) and the request are
    unchanged."""
    import hashlib
    import json
    from dataclasses import replace

    from routerlab.data.cassettes import MANIFEST, cassette_name
    from routerlab.data.packs import read_cassette

    out.mkdir(parents=True)
    manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    hashes = {}
    made = []
    for i in range(n):
        it = items[i % len(items)]
        new = replace(it, id=f"{it.id}~{i // len(items)}")
        data = read_cassette(src / cassette_name(it.id))
        if distinct and i >= len(items):
            data = _marked(data, f"(copy {i // len(items)})\n")
        name = cassette_name(new.id)
        (out / name).write_bytes(data)
        hashes[name] = hashlib.sha256(data).hexdigest()
        made.append(new)
    manifest["cassette_sha256"] = hashes
    manifest.pop("evalset_sha256", None)
    (out / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return made
