"""The OpenAPI 3.1 document, generated from the code: Falcon's route table, the pydantic models
that validate requests, and one description per operation below.

`describe(routes)` walks the route table the app is built from; a route without a description
here is an error, and a test holds the document equal to the routes Falcon really serves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from typing import Any

from falcon.routing import map_http_methods
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api import representations as r
from api.resources import auth, conversations, messages, participants, read_markers, uploads, webhooks
from chat.schemas import ConversationOut, MessageOut, UserOut, UserProfileOut

JSON = "application/json"
PROBLEM = "application/problem+json"
REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Op:
    tag: str
    summary: str
    ok: dict[int, tuple[str, type[BaseModel] | None]]
    body: type[BaseModel] | None = None
    example: dict[str, Any] | None = None
    form: bool = False
    query: tuple[Param, ...] = ()
    auth: bool = True
    admin: bool = False
    limited: bool = False
    dependencies: bool = True
    errors: dict[int, str] = field(default_factory=dict)
    description: str = ""
    media: str = JSON


LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Page size.")
CURSOR = Param("cursor", {"type": "string"}, "`next_cursor` of the previous page.")
SEQ = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
ID = {"type": "string", "format": "uuid"}
# Path parameters that are not ids.
PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "job_id": {"type": "string"},
    "emoji": {"type": "string", "minLength": 1, "maxLength": 32, "pattern": r"^\S+$"},
}
EXPIRES = Param("expires", {"type": "string"}, "Part of the signed URL: when it expires (unix seconds).")
SIGNATURE = Param("signature", {"type": "string"}, "Part of the signed URL: its HMAC-SHA256.")
LOCAL_DISK = (
    "Only with the local-disk store (no `S3_BUCKET`): the presigned URLs the api hands out point "
    "here, and their signature is the credential, so no bearer token. With S3 this is `404`."
)
MINUTES = {"type": "integer", "minimum": 1, "maximum": 120, "default": 60}
EXAMPLE_USER = "6f1c1d52-8d0e-4c1e-9a55-2f9b1f4b7e10"
NO_CONTENT: tuple[str, None] = ("Done.", None)


def _probe(summary: str, ok: tuple[str, type[BaseModel] | None], **more: Any) -> Op:
    """An operator's endpoint: no token, and it must answer even when a dependency does not."""
    return Op("operations", summary, {200: ok}, auth=False, dependencies=False, **more)


HEALTH = _probe("Liveness", ("The process runs.", r.Health))
READY = _probe(
    "Readiness: Postgres and Redis answer",
    ("Ready.", r.Readiness),
    errors={503: "A dependency does not answer; `checks` says which."},
)
METRICS = _probe("Prometheus metrics", ("Prometheus text exposition format.", None), media="text/plain")
CONVERSATION = "conversations"
MESSAGES = "messages"
ADMIN = "admin"

