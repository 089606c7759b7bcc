"""Record once, replay forever: vcrpy cassettes of every tier's answers.

Layout: one vcrpy cassette (JSON serializer) per eval-set item,
``<dir>/<item id>.json``, plus ``<dir>/manifest.json`` saying what was
recorded (ladder, sample counts, eval-set hash). Per-item cassettes keep
vcrpy's linear matching cheap and make a recording resumable item by item.
A large folder keeps them in a few shard files instead (``<dir>/packs/``,
:mod:`routerlab.data.packs`): every reader here finds a cassette either way.

Recording sends, for every item, the requests the router could send it (built
by :func:`routerlab.decision.tier_requests`, so the bodies are the router's own
bytes): one sample from every tier, and k samples from every non-final tier.
:func:`record` writes the cassettes itself, in exactly the format vcrpy writes
(vcrpy's global patching is not safe for concurrent cassettes): items are
recorded side by side (bounded per provider host), one item's requests in
order, retryable failures retried after ``retry-after`` or a backoff. Record
modes are vcrpy's: ``new_episodes`` (default) records only what is missing, so a
re-run resumes; ``all`` re-records into a sibling folder swapped in when
complete; ``once`` and ``none`` as in vcrpy. Secrets never reach a file: auth
headers and key-like query parameters are dropped and every API key value is
replaced in request and response bodies. Each recorded response carries the
measured latency in an ``x-routerlab-latency-ms`` header (vcrpy stores no
timing). The manifest lists every cassette's sha256; readers
(:func:`load_cassette_index`, hence replay and the outcome table) refuse a
cassette that changed since (:func:`verify_cassette`).

Replay goes through :class:`ReplayTransport`, an indexed httpx transport that
reads the same cassette files: requests match on method, URL and JSON body
(key order irrelevant); identical requests get the recorded responses in
order; a request with no recording raises :class:`ReplayMissError` naming
the item, tier and model and the closest recorded request.
"""

from __future__ import annotations

import copy
import functools
import gzip
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
import vcr  # imported here, not in the recording threads: vcr's own modules import each other circularly
from vcr.filters import decode_response
from vcr.persisters.filesystem import CassetteNotFoundError, FilesystemPersister
from vcr.request import Request as VcrRequest
from vcr.serialize import deserialize, serialize
from vcr.serializers import jsonserializer
from vcr.serializers.compat import convert_to_bytes

from routerlab.data.evalset import EvalItem
from routerlab.data.packs import PACKS, cassette_exists, cassette_names, pack_cassettes, read_cassette
from routerlab.decision import complexity_of, effective_max_tokens, tier_requests
from routerlab.errors import (
    ConfigError,
    DataError,
    MissingApiKeyError,
    PricingError,
    ProviderError,
    ReplayMissError,
    RoutingError,
)
from routerlab.jsonio import atomic_write_text, loads, read_json
from routerlab.policy import RouterPolicy, policy_to_dict
from routerlab.pricing import PriceBook
from routerlab.providers import RequestSpec, get_adapter, retry_after_seconds
from routerlab.router import CascadeRouter
from routerlab.types import Signal

LATENCY_HEADER = "x-routerlab-latency-ms"
ESTIMATED_HEADER = "x-routerlab-usage-estimated"
SECRET_HEADERS = ("authorization", "x-api-key", "api-key", "proxy-authorization", "cookie", "set-cookie")
SECRET_QUERY = ("key", "api_key", "api-key", "apikey", "access_token", "token")
MANIFEST = "manifest.json"
DUMMY_KEY = "routerlab-replay-no-key"


# ---------------------------------------------------------------- paths and bodies


def cassette_name(item_id: str) -> str:
    """A file name for an item's cassette: the id when safe, else a sanitised id plus a short hash."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", item_id)
    reserved = safe.lower() in ("manifest", "judge")  # the folder's own files: manifest.json, judge.json
    if safe != item_id or safe.startswith(".") or len(safe) > 120 or reserved:
        safe = f"{safe[:100]}-{hashlib.sha1(item_id.encode()).hexdigest()[:10]}"
    return f"{safe}.json"


def canonical_body(body: bytes | str | None) -> str:
    """JSON bodies with sorted keys and no spaces (so key order is irrelevant); other bodies as text."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return text


def request_key(method: str, url: str, body: bytes | str | None) -> tuple[str, str, str]:
    return (method.upper(), _strip_secret_query(url), canonical_body(body))


