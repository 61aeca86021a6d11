"""buzz's own errors: one vocabulary, rendered in the envelope of the surface the client speaks.

Upstream errors never pass through here; they are relayed as bytes. Everything in this module
is produced by buzz itself, so every `error.type` starts with `gateway_` and every response says
so in `x-buzz-error-source: gateway`.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from enum import Enum

import msgspec

from buzz.asgi import Send, send_response
from buzz.routes import Surface


class Kind(Enum):
    """(status, error.type, retryable) for each thing that can go wrong inside buzz."""

    AUTHENTICATION = (401, "gateway_authentication_error", False)
    PERMISSION = (403, "gateway_permission_error", False)
    NOT_FOUND = (404, "gateway_not_found_error", False)
    METHOD_NOT_ALLOWED = (405, "gateway_method_not_allowed_error", False)
    INVALID_REQUEST = (400, "gateway_invalid_request_error", False)
    TOO_LARGE = (413, "gateway_request_too_large", False)
    RATE_LIMIT = (429, "gateway_rate_limit_error", True)
    BILLING = (402, "gateway_billing_error", False)
    UPSTREAM = (502, "gateway_upstream_error", True)
    TIMEOUT = (504, "gateway_timeout_error", True)
    UNAVAILABLE = (503, "gateway_unavailable_error", True)
    INTERNAL = (500, "gateway_internal_error", True)  # a fault in buzz itself; should never be seen

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def type(self) -> str:
        return self.value[1]

    @property
    def retryable(self) -> bool:
        return self.value[2]


@dataclass(slots=True)
class GatewayError(Exception):
    """Raised anywhere on the request path; the pipeline turns it into a response.

    `message` is shown to the client and may be logged, so it must never quote the request
    or response body.
    """

    kind: Kind
    message: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.kind.type}: {self.message}"


# Google's canonical status names (google.rpc.Code) for the statuses buzz produces.
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "RESOURCE_EXHAUSTED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def anthropic_body(error: GatewayError, request_id: str) -> bytes:
    return msgspec.json.encode(
        {
            "type": "error",
            "error": {"type": error.kind.type, "message": error.message},
            "request_id": request_id,
        }
    )


def openai_body(error: GatewayError, request_id: str) -> bytes:
    # OpenAI's envelope has no request id; the x-buzz-request-id header carries it.
    return msgspec.json.encode(
        {"error": {"message": error.message, "type": error.kind.type, "param": None, "code": None}}
    )


def gemini_body(error: GatewayError, request_id: str) -> bytes:
    # Google's envelope has no free-form type: buzz's goes where Google puts machine-readable
    # reasons, an ErrorInfo in `details`.
    return msgspec.json.encode(
        {
            "error": {
                "code": error.kind.status,
                "message": error.message,
                "status": _GOOGLE_STATUS.get(error.kind.status, "UNKNOWN"),
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": error.kind.type,
                        "domain": "buzz",
                        "metadata": {"request_id": request_id},
                    }
                ],
            }
        }
    )


def _headers(error: GatewayError, request_id: str) -> list[tuple[bytes, bytes]]:
    # SDKs retry 408/409/429/5xx unless told otherwise: say explicitly which of ours are worth it.
    return [
        (b"x-buzz-request-id", request_id.encode()),
        (b"x-buzz-error-source", b"gateway"),
        (b"x-should-retry", b"true" if error.kind.retryable else b"false"),
        *error.headers,
    ]


_RENDER = {Surface.ANTHROPIC: anthropic_body, Surface.OPENAI: openai_body, Surface.GEMINI: gemini_body}


async def send_error(send: Send, error: GatewayError, request_id: str, surface: Surface) -> int:
    """buzz's own error, in the envelope of the surface the client speaks; its body's size."""
    body = _RENDER[surface](error, request_id)
    await send_response(send, error.kind.status, body, b"application/json", _headers(error, request_id))
    return len(body)


def where(exc: BaseException) -> str:
    """The file and line an exception was raised at: what buzz logs of its own faults, since an
    exception's message could quote request data."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
