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
    CostCapError,
    DataError,
    MissingApiKeyError,
    ModelMismatchError,
    OverloadedError,
    PolicyError,
    PricingError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ReplayMissError,
    RouterlabError,
    RoutingError,
    ServerError,
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
from routerlab.types import Attempt, Completion, RouteResult, Usage

__version__ = "0.1.0"

__all__ = [
    "AsyncCascadeRouter",
    "Attempt",
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
    "CostCapError",
    "DataError",
    "MissingApiKeyError",
    "ModelMismatchError",
    "OverloadedError",
    "PolicyError",
    "PolicyHolder",
    "PricingError",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitError",
    "ReplayMissError",
    "RouteResult",
    "RouterPolicy",
    "RouterlabError",
    "RoutingError",
    "ServerError",
    "Tier",
    "Usage",
    "__version__",
    "classify_complexity",
    "dump_policy",
    "load_policy",
]
