"""Builds the api: `create_app(settings)` wires every client and resource in one place."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi
from falcon.asgi import Request, Response

from api import openapi, problems
from api.auth import BearerAuth
from api.deps import Deps
from api.observe import Lifespan, Metrics, RequestMetrics, SecurityHeaders
from api.resources import admin, admin_ui, auth, conversations, docs, health, jobs, messages, users
from chat import wsprotocol
from chat.db import create_engine, create_sessionmaker
from chat.eventbus import RedisPublisher
from chat.queue import JobQueue
from chat.ratelimit import Limiter
from chat.redis import create_redis
from chat.security import Passwords, Tokens
from chat.settings import Settings

PREFIX = "/api/v1"
# What a browser app may read of a response besides the safe headers.
EXPOSED_HEADERS = [
    "Location",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
]


def build_deps(settings: Settings) -> Deps:
    engine = create_engine(settings)
    redis = create_redis(settings)
    return Deps(
        settings=settings,
        engine=engine,
        reader=engine.execution_options(isolation_level="AUTOCOMMIT"),
        sessions=create_sessionmaker(engine),
        redis=redis,
        publisher=RedisPublisher(redis, stream_maxlen=settings.event_stream_maxlen),
        queue=JobQueue(redis),
        passwords=Passwords(settings),
        tokens=Tokens(settings),
        limiter=Limiter(redis, settings.redis_url),
    )


def create_app(
    settings: Settings | None = None, deps: Deps | None = None
) -> falcon.asgi.App[Request, Response]:
    """The api as an ASGI app. Clients are created here but connect lazily, on first use."""
    deps = deps or build_deps(settings or Settings())
    middleware: list[Any] = [RequestMetrics(), SecurityHeaders(), Lifespan(deps), BearerAuth(deps.tokens)]
    origins = [o.strip() for o in deps.settings.cors_allowed_origins.split(",") if o.strip()]
    if origins:
        middleware.insert(
            0,
            falcon.CORSMiddleware(
                allow_origins="*" if origins == ["*"] else origins,
                expose_headers=EXPOSED_HEADERS,
            ),
        )
    app = falcon.asgi.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    problems.register(app)

    for base in ("", PREFIX):
        app.add_route(f"{base}/healthz", health.Health())
        app.add_route(f"{base}/readyz", health.Ready(deps))
        app.add_route(f"{base}/metrics", Metrics())

    routes: list[tuple[str, object]] = [
        ("/auth/register", auth.Register(deps)),
        ("/auth/login", auth.Login(deps)),
        ("/auth/refresh", auth.Refresh(deps)),
        ("/auth/logout", auth.Logout(deps)),
        ("/users/me", users.Me(deps)),
        ("/users", users.Users(deps)),
        ("/users/{user_id}", users.UserById(deps)),
        ("/conversations", conversations.Conversations(deps)),
        ("/conversations/{conversation_id}", conversations.ConversationById(deps)),
        ("/conversations/{conversation_id}/participants", conversations.Participants(deps)),
        ("/conversations/{conversation_id}/participants/{user_id}", conversations.ParticipantById(deps)),
        ("/conversations/{conversation_id}/read", conversations.ReadMarker(deps)),
        ("/conversations/{conversation_id}/typing", conversations.TypingIndicator(deps)),
        ("/conversations/{conversation_id}/messages", messages.ConversationMessages(deps)),
        ("/messages/{message_id}", messages.MessageById(deps)),
        ("/jobs/{job_id}", jobs.JobById(deps)),
    ]
    monitored = (deps.reader, deps.redis, deps.settings.queue_name)
    routes += [
        ("/admin/queue", admin.Queue(*monitored)),
        ("/admin/queue/history", admin.QueueHistory(*monitored)),
        ("/admin/workers", admin.Workers(*monitored)),
        ("/admin/dead-letters", admin.DeadLetters(*monitored)),
        ("/admin/dead-letters/{job_id}", admin.DeadLetter(*monitored)),
        ("/admin/dead-letters/{job_id}/retry", admin.DeadLetterRetry(*monitored)),
        ("/admin/jobs/{job_id}", admin.AdminJob(*monitored)),
        ("/admin/ui", admin_ui.AdminUI()),
    ]
    for path, resource in routes:
        app.add_route(PREFIX + path, resource)
    add_docs(app, deps.settings.push_public_host)
    return app


def add_docs(app: falcon.asgi.App[Request, Response], push_host: str) -> None:
    """The api's own description, from the routes added above, and the pages that show it."""
    document = openapi.describe(app)
    app.add_route("/openapi.json", docs.Document(document))
    protocol = wsprotocol.document(document["info"]["version"], push_host)
    app.add_route("/asyncapi.json", docs.Document(protocol))
    app.add_route("/docs", docs.SwaggerUI())
    app.add_route("/docs/init.js", docs.SwaggerInit())
    app.add_route("/docs/assets/{name}", docs.SwaggerAssets())
    app.add_route("/redoc", docs.ReDoc())
    app.add_route("/redoc/redoc.standalone.js", docs.redoc_bundle())
