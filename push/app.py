"""Builds the push app: `create_app(settings)` wires Redis, the hub and the routes in one place."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import falcon
import falcon.asgi
from falcon.asgi import Request, Response, WebSocket
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from chat.errors import ServiceUnavailable, Unauthorized
from chat.identity.authn import Authenticator, Deactivated, UserCheck, app_users
from chat.identity.security import Tokens
from chat.infra import metrics, probes, tracing
from chat.infra.db import create_engine, create_sessionmaker
from chat.infra.outage import Outage
from chat.infra.redisclient import create_redis
from chat.realtime.roomlist import RoomList
from chat.settings import Settings
from push import frames
from push.hub import Hub
from push.session import SEND_NOW_EXTENSION, Connections, Session

log = logging.getLogger("push")

# The longest a handshake waits for Postgres to say whether its user exists, before it goes by the
# token alone (a hung server must not hold every connecting client).
HANDSHAKE_CHECK_SECONDS = 2.0
# The rooms of a connecting user: a read shared by a burst of thousands of reconnects may queue
# behind the others on the process's one connection; only past this is Postgres taken as away (the
# socket is admitted without rooms and restarted once they are known).
ROOM_LIST_SECONDS = 15.0
# An app token whose user this process does not know yet, while Postgres is away (REST: 503).
TRY_AGAIN_LATER = frames.Close(1013, "try again later", "reconnect with back-off")


@dataclass(frozen=True, slots=True)
class Socket:
    """`GET /ws?token=...[&last_event_id=...]`."""

    settings: Settings
    redis: Redis
    hub: Hub
    authenticator: Authenticator
    connections: Connections
    room_list: RoomList
    # One per process: an outage is one log line, not one per socket.
    presence_outage: Outage = field(default_factory=lambda: Outage(log, "Redis (presence)"), init=False)

    async def on_websocket(self, req: Request, ws: WebSocket) -> None:
        # Falcon gives every socket a receive buffer, even with buffering off (max_receive_queue = 0
        # in create_app), and then never touches its deque: 760 bytes a socket. An empty tuple in
        # its place fails loudly should a Falcon release start using it.
        ws._buffered_receiver._messages = ()  # type: ignore[assignment]
        # Browsers cannot set headers on a WebSocket, so the token is in the query: never log it.
        try:
            claims = await self.authenticator.authenticate(req.get_param("token") or _bearer(req))
        except Deactivated:
            await _refuse(ws, frames.DEACTIVATED)
            return
        except Unauthorized:
            await _refuse(ws, frames.TOKEN_INVALID)
            return
        except ServiceUnavailable:  # an app token's new user, while Postgres is away
            await _refuse(ws, TRY_AGAIN_LATER)
            return
        send_now = req.scope.get("extensions", {}).get(SEND_NOW_EXTENSION, {}).get("send")
        session = Session(ws, claims.user_id, claims.expires_at, self.settings, send_now)
        self.connections.add(session, self.redis, self.settings.presence_ttl_seconds, self.presence_outage)
        metrics.WS_CONNECTIONS.inc()
        try:
            rooms = await self.room_list.of(claims.user_id)
            await session.run(self.redis, self.hub, req.get_param("last_event_id"), rooms)
        finally:
            self.connections.discard(session)
            metrics.WS_CONNECTIONS.dec()


async def _refuse(ws: WebSocket, close: frames.Close) -> None:
    # Accepted first: a close before accept reaches the client as a bare HTTP 403, with no code.
    await ws.accept()
    await ws.close(close.code, close.reason)
    metrics.WS_CLOSED.labels(str(close.code)).inc()


def _bearer(req: Request) -> str | None:
    # Clients that can set headers (native apps, servers) may send the token there instead.
    scheme, _, token = (req.get_header("Authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


class Lifespan:
    def __init__(self, redis: Redis, hub: Hub, connections: Connections, database: AsyncEngine) -> None:
        self.redis = redis
        self.hub = hub
        self.connections = connections
        self.database = database

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        # push.server has already closed the sockets with 1012; this covers servers that don't.
        await self.connections.restart_all(grace=1)
        await self.hub.close()
        with contextlib.suppress(Exception):
            await self.redis.aclose(close_connection_pool=True)
        with contextlib.suppress(Exception):
            await self.database.dispose()


def create_app(
    settings: Settings | None = None, connections: Connections | None = None
) -> falcon.asgi.App[Request, Response]:
    """The push app; `connections` is how the server that runs it reaches the open sockets."""
    settings = settings or Settings()
    tracing.setup("push")
    connections = connections if connections is not None else Connections()
    redis = create_redis(settings)
    # Postgres only for the handshake's user check and the user's rooms (one connection, one more
    # in a burst); when it is away the token's signature alone admits, as in the api, and the
    # rooms are asked for again until it answers. /readyz does not depend on it.
    database = create_engine(settings.model_copy(update={"database_pool_size": 1}))
    autocommit = database.execution_options(isolation_level="AUTOCOMMIT")
    check = UserCheck(autocommit, HANDSHAKE_CHECK_SECONDS)
    room_list = RoomList(autocommit, settings.large_room_members, ROOM_LIST_SECONDS)
    hub = Hub(redis, room_list=room_list)
    apps = app_users(settings, create_sessionmaker(database), check)
    authenticator = Authenticator(Tokens(settings), check, apps)
    socket = Socket(settings, redis, hub, authenticator, connections, room_list)
    middleware: list[Any] = [Lifespan(redis, hub, connections, database)]
    app = falcon.asgi.App(middleware=middleware)
    # Falcon's buffered receiver runs a pump task per socket to notice disconnects while the app
    # only sends; every session here is always receiving (Session._receive_loop), which notices
    # them without a second task per socket.
    app.ws_options.max_receive_queue = 0
    app.add_route("/ws", socket)
    app.add_route("/healthz", probes.Liveness())
    readiness = probes.Readiness({"redis": probes.redis(redis)})
    app.add_route("/readyz", readiness)
    app.add_route("/metrics", probes.Metrics(readiness))
    return app
