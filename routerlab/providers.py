"""Provider adapters: pure translators between routerlab and a provider's wire format.

An adapter builds a :class:`RequestSpec` and parses a response body, an SSE
stream or an error body. It never sends, sleeps, retries or prices anything.
"""

from __future__ import annotations

import codecs
import functools
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from routerlab.errors import (
    AuthenticationError,
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    RequestError,
    ServerError,
    UnsupportedParameterError,
)
from routerlab.types import Completion, ToolCall, Usage

#: Response headers as recorded or as httpx gives them (a repeated header may be a list).
HeaderMap = Mapping[str, str | list[str]]

_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie"}
)
# Things that look like credentials inside provider text (keys echoed back in error messages).
_SECRET_RE = re.compile(
    r"(?:Bearer\s+[A-Za-z0-9._~+/\-]{8,}=*|\b(?:sk|rk|pk|gsk|xai|sess)[-_][A-Za-z0-9*._\-]{6,})", re.IGNORECASE
)
_MAX_MESSAGE_CHARS = 1000
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # SSE line ends only (not str.splitlines' U+2028 etc.)

# Error "type" strings used when the HTTP status does not decide (e.g. an error event mid-stream).
_TYPE_TO_ERROR: dict[str, type[ProviderError]] = {
    "rate_limit_error": RateLimitError,
    "rate_limit_exceeded": RateLimitError,
    "overloaded_error": OverloadedError,
    "api_error": ServerError,
    "server_error": ServerError,
    "invalid_request_error": InvalidRequestError,
    "authentication_error": AuthenticationError,
    "permission_error": AuthenticationError,
    "not_found_error": NotFoundError,
    "insufficient_quota": QuotaExceededError,
    "context_length_exceeded": ContextLengthError,
    "request_too_large": PayloadTooLargeError,
}
_CONTEXT_RE = re.compile(
    r"context.length|context window|prompt is too long|prompt too long|too many (?:prompt )?tokens|"
    r"reduce the length|maximum context|messages is too long|input is too long",
    re.IGNORECASE,
)
_UNSUPPORTED_RE = re.compile(r"unsupported (?:parameter|value)|is not supported with this model", re.IGNORECASE)
_AZURE_HOSTS = (".openai.azure.com", ".services.ai.azure.com", ".models.ai.azure.com", ".cognitiveservices.azure.com")


@dataclass(frozen=True)
class RequestSpec:
    """One HTTP request to send; ``repr`` never shows credentials."""

    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]

    def content(self) -> bytes:
        """The JSON body as deterministic UTF-8 bytes."""
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def redacted_headers(self) -> dict[str, str]:
        """The headers with every credential replaced by ``"REDACTED"`` (safe to log)."""
        return {k: ("REDACTED" if k.lower() in _SECRET_HEADERS else v) for k, v in self.headers.items()}

    def __repr__(self) -> str:
        return (
            f"RequestSpec(method={self.method!r}, url={self.url!r}, "
            f"headers={self.redacted_headers()!r}, body={self.body!r})"
        )


# --------------------------------------------------------------------------- helpers


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """Replace every exact ``secrets`` value (the keys in use; 6+ characters) and every substring that
    looks like an API key or bearer token by ``REDACTED``."""
    for secret in secrets:
        if len(secret) >= 6 and secret in text:
            text = text.replace(secret, "REDACTED")
    return _SECRET_RE.sub("REDACTED", text)


