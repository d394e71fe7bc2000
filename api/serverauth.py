"""Server keys for `/api/v1/server/*`: the app's backend, not a user. Every server route takes a
server key and nothing else (a user's or an app's token there is a 401), and no other route takes
one (BearerAuth leaves these paths alone, and a server key is no token it accepts)."""

from __future__ import annotations

from typing import Any

from falcon.asgi import Request, Response

from api.operations.base import PREFIX
from api.throttle import UserLimit
from chat.errors import NotFound, Unauthorized
from chat.identity.apptokens import valid_sub
from chat.usecases.server_keys import ServerKeys

SERVER_PATHS = f"{PREFIX}/server/"


def is_server_path(path: str) -> bool:
    return path.startswith(SERVER_PATHS)


class ServerAuth:
    def __init__(self, keys: ServerKeys, per_key: UserLimit) -> None:
        self._keys = keys
        self._per_key = per_key

    async def process_resource(
        self, req: Request, resp: Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if resource is None or req.method == "OPTIONS" or not is_server_path(req.path):
            return
        scheme, _, key = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("The server API takes 'Authorization: Bearer <server key>'.")
        req.context.server_key = await self._keys.verify(key.strip())
        await self._per_key.count(req.context.server_key)
        # An app's id is 1-128 printable characters (as an app token's `sub`): nothing else names
        # anything here, and a NUL would reach Postgres only to be refused there.
        for name, value in params.items():
            if name.endswith("external_id") and not valid_sub(value):
                raise NotFound("Nothing has this external id.")
