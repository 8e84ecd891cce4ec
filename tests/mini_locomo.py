"""A small conversation in the LoCoMo file layout, written for the tests.

Two people talk over three sessions. The questions mix paraphrases (which
need meaning), names and numbers (which need exact words) and questions
whose evidence spans several turns. A few evidence entries repeat the
flaws of the real file: an id without its session number, two ids in one
string, an id that matches no turn, and a question without evidence.
"""

from __future__ import annotations

from typing import Any

SESSIONS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "10:05 am on 3 March, 2024",
        [
            ("Mira", "Morning Joost! I finally booked the ferry to Texel for our trip."),
            ("Joost", "Nice! Which day do we leave?"),
            ("Mira", "Friday the 22nd, the 09:30 boat from Den Helder."),
            ("Joost", "I will bring the tandem bike, the one with the green frame."),
            ("Mira", "My sister Anouk might join us on Saturday."),
            ("Joost", "Great, she can stay in the spare room of the cottage."),
            ("Mira", "I started learning Portuguese on Duolingo, 40 days in a row now."),
            ("Joost", "Impressive streak. Are you planning a trip to Lisbon?"),
            ("Mira", "Maybe in autumn, my colleague Rui grew up there."),
            ("Joost", "By the way, my knee still hurts since the marathon in Rotterdam."),
            ("Mira", "You should see a physiotherapist about that knee."),
            ("Joost", "I booked one for next Tuesday at the clinic on Oudegracht."),
            ("Mira", "I am baking sourdough again; my starter is called Bubbles."),
            ("Joost", "Save me a slice of that bread please."),
        ],
    ),
    (
        "7:40 pm on 28 March, 2024",
        [
            ("Joost", "Texel was wonderful, the seals at Ecomare were the highlight."),
            ("Mira", "Anouk loved the lighthouse walk on Sunday."),
            ("Joost", "The physiotherapist said my knee needs six weeks of rest."),
            ("Mira", "So no running for a while. Maybe swimming instead?"),
            ("Joost", "Yes, I signed up at the pool near the Griftpark."),
            ("Mira", "I got promoted at work, I lead the data team from April."),
            ("Joost", "Congratulations! Does that mean a bigger salary?"),
            ("Mira", "A bit more, and four days of work per week."),
            ("Joost", "I adopted a cat from the shelter, a grey tabby named Mosselen."),
            ("Mira", "Ha, a cat called mussels. Does she get along with your plants?"),
            ("Joost", "She has already knocked over the monstera twice."),
            ("Mira", "My Portuguese streak is at 65 days now."),
        ],
    ),
    (
        "2:15 pm on 14 May, 2024",
        [
            ("Mira", "Rui invited me to his wedding in Lisbon in September."),
            ("Joost", "That is the perfect excuse to practise your Portuguese."),
            ("Mira", "I need a new dress; the wedding theme is blue and white tiles."),
            ("Joost", "My knee is healed, I ran five kilometres yesterday without pain."),
            ("Mira", "Careful, do not sign up for another marathon yet."),
            ("Joost", "Only the Singelloop in October, ten kilometres."),
            ("Mira", "Bubbles died, I forgot to feed the starter for two weeks."),
            ("Joost", "Sad. I can give you some of my starter."),
            ("Mira", "We should plan another island trip, maybe Vlieland this time."),
            ("Joost", "Mosselen would hate that, she hates the car."),
        ],
    ),
]

QUESTIONS: list[dict[str, Any]] = [
    {"question": "Which island did they travel to?", "evidence": ["D1:1", "D2:1"], "category": 1},
    {"question": "What time does the boat leave?", "evidence": ["D1:3"], "category": 4},
    {"question": "What colour is the tandem?", "evidence": ["D1:4"], "category": 4},
    {"question": "Who might join the trip?", "evidence": ["D:1:5"], "category": 4},
    {"question": "Which language is Mira studying?", "evidence": ["D1:7; D2:12"], "category": 1},
    {"question": "Why did Joost visit a physio?", "evidence": ["D1:10", "D1:12"], "category": 1},
    {"question": "How long must the knee rest?", "evidence": ["D2:3"], "category": 4},
    {"question": "Which animals did they see on the island?", "evidence": ["D2:1"], "category": 4},
    {"question": "What is the name of Joost's pet?", "evidence": ["D2:9"], "category": 4},
    {"question": "When does Mira start leading the team?", "evidence": ["D2:6"], "category": 2},
    {"question": "When is the wedding in Lisbon?", "evidence": ["D3:1"], "category": 2},
    {"question": "What happened to the sourdough starter?", "evidence": ["D3:7"], "category": 4},
    {"question": "Which race will Joost run in October?", "evidence": ["D3:6"], "category": 4},
    {"question": "Where did Rui grow up?", "evidence": ["D1:9", "D9:99"], "category": 3},
    {"question": "What did Mira say about skydiving?", "evidence": [], "category": 5},
    {"question": "What sport replaces running?", "evidence": ["D2:4", "D2:5"], "category": 5},
]


def mini_locomo() -> list[dict[str, Any]]:
    """The conversation as the LoCoMo file stores it."""
    conversation: dict[str, Any] = {"speaker_a": "Mira", "speaker_b": "Joost"}
    for number, (started, turns) in enumerate(SESSIONS, start=1):
        conversation[f"session_{number}_date_time"] = started
        conversation[f"session_{number}"] = [
            {"speaker": speaker, "dia_id": f"D{number}:{index}", "text": text}
            for index, (speaker, text) in enumerate(turns, start=1)
        ]
    qa = [{**question, "answer": "written for the tests"} for question in QUESTIONS]
    return [{"sample_id": "mini-1", "conversation": conversation, "qa": qa}]
