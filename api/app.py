"""Builds the api: `create_app(settings)` wires every client and resource in one place."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi
from falcon.asgi import Request, Response

from api import openapi, problems
from api.auth import BearerAuth
from api.deps import Deps
from api.observe import Lifespan, RequestMetrics, SecurityHeaders
from api.resources import (
    admin,
    admin_ui,
    auth,
    blocks,
    conversations,
    docs,
    jobs,
    messages,
    participants,
    read_markers,
    search,
    typing_indicators,
    uploads,
    users,
    webhooks,
)
from api.throttle import AddressLimit, FailureLimit, UserLimit
from chat import probes, ratelimit, wsprotocol
from chat.db import create_engine, create_sessionmaker
from chat.eventbus import RedisPublisher
from chat.queue import JobQueue
from chat.queues import Queues
from chat.quota import ByteQuota
from chat.ratelimit import Limiter
from chat.redis import create_redis
from chat.security import Passwords, Tokens
from chat.sequence import Sequencer
from chat.settings import Settings
from chat.storage import LocalStorage, create_storage
from chat.users_status import Authenticator, UserCheck
from chat.webhooks import WebhookPublisher, create_dispatcher

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
    sessions = create_sessionmaker(engine)
    # The api publishes conversation, participant and read-marker events itself: webhooks get them
    # right after the publish (there is no finishing transaction to stage them in, as workers have).
    dispatcher = create_dispatcher(
        redis,
        sessions,
        queue_name=settings.webhook_queue_name,
        refresh_seconds=settings.webhook_registry_refresh_seconds,
    )
    return Deps(
        settings=settings,
        engine=engine,
        reader=engine.execution_options(isolation_level="AUTOCOMMIT"),
        sessions=sessions,
        redis=redis,
        publisher=WebhookPublisher(
            RedisPublisher(redis, stream_maxlen=settings.event_stream_maxlen), dispatcher
        ),
        queue=JobQueue(redis),
        passwords=Passwords(settings),
        tokens=Tokens(settings),
        limiter=Limiter(redis, settings.redis_url),
        sequencer=Sequencer(redis),
        storage=create_storage(settings),
    )


def create_app(
    settings: Settings | None = None, deps: Deps | None = None
) -> falcon.asgi.App[Request, Response]:
    """The api as an ASGI app. Clients are created here but connect lazily, on first use."""
    deps = deps or build_deps(settings or Settings())
    # The user check reads on the AUTOCOMMIT reader: one round trip per request.
    users = UserCheck(deps.reader, deps.settings.database_pool_timeout_seconds)
    authenticator = Authenticator(deps.tokens, users)
    middleware: list[Any] = [RequestMetrics(), SecurityHeaders(), Lifespan(deps), BearerAuth(authenticator)]
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

    table = routes(deps)
    for path, resource in table:
        app.add_route(path, resource)
    add_docs(app, table, deps.settings.push_public_host)
    return app


def routes(deps: Deps) -> list[tuple[str, object]]:
    """Every route and its resource, each given the clients and settings it uses and no more."""
    settings, sessions, redis, publisher = deps.settings, deps.sessions, deps.redis, deps.publisher
    body = settings.max_body_bytes
    trusted = settings.trusted_networks
    ready = probes.Readiness({"database": probes.database(deps.engine), "redis": probes.redis(redis)})
    table: list[tuple[str, object]] = []
    for base in ("", PREFIX):
        table += [
            (f"{base}/healthz", probes.Liveness()),
            (f"{base}/readyz", ready),
            (f"{base}/metrics", probes.Metrics()),
        ]

    def per_address(setting: str, name: str, what: str) -> AddressLimit:
        refusal = f"Too many {what} from this address."
        return AddressLimit(deps.limiter, ratelimit.parse(setting), trusted, name=name, refusal=refusal)

    registrations = per_address(settings.rate_limit_register_per_address, "register", "registrations")
    logins = per_address(settings.rate_limit_login_per_address, "login", "logins")
    failed_logins = FailureLimit(
        deps.limiter,
        ratelimit.parse(settings.rate_limit_login_per_username),
        name="login-failed",
        refusal="Too many failed logins for this user.",
    )
    queues = Queues.from_settings(settings)
    monitored = (deps.reader, redis, queues)
    storage = deps.storage
    local = storage if isinstance(storage, LocalStorage) else None
    api: list[tuple[str, object]] = [
        ("/auth/register", auth.Register(sessions, deps.passwords, registrations, body)),
        ("/auth/login", auth.Login(sessions, deps.passwords, logins, body, deps.tokens, failed_logins)),
        ("/auth/refresh", auth.Refresh(sessions, deps.tokens, body)),
        ("/auth/logout", auth.Logout(sessions, body)),
        ("/users/me", users.Me(sessions, body)),
        ("/users/me/blocks", blocks.Blocks(sessions)),
        ("/users/me/blocks/{user_id}", blocks.BlockedUser(sessions, redis)),
        ("/users", users.Users(sessions)),
        ("/users/{user_id}", users.UserById(sessions, redis)),
        (
            "/conversations",
            conversations.Conversations(sessions, redis, deps.sequencer, publisher, body, storage),
        ),
        ("/conversations/{conversation_id}", conversations.ConversationById(sessions, storage)),
        (
            "/conversations/{conversation_id}/participants",
            participants.Participants(sessions, redis, publisher, body, storage),
        ),
        (
            "/conversations/{conversation_id}/participants/{user_id}",
            participants.ParticipantById(sessions, redis, publisher),
        ),
        (
            "/conversations/{conversation_id}/read",
            read_markers.ReadMarker(sessions, deps.sequencer, publisher, body),
        ),
        ("/conversations/{conversation_id}/settings", read_markers.ConversationSettings(sessions, body)),
        (
            "/conversations/{conversation_id}/typing",
            typing_indicators.TypingIndicator(sessions, redis, publisher, settings.typing_interval_seconds),
        ),
        (
            "/conversations/{conversation_id}/messages",
            messages.ConversationMessages(
                sessions,
                deps.reader,
                redis,
                deps.queue,
                deps.sequencer,
                send_limit=ratelimit.parse(settings.rate_limit_sends_per_user),
                claim_seconds=settings.client_id_claim_seconds,
                max_body=body,
                storage=storage,
                unsent_upload_seconds=settings.upload_unsent_ttl_seconds,
            ),
        ),
        ("/messages/{message_id}", messages.MessageById(sessions, deps.queue, body, storage)),
        ("/messages/{message_id}/reactions/{emoji}", messages.MessageReaction(sessions, deps.queue)),
        ("/search/messages", search.MessageSearch(sessions, storage)),
        (
            "/uploads",
            uploads.Uploads(
                sessions,
                storage,
                settings.upload_max_bytes,
                body,
                UserLimit(
                    deps.limiter,
                    ratelimit.parse(settings.rate_limit_uploads_per_user),
                    name="uploads",
                    refusal="Too many uploads; slow down.",
                ),
                ByteQuota(redis, settings.upload_bytes_per_user_per_day),
            ),
        ),
        ("/uploads/{upload_id}/content", uploads.UploadContent(local, settings.upload_max_bytes)),
        ("/jobs/{job_id}", jobs.JobById(sessions, redis, queues)),
        ("/admin/queue", admin.Queue(*monitored)),
        ("/admin/queue/history", admin.QueueHistory(*monitored)),
        ("/admin/workers", admin.Workers(*monitored)),
        ("/admin/dead-letters", admin.DeadLetters(*monitored)),
        ("/admin/dead-letters/{job_id}", admin.DeadLetter(*monitored)),
        ("/admin/dead-letters/{job_id}/retry", admin.DeadLetterRetry(*monitored)),
        ("/admin/jobs/{job_id}", admin.AdminJob(*monitored)),
        ("/admin/webhooks", webhooks.Webhooks(*monitored, sessions, body)),
        ("/admin/webhooks/{webhook_id}", webhooks.WebhookById(*monitored, sessions)),
        ("/admin/ui", admin_ui.AdminUI()),
    ]
    return table + [(PREFIX + path, resource) for path, resource in api]


def add_docs(
    app: falcon.asgi.App[Request, Response], table: list[tuple[str, object]], push_host: str
) -> None:
    """The api's own description, from its route table, and the pages that show it."""
    document = openapi.describe(table)
    app.add_route("/openapi.json", docs.Document(document))
    protocol = wsprotocol.document(document["info"]["version"], push_host)
    app.add_route("/asyncapi.json", docs.Document(protocol))
    app.add_route("/docs", docs.SwaggerUI())
    app.add_route("/docs/init.js", docs.SwaggerInit())
    app.add_route("/docs/assets/{name}", docs.SwaggerAssets())
    app.add_route("/redoc", docs.ReDoc())
    app.add_route("/redoc/redoc.standalone.js", docs.redoc_bundle())
