"""Bearer-token authentication: who is calling, for which tenant, with which scopes.

Tokens are JWTs verified with pyjwt through Litestar's ``JWTAuth``. Claims:
``tid`` (tenant), ``sub`` (subject), ``exp`` (required), ``iat``, optional
``aud`` and ``iss``, and scopes as a space-separated ``scope`` string or a
``scopes`` list. A token with any scope of ``SERVICE_SCOPES`` is a service
token: a backend acting for any user of its tenant, within its scopes.
Any other token is an end-user token whose ``sub`` is the only user it can
read or change.

Keys come from ``AUTH_HS256_SECRET`` or ``AUTH_HS256_SECRET_FILE`` (HS256),
and from a JWKS file or URL (RS256, ES256, and HS256 ``oct`` keys). A token
names its key with the ``kid`` header, so several keys can be valid at once
during a rotation. Each key accepts only the algorithm of its type, so an
RSA public key can never be used as an HMAC secret.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import jwt
from cachetools import TLRUCache
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware.authentication import AuthenticationResult
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token

from app.errors import ConfigurationError
from app.logging import get_logger
from app.schemas import SCOPE_ID_PATTERN

if TYPE_CHECKING:
    from collections.abc import Sequence

    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

    from app.settings import AuthSettings, Settings

log = get_logger("auth")

READ = "memory:read"
WRITE = "memory:write"
DELETE = "memory:delete"
ADMIN = "admin"
SERVICE_SCOPES = frozenset({READ, WRITE, DELETE, ADMIN})

_ALGORITHM_BY_KEY_TYPE = {"oct": "HS256", "RSA": "RS256", "EC": "ES256"}
# /mcp verifies tokens itself, through the MCP SDK's verifier on the same key ring.
PUBLIC_PATHS = ("/health", "/ready", "/docs", "/schema", "/static/", "/mcp", "/metrics")
# The web chat's page; it signs in with a token in the browser.
PUBLIC_EXACT_PATHS = ("/",)
# Seconds PyJWKClient keeps the key set of AUTH_JWKS_URL before it fetches it again.
JWKS_LIFESPAN_S = 300
# A verified token is reused until its exp, and for at most as long as the key
# set is kept, so a key removed from AUTH_JWKS_URL stops verifying tokens no
# later than it would without this cache.
TOKEN_CACHE_MAX_AGE_S = float(JWKS_LIFESPAN_S)
TOKEN_CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    tenant_id: str
    subject: str
    kind: Literal["user", "service"]
    scopes: frozenset[str] = field(default_factory=frozenset)
    token_id: str | None = None

    def allows(self, scope: str) -> bool:
        """Return whether the caller holds ``scope``.

        End users hold every scope but ``admin``, for their own data only.
        """
        if self.kind == "user":
            return scope != ADMIN
        return scope in self.scopes or ADMIN in self.scopes

    def user_for(self, requested_user_id: str) -> str:
        """Return the user a request may act on; end-user tokens act only for their subject."""
        if self.kind == "user" and requested_user_id != self.subject:
            raise PermissionDeniedException(
                detail=f"this token acts for its own user only; user_id {requested_user_id!r} "
                "does not match the token's subject"
            )
        return requested_user_id


@dataclass(frozen=True, slots=True)
class VerificationKey:
    key: Any
    algorithm: str


class KeyRing:
    """Keys that may verify tokens, looked up by ``kid``."""

    def __init__(
        self, keys: dict[str, VerificationKey], jwks_client: jwt.PyJWKClient | None = None
    ) -> None:
        self._keys = keys
        self._jwks_client = jwks_client

    def __bool__(self) -> bool:
        return bool(self._keys) or self._jwks_client is not None

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> KeyRing:
        keys: dict[str, VerificationKey] = {}
        secret = _read_secret(settings)
        if secret is not None:
            keys[settings.hs256_key_id] = VerificationKey(secret, "HS256")
        if settings.jwks_file is not None:
            keys.update(_keys_from_jwks(json.loads(settings.jwks_file.read_text(encoding="utf-8"))))
        client = None
        if settings.jwks_url is not None:
            client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=JWKS_LIFESPAN_S)
        return cls(keys, client)

    def _fetch(self, kid: str) -> VerificationKey:
        client = self._jwks_client
        if client is None:
            raise jwt.InvalidTokenError(f"no key with kid {kid!r}")
        try:
            signing_key = client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as error:
            log.warning("auth.jwks_unreachable", error=str(error))
            raise jwt.InvalidTokenError("the key set URL cannot be reached") from error
        except jwt.PyJWKClientError as error:
            raise jwt.InvalidTokenError(f"no key with kid {kid!r} in the key set") from error
        return VerificationKey(signing_key.key, _algorithm_of(signing_key))

    def key_for(self, encoded_token: str) -> VerificationKey:
        """Pick the key a token names; raise ``jwt.InvalidTokenError`` when none fits."""
        header = jwt.get_unverified_header(encoded_token)
        algorithm = header.get("alg")
        kid = header.get("kid")
        if kid is not None and kid in self._keys:
            key = self._keys[kid]
        elif kid is not None and self._jwks_client is not None:
            key = self._fetch(kid)
        elif kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        else:
            raise jwt.InvalidTokenError("the token names no known key (kid)")
        if algorithm != key.algorithm:
            raise jwt.InvalidAlgorithmError(f"the key accepts {key.algorithm}, not {algorithm}")
        return key


def _read_secret(settings: AuthSettings) -> str | None:
    if settings.hs256_secret is not None:
        return settings.hs256_secret.get_secret_value()
    if settings.hs256_secret_file is not None:
        try:
            return settings.hs256_secret_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigurationError(
                f"AUTH_HS256_SECRET_FILE={settings.hs256_secret_file} cannot be read: {error}"
            ) from error
    return None


def _algorithm_of(key: jwt.PyJWK) -> str:
    key_type = key.key_type
    algorithm = _ALGORITHM_BY_KEY_TYPE.get(str(key_type))
    if algorithm is None:
        raise jwt.InvalidKeyError(f"keys of type {key_type} are not accepted")
    return algorithm


def _keys_from_jwks(document: dict[str, Any]) -> dict[str, VerificationKey]:
    keys: dict[str, VerificationKey] = {}
    for entry in document.get("keys", []):
        kid = entry.get("kid")
        if not kid:
            raise ConfigurationError("every key in AUTH_JWKS_FILE needs a kid")
        algorithm = _ALGORITHM_BY_KEY_TYPE.get(entry.get("kty", ""))
        if algorithm is None:
            raise ConfigurationError(f"key {kid} in AUTH_JWKS_FILE has an unsupported kty")
        keys[kid] = VerificationKey(jwt.PyJWK(entry, algorithm=algorithm).key, algorithm)
    return keys


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Build the caller from verified claims; raise ``NotAuthorizedException`` if one is missing."""
    tenant = claims.get("tid")
    subject = claims.get("sub")
    if not isinstance(tenant, str) or not isinstance(subject, str) or not subject:
        raise NotAuthorizedException(detail="the token needs string claims tid and sub")
    if not re.fullmatch(SCOPE_ID_PATTERN, tenant):
        raise NotAuthorizedException(
            detail="the token's tid must be 1-128 letters, digits or . _ @ + = -"
        )
    raw_scopes = claims.get("scopes", claims.get("scope", ""))
    scopes = raw_scopes.split() if isinstance(raw_scopes, str) else list(raw_scopes)
    kind: Literal["user", "service"] = "service" if SERVICE_SCOPES & set(scopes) else "user"
    jti = claims.get("jti")
    return Principal(
        tenant_id=tenant,
        subject=subject,
        kind=kind,
        scopes=frozenset(str(scope) for scope in scopes),
        token_id=str(jti) if jti is not None else None,
    )


