"""Build the embedder that the settings select."""

from __future__ import annotations

from typing import TYPE_CHECKING

from embeddings.base import Embedder

if TYPE_CHECKING:
    from app.settings import EmbeddingSettings


# Requests to an embedding API are slow to make, so each carries many texts. A local
# model on a CPU is fastest with short batches: all-MiniLM-L6-v2 embedded LoCoMo
# turns 33 % faster in batches of 16 than of 64 on a 2-core machine (bench.promotion).
OPENAI_BATCH_SIZE = 64
LOCAL_BATCH_SIZE = 16


def create_embedder(settings: EmbeddingSettings) -> Embedder:
    """Load the configured backend; the local model takes a few seconds."""
    if settings.backend == "openai":
        from embeddings.openai_backend import OpenAIEmbedder  # noqa: PLC0415

        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIEmbedder(
            settings.model,
            settings.batch_size or OPENAI_BATCH_SIZE,
            base_url=settings.openai_base_url,
            api_key=key,
            dimensions=settings.openai_dimensions,
            timeout_s=settings.timeout_s,
        )

    from embeddings.local import LocalEmbedder  # noqa: PLC0415

    return LocalEmbedder(
        settings.model,
        settings.batch_size or LOCAL_BATCH_SIZE,
        settings.device,
        request_threads=settings.request_threads,
        batch_threads=settings.batch_threads,
    )
