"""Embedding backends behind one interface.

``create_embedder`` picks the backend the settings name. Every backend
returns unit-length vectors, so cosine similarity is a dot product, and
reports the model name and dimension that are stored with each vector.
"""

from embeddings.base import Embedder, EmbeddingError
from embeddings.factory import create_embedder

__all__ = ["Embedder", "EmbeddingError", "create_embedder"]
