"""A small multi-session conversation written for the tests, with questions about it.

Each question paraphrases the turn that answers it, so keyword overlap alone
does not find the answer.
"""

from __future__ import annotations

from typing import Any

SESSIONS: dict[str, list[tuple[str, str, str, str]]] = {
    # session id: (turn id, role, occurred_at, content)
    "s-2024-01": [
        ("s1-1", "user", "2024-01-10T18:02:00+00:00", "Hi! I just got back from the climbing gym."),
        ("s1-2", "assistant", "2024-01-10T18:02:05+00:00", "Nice, how was the session?"),
        (
            "s1-3",
            "user",
            "2024-01-10T18:03:00+00:00",
            "Great. I finally sent a 6b route after months of trying.",
        ),
        (
            "s1-4",
            "user",
            "2024-01-10T18:04:00+00:00",
            "Also, my doctor told me I am allergic to peanuts, so no more satay for me.",
        ),
        (
            "s1-5",
            "assistant",
            "2024-01-10T18:04:10+00:00",
            "Good to know, I will keep that in mind.",
        ),
    ],
    "s-2024-03": [
        (
            "s2-1",
            "user",
            "2024-03-02T09:15:00+00:00",
            "We adopted a rescue dog last weekend, a beagle called Pepper.",
        ),
        (
            "s2-2",
            "assistant",
            "2024-03-02T09:15:04+00:00",
            "Congratulations! How is Pepper settling in?",
        ),
        (
            "s2-3",
            "user",
            "2024-03-02T09:16:00+00:00",
            "She chews every shoe in the house, but we love her.",
        ),
        (
            "s2-4",
            "user",
            "2024-03-02T09:17:30+00:00",
            "I have been reading about agencies that help people adopt children, too.",
        ),
    ],
    "s-2024-06": [
        (
            "s3-1",
            "user",
            "2024-06-20T20:40:00+00:00",
            "I accepted the job offer in Utrecht; I start as a data engineer in August.",
        ),
        ("s3-2", "assistant", "2024-06-20T20:40:06+00:00", "That is big news. Are you moving?"),
        (
            "s3-3",
            "user",
            "2024-06-20T20:41:00+00:00",
            "Yes, we found a flat near the canal and move on the first of July.",
        ),
        (
            "s3-4",
            "user",
            "2024-06-20T20:42:00+00:00",
            "My grandmother turns ninety next month; we are planning a surprise party.",
        ),
    ],
}

QUESTIONS: list[tuple[str, str]] = [
    ("Which food can the user not eat?", "s1-4"),
    ("What is the name of the pet?", "s2-1"),
    ("Where is the new workplace?", "s3-1"),
    ("Which route did the user finally manage to climb?", "s1-3"),
    ("What did the user research about adoption?", "s2-4"),
    ("Whose birthday celebration is being organised?", "s3-4"),
]


def turns_payload(session_id: str) -> list[dict[str, Any]]:
    return [
        {"turn_id": turn_id, "role": role, "occurred_at": occurred_at, "content": content}
        for turn_id, role, occurred_at, content in SESSIONS[session_id]
    ]