def spec_key(spec: RequestSpec) -> tuple[str, str, str]:
    """:func:`request_key` of a request the router builds, straight from its body dict: the same key
    without encoding the body and parsing it back (the outcome build keys thousands of them)."""
    body = json.dumps(spec.body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (spec.method.upper(), _strip_secret_query(spec.url), body)


@functools.lru_cache(maxsize=4096)  # a study sends thousands of requests to a handful of URLs
def _strip_secret_query(url: str) -> str:
    u = httpx.URL(url)
    params = [(k, v) for k, v in u.params.multi_items() if k.lower() not in SECRET_QUERY]
    return str(u.copy_with(params=params)) if params or u.query else str(u)


# ---------------------------------------------------------------- what to record


@dataclass(frozen=True)
class RequestNeed:
    """A request the router may send for one item, and how many answers to it are needed."""

    tier_index: int
    tier: str
    model: str
    spec: RequestSpec
    count: int
    samples: int = 1  # the choices one answer to ``spec`` should hold (k for an n=k request)
    top_up: Callable[[int], list[RequestSpec]] | None = field(default=None, compare=False, repr=False)


def needed_requests(
    policy: RouterPolicy,
    item: EvalItem,
    *,
    ks: Sequence[int] | None = None,
    keys: Mapping[str, str] | None = None,
    sample_limits: Mapping[int, int] | None = None,
    k_max: int | None = None,
    sample_temperatures: Mapping[int, Sequence[float]] | None = None,
) -> list[RequestNeed]:
    """Every request the router could send for ``item`` under policies sharing this ladder.

    One sample from each tier; k samples (for each k in ``ks``) from each
    non-final tier; a logprob request where the policy's signal is logprob; with ``k_max`` (adaptive
    k, which continues after a first draw of k=2), the single requests drawing samples 3 to k_max at
    each non-final tier.
    Identical requests (e.g. Anthropic's k samples) are merged with the
    largest count any variant needs. ``sample_limits`` (tier index -> samples
    available, for imported outputs) drops the k-sample variants a tier
    cannot fill. ``sample_temperatures`` (tier index -> further temperatures) also needs each such tier's
    sampled requests (k samples, draws, completions) at each of those temperatures: the temperature knob.
    """
    needs = _needed(policy, item, ks=ks, keys=keys, sample_limits=sample_limits, k_max=k_max)
    seen = {(n.tier_index, spec_key(n.spec)) for n in needs}
    for i, temps in sorted((sample_temperatures or {}).items()):
        for t in temps:
            if t == policy.sample_temperature(i):
                continue
            at = policy.with_sample_temperatures([t if j == i else None for j in range(i + 1)])
            for n in _needed(at, item, ks=ks, keys=keys, sample_limits=sample_limits, k_max=k_max):
                key = (n.tier_index, spec_key(n.spec))
                if n.tier_index == i and key not in seen:
                    seen.add(key)
                    needs.append(n)
    return needs


def _needed(
    policy: RouterPolicy,
    item: EvalItem,
    *,
    ks: Sequence[int] | None,
    keys: Mapping[str, str] | None,
    sample_limits: Mapping[int, int] | None,
    k_max: int | None,
) -> list[RequestNeed]:
    ks = tuple(ks) if ks else (policy.confidence.k,)
    cls = complexity_of(item.messages, policy.classifier)
    needs: dict[
        tuple[int, tuple[str, str, str]], tuple[RequestSpec, int, int, Callable[[int], list[RequestSpec]] | None]
    ] = {}
    messages = list(item.messages)
    for i, tier in enumerate(policy.tiers):
        max_tokens = effective_max_tokens(policy, i, cls)
        variants: list[tuple[Signal, int | None]] = [("none", None)]
        if i < len(policy.tiers) - 1:
            limit = (sample_limits or {}).get(i)
            variants += [("consistency", k) for k in ks if limit is None or k <= limit]
            if policy.confidence.signal == "logprob":
                variants.append(("logprob", None))
        for signal, k in variants:
            api_key = (keys or {}).get(tier.api_key_env, DUMMY_KEY) if tier.api_key_env else None
            specs, samples = tier_requests(policy, i, messages, signal, max_tokens, api_key, k=k)
            counts = Counter(spec_key(s) for s in specs)
            per_request = samples if len(specs) == 1 else 1
            top_up = None
            if per_request > 1:  # an n=k request: a server that ignores n is completed by single requests

                def top_up(
                    m: int, i: int = i, k: int | None = k, key: str | None = api_key, mt: int = max_tokens
                ) -> list[RequestSpec]:
                    return tier_requests(policy, i, messages, "consistency", mt, key, k=k, top_up=m)[0]

            for s in specs:
                key = (i, spec_key(s))
                prev = needs.get(key)
                needs[key] = (s, max(counts[key[1]], prev[1] if prev else 0), per_request, top_up)
        limit = (sample_limits or {}).get(i)
        if k_max is not None and i < len(policy.tiers) - 1:
            # adaptive k: the single requests drawing samples 3 .. k_max after the first draw of two; on a tier
            # without ``n`` they are the same requests as the k=2 call's, continuing its stream of samples
            upto = k_max if limit is None else min(k_max, limit)
            api_key = (keys or {}).get(tier.api_key_env, DUMMY_KEY) if tier.api_key_env else None
            first, _ = tier_requests(policy, i, messages, "consistency", max_tokens, api_key, k=2)
            (d,) = tier_requests(policy, i, messages, "consistency", max_tokens, api_key, k=2, top_up=1)[0]
            dkey = spec_key(d)
            in_first = sum(spec_key(s) == dkey for s in first)
            if upto > 2:
                prev = needs.get((i, dkey))
                needs[(i, dkey)] = (d, max(in_first + upto - 2, prev[1] if prev else 0), 1, None)
    return [
        RequestNeed(i, policy.tiers[i].name, policy.tiers[i].model, spec, count, per_request, top_up)
        for (i, _), (spec, count, per_request, top_up) in needs.items()
    ]


# ---------------------------------------------------------------- the cassette format (vcrpy's, written by us)


def _choices(provider: str, response: dict[str, Any], model: str) -> int:
    """How many choices a recorded 2xx response holds (0 for an error or an unparseable body)."""
    try:
        status = int(response["status"]["code"])
        c = get_adapter(provider).parse_response(status, {}, _body_bytes(response.get("body")), model=model)
    except (ProviderError, KeyError, TypeError, ValueError):
        return 0
    return len(c.texts)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "REDACTED")
    return text


def _before_save(secrets: Sequence[str]) -> Callable[..., tuple[Any, Any]]:
    """The scrubbing applied to every interaction before it is saved (vcrpy's ``before_save_interaction``)."""
    secret_values = tuple(s for s in secrets if s)

    def before_save(request: Any, response: Any, cassette: Any = None) -> tuple[Any, Any]:
        request.headers = {k: v for k, v in request.headers.items() if k.lower() not in SECRET_HEADERS}
        request.uri = _scrub(_strip_secret_query(request.uri), secret_values)
        if request.body:
            raw = request.body.decode("utf-8", "replace") if isinstance(request.body, bytes) else request.body
            request.body = _scrub(raw, secret_values).encode("utf-8")
        response["headers"] = {k: v for k, v in response["headers"].items() if k.lower() not in SECRET_HEADERS}
        body = response["body"].get("string")
        if isinstance(body, bytes):
            try:
                response["body"]["string"] = _scrub(body.decode("utf-8"), secret_values).encode("utf-8")
            except UnicodeDecodeError:
                pass
        elif isinstance(body, str):
            response["body"]["string"] = _scrub(body, secret_values)
        for k in list(response["headers"]):
            response["headers"][k] = [_scrub(str(v), secret_values) for v in response["headers"][k]]
        return request, response

    return before_save


class _AtomicPersister:
    """vcrpy persister whose writes are atomic (an interrupted run never leaves half a cassette)."""

    @classmethod
    def load_cassette(cls, cassette_path: Any, serializer: Any) -> Any:
        path = Path(cassette_path)
        if path.is_file():
            return FilesystemPersister.load_cassette(cassette_path, serializer)
        try:  # a cassette in its folder's packs (routerlab.data.packs) plays as if it were the file
            data = read_cassette(path)
        except FileNotFoundError:
            raise CassetteNotFoundError() from None
        return deserialize(data.decode("utf-8"), serializer)

    @staticmethod
    def save_cassette(cassette_path: Any, cassette_dict: Any, serializer: Any) -> None:
        atomic_write_text(Path(cassette_path), serialize(cassette_dict, serializer))


