"""The recorded provider traffic the tests read: ``$ROUTERLAB_PROVIDER_WIRE`` or
``<repo>/../shared/provider-wire`` (read at run time, never copied into the repo)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from routerlab.providers import AnthropicAdapter, OpenAIAdapter, ProviderAdapter
from routerlab.types import Completion

REPO = Path(__file__).resolve().parents[1]
WIRE = Path(os.environ.get("ROUTERLAB_PROVIDER_WIRE") or REPO.parent / "shared" / "provider-wire")
WIRE_FILES = sorted(WIRE.glob("*/*.json")) if WIRE.is_dir() else []
MISSING = f"recorded provider traffic not found at {WIRE} (set ROUTERLAB_PROVIDER_WIRE)"


def load(rel: str | Path) -> dict[str, Any]:
    """One recorded exchange (the test is skipped when the recordings are not there)."""
    path = rel if isinstance(rel, Path) else WIRE / rel
    if not path.is_file():
        pytest.skip(MISSING if not WIRE.is_dir() else f"recording {path} is missing")
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return record


def adapter_for(path: Path | str) -> ProviderAdapter:
    folder = Path(path).parent.name
    return AnthropicAdapter() if folder == "anthropic" else OpenAIAdapter()


def body_bytes(record: dict[str, Any]) -> bytes:
    """The response body as recorded (the raw text where the file keeps it)."""
    response = record["response"]
    raw = response.get("body_raw")
    if raw is None:
        raw = response["body"] if isinstance(response["body"], str) else json.dumps(response["body"])
    return str(raw).encode("utf-8")


def parse(rel: str, **kw: Any) -> Completion:
    """The recorded response of ``rel`` parsed by its provider's adapter (a stream when it is one)."""
    record = load(rel)
    response = record["response"]
    adapter = adapter_for(rel)
    if "stream" in rel:
        return adapter.parse_stream(response["status"], response["headers"], body_bytes(record), **kw)
    return adapter.parse_response(response["status"], response["headers"], body_bytes(record), **kw)
