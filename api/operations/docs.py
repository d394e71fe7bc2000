"""The api's description and the pages that show it: routed to anyone (documentation, no data), and
not part of what they describe. Their resources are named, not given by class: two share a class
and one's class is private to its module (`api.app.add_docs` builds them)."""

from __future__ import annotations

from api.operations.base import Operation, unguarded


def _page(path: str, resource: str, summary: str) -> Operation:
    return unguarded(path, resource, summary, (summary, None), roots=("",), described=False)


OPERATIONS = (
    _page("/openapi.json", "openapi", "This document"),
    _page("/asyncapi.json", "asyncapi", "The push process's WebSocket protocol (AsyncAPI)"),
    _page("/docs", "swagger-ui", "Swagger UI"),
    _page("/docs/init.js", "swagger-init", "Swagger UI's setup"),
    _page("/docs/assets/{name}", "swagger-assets", "Swagger UI's files"),
    _page("/redoc", "redoc", "ReDoc"),
    _page("/redoc/redoc.standalone.js", "redoc-bundle", "ReDoc's script"),
)
