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
    │   ├── RetryableProviderError
    │   │   ├── RateLimitError           HTTP 429
    │   │   ├── ServerError              HTTP 5xx
    │   │   ├── OverloadedError          HTTP 529 (Anthropic "overloaded_error")
    │   │   ├── ProviderTimeoutError     the tier's timeout expired
    │   │   ├── ConnectionFailedError    the endpoint could not be reached
    │   │   └── MalformedResponseError   a 2xx body that cannot be parsed
    │   └── FatalProviderError
    │       ├── InvalidRequestError      HTTP 400 / 422 (and other 4xx)
    │       ├── AuthenticationError      HTTP 401 / 403
    │       └── NotFoundError            HTTP 404
    ├── RoutingError             a route could not produce an answer
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

from typing import Any, ClassVar

from routerlab.types import ErrorKind


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
    """A failure that repeats on retry: the request or the account is wrong."""

    kind: ClassVar[ErrorKind] = "fatal"
    retryable: ClassVar[bool] = False


class InvalidRequestError(FatalProviderError):
    kind: ClassVar[ErrorKind] = "invalid_request"


class AuthenticationError(FatalProviderError):
    kind: ClassVar[ErrorKind] = "auth"


class NotFoundError(FatalProviderError):
    kind: ClassVar[ErrorKind] = "not_found"


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
        AuthenticationError,
        NotFoundError,
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
