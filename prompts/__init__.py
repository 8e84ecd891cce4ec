"""Versioned prompt templates.

Each template is a file ``templates/<name>.v<version>.txt`` using
``string.Template`` placeholders (``$name``). ``load_prompts`` reads the
version each prompt is pinned to and fails when a template lacks a
placeholder its code fills in, so a broken edit stops start-up instead of
reaching a model.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


class PromptError(Exception):
    """Raised when a template file is missing or its placeholders do not match its code."""


@dataclass(frozen=True, slots=True)
class PromptSpec:
    name: str
    version: int
    placeholders: frozenset[str]


# The template version each prompt uses, and the placeholders its code fills in.
PROMPTS = (
    PromptSpec("context_memories", 2, frozenset({"memories"})),
    PromptSpec("context_memory_line", 1, frozenset({"date", "role", "content"})),
    PromptSpec("chat_system", 1, frozenset({"now"})),
    PromptSpec("offline_reply", 1, frozenset({"count", "tokens", "messages"})),
    PromptSpec("offline_message", 1, frozenset({"role", "content"})),
    PromptSpec("context_summary", 1, frozenset({"start", "end", "summary"})),
    PromptSpec("extract_facts", 1, frozenset({"today"})),
    PromptSpec("extract_facts_input", 1, frozenset({"turns"})),
    PromptSpec("decide_fact", 1, frozenset()),
    PromptSpec("decide_fact_input", 1, frozenset({"facts"})),
    PromptSpec("summarize_session", 1, frozenset({"max_words"})),
    PromptSpec("summarize_session_input", 1, frozenset({"conversation"})),
)


@dataclass(frozen=True, slots=True)
class Prompt:
    spec: PromptSpec
    template: string.Template

    def render(self, **values: str) -> str:
        missing = self.spec.placeholders - values.keys()
        if missing:
            raise PromptError(f"prompt {self.spec.name} needs values for {sorted(missing)}")
        return self.template.substitute(values)


def _placeholders(template: string.Template) -> set[str]:
    names: set[str] = set()
    for match in template.pattern.finditer(template.template):
        name = match.group("named") or match.group("braced")
        if name:
            names.add(name)
    return names


def load_prompt(spec: PromptSpec, directory: Path = TEMPLATES_DIR) -> Prompt:
    path = directory / f"{spec.name}.v{spec.version}.txt"
    if not path.is_file():
        raise PromptError(f"prompt template {path.name} is missing from {directory}")
    template = string.Template(path.read_text(encoding="utf-8").rstrip("\n"))
    found = _placeholders(template)
    if found != spec.placeholders:
        raise PromptError(
            f"prompt template {path.name} has placeholders {sorted(found)}, "
            f"but its code fills in {sorted(spec.placeholders)}"
        )
    return Prompt(spec, template)


def load_prompts(directory: Path = TEMPLATES_DIR) -> dict[str, Prompt]:
    """Load and check every prompt the service uses."""
    return {spec.name: load_prompt(spec, directory) for spec in PROMPTS}