OPERATIONS: dict[tuple[str, str], Op] = {
    ("/healthz", "GET"): HEALTH,
    ("/readyz", "GET"): READY,
    ("/metrics", "GET"): METRICS,
    ("/api/v1/healthz", "GET"): HEALTH,
    ("/api/v1/readyz", "GET"): READY,
    ("/api/v1/metrics", "GET"): METRICS,
    ("/api/v1/auth/register", "POST"): Op(
        "auth",
        "Register a user",
        {201: ("Registered; `Location` names the user.", UserOut)},
        body=auth.RegisterBody,
        example={"username": "alice", "password": "correct horse battery", "display_name": "Alice"},
        auth=False,
        limited=True,
        errors={409: "The username is taken (case-insensitively)."},
    ),
    ("/api/v1/auth/login", "POST"): Op(
        "auth",
        "Log in: an access token and a refresh token",
        {200: ("Signed in.", r.TokenPair)},
        body=auth.LoginBody,
        example={"username": "alice", "password": "correct horse battery"},
        form=True,
        auth=False,
        limited=True,
        errors={401: "Wrong username or password."},
        description="JSON, or form-encoded as OAuth2 password clients send it.",
    ),
    ("/api/v1/auth/refresh", "POST"): Op(
        "auth",
        "Trade a refresh token for a new pair",
        {200: ("A new pair; the old refresh token is retired.", r.TokenPair)},
        body=auth.RefreshBody,
        example={"refresh_token": "h2Kq…"},
        auth=False,
        errors={401: "Unknown, expired or revoked; a retired token revokes its whole login."},
    ),
    ("/api/v1/auth/logout", "POST"): Op(
        "auth",
        "Log out: revoke the login of a refresh token",
        {204: NO_CONTENT},
        body=auth.RefreshBody,
        example={"refresh_token": "h2Kq…"},
    ),
    ("/api/v1/users", "GET"): Op(
        "users",
        "Find users by username prefix",
        {200: ("Users, by username.", r.UserPage)},
        query=(Param("q", {"type": "string"}, "Username prefix, case-insensitive."), LIMIT, CURSOR),
    ),
    ("/api/v1/users/me", "GET"): Op("users", "The signed-in user", {200: ("The user.", UserOut)}),
    ("/api/v1/users/me/blocks", "GET"): Op(
        "users", "The users I blocked", {200: ("My blocks.", r.Blocks)}, query=(LIMIT, CURSOR)
    ),
    ("/api/v1/users/me/blocks/{user_id}", "PUT"): Op(
        "users",
        "Block a user",
        {204: NO_CONTENT},
        errors={404: "No such user.", 422: "Blocking myself."},
        description=(
            "Idempotent. The blocked user can no longer open a direct conversation with me, or send, "
            "react or type in ours (`403`); no event tells them. Blocking myself is `422`."
        ),
    ),
    ("/api/v1/users/me/blocks/{user_id}", "DELETE"): Op(
        "users",
        "Unblock a user",
        {204: NO_CONTENT},
        errors={404: "No such user.", 422: "Unblocking myself."},
        description="Idempotent.",
    ),
    ("/api/v1/users/me", "PATCH"): Op(
        "users",
        "Change the display name",
        {200: ("The user.", UserOut)},
        body=auth.DisplayName,
        example={"display_name": "Alice B."},
    ),
    ("/api/v1/users/{user_id}", "GET"): Op(
        "users", "A user's profile and presence", {200: ("The profile.", UserProfileOut)}
    ),
    ("/api/v1/conversations", "GET"): Op(
        CONVERSATION,
        "My conversations, most recent activity first",
        {200: ("A page.", r.ConversationPage)},
        query=(LIMIT, CURSOR),
    ),
    ("/api/v1/conversations", "POST"): Op(
        CONVERSATION,
        "Start a direct or group conversation",
        {
            201: ("Created; `Location` names it.", ConversationOut),
            200: ("The existing direct conversation of that pair.", ConversationOut),
        },
        body=conversations.CreateBody,
        example={
            "kind": "group",
            "title": "Lunch",
            "participant_ids": ["6f1c1d52-8d0e-4c1e-9a55-2f9b1f4b7e10"],
        },
    ),
    ("/api/v1/conversations/{conversation_id}", "GET"): Op(
        CONVERSATION, "One conversation", {200: ("The conversation.", ConversationOut)}
    ),
    ("/api/v1/conversations/{conversation_id}/participants", "POST"): Op(
        CONVERSATION,
        "Add people to a group",
        {200: ("The conversation.", ConversationOut)},
        body=participants.AddBody,
        example={"user_ids": [EXAMPLE_USER]},
    ),
    ("/api/v1/conversations/{conversation_id}/participants/{user_id}", "DELETE"): Op(
        CONVERSATION,
        "Leave, or remove someone (owner only)",
        {204: NO_CONTENT},
        errors={
            403: "Only the owner removes others.",
            422: "A direct conversation's participants are fixed.",
        },
    ),
    ("/api/v1/conversations/{conversation_id}/settings", "PATCH"): Op(
        CONVERSATION,
        "My settings for a conversation",
        {200: ("The settings as they now are.", r.Settings)},
        body=read_markers.SettingsBody,
        example={"muted": True},
        description=(
            "Per participant. A muted conversation still delivers every event; it counts nothing as "
            "unread (`unread_count` and `unread_mentions` are 0) and shows `muted: true`."
        ),
    ),
    ("/api/v1/conversations/{conversation_id}/read", "POST"): Op(
        CONVERSATION,
        "Move my read marker forward",
        {204: NO_CONTENT},
        body=read_markers.ReadBody,
        example={"seq": 12},
    ),
    ("/api/v1/conversations/{conversation_id}/typing", "POST"): Op(
        CONVERSATION,
        "Tell the others I am typing",
        {204: NO_CONTENT},
        limited=True,
        errors={403: "The other participant of this direct conversation blocked me."},
        description="At most one per second per user and conversation.",
    ),
    ("/api/v1/conversations/{conversation_id}/messages", "POST"): Op(
        MESSAGES,
        "Send a message (queued)",
        {202: ("Accepted and queued; `Location` names the message.", r.Accepted)},
        body=messages.SendBody,
        example={"body": "Hello!", "client_id": "9d3b2f0c-local-1"},
        limited=True,
        errors={409: "The client_id was used before with another body (or other attachments)."},
        description=(
            "`reply_to` makes the message a reply: it must name a stored message of the same "
            "conversation (`422` otherwise), whose `reply_count` and `last_reply_at` then count it. "
            "`attachments` names up to 10 distinct uploads of mine (`POST /uploads`), each attached "
            "to no other message and with its bytes uploaded as announced (`422` otherwise)."
        ),
    ),
    ("/api/v1/conversations/{conversation_id}/messages", "GET"): Op(
        MESSAGES,
        "History, in ascending seq",
        {200: ("A page of messages.", r.History)},
        query=(
            Param("before", SEQ, "The newest `limit` messages below this seq."),
            Param("after", SEQ, "The oldest `limit` messages above this seq."),
            Param("thread", ID, "Only the replies to this message (of this conversation; `404` otherwise)."),
            LIMIT,
        ),
    ),
    ("/api/v1/search/messages", "GET"): Op(
        MESSAGES,
        "Search my messages",
        {200: ("A page of matches.", r.SearchPage)},
        errors={404: "`conversation_id` names a conversation I am not in (or none)."},
        query=(
            Param(
                "q",
                {"type": "string", "minLength": 1, "maxLength": 256},
                'The words to find (required). Every word must match; `"quoted words"` are a phrase, '
                "`-word` excludes.",
            ),
            Param("conversation_id", ID, "Only this conversation (`404` unless I am in it)."),
            LIMIT,
            CURSOR,
        ),
        description=(
            "Full-text search over the conversations I am in now, ranked. Deleted messages and "
            "messages of users I blocked are never found. Words are matched whole, ignoring case; "
            "the embedded dev mode (SQLite) matches every word as a substring instead."
        ),
    ),
    ("/api/v1/messages/{message_id}", "GET"): Op(
        MESSAGES, "One message, once stored", {200: ("The message.", MessageOut)}
    ),
    ("/api/v1/messages/{message_id}", "PATCH"): Op(
        MESSAGES,
        "Edit my message (queued)",
        {202: ("Accepted and queued.", r.Accepted)},
        body=messages.EditBody,
        example={"body": "Hello again!"},
        errors={403: "Only the sender edits.", 409: "The message was deleted."},
    ),
    ("/api/v1/messages/{message_id}", "DELETE"): Op(
        MESSAGES,
        "Delete a message (queued)",
        {202: ("Accepted and queued.", r.Accepted)},
        errors={403: "Only the sender, or a group's owner."},
    ),
    ("/api/v1/messages/{message_id}/reactions/{emoji}", "PUT"): Op(
        MESSAGES,
        "React with an emoji (queued)",
        {204: NO_CONTENT},
        errors={
            403: "The other participant of this direct conversation blocked me.",
            409: "The message was deleted.",
        },
        description=(
            "Idempotent. A worker stores the reaction in the order the api accepted changes to it and "
            "publishes `reaction.added` when it appears. The emoji is 1 to 32 visible characters, no "
            "whitespace (`422`); URL-encode it."
        ),
    ),
    ("/api/v1/messages/{message_id}/reactions/{emoji}", "DELETE"): Op(
        MESSAGES,
        "Take a reaction back (queued)",
        {204: NO_CONTENT},
        description="Idempotent; `reaction.removed` is published when the reaction goes away.",
    ),
    ("/api/v1/uploads", "POST"): Op(
        MESSAGES,
        "Announce a file to attach: where to PUT its bytes",
        {201: ("A presigned upload URL and the headers to send with it.", r.UploadTicket)},
        body=uploads.UploadBody,
        example={"filename": "cat.png", "content_type": "image/png", "size": 48213},
        limited=True,
        errors={422: "A bad filename or content type, or a size of 0 or over UPLOAD_MAX_BYTES."},
        description=(
            "Then `PUT` the bytes to `upload_url` with exactly `headers`, before `expires_at`, and "
            "name `id` in `attachments` of one message of yours. Filenames are 1 to 255 characters, "
            "no path separators or control characters; the content type is `type/subtype`."
        ),
    ),
    ("/api/v1/uploads/{upload_id}/content", "PUT"): Op(
        MESSAGES,
        "Local-disk store: the bytes of an upload",
        {204: ("Stored.", None)},
        query=(
            EXPIRES,
            Param("content_type", {"type": "string"}, "Part of the signed URL: the announced type."),
            Param("size", {"type": "string"}, "Part of the signed URL: the announced size."),
            SIGNATURE,
        ),
        auth=False,
        errors={
            403: "A signature that is missing, wrong or expired.",
            409: "The bytes are stored already.",
            413: "More bytes than the upload announced.",
            422: "A Content-Type or Content-Length other than announced, or fewer bytes.",
        },
        description=LOCAL_DISK + " The body is the file's bytes, sent with the headers `POST /uploads` gave.",
    ),
    ("/api/v1/uploads/{upload_id}/content", "GET"): Op(
        MESSAGES,
        "Local-disk store: download an attachment",
        {200: ("The file, with its content type.", None)},
        query=(EXPIRES, Param("filename", {"type": "string"}, "Part of the signed URL."), SIGNATURE),
        auth=False,
        errors={403: "A signature that is missing, wrong or expired."},
        media="application/octet-stream",
        description=LOCAL_DISK + " Attachments' `url` in message reads point here.",
    ),
    ("/api/v1/jobs/{job_id}", "GET"): Op(
        "jobs", "What became of a queued write", {200: ("The job.", r.JobView)}
    ),
    ("/api/v1/admin/queue", "GET"): Op(ADMIN, "The queue", {200: ("Counts.", r.QueueStats)}, admin=True),
    ("/api/v1/admin/queue/history", "GET"): Op(
        ADMIN,
        "Jobs finished per minute",
        {200: ("Oldest first.", r.QueueHistory)},
        query=(
            Param("minutes", {"type": "integer", "minimum": 1, "maximum": 120, "default": 60}, "How many."),
        ),
        admin=True,
    ),
    ("/api/v1/admin/workers", "GET"): Op(
        ADMIN, "Live workers", {200: ("Workers.", r.WorkerList)}, admin=True
    ),
    ("/api/v1/admin/dead-letters", "GET"): Op(
        ADMIN,
        "Jobs that failed for good, newest first",
        {200: ("A page.", r.DeadLetterPage)},
        query=(Param("function", {"type": "string"}, "Only this job function."), LIMIT, CURSOR),
        admin=True,
    ),
    ("/api/v1/admin/dead-letters/{job_id}", "GET"): Op(
        ADMIN, "One dead letter", {200: ("The entry.", r.DeadLetter)}, admin=True
    ),
    ("/api/v1/admin/dead-letters/{job_id}", "DELETE"): Op(
        ADMIN, "Discard a dead letter", {204: NO_CONTENT}, admin=True
    ),
    ("/api/v1/admin/dead-letters/{job_id}/retry", "POST"): Op(
        ADMIN,
        "Put a dead letter back on the queue, tries reset",
        {202: ("Queued again; `Location` names the job.", r.RetryAccepted)},
        admin=True,
        errors={409: "The job is queued or running already."},
    ),
    ("/api/v1/admin/jobs/{job_id}", "GET"): Op(
        ADMIN, "Any job, with args, worker and traceback", {200: ("The job.", r.AdminJobView)}, admin=True
    ),
    ("/api/v1/admin/webhooks", "GET"): Op(
        ADMIN, "Every webhook", {200: ("The webhooks, with their secrets.", r.WebhookList)}, admin=True
    ),
    ("/api/v1/admin/webhooks", "POST"): Op(
        ADMIN,
        "Register a webhook",
        {201: ("Registered; `Location` names it.", r.WebhookView)},
        body=webhooks.WebhookBody,
        example={"url": "https://push.example.com/chat-events", "events": ["message.created"]},
        admin=True,
        description=(
            "Each event of the given types is POSTed to `url` as `{id, type, created_at, data}`, signed"
            " with `secret` (generated when not given): see docs/api.md, Webhooks. Takes effect within"
            " `WEBHOOK_REGISTRY_REFRESH_SECONDS`."
        ),
    ),
    ("/api/v1/admin/webhooks/{webhook_id}", "GET"): Op(
        ADMIN, "One webhook", {200: ("The webhook, with its secret.", r.WebhookView)}, admin=True
    ),
    ("/api/v1/admin/webhooks/{webhook_id}", "DELETE"): Op(
        ADMIN,
        "Delete a webhook",
        {204: NO_CONTENT},
        admin=True,
        description="Deliveries still queued for it end without a request.",
    ),
    ("/api/v1/admin/ui", "GET"): Op(
        ADMIN,
        "The job dashboard (an HTML page)",
        {200: ("The page; it signs in with an admin's credentials.", None)},
        auth=False,
        dependencies=False,
        media="text/html",
    ),
}

