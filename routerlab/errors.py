"""The routerlab error tree.

Every error routerlab raises on purpose derives from :class:`RouterlabError`::

    RouterlabError
    ├── ConfigError              a policy, tier or setting is invalid
    │   ├── PolicyError          a policy file/object is invalid (names the field)
    │   ├── MissingApiKeyError   the environment variable a tier names is unset
    │   └── ModelMismatchError   a tuned policy is loaded for other tier models
    ├── PricingError             a model has no known price (never priced as $0)
    ├── ProviderError            one provider call failed (``retryable`` says if
    │   │                        another tier/try may succeed)
    │   ├── RetryableProviderError   (``scope`` transient: the same tier may answer later)
    │   │   ├── RateLimitError           HTTP 429
    │   │   ├── ServerError              HTTP 5xx
    │   │   ├── OverloadedError          HTTP 529 (Anthropic "overloaded_error")
    │   │   ├── ProviderTimeoutError     the tier's deadline expired
    │   │   ├── ConnectionFailedError    the endpoint could not be reached
    │   │   └── MalformedResponseError   a 2xx body that cannot be parsed (or is too large)
    │   ├── FatalProviderError       (retrying the same tier with the same request fails again)
    │   │   ├── InvalidRequestError      HTTP 400 / 422 (and other 4xx); ``scope`` request
    │   │   │   ├── ContextLengthError          the prompt is longer than this model's window
    │   │   │   ├── PayloadTooLargeError        HTTP 413, or a 429 "Request too large" (TPM)
    │   │   │   └── UnsupportedParameterError   a parameter or value this model rejects
    │   │   ├── AuthenticationError      HTTP 401
    │   │   │   └── PermissionDeniedError       HTTP 403
    │   │   ├── NotFoundError            HTTP 404 (a retired model, an Azure DeploymentNotFound)
    │   │   └── QuotaExceededError       HTTP 429 insufficient_quota (no credit left)
    │   └── StreamClosedError        the caller closed a streamed route (or cancelled a route) early
    ├── RequestError             the request itself is invalid, or cannot be translated to a
    │                            tier's wire format (raised before any call is made)
    ├── RoutingError             a route could not produce an answer (or failed inside routerlab:
    │                            an unexpected error is wrapped in one, never leaked bare)
    │   ├── CascadeExhaustedError every tier failed or was skipped
    │   └── CostCapError          the cost cap forbids every remaining call
    ├── DataError                bad input data (eval sets, cassettes, datasets)
    │   ├── EvalSetError         names file, line and field
    │   ├── ReplayMissError      no recording for a request (names item/tier/model)
    │   └── DatasetError         download, hash or import problem
    └── WorkbenchError           an analysis the workbench cannot carry out as asked (a
                                 policy the sweep cannot simulate, an unknown scorer, an
                                 argument out of range); also a ``ValueError``

Messages are full sentences naming the bad value, where it came from and the
valid choices. API keys never appear in any message.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from routerlab.types import ErrorKind

ErrorScope = Literal["transient", "tier", "request"]
"""How far a provider error reaches: ``transient`` (this tier, now: another try may succeed),
``tier`` (this tier, for this request or for every request: the next tier may succeed) or
``request`` (the request may be wrong for every tier)."""

BreakerUse = Literal["failure", "disable", "none"]
"""What a provider error does to its tier's circuit breaker: count a ``failure``, ``disable`` the tier
for the breaker's longer ``disable_s`` (a key or a model that is gone), or nothing (``none``: the error
says something about this request, not about the tier's health)."""


class RouterlabError(Exception):
    """Root of every error routerlab raises on purpose.

    ``attempts`` holds the steps of the route that ended in this error (empty outside a route)."""

    attempts: tuple[Any, ...] = ()


class ConfigError(RouterlabError):
    """A setting is invalid."""


class PolicyError(ConfigError):
    """A policy is invalid; ``field`` is the dotted path of the bad field."""

    def __init__(self, message: str, *, field: str | None = None, source: str | None = None) -> None:
        self.field = field
        self.source = source
        where = f"{source}: " if source else ""
        at = f"field '{field}': " if field else ""
        super().__init__(f"{where}{at}{message}")


