"""Backend for any OpenAI-compatible embeddings API (OpenAI, Azure OpenAI, Ollama, vLLM)."""

from __future__ import annotations

import openai

from embeddings.base import Embedder, EmbeddingError


class OpenAIEmbedder(Embedder):
    """Calls ``POST /embeddings`` of an OpenAI-compatible server with the official client."""

    def __init__(
        self,
        model: str,
        batch_size: int,
        *,
        base_url: str | None,
        api_key: str | None,
        dimensions: int | None,
        timeout_s: float,
    ) -> None:
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=2
        )
        self._dimensions = dimensions
        self._model = model
        # The dimension is whatever the server returns for a probe text.
        probe = self._request(["dimension probe"])
        super().__init__(model_name=model, dimension=len(probe[0]), batch_size=batch_size)

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        return self._request(texts)

    def _request(self, texts: list[str]) -> list[list[float]]:
        try:
            if self._dimensions is None:
                response = self._client.embeddings.create(model=self._model, input=texts)
            else:
                response = self._client.embeddings.create(
                    model=self._model, input=texts, dimensions=self._dimensions
                )
        except openai.OpenAIError as error:
            raise EmbeddingError(
                f"embedding request to model {self._model!r} failed: {type(error).__name__}: "
                f"{error}"
            ) from error
        ordered = sorted(response.data, key=lambda item: item.index)
        return [list(item.embedding) for item in ordered]
