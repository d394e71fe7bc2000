"""App tokens: JWTs the app's backend signs for its users (CONTRACT.md, "Your app's users").

HS256 with APP_JWT_SECRET, and RS256 / ES256 / EdDSA with the keys of APP_JWKS_URL
(chat.identity.jwks). The algorithm is chosen by the key, never by the token: an HS256 token is
checked only against the secret (refused when none is set, even if a JWKS is), and a JWKS key only
verifies its own type's algorithm; `alg: none` matches no key at all.

Claims: `sub` (1 to 128 printable characters), `exp` and `iat` (JSON numbers, as for our own
tokens), `exp - iat` at most APP_JWT_MAX_TTL_SECONDS, `iss` / `aud` when configured, with
APP_JWT_LEEWAY_SECONDS of clock skew; `name` and `preferred_username` optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt

from chat.errors import Unauthorized
from chat.identity.jwks import KeySet
from chat.identity.security import VerifiedCache, numeric_date
from chat.settings import Settings

SUB_MAX = 128
NAME_MAX = 64  # users.display_name
HMAC = "HS256"
_INVALID = "The app token is invalid."


@dataclass(frozen=True, slots=True)
class AppClaims:
    """What an app token says of its user."""

    sub: str
    expires_at: datetime
    name: str | None = None
    preferred_username: str | None = None
    kid: str | None = None  # the JWKS key that verified it; None for HS256


def invalid(detail: str = _INVALID) -> Unauthorized:
    return Unauthorized(detail, invalid_token=True)


class AppTokens:
    """Verifies app tokens; remembers the verified ones as our own tokens are remembered."""

    def __init__(self, settings: Settings, keys: KeySet | None = None) -> None:
        self._secret = settings.app_jwt_secret.get_secret_value() or None
        self._keys = keys if keys is not None or not settings.app_jwks_url else _key_set(settings)
        self._issuer = settings.app_jwt_issuer or None
        self._audience = settings.app_jwt_audience or None
        self._max_ttl = settings.app_jwt_max_ttl_seconds
        self._leeway = settings.app_jwt_leeway_seconds
        self._verified: VerifiedCache[AppClaims] = VerifiedCache()

    @staticmethod
    def configured(settings: Settings) -> bool:
        return bool(settings.app_jwt_secret.get_secret_value() or settings.app_jwks_url)

    async def verify(self, token: str) -> AppClaims:
        """The token's claims, or Unauthorized (401; the socket closes 4401)."""
        known = self._verified.get(token)
        if known is not None:
            if known.kid is None or self._keys is None or await self._keys.holds(known.kid):
                return known
            self._verified.drop(token)  # its key left the JWKS: refused below
        claims = await self._verify(token)
        self._verified.put(token, claims, claims.expires_at.timestamp())
        return claims

    async def _verify(self, token: str) -> AppClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise invalid() from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or not (kid is None or isinstance(kid, str)):
            raise invalid()
        key = await self._key_for(algorithm, kid)
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["sub", "exp", "iat"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise invalid("The app token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise invalid() from exc
        return self._claims(payload, None if algorithm == HMAC else kid)

    async def _key_for(self, algorithm: str, kid: str | None) -> Any:
        if algorithm == HMAC:
            if self._secret is None:
                raise invalid("HS256 app tokens are not accepted here (no APP_JWT_SECRET).")
            return self._secret
        found = await self._keys.key(kid, algorithm) if self._keys is not None else None
        if found is None:
            raise invalid("No key of the app's JWKS verifies this token.")
        return found.key

    def _claims(self, payload: dict[str, Any], kid: str | None) -> AppClaims:
        # PyJWT lets a string of digits or a bool pass as a time: the same check as our own tokens.
        expires, issued = numeric_date(payload["exp"]), numeric_date(payload["iat"])
        sub = payload["sub"]
        if expires is None or issued is None or not valid_sub(sub):
            raise invalid()
        if (expires - issued).total_seconds() > self._max_ttl:
            raise invalid(f"The app token lives longer than {self._max_ttl} seconds (exp - iat).")
        return AppClaims(
            sub=sub,
            expires_at=expires,
            name=_text(payload.get("name"), NAME_MAX),
            preferred_username=_text(payload.get("preferred_username"), SUB_MAX),
            kid=kid,
        )


def valid_sub(sub: object) -> bool:
    """1 to 128 printable characters (no control characters, no line breaks)."""
    return isinstance(sub, str) and 0 < len(sub) <= SUB_MAX and sub.isprintable()


def _text(value: object, limit: int) -> str | None:
    """An optional text claim: printable and not blank, cut to `limit`; anything else is ignored."""
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        return None
    return value.strip()[:limit]


def _key_set(settings: Settings) -> KeySet:
    return KeySet(settings.app_jwks_url, settings.app_jwks_min_refresh_seconds)
