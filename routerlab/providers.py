"""Provider adapters: pure translators between routerlab and a provider's wire format.

An adapter builds a :class:`RequestSpec` and parses a response body, an SSE
stream or an error body. It never sends, sleeps, retries or prices anything.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time
from typing import Any, ClassVar

from routerlab.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    OverloadedError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
)
from routerlab.types import Completion, Usage

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
}


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


def scrub(text: str) -> str:
    """Replace substrings that look like API keys or bearer tokens by ``REDACTED``."""
    return _SECRET_RE.sub("REDACTED", text)


def _scrub_json(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_json(v) for v in value]
    return value


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


def _text_of(content: Any) -> str:
    """Text of a message ``content``: a string, or the text parts of a block list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
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
    """Base adapter: shared error parsing and JSON handling."""

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
    ) -> RequestSpec:
        raise NotImplementedError

    def parse_response(self, status: int, headers: HeaderMap, body: bytes, *, model: str = "") -> Completion:
        """Parse a buffered response; a non-2xx status raises the typed error."""
        if not 200 <= status < 300:
            raise self.parse_error(status, headers, body, model=model)
        payload = self._load(body, status, model)
        embedded = self._embedded_error(payload, headers, model)
        if embedded is not None:
            raise embedded
        return self._completion(payload, model)

    def parse_stream(self, status: int, headers: HeaderMap, body: bytes, *, model: str = "") -> Completion:
        raise NotImplementedError

    def parse_error(self, status: int, headers: HeaderMap, body: bytes, *, model: str = "") -> ProviderError:
        """Return (do not raise) the typed error for a failed response."""
        try:
            payload: Any = json.loads(body) if body.strip() else None
        except (ValueError, UnicodeDecodeError):
            payload = None
        if payload is None:
            snippet = body[:300].decode("utf-8", errors="replace").strip()
            return self._error(status, headers, None, snippet or "empty error body", None, model)
        error_type, message = self._error_fields(payload)
        return self._error(status, headers, error_type, message, payload, model)

    # -- hooks for subclasses
    def _completion(self, payload: dict[str, Any], model: str) -> Completion:
        raise NotImplementedError

    # -- shared internals
    def _malformed(self, what: str, status: int | None, model: str) -> MalformedResponseError:
        return MalformedResponseError(what, provider=self.name, model=model, status=status)

    def _load(self, body: bytes, status: int, model: str) -> dict[str, Any]:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            start = scrub(body[:80].decode("utf-8", errors="replace"))
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

    def _embedded_error(self, payload: dict[str, Any], headers: HeaderMap, model: str) -> ProviderError | None:
        """The typed error for an error object delivered with a 2xx status or inside a stream."""
        if not payload.get("error") or ("choices" in payload and payload.get("type") != "error"):
            return None
        error_type, message = self._error_fields(payload)
        code = payload["error"].get("code") if isinstance(payload["error"], dict) else None
        status = code if isinstance(code, int) and 400 <= code <= 599 else None
        return self._error(status, headers, error_type, message, payload, model)

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
    ) -> ProviderError:
        cls = _error_class(status, error_type)
        return cls(
            scrub(message)[:_MAX_MESSAGE_CHARS],
            provider=self.name,
            model=model,
            status=status,
            error_type=error_type,
            retry_after_s=retry_after_seconds(headers),
            body=_scrub_json(payload),
        )


def _error_class(status: int | None, error_type: str | None) -> type[ProviderError]:
    if status == 429:
        return RateLimitError
    if status == 529 or error_type == "overloaded_error":
        return OverloadedError
    if status is None or 200 <= status < 300:  # error event inside a 2xx body or stream
        return _TYPE_TO_ERROR.get(error_type or "", ServerError)
    if status >= 500:
        return ServerError
    if status in (401, 403):
        return AuthenticationError
    if status == 404:
        return NotFoundError
    if status == 408:
        return ProviderTimeoutError
    return InvalidRequestError


