"""Every failure a client can see, as the OpenAI error object ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

from typing import Any

from hindsight.errors import HindsightError

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable", 500: "server_error"}


class APIError(Exception):
    """An HTTP error with the OpenAI error body; ``headers`` e.g. ``Retry-After`` for a 429."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def from_library(err: HindsightError) -> APIError:
    """A library error: one that names a request field (``param``) is that field's fault, a 400."""
    param = getattr(err, "param", None)
    return APIError(400, str(err), param=_openai_param(param) if param else None, code="invalid_value")


def failed(err: Exception) -> APIError:
    """A request that passed validation but could not be completed (e.g. a potential returned NaN)."""
    if isinstance(err, APIError):  # a field found wrong only while running (an unknown twist)
        return err
    if isinstance(err, HindsightError):
        return APIError(500, f"The request failed: {err}", code="method_failed")
    return APIError(500, f"The request failed: internal error ({type(err).__name__}).", code="internal_error")


def _openai_param(param: str) -> str:
    """Library request fields that are top-level OpenAI fields keep their name; the others live under hindsight."""
    top = {"n", "max_tokens", "temperature", "top_p", "seed", "stop", "model", "messages", "prompt"}
    return param if param in top or param.startswith("hindsight.") else f"hindsight.{param}"
