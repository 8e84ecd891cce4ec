"""Prompt templates load with exactly the placeholders their code fills in."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from prompts import PROMPTS, PromptError, PromptSpec, load_prompt, load_prompts

if TYPE_CHECKING:
    from pathlib import Path


def test_shipped_prompts_load() -> None:
    loaded = load_prompts()

    assert set(loaded) == {spec.name for spec in PROMPTS}
    line = loaded["context_memory_line"].render(date="2024-01-01", role="user", content="hi $x")
    assert line == "- [2024-01-01] user: hi $x"


def test_missing_placeholder_fails(tmp_path: Path) -> None:
    (tmp_path / "greeting.v1.txt").write_text("Hello there", encoding="utf-8")
    spec = PromptSpec("greeting", 1, frozenset({"name"}))

    with pytest.raises(
        PromptError, match=r"has placeholders \[\], but its code fills in \['name'\]"
    ):
        load_prompt(spec, tmp_path)


def test_unknown_placeholder_fails(tmp_path: Path) -> None:
    (tmp_path / "greeting.v1.txt").write_text("Hello $name from $place", encoding="utf-8")
    spec = PromptSpec("greeting", 1, frozenset({"name"}))

    with pytest.raises(PromptError, match="place"):
        load_prompt(spec, tmp_path)


def test_missing_file_fails(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match=r"greeting\.v2\.txt is missing"):
        load_prompt(PromptSpec("greeting", 2, frozenset()), tmp_path)


def test_render_without_value_fails() -> None:
    prompt = load_prompts()["context_memories"]

    with pytest.raises(PromptError, match="memories"):
        prompt.render()