class MissingApiKeyError(ConfigError):
    """The environment variable a tier names for its API key is not set."""


class ModelMismatchError(ConfigError):
    """A tuned policy names tier models other than the ones it was tuned on."""


class PricingError(RouterlabError):
    """A model has no known price."""


class ProviderError(RouterlabError):
    """One provider call failed.

    ``kind`` is a short stable name (``rate_limit``, ``server``, ``overloaded``,
    ``timeout``, ``malformed``, ``invalid_request``, ``auth``, ``not_found``).
    """

    kind: ClassVar[ErrorKind] = "provider"
    retryable: ClassVar[bool] = False
    scope: ClassVar[ErrorScope] = "tier"
    breaker_use: ClassVar[BreakerUse] = "failure"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        error_type: str | None = None,
        retry_after_s: float | None = None,
        body: Any = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        self.error_type = error_type
        self.retry_after_s = retry_after_s
        self.body = body
        self.message = message
        head = f"{provider} {model}".strip()
        code = f"HTTP {status}" if status is not None else self.kind
        super().__init__(f"{head}: {code}: {message}" if head else f"{code}: {message}")


class RetryableProviderError(ProviderError):
    """A failure another try or another tier may not meet."""

    kind: ClassVar[ErrorKind] = "retryable"
    retryable: ClassVar[bool] = True
    scope: ClassVar[ErrorScope] = "transient"
    breaker_use: ClassVar[BreakerUse] = "failure"


class RateLimitError(RetryableProviderError):
    kind: ClassVar[ErrorKind] = "rate_limit"


class ServerError(RetryableProviderError):
    kind: ClassVar[ErrorKind] = "server"


class OverloadedError(RetryableProviderError):
    kind: ClassVar[ErrorKind] = "overloaded"


class ProviderTimeoutError(RetryableProviderError):
    kind: ClassVar[ErrorKind] = "timeout"


class ConnectionFailedError(RetryableProviderError):
    kind: ClassVar[ErrorKind] = "connection"


class MalformedResponseError(RetryableProviderError):
    kind: ClassVar[ErrorKind] = "malformed"


class FatalProviderError(ProviderError):
    """A failure that repeats when the same request goes to the same tier: the request, the model or the
    account is wrong there. The route still moves on to the next tier (see ``scope``)."""

    kind: ClassVar[ErrorKind] = "fatal"
    retryable: ClassVar[bool] = False
    scope: ClassVar[ErrorScope] = "tier"
    breaker_use: ClassVar[BreakerUse] = "failure"


class InvalidRequestError(FatalProviderError):
    """The provider rejected the request as invalid. Another tier may accept it (other models, other
    validation); when every tier tried rejects it, the route raises this error."""

    kind: ClassVar[ErrorKind] = "invalid_request"
    scope: ClassVar[ErrorScope] = "request"
    breaker_use: ClassVar[BreakerUse] = "none"


class ContextLengthError(InvalidRequestError):
    """The prompt (plus max_tokens) does not fit this model's context window: a larger tier may take it."""

    kind: ClassVar[ErrorKind] = "context_length"
    scope: ClassVar[ErrorScope] = "tier"


class PayloadTooLargeError(InvalidRequestError):
    """The request is too large for this tier (HTTP 413, or OpenAI's 429 "Request too large ... tokens
    per min", which no retry can fix)."""

    kind: ClassVar[ErrorKind] = "payload_too_large"
    scope: ClassVar[ErrorScope] = "tier"


class UnsupportedParameterError(InvalidRequestError):
    """This model rejects a parameter or value of the request (``stop`` on a reasoning model, a system
    role on o1-mini, ``n`` on Groq)."""

    kind: ClassVar[ErrorKind] = "unsupported_parameter"
    scope: ClassVar[ErrorScope] = "tier"


class AuthenticationError(FatalProviderError):
    """The tier's key was refused (HTTP 401): the tier is disabled for the breaker's ``disable_s``."""

    kind: ClassVar[ErrorKind] = "auth"
    breaker_use: ClassVar[BreakerUse] = "disable"


