"""What one declaration of an operation says: everything the route table, the OpenAPI document and
the authorization matrix need to know about a (method, path), written once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

PREFIX = "/api/v1"
# The document's tags, in the order it lists them.
TAGS = ("auth", "users", "conversations", "messages", "jobs", "admin", "server", "operations")

# Who may call an operation:
# - `public`: anyone, even without a token;
# - `signed`: whoever holds a URL the api signed (the local-disk store's presigned uploads and
#   downloads): no token needed, and everyone without the signature gets 403;
# - `self`: any signed-in user, about themselves; `user`: any signed-in user, about anyone;
# - `conversation` / `message`: participants only, 404 to everyone else, exactly as for an id that
#   does not exist; `job`: the user who caused it (or an admin), 404 otherwise;
# - `admin`: admins, 403 to other users;
# - `server`: the app's backend, with a server key (`/server/*`); 401 to user and app tokens.
Scope = Literal["public", "signed", "self", "user", "conversation", "message", "job", "admin", "server"]
UNAUTHENTICATED: frozenset[Scope] = frozenset({"public", "signed"})

# A resource class, or a name for a resource whose class is shared by several routes or private to
# its module (the documentation's pages): the key `routes()` gives each resource instance under.
ResourceKey = type[Any] | str


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str


Reply = tuple[str, type[BaseModel] | None]  # a success: its description and its body's model


@dataclass(frozen=True)
class Operation:
    """One method on one path. `ok` lists the successes, the rightful caller's first; `errors` the
    failures beyond those every operation of its kind can answer (see `api.openapi`)."""

    method: str
    path: str  # under each of `roots`
    resource: ResourceKey
    tag: str
    summary: str
    caller: Scope
    ok: dict[int, Reply]
    body: type[BaseModel] | None = None
    example: dict[str, Any] | None = None
    form: bool = False
    query: tuple[Param, ...] = ()
    limited: bool = False
    dependencies: bool = True
    errors: dict[int, str] = field(default_factory=dict)
    description: str = ""
    media: str = "application/json"
    roots: tuple[str, ...] = (PREFIX,)
    # False for the documentation's own pages: routed and authorized, but not part of what they describe.
    described: bool = True

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(root + self.path for root in self.roots)

    @property
    def status(self) -> int:
        """The rightful caller's status."""
        return next(iter(self.ok))

    @property
    def authenticated(self) -> bool:
        return self.caller not in UNAUTHENTICATED


LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Page size.")
CURSOR = Param("cursor", {"type": "string"}, "`next_cursor` of the previous page.")
SEQ = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
ID = {"type": "string", "format": "uuid"}
# Path parameters that are not ids.
PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "job_id": {"type": "string"},
    "emoji": {"type": "string", "minLength": 1, "maxLength": 32, "pattern": r"^\S+$"},
}
NO_CONTENT: Reply = ("Done.", None)


def unguarded(path: str, resource: ResourceKey, summary: str, ok: Reply, **more: Any) -> Operation:
    """A GET for operators or readers of the docs: anyone may call it, and it answers without
    Postgres or Redis."""
    return Operation(
        "GET", path, resource, "operations", summary, "public", {200: ok}, dependencies=False, **more
    )