def _json_body_matcher(r1: Any, r2: Any) -> None:
    if canonical_body(r1.body) != canonical_body(r2.body):
        raise AssertionError("JSON bodies differ")


def _safe_uri_matcher(r1: Any, r2: Any) -> None:
    # recorded URIs have their key-like query parameters stripped: compare live requests the same way
    if _strip_secret_query(r1.uri) != _strip_secret_query(r2.uri):
        raise AssertionError("URIs differ (key-like query parameters ignored)")


@dataclass
class _Timer:
    started: float | None = None


def make_vcr(*, record_mode: str = "new_episodes", secrets: Sequence[str] = (), timer: _Timer | None = None) -> Any:
    """A vcrpy ``VCR`` set up for routerlab: JSON serializer, strict JSON-body matching, no secrets saved.

    :func:`record` no longer records through vcrpy (its global patching is not safe for concurrent
    cassettes) but writes the same files; this is kept for playback (:func:`vcr_playback`) and for
    anyone recording with vcrpy directly.
    """

    def before_record_response(response: dict[str, Any]) -> dict[str, Any]:
        if timer is not None and timer.started is not None:
            elapsed = (time.perf_counter() - timer.started) * 1000.0
            response["headers"][LATENCY_HEADER] = [f"{elapsed:.1f}"]
        return response

    v = vcr.VCR(
        serializer="json",
        record_mode=record_mode,
        match_on=["method", "safe_uri", "json_body"],
        decode_compressed_response=True,
        before_record_response=before_record_response,
        before_save_interaction=_before_save(secrets),
    )
    v.register_matcher("json_body", _json_body_matcher)
    v.register_matcher("safe_uri", _safe_uri_matcher)
    v.register_persister(_AtomicPersister)
    return v


def _serialize_cassette(interactions: Sequence[tuple[Any, dict[str, Any]]], secrets: Sequence[str]) -> str:
    """The cassette text vcrpy would save for these (request, response) pairs: scrubbed, JSON, indent 4."""

    before_save = _before_save(secrets)
    requests, responses = [], []
    for request, response in interactions:
        rq, rs = before_save(copy.deepcopy(request), copy.deepcopy(response))
        requests.append(rq)
        responses.append(rs)
    return str(serialize({"requests": requests, "responses": responses}, jsonserializer))


def _loaded_interactions(path: Path) -> list[tuple[Any, dict[str, Any]]]:
    """A cassette's interactions as vcrpy holds them in memory (so re-saving them is what vcrpy writes)."""

    out: list[tuple[Any, dict[str, Any]]] = []
    for n, it in enumerate(_load_interactions(path)):
        try:
            out.append((VcrRequest._from_dict(it["request"]), convert_to_bytes(it["response"])))
        except (KeyError, TypeError) as e:
            raise DataError(f"{path}: interaction {n} is malformed ({type(e).__name__}: {e})") from None
    return out


# ---------------------------------------------------------------- recording


RecordMode = Literal["none", "once", "new_episodes", "all"]
RECORD_MODES: tuple[str, ...] = ("none", "once", "new_episodes", "all")
"""vcrpy's record modes: ``none`` records nothing (reports what is missing); ``once`` records into a folder
without cassettes only; ``new_episodes`` (the default) records what is missing; ``all`` re-records everything."""

DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_RETRIES = 3
RETRY_BACKOFF_S = 1.0  # the first retry's wait without a retry-after; doubled each retry
RETRY_BACKOFF_MAX_S = 30.0
RETRY_AFTER_MAX_S = 120.0  # a retry-after longer than this is cut to it

_RETRYABLE_TRANSPORT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def _retry_can_help(provider: str, resp: httpx.Response, raw: bytes, model: str) -> bool:
    """A 429/5xx whose body says no retry can fix it (``insufficient_quota``, "Request too large") is
    recorded as it came, not retried."""
    if resp.status_code != 429:
        return True
    try:
        body = gzip.decompress(raw) if resp.headers.get("content-encoding") == "gzip" else raw
    except (OSError, EOFError):
        return True
    return get_adapter(provider).parse_error(resp.status_code, resp.headers, body, model=model).retryable


def retryable_status(status: int) -> bool:
    """HTTP statuses worth another try: 429 (rate limit), 5xx (server), 529 (Anthropic overloaded)."""
    return status == 429 or 500 <= status <= 599


@dataclass
class RecordReport:
    """What a recording run did.

    ``errors`` counts requests whose final answer (after retries) was a failure; they are recorded
    like answers (real behaviour), except timeouts and connection failures, which leave nothing to
    record. ``requests_missing`` / ``items_missing`` are what mode ``none`` found unrecorded.
    """

    items: int = 0
    items_skipped: int = 0
    requests_recorded: int = 0
    requests_replayed: int = 0
    errors: int = 0
    spend_usd: Decimal = Decimal(0)
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    mode: str = "new_episodes"
    retries: int = 0
    requests_missing: int = 0
    items_missing: list[str] = field(default_factory=list)
    failed_items: list[str] = field(default_factory=list)
    concurrency: int = 1
    items_rerecorded: list[str] = field(default_factory=list)  # their cassette no longer matched the manifest

    @property
    def ok(self) -> bool:
        """Whether every request sent got a successful answer (after retries)."""
        return self.errors == 0


class _Stopped(Exception):
    """Raised in a worker when the run is being stopped (another item failed, or an interrupt)."""


def _host_of(url: str) -> str:
    u = httpx.URL(url)
    return f"{u.scheme}://{u.host}:{u.port or ''}"


def _in_process(client: httpx.Client) -> bool:
    transport = getattr(client, "_transport", None)
    return isinstance(transport, httpx.MockTransport | httpx.WSGITransport)


