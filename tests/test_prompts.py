"""Prompt templates load with exactly the placeholders their code fills in."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import pytest

from app.facts import PendingTurn, SimilarFact
from app.learning import (
    MAX_TURN_TOKENS,
    SUMMARY_MAX_WORDS,
    ExtractedFact,
    decision_messages,
    extraction_messages,
    summary_messages,
)
from prompts import PROMPTS, PromptError, PromptSpec, load_prompt, load_prompts
from retrieval.tokens import TiktokenCounter

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


EDGE_TEXTS = [
    "Ik woon sinds mei in Rotterdam 🚲 en mijn zus heet Anouk.",
    "أنا أعيش في الرباط منذ سنتين",
    'She said "${today}" and {"facts": []} and $turns \\n — literally.',
    "word " * 5000,
]


def _pending(index: int, content: str) -> PendingTurn:
    occurred = datetime(2026, 3, 1, 12, index, tzinfo=UTC)
    return PendingTurn(uuid.uuid4(), f"turn-{index}", "user", content, occurred)


def _payload(message: str) -> Any:
    """The JSON that follows the first line of a rendered input message."""
    return json.loads(message.split("\n", 1)[1])


def test_extraction_prompt_keeps_edge_case_text_intact() -> None:
    prompts = load_prompts()
    counter = TiktokenCounter("cl100k_base")
    turns = {f"t{index}": _pending(index, text) for index, text in enumerate(EDGE_TEXTS, 1)}

    system, user = extraction_messages(prompts, counter, turns, date(2026, 3, 2))

    assert "Today is 2026-03-02." in system["content"]
    assert "$" not in system["content"]
    sent = _payload(user["content"])["turns"]
    assert [turn["id"] for turn in sent] == ["t1", "t2", "t3", "t4"]
    # Non-English text, quotes, braces and dollar signs arrive as written.
    assert [turn["text"] for turn in sent[:3]] == EDGE_TEXTS[:3]
    assert sent[0]["time"] == "2026-03-01T12:01+00:00"
    # A very long turn is cut to its first MAX_TURN_TOKENS tokens.
    assert counter.count(sent[3]["text"]) == MAX_TURN_TOKENS
    assert EDGE_TEXTS[3].startswith(sent[3]["text"])


def test_summary_and_decision_prompts_keep_edge_case_text_intact() -> None:
    prompts = load_prompts()
    counter = TiktokenCounter("cl100k_base")
    previous = 'Earlier: the user, who says "hi {there}", lives in عمّان.'

    system, user = summary_messages(
        prompts, counter, previous, [_pending(1, EDGE_TEXTS[2]), _pending(2, EDGE_TEXTS[3])]
    )

    assert f"at most {SUMMARY_MAX_WORDS} words" in system["content"]
    conversation = _payload(user["content"])
    assert conversation["previous_summary"] == previous
    assert conversation["turns"][0]["text"] == EDGE_TEXTS[2]
    assert counter.count(conversation["turns"][1]["text"]) == MAX_TURN_TOKENS

    fact = ExtractedFact(
        "fact", 'Zegt "{altijd}" $ja 🙂.', ["turn-1"], datetime(2026, 3, 1, tzinfo=UTC)
    )
    candidate = SimilarFact(uuid.uuid4(), "fact", "يحب القهوة {x}", 0.6, None)
    _, question = decision_messages(prompts, fact, {"m1": candidate})
    sent = _payload(question["content"])
    assert sent["new_fact"] == {"kind": "fact", "text": fact.content, "valid_from": "2026-03-01"}
    assert sent["existing"] == [
        {"id": "m1", "kind": "fact", "text": "يحب القهوة {x}", "valid_from": None}
    ]