class OpenAIAdapter(ProviderAdapter):
    """OpenAI-compatible ``/chat/completions`` (OpenAI, Groq, Together, Mistral, DeepSeek, OpenRouter, Ollama, vLLM)."""

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
    ) -> RequestSpec:
        _check_counts(max_tokens, n)
        body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages], "max_tokens": max_tokens}
        if temperature is not None:
            body["temperature"] = temperature
        if n > 1:
            body["n"] = n
        if logprobs:
            body["logprobs"] = True
        headers = {"Content-Type": "application/json"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        return RequestSpec("POST", f"{base_url.rstrip('/')}/chat/completions", headers, body)

    def _completion(self, payload: dict[str, Any], model: str) -> Completion:
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices:
            raise self._malformed("response has no choices", 200, model)
        if all(isinstance(c, dict) and isinstance(c.get("index"), int) for c in choices):
            choices = sorted(choices, key=lambda c: c["index"])
        texts: list[str] = []
        reasons: list[str | None] = []
        means: list[float] = []
        for i, choice in enumerate(choices):
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                raise self._malformed(f"choice {i} has no message", 200, model)
            content = message.get("content")
            if content is not None and not isinstance(content, (str, list)):
                raise self._malformed(f"choice {i} message content is not text", 200, model)
            texts.append(_text_of(content))
            reasons.append(choice.get("finish_reason"))
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

    def parse_stream(self, status: int, headers: HeaderMap, body: bytes, *, model: str = "") -> Completion:
        """Parse a ``chat.completion.chunk`` SSE stream (needs ``stream_options.include_usage``)."""
        if not 200 <= status < 300:
            raise self.parse_error(status, headers, body, model=model)
        texts: dict[int, list[str]] = {}
        reasons: dict[int, str | None] = {}
        lps: dict[int, list[float]] = {}
        usage: Any = None
        resp_model, resp_id = "", ""
        for _event, data in _iter_sse(body):
            if data.strip() == "[DONE]":
                break
            chunk = self._load_event(data, status, model)
            embedded = self._embedded_error(chunk, headers, model)
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
                if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                    texts[idx].append(delta["content"])
                if choice.get("finish_reason"):
                    reasons[idx] = choice["finish_reason"]
                lps.setdefault(idx, []).extend(_token_logprobs(choice.get("logprobs")))
        if not texts:
            raise self._malformed("stream has no choices", status, model)
        order = sorted(texts)
        means = [_mean(lps[i]) for i in order if lps.get(i)]
        return Completion(
            texts=tuple("".join(texts[i]) for i in order),
            finish_reasons=tuple(reasons[i] for i in order),
            usage=self._usage(usage, model),
            model=resp_model or model,
            response_id=resp_id,
            mean_logprobs=tuple(means) if len(means) == len(order) else (),
        )


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


class AnthropicAdapter(ProviderAdapter):
    """Anthropic's native Messages API (``/v1/messages``)."""

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
    ) -> RequestSpec:
        _check_counts(max_tokens, n)
        if n > 1:
            raise ValueError(f"Anthropic returns one sample per request; got n={n} (make {n} calls instead)")
        if logprobs:
            raise ValueError("Anthropic's Messages API does not return token log-probabilities")
        system: list[str] = []
        turns: list[dict[str, Any]] = []
        for i, message in enumerate(messages):
            role = message.get("role")
            if role == "system":
                system.append(_text_of(message.get("content")))
            elif role in ("user", "assistant"):
                turns.append({"role": role, "content": message.get("content")})
            else:
                raise ValueError(f"message {i} has role {role!r}; Anthropic accepts system, user and assistant")
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
        if system:
            body["system"] = "\n\n".join(system)
        if temperature is not None:
            body["temperature"] = temperature
        headers = {"anthropic-version": self.version, "content-type": "application/json"}
        if api_key is not None:
            headers["x-api-key"] = api_key
        return RequestSpec("POST", f"{base_url.rstrip('/')}/v1/messages", headers, body)

    def _completion(self, payload: dict[str, Any], model: str) -> Completion:
        content = payload.get("content")
        if not isinstance(content, list):
            raise self._malformed("response has no content list", 200, model)
        return Completion(
            texts=(_text_of(content),),
            finish_reasons=(payload.get("stop_reason"),),
            usage=self._usage(payload.get("usage"), model),
            model=str(payload.get("model") or model),
            response_id=str(payload.get("id") or ""),
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

    def parse_stream(self, status: int, headers: HeaderMap, body: bytes, *, model: str = "") -> Completion:
        """Parse a Messages SSE stream (message_start, content_block_delta, message_delta)."""
        if not 200 <= status < 300:
            raise self.parse_error(status, headers, body, model=model)
        message: dict[str, Any] | None = None
        usage: dict[str, Any] = {}
        parts: list[str] = []
        stop_reason: str | None = None
        for event, data in _iter_sse(body):
            obj = self._load_event(data, status, model)
            kind = obj.get("type") or event
            if kind == "error":
                raise self._embedded_error(obj, headers, model) or self._malformed(
                    "stream error event has no error object", status, model
                )
            elif kind == "message_start" and isinstance(obj.get("message"), dict):
                message = obj["message"]
                usage.update(message.get("usage") or {})
            elif kind == "content_block_delta":
                delta = obj.get("delta")
                if isinstance(delta, dict) and delta.get("type") == "text_delta":
                    parts.append(str(delta.get("text", "")))
            elif kind == "message_delta":
                delta = obj.get("delta")
                if isinstance(delta, dict) and delta.get("stop_reason"):
                    stop_reason = delta["stop_reason"]
                delta_usage = obj.get("usage")
                if isinstance(delta_usage, dict):  # cumulative counts
                    usage.update({k: v for k, v in delta_usage.items() if v is not None})
        if message is None:
            raise self._malformed("stream has no message_start event", status, model)
        return Completion(
            texts=("".join(parts),),
            finish_reasons=(stop_reason,),
            usage=self._usage(usage or None, model),
            model=str(message.get("model") or model),
            response_id=str(message.get("id") or ""),
        )


ADAPTERS: dict[str, ProviderAdapter] = {"openai": OpenAIAdapter(), "anthropic": AnthropicAdapter()}


def get_adapter(name: str) -> ProviderAdapter:
    """The adapter for a wire format name (``openai`` or ``anthropic``)."""
    try:
        return ADAPTERS[name]
    except KeyError:
        choices = ", ".join(sorted(ADAPTERS))
        raise ConfigError(f"unknown provider adapter {name!r}; valid choices: {choices}") from None
