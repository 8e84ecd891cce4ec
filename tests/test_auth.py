"""Bearer-token authentication, scopes, and tenant and user isolation."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.utils import base64url_encode
from pydantic import SecretStr

from app import cli
from app.auth import mint_token
from app.errors import ConfigurationError
from app.main import attach_runtime, create_app
from app.settings import AuthSettings
from tests.conftest import TEST_SECRET, service_token, user_token
from tests.helpers import turn
from tests.test_promotion import drain

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from app.runtime import Runtime

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/sessions/s1/turns", {"user_id": "alice", "turns": [turn("hi")]}),
    ("GET", "/v1/sessions/s1/turns?user_id=alice", None),
    ("DELETE", "/v1/sessions/s1?user_id=alice", None),
    ("GET", "/v1/users/alice/sessions", None),
    ("POST", "/v1/memories/search", {"user_id": "alice", "query": "hi"}),
    ("GET", "/v1/memories/8d206cde-2977-52c5-996c-a6367ecc687a?user_id=alice", None),
    ("DELETE", "/v1/memories/8d206cde-2977-52c5-996c-a6367ecc687a?user_id=alice", None),
    ("POST", "/v1/context", {"user_id": "alice", "query": "hi"}),
]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def call(
    client: httpx.AsyncClient, route: tuple[str, str, dict[str, Any] | None], token: str | None
) -> httpx.Response:
    method, path, body = route
    headers = bearer(token) if token is not None else {"authorization": ""}
    return await client.request(method, path, json=body, headers=headers)


def claims(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    base: dict[str, Any] = {
        "tid": "default",
        "sub": "alice",
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


@pytest.mark.parametrize("route", ROUTES, ids=[f"{method} {path}" for method, path, _ in ROUTES])
async def test_every_route_needs_a_token(
    client: httpx.AsyncClient, route: tuple[str, str, dict[str, Any] | None]
) -> None:
    response = await call(client, route, None)

    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["type"] == "urn:engram:problem:unauthorized"


@pytest.mark.parametrize("path", ["/health", "/ready", "/docs/openapi.json"])
async def test_operational_routes_are_public(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers={"authorization": ""})

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("case", "token"),
    [
        ("expired", jwt.encode(claims(exp=datetime.now(UTC) - timedelta(minutes=5)), TEST_SECRET)),
        ("no expiry", jwt.encode(claims(exp=None), TEST_SECRET)),
        ("no tenant", jwt.encode(claims(tid=None), TEST_SECRET)),
        ("wrong secret", jwt.encode(claims(), "another-secret-of-sufficient-length-000000")),
        ("unsigned", jwt.encode(claims(), None, algorithm="none")),  # type: ignore[arg-type]
        ("garbage", "not.a.jwt"),
        ("unknown kid", jwt.encode(claims(), TEST_SECRET, headers={"kid": "retired"})),
    ],
)
async def test_bad_tokens_are_rejected(client: httpx.AsyncClient, case: str, token: str) -> None:
    response = await call(client, ROUTES[3], token)

    assert response.status_code == 401, case


async def test_end_user_token_reaches_own_data_only(client: httpx.AsyncClient) -> None:
    alice = user_token("alice")

    own = await client.post(
        "/v1/sessions/s1/turns",
        json={"user_id": "alice", "turns": [turn("mine")]},
        headers=bearer(alice),
    )
    foreign_write = await client.post(
        "/v1/sessions/s1/turns",
        json={"user_id": "bob", "turns": [turn("pretending to be bob")]},
        headers=bearer(alice),
    )
    foreign_read = await client.get("/v1/users/bob/sessions", headers=bearer(alice))
    own_read = await client.get("/v1/users/alice/sessions", headers=bearer(alice))

    assert own.status_code == 202
    assert foreign_write.status_code == 403
    assert "does not match the token's subject" in foreign_write.json()["detail"]
    assert foreign_read.status_code == 403
    assert [item["session_id"] for item in own_read.json()["sessions"]] == ["s1"]
    bob = await client.get("/v1/users/bob/sessions")
    assert bob.json()["sessions"] == []


@pytest.mark.parametrize(
    ("scopes", "route_index", "status"),
    [
        (("memory:read",), 0, 403),
        (("memory:read",), 3, 200),
        (("memory:write",), 3, 403),
        (("memory:write",), 0, 202),
        (("memory:read", "memory:write"), 2, 403),
        (("memory:delete",), 2, 404),
        (("admin",), 0, 202),
    ],
)
async def test_service_scopes_are_enforced(
    client: httpx.AsyncClient, scopes: tuple[str, ...], route_index: int, status: int
) -> None:
    response = await call(client, ROUTES[route_index], service_token(scopes=scopes))

    assert response.status_code == status


async def test_tenants_do_not_see_each_other(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant_a = service_token("tenant-a")
    tenant_b = service_token("tenant-b")
    await client.post(
        "/v1/sessions/s1/turns",
        json={"user_id": "alice", "turns": [turn("tenant A's secret plan")]},
        headers=bearer(tenant_a),
    )
    await drain(runtime.new_worker("w"))
    hit = (
        await client.post(
            "/v1/memories/search",
            json={"user_id": "alice", "query": "secret plan"},
            headers=bearer(tenant_a),
        )
    ).json()["hits"][0]

    window = await client.get("/v1/sessions/s1/turns?user_id=alice", headers=bearer(tenant_b))
    sessions = await client.get("/v1/users/alice/sessions", headers=bearer(tenant_b))
    search = await client.post(
        "/v1/memories/search",
        json={"user_id": "alice", "query": "secret plan"},
        headers=bearer(tenant_b),
    )
    memory = await client.get(f"/v1/memories/{hit['id']}?user_id=alice", headers=bearer(tenant_b))
    removal = await client.delete(
        f"/v1/memories/{hit['id']}?user_id=alice", headers=bearer(tenant_b)
    )
    context = await client.post(
        "/v1/context",
        json={"user_id": "alice", "session_id": "s1", "query": "plan"},
        headers=bearer(tenant_b),
    )

    assert window.status_code == 404
    assert sessions.json()["sessions"] == []
    assert search.json()["hits"] == []
    assert memory.status_code == 404
    assert removal.status_code == 404
    assert context.json()["messages"] == []
    still_there = await client.get(
        f"/v1/memories/{hit['id']}?user_id=alice", headers=bearer(tenant_a)
    )
    assert still_there.status_code == 200


@pytest.fixture
async def app_client(runtime: Runtime) -> AsyncIterator[Any]:
    """Build an app with other auth settings over the shared runtime."""
    clients: list[httpx.AsyncClient] = []

    async def build(auth: AuthSettings) -> httpx.AsyncClient:
        settings = runtime.settings.model_copy(update={"auth": auth})
        app = create_app(settings)
        attach_runtime(app, runtime)
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


def forge_hs256(payload: dict[str, Any], secret: bytes, kid: str) -> str:
    """Sign a token by hand; pyjwt itself refuses to use a public key as an HMAC secret."""

    def encode(part: dict[str, Any]) -> bytes:
        return base64url_encode(json.dumps(part, default=_epoch).encode())

    signing_input = encode({"alg": "HS256", "typ": "JWT", "kid": kid}) + b"." + encode(payload)
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64url_encode(signature)).decode()


def _epoch(value: datetime) -> int:
    return int(value.timestamp())


def _jwks(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(entries)}


async def test_keys_rotate_by_kid(app_client: Any, tmp_path: Path) -> None:
    old, new = "old-secret-0123456789-0123456789-abcdef", "new-secret-0123456789-0123456789-abcdef"
    jwks = tmp_path / "keys.json"
    jwks.write_text(
        json.dumps(
            _jwks(
                {
                    "kty": "oct",
                    "kid": "2024",
                    "k": base64url_encode(old.encode()).decode(),
                },
                {
                    "kty": "oct",
                    "kid": "2025",
                    "k": base64url_encode(new.encode()).decode(),
                },
            )
        ),
        encoding="utf-8",
    )
    client = await app_client(AuthSettings(jwks_file=jwks))

    for secret, kid in ((old, "2024"), (new, "2025")):
        token = mint_token(secret, tenant_id="default", subject="alice", key_id=kid)
        response = await client.get("/v1/users/alice/sessions", headers=bearer(token))
        assert response.status_code == 200, kid
    mismatched = mint_token(old, tenant_id="default", subject="alice", key_id="2025")
    no_kid = mint_token(old, tenant_id="default", subject="alice")
    assert (
        await client.get("/v1/users/alice/sessions", headers=bearer(mismatched))
    ).status_code == 401
    assert (await client.get("/v1/users/alice/sessions", headers=bearer(no_kid))).status_code == 401


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_public_key_tokens_verify(app_client: Any, tmp_path: Path, algorithm: str) -> None:
    if algorithm == "RS256":
        private_key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(RSAAlgorithm.to_jwk(private_key.public_key()))
    else:
        private_key = ec.generate_private_key(ec.SECP256R1())
        public = json.loads(ECAlgorithm.to_jwk(private_key.public_key()))
    public["kid"] = "idp-1"
    jwks = tmp_path / "keys.json"
    jwks.write_text(json.dumps(_jwks(public)), encoding="utf-8")
    client = await app_client(AuthSettings(jwks_file=jwks, audience="engram", issuer="https://idp"))

    good = jwt.encode(
        claims(aud="engram", iss="https://idp"),
        private_key,
        algorithm=algorithm,
        headers={"kid": "idp-1"},
    )
    wrong_audience = jwt.encode(
        claims(aud="other", iss="https://idp"),
        private_key,
        algorithm=algorithm,
        headers={"kid": "idp-1"},
    )
    # A token signed with HS256 and the public key as the secret must fail.
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = forge_hs256(claims(aud="engram", iss="https://idp"), public_pem, "idp-1")

    assert (await client.get("/v1/users/alice/sessions", headers=bearer(good))).status_code == 200
    assert (
        await client.get("/v1/users/alice/sessions", headers=bearer(wrong_audience))
    ).status_code == 401
    assert (
        await client.get("/v1/users/alice/sessions", headers=bearer(confused))
    ).status_code == 401


def test_start_refused_without_keys(runtime: Runtime) -> None:
    settings = runtime.settings.model_copy(update={"auth": AuthSettings()})

    with pytest.raises(ConfigurationError, match="no token key is configured"):
        create_app(settings)


async def test_cached_token_still_expires(app_client: Any) -> None:
    client = await app_client(AuthSettings(hs256_secret=SecretStr(TEST_SECRET), leeway_s=0))
    token = mint_token(
        TEST_SECRET, tenant_id="default", subject="alice", lifetime=timedelta(seconds=2)
    )
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]

    first = await client.get("/v1/users/alice/sessions", headers=bearer(token))
    repeated = await client.get("/v1/users/alice/sessions", headers=bearer(token))
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.2)
    expired = await client.get("/v1/users/alice/sessions", headers=bearer(token))

    assert first.status_code == 200
    assert repeated.status_code == 200
    assert expired.status_code == 401


async def test_cached_token_does_not_admit_altered_copy(client: httpx.AsyncClient) -> None:
    token = user_token("alice")
    header, payload, signature = token.split(".")
    forged_claims = {**jwt.decode(token, options={"verify_signature": False}), "sub": "bob"}
    other_payload = base64url_encode(json.dumps(forged_claims).encode()).decode()
    resigned = f"{header}.{other_payload}.{signature}"
    flipped = "A" if signature[0] != "A" else "B"
    altered_signature = f"{header}.{payload}.{flipped}{signature[1:]}"

    genuine = await client.get("/v1/users/alice/sessions", headers=bearer(token))
    with_other_payload = await client.get("/v1/users/bob/sessions", headers=bearer(resigned))
    with_other_signature = await client.get(
        "/v1/users/alice/sessions", headers=bearer(altered_signature)
    )

    assert genuine.status_code == 200
    assert with_other_payload.status_code == 401
    assert with_other_signature.status_code == 401


async def test_dev_mode_needs_no_token(app_client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    client = await app_client(AuthSettings(dev_mode=True))

    response = await client.get("/v1/users/alice/sessions")

    assert response.status_code == 200
    assert "auth.dev_mode" in capsys.readouterr().err


async def test_secret_file_is_read(app_client: Any, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("file-secret-0123456789-0123456789-abcdef\n", encoding="utf-8")
    client = await app_client(AuthSettings(hs256_secret_file=secret_file))
    token = mint_token("file-secret-0123456789-0123456789-abcdef", tenant_id="t", subject="u")

    response = await client.get("/v1/users/u/sessions", headers=bearer(token))

    assert response.status_code == 200


async def test_token_command_mints_accepted_token(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    secret_file = tmp_path / "auth-secret"
    secret_file.write_text(TEST_SECRET, encoding="utf-8")
    runner = CliRunner(env={"AUTH_HS256_SECRET": None, "AUTH_HS256_SECRET_FILE": str(secret_file)})

    minted = runner.invoke(
        cli.main, ["token", "--sub", "backend", "--scope", "memory:read", "--lifetime", "60"]
    )
    token = minted.output.strip()
    decoded = jwt.decode(token, TEST_SECRET, algorithms=["HS256"])

    assert minted.exit_code == 0, minted.output
    assert decoded["tid"] == "default"
    assert decoded["scope"] == "memory:read"
    assert decoded["exp"] - decoded["iat"] == 60
    response = await client.get("/v1/users/alice/sessions", headers=bearer(token))
    assert response.status_code == 200


def test_token_command_needs_secret() -> None:
    runner = CliRunner(env={"AUTH_HS256_SECRET": None, "AUTH_HS256_SECRET_FILE": None})

    result = runner.invoke(cli.main, ["token", "--sub", "alice"])

    assert result.exit_code == 2
    assert "AUTH_HS256_SECRET" in result.output


def test_token_command_explains_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    runner = CliRunner(env={"AUTH_HS256_SECRET": None, "AUTH_HS256_SECRET_FILE": str(missing)})

    result = runner.invoke(cli.main, ["token", "--sub", "alice"])

    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Traceback" not in result.output


def test_init_secret_creates_private_file_once(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "auth-secret"

    first = CliRunner().invoke(cli.main, ["init-secret", str(path)])
    content = path.read_text(encoding="utf-8")
    second = CliRunner().invoke(cli.main, ["init-secret", str(path)])

    assert first.exit_code == 0
    assert second.exit_code == 0
    assert len(content) >= 32
    assert path.read_text(encoding="utf-8") == content
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_security_headers_on_every_response(client: httpx.AsyncClient) -> None:
    api = await client.get("/v1/users/alice/sessions")
    missing = await client.get("/v1/nothing-here")
    docs = await client.get("/docs")

    for response in (api, missing, docs):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" not in response.headers
    assert api.headers["content-security-policy"].startswith("default-src 'none'")
    assert "https://cdn.jsdelivr.net" in docs.headers["content-security-policy"]


async def test_hsts_only_over_https(app: Any, runtime: Runtime) -> None:
    attach_runtime(app, runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as secure:
        response = await secure.get("/health")

    assert response.headers["strict-transport-security"].startswith("max-age=31536000")


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/v1/memories/search",
        headers={"origin": "https://chat.example", "access-control-request-method": "POST"},
    )

    assert "access-control-allow-origin" not in response.headers


async def test_cors_allows_configured_origin(runtime: Runtime) -> None:
    settings = runtime.settings.model_copy(
        update={
            "server": runtime.settings.server.model_copy(
                update={"cors_origins": ["https://chat.example"]}
            )
        }
    )
    app = create_app(settings)
    attach_runtime(app, runtime)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
        allowed = await browser.options(
            "/v1/memories/search",
            headers={"origin": "https://chat.example", "access-control-request-method": "POST"},
        )
        other = await browser.options(
            "/v1/memories/search",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )

    assert allowed.headers["access-control-allow-origin"] == "https://chat.example"
    assert "access-control-allow-origin" not in other.headers


def _limited_settings(runtime: Runtime, per_token: int, per_address: int) -> Any:
    server = runtime.settings.server.model_copy(
        update={
            "rate_limit_per_token_per_minute": per_token,
            "rate_limit_per_address_per_minute": per_address,
        }
    )
    return runtime.settings.model_copy(update={"server": server})


async def _limited_client(runtime: Runtime, per_token: int, per_address: int) -> httpx.AsyncClient:
    app = create_app(_limited_settings(runtime, per_token, per_address))
    attach_runtime(app, runtime)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_rate_limit_per_token(runtime: Runtime) -> None:
    first, second = bearer(service_token("t1")), bearer(service_token("t2"))
    async with await _limited_client(runtime, per_token=3, per_address=100) as client:
        allowed = [await client.get("/v1/users/u/sessions", headers=first) for _ in range(3)]
        refused = await client.get("/v1/users/u/sessions", headers=first)
        other_token = await client.get("/v1/users/u/sessions", headers=second)
        probe = await client.get("/health")

    assert [response.status_code for response in allowed] == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["type"] == "urn:engram:problem:rate-limited"
    assert other_token.status_code == 200
    assert probe.status_code == 200
    keys = [key async for key in runtime.redis.scan_iter(match="engram:engram-rate-limit-*")]
    assert keys


async def test_rate_limit_per_address(runtime: Runtime) -> None:
    async with await _limited_client(runtime, per_token=100, per_address=2) as client:
        statuses = [
            (
                await client.get(
                    "/v1/users/u/sessions", headers=bearer(service_token(f"tenant-{index}"))
                )
            ).status_code
            for index in range(3)
        ]

    assert statuses == [200, 200, 429]


async def test_jwks_url_keys_verify(app_client: Any) -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(ECAlgorithm.to_jwk(private_key.public_key()))
    public.update({"kid": "remote-1", "use": "sig", "alg": "ES256"})
    body = json.dumps(_jwks(public)).encode()

    class JwksHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Keep test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
        client = await app_client(AuthSettings(jwks_url=url))
        token = jwt.encode(claims(), private_key, algorithm="ES256", headers={"kid": "remote-1"})
        unknown = jwt.encode(claims(), private_key, algorithm="ES256", headers={"kid": "remote-9"})

        good = await client.get("/v1/users/alice/sessions", headers=bearer(token))
        bad = await client.get("/v1/users/alice/sessions", headers=bearer(unknown))
    finally:
        server.shutdown()
        server.server_close()

    assert good.status_code == 200
    assert bad.status_code == 401
