"""Typed settings, read from the environment and grouped by concern.

Every field names its environment variable (the group prefix plus the field
name in upper case), its default and, where it has one, its unit in the name.
``docs/configuration.md`` lists them all; a test fails when one is missing there.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.errors import ConfigurationError
from app.schemas import SCOPE_ID_PATTERN

MAX_STREAM_PARTITIONS = 1024


class ServerSettings(BaseSettings):
    """HTTP server, logging and the local data folder."""

    model_config = SettingsConfigDict(env_prefix="ENGRAM_", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface the HTTP server binds to.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port of the HTTP server.")
    data_dir: Path = Field(
        Path(".engram"),
        description="Folder for the embedded Redis and Postgres data (embedded mode only).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level that is logged."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="`json`, `console`, or `auto` (console on a terminal, JSON otherwise)."
    )
    max_request_bytes: int = Field(
        1_048_576, ge=1024, description="Largest accepted request body, in bytes."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser, as a JSON list; "
        "empty turns CORS off.",
    )
    rate_limit_per_token_per_minute: int = Field(
        600, ge=0, description="Requests per minute for one bearer token; 0 turns the limit off."
    )
    rate_limit_per_address_per_minute: int = Field(
        1200, ge=0, description="Requests per minute from one client address; 0 turns it off."
    )
    default_tenant: str = Field(
        "default", description="Tenant of every request in AUTH_DEV_MODE; tokens name their own."
    )


class AuthSettings(BaseSettings):
    """Bearer-token authentication; see docs/security.md for the token format."""

    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore")

    dev_mode: bool = Field(
        False,
        description="Accept requests without tokens as an admin of the default tenant. "
        "Local development only; logged as a warning at start-up.",
    )
    hs256_secret: SecretStr | None = Field(None, description="Shared secret for HS256 tokens.")
    hs256_secret_file: Path | None = Field(
        None, description="File with the HS256 secret, read when AUTH_HS256_SECRET is unset."
    )
    hs256_key_id: str = Field(
        "default",
        description="Key id (kid) of the HS256 secret. A token without a kid is accepted "
        "only when one key is configured.",
    )
    jwks_file: Path | None = Field(
        None, description="JSON Web Key Set file with RS256, ES256 or HS256 keys, each with a kid."
    )
    jwks_url: str | None = Field(
        None, description="URL of an identity provider's JSON Web Key Set, cached for 300 s."
    )
    audience: str | None = Field(None, description="Required `aud` claim, when set.")
    issuer: str | None = Field(None, description="Required `iss` claim, when set.")
    leeway_s: int = Field(30, ge=0, le=600, description="Clock skew allowed for exp and iat, s.")


class RedisSettings(BaseSettings):
    """Short-term memory and the event stream."""

    model_config = SettingsConfigDict(env_prefix="REDIS_", extra="ignore")

    url: str | None = Field(
        None,
        description="Redis URL; when unset (and no REDIS_SENTINELS), an embedded Redis is "
        "started under the data dir.",
    )
    key_prefix: str = Field("engram", description="Prefix of every Redis key the service writes.")
    socket_timeout_s: float = Field(5.0, gt=0, description="Timeout of one Redis command, seconds.")
    sentinels: list[str] = Field(
        default_factory=list,
        description='Redis Sentinel addresses as a JSON list, such as ["10.0.0.5:26379", '
        '"10.0.0.6:26379"]; when set, the service connects to the primary they name for '
        "REDIS_SENTINEL_SERVICE and follows it through failovers, and REDIS_URL is not used.",
    )
    sentinel_service: str = Field(
        "engram", description="Name under which the Sentinels monitor the primary."
    )
    password: SecretStr | None = Field(
        None, description="Password of the primary and replicas found through Sentinel."
    )
    db: int = Field(0, ge=0, description="Database number on the primary found through Sentinel.")
    cluster: bool = Field(
        False,
        description="REDIS_URL names a node of a Redis Cluster (redis:// or rediss://, database "
        "0); the client discovers the others and follows slot moves. Keys use the partitioned "
        "layout, so also set REDIS_STREAM_PARTITIONS.",
    )
    stream_partitions: int = Field(
        1,
        ge=1,
        le=MAX_STREAM_PARTITIONS,
        description="Promotion streams that users are spread over. Above 1 (or with "
        "REDIS_CLUSTER), every key carries its partition's hash tag, so each partition lives "
        "on one cluster slot and workers read the partitions independently. Change it only "
        "with the streams drained (docs/scaling.md).",
    )

    @model_validator(mode="after")
    def _one_topology(self) -> RedisSettings:
        if not self.cluster:
            return self
        if self.sentinels:
            raise ValueError(
                "REDIS_CLUSTER and REDIS_SENTINELS exclude each other: a cluster fails over "
                "by itself; unset one of them"
            )
        example = "such as redis://10.0.0.5:6379/0"
        if self.url is None:
            raise ValueError(
                f"REDIS_CLUSTER needs REDIS_URL naming one node of the cluster, {example}; "
                "the embedded Redis is not a cluster"
            )
        parts = urlsplit(self.url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(
                f"REDIS_CLUSTER needs a redis:// or rediss:// REDIS_URL, {example}; "
                f"{parts.scheme}:// does not reach a cluster"
            )
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError(
                f"REDIS_CLUSTER needs database 0 in REDIS_URL, {example}: "
                "a cluster has no other databases"
            )
        return self

    @field_validator("sentinels")
    @classmethod
    def _sentinels_are_addresses(cls, sentinels: list[str]) -> list[str]:
        for address in sentinels:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(
                    f"REDIS_SENTINELS entry {address!r} is not host:port, such as 10.0.0.5:26379"
                )
        return sentinels

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The Sentinels as (host, port) pairs."""
        pairs = [address.rpartition(":") for address in self.sentinels]
        return [(host, int(port)) for host, _, port in pairs]


