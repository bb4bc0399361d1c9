"""OpenAI-style error responses: ``{"error": {"message", "type", "param", "code"}}`` with the right status."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class APIError(Exception):
    """An error answered to the client as an OpenAI error body.

    Args:
        status: the HTTP status (400, 401, 404, 422, 503...).
        message: what is wrong and how to fix it.
        param: the request field at fault, if any.
        code: a machine-readable code (``model_not_found``, ``context_length_exceeded``...).
    """

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
             413: "invalid_request_error", 422: "invalid_request_error", 503: "service_unavailable_error"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def server_error(err: Exception) -> APIError:
    """A failure of ours, named without a traceback."""
    return APIError(500, f"internal error: {type(err).__name__}: {err}", code="internal_error")