_PATH_PARAM = re.compile(r"{(\w+)}")

# The description and the pages that show it are not part of what they describe.
SELF_DESCRIBING = {
    "/openapi.json",
    "/asyncapi.json",
    "/docs",
    "/docs/init.js",
    "/docs/assets/{name}",
    "/redoc",
    "/redoc/redoc.standalone.js",
}


def _responses(op: Op, path: str, refs: dict[str, str]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (description, model) in op.ok.items():
        response: dict[str, Any] = {"description": description}
        if status != 204:
            schema: dict[str, Any] = (
                {"$ref": refs[model.__name__]} if model is not None else {"type": "string"}
            )
            response["content"] = {op.media: {"schema": schema}}
        if status in (201, 202) and model is not None and model is not r.TokenPair:
            response["headers"] = {
                "Location": {"schema": {"type": "string"}, "description": "The new resource."}
            }
        responses[str(status)] = response
    errors: dict[int, str] = {}
    if op.body is not None:
        errors[400] = "The body is not JSON, is empty, or has the wrong Content-Type."
        errors[413] = "The body is over 64 KiB."
        errors[422] = "Invalid fields; `errors` names each one."
    if op.query:
        errors[422] = "Invalid fields; `errors` names each one."
    if op.auth:
        errors[401] = "No valid access token."
    if op.admin:
        errors[403] = "Not an admin."
    if _PATH_PARAM.search(path):
        errors[404] = "Unknown, or not visible to you."
    if op.limited:
        errors[429] = "Rate limited; retry after `Retry-After` seconds."
    if op.dependencies:
        errors[503] = "Postgres or Redis is unavailable; retry after `Retry-After` seconds."
    errors.update(op.errors)
    for status, description in sorted(errors.items()):
        content = {PROBLEM: {"schema": {"$ref": refs["Problem"]}}}
        responses[str(status)] = {"description": description, "content": content}
    return responses


def _operation(op: Op, path: str, method: str, refs: dict[str, str]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', path)}".rstrip("_"),
        "responses": _responses(op, path, refs),
    }
    if op.description:
        operation["description"] = op.description
    operation["security"] = [{"bearer": []}] if op.auth else []
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": PATH_SCHEMAS.get(name, ID),
        }
        for name in _PATH_PARAM.findall(path)
    ]
    parameters += [
        {"name": p.name, "in": "query", "required": False, "schema": p.schema, "description": p.description}
        for p in op.query
    ]
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        content: dict[str, Any] = {JSON: {"schema": {"$ref": refs[op.body.__name__]}}}
        if op.example is not None:
            content[JSON]["example"] = op.example
        if op.form:
            content["application/x-www-form-urlencoded"] = {"schema": {"$ref": refs[op.body.__name__]}}
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def _version() -> str:
    try:
        return metadata.version("headless-chat")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "0.0.0"