class DatabaseSettings(BaseSettings):
    """Long-term memory in Postgres with pgvector."""

    model_config = SettingsConfigDict(env_prefix="DATABASE_", extra="ignore")

    url: str | None = Field(
        None,
        description="Postgres URL; when unset, an embedded Postgres is started under the data dir.",
    )
    pool_size: int = Field(10, ge=1, description="Connections kept open per process.")
    read_url: str | None = Field(
        None,
        description="Postgres URL of a read replica for searches and context; unset sends "
        "them to DATABASE_URL. Memories reach the replica after its replication lag.",
    )
    auto_migrate: bool = Field(True, description="Apply pending migrations at start-up.")
    hnsw_m: int = Field(16, ge=2, le=100, description="HNSW index: links per node.")
    hnsw_ef_construction: int = Field(
        64, ge=4, le=1000, description="HNSW index: candidate list size while building."
    )
    hnsw_ef_search: int = Field(
        100, ge=1, le=1000, description="HNSW index: candidate list size while searching."
    )

    @property
    def sqlalchemy_url(self) -> str:
        """Return the URL with the psycopg 3 driver that SQLAlchemy needs."""
        if self.url is None:
            raise ValueError("DATABASE_URL is not set")
        return to_sqlalchemy_url(self.url)


class EmbeddingSettings(BaseSettings):
    """The embedding model that turns memories and queries into vectors."""

    model_config = SettingsConfigDict(env_prefix="EMBEDDINGS_", extra="ignore")

    backend: Literal["local", "openai"] = Field(
        "local", description="`local` (sentence-transformers) or `openai` (compatible HTTP API)."
    )
    model: str = Field(
        "all-MiniLM-L6-v2",
        description="Model name; for `local`, all-MiniLM-L6-v2 loads from its installed package.",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        le=2048,
        description="Texts per model call (local) or per API request (openai); unset means 16 "
        "for local, where short batches pad less, and 64 for openai.",
    )
    device: str = Field("cpu", description="Torch device of the local backend.")
    request_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="CPU threads of the local model when it embeds a search query or a "
        "remembered fact on a request's path; 0 means one per core. One keeps latency steady "
        "when other work shares the cores.",
    )
    batch_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="CPU threads of the local model when the worker embeds promotion and "
        "learning batches; 0 means one per core.",
    )
    openai_base_url: str | None = Field(None, description="Base URL of the OpenAI-compatible API.")
    openai_api_key: SecretStr | None = Field(None, description="API key of that server.")
    openai_dimensions: int | None = Field(
        None, ge=1, description="Vector size to request from the API (models that support it)."
    )
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one embedding API call, seconds.")