class PermissionDeniedError(AuthenticationError):
    """The key may not use this model or endpoint (HTTP 403)."""

    kind: ClassVar[ErrorKind] = "permission"


class NotFoundError(FatalProviderError):
    """The model or deployment does not exist (HTTP 404): disabled for the breaker's ``disable_s``."""

    kind: ClassVar[ErrorKind] = "not_found"
    breaker_use: ClassVar[BreakerUse] = "disable"


class QuotaExceededError(FatalProviderError):
    """The account has no quota or credit left (HTTP 429 ``insufficient_quota``): retrying cannot help."""

    kind: ClassVar[ErrorKind] = "quota"
    breaker_use: ClassVar[BreakerUse] = "disable"


class RequestError(RouterlabError, ValueError):
    """The request is invalid (a malformed message, an unknown field) or cannot be translated to the wire
    format of a tier the route may use; raised before any call is made. ``field`` names the bad part."""

    def __init__(self, message: str, *, field: str | None = None, tier: str | None = None) -> None:
        self.field = field
        self.tier = tier
        self.reason = message
        at = f"field '{field}': " if field else ""
        to = f" (tier {tier!r})" if tier else ""
        super().__init__(f"{at}{message}{to}")


class StreamClosedError(ProviderError):
    """The caller closed a streamed route, or cancelled a route, before it ended (not the provider's
    fault: the tier's breaker is not touched). The route's log line says so."""

    kind: ClassVar[ErrorKind] = "closed"
    scope: ClassVar[ErrorScope] = "request"
    breaker_use: ClassVar[BreakerUse] = "none"


class RoutingError(RouterlabError):
    """A route produced no answer; ``attempts`` holds what was tried."""

    def __init__(self, message: str, *, attempts: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.attempts = attempts


class CascadeExhaustedError(RoutingError):
    """Every tier failed or was skipped."""


class CostCapError(RoutingError):
    """The per-query cost cap forbids every remaining call and no answer exists."""


class DataError(RouterlabError):
    """Bad input data."""


class EvalSetError(DataError):
    """An eval set is invalid; the message names file, line and field."""

    def __init__(self, message: str, *, path: str = "", line: int | None = None, field: str | None = None) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.reason = message
        loc = path
        if line is not None:
            loc += f":{line}"
        if field:
            loc += f": field '{field}'"
        super().__init__(f"{loc}: {message}" if loc else message)


class ReplayMissError(DataError):
    """A request has no recording; names the item, tier and model."""

    def __init__(
        self, message: str, *, item_id: str | None = None, tier: str | None = None, model: str | None = None
    ) -> None:
        self.item_id = item_id
        self.tier = tier
        self.model = model
        super().__init__(message)


class DatasetError(DataError):
    """A dataset download, hash check or import failed."""


class WorkbenchError(RouterlabError, ValueError):
    """The sweep, frontier or study cannot do what was asked; the message says why and what would work."""


PROVIDER_ERRORS: dict[str, type[ProviderError]] = {
    c.kind: c
    for c in (
        RateLimitError,
        ServerError,
        OverloadedError,
        ProviderTimeoutError,
        ConnectionFailedError,
        MalformedResponseError,
        InvalidRequestError,
        ContextLengthError,
        PayloadTooLargeError,
        UnsupportedParameterError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        QuotaExceededError,
        RetryableProviderError,
        FatalProviderError,
    )
}
"""Each provider error kind and its class (how a recorded ``error_kind`` becomes the error again)."""


def provider_error(kind: str, message: str, *, provider: str = "", model: str = "") -> ProviderError:
    """The provider error of ``kind`` (a :data:`PROVIDER_ERRORS` key), e.g. from an outcome table."""
    try:
        cls = PROVIDER_ERRORS[kind]
    except KeyError:
        raise DataError(
            f"unknown provider error kind {kind!r}; known kinds: {', '.join(sorted(PROVIDER_ERRORS))}"
        ) from None
    return cls(message, provider=provider, model=model)
