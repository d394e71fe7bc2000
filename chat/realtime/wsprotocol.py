"""The WebSocket protocol clients speak with the push process: frames, close codes, and its
AsyncAPI 3 description, generated from the same models the events are built from.

The push process builds its frames as text for speed (`push/frames.py`); the protocol tests
validate every frame they receive against the document built here.
"""

from __future__ import annotations

import math
import typing
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from chat.realtime import events

REF = "#/components/schemas/{model}"
# RFC 6455: a close frame's payload is at most 125 bytes, and the code takes two of them.
MAX_CLOSE_REASON_BYTES = 123


@dataclass(frozen=True, slots=True)
class Close:
    """A close code of the contract, with a reason that tells the client what to do next."""

    code: int
    reason: str = ""
    meaning: str = ""

    def __post_init__(self) -> None:
        if len(self.reason.encode()) > MAX_CLOSE_REASON_BYTES:
            raise ValueError(f"a close reason is at most {MAX_CLOSE_REASON_BYTES} bytes: {self.reason!r}")


# The client went away; nothing is sent.
GONE = Close(1001, meaning="the client left")
# A server-side failure (Redis down or hung, a bug): come back, but back off so an outage is not
# answered by every client reconnecting at once.
SERVER_ERROR = Close(1011, "server error; reconnect with back-off", "reconnect with back-off")
# Shutdown, or this process lost its subscription: the stream still holds every event, so the
# client resumes with its last_event_id, here or on another push process.
RESTARTING = Close(
    1012, "server restarting; reconnect", "reconnect with last_event_id, maybe to another process"
)
FRAME_TOO_LARGE = Close(1009, meaning="a client frame over 4 KiB")
TOKEN_INVALID = Close(4401, "token missing, invalid or expired", "get a new access token, then reconnect")
# The user was deactivated or erased: the handshake refuses them, and their open sockets close.
DEACTIVATED = Close(4403, "user deactivated or erased", "do not reconnect: the user may not connect any more")
TOO_SLOW = Close(4408, "too far behind; reconnect with last_event_id", "reconnect with last_event_id")
RATE_LIMITED = 4429
CLOSE_CODES = (
    FRAME_TOO_LARGE,
    SERVER_ERROR,
    RESTARTING,
    TOKEN_INVALID,
    DEACTIVATED,
    TOO_SLOW,
    Close(
        RATE_LIMITED, "too many sockets; retry after 5 s", "wait the seconds the reason names, then reconnect"
    ),
)


def rate_limited(what: str, retry_after: float) -> Close:
    """4429 with the retry hint an HTTP client would get in Retry-After, in whole seconds."""
    return Close(RATE_LIMITED, f"too many {what}; retry after {max(1, math.ceil(retry_after))} s")


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ready(_Frame):
    """First frame after authentication (after the replay when resuming)."""

    type: Literal["ready"]
    user_id: uuid.UUID
    connection_id: str
    replayed: int = Field(description="Events replayed before this frame.")
    last_event_id: str | None = Field(description="The newest event the user's stream holds.")


class ResyncRequired(_Frame):
    """last_event_id is older than what the server keeps: fetch state over REST."""

    type: Literal["resync_required"]


class Pong(_Frame):
    type: Literal["pong"]


class Error(_Frame):
    """A client frame the server did not understand; the connection stays open."""

    type: Literal["error"]
    detail: str


class Ping(_Frame):
    """The one frame a client sends."""

    type: Literal["ping"]


EVENT_ID = {"type": "string", "pattern": r"^\d+-\d+$", "description": "Per user, increasing; resume from it."}


def _event_models() -> list[type[BaseModel]]:
    stored: list[type[BaseModel]] = list(typing.get_args(events.StoredEvent))
    return [*stored, events.Typing]


def _type_of(model: type[BaseModel]) -> str:
    """The `type` a frame model is told apart by."""
    kind: str = typing.get_args(model.model_fields["type"].annotation)[0]
    return kind


@cache
def document(version: str, push_host: str = "localhost:8001") -> dict[str, Any]:
    """The AsyncAPI 3.0 description of `/ws`, from the event and frame models."""
    event_models = _event_models()
    control: list[type[BaseModel]] = [Ready, ResyncRequired, Pong, Error]
    models: list[type[BaseModel]] = [*event_models, *control, Ping]
    keys, definitions = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    schemas = definitions.get("$defs", {})
    messages: dict[str, Any] = {}
    for model in event_models:
        name = model.__name__
        if model is not events.Typing:
            # Stored events arrive with the recipient's event_id spliced in front.
            schemas[name]["properties"] = {"event_id": EVENT_ID, **schemas[name]["properties"]}
            schemas[name].setdefault("required", []).insert(0, "event_id")
    for model in models:
        # Every frame carries its type, defaulted in the model or not.
        required = schemas[model.__name__].setdefault("required", [])
        if "type" not in required:
            required.insert(0, "type")
        kind = _type_of(model)
        messages[model.__name__] = {
            "name": kind,
            "title": kind,
            "summary": (model.__doc__ or kind).strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": keys[(model, "serialization")]["$ref"]},
        }
    server_frames = [{"$ref": f"#/channels/ws/messages/{m.__name__}"} for m in (*event_models, *control)]
    closes = "\n".join(f"| `{c.code}` | `{c.reason}` | {c.meaning} |" for c in CLOSE_CODES)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "headless-chat push",
            "version": version,
            "description": (
                "Every event of the user's conversations, live, on every connection; one JSON object"
                " per text frame. Reconnect with `last_event_id` to get what was missed, in order, then"
                " live events; de-duplicate by `event_id`.\n\nA message's `kind` is `user`, or `system`:"
                " posted by the app's backend through the server API, with `sender_id` null; it"
                " arrives as `message.created` like any other, and counts as unread for everyone."
                "\n\nClose codes:\n\n"
                "| code | reason | what to do |\n|---|---|---|\n" + closes
            ),
        },
        "servers": {
            "push": {
                "host": push_host,
                "protocol": "ws",
                "pathname": "/ws",
                "description": "The push process (the Procfile's `push` line).",
                "security": [{"$ref": "#/components/securitySchemes/token"}],
            }
        },
        "channels": {
            "ws": {
                "address": "/ws",
                "messages": {name: message for name, message in messages.items()},
                "bindings": {
                    "ws": {
                        "query": {
                            "type": "object",
                            "properties": {
                                "token": {
                                    "type": "string",
                                    "description": "The access token; or an Authorization: Bearer header.",
                                },
                                "last_event_id": {
                                    "type": "string",
                                    "description": "Resume after this event.",
                                },
                            },
                        }
                    }
                },
            }
        },
        "operations": {
            "sendEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/ws"},
                "summary": "The push process sends events and control frames.",
                "messages": server_frames,
            },
            "receivePing": {
                "action": "receive",
                "channel": {"$ref": "#/channels/ws"},
                "summary": "The push process answers a ping with a pong.",
                "messages": [{"$ref": "#/channels/ws/messages/Ping"}],
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "token": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "The access token.",
                }
            },
        },
    }