class MemorySettings(BaseSettings):
    """Limits and defaults of short-term memory, search and context."""

    model_config = SettingsConfigDict(env_prefix="MEMORY_", extra="ignore")

    session_ttl_s: int = Field(
        3600, ge=1, description="Sliding expiry of a session window in Redis, seconds."
    )
    window_max_turns: int = Field(
        1000, ge=1, description="Turns kept in one session window; older ones are trimmed."
    )
    max_batch_turns: int = Field(100, ge=1, description="Turns accepted in one request.")
    max_content_bytes: int = Field(
        32_768, ge=1, description="Largest turn content, in UTF-8 bytes."
    )
    max_metadata_bytes: int = Field(
        8_192, ge=2, description="Largest turn metadata object, in bytes of JSON."
    )
    page_default_items: int = Field(50, ge=1, description="Items per page when none are requested.")
    page_max_items: int = Field(500, ge=1, description="Most items one page may ask for.")
    max_metadata_depth: int = Field(
        5, ge=1, description="Deepest nesting of objects and lists in turn metadata."
    )
    search_default_limit: int = Field(10, ge=1, description="Search hits when none are requested.")
    search_max_limit: int = Field(
        100, ge=1, description="Most search hits one request may ask for."
    )
    context_default_tokens: int = Field(
        2000, ge=1, description="Token budget of a context request that names none."
    )
    context_max_tokens: int = Field(
        128_000, ge=1, description="Largest token budget a context request may ask for."
    )
    context_window_share: float = Field(
        0.5, ge=0, le=1, description="Share of the budget the recent window may claim first."
    )
    context_min_similarity: float = Field(
        0.2,
        ge=-1,
        le=1,
        description="Memories below this cosine similarity to the query stay out of context, "
        "unless they share a word with it.",
    )
    context_memory_limit: int = Field(
        20, ge=0, description="Long-term memories considered for one context."
    )
    retention_days: int = Field(
        0,
        ge=0,
        description="Maximum age of long-term memories, in days after storing; 0 keeps them.",
    )
    retention_days_by_tenant: dict[str, int] = Field(
        default_factory=dict,
        description='Maximum age per tenant, as a JSON object such as {"acme": 30}; overrides '
        "MEMORY_RETENTION_DAYS for those tenants (0 keeps theirs).",
    )

    @field_validator("retention_days_by_tenant")
    @classmethod
    def _retention_is_not_negative(cls, days_by_tenant: dict[str, int]) -> dict[str, int]:
        negative = sorted(tenant for tenant, days in days_by_tenant.items() if days < 0)
        if negative:
            raise ValueError(f"MEMORY_RETENTION_DAYS_BY_TENANT has negative days for {negative}")
        return days_by_tenant

    tokenizer: str = Field("cl100k_base", description="tiktoken encoding used to count tokens.")
    text_search_config: str = Field(
        "english",
        pattern=r"^[a-z_]+$",
        description="Postgres text search configuration for new memories, such as `english`, "
        "`dutch` or `simple`; every memory is also indexed with `simple`.",
    )
    search_default_mode: Literal["semantic", "keyword", "hybrid"] = Field(
        "hybrid", description="Ranking of searches that name no `mode`."
    )
    search_candidates: int = Field(
        100,
        ge=1,
        le=1000,
        description="Candidates each ranking (vector and text) contributes before fusion.",
    )
    search_rrf_k: int = Field(
        10, ge=1, description="Constant k of reciprocal rank fusion: 1 / (k + rank)."
    )
    search_exact_max_rows: int = Field(
        10_000,
        ge=0,
        description="Users with at most this many matching memories get an exact vector scan "
        "instead of the HNSW index.",
    )