class _Recorder:
    """Records items into their cassettes: the requests of one item in order, items side by side.

    Each request waits for a slot of its host (``concurrency`` per host); retryable failures are
    retried with bounded exponential backoff, honouring ``retry-after``.
    """

    def __init__(
        self,
        http: httpx.Client,
        policy: RouterPolicy,
        *,
        ks: Sequence[int],
        keys: Mapping[str, str],
        sample_limits: Mapping[int, int] | None,
        k_max: int | None,
        sample_temperatures: Mapping[int, Sequence[float]] | None,
        concurrency: int,
        max_retries: int,
        sleep: Callable[[float], None] | None,
        clock: Callable[[], float],
        measure_latency: bool,
        report: RecordReport,
        bar: Any,
    ) -> None:
        self.http, self.policy, self.ks, self.keys = http, policy, ks, keys
        self.secrets = tuple(v for v in keys.values() if v)
        self.sample_limits, self.k_max, self.sample_temperatures = sample_limits, k_max, sample_temperatures
        self.concurrency, self.max_retries = concurrency, max_retries
        self.sleep, self.clock, self.measure_latency = sleep, clock, measure_latency
        self.report, self.bar = report, bar
        self.prices = PriceBook()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    def _slot(self, url: str) -> threading.BoundedSemaphore:
        host = _host_of(url)
        with self.lock:
            slot = self._slots.get(host)
            if slot is None:
                slot = self._slots[host] = threading.BoundedSemaphore(self.concurrency)
            return slot

    def item(self, item: EvalItem, path: Path) -> None:
        """Record what ``item`` is missing into ``path`` (written atomically, also when interrupted).

        An existing cassette is first checked against the manifest: one that changed since it was
        sealed (edited by hand, or written by a run killed before it could update the manifest) is
        recorded again from scratch, never completed and re-sealed."""
        stale = False
        exists = cassette_exists(path)
        if exists:
            try:
                verify_cassette(path)
            except DataError:
                stale = True
        old = _loaded_interactions(path) if exists and not stale else []
        have = Counter(request_key(rq.method, rq.uri, rq.body) for rq, _ in old)
        new: list[tuple[Any, dict[str, Any]]] = []
        needs = needed_requests(
            self.policy, item, ks=self.ks, keys=self.keys, sample_limits=self.sample_limits, k_max=self.k_max,
            sample_temperatures=self.sample_temperatures,
        )  # fmt: skip
        answers: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for rq, rs in old:
            answers[request_key(rq.method, rq.uri, rq.body)].append(rs)

        def ensure(need: RequestNeed) -> None:
            key = spec_key(need.spec)
            for _ in range(need.count):
                if have[key] > 0:
                    have[key] -= 1
                    with self.lock:
                        self.report.requests_replayed += 1
                    continue
                got = self._send(item, need)
                if got is not None:
                    new.append(got)
                    answers[key].append(got[1])

        try:
            for need in needs:
                ensure(need)
                if need.top_up is None:
                    continue
                # a server that answered n=k with fewer choices: record the single requests that complete it
                key = spec_key(need.spec)
                tier = self.policy.tiers[need.tier_index]
                for rs in answers.get(key, [])[:1]:
                    got_n = _choices(tier.provider, rs, tier.model)
                    if 0 < got_n < need.samples:
                        specs = need.top_up(need.samples - got_n)
                        extra = Counter(request_key(x.method, x.url, x.content()) for x in specs)
                        for x in {request_key(x.method, x.url, x.content()): x for x in specs}.values():
                            k2 = request_key(x.method, x.url, x.content())
                            ensure(RequestNeed(need.tier_index, need.tier, need.model, x, extra[k2]))
        finally:  # what was recorded is kept, also when the run is interrupted
            if new:
                atomic_write_text(path, _serialize_cassette([*old, *new], self.secrets))
        with self.lock:
            self.report.items += 1
            if stale:
                self.report.items_rerecorded.append(item.id)
            if old and not new:
                self.report.items_skipped += 1
            if self.bar is not None:
                self.bar.update(1)
                self._postfix()

    def _postfix(self) -> None:
        r = self.report
        self.bar.set_postfix(
            requests=r.requests_recorded, errors=r.errors, retries=r.retries, spend=f"${r.spend_usd:.4f}"
        )

    def _backoff(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            wait = retry_after_seconds(response.headers)
            if wait is not None:
                return min(wait, RETRY_AFTER_MAX_S)
        return float(min(RETRY_BACKOFF_S * 2**attempt, RETRY_BACKOFF_MAX_S))

    def _fail(self, item: EvalItem, kind: str) -> None:
        with self.lock:
            self.report.errors += 1
            self.report.errors_by_kind[kind] += 1
            if item.id not in self.report.failed_items:
                self.report.failed_items.append(item.id)

    def _send(self, item: EvalItem, need: RequestNeed) -> tuple[Any, dict[str, Any]] | None:
        """Send one request (retrying); the interaction to record, or None when nothing came back."""
        tier = self.policy.tiers[need.tier_index]
        spec = need.spec
        slot = self._slot(spec.url)
        attempt = 0
        while True:
            if self.stop.is_set():
                raise _Stopped
            req = self.http.build_request(
                spec.method,
                spec.url,
                headers=spec.headers,
                content=spec.content(),
                timeout=httpx.Timeout(tier.timeout_s),
            )
            failure: httpx.TransportError | None = None
            resp: httpx.Response | None = None
            with slot:
                started = self.clock()
                try:
                    resp = self.http.send(req, stream=True)
                    try:  # the raw (still encoded) bytes, as vcrpy's httpx stub reads them
                        raw = b"".join(resp.stream) if isinstance(resp.stream, httpx.SyncByteStream) else resp.read()
                    finally:
                        resp.close()
                except httpx.TransportError as e:
                    failure = e
                elapsed_ms = (self.clock() - started) * 1000.0
            retry = attempt < self.max_retries and (
                isinstance(failure, _RETRYABLE_TRANSPORT)
                or (
                    resp is not None
                    and failure is None
                    and retryable_status(resp.status_code)
                    and _retry_can_help(tier.provider, resp, raw, tier.model)
                )
            )
            if retry:
                wait = self._backoff(attempt, resp if failure is None else None)
                with self.lock:
                    self.report.retries += 1
                if self.sleep is not None:
                    self.sleep(wait)
                elif self.stop.wait(wait):  # a stopping run does not sit out a long retry-after
                    raise _Stopped
                attempt += 1
                continue
            if failure is not None or resp is None:  # a timeout or connection failure: nothing to record
                self._fail(item, type(failure).__name__)
                return None
            break
        headers: dict[str, list[str]] = defaultdict(list)
        for name, value in resp.headers.multi_items():
            headers[name].append(value)
        response: dict[str, Any] = decode_response(
            {
                "status": {"code": resp.status_code, "message": resp.reason_phrase},
                "headers": dict(headers),
                "body": {"string": raw},
            }
        )
        if self.measure_latency:
            response["headers"][LATENCY_HEADER] = [f"{elapsed_ms:.1f}"]
        request = VcrRequest(req.method, str(req.url), req.content, req.headers)
        body = _body_bytes(response["body"])
        with self.lock:
            self.report.requests_recorded += 1
        try:
            c = get_adapter(tier.provider).parse_response(resp.status_code, resp.headers, body, model=tier.model)
            cost = self.prices.cost_usd(c.usage, tier.model, provider=tier.price_provider, override=tier.price)
        except ProviderError as e:
            self._fail(item, e.kind)
        else:
            with self.lock:
                self.report.spend_usd += cost
        return request, response

    def run(self, items: Sequence[EvalItem], out: Path, on_item: Callable[[EvalItem], None] | None) -> None:
        if self.concurrency == 1 or on_item is not None or len(items) <= 1:
            for item in items:
                if on_item is not None:
                    on_item(item)
                self.item(item, out / cassette_name(item.id))
            return
        hosts = {_host_of(t.base_url) for t in self.policy.tiers}
        workers = min(len(items), self.concurrency * max(len(hosts), 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="routerlab-record") as pool:
            futures = [pool.submit(self.item, item, out / cassette_name(item.id)) for item in items]
            try:
                for f in as_completed(futures):
                    f.result()
            except BaseException:
                self.stop.set()  # workers finish the request in flight, save their cassette and stop
                for f in futures:
                    f.cancel()
                raise


def _resolve_keys(policy: RouterPolicy, api_keys: Mapping[str, str] | None, env: Mapping[str, str]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for t in policy.tiers:
        if t.api_key_env:
            val = (api_keys or {}).get(t.api_key_env) or env.get(t.api_key_env)
            if not val:
                raise MissingApiKeyError(
                    f"recording tier {t.name!r} ({t.model}) needs the environment variable {t.api_key_env}; "
                    f"nothing was sent"
                )
            keys[t.api_key_env] = val
    return keys


def _check_prices(policy: RouterPolicy) -> None:
    prices = PriceBook()
    for t in policy.tiers:
        try:
            prices.price(t.model, provider=t.price_provider, override=t.price)
        except PricingError as e:
            raise PricingError(
                f"recording tier {t.name!r} needs a price for {t.model!r} to count the spend: {e}; "
                f'give the tier a "price" in the policy; nothing was sent'
            ) from None


def _has_cassettes(folder: Path) -> bool:
    return folder.is_dir() and bool(cassette_names(folder))


def _check_folder(out: Path, mode: str, evalset_sha256: str | None) -> None:
    if mode == "all" or not (out / MANIFEST).is_file():
        if mode == "once" and _has_cassettes(out):
            raise DataError(f"{out}: record mode 'once' records into a folder without cassettes, and this one has some")
        return
    recorded_for = read_manifest(out).get("evalset_sha256")
    if evalset_sha256 and isinstance(recorded_for, str) and recorded_for != evalset_sha256:
        raise DataError(
            f"{out}: this folder was recorded for another eval set (sha256 {recorded_for[:12]}..., this one is "
            f"{evalset_sha256[:12]}...); record into a new folder, or re-record it with --force (mode 'all')"
        )
    if mode == "once" and _has_cassettes(out):
        raise DataError(
            f"{out}: record mode 'once' records into a folder without cassettes, and this one has some; "
            f"use mode 'new_episodes' to add what is missing or 'all' to re-record"
        )


def _missing(
    items: Sequence[EvalItem],
    policy: RouterPolicy,
    out: Path,
    ks: Sequence[int],
    keys: Mapping[str, str],
    sample_limits: Mapping[int, int] | None,
    report: RecordReport,
    k_max: int | None = None,
    sample_temperatures: Mapping[int, Sequence[float]] | None = None,
) -> None:
    """Mode ``none``: count what each item's cassette is missing; send and write nothing."""
    for item in items:
        path = out / cassette_name(item.id)
        old = _loaded_interactions(path) if cassette_exists(path) else []
        have = Counter(request_key(rq.method, rq.uri, rq.body) for rq, _ in old)
        missing = 0
        for need in needed_requests(
            policy, item, ks=ks, keys=keys, sample_limits=sample_limits, k_max=k_max,
            sample_temperatures=sample_temperatures,
        ):  # fmt: skip
            key = spec_key(need.spec)
            took = min(have[key], need.count)
            have[key] -= took
            report.requests_replayed += took
            missing += need.count - took
        report.items += 1
        if missing:
            report.requests_missing += missing
            report.items_missing.append(item.id)


def _sibling_dir(out: Path, what: str) -> Path:
    return out.parent / f".{out.name}.{what}-{uuid.uuid4().hex[:10]}"


def _swap_in(new: Path, out: Path) -> None:
    """Replace folder ``out`` by ``new`` (files of ``out`` that are not cassettes are kept)."""
    if not out.exists():
        os.replace(new, out)
        return
    for p in out.iterdir():
        # the old packs hold the old recording: a folder recorded again in full does not keep them
        if p.suffix not in (".json", ".tmp") and p.name != PACKS and not (new / p.name).exists():
            if p.is_dir():
                shutil.copytree(p, new / p.name, symlinks=True)
            else:
                shutil.copy2(p, new / p.name, follow_symlinks=False)
    old = _sibling_dir(out, "old")
    os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def record(
    items: Sequence[EvalItem],
    policy: RouterPolicy,
    out_dir: str | os.PathLike[str],
    *,
    client: httpx.Client | None = None,
    ks: Sequence[int] | None = None,
    force: bool = False,
    progress: bool = True,
    api_keys: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    evalset_sha256: str | None = None,
    estimated_usage: bool = False,
    on_item: Callable[[EvalItem], None] | None = None,
    sample_limits: Mapping[int, int] | None = None,
    measure_latency: bool = True,
    mode: RecordMode | None = None,
    concurrency: int | None = None,
    max_retries: int | None = None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    k_max: int | None = None,
    sample_temperatures: Mapping[int, Sequence[float]] | None = None,
    pack_every: int | None = None,
) -> RecordReport:
    """Record every item's requests into ``out_dir`` (one cassette per item); resumable.

    ``pack_every``: record the items that many at a time and move each batch's cassettes into the
    folder's packs (:func:`routerlab.data.packs.pack_cassettes`) before the next, so a large study never
    has more than that many cassette files; replay reads packed and loose cassettes alike.

    ``mode`` is vcrpy's record mode: ``new_episodes`` (default) records only what the cassettes are
    missing and never overwrites an answer; ``all`` (``force=True``) re-records everything into a
    sibling temporary folder that replaces ``out_dir`` only once complete (an interrupted run leaves
    the old recording); ``once`` refuses a folder that already has cassettes; ``none`` sends nothing
    and reports what is missing (``requests_missing``, ``items_missing``).

    Before the first request every tier must have its API key (:class:`MissingApiKeyError`) and a
    price (:class:`PricingError`), and a folder recorded for another eval set (its manifest's
    ``evalset_sha256``) is refused (:class:`DataError`) unless mode is ``all``.

    ``k_max`` (adaptive k) also records, at each non-final tier, the single requests that draw
    samples 3 to k_max after a first draw of two (written to the manifest as ``k_max``).
    ``sample_temperatures`` (tier index -> temperatures) also records those tiers' samples at each of
    those temperatures (the manifest's ``sample_temperatures``, by tier name, includes the policy's own).

    Items are recorded side by side, at most ``concurrency`` requests in flight per provider host
    (default 8); one item's requests go out in order, so a cassette does not depend on the
    concurrency. Retryable failures (429, 5xx, 529, timeouts, connection failures) are retried up to
    ``max_retries`` times (default 3) after ``retry-after`` (at most 120 s) or an exponential backoff
    (1, 2, 4 ... s, at most 30 s); ``sleep(seconds)`` replaces the wait (tests), ``clock`` times the
    latency header; the final answer is recorded, errors included (they are
    real behaviour). A client on an in-process transport (``httpx.MockTransport``: scripted answers,
    whose order matters) gets one request at a time and no retries unless ``concurrency`` /
    ``max_retries`` are given; with ``on_item`` (called before each item; the importers' answering
    transport uses it) items always go one after another. Each cassette is written atomically (also
    when interrupted: what was recorded is kept); the manifest lists every cassette's sha256, which
    a run re-seals for the items it handled.
    """
    if force:
        if mode not in (None, "all"):
            raise ConfigError(f"force=True means record mode 'all'; it cannot be combined with mode {mode!r}")
        mode = "all"
    mode = mode or "new_episodes"
    if mode not in RECORD_MODES:
        raise ConfigError(f"unknown record mode {mode!r}; choose one of {', '.join(RECORD_MODES)}")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ConfigError(f"concurrency must be a whole number of at least 1; got {concurrency!r}")
    if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
        raise ConfigError(f"max_retries must be a whole number of at least 0; got {max_retries!r}")
    if pack_every is not None and (not isinstance(pack_every, int) or isinstance(pack_every, bool) or pack_every < 1):
        raise ConfigError(f"pack_every must be a whole number of at least 1; got {pack_every!r}")
    out = Path(out_dir)
    env = environ if environ is not None else os.environ
    ks = tuple(ks) if ks else (policy.confidence.k,)
    report = RecordReport(mode=mode)
    if mode == "none":
        keys = {
            t.api_key_env: (api_keys or {}).get(t.api_key_env) or env.get(t.api_key_env) or DUMMY_KEY
            for t in policy.tiers
            if t.api_key_env
        }
        _check_folder(out, mode, evalset_sha256)
        _missing(items, policy, out, ks, keys, sample_limits, report, k_max, sample_temperatures)
        return report
    keys = _resolve_keys(policy, api_keys, env)
    _check_prices(policy)
    _check_folder(out, mode, evalset_sha256)

    scripted = client is not None and _in_process(client)
    sequential = scripted or on_item is not None
    report.concurrency = 1 if on_item is not None else concurrency or (1 if scripted else DEFAULT_CONCURRENCY)
    retries = max_retries if max_retries is not None else (0 if sequential else DEFAULT_MAX_RETRIES)
    target = out
    if mode == "all":
        out.parent.mkdir(parents=True, exist_ok=True)
        target = _sibling_dir(out, "recording")
    target.mkdir(parents=True, exist_ok=True)
    own_client = client is None
    http = client or httpx.Client(
        timeout=httpx.Timeout(max(t.timeout_s for t in policy.tiers) * 4),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=max(20, report.concurrency * 4)),
    )
    bar = _progress(len(items), "recording", progress)
    recorder = _Recorder(
        http,
        policy,
        ks=ks,
        keys=keys,
        sample_limits=sample_limits,
        k_max=k_max,
        sample_temperatures=sample_temperatures,
        concurrency=report.concurrency,
        max_retries=retries,
        sleep=sleep,
        clock=clock,
        measure_latency=measure_latency,
        report=report,
        bar=bar,
    )
    done = False
    try:
        if pack_every is None:
            recorder.run(items, target, on_item)
        else:
            for start in range(0, len(items), pack_every):
                recorder.run(items[start : start + pack_every], target, on_item)
                pack_cassettes(target)
        done = True
    finally:
        if bar is not None:
            bar.close()
        if own_client:
            http.close()
        if mode != "all" or done:
            write_manifest(
                target,
                policy,
                ks,
                evalset_sha256=evalset_sha256,
                estimated_usage=estimated_usage,
                sample_limits={str(k): v for k, v in (sample_limits or {}).items()} or None,
                k_max=k_max,
                sample_temperatures=_temperatures_entry(policy, sample_temperatures),
                cassette_sha256=_cassette_hashes(target, items, fresh=mode == "all"),
            )
        if mode == "all":
            if done:
                _swap_in(target, out)
            else:
                shutil.rmtree(target, ignore_errors=True)
    return report


def _temperatures_entry(
    policy: RouterPolicy, temps: Mapping[int, Sequence[float]] | None
) -> dict[str, list[float]] | None:
    """The manifest's ``sample_temperatures``: tier name -> every temperature its samples were recorded at."""
    if not temps:
        return None
    out = {}
    for i, ts in sorted(temps.items()):
        out[policy.tiers[i].name] = sorted({policy.sample_temperature(i), *(float(t) for t in ts)})
    return out


def recorded_temperatures(policy: RouterPolicy, manifest: Mapping[str, Any]) -> dict[int, tuple[float, ...]]:
    """Tier index -> the sample temperatures a cassette folder's manifest says were recorded (at least two)."""
    got = manifest.get("sample_temperatures")
    if not isinstance(got, dict):
        return {}
    names = {t.name: i for i, t in enumerate(policy.tiers[:-1])}
    out = {}
    for name, ts in got.items():
        if name in names and isinstance(ts, list) and all(isinstance(t, (int, float)) for t in ts) and len(ts) > 1:
            out[names[name]] = tuple(float(t) for t in ts)
    return out


def _cassette_hashes(folder: Path, items: Sequence[EvalItem], *, fresh: bool) -> dict[str, str]:
    """sha256 of each cassette in ``folder``: this run's items (re-sealed), plus earlier entries still there."""
    hashes: dict[str, str] = {}
    if not fresh and (folder / MANIFEST).is_file():
        earlier = read_manifest(folder).get("cassette_sha256")
        if isinstance(earlier, dict):
            hashes = {str(k): str(v) for k, v in earlier.items() if cassette_exists(folder / str(k))}
    for item in items:
        name = cassette_name(item.id)
        try:
            data = read_cassette(folder / name)
        except FileNotFoundError:
            continue
        hashes[name] = hashlib.sha256(data).hexdigest()
    return dict(sorted(hashes.items()))


def seal_cassettes(cassette_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Re-hash every cassette in ``cassette_dir`` into its manifest (after a deliberate hand edit)."""
    folder = Path(cassette_dir)
    manifest = read_manifest(folder)
    hashes = {name: hashlib.sha256(read_cassette(folder / name)).hexdigest() for name in cassette_names(folder)}
    manifest["cassette_sha256"] = hashes
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return hashes


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item")


def write_manifest(out: Path, policy: RouterPolicy, ks: Sequence[int], **extra: Any) -> None:
    """Write ``manifest.json``: the ladder and settings the cassettes were recorded with, and their sha256."""
    policy_data = policy_to_dict(policy)
    for t in policy_data["tiers"]:  # a key in a base_url's query string must not reach the file either
        t["base_url"] = _strip_secret_query(t["base_url"])
    data = {
        "format": "routerlab-cassettes/1",
        "layout": "one vcrpy JSON cassette per item: <item id>.json, a file or in packs/ (routerlab.data.packs)",
        "ks": list(ks),
        "policy": policy_data,
        **{k: v for k, v in extra.items() if v is not None},
    }
    atomic_write_text(out / MANIFEST, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _data_error(path: Path) -> Callable[[str, int | None, str | None], DataError]:
    def error(message: str, line: int | None, fieldname: str | None) -> DataError:
        return DataError(f"{path}{f':{line}' if line else ''}: {message}")

    return error


def read_manifest(cassette_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(cassette_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: no manifest: is {cassette_dir} a routerlab cassette folder?")
    data = read_json(path, _data_error(path), what="cassette manifest")
    if not isinstance(data, dict):
        raise DataError(f"{path}: a manifest must be a JSON object")
    return data


# ---------------------------------------------------------------- integrity

_MANIFEST_CACHE: dict[str, tuple[tuple[int, int, int], dict[str, str]]] = {}
_MANIFEST_LOCK = threading.Lock()


def _listed_hashes(folder: Path) -> dict[str, str]:
    """The manifest's cassette sha256 map for ``folder`` ({} without a manifest), cached by manifest stat."""
    path = folder / MANIFEST
    try:
        st = path.stat()
    except OSError:
        return {}
    sig = (st.st_mtime_ns, st.st_size, st.st_ino)
    key = str(path.absolute())
    with _MANIFEST_LOCK:
        hit = _MANIFEST_CACHE.get(key)
        if hit is not None and hit[0] == sig:
            return hit[1]
    listed = read_manifest(folder).get("cassette_sha256")
    hashes = {str(k): str(v) for k, v in listed.items()} if isinstance(listed, dict) else {}
    with _MANIFEST_LOCK:
        if len(_MANIFEST_CACHE) > 256:
            _MANIFEST_CACHE.clear()
        _MANIFEST_CACHE[key] = (sig, hashes)
    return hashes


def verify_cassette(path: str | os.PathLike[str]) -> bytes:
    """The cassette's bytes, checked against the sha256 its folder's manifest lists (if it lists one).

    Raises :class:`DataError` naming the file when it changed since it was recorded.
    """
    return _verified_bytes(Path(path))[0]


def _verified_bytes(p: Path) -> tuple[bytes, bool]:
    """(the cassette's bytes, whether the manifest lists a sha256 for it, which they matched)."""
    try:
        data = read_cassette(p)
    except OSError as e:
        raise DataError(f"{p}: cannot read cassette: {e.strerror or e}") from None
    expected = _listed_hashes(p.parent).get(p.name)
    if expected is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise DataError(
                f"{p}: cassette changed since it was recorded (sha256 {actual[:12]}..., the manifest lists "
                f"{expected[:12]}...); restore it, or record the folder again with routerlab record --force"
            )
    return data, expected is not None


# ---------------------------------------------------------------- replay


@dataclass(frozen=True)
class RecordedResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _load_interactions(path: Path, raw: bytes | None = None, *, verified: bool = False) -> list[dict[str, Any]]:
    """A cassette's interactions (from ``raw``, its bytes, when already read). ``verified``: the bytes match
    the manifest's sha256, so they are a cassette routerlab wrote (its bodies are strings, its nesting a few
    levels): the depth pre-check, a regex pass over the whole file, is skipped."""
    if raw is None:
        try:
            raw = read_cassette(path)
        except OSError as e:
            raise DataError(f"{path}: cannot read cassette: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: is not UTF-8 text: byte 0x{raw[e.start]:02x} on line {line}") from None
    data = loads(text, _data_error(path), check_depth=not verified)
    inter = data.get("interactions") if isinstance(data, dict) else None
    if not isinstance(inter, list):
        raise DataError(f"{path}: not a vcrpy cassette (no 'interactions' list)")
    return inter


def _body_bytes(body: Any) -> bytes:
    s = body.get("string", b"") if isinstance(body, dict) else body
    if s is None:
        return b""
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)


def load_cassette_index(path: Path) -> dict[tuple[str, str, str], list[RecordedResponse]]:
    """Index a vcrpy JSON cassette: request key -> recorded responses, in recorded order.

    The file is checked against its folder's manifest first (:func:`verify_cassette`).
    """
    index: dict[tuple[str, str, str], list[RecordedResponse]] = defaultdict(list)
    raw, verified = _verified_bytes(path)
    keys: dict[tuple[str, str, bytes], tuple[str, str, str]] = {}  # a repeated request is keyed once
    for n, it in enumerate(_load_interactions(path, raw, verified=verified)):
        try:
            rq, rs = it["request"], it["response"]
            seen = (rq["method"], rq["uri"], _body_bytes(rq.get("body")))
            key = keys.get(seen)
            if key is None:
                key = keys[seen] = request_key(*seen)
            headers = tuple(
                (k, str(v))
                for k, vals in rs.get("headers", {}).items()
                for v in (vals if isinstance(vals, list) else [vals])
            )
            index[key].append(RecordedResponse(int(rs["status"]["code"]), headers, _body_bytes(rs.get("body"))))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: interaction {n} is malformed ({type(e).__name__}: {e})") from None
    return dict(index)


class ReplayTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Answers requests from the cassettes in ``cassette_dir``, never from the network.

    Call :meth:`select` with an item id before routing that item; the
    play counters restart there, so each route sees the recorded samples in
    order. ``tiers`` maps (url, model) to tier names for error messages.
    """

    def __init__(
        self,
        cassette_dir: str | os.PathLike[str],
        *,
        tiers: Mapping[tuple[str, str], str] | None = None,
        cache_size: int = 4096,
    ) -> None:
        self.dir = Path(cassette_dir)
        self.tiers = dict(tiers or {})
        self._cache: dict[str, dict[tuple[str, str, str], list[RecordedResponse]]] = {}
        self._cache_size = cache_size
        self._item: str | None = None
        self._index: dict[tuple[str, str, str], list[RecordedResponse]] = {}
        self._played: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    def select(self, item_id: str) -> None:
        """Replay ``item_id``'s cassette from its first recorded answer."""
        with self._lock:
            index = self._cache.get(item_id)
            if index is None:
                path = self.dir / cassette_name(item_id)
                if not cassette_exists(path):
                    raise ReplayMissError(f"no cassette for item {item_id!r} (expected {path})", item_id=item_id)
                index = load_cassette_index(path)
                if len(self._cache) >= self._cache_size:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[item_id] = index
            self._item, self._index, self._played = item_id, index, Counter()

    def _respond(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        key = request_key(request.method, str(request.url), body)
        with self._lock:
            recorded = self._index.get(key)
            n = self._played[key]
            if recorded is None or n >= len(recorded):
                raise self._miss(request, key, recorded)
            self._played[key] = n + 1
        r = recorded[n]
        return httpx.Response(r.status, headers=list(r.headers), content=r.body, request=request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._respond(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self._respond(request)

    def _miss(
        self, request: httpx.Request, key: tuple[str, str, str], recorded: list[RecordedResponse] | None
    ) -> ReplayMissError:
        try:
            model = str(json.loads(key[2]).get("model", "?"))
        except ValueError:
            model = "?"
        tier = next((t for (u, m), t in self.tiers.items() if m == model and key[1].startswith(u)), "?")
        where = f"item {self._item!r}, tier {tier!r}, model {model!r}"
        if recorded is not None:
            return ReplayMissError(
                f"{where}: this request was recorded {len(recorded)} time(s) and all were played; "
                f"record more samples (routerlab record) or lower k",
                item_id=self._item,
                tier=tier,
                model=model,
            )
        hint = _closest(key, self._index.keys())
        return ReplayMissError(
            f"{where}: no recorded request matches {key[0]} {key[1]}; {hint}",
            item_id=self._item,
            tier=tier,
            model=model,
        )


def _closest(key: tuple[str, str, str], keys: Iterable[tuple[str, str, str]]) -> str:
    try:
        want = json.loads(key[2])
    except ValueError:
        want = {}
    best: tuple[int, str] | None = None
    for k in keys:
        if k[0] != key[0]:
            continue
        try:
            have = json.loads(k[2])
        except ValueError:
            continue
        diffs = [
            f"{f}: recorded {have.get(f)!r}, requested {want.get(f)!r}"
            for f in sorted(set(want) | set(have))
            if have.get(f) != want.get(f)
        ]
        if k[1] != key[1]:
            diffs.insert(0, f"url: recorded {k[1]}")
        if best is None or len(diffs) < best[0]:
            best = (len(diffs), "; ".join(d[:160] for d in diffs[:3]))
    if best is None:
        return "the cassette has no request of this kind"
    return f"the closest recorded request differs in {best[1]}"


def replay_keys(policy: RouterPolicy) -> dict[str, str]:
    """Dummy API keys for every key variable the policy names (replays need none)."""
    return {t.api_key_env: DUMMY_KEY for t in policy.tiers if t.api_key_env}


def tier_map(policy: RouterPolicy) -> dict[tuple[str, str], str]:
    return {(t.base_url.rstrip("/"), t.model): t.name for t in policy.tiers}


def replay_router(
    policy: RouterPolicy, cassette_dir: str | os.PathLike[str], **kwargs: Any
) -> tuple[Any, ReplayTransport]:
    """The real :class:`CascadeRouter` wired to a :class:`ReplayTransport` over ``cassette_dir``."""
    transport = ReplayTransport(cassette_dir, tiers=tier_map(policy))
    router = CascadeRouter.from_policy(
        policy, client=httpx.Client(transport=transport), api_keys=replay_keys(policy), **kwargs
    )
    return router, transport


def replay_items(
    policy: RouterPolicy, cassette_dir: str | os.PathLike[str], items: Sequence[EvalItem], *, keep_errors: bool = False
) -> Iterator[tuple[EvalItem, Any]]:
    """Route every item through the real router from its cassette; yields (item, RouteResult).

    With ``keep_errors`` a route that ends in a :class:`RoutingError` or a
    provider error yields that error instead of raising it (a replay miss
    always raises).
    """
    router, transport = replay_router(policy, cassette_dir)
    for item in items:
        transport.select(item.id)
        router.reset_breakers()  # items are independent samples, not a stream
        try:
            yield item, router.route(list(item.messages), query_id=item.id)
        except (RoutingError, ProviderError) as e:
            if not keep_errors:
                raise
            yield item, e


def vcr_playback(cassette_path: str | os.PathLike[str], requests: Sequence[RequestSpec]) -> list[RecordedResponse]:
    """Play ``requests`` through vcrpy's own playback (record_mode none): the reference for the fast path."""
    verify_cassette(cassette_path)
    my_vcr = make_vcr(record_mode="none")
    out: list[RecordedResponse] = []
    with my_vcr.use_cassette(str(cassette_path)), httpx.Client() as client:
        for s in requests:
            r = client.send(client.build_request(s.method, s.url, headers=s.headers, content=s.content()))
            out.append(RecordedResponse(r.status_code, tuple(r.headers.multi_items()), r.content))
    return out
