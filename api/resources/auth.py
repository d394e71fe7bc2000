"""Register, log in, refresh and log out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from falcon.asgi import Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from api.auth import current_user
from api.fields import NoNul
from api.http import parse, send
from api.throttle import AddressLimit, FailureLimit
from chat.identity.security import Passwords, Tokens, password_weakness
from chat.infra.db import Sessions
from chat.usecases import accounts

Username = Annotated[str, StringConstraints(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]


def _not_weak(password: str) -> str:
    problem = password_weakness(password)
    if problem is not None:
        raise ValueError(problem)
    return password


# What a new password must be; logging in takes whatever was set before these rules.
Password = Annotated[str, Field(min_length=8, max_length=128), AfterValidator(_not_weak)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DisplayName(_Body):
    display_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), NoNul]


class RegisterBody(_Body):
    username: Username
    password: Password
    display_name: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), NoNul] | None
    ) = None


class LoginBody(_Body):
    username: Annotated[str, Field(min_length=1, max_length=128), NoNul]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class RefreshBody(_Body):
    refresh_token: Annotated[str, Field(min_length=1, max_length=256), NoNul]

    @field_validator("refresh_token")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


@dataclass(frozen=True, slots=True)
class _PasswordForm:
    """What both password forms use: accounts, hashing, and a limit on attempts per address."""

    auth_required = False

    sessions: Sessions
    passwords: Passwords
    per_address: AddressLimit
    max_body: int


@dataclass(frozen=True, slots=True)
class Register(_PasswordForm):
    async def on_post(self, req: Request, resp: Response) -> None:
        body = await parse(req, RegisterBody, self.max_body)
        await self.per_address.count(req, resp)
        user = await accounts.register(
            self.sessions, self.passwords, body.username, body.password, body.display_name
        )
        resp.set_header("Location", f"/api/v1/users/{user.id}")
        send(resp, user, 201)


@dataclass(frozen=True, slots=True)
class Login(_PasswordForm):
    tokens: Tokens
    # Wrong passwords per username: over the limit, even the right one waits.
    failures: FailureLimit

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await parse(req, LoginBody, self.max_body, allow_form=True)
        await self.per_address.count(req, resp)
        pair = await accounts.login(
            self.sessions, self.passwords, self.tokens, self.failures, body.username, body.password
        )
        send(resp, pair)


@dataclass(frozen=True, slots=True)
class Refresh:
    auth_required = False

    sessions: Sessions
    tokens: Tokens
    max_body: int

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await parse(req, RefreshBody, self.max_body)
        send(resp, await accounts.refresh(self.sessions, self.tokens, body.refresh_token))


@dataclass(frozen=True, slots=True)
class Logout:
    sessions: Sessions
    max_body: int

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await parse(req, RefreshBody, self.max_body)
        await accounts.logout(self.sessions, current_user(req), body.refresh_token)
        resp.status = 204