def _scrub_json(value: Any, secrets: Sequence[str] = ()) -> Any:
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {k: _scrub_json(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_json(v, secrets) for v in value]
    return value


@functools.lru_cache(maxsize=256)
def join_url(base_url: str, path: str) -> str:
    """``base_url`` + ``path``, keeping a query string where it belongs (Azure's ``?api-version=``)."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + path, parts.query, ""))


_FINISH = {"max_tokens": "length", "end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls"}
_FINISH["refusal"] = "content_filter"


def _finish(reason: Any) -> str | None:
    """An Anthropic stop_reason in OpenAI's words."""
    if not isinstance(reason, str):
        return None
    return _FINISH.get(reason, reason)


def header(headers: HeaderMap, name: str) -> str | None:
    """Case-insensitive header lookup; the first value if the header was repeated."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            if isinstance(value, list):
                return value[0] if value else None
            return value
    return None


def retry_after_seconds(headers: HeaderMap) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    raw_ms = header(headers, "retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms):
            return max(ms / 1000.0, 0.0)
    raw = header(headers, "retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(raw).timestamp() - time()
        except (TypeError, ValueError, IndexError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def text_of(content: Any, sep: str = "") -> str:
    """Text of a message ``content``: a string, or the text parts of a block list joined by ``sep``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return sep.join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def _count(obj: Any, *path: str) -> int | None:
    """The non-negative int at ``obj[path[0]][path[1]]...``, or None."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    if isinstance(obj, int) and not isinstance(obj, bool) and obj >= 0:
        return obj
    return None


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _iter_sse(body: bytes) -> Iterator[tuple[str, str]]:
    """Yield ``(event, data)`` for each Server-Sent Event; comments are skipped."""
    event, data = "", list[str]()
    for line in _LINE_BREAK.split(body.decode("utf-8", errors="replace")):
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield event, "\n".join(data)


# --------------------------------------------------------------------------- adapters


class ProviderAdapter:
    """Base adapter: shared error parsing and JSON handling.

    ``build_request`` takes OpenAI-style chat messages (roles system, developer, user, assistant,
    tool; content a string, null or a list of parts) and ``options`` (:data:`REQUEST_OPTION_NAMES`),
    and raises :class:`RequestError` for what it cannot carry. The ``parse_*`` methods take
    ``secrets`` (the key values in use), scrubbed from every message and body they return."""

    name: ClassVar[str] = ""

    def build_request(
        self,
        *,
        base_url: str,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        temperature: float | None,
        api_key: str | None,
        n: int = 1,
        logprobs: bool = False,
        options: Mapping[str, Any] | None = None,
        reasoning: bool = False,
        reasoning_effort: str | None = None,
        stream: bool = False,
    ) -> RequestSpec:
        raise NotImplementedError

    def delta_decoder(self) -> DeltaDecoder:
        """An incremental reader of this provider's SSE stream that yields the answer's text deltas."""
        return DeltaDecoder(self.name)

    def parse_response(
        self, status: int, headers: HeaderMap, body: bytes, *, model: str = "", secrets: Sequence[str] = ()
    ) -> Completion:
        """Parse a buffered response; a non-2xx status raises the typed error."""
        if not 200 <= status < 300:
            raise self.parse_error(status, headers, body, model=model, secrets=secrets)
        payload = self._load(body, status, model, secrets)
        embedded = self._embedded_error(payload, headers, model, secrets)
        if embedded is not None:
            raise embedded
        return self._completion(payload, model)

    def parse_stream(
        self, status: int, headers: HeaderMap, body: bytes, *, model: str = "", secrets: Sequence[str] = ()
    ) -> Completion:
        raise NotImplementedError

    def parse_error(
        self, status: int, headers: HeaderMap, body: bytes, *, model: str = "", secrets: Sequence[str] = ()
    ) -> ProviderError:
        """Return (do not raise) the typed error for a failed response."""
        try:
            payload: Any = json.loads(body) if body.strip() else None
        except (ValueError, UnicodeDecodeError):
            payload = None
        if payload is None:
            snippet = body[:300].decode("utf-8", errors="replace").strip()
            return self._error(status, headers, None, snippet or "empty error body", None, model, secrets)
        error_type, message = self._error_fields(payload)
        return self._error(status, headers, error_type, message, payload, model, secrets)

    # -- hooks for subclasses
    def _completion(self, payload: dict[str, Any], model: str) -> Completion:
        raise NotImplementedError

    # -- shared internals
    def _malformed(self, what: str, status: int | None, model: str) -> MalformedResponseError:
        return MalformedResponseError(what, provider=self.name, model=model, status=status)

    def _load(self, body: bytes, status: int, model: str, secrets: Sequence[str] = ()) -> dict[str, Any]:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            start = scrub(body[:80].decode("utf-8", errors="replace"), secrets)
            raise self._malformed(f"response body is not valid JSON (starts with {start!r})", status, model) from None
        if not isinstance(payload, dict):
            raise self._malformed("response body is not a JSON object", status, model)
        return payload

    def _load_event(self, data: str, status: int, model: str) -> dict[str, Any]:
        try:
            obj = json.loads(data)
        except ValueError:
            raise self._malformed("stream event data is not valid JSON", status, model) from None
        if not isinstance(obj, dict):
            raise self._malformed("stream event data is not a JSON object", status, model)
        return obj

    def _embedded_error(
        self, payload: dict[str, Any], headers: HeaderMap, model: str, secrets: Sequence[str] = ()
    ) -> ProviderError | None:
        """The typed error for an error object delivered with a 2xx status or inside a stream."""
        if not payload.get("error") or ("choices" in payload and payload.get("type") != "error"):
            return None
        error_type, message = self._error_fields(payload)
        code = payload["error"].get("code") if isinstance(payload["error"], dict) else None
        status = code if isinstance(code, int) and 400 <= code <= 599 else None
        return self._error(status, headers, error_type, message, payload, model, secrets)

    @staticmethod
    def _error_fields(payload: Any) -> tuple[str | None, str]:
        """``(error_type, message)`` from the error shapes providers use."""
        if not isinstance(payload, dict):
            return None, str(payload)[:_MAX_MESSAGE_CHARS]
        err = payload.get("error")
        if isinstance(err, str):
            return None, err
        if isinstance(err, dict):
            code, etype = err.get("code"), err.get("type")
            error_type = code if isinstance(code, str) and code else etype if isinstance(etype, str) else None
            if error_type is None and isinstance(code, int):
                error_type = str(code)
            message = str(err.get("message") or "")
            meta = err.get("metadata")
            if isinstance(meta, dict) and isinstance(meta.get("raw"), str):  # OpenRouter upstream detail
                upstream = meta.get("provider_name") or "upstream"
                message = f"{message} ({upstream}: {meta['raw'][:300]})"
            return error_type, message or "no error message"
        detail = payload.get("detail")  # Mistral / FastAPI
        if isinstance(detail, str):
            return None, detail
        if isinstance(detail, list):
            msgs = [str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail]
            return "validation_error", "; ".join(msgs)
        if isinstance(payload.get("message"), str):
            etype = payload.get("type") or payload.get("code")
            return (str(etype) if etype is not None else None), payload["message"]
        return None, json.dumps(payload)[:300]

    def _error(
        self,
        status: int | None,
        headers: HeaderMap,
        error_type: str | None,
        message: str,
        payload: Any,
        model: str,
        secrets: Sequence[str] = (),
    ) -> ProviderError:
        cls = _error_class(status, error_type, message)
        return cls(
            scrub(message, secrets)[:_MAX_MESSAGE_CHARS],
            provider=self.name,
            model=model,
            status=status,
            error_type=error_type,
            retry_after_s=retry_after_seconds(headers),
            body=_scrub_json(payload, secrets),
        )


def _error_class(status: int | None, error_type: str | None, message: str = "") -> type[ProviderError]:
    """The error class of a failure (see the README's table "What the router does with each failure")."""
    etype = (error_type or "").lower()
    if status == 429 or (status is None and etype in ("rate_limit_error", "rate_limit_exceeded")):
        if etype == "insufficient_quota":
            return QuotaExceededError
        if "request too large" in message.lower():  # OpenAI's TPM limit for one oversized request
            return PayloadTooLargeError
        return RateLimitError
    if status == 529 or etype == "overloaded_error":
        return OverloadedError
    if status is None or 200 <= status < 300:  # error event inside a 2xx body or stream
        cls = _TYPE_TO_ERROR.get(etype, ServerError)
        if cls is InvalidRequestError:
            return _invalid_request_class(etype, message)
        return cls
    if status >= 500:
        return ServerError
    if status == 401:
        return AuthenticationError
    if status == 403:
        return PermissionDeniedError
    if status == 404:
        return NotFoundError
    if status == 408:
        return ProviderTimeoutError
    if status == 413:
        return PayloadTooLargeError
    return _invalid_request_class(etype, message)


def _invalid_request_class(etype: str, message: str) -> type[ProviderError]:
    """A 400/422: too long for this model, a parameter this model rejects, or plainly invalid."""
    if etype in ("context_length_exceeded", "too_many_prompt_tokens", "string_above_max_length") or _CONTEXT_RE.search(
        message
    ):
        return ContextLengthError
    if etype in ("unsupported_parameter", "unsupported_value") or _UNSUPPORTED_RE.search(message):
        return UnsupportedParameterError
    return InvalidRequestError


# --------------------------------------------------------------------------- requests in

#: Request options an adapter translates (``metadata`` is the router's: logged, never sent).
REQUEST_OPTION_NAMES = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "stop",
    "seed",
    "top_p",
    "user",
)
ROLES = ("system", "developer", "user", "assistant", "tool")


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    """Structural checks every wire format shares; a :class:`RequestError` names the bad field."""
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise RequestError(f"must be a message object, got {type(m).__name__}", field=where)
        role = m.get("role")
        if role not in ROLES:
            raise RequestError(f"role must be one of {', '.join(ROLES)}, got {role!r}", field=f"{where}.role")
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            raise RequestError("content must be a string or a list of parts", field=f"{where}.content")
        if content is None and not (role == "assistant" and m.get("tool_calls")):
            raise RequestError("content is required (null only for an assistant turn with tool_calls)", field=where)
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                    raise RequestError("must be a content part with a type", field=f"{where}.content[{j}]")
        if role == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise RequestError("a tool message needs its tool_call_id", field=f"{where}.tool_call_id")
        calls = m.get("tool_calls")
        if calls is not None:
            if role != "assistant" or not isinstance(calls, list):
                raise RequestError("tool_calls is a list on an assistant message", field=f"{where}.tool_calls")
            for j, c in enumerate(calls):
                fn = c.get("function") if isinstance(c, Mapping) else None
                if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                    raise RequestError("must be {id, type: function, function: {name, arguments}}",
                                       field=f"{where}.tool_calls[{j}]")  # fmt: skip


def _check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    if not options:
        return {}
    for k in options:
        if k not in REQUEST_OPTION_NAMES:
            raise RequestError(f"unknown request field; accepted: {', '.join(REQUEST_OPTION_NAMES)}", field=k)
    return {k: v for k, v in options.items() if v is not None}


def _without_cache_control(m: Mapping[str, Any]) -> dict[str, Any]:
    """A message copied for an OpenAI-format body: Anthropic's ``cache_control`` markers removed."""
    out = dict(m)
    content = out.get("content")
    if isinstance(content, list) and any(isinstance(p, Mapping) and "cache_control" in p for p in content):
        out["content"] = [{k: v for k, v in p.items() if k != "cache_control"} for p in content]
    return out


@functools.lru_cache(maxsize=256)
def _is_azure(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host.endswith(_AZURE_HOSTS)


class OpenAIAdapter(ProviderAdapter):
    """OpenAI-compatible ``/chat/completions`` (OpenAI, Azure, Groq, Together, Mistral, DeepSeek, OpenRouter,
    Ollama, vLLM)."""

    name: ClassVar[str] = "openai"

    def build_request(
        self,
        *,
        base_url: str,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        temperature: float | None,
        api_key: str | None,
        n: int = 1,
        logprobs: bool = False,
        options: Mapping[str, Any] | None = None,
        reasoning: bool = False,
        reasoning_effort: str | None = None,
        stream: bool = False,
    ) -> RequestSpec:
        _check_counts(max_tokens, n)
        _check_messages(messages)
        opts = _check_options(options)
        body: dict[str, Any] = {"model": model, "messages": [_without_cache_control(m) for m in messages]}
        if reasoning:  # o-series / gpt-5: max_completion_tokens, the model's own temperature
            if logprobs:
                raise ValueError("reasoning models return no token log-probabilities")
            body["max_completion_tokens"] = max_tokens
            if reasoning_effort is not None:
                body["reasoning_effort"] = reasoning_effort
        else:
            body["max_tokens"] = max_tokens
            if temperature is not None:
                body["temperature"] = temperature
        if n > 1:
            body["n"] = n
        if logprobs:
            body["logprobs"] = True
        body.update(opts)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        headers = {"Content-Type": "application/json"}
        if api_key is not None:
            if _is_azure(base_url):
                headers["api-key"] = api_key
            else:
                headers["Authorization"] = f"Bearer {api_key}"
        return RequestSpec("POST", join_url(base_url, "/chat/completions"), headers, body)

    def _completion(self, payload: dict[str, Any], model: str) -> Completion:
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices:
            raise self._malformed("response has no choices", 200, model)
        if all(isinstance(c, dict) and isinstance(c.get("index"), int) for c in choices):
            choices = sorted(choices, key=lambda c: c["index"])
        texts: list[str] = []
        reasons: list[str | None] = []
        means: list[float] = []
        calls: list[tuple[ToolCall, ...]] = []
        refusals: list[str | None] = []
        for i, choice in enumerate(choices):
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                raise self._malformed(f"choice {i} has no message", 200, model)
            content = message.get("content")
            if content is not None and not isinstance(content, (str, list)):
                raise self._malformed(f"choice {i} message content is not text", 200, model)
            texts.append(text_of(content))
            reasons.append(choice.get("finish_reason"))
            calls.append(_openai_tool_calls(message.get("tool_calls")))
            refusal = message.get("refusal")
            refusals.append(refusal if isinstance(refusal, str) and refusal else None)
            lps = _token_logprobs(choice.get("logprobs"))
            if lps:
                means.append(_mean(lps))
        return Completion(
            texts=tuple(texts),
            finish_reasons=tuple(reasons),
            usage=self._usage(payload.get("usage"), model),
            model=str(payload.get("model") or model),
            response_id=str(payload.get("id") or ""),
            mean_logprobs=tuple(means) if len(means) == len(texts) else (),
            tool_calls=tuple(calls) if any(calls) else (),
            refusals=tuple(refusals) if any(r is not None for r in refusals) else (),
        )

    def _usage(self, usage: Any, model: str) -> Usage:
        if not isinstance(usage, dict):
            raise self._malformed("response has no usage object, so its cost cannot be computed", 200, model)
        prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        if prompt is None or completion is None:
            raise self._malformed("usage lacks prompt_tokens or completion_tokens", 200, model)
        cached = [
            _count(usage, "prompt_tokens_details", "cached_tokens"),
            _count(usage, "cached_tokens"),  # Together
            _count(usage, "prompt_cache_hit_tokens"),  # DeepSeek
        ]
        return Usage(
            input_tokens=prompt,
            output_tokens=completion,
            cache_read_tokens=max((c for c in cached if c is not None), default=0),
            cache_write_tokens=_count(usage, "prompt_tokens_details", "cache_write_tokens") or 0,
            reasoning_tokens=_count(usage, "completion_tokens_details", "reasoning_tokens") or 0,
        )

    def parse_stream(
        self, status: int, headers: HeaderMap, body: bytes, *, model: str = "", secrets: Sequence[str] = ()
    ) -> Completion:
        """Parse a ``chat.completion.chunk`` SSE stream (needs ``stream_options.include_usage``)."""
        if not 200 <= status < 300:
            raise self.parse_error(status, headers, body, model=model, secrets=secrets)
        texts: dict[int, list[str]] = {}
        reasons: dict[int, str | None] = {}
        lps: dict[int, list[float]] = {}
        calls: dict[int, dict[int, dict[str, Any]]] = {}
        refusals: dict[int, list[str]] = {}
        usage: Any = None
        resp_model, resp_id = "", ""
        for _event, data in _iter_sse(body):
            if data.strip() == "[DONE]":
                break
            chunk = self._load_event(data, status, model)
            embedded = self._embedded_error(chunk, headers, model, secrets)
            if embedded is not None:
                raise embedded
            resp_model = resp_model or str(chunk.get("model") or "")
            resp_id = resp_id or str(chunk.get("id") or "")
            if isinstance(chunk.get("usage"), dict):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                idx = choice["index"] if isinstance(choice.get("index"), int) else 0
                texts.setdefault(idx, [])
                reasons.setdefault(idx, None)
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    if isinstance(delta.get("content"), str):
                        texts[idx].append(delta["content"])
                    if isinstance(delta.get("refusal"), str):
                        refusals.setdefault(idx, []).append(delta["refusal"])
                    for frag in delta.get("tool_calls") or ():
                        if not isinstance(frag, dict):
                            continue
                        slot = calls.setdefault(idx, {}).setdefault(
                            frag["index"] if isinstance(frag.get("index"), int) else 0,
                            {"id": "", "name": "", "arguments": []},
                        )
                        fn_raw = frag.get("function")
                        fn: dict[str, Any] = fn_raw if isinstance(fn_raw, dict) else {}
                        slot["id"] = slot["id"] or str(frag.get("id") or "")
                        slot["name"] = slot["name"] or str(fn.get("name") or "")
                        if isinstance(fn.get("arguments"), str):
                            slot["arguments"].append(fn["arguments"])
                if choice.get("finish_reason"):
                    reasons[idx] = choice["finish_reason"]
                lps.setdefault(idx, []).extend(_token_logprobs(choice.get("logprobs")))
        if not texts:
            raise self._malformed("stream has no choices", status, model)
        order = sorted(texts)
        means = [_mean(lps[i]) for i in order if lps.get(i)]
        tool_calls = tuple(
            tuple(ToolCall(c["id"], c["name"], "".join(c["arguments"])) for _, c in sorted(calls.get(i, {}).items()))
            for i in order
        )
        refused = tuple(("".join(refusals[i]) or None) if i in refusals else None for i in order)
        return Completion(
            texts=tuple("".join(texts[i]) for i in order),
            finish_reasons=tuple(reasons[i] for i in order),
            usage=self._usage(usage, model),
            model=resp_model or model,
            response_id=resp_id,
            mean_logprobs=tuple(means) if len(means) == len(order) else (),
            tool_calls=tool_calls if any(tool_calls) else (),
            refusals=refused if any(r is not None for r in refused) else (),
        )


def _openai_tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    if not isinstance(raw, list):
        return ()
    out = []
    for c in raw:
        fn = c.get("function") if isinstance(c, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            args = fn.get("arguments")
            out.append(
                ToolCall(str(c.get("id") or ""), fn["name"], args if isinstance(args, str) else json.dumps(args))
            )
    return tuple(out)


def _token_logprobs(logprobs: Any) -> list[float]:
    """The ``logprob`` of each token in an OpenAI ``logprobs.content`` list."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return []
    return [
        float(tok["logprob"])
        for tok in content
        if isinstance(tok, dict) and isinstance(tok.get("logprob"), (int, float))
    ]


def _check_counts(max_tokens: int, n: int) -> None:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")


_DATA_URL = re.compile(r"data:(?P<media>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)


def _anthropic_part(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One OpenAI content part as an Anthropic content block."""
    kind = part.get("type")
    if kind == "text":
        block: dict[str, Any] = {"type": "text", "text": str(part.get("text", ""))}
    elif kind == "image_url":
        img = part.get("image_url")
        url = img.get("url") if isinstance(img, Mapping) else img
        if not isinstance(url, str):
            raise RequestError("image_url needs a url", field=where)
        m = _DATA_URL.match(url)
        if m:
            block = {"type": "image", "source": {"type": "base64", "media_type": m["media"], "data": m["data"]}}
        elif url.startswith(("http://", "https://")):
            block = {"type": "image", "source": {"type": "url", "url": url}}
        else:
            raise RequestError("an image is a data: URL or an http(s) URL", field=where)
    elif kind in ("image", "document", "tool_use", "tool_result"):
        block = {k: v for k, v in part.items()}  # already an Anthropic block
    else:
        raise RequestError(f"content parts of type {kind!r} cannot be sent to an Anthropic tier", field=where)
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _anthropic_content(content: Any, where: str) -> list[dict[str, Any]] | str:
    if isinstance(content, str):
        return content
    if content is None:
        return []
    return [_anthropic_part(p, f"{where}[{j}]") for j, p in enumerate(content)]


def _anthropic_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise RequestError("must be a list of tools", field="tools")
    out = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, Mapping) else None
        if not isinstance(t, Mapping) or t.get("type") != "function" or not isinstance(fn, Mapping):
            raise RequestError("must be {type: function, function: {name, description, parameters}}",
                               field=f"tools[{i}]")  # fmt: skip
        tool: dict[str, Any] = {
            "name": fn.get("name"),
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            tool["description"] = fn["description"]
        if "cache_control" in t:
            tool["cache_control"] = t["cache_control"]
        out.append(tool)
    return out


def _anthropic_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        out: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise RequestError(f"cannot be translated for Anthropic: {choice!r}", field="tool_choice")
    if out is not None and parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


class AnthropicAdapter(ProviderAdapter):
    """Anthropic's native Messages API (``/v1/messages``), from OpenAI-style messages."""

    name: ClassVar[str] = "anthropic"
    version: ClassVar[str] = "2023-06-01"

    def build_request(
        self,
        *,
        base_url: str,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        temperature: float | None,
        api_key: str | None,
        n: int = 1,
        logprobs: bool = False,
        options: Mapping[str, Any] | None = None,
        reasoning: bool = False,
        reasoning_effort: str | None = None,
        stream: bool = False,
    ) -> RequestSpec:
        _check_counts(max_tokens, n)
        if n > 1:
            raise ValueError(f"Anthropic returns one sample per request; got n={n} (make {n} calls instead)")
        if logprobs:
            raise ValueError("Anthropic's Messages API does not return token log-probabilities")
        if reasoning:
            raise ValueError("the reasoning request shape is for OpenAI-format tiers")
        _check_messages(messages)
        opts = _check_options(options)
        for key in ("seed", "response_format"):
            value = opts.get(key)
            if value is not None and not (key == "response_format" and isinstance(value, Mapping)
                                          and value.get("type") == "text"):  # fmt: skip
                raise RequestError("the Anthropic Messages API has no equivalent", field=key)
        system: list[dict[str, Any]] = []
        turns: list[dict[str, Any]] = []

        def add(role: str, blocks: list[dict[str, Any]] | str) -> None:
            if turns and turns[-1]["role"] == role:  # Anthropic wants turns to alternate: merge
                prev = turns[-1]["content"]
                prev_blocks = [{"type": "text", "text": prev}] if isinstance(prev, str) else prev
                new = [{"type": "text", "text": blocks}] if isinstance(blocks, str) else blocks
                turns[-1]["content"] = prev_blocks + new
            else:
                turns.append({"role": role, "content": blocks})

        for i, message in enumerate(messages):
            role = message["role"]
            where = f"messages[{i}].content"
            if role in ("system", "developer"):
                content = _anthropic_content(message.get("content"), where)
                system.extend([{"type": "text", "text": content}] if isinstance(content, str) else content)
            elif role == "user":
                add("user", _anthropic_content(message.get("content"), where))
            elif role == "assistant":
                content = _anthropic_content(message.get("content"), where)
                blocks = (
                    ([{"type": "text", "text": content}] if content else []) if isinstance(content, str) else content
                )
                for j, c in enumerate(message.get("tool_calls") or ()):
                    fn = c["function"]
                    raw = fn.get("arguments") or "{}"
                    try:
                        args = json.loads(raw) if isinstance(raw, str) else raw
                    except ValueError:
                        where_args = f"messages[{i}].tool_calls[{j}].function.arguments"
                        raise RequestError("arguments are not valid JSON", field=where_args) from None
                    blocks.append({"type": "tool_use", "id": c.get("id") or f"call_{i}_{j}", "name": fn["name"],
                                   "input": args})  # fmt: skip
                add("assistant", blocks if message.get("tool_calls") or not isinstance(content, str) else content)
            else:  # tool
                result = _anthropic_content(message.get("content"), where)
                add("user", [{"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": result}])
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
        if system:
            if any("cache_control" in b or b.get("type") != "text" for b in system):
                body["system"] = system  # blocks keep their cache_control
            else:
                body["system"] = "\n\n".join(str(b["text"]) for b in system)
        if temperature is not None:
            body["temperature"] = temperature
        if "tools" in opts:
            body["tools"] = _anthropic_tools(opts["tools"])
        choice = _anthropic_tool_choice(opts.get("tool_choice"), opts.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
        if "stop" in opts:
            stop = opts["stop"]
            body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if "top_p" in opts:
            body["top_p"] = opts["top_p"]
        if "user" in opts:
            body["metadata"] = {"user_id": str(opts["user"])}
        if stream:
            body["stream"] = True
        headers = {"anthropic-version": self.version, "content-type": "application/json"}
        if api_key is not None:
            headers["x-api-key"] = api_key
        return RequestSpec("POST", join_url(base_url, "/v1/messages"), headers, body)

    def _completion(self, payload: dict[str, Any], model: str) -> Completion:
        content = payload.get("content")
        if not isinstance(content, list):
            raise self._malformed("response has no content list", 200, model)
        calls = tuple(
            ToolCall(str(b.get("id") or ""), str(b.get("name") or ""), _dump(b.get("input")))
            for b in content
            if isinstance(b, dict) and b.get("type") == "tool_use"
        )
        return Completion(
            texts=(text_of(content),),
            finish_reasons=(_finish(payload.get("stop_reason")),),
            usage=self._usage(payload.get("usage"), model),
            model=str(payload.get("model") or model),
            response_id=str(payload.get("id") or ""),
            tool_calls=(calls,) if calls else (),
        )

    def _usage(self, usage: Any, model: str) -> Usage:
        if not isinstance(usage, dict):
            raise self._malformed("response has no usage object, so its cost cannot be computed", 200, model)
        fresh, output = _count(usage, "input_tokens"), _count(usage, "output_tokens")
        if fresh is None or output is None:
            raise self._malformed("usage lacks input_tokens or output_tokens", 200, model)
        read = _count(usage, "cache_read_input_tokens") or 0
        write = _count(usage, "cache_creation_input_tokens") or 0
        return Usage(
            input_tokens=fresh + read + write,
            output_tokens=output,
            cache_read_tokens=read,
            cache_write_tokens=write,
            reasoning_tokens=_count(usage, "output_tokens_details", "thinking_tokens") or 0,
        )

    def parse_stream(
        self, status: int, headers: HeaderMap, body: bytes, *, model: str = "", secrets: Sequence[str] = ()
    ) -> Completion:
        """Parse a Messages SSE stream (message_start, content_block_*, message_delta)."""
        if not 200 <= status < 300:
            raise self.parse_error(status, headers, body, model=model, secrets=secrets)
        message: dict[str, Any] | None = None
        usage: dict[str, Any] = {}
        parts: list[str] = []
        tools: dict[int, dict[str, Any]] = {}
        stop_reason: str | None = None
        for event, data in _iter_sse(body):
            obj = self._load_event(data, status, model)
            kind = obj.get("type") or event
            if kind == "error":
                raise self._embedded_error(obj, headers, model, secrets) or self._malformed(
                    "stream error event has no error object", status, model
                )
            elif kind == "message_start" and isinstance(obj.get("message"), dict):
                message = obj["message"]
                usage.update(message.get("usage") or {})
            elif kind == "content_block_start":
                block = obj.get("content_block")
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    idx = obj["index"] if isinstance(obj.get("index"), int) else len(tools)
                    tools[idx] = {"id": str(block.get("id") or ""), "name": str(block.get("name") or ""), "json": []}
            elif kind == "content_block_delta":
                delta = obj.get("delta")
                if isinstance(delta, dict) and delta.get("type") == "text_delta":
                    parts.append(str(delta.get("text", "")))
                elif isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                    slot = tools.get(obj["index"] if isinstance(obj.get("index"), int) else -1)
                    if slot is not None:
                        slot["json"].append(str(delta.get("partial_json", "")))
            elif kind == "message_delta":
                delta = obj.get("delta")
                if isinstance(delta, dict) and delta.get("stop_reason"):
                    stop_reason = delta["stop_reason"]
                delta_usage = obj.get("usage")
                if isinstance(delta_usage, dict):  # cumulative counts
                    usage.update({k: v for k, v in delta_usage.items() if v is not None})
        if message is None:
            raise self._malformed("stream has no message_start event", status, model)
        calls = tuple(
            ToolCall(t["id"], t["name"], _dump(_loads_or("".join(t["json"]) or "{}"))) for _, t in sorted(tools.items())
        )
        return Completion(
            texts=("".join(parts),),
            finish_reasons=(_finish(stop_reason),),
            usage=self._usage(usage or None, model),
            model=str(message.get("model") or model),
            response_id=str(message.get("id") or ""),
            tool_calls=(calls,) if calls else (),
        )


def _dump(value: Any) -> str:
    return json.dumps(value if value is not None else {}, separators=(",", ":"), ensure_ascii=False)


def _loads_or(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class DeltaDecoder:
    """Reads an SSE byte stream incrementally and returns the text deltas of the first choice as soon as
    each event is complete (OpenAI ``choices[0].delta.content``; Anthropic ``text_delta``). Everything
    else, and any malformed event, is skipped: the full body's ``parse_stream`` decides errors."""

    def __init__(self, provider: str) -> None:
        self._anthropic = provider == "anthropic"
        self._buf = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += self._decoder.decode(chunk)
        out: list[str] = []
        while True:
            m = _LINE_BREAK.search(self._buf)
            if m is None:
                break
            if m.group() == "\r" and m.end() == len(self._buf):
                break  # a CR at the end may be the first half of CRLF
            line, self._buf = self._buf[: m.start()], self._buf[m.end() :]
            if not line:
                if self._data:
                    text = self._delta("\n".join(self._data))
                    if text:
                        out.append(text)
                self._data = []
            elif line.startswith("data:"):
                self._data.append(line[5:].removeprefix(" "))
        return out

    def _delta(self, data: str) -> str | None:
        if data.strip() == "[DONE]":
            return None
        try:
            obj = json.loads(data)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        if self._anthropic:
            delta = obj.get("delta")
            if (
                obj.get("type") == "content_block_delta"
                and isinstance(delta, dict)
                and delta.get("type") == "text_delta"
            ):
                text = delta.get("text")
                return text if isinstance(text, str) else None
            return None
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                delta = choice.get("delta")
                if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                    return str(delta["content"])
        return None


ADAPTERS: dict[str, ProviderAdapter] = {"openai": OpenAIAdapter(), "anthropic": AnthropicAdapter()}


def get_adapter(name: str) -> ProviderAdapter:
    """The adapter for a wire format name (``openai`` or ``anthropic``)."""
    try:
        return ADAPTERS[name]
    except KeyError:
        choices = ", ".join(sorted(ADAPTERS))
        raise ConfigError(f"unknown provider adapter {name!r}; valid choices: {choices}") from None