def decode_claims(
    keyring: KeyRing,
    encoded_token: str,
    leeway_s: int,
    issuer: str | Sequence[str] | None = None,
    audience: str | Sequence[str] | None = None,
    options: Any = None,
) -> dict[str, Any]:
    """Verify a token with the key its ``kid`` names and return its claims."""
    key = keyring.key_for(encoded_token)
    checks: Any = {**(options or {}), "require": ["exp", "iat", "sub", "tid"]}
    claims: dict[str, Any] = jwt.decode(
        encoded_token,
        key=key.key,
        algorithms=[key.algorithm],
        issuer=issuer,
        audience=audience,
        options=checks,
        leeway=leeway_s,
    )
    return claims


def _token_class(keyring: KeyRing, leeway_s: int) -> type[Token]:
    class EngramToken(Token):
        """Litestar's token, verified with the key its ``kid`` names."""

        @classmethod
        def decode_payload(
            cls,
            encoded_token: str,
            secret: str,  # noqa: ARG003  (keys come from the key ring)
            algorithms: list[str],  # noqa: ARG003
            issuer: str | Sequence[str] | None = None,
            audience: str | Sequence[str] | None = None,
            options: Any = None,
        ) -> Any:
            return decode_claims(keyring, encoded_token, leeway_s, issuer, audience, options)

    return EngramToken


