"""see_client: the Python SDK of SEE Sidecar (httpx + pydantic only; never imports torch or vLLM).

from see_client import SeeClient
with SeeClient("http://127.0.0.1:8000") as see:
    result = see.chat([{"role": "user", "content": "What is 2 + 2?"}], max_tokens=64)
    print(result.content, result.decision.action, result.self_evaluation.predicted_quality)
"""

from see_client.client import AsyncSeeClient, ChatOptions, SamplingOptions, SeeClient
from see_client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GatewayTimeoutError,
    NotFoundError,
    RateLimitError,
    RequestTooLargeError,
    SeeError,
    ServerError,
    ServiceUnavailableError,
)
from see_client.retry import NO_RETRIES, RetryEvent, RetryPolicy
from see_client.routing import AsyncEscalator, Escalator, FallbackEndpoint, Routed
from see_client.transport import StreamError
from see_client.types import (
    ATTRIBUTES,
    AttributeScore,
    CalibratedEvaluation,
    ChatChoice,
    ChatResult,
    Decision,
    FeedbackResult,
    GenerateResult,
    ScoreResult,
    SelfEvaluation,
    StreamEvent,
    Usage,
)

__all__ = [
    "ATTRIBUTES",
    "NO_RETRIES",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncEscalator",
    "AsyncSeeClient",
    "AttributeScore",
    "AuthenticationError",
    "BadRequestError",
    "CalibratedEvaluation",
    "ChatChoice",
    "ChatOptions",
    "ChatResult",
    "ConflictError",
    "Decision",
    "Escalator",
    "FallbackEndpoint",
    "FeedbackResult",
    "GatewayTimeoutError",
    "GenerateResult",
    "NotFoundError",
    "RateLimitError",
    "RequestTooLargeError",
    "RetryEvent",
    "RetryPolicy",
    "Routed",
    "SamplingOptions",
    "ScoreResult",
    "SeeClient",
    "SeeError",
    "SelfEvaluation",
    "ServerError",
    "ServiceUnavailableError",
    "StreamError",
    "StreamEvent",
    "Usage",
]
