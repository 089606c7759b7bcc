"""Record once, replay forever: vcrpy cassettes of every tier's answers.

Layout: one vcrpy cassette (JSON serializer) per eval-set item,
``<dir>/<item id>.json``, plus ``<dir>/manifest.json`` saying what was
recorded (ladder, sample counts, eval-set hash). Per-item cassettes keep
vcrpy's linear matching cheap and make a recording resumable item by item.

Recording sends, for every item, the requests the router could send it (built
by :func:`routerlab.decision.tier_requests`, so the bodies are the router's own
bytes): one sample from every tier, and k samples from every non-final tier.
vcrpy records in ``new_episodes`` mode, so a re-run plays what is there and
records only what is missing. Secrets never reach a file: auth headers and
key-like query parameters are dropped and every API key value is replaced in
request and response bodies. Each recorded response carries the measured
latency in an ``x-routerlab-latency-ms`` header (vcrpy stores no timing).

Replay goes through :class:`ReplayTransport`, an indexed httpx transport that
reads the same cassette files: requests match on method, URL and JSON body
(key order irrelevant); identical requests get the recorded responses in
order; a request with no recording raises :class:`ReplayMissError` naming
the item, tier and model and the closest recorded request.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from routerlab.data.evalset import EvalItem
from routerlab.decision import complexity_of, effective_max_tokens, tier_requests
from routerlab.errors import DataError, ProviderError, ReplayMissError, RoutingError
from routerlab.jsonio import atomic_write_text, read_json
from routerlab.policy import RouterPolicy, policy_to_dict
from routerlab.pricing import PriceBook
from routerlab.providers import RequestSpec, get_adapter
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
    if safe != item_id or safe.startswith(".") or len(safe) > 120:
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


def needed_requests(
    policy: RouterPolicy,
    item: EvalItem,
    *,
    ks: Sequence[int] | None = None,
    keys: Mapping[str, str] | None = None,
    sample_limits: Mapping[int, int] | None = None,
) -> list[RequestNeed]:
    """Every request the router could send for ``item`` under policies sharing this ladder.

    One sample from each tier; k samples (for each k in ``ks``) from each
    non-final tier; a logprob request where the policy's signal is logprob.
    Identical requests (e.g. Anthropic's k samples) are merged with the
    largest count any variant needs. ``sample_limits`` (tier index -> samples
    available, for imported outputs) drops the k-sample variants a tier
    cannot fill.
    """
    ks = tuple(ks) if ks else (policy.confidence.k,)
    cls = complexity_of(item.messages, policy.classifier)
    needs: dict[tuple[int, tuple[str, str, str]], tuple[RequestSpec, int]] = {}
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
            specs, _ = tier_requests(policy, i, messages, signal, max_tokens, api_key, k=k)
            counts = Counter(request_key(s.method, s.url, s.content()) for s in specs)
            for s in specs:
                key = (i, request_key(s.method, s.url, s.content()))
                prev = needs.get(key)
                needs[key] = (s, max(counts[key[1]], prev[1] if prev else 0))
    return [
        RequestNeed(i, policy.tiers[i].name, policy.tiers[i].model, spec, count)
        for (i, _), (spec, count) in needs.items()
    ]


# ---------------------------------------------------------------- recording with vcrpy


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "REDACTED")
    return text


class _AtomicPersister:
    """vcrpy persister whose writes are atomic (an interrupted run never leaves half a cassette)."""

    @classmethod
    def load_cassette(cls, cassette_path: Any, serializer: Any) -> Any:
        from vcr.persisters.filesystem import FilesystemPersister

        return FilesystemPersister.load_cassette(cassette_path, serializer)

    @staticmethod
    def save_cassette(cassette_path: Any, cassette_dict: Any, serializer: Any) -> None:
        from vcr.serialize import serialize

        atomic_write_text(Path(cassette_path), serialize(cassette_dict, serializer))


def _json_body_matcher(r1: Any, r2: Any) -> None:
    if canonical_body(r1.body) != canonical_body(r2.body):
        raise AssertionError("JSON bodies differ")


def _safe_uri_matcher(r1: Any, r2: Any) -> None:
    # recorded URIs have their key-like query parameters stripped: compare live requests the same way
    if _strip_secret_query(r1.uri) != _strip_secret_query(r2.uri):
        raise AssertionError("URIs differ (key-like query parameters ignored)")


def make_vcr(*, record_mode: str = "new_episodes", secrets: Sequence[str] = (), timer: _Timer | None = None) -> Any:
    """A vcrpy ``VCR`` set up for routerlab: JSON serializer, strict JSON-body matching, no secrets saved."""
    import vcr

    secret_values = tuple(s for s in secrets if s)

    def before_save(request: Any, response: Any, cassette: Any) -> tuple[Any, Any]:
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
        before_save_interaction=before_save,
    )
    v.register_matcher("json_body", _json_body_matcher)
    v.register_matcher("safe_uri", _safe_uri_matcher)
    v.register_persister(_AtomicPersister)
    return v


@dataclass
class _Timer:
    started: float | None = None


@dataclass
class RecordReport:
    """What a recording run did."""

    items: int = 0
    items_skipped: int = 0
    requests_recorded: int = 0
    requests_replayed: int = 0
    errors: int = 0
    spend_usd: Decimal = Decimal(0)
    errors_by_kind: Counter[str] = field(default_factory=Counter)


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
) -> RecordReport:
    """Record every item's requests into ``out_dir`` (one cassette per item); resumable.

    An existing cassette is completed, never overwritten, unless ``force``.
    Provider errors are recorded like answers (they are real behaviour).
    ``on_item`` is called before each item (the importers' answering
    transport uses it); ``sample_limits`` is passed to :func:`needed_requests`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = environ if environ is not None else os.environ
    keys: dict[str, str] = {}
    for t in policy.tiers:
        if t.api_key_env:
            val = (api_keys or {}).get(t.api_key_env) or env.get(t.api_key_env)
            if not val:
                from routerlab.errors import MissingApiKeyError

                raise MissingApiKeyError(
                    f"recording tier {t.name!r} ({t.model}) needs the environment variable {t.api_key_env}"
                )
            keys[t.api_key_env] = val
    ks = tuple(ks) if ks else (policy.confidence.k,)
    timer = _Timer() if measure_latency else None
    own_client = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(max(t.timeout_s for t in policy.tiers) * 4))
    my_vcr = make_vcr(record_mode="new_episodes", secrets=tuple(keys.values()), timer=timer)
    prices = PriceBook()
    report = RecordReport()
    bar = _progress(len(items), "recording", progress)
    try:
        for item in items:
            path = out / cassette_name(item.id)
            if force and path.exists():
                path.unlink()
            if on_item is not None:
                on_item(item)
            _record_item(http, my_vcr, policy, item, path, ks, keys, timer, prices, report, sample_limits)
            report.items += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    recorded=report.requests_recorded, errors=report.errors, spend=f"${report.spend_usd:.4f}"
                )
    finally:
        if bar is not None:
            bar.close()
        if own_client:
            http.close()
        write_manifest(
            out,
            policy,
            ks,
            evalset_sha256=evalset_sha256,
            estimated_usage=estimated_usage,
            sample_limits={str(k): v for k, v in (sample_limits or {}).items()} or None,
        )
    return report


