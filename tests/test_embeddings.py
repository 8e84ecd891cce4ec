"""Embedding backends: the local model and an OpenAI-compatible server."""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import pytest
import torch
from pydantic import SecretStr

from app.settings import EmbeddingSettings
from embeddings import EmbeddingError, create_embedder
from embeddings.base import normalize
from embeddings.local import LocalEmbedder, resolve_model_path
from tests.openai_server import OpenAICompatibleServer, fake_vector

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture
def openai_server() -> Iterator[OpenAICompatibleServer]:
    server = OpenAICompatibleServer(dimension=8)
    server.start()
    yield server
    server.stop()


def test_local_vectors_are_unit_length(embedder: LocalEmbedder) -> None:
    vectors = embedder.embed(["Hallo wereld", "שלום עולם", "🎉"])

    assert len(vectors) == 3
    assert all(len(vector) == 384 for vector in vectors)
    assert all(math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-4) for vector in vectors)


def test_local_similarity_follows_meaning(embedder: LocalEmbedder) -> None:
    cat, kitten, invoice = embedder.embed(["a cat sleeps", "a kitten naps", "the invoice is due"])

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(cat, kitten) > cosine(cat, invoice)


def test_local_batches_larger_than_batch_size(embedder: LocalEmbedder) -> None:
    texts = [f"sentence {i}" for i in range(150)]

    vectors = embedder.embed(texts)

    assert len(vectors) == 150
    assert vectors[7] == pytest.approx(embedder.embed(["sentence 7"])[0], abs=1e-5)


def test_local_order_survives_length_sorting(embedder: LocalEmbedder) -> None:
    texts = ["kort", "een veel langere zin over de trein naar Utrecht 🚆 " * 5, "مرحبا", "x y"]

    together = embedder.embed(texts)

    for text, vector in zip(texts, together, strict=True):
        assert vector == pytest.approx(embedder.embed([text])[0], abs=1e-5)


def test_batch_size_defaults_per_backend(openai_server: OpenAICompatibleServer) -> None:
    local = create_embedder(EmbeddingSettings())
    remote = create_embedder(
        EmbeddingSettings(
            backend="openai",
            model="text-embedding-3-small",
            openai_base_url=openai_server.base_url,
            openai_api_key=SecretStr("test-key"),
        )
    )

    assert (local.batch_size, remote.batch_size) == (16, 64)


def test_local_thread_counts_per_call() -> None:
    embedder = create_embedder(EmbeddingSettings(request_threads=1, batch_threads=2))
    seen: dict[str, int] = {}

    def run(name: str, call: Callable[[list[str]], list[list[float]]]) -> None:
        # PyTorch's thread count is per OS thread, so each call runs in a fresh one.
        def target() -> None:
            call(["Waar blijft de trein? 🚆"])
            seen[name] = torch.get_num_threads()

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()

    run("request", embedder.embed_for_request)
    run("batch", embedder.embed)

    assert seen == {"request": 1, "batch": 2}
    assert embedder.embed_for_request(["x"]) == embedder.embed(["x"])


def test_unknown_local_model_is_explained() -> None:
    with pytest.raises(EmbeddingError, match="EMBEDDINGS_MODEL"):
        resolve_model_path("no-such-model")


def test_openai_backend_embeds_in_order(openai_server: OpenAICompatibleServer) -> None:
    settings = EmbeddingSettings(
        backend="openai",
        model="text-embedding-3-small",
        batch_size=2,
        openai_base_url=openai_server.base_url,
        openai_api_key=SecretStr("test-key"),
    )
    embedder = create_embedder(settings)

    vectors = embedder.embed(["one", "two", "three"])

    assert embedder.dimension == 8
    assert embedder.model_name == "text-embedding-3-small"
    assert vectors == [normalize(fake_vector(text, 8)) for text in ["one", "two", "three"]]
    # One probe request at start-up, then two batches of at most two texts.
    assert [len(request["input"]) for request in openai_server.requests] == [1, 2, 1]


def test_openai_backend_passes_dimensions(openai_server: OpenAICompatibleServer) -> None:
    settings = EmbeddingSettings(
        backend="openai",
        model="m",
        openai_base_url=openai_server.base_url,
        openai_dimensions=5,
    )

    embedder = create_embedder(settings)

    assert embedder.dimension == 5
    assert openai_server.requests[0]["dimensions"] == 5


def test_openai_backend_error_names_model(openai_server: OpenAICompatibleServer) -> None:
    settings = EmbeddingSettings(
        backend="openai", model="m", openai_base_url=openai_server.base_url, timeout_s=5
    )
    embedder = create_embedder(settings)
    openai_server.fail_with = 400

    with pytest.raises(EmbeddingError, match="model 'm' failed"):
        embedder.embed(["text"])


def test_normalize_keeps_zero_vector() -> None:
    assert normalize([0.0, 0.0]) == [0.0, 0.0]
    assert normalize([3.0, 4.0]) == [0.6, 0.8]
