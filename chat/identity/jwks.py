"""The app's JWKS (APP_JWKS_URL): fetched with httpx without blocking the event loop (PyJWT's own
PyJWKClient fetches with blocking urllib), parsed with PyJWK, kept per the response's
`Cache-Control: max-age`.

Every fetch, for whatever reason (first use, expiry, an unknown `kid`), waits at least
`min_refresh` seconds after the one before it, and concurrent callers share one fetch: a flood of
tokens with made-up `kid`s costs the app's server at most one request per `min_refresh`. A failed
fetch keeps the keys already held (a JWKS that is down does not log everyone out); a `kid` it
never held is simply unknown (401, never 500).

Each key verifies exactly one algorithm, fixed by its type, never by the token's header: RSA →
RS256, EC P-256 → ES256, OKP Ed25519 → EdDSA. So an RSA public key can never check an HS256
token (the classic confusion), and an RS384 or PS256 token is refused: the contract names RS256.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import jwt

from chat.infra.outage import Outage

log = logging.getLogger("chat.auth")

# Without max-age a JWKS is kept this long; with one, at most CAP (a key the app withdrew stops
# working within this long even if its server said a week) and at least min_refresh.
DEFAULT_MAX_AGE = 300.0
MAX_AGE_CAP = 3600.0
FETCH_TIMEOUT = 5.0
MAX_JWKS_BYTES = 1024 * 1024
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_STORE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|=|$)", re.IGNORECASE)


_CURVES: dict[tuple[object, object], str] = {("EC", "P-256"): "ES256", ("OKP", "Ed25519"): "EdDSA"}


def algorithm_for(jwk: dict[str, Any]) -> str | None:
    """The one algorithm a JWK may verify, or None when it may verify none."""
    kty = jwk.get("kty")
    alg = "RS256" if kty == "RSA" else _CURVES.get((kty, jwk.get("crv")))
    if alg is None or jwk.get("alg", alg) != alg or jwk.get("use", "sig") != "sig":
        return None
    return alg


def _monotonic() -> float:
    return time.monotonic()  # looked up on each call: a test may shift this module's clock


def parse_keys(document: object) -> dict[str | None, jwt.PyJWK]:
    """The signing keys of a JWKS document by `kid`; keys of other types or uses are left out."""
    found: dict[str | None, jwt.PyJWK] = {}
    keys = document.get("keys") if isinstance(document, dict) else None
    for jwk in keys if isinstance(keys, list) else []:
        alg = algorithm_for(jwk) if isinstance(jwk, dict) else None
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        if alg is None or not (kid is None or isinstance(kid, str)):
            continue
        try:
            found[kid] = jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError:
            continue  # malformed, or a type this cryptography cannot load: unusable, not fatal
    return found


def max_age(cache_control: str | None, default: float = DEFAULT_MAX_AGE) -> float:
    """How long a response may be kept, from its Cache-Control header."""
    if not cache_control:
        return default
    if _NO_STORE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match[1]) if match else default


class KeySet:
    """The app's signing keys by `kid`, fetched on demand, at most once per `min_refresh`."""

    def __init__(
        self,
        url: str,
        min_refresh: float,
        *,
        timeout: float = FETCH_TIMEOUT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._url = url
        self._min_refresh = min_refresh
        self._timeout = timeout
        self._clock = clock or _monotonic
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fresh_until = 0.0  # nothing fetched yet
        self._last_attempt: float | None = None
        self._fetching: asyncio.Future[None] | None = None
        self._outage = Outage(log, "The app's JWKS")
        self.fetches = 0  # attempts, for tests and metrics

    async def key(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        """The key `kid` names when it verifies `algorithm`; None when there is none."""
        if self._clock() >= self._fresh_until:
            await self._refresh()
        found = self._find(kid)
        if found is None:
            await self._refresh()  # maybe a key the app added since: at most once per min_refresh
            found = self._find(kid)
        return found if found is not None and found.algorithm_name == algorithm else None

    async def holds(self, kid: str | None) -> bool:
        """Whether the key is still in the (fresh) set: a verified token whose key the app
        withdrew stops working once the set is fetched again."""
        if self._clock() >= self._fresh_until:
            await self._refresh()
        return self._find(kid) is not None

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))  # a JWKS of one key: tokens need not name it
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        if self._fetching is None:
            now = self._clock()
            if self._last_attempt is not None and now - self._last_attempt < self._min_refresh:
                return
            self._last_attempt = now
            self._fetching = asyncio.ensure_future(self._fetch())
        fetching = self._fetching
        try:
            # Shielded: one caller giving up (its request cancelled) does not cancel the others'.
            await asyncio.shield(fetching)
        finally:
            if fetching.done() and self._fetching is fetching:
                self._fetching = None

    async def _fetch(self) -> None:
        # Imported on the first fetch: httpx brings rich and pygments along (its command line),
        # 5 MB that every process without APP_JWKS_URL would hold for nothing.
        import httpx

        self.fetches += 1
        try:
            async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
                response = await client.get(self._url, headers={"Accept": "application/json"})
            response.raise_for_status()
            if len(response.content) > MAX_JWKS_BYTES:
                raise ValueError("the JWKS is over 1 MiB")
            keys = parse_keys(response.json())
        except Exception as exc:  # any failure keeps the keys held; logged once
            self._outage.down(exc)
            return
        self._outage.up()
        self._keys = keys
        kept = min(max(max_age(response.headers.get("Cache-Control")), self._min_refresh), MAX_AGE_CAP)
        self._fresh_until = self._clock() + kept