class WorkerSettings(BaseSettings):
    """The promotion worker that moves turns from the stream into long-term memory."""

    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore")

    in_process: bool | None = Field(
        None,
        description="Run the worker inside the API process; unset means yes in embedded mode only.",
    )
    consumer_name: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="Name of this consumer in the stream's consumer group.",
    )
    batch_size: int = Field(64, ge=1, le=10_000, description="Events read and embedded together.")
    block_ms: int = Field(1000, ge=1, description="Maximum wait for new events per read, ms.")
    claim_idle_ms: int = Field(
        30_000, ge=100, description="Idle time after which another consumer's events are taken, ms."
    )
    max_attempts: int = Field(
        5, ge=1, description="Failed attempts before an event moves to the dead-letter stream."
    )
    retry_initial_s: float = Field(
        0.5, gt=0, description="First back-off after an outage, seconds."
    )
    purge_interval_s: float = Field(
        3600.0, gt=0, description="Time between retention purges, seconds."
    )
    retry_max_s: float = Field(30.0, gt=0, description="Maximum back-off after an outage, seconds.")
    metrics_port: int = Field(
        9101,
        ge=0,
        le=65535,
        description="Port where `engram worker` serves its Prometheus metrics (promoted turns, "
        "embedding batch time, learning runs) at /metrics; 0 turns it off. The in-process "
        "worker's metrics are on the API's /metrics.",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address the worker's metrics server binds to; 0.0.0.0 in a container.",
    )
    partitions: str | None = Field(
        None,
        description="Stream partitions this worker consumes, as numbers and ranges such as "
        "0-3,8; unset means all of them. Use it to pin workers to partitions.",
    )

    @field_validator("partitions")
    @classmethod
    def _partitions_are_ranges(cls, value: str | None) -> str | None:
        if value is not None:
            parse_partitions(value)
        return value

    def owned_partitions(self, total: int) -> list[int]:
        """Return the partitions this worker consumes, checked against the ``total`` there are."""
        if self.partitions is None:
            return list(range(total))
        owned = parse_partitions(self.partitions)
        outside = [number for number in owned if number >= total]
        if outside:
            raise ConfigurationError(
                f"WORKER_PARTITIONS names partition {outside[0]}, but REDIS_STREAM_PARTITIONS "
                f"is {total}, so partitions run from 0 to {total - 1}"
            )
        return owned


class LLMSettings(BaseSettings):
    """The language model behind chat, on any OpenAI-compatible API."""

    model_config = SettingsConfigDict(env_prefix="LLM_", extra="ignore")

    model: str | None = Field(
        None,
        description="Chat model name; unset means offline: chat replies show the context "
        "that would have been sent instead of calling a model.",
    )
    base_url: str | None = Field(
        None,
        description="Base URL of the API: OpenAI when unset; for example "
        "http://127.0.0.1:11434/v1 for Ollama or https://NAME.openai.azure.com/openai/v1/ "
        "for Azure OpenAI.",
    )
    api_key: SecretStr | None = Field(
        None, description="API key of that server; local servers that need none may omit it."
    )
    allowed_models: list[str] = Field(
        default_factory=list,
        description="Further models that /v1/chat/completions may name, as a JSON list; "
        "LLM_MODEL is always allowed.",
    )
    timeout_s: float = Field(60.0, gt=0, description="Timeout of one model call, seconds.")
    max_retries: int = Field(
        2, ge=0, le=10, description="Retries of a call that timed out or got 429 or 5xx."
    )
    max_reply_tokens: int | None = Field(
        None, ge=1, description="Most tokens of a reply in /v1/chat; unset leaves it to the model."
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature in /v1/chat; unset uses the model's."
    )


class ChatSettings(BaseSettings):
    """The chat endpoints and how much memory they add to a model call."""

    model_config = SettingsConfigDict(env_prefix="CHAT_", extra="ignore")

    context_tokens: int = Field(
        3000,
        ge=256,
        description="Token budget of the messages /v1/chat sends: system prompt, memories "
        "and the recent window.",
    )
    memory_tokens: int = Field(
        1000,
        ge=0,
        description="Token budget of the memory message that /v1/chat/completions adds; "
        "0 adds none.",
    )
    default_session: str = Field(
        "chat",
        pattern=SCOPE_ID_PATTERN,
        description="Session of /v1/chat/completions requests that name none.",
    )