def _record_item(
    http: httpx.Client,
    my_vcr: Any,
    policy: RouterPolicy,
    item: EvalItem,
    path: Path,
    ks: Sequence[int],
    keys: Mapping[str, str],
    timer: _Timer | None,
    prices: PriceBook,
    report: RecordReport,
    sample_limits: Mapping[int, int] | None,
) -> None:
    before = len(_load_interactions(path)) if path.exists() else 0
    with my_vcr.use_cassette(str(path)) as cassette:
        for need in needed_requests(policy, item, ks=ks, keys=keys, sample_limits=sample_limits):
            tier = policy.tiers[need.tier_index]
            spec = need.spec
            for _ in range(need.count):
                played_before = cassette.play_count
                stored_before = len(cassette.data)
                if timer is not None:
                    timer.started = time.perf_counter()
                req = http.build_request(
                    spec.method,
                    spec.url,
                    headers=spec.headers,
                    content=spec.content(),
                    timeout=httpx.Timeout(tier.timeout_s),
                )
                try:
                    resp = http.send(req)
                except httpx.TransportError as e:  # a timeout or connection failure: nothing to record
                    report.errors += 1
                    report.errors_by_kind[type(e).__name__] += 1
                    continue
                finally:
                    if timer is not None:
                        timer.started = None
                if cassette.play_count > played_before:
                    report.requests_replayed += 1
                    continue
                # A resumed cassette is "rewound", and vcrpy would then play this new recording to the next
                # identical request (Anthropic's k samples): mark it played so each one is recorded.
                for idx in range(stored_before, len(cassette.data)):
                    cassette.play_counts[idx] += 1
                report.requests_recorded += 1
                adapter = get_adapter(tier.provider)
                try:
                    c = adapter.parse_response(resp.status_code, resp.headers, resp.content, model=tier.model)
                    report.spend_usd += prices.cost_usd(
                        c.usage, tier.model, provider=tier.price_provider, override=tier.price
                    )
                except ProviderError as e:
                    report.errors += 1
                    report.errors_by_kind[e.kind] += 1
    if before and len(_load_interactions(path)) == before:
        report.items_skipped += 1


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item")


def write_manifest(out: Path, policy: RouterPolicy, ks: Sequence[int], **extra: Any) -> None:
    """Write ``manifest.json``: the ladder and settings the cassettes were recorded with."""
    policy_data = policy_to_dict(policy)
    for t in policy_data["tiers"]:  # a key in a base_url's query string must not reach the file either
        t["base_url"] = _strip_secret_query(t["base_url"])
    data = {
        "format": "routerlab-cassettes/1",
        "layout": "one vcrpy JSON cassette per item: <item id>.json",
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


# ---------------------------------------------------------------- replay


@dataclass(frozen=True)
class RecordedResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _load_interactions(path: Path) -> list[dict[str, Any]]:
    data = read_json(path, _data_error(path), what="cassette")
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
    """Index a vcrpy JSON cassette: request key -> recorded responses, in recorded order."""
    index: dict[tuple[str, str, str], list[RecordedResponse]] = defaultdict(list)
    for n, it in enumerate(_load_interactions(path)):
        try:
            rq, rs = it["request"], it["response"]
            key = request_key(rq["method"], rq["uri"], _body_bytes(rq.get("body")))
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
                if not path.exists():
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
    my_vcr = make_vcr(record_mode="none")
    out: list[RecordedResponse] = []
    with my_vcr.use_cassette(str(cassette_path)), httpx.Client() as client:
        for s in requests:
            r = client.send(client.build_request(s.method, s.url, headers=s.headers, content=s.content()))
            out.append(RecordedResponse(r.status_code, tuple(r.headers.multi_items()), r.content))
    return out
