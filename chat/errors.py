"""One error type for the whole product; the api maps it to RFC 9457 problem details once."""

from __future__ import annotations

from typing import Any, Protocol


class HasHeaders(Protocol):
    def headers(self) -> dict[str, str]: ...


class ChatError(Exception):
    """A failure a client caused or must know about, with the HTTP status that says which."""

    status = 400
    title = "Bad Request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class BadRequest(ChatError):
    status = 400
    title = "Bad Request"


class Unauthorized(ChatError):
    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str, *, invalid_token: bool = False, **extra: Any) -> None:
        # RFC 6750: name the scheme, and say so when a token was sent but is not acceptable.
        challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
        super().__init__(detail, headers={"WWW-Authenticate": challenge}, **extra)


class Forbidden(ChatError):
    status = 403
    title = "Forbidden"


class NotFound(ChatError):
    status = 404
    title = "Not Found"


class Conflict(ChatError):
    status = 409
    title = "Conflict"


class PayloadTooLarge(ChatError):
    status = 413
    title = "Payload Too Large"


class Unprocessable(ChatError):
    status = 422
    title = "Unprocessable Content"

    def __init__(self, detail: str, errors: list[dict[str, str]]) -> None:
        super().__init__(detail, errors=errors)


class TooManyRequests(ChatError):
    status = 429
    title = "Too Many Requests"

    def __init__(self, detail: str, retry_after: int, limit: HasHeaders | None = None) -> None:
        headers = {**(limit.headers() if limit else {}), "Retry-After": str(max(1, retry_after))}
        super().__init__(detail, headers=headers)


class ServiceUnavailable(ChatError):
    status = 503
    title = "Service Unavailable"

    def __init__(self, detail: str, retry_after: int = 2) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


def field_error(field: str, message: str) -> Unprocessable:
    return Unprocessable("The request has invalid fields.", [{"field": field, "message": message}])
