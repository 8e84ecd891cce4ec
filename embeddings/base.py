"""The interface every embedding backend implements."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence


class EmbeddingError(Exception):
    """Raised when a backend cannot embed a batch; the message names the backend and the cause."""


class Embedder(ABC):
    """Turns texts into unit-length vectors of a fixed dimension."""

    def __init__(self, model_name: str, dimension: int, batch_size: int) -> None:
        self.model_name = model_name
        self.dimension = dimension
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed texts in batches of ``batch_size``; blocking, so call it from a worker thread."""
        vectors = [normalize(vector) for vector in self._embed_all(texts)]
        if len(vectors) != len(texts):
            raise EmbeddingError(
                f"{self.model_name} returned {len(vectors)} vectors for {len(texts)} texts"
            )
        return vectors

    def embed_for_request(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed a few texts on a request's path; backends may use fewer threads here."""
        return self.embed(texts)

    def _embed_all(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed texts in order, ``batch_size`` texts per ``_embed_batch`` call."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(self._embed_batch(list(texts[start : start + self.batch_size])))
        return vectors

    @abstractmethod
    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        """Embed at most ``batch_size`` texts in one model call."""


def normalize(vector: Sequence[float]) -> list[float]:
    """Scale a vector to unit length; a zero vector stays zero."""
    norm = math.sqrt(sum(value * value for value in vector))
    if norm == 0:
        return [float(value) for value in vector]
    return [float(value) / norm for value in vector]
