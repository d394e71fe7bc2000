"""Bearer authentication for every resource that doesn't opt out with `auth_required = False`:
the token and then its user (chat.identity.authn, shared with the push handshake)."""

from __future__ import annotations

import uuid
from typing import Any

from falcon.asgi import Request, Response

from api.serverauth import is_server_path
from chat.errors import Unauthorized
from chat.identity.authn import Authenticator


class BearerAuth:
    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def process_resource(
        self, req: Request, resp: Response, resource: Any, params: dict[str, Any]
    ) -> None:
        # A CORS preflight (OPTIONS) carries no credentials by design; it reveals nothing.
        if resource is None or not getattr(resource, "auth_required", True) or req.method == "OPTIONS":
            return
        if is_server_path(req.path):
            return  # a server key's, checked by api.serverauth
        header = req.get_header("Authorization")
        if not header:
            raise Unauthorized("Missing bearer token.")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "The Authorization header must be 'Bearer <access token>'.", invalid_token=True
            )
        claims = await self._authenticator.authenticate(token.strip())
        req.context.user_id = claims.user_id


def current_user(req: Request) -> uuid.UUID:
    user_id: uuid.UUID = req.context.user_id
    return user_id
