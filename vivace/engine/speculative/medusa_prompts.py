"""The prompt set `vivace train-medusa` distils from by default: instructions made from templates x topics.

Self-distillation needs prompts, not answers (the model writes those), so a few templates of
everyday requests over many topics cover the kinds of replies a chat model gives: explanations,
lists, stories, advice, comparisons, letters and code. bench/speculative.py measures on prompts
that are not among these.
"""

from __future__ import annotations

TEMPLATES = [
    "Explain {topic} in simple terms.",
    "Give me five facts about {topic}.",
    "Write a short story that involves {topic}.",
    "What are the advantages and disadvantages of {topic}?",
    "Write a short poem about {topic}.",
    "How would you teach a child about {topic}?",
    "Write an email to a friend about {topic}.",
    "List three common questions about {topic} and answer them.",
    "Describe the history of {topic} in a paragraph.",
    "What should a beginner know about {topic}?",
    "Summarise why {topic} matters today.",
    "Write a Python function related to {topic} and explain it.",
]
TOPICS = [
    "the water cycle",
    "photosynthesis",
    "electric cars",
    "the moon",
    "volcanoes",
    "honey bees",
    "the internet",
    "healthy sleep",
    "learning a language",
    "recycling",
    "the Roman Empire",
    "chess",
    "solar power",
    "black holes",
    "coffee",
    "public libraries",
    "rain forests",
    "the human heart",
    "saving money",
    "music lessons",
    "trains",
    "gardening",
    "the ocean",
    "earthquakes",
    "vaccines",
    "bread baking",
    "mountain hiking",
    "computers",
    "birds",
    "time management",
    "the printing press",
    "climate",
    "friendship",
    "sorting a list",
    "prime numbers",
    "spreadsheets",
    "bicycles",
    "the brain",
    "deserts",
    "football",
    "museums",
    "penguins",
    "weather forecasts",
    "writing an essay",
    "cooking pasta",
    "the solar system",
    "robots",
    "rivers",
]
_STRIDE = 47


def medusa_prompts(count: int) -> list[str]:
    """The first `count` of the template x topic pairs, visited with a stride so any prefix mixes both."""
    total = len(TEMPLATES) * len(TOPICS)
    if not 1 <= count <= total:
        raise ValueError(f"the packaged prompt set has {total} prompts; asked for {count}")
    pairs = (i * _STRIDE % total for i in range(count))  # _STRIDE is coprime to total: every pair once
    return [TEMPLATES[p % len(TEMPLATES)].format(topic=TOPICS[p // len(TEMPLATES)]) for p in pairs]