class TokenVerifier:
    """Verifies bearer tokens outside Litestar's middleware, with the same keys and checks."""

    def __init__(self, settings: AuthSettings) -> None:
        self._keyring = KeyRing.from_settings(settings)
        self._settings = settings

    def principal(self, encoded_token: str) -> Principal | None:
        """Return the token's caller, or None when the token is not valid."""
        try:
            claims = decode_claims(
                self._keyring,
                encoded_token,
                self._settings.leeway_s,
                issuer=self._settings.issuer,
                audience=self._settings.audience,
            )
            return principal_from_claims(claims)
        except (jwt.PyJWTError, NotAuthorizedException) as error:
            log.info("auth.token_rejected", reason=str(error))
            return None


def _caching_middleware_class(
    max_entries: int = TOKEN_CACHE_MAX_ENTRIES, max_age_s: float = TOKEN_CACHE_MAX_AGE_S
) -> type[JWTAuthenticationMiddleware]:
    """Build Litestar's JWT middleware class with a cache of verified tokens, shared by one app.

    Only tokens that passed every check are cached, keyed by the encoded token,
    so a forged or altered token is verified (and rejected) on every request.
    """

    def expires_at(_token: str, result: AuthenticationResult, now: float) -> float:
        # The cache runs on the monotonic clock, but exp is wall-clock time.
        expiry: datetime = result.auth.exp
        remaining_s = expiry.timestamp() - time.time()
        return now + min(remaining_s, max_age_s)

    verified: TLRUCache[str, AuthenticationResult] = TLRUCache(max_entries, ttu=expires_at)

    class CachingJWTAuthenticationMiddleware(JWTAuthenticationMiddleware):
        __slots__ = ()

        async def authenticate_token(
            self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
        ) -> AuthenticationResult:
            result = verified.get(encoded_token)
            if result is None:
                result = await super().authenticate_token(encoded_token, connection)
                verified[encoded_token] = result
            return result

    return CachingJWTAuthenticationMiddleware


async def _retrieve_principal(token: Token, _: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    claims = {**token.extras, "sub": token.sub, "jti": token.jti}
    return principal_from_claims(claims)


def build_jwt_auth(settings: AuthSettings) -> JWTAuth[Principal, Token] | None:
    """Return the auth config, None in development mode; refuse to run without keys."""
    if settings.dev_mode:
        log.warning(
            "auth.dev_mode",
            message="AUTH_DEV_MODE is on: every request acts as an admin of the default tenant; "
            "never use this outside local development",
        )
        return None
    keyring = KeyRing.from_settings(settings)
    if not keyring:
        raise ConfigurationError(
            "no token key is configured; set AUTH_HS256_SECRET, AUTH_HS256_SECRET_FILE, "
            "AUTH_JWKS_FILE or AUTH_JWKS_URL (or AUTH_DEV_MODE=true for local development)"
        )
    return JWTAuth[Principal, Token](
        token_secret="unused: keys come from the key ring",  # noqa: S106
        retrieve_user_handler=_retrieve_principal,
        token_cls=_token_class(keyring, settings.leeway_s),
        authentication_middleware_class=_caching_middleware_class(),
        algorithm="HS256",
        accepted_audiences=[settings.audience] if settings.audience else None,
        accepted_issuers=[settings.issuer] if settings.issuer else None,
        exclude=[
            *(f"^{path}" for path in PUBLIC_PATHS),
            *(f"^{path}$" for path in PUBLIC_EXACT_PATHS),
        ],
        description="A JWT with the claims tid, sub and exp; see docs/security.md.",
    )


def require(scope: str) -> Any:
    """Return a guard that lets a request through only when the caller holds ``scope``."""

    # Async, because Litestar runs a synchronous guard in a worker thread.
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = current_principal(connection)
        if not principal.allows(scope):
            raise PermissionDeniedException(detail=f"this token lacks the scope {scope}")

    return guard


def current_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """Return the caller: the token's principal, or the development principal."""
    user = connection.scope.get("user")
    if isinstance(user, Principal):
        return user
    settings = connection.app.state.settings
    if settings.auth.dev_mode:
        return dev_principal(settings)
    raise NotAuthorizedException(detail="a bearer token is required")


def dev_principal(settings: Settings) -> Principal:
    """Return the caller of every request in AUTH_DEV_MODE: an admin of the default tenant."""
    return Principal(
        tenant_id=settings.server.default_tenant,
        subject="developer",
        kind="service",
        scopes=SERVICE_SCOPES,
    )


def mint_token(
    secret: str,
    *,
    tenant_id: str,
    subject: str,
    scopes: Sequence[str] = (),
    lifetime: timedelta = timedelta(hours=1),
    key_id: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """Sign an HS256 token for development and tests."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "tid": tenant_id,
        "sub": subject,
        "iat": now,
        "exp": now + lifetime,
        "jti": secrets.token_hex(8),
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    headers = {"kid": key_id} if key_id else None
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers)
