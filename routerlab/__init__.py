"""routerlab: a cascade LLM router and the workbench to tune it.

The production path (this module's imports) stays light: httpx, the
provider adapters, pricing, the classifier, the breaker and the policy. The
workbench (pandas, matplotlib, ipywidgets) lives in modules you import
yourself: ``routerlab.workbench.outcomes``, ``routerlab.workbench.sweep``, ``routerlab.workbench.frontier``,
``routerlab.workbench.plots``, ``routerlab.workbench.widgets``.
"""

from routerlab.classifier import Classification, ClassifierSettings, Complexity, classify_complexity
from routerlab.errors import (
    AuthenticationError,
    CascadeExhaustedError,
    ConfigError,
    ConnectionFailedError,
    CostCapError,
    DataError,
    DatasetError,
    EvalSetError,
    FatalProviderError,
    InvalidRequestError,
    MalformedResponseError,
    MissingApiKeyError,
    ModelMismatchError,
    NotFoundError,
    OverloadedError,
    PolicyError,
    PricingError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ReplayMissError,
    RetryableProviderError,
    RouterlabError,
    RoutingError,
    ServerError,
    WorkbenchError,
)
from routerlab.policy import (
    ClassRoute,
    ConfidenceSettings,
    PolicyHolder,
    RouterPolicy,
    Tier,
    dump_policy,
    load_policy,
)
from routerlab.router import AsyncCascadeRouter, CascadeRouter
from routerlab.types import Attempt, AttemptOutcome, Completion, ErrorKind, RouteResult, Signal, Usage

__version__ = "0.1.0"

__all__ = [
    "AsyncCascadeRouter",
    "Attempt",
    "AttemptOutcome",
    "AuthenticationError",
    "CascadeExhaustedError",
    "CascadeRouter",
    "ClassRoute",
    "Classification",
    "ClassifierSettings",
    "Completion",
    "Complexity",
    "ConfidenceSettings",
    "ConfigError",
    "ConnectionFailedError",
    "CostCapError",
    "DataError",
    "DatasetError",
    "ErrorKind",
    "EvalSetError",
    "FatalProviderError",
    "InvalidRequestError",
    "MalformedResponseError",
    "MissingApiKeyError",
    "ModelMismatchError",
    "NotFoundError",
    "OverloadedError",
    "PolicyError",
    "PolicyHolder",
    "PricingError",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitError",
    "ReplayMissError",
    "RetryableProviderError",
    "RouteResult",
    "RouterPolicy",
    "RouterlabError",
    "RoutingError",
    "ServerError",
    "Signal",
    "Tier",
    "Usage",
    "WorkbenchError",
    "__version__",
    "classify_complexity",
    "dump_policy",
    "load_policy",
]
