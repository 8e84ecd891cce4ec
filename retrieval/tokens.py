"""Token counting with tiktoken, from encodings installed on disk."""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import tiktoken

# Per-message framing tokens of OpenAI chat models (role and separators).
MESSAGE_OVERHEAD_TOKENS = 4
# Tokens that prime the assistant's reply, counted once per request.
REPLY_PRIMER_TOKENS = 3


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...


class TiktokenCounter:
    """Counts tokens with a tiktoken encoding."""

    def __init__(self, encoding_name: str) -> None:
        self._encoding = load_encoding(encoding_name)

    def count(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))

    def truncate(self, text: str, max_tokens: int) -> str:
        """Return the longest start of ``text`` that is at most ``max_tokens`` tokens."""
        tokens = self._encoding.encode(text, disallowed_special=())
        return self._encoding.decode(tokens[:max_tokens])

    def message_tokens(self, content: str) -> int:
        return self.count(content) + MESSAGE_OVERHEAD_TOKENS


@lru_cache(maxsize=4)
def load_encoding(name: str) -> tiktoken.Encoding:
    """Load an encoding, preferring a copy that a package installed (``<name>_offline``).

    tiktoken downloads its standard encodings on first use. The offline
    copies carry the same ranks and are checked against the same hash, so
    no network is needed.
    """
    available = set(tiktoken.list_encoding_names())
    for candidate in (f"{name}_offline", name):
        if candidate in available:
            return tiktoken.get_encoding(candidate)
    raise ValueError(
        f"tiktoken encoding {name!r} is not installed; set MEMORY_TOKENIZER to one of "
        f"{', '.join(sorted(available))}"
    )
