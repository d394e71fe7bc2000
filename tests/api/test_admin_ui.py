"""The job dashboard page: public, self-contained, and locked down by a hash-based CSP."""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser

from tests.support import ApiClient, assert_problem

URL_ATTRIBUTES = {"src", "href", "action", "formaction", "poster", "data", "srcset", "xlink:href"}


class Page(HTMLParser):
    """The page's inline script and style texts, its URL attributes and any inline handlers."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.inline: dict[str, list[str]] = {"script": [], "style": []}
        self.urls: list[str] = []
        self.blocked_attributes: list[str] = []
        self._open: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.inline:
            self.inline[tag].append("")
            self._open = tag
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value is not None:
                self.urls.append(value)
            # The CSP blocks these; the page would silently lose them.
            if name == "style" or name.startswith("on"):
                self.blocked_attributes.append(f"<{tag} {name}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open:
            self.inline[self._open][-1] += data


def csp_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_the_page_is_public_and_its_data_is_not(api: ApiClient) -> None:
    page = await api.get("/admin/ui")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text.startswith("<!doctype html>")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert_problem(await api.get("/admin/queue"), 401)


async def test_the_csp_allows_exactly_the_inline_script_and_style(api: ApiClient) -> None:
    page = await api.get("/admin/ui")
    parsed = Page(page.text)
    assert len(parsed.inline["script"]) == 1 and len(parsed.inline["style"]) == 1
    policy = {
        name: value
        for name, _, value in (
            part.strip().partition(" ") for part in page.headers["content-security-policy"].split(";")
        )
    }
    assert policy == {
        "default-src": "'none'",
        "connect-src": "'self'",
        "img-src": "'self' data:",
        "script-src": csp_source(parsed.inline["script"][0]),
        "style-src": csp_source(parsed.inline["style"][0]),
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
        "form-action": "'none'",
    }
    assert parsed.blocked_attributes == []


async def test_nothing_loads_from_another_origin(api: ApiClient) -> None:
    page = await api.get("/admin/ui")
    parsed = Page(page.text)
    assert parsed.urls, "the parser found no URL attributes at all"
    for url in parsed.urls:
        assert not url.lower().startswith(("http:", "https:", "//")), url
    style = parsed.inline["style"][0]
    assert "@import" not in style and "url(" not in style
