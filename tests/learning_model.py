"""A scripted model for the learning tests, served by ``OpenAICompatibleServer``.

It reads the prompts the learner sends and answers them the way a careful
model would, from a few fixed rules, so tests can check the whole flow:

- extraction: "I live in X" or "I moved to X" gives the fact "Lives in X.",
  "I am allergic to X" gives "Is allergic to X.", "I love X" gives the
  preference "Loves X.";
- decision: a new "Lives in X." updates an existing "Lives in Y.", repeats
  of an existing fact are "none", anything else is "add";
- summary: "Summary: " and the user turns' texts, shortened.

``bad_replies`` makes the next that many replies malformed, each of the form
``bad_kind`` names.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.openai_server import Reply

_RULES = (
    (re.compile(r"\bI (?:now )?live in (\w+)", re.IGNORECASE), "fact", "Lives in {}."),
    (re.compile(r"\bI moved to (\w+)", re.IGNORECASE), "fact", "Lives in {}."),
    (re.compile(r"\bI am allergic to (\w+)", re.IGNORECASE), "fact", "Is allergic to {}."),
    (re.compile(r"\bI love (\w+)", re.IGNORECASE), "preference", "Loves {}."),
)
_LIVES = re.compile(r"^Lives in (\w+)\.$")


def _payload(body: dict[str, Any]) -> dict[str, Any]:
    """The JSON the learner put after the first line of its user message."""
    text = body["messages"][1]["content"]
    parsed: dict[str, Any] = json.loads(text.split("\n", 1)[1])
    return parsed


def kind_of(body: dict[str, Any]) -> str:
    """Which prompt a request carries: extract, decide or summarize."""
    system = body["messages"][0]["content"]
    if system.startswith("You extract"):
        return "extract"
    if system.startswith("You maintain"):
        return "decide"
    if system.startswith("You keep a running summary"):
        return "summarize"
    return "other"


@dataclass
class ScriptedModel:
    bad_replies: int = 0
    bad_kind: str = "not-json"
    calls: list[str] = field(default_factory=list)
    valid_from: dict[str, str] = field(default_factory=dict)
    """Fact text to the valid_from date the model reports for it."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, body: dict[str, Any]) -> Reply:
        kind = kind_of(body)
        with self._lock:
            self.calls.append(kind)
            bad = self.bad_replies > 0
            if bad:
                self.bad_replies -= 1
        if bad:
            return Reply(text=self._malformed())
        if kind == "extract":
            return Reply(text=json.dumps(self._extract(_payload(body))))
        if kind == "decide":
            return Reply(text=json.dumps(self._decide(_payload(body))))
        if kind == "summarize":
            return Reply(text=self._summarize(_payload(body)))
        return Reply(text="ok")

    def _malformed(self) -> str:
        return {
            "not-json": "Sure! Here are the facts: lives in Rotterdam",
            "unknown-id": json.dumps(
                {"facts": [{"kind": "fact", "content": "Lives somewhere.", "sources": ["t99"]}]}
            ),
            "empty-fact": json.dumps({"facts": [{"kind": "fact", "content": " ", "sources": []}]}),
            "bad-decision": json.dumps({"decision": "merge"}),
        }[self.bad_kind]

    def _extract(self, payload: dict[str, Any]) -> dict[str, Any]:
        facts = []
        for turn in payload["turns"]:
            if turn["role"] != "user":
                continue
            for pattern, kind, template in _RULES:
                for match in pattern.finditer(turn["text"]):
                    content = template.format(match.group(1))
                    fact: dict[str, Any] = {
                        "kind": kind,
                        "content": content,
                        "sources": [turn["id"]],
                    }
                    if content in self.valid_from:
                        fact["valid_from"] = self.valid_from[content]
                    facts.append(fact)
        return {"facts": facts}

    def _decide(self, payload: dict[str, Any]) -> dict[str, Any]:
        new = payload["new_fact"]["text"]
        for existing in payload["existing"]:
            if existing["text"].casefold() == new.casefold():
                return {"decision": "none", "target": None}
        moved = _LIVES.match(new)
        for existing in payload["existing"]:
            if moved and _LIVES.match(existing["text"]):
                return {"decision": "update", "target": existing["id"]}
        return {"decision": "add", "target": None}

    def _summarize(self, payload: dict[str, Any]) -> str:
        said = [turn["text"][:40] for turn in payload["turns"] if turn["role"] == "user"]
        previous = payload.get("previous_summary")
        start = f"{previous} Then: " if previous else "Summary: "
        return start + "; ".join(said)
