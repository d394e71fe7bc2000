"""Every operation of the api, declared once: the route table (`api.app`), the OpenAPI document
(`api.openapi`) and the authorization matrix (`tests/api/test_authorization_matrix.py`) all read
these declarations, so a new route is written in one place and checked in all three.

A declaration names its resource by class; `route_table` mounts the instance `api.app` built of
that class (with the collaborators it uses) at the declared paths, and refuses a resource that
serves a method no declaration describes, or the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from falcon.routing import map_http_methods

from api.operations import (
    admin,
    auth,
    conversations,
    docs,
    messages,
    probes,
    server,
    server_conversations,
    users,
)
from api.operations.base import PREFIX, TAGS, Operation, Param, ResourceKey, Scope

__all__ = [
    "API",
    "OPERATIONS",
    "PAGES",
    "PREFIX",
    "SELF_DESCRIBING",
    "TAGS",
    "Operation",
    "Param",
    "ResourceKey",
    "Scope",
    "bind",
    "route_table",
]

# In the order the authorization matrix calls them: a route that removes or discards something
# comes after the routes that read it.
API: tuple[Operation, ...] = (
    *probes.OPERATIONS,
    *auth.OPERATIONS,
    *users.OPERATIONS,
    *conversations.OPERATIONS,
    *messages.OPERATIONS,
    *admin.OPERATIONS,
    *server_conversations.OPERATIONS,
    *server.OPERATIONS,
)
PAGES: tuple[Operation, ...] = docs.OPERATIONS
OPERATIONS: dict[tuple[str, str], Operation] = {
    (path, op.method): op for op in (*API, *PAGES) for path in op.paths
}
# The description and the pages that show it are not part of what they describe.
SELF_DESCRIBING = frozenset(path for op in PAGES for path in op.paths)


def bind(*instances: object, **named: object) -> dict[ResourceKey, object]:
    """Resources keyed as declarations name them: by class, or (`named`) by name."""
    keyed: list[tuple[ResourceKey, object]] = [(type(i), i) for i in instances]
    keyed += named.items()
    bound = dict(keyed)
    if len(bound) != len(keyed):
        raise ValueError(f"two resources under one key: {[key for key, _ in keyed]}")
    return bound


def route_table(
    operations: Iterable[Operation], resources: Mapping[ResourceKey, object]
) -> list[tuple[str, object]]:
    """Each path the operations declare, with its resource, in the order they declare them.

    Raises LookupError when the declarations and the resources disagree.
    """
    declared: dict[str, tuple[ResourceKey, set[str]]] = {}
    for op in operations:
        for path in op.paths:
            key, methods = declared.setdefault(path, (op.resource, set()))
            if key != op.resource:
                raise LookupError(
                    f"{op.method} {path}: {op.resource!r}, but the path's other methods {key!r}"
                )
            methods.add(op.method)
    keys = {key for key, _ in declared.values()}
    if keys != set(resources):
        raise LookupError(
            f"declared without a resource: {sorted(map(repr, keys - set(resources)))}; "
            f"resources no operation declares: {sorted(map(repr, set(resources) - keys))}"
        )
    table = []
    for path, (key, methods) in declared.items():
        resource = resources[key]
        if isinstance(key, type) and not isinstance(resource, key):
            raise LookupError(f"{path}: {resource!r} is no {key.__name__}")
        served = set(map_http_methods(resource))
        if served != methods:
            raise LookupError(
                f"{path}: {type(resource).__name__} serves {sorted(served)}; "
                f"api/operations declares {sorted(methods)}"
            )
        table.append((path, resource))
    return table