class ToolSettings(BaseSettings):
    """Memory tools for LLM agents, over HTTP and MCP."""

    model_config = SettingsConfigDict(env_prefix="TOOLS_", extra="ignore")

    result_max_tokens: int = Field(
        1000, ge=50, description="Most tokens of a tool result's text, as a model reads it."
    )


Strategy = Literal["verbatim", "extract", "both"]


class LearningSettings(BaseSettings):
    """Fact extraction and session summaries, run by the worker off the request path."""

    model_config = SettingsConfigDict(env_prefix="LEARNING_", extra="ignore")

    strategy: Strategy = Field(
        "both",
        description="What long-term memory holds: `verbatim` (the turns, and no model calls), "
        "`extract` (facts "
        "distilled from the turns; searches skip turns whose facts were extracted) or `both`. "
        "Without a model (LEARNING_MODEL or LLM_MODEL) it is always `verbatim`.",
    )
    strategy_by_tenant: dict[str, Strategy] = Field(
        default_factory=dict,
        description='Strategy per tenant, as a JSON object such as {"acme": "verbatim"}; '
        "overrides LEARNING_STRATEGY for those tenants.",
    )
    model: str | None = Field(
        None,
        description="Model for extraction and summaries, on the LLM_* server; "
        "unset uses LLM_MODEL.",
    )
    debounce_s: float = Field(
        30.0,
        ge=0,
        description="Quiet time after a session's last promoted turn before its facts are "
        "extracted, seconds.",
    )
    batch_turns: int = Field(
        20,
        ge=1,
        le=200,
        description="Turns waiting in one session that start extraction without waiting for "
        "the quiet time; also the most turns one extraction call reads.",
    )
    similar_facts: int = Field(
        5,
        ge=1,
        le=20,
        description="Existing facts shown to the model when it decides on a new one.",
    )
    related_similarity: float = Field(
        0.35,
        ge=-1,
        le=1,
        description="Existing facts at least this similar to a new one (cosine) go to the model "
        "for an add, update or ignore decision; with none, the fact is added.",
    )
    duplicate_similarity: float = Field(
        0.95,
        ge=-1,
        le=1,
        description="A new fact at least this similar to a current one (cosine), and with the "
        "same numbers, is a duplicate and is not stored.",
    )
    summaries: bool = Field(True, description="Fold long sessions into rolling summaries.")
    summary_trigger_tokens: int = Field(
        2000,
        ge=100,
        description="A session whose turns since its last summary exceed this many tokens gets "
        "a new summary.",
    )
    summary_keep_tokens: int = Field(
        500,
        ge=0,
        description="Tokens of the newest turns left out of a summary, so context shows them as "
        "they were said.",
    )
    lease_s: float = Field(
        300.0,
        gt=0,
        description="Time a worker may hold a session it is learning from; after that another "
        "worker takes it over, seconds.",
    )
    poll_interval_s: float = Field(
        1.0, gt=0, description="Time between checks for sessions that are due, seconds."
    )
    max_reply_tokens: int = Field(
        1000, ge=50, description="Most tokens of one extraction, decision or summary reply."
    )

    def strategy_for(self, tenant_id: str) -> Strategy:
        """Return the configured strategy of a tenant (before the no-model rule)."""
        return self.strategy_by_tenant.get(tenant_id, self.strategy)


# Observability: optional tracing and error reporting. Each is off until its
# endpoint is configured, and each needs its package extra (`otel`, `sentry`).


class TracingSettings(BaseSettings):
    """OpenTelemetry tracing of HTTP requests, exported over OTLP/HTTP."""

    # Compose files pass unset variables on as empty strings, which mean "off" here.
    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore", env_ignore_empty=True)

    exporter_otlp_endpoint: str | None = Field(
        None,
        description="Base URL of an OTLP/HTTP collector, such as http://otel-collector:4318; "
        "spans go to its /v1/traces. Setting it turns tracing on (needs the `otel` extra).",
    )
    service_name: str = Field("engram", description="`service.name` of every span.")

    @property
    def enabled(self) -> bool:
        """Whether requests are traced."""
        return self.exporter_otlp_endpoint is not None


