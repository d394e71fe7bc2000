"""Request parsing and response writing shared by every resource."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeVar, overload
from urllib.parse import parse_qsl

import orjson
from falcon.asgi import Request, Response
from pydantic import BaseModel, ValidationError

from chat.domain import cursors
from chat.errors import BadRequest, NotFound, PayloadTooLarge, Unprocessable, field_error
from chat.infra.numbers import parse_int

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"
JSON_UTF8 = "application/json; charset=utf-8"
FORM = "application/x-www-form-urlencoded"


def dumps(payload: Any) -> bytes:
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    return orjson.dumps(payload, default=_default, option=orjson.OPT_UTC_Z)


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, uuid.UUID):  # asyncpg hands back its own UUID subclass, which orjson skips
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def send(resp: Response, payload: Any, status: int = 200) -> None:
    resp.status = status
    resp.content_type = JSON_UTF8
    resp.data = dumps(payload)


async def read_body(req: Request, max_bytes: int) -> bytes:
    """The raw body, refusing anything over the limit before reading it all into memory."""
    if req.content_length is not None and req.content_length > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
    data = await req.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
    return data


def _media_type(req: Request) -> str:
    return (req.content_type or "").split(";", 1)[0].strip().lower()


async def parse(req: Request, model: type[M], max_bytes: int, *, allow_form: bool = False) -> M:
    """Validate the body as `model`: 400 unparseable or wrong type, 413 too large, 422 invalid fields."""
    media_type = _media_type(req)
    raw = await read_body(req, max_bytes)
    if media_type == FORM and allow_form:
        try:
            fields = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError as exc:
            raise BadRequest("The form body is not valid UTF-8.") from exc
        return _validate(model, fields)
    if media_type != JSON and not (media_type.startswith("application/") and media_type.endswith("+json")):
        expected = "application/json" + (" or application/x-www-form-urlencoded" if allow_form else "")
        raise BadRequest(f"Content-Type must be {expected}.")
    if not raw.strip():
        raise BadRequest("The request body is empty; a JSON object is expected.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(data, dict):
        raise field_error("body", "A JSON object is expected.")
    return _validate(model, data)


def _validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc, "body") from exc


def validation_problem(exc: ValidationError, where: str) -> Unprocessable:
    errors = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(part) for part in (where, *err["loc"]))
        errors.append({"field": path, "message": err["msg"]})
    return Unprocessable("The request has invalid fields.", errors)


@overload
def query_int(req: Request, name: str, *, default: int, lo: int = 0, hi: int | None = None) -> int: ...


@overload
def query_int(
    req: Request, name: str, *, default: None = None, lo: int = 0, hi: int | None = None
) -> int | None: ...


def query_int(
    req: Request, name: str, *, default: int | None = None, lo: int = 0, hi: int | None = None
) -> int | None:
    raw = req.get_param(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse_int(raw, negative=True)
    except ValueError:
        raise field_error(f"query.{name}", "Must be an integer (ASCII digits).") from None
    if value < lo or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise field_error(f"query.{name}", f"Must be {bounds}.")
    return value


def query_uuid(req: Request, name: str, what: str) -> uuid.UUID | None:
    """An optional id in the query; 422 naming `query.<name>` for anything but a UUID."""
    raw = req.get_param(name)
    if raw is None:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise field_error(f"query.{name}", f"Must be {what} (a UUID).") from None


def limit_param(req: Request) -> int:
    return query_int(req, "limit", default=50, lo=1, hi=200)


def path_uuid(value: str, what: str = "resource") -> uuid.UUID:
    """A path id; anything that isn't a UUID names nothing, so it is a 404, not a 422."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"No such {what}.") from None


def time_cursor(req: Request) -> tuple[datetime, uuid.UUID] | None:
    """The `cursor` of a list ordered by (time, id); 422 for one this api did not issue."""
    raw = req.get_param("cursor")
    if not raw:
        return None
    try:
        return cursors.decode_at(raw)
    except ValueError:
        raise field_error("query.cursor", "Not a cursor this endpoint issued.") from None
