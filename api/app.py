"""Builds the api: `create_app(settings)` wires every client and resource in one place."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi
from falcon.asgi import Request, Response

from api import openapi, problems
from api.auth import BearerAuth
from api.deps import Deps
from api.observe import Lifespan, RequestMetrics, RequestSpans, SecurityHeaders
from api.operations import API, PAGES, bind, route_table
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
    server_conversations,
    server_users,
    typing_indicators,
    uploads,
    users,
    webhooks,
)
from api.serverauth import ServerAuth
from api.throttle import AddressLimit, FailureLimit, UserLimit
from chat.domain import ratelimit
from chat.domain.quota import ByteQuota
from chat.domain.ratelimit import Limiter
from chat.domain.sequence import Sequencer
from chat.domain.webhooks import WebhookPublisher, create_dispatcher
from chat.identity.authn import Authenticator, UserCheck, app_users
from chat.identity.security import Passwords, Tokens
from chat.infra import probes, tracing
from chat.infra.db import create_engine, create_sessionmaker
from chat.infra.redisclient import create_redis
from chat.infra.storage import LocalStorage
from chat.infra.stores import create_storage
from chat.jobqueue.accept import JobQueue
from chat.jobqueue.lanes import Queues
from chat.realtime import wsprotocol
from chat.realtime.eventbus import RedisPublisher
from chat.settings import Settings
from chat.usecases.conversations import MEMBER_LIST_BODY_BYTES
from chat.usecases.messages import Sending
from chat.usecases.server_conversations import ServerConversations
from chat.usecases.server_keys import ServerKeys

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
        publisher=WebhookPublisher(RedisPublisher.from_settings(redis, settings), dispatcher),
        queue=JobQueue(
            redis,
            durability=settings.accept_durability,
            replica_timeout_ms=settings.accept_replica_timeout_ms,
        ),
        passwords=Passwords(settings),
        tokens=Tokens(settings),
        limiter=Limiter(redis, settings.redis_url, cluster=settings.redis_mode == "cluster"),
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
    authenticator = Authenticator(deps.tokens, users, app_users(deps.settings, deps.sessions, users))
    server_auth = ServerAuth(
        ServerKeys(deps.sessions),
        UserLimit(
            deps.limiter,
            ratelimit.parse(deps.settings.rate_limit_server_per_key),
            name="server",
            refusal="Too many calls with this server key.",
        ),
    )
    middleware: list[Any] = [
        RequestMetrics(),
        SecurityHeaders(),
        Lifespan(deps),
        BearerAuth(authenticator),
        server_auth,
    ]
    if tracing.setup("web"):
        middleware.insert(0, RequestSpans())  # first in, last out: the span holds every other step
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
    """Every route and its resource, each given the clients and settings it uses and no more; the
    paths and methods are `api.operations`' declarations."""
    settings, sessions, redis, publisher = deps.settings, deps.sessions, deps.redis, deps.publisher
    body = settings.max_body_bytes
    member_list = max(body, MEMBER_LIST_BODY_BYTES)  # bodies naming up to MAX_PARTICIPANTS users
    trusted = settings.trusted_networks

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
    password_forms = (
        (
            auth.Register(sessions, deps.passwords, registrations, body),
            auth.Login(sessions, deps.passwords, logins, body, deps.tokens, failed_logins),
        )
        if settings.password_auth == "on"
        else ()
    )
    readiness = probes.Readiness({"database": probes.database(deps.engine), "redis": probes.redis(redis)})
    resources = bind(
        probes.Liveness(),
        readiness,
        probes.Metrics(readiness),
        *password_forms,
        auth.Refresh(sessions, deps.tokens, body),
        auth.Logout(sessions, body),
        users.Me(sessions, body),
        blocks.Blocks(sessions),
        blocks.BlockedUser(sessions, redis),
        users.Users(sessions),
        users.UserById(sessions, redis),
        conversations.Conversations(sessions, redis, deps.sequencer, publisher, member_list, storage),
        conversations.ConversationById(sessions, storage),
        participants.Participants(sessions, redis, publisher, member_list, storage),
        participants.ParticipantById(sessions, redis, publisher),
        read_markers.ReadMarker(sessions, deps.sequencer, publisher, body),
        read_markers.ConversationSettings(sessions, body),
        typing_indicators.TypingIndicator(sessions, redis, publisher, settings.typing_interval_seconds),
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
        messages.MessageById(sessions, deps.queue, body, storage),
        messages.MessageReaction(sessions, deps.queue),
        search.MessageSearch(sessions, storage),
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
        uploads.UploadContent(local, settings.upload_max_bytes),
        jobs.JobById(sessions, redis, queues),
        admin.Queue(*monitored),
        admin.QueueHistory(*monitored),
        admin.Workers(*monitored),
        admin.DeadLetters(*monitored),
        admin.DeadLetter(*monitored),
        admin.DeadLetterRetry(*monitored),
        admin.AdminJob(*monitored),
        webhooks.Webhooks(*monitored, sessions, body),
        webhooks.WebhookById(*monitored, sessions),
        admin_ui.AdminUI(),
        *server_conversation_resources(deps),
        server_users.ServerUser(sessions, redis, deps.queue, body),
        server_users.ServerUserExport(sessions, storage),
        server_users.ServerTokens(sessions, deps.tokens, settings.app_jwt_max_ttl_seconds, body),
        server_users.ServerJob(sessions, redis, queues),
        **{
            "server-deactivate": server_users.ServerUserActive(sessions, redis, active=False),
            "server-reactivate": server_users.ServerUserActive(sessions, redis, active=True),
        },
    )
    # PASSWORD_AUTH=off: no route, so 404, and no word of them in the document.
    served = [op for op in API if op.resource in resources]
    return route_table(served, resources)


def server_conversation_resources(deps: Deps) -> tuple[object, ...]:
    """The server API's conversations and messages; sends go through the users' accept use case."""
    settings, sessions, body = deps.settings, deps.sessions, deps.settings.max_body_bytes
    conversations = ServerConversations(sessions, deps.redis, deps.sequencer, deps.publisher, deps.storage)
    sending = Sending(
        sessions,
        deps.reader,
        deps.redis,
        deps.queue,
        deps.sequencer,
        deps.storage,
        ratelimit.parse(settings.rate_limit_sends_per_user),
        settings.client_id_claim_seconds,
        settings.upload_unsent_ttl_seconds,
    )
    return (
        server_conversations.ServerConversation(conversations, max(body, MEMBER_LIST_BODY_BYTES)),
        server_conversations.ServerMembers(conversations, max(body, MEMBER_LIST_BODY_BYTES)),
        server_conversations.ServerMember(conversations),
        server_conversations.ServerMessages(sessions, sending, body),
    )


def add_docs(
    app: falcon.asgi.App[Request, Response], table: list[tuple[str, object]], push_host: str
) -> None:
    """The api's own description, from its route table, and the pages that show it."""
    document = openapi.describe(table)
    protocol = wsprotocol.document(document["info"]["version"], push_host)
    pages = bind(
        openapi=docs.Document(document),
        asyncapi=docs.Document(protocol),
        **{"swagger-ui": docs.SwaggerUI(), "swagger-init": docs.SwaggerInit()},
        **{
            "swagger-assets": docs.SwaggerAssets(),
            "redoc": docs.ReDoc(),
            "redoc-bundle": docs.redoc_bundle(),
        },
    )
    for path, resource in route_table(PAGES, pages):
        app.add_route(path, resource)