def describe(routes: Iterable[tuple[str, object]]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these routes (path, resource), as the app adds them.

    Raises LookupError for a route with no description here.
    """
    routed = [
        (path, method)
        for path, resource in routes
        if path not in SELF_DESCRIBING
        for method in map_http_methods(resource)
    ]
    missing = [key for key in routed if key not in OPERATIONS]
    if missing:
        raise LookupError(f"routes without an OpenAPI description in api/openapi.py: {missing}")
    return _document(tuple(sorted(routed)))


def _webhook(body_ref: str) -> dict[str, Any]:
    """What a registered webhook URL receives (`POST /api/v1/admin/webhooks`), as OpenAPI 3.1's
    `webhooks` describes requests the api makes."""
    headers = [
        ("X-Webhook-Id", {"type": "string", "format": "uuid"}, "The delivery's id, the same on every retry."),
        ("X-Webhook-Timestamp", {"type": "string", "pattern": "^[0-9]+$"}, "Unix seconds of this attempt."),
        (
            "X-Webhook-Signature",
            {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
            '`sha256=` + hex HMAC-SHA256, keyed with the webhook\'s secret, of `"{timestamp}.{raw body}"`.',
        ),
    ]
    return {
        "post": {
            "summary": "An event, to each webhook subscribed to its type",
            "description": (
                "Any `2xx` answer takes it. A timeout, a connection error or any other status is "
                "retried with exponential back-off, then dead-lettered. docs/api.md shows how to "
                "verify the signature."
            ),
            "parameters": [
                {"name": name, "in": "header", "required": True, "schema": schema, "description": text}
                for name, schema, text in headers
            ],
            "requestBody": {"required": True, "content": {JSON: {"schema": {"$ref": body_ref}}}},
            "responses": {"2XX": {"description": "Delivered."}},
        }
    }


@cache
def _document(routed: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    # Built once per route table: generating the schemas is the slowest part of building an app.

    requests = {op.body for op in OPERATIONS.values() if op.body is not None}
    replies = {m for op in OPERATIONS.values() for _, m in op.ok.values() if m is not None}
    replies |= {r.Problem, r.WebhookDelivery}
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in requests]
    pairs += [(m, "serialization") for m in replies]
    keys, definitions = models_json_schema(
        sorted(pairs, key=lambda p: (p[0].__name__, p[1])), ref_template=REF
    )
    refs = {model.__name__: keys[(model, mode)]["$ref"] for model, mode in pairs}

    paths: dict[str, dict[str, Any]] = {}
    for path, method in routed:
        paths.setdefault(path, {})[method.lower()] = _operation(
            OPERATIONS[(path, method)], path, method, refs
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "headless-chat",
            "version": _version(),
            "description": (
                "Users, conversations and queued message writes. Events arrive over the WebSocket"
                " of the push process: see `/asyncapi.json`. Errors are RFC 9457 problem details."
            ),
        },
        "paths": paths,
        "webhooks": {"event": _webhook(refs["WebhookDelivery"])},
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The access token from `POST /api/v1/auth/login`.",
                }
            },
        },
        "tags": [{"name": t} for t in ("auth", "users", CONVERSATION, MESSAGES, "jobs", ADMIN, "operations")],
    }