class SentrySettings(BaseSettings):
    """Error reporting to Sentry."""

    model_config = SettingsConfigDict(env_prefix="SENTRY_", extra="ignore", env_ignore_empty=True)

    dsn: SecretStr | None = Field(
        None,
        description="Sentry DSN; setting it turns error reporting on (needs the `sentry` extra).",
    )
    environment: str | None = Field(
        None, description="Environment name sent with every error, such as `production`."
    )


class Settings(BaseModel):
    """All settings of one process."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    tools: ToolSettings = Field(default_factory=ToolSettings)
    learning: LearningSettings = Field(default_factory=LearningSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    sentry: SentrySettings = Field(default_factory=SentrySettings)

    @field_validator("memory")
    @classmethod
    def _limits_are_consistent(cls, memory: MemorySettings) -> MemorySettings:
        if memory.search_default_limit > memory.search_max_limit:
            raise ValueError("MEMORY_SEARCH_DEFAULT_LIMIT must not exceed MEMORY_SEARCH_MAX_LIMIT")
        if memory.context_default_tokens > memory.context_max_tokens:
            raise ValueError(
                "MEMORY_CONTEXT_DEFAULT_TOKENS must not exceed MEMORY_CONTEXT_MAX_TOKENS"
            )
        return memory

    @property
    def embedded(self) -> bool:
        """Whether this process starts its own Redis and Postgres."""
        return (self.redis.url is None and not self.redis.sentinels) or self.database.url is None

    @property
    def learning_model(self) -> str | None:
        """The model that extracts facts and writes summaries; None means verbatim only."""
        return self.learning.model or self.llm.model

    def strategy_for(self, tenant_id: str) -> Strategy:
        """Return the strategy in effect for a tenant: `verbatim` whenever no model is set."""
        if self.learning_model is None:
            return "verbatim"
        return self.learning.strategy_for(tenant_id)

    @property
    def worker_in_process(self) -> bool:
        """Whether the API process also runs the promotion worker."""
        if self.worker.in_process is None:
            return self.embedded
        return self.worker.in_process


def to_sqlalchemy_url(url: str) -> str:
    """Rewrite a libpq-style Postgres URL to name SQLAlchemy's psycopg 3 driver."""
    for scheme in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    raise ValueError(f"DATABASE_URL must start with postgresql://, got {url.split(':', 1)[0]}://")


def load_settings() -> Settings:
    """Read every settings group from the environment.

    Raises ConfigurationError naming each invalid variable. The message leaves
    out the values, because some of them (URLs, keys) may contain secrets.
    """
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigurationError(describe_invalid_settings(error)) from None


def describe_invalid_settings(error: ValidationError) -> str:
    """List each invalid variable and why, as one line per variable."""
    prefixes = {}
    for field in Settings.model_fields.values():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseSettings):
            prefixes[group.__name__] = group.model_config.get("env_prefix", "")
    prefix = prefixes.get(error.title, "")
    lines = []
    for problem in error.errors(include_url=False, include_input=False, include_context=False):
        location = problem["loc"]
        name = f"{prefix}{str(location[0]).upper()}" if location else error.title
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}" if location else message)
    return "invalid settings: " + "; ".join(lines)


def parse_partitions(text: str) -> list[int]:
    """Parse a list of partition numbers and ranges, such as ``0-3,8``, into sorted numbers."""
    numbers: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(
                f"WORKER_PARTITIONS part {part.strip()!r} is not a number or a range such as 0-3"
            )
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"WORKER_PARTITIONS range {part.strip()!r} runs backwards")
        if high >= MAX_STREAM_PARTITIONS:
            raise ValueError(
                f"WORKER_PARTITIONS names {high}, but there are at most "
                f"{MAX_STREAM_PARTITIONS} partitions"
            )
        numbers.update(range(low, high + 1))
    return sorted(numbers)
