"""Settings come from the environment, are documented, and reject nonsense."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import MemorySettings, Settings, to_sqlalchemy_url

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def env_names() -> list[str]:
    names: list[str] = []
    for field in Settings.model_fields.values():
        group = field.annotation
        assert isinstance(group, type)
        prefix = group.model_config.get("env_prefix", "")
        names.extend(f"{prefix}{name.upper()}" for name in group.model_fields)
    return names


@pytest.mark.parametrize("name", env_names())
def test_every_setting_is_documented(name: str) -> None:
    assert f"`{name}`" in DOCS.read_text(encoding="utf-8")


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_SESSION_TTL_S", "120")
    monkeypatch.setenv("ENGRAM_PORT", "9001")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("WORKER_IN_PROCESS", "true")
    monkeypatch.delenv("DATABASE_URL", raising=False)

    settings = Settings()

    assert settings.memory.session_ttl_s == 120
    assert settings.server.port == 9001
    assert settings.redis.url == "redis://127.0.0.1:6379/3"
    assert settings.embedded  # DATABASE_URL is still unset
    assert settings.worker_in_process


def test_worker_runs_in_process_only_when_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("DATABASE_URL", "postgresql://127.0.0.1/engram")
    monkeypatch.delenv("WORKER_IN_PROCESS", raising=False)

    settings = Settings()

    assert not settings.embedded
    assert not settings.worker_in_process


def test_invalid_setting_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_SESSION_TTL_S", "-5")

    with pytest.raises(ValidationError, match="session_ttl_s"):
        Settings()


def test_inconsistent_limits_are_rejected() -> None:
    with pytest.raises(ValidationError, match="MEMORY_SEARCH_DEFAULT_LIMIT"):
        Settings(memory=MemorySettings(search_default_limit=50, search_max_limit=10))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        (
            "postgresql://postgres:@/postgres?host=/tmp/pg",
            "postgresql+psycopg://postgres:@/postgres?host=/tmp/pg",
        ),
    ],
)
def test_database_url_gets_driver(url: str, expected: str) -> None:
    assert to_sqlalchemy_url(url) == expected


def test_database_url_of_other_scheme_is_rejected() -> None:
    with pytest.raises(ValueError, match="DATABASE_URL must start with postgresql://"):
        to_sqlalchemy_url("mysql://u@h/db")
