"""`/admin/ui`: the operators' job dashboard, one self-contained page over the `/admin/*` routes."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from falcon.asgi import Request, Response

PAGE = "admin_ui.html"


def inline_source(html: str, tag: str) -> str:
    """The CSP source that allows the page's one inline `<tag>` element, and nothing else."""
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    if len(found) != 1:
        raise ValueError(f"{PAGE} must hold exactly one plain <{tag}> element, not {len(found)}")
    digest = hashlib.sha256(found[0].encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


class AdminUI:
    """Public on purpose: the page holds no data, and every call it makes needs an admin's token."""

    auth_required = False

    def __init__(self) -> None:
        html = files("api").joinpath(PAGE).read_text(encoding="utf-8")
        self._body = html.encode()
        # Hashes instead of 'unsafe-inline': an injected <script> or <style> would not run.
        policy = {
            "default-src": "'none'",
            "connect-src": "'self'",
            "img-src": "'self' data:",
            "script-src": inline_source(html, "script"),
            "style-src": inline_source(html, "style"),
            "frame-ancestors": "'none'",
            "base-uri": "'none'",
            "form-action": "'none'",
        }
        self._headers = {
            "Content-Security-Policy": "; ".join(f"{name} {value}" for name, value in policy.items()),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.content_type = "text/html; charset=utf-8"
        resp.set_headers(self._headers)
        resp.data = self._body
