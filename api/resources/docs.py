"""`/openapi.json`, `/docs` (Swagger UI) and `/redoc`: the api describing itself, offline.

Swagger UI's files come from the swagger-ui-py package and ReDoc's standalone bundle is vendored
under `api/static/redoc` (from the npm registry, MIT): the pages load nothing from another host.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

import orjson
from falcon.asgi import Request, Response

from chat.errors import NotFound

SWAGGER_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}

_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _page(head: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>headless-chat api</title>
<link rel="icon" href="/docs/assets/favicon-32x32.png">
{head}</head>
<body>
{body}</body>
</html>
"""


SWAGGER_PAGE = _page(
    '<link rel="stylesheet" href="/docs/assets/swagger-ui.css">\n',
    '<div id="swagger-ui"></div>\n'
    '<script src="/docs/assets/swagger-ui-bundle.js"></script>\n'
    '<script src="/docs/init.js"></script>\n',
)

# No validator badge: it would send the document to validator.swagger.io.
SWAGGER_INIT = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,
    deepLinking: true,
    persistAuthorization: true,
  });
});
"""

REDOC_PAGE = _page(
    "", '<redoc spec-url="/openapi.json"></redoc>\n<script src="/redoc/redoc.standalone.js"></script>\n'
)

# Both UIs set inline styles at run time; ReDoc also searches in a worker made from a blob.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
    " font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none';"
    " base-uri 'none'; form-action 'none'"
)


class _Page:
    auth_required = False

    def __init__(self, body: str, content_type: str = "text/html; charset=utf-8") -> None:
        self._body = body.encode()
        self._type = content_type

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.content_type = self._type
        resp.set_headers({**_PAGE_HEADERS, "Content-Security-Policy": _CSP})
        resp.data = self._body


class SwaggerUI(_Page):
    def __init__(self) -> None:
        super().__init__(SWAGGER_PAGE)


class SwaggerInit(_Page):
    def __init__(self) -> None:
        super().__init__(SWAGGER_INIT, "text/javascript; charset=utf-8")


class ReDoc(_Page):
    def __init__(self) -> None:
        super().__init__(REDOC_PAGE)


class _Asset:
    """Static files, read once: they change only with the installed package."""

    auth_required = False

    def __init__(self, data: bytes, content_type: str) -> None:
        self._data = data
        self._type = content_type

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.content_type = self._type
        resp.set_header("Cache-Control", "public, max-age=86400")
        resp.data = self._data


@cache
def _swagger_assets() -> dict[str, _Asset]:
    folder = files("swagger_ui").joinpath("static")
    return {name: _Asset(folder.joinpath(name).read_bytes(), kind) for name, kind in SWAGGER_FILES.items()}


class SwaggerAssets:
    auth_required = False

    def __init__(self) -> None:
        self._assets = _swagger_assets()

    async def on_get(self, req: Request, resp: Response, name: str) -> None:
        asset = self._assets.get(name)
        if asset is None:
            raise NotFound(f"No asset {name!r}.")
        await asset.on_get(req, resp)


@cache
def redoc_bundle() -> _Asset:
    data = files("api").joinpath("static", "redoc", "redoc.standalone.js").read_bytes()
    return _Asset(data, "text/javascript; charset=utf-8")


class Document:
    """A machine-readable description (OpenAPI or AsyncAPI), serialised once."""

    auth_required = False

    def __init__(self, document: dict[str, Any]) -> None:
        self._data = orjson.dumps(document)

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.content_type = "application/json; charset=utf-8"
        resp.set_header("Cache-Control", "no-cache")
        resp.data = self._data
