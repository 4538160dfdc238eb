"""Optional quality check: a judge provider scores the target's answers to reference questions, 1 to 10."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from vivace.providers.base import GenerationRequest, Provider, ProviderError

REFERENCE: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "Paris."),
    ("How many days are there in a leap year?", "366."),
    ("What gas do plants absorb from the air for photosynthesis?", "Carbon dioxide (CO2)."),
    ("What is 12 multiplied by 8?", "96."),
    ("Name the largest ocean on Earth.", "The Pacific Ocean."),
    ("What is the boiling point of water at sea level in degrees Celsius?", "100 degrees Celsius."),
    ("Who wrote the play 'Romeo and Juliet'?", "William Shakespeare."),
    ("What is the chemical symbol for gold?", "Au."),
)
_PROMPT = (
    "You are grading an assistant's answer.\nQuestion: {question}\nReference answer: {reference}\n"
    "Assistant's answer: {answer}\n\nRate the assistant's answer for correctness and helpfulness on a scale "
    "from 1 (wrong or useless) to 10 (correct and clear). Reply with the number only."
)
_NUMBER = re.compile(r"\b(10|[1-9])\b")


def parse_score(text: str) -> int | None:
    """The first integer 1..10 in a judge's reply, or None when there is none."""
    match = _NUMBER.search(text)
    return int(match.group(1)) if match else None


async def _grade(target: Provider, judge: Provider, question: str, reference: str, max_tokens: int) -> dict[str, Any]:
    item: dict[str, Any] = {"question": question, "answer": None, "score": None, "error": None}
    try:
        answer, _ = await target.complete(
            GenerationRequest(messages=[{"role": "user", "content": question}], max_tokens=max_tokens, temperature=0.0)
        )
        item["answer"] = answer
        verdict, _ = await judge.complete(
            GenerationRequest(
                messages=[
                    {"role": "user", "content": _PROMPT.format(question=question, reference=reference, answer=answer)}
                ],
                max_tokens=8,
                temperature=0.0,
            )
        )
    except ProviderError as e:
        item["error"] = str(e)
        return item
    item["score"] = parse_score(verdict)
    if item["score"] is None:
        item["error"] = f"the judge gave no score from 1 to 10: {verdict[:80]!r}"
    return item


async def run_judge(target: Provider, judge: Provider, max_tokens: int = 64) -> dict[str, Any]:
    """Every reference question answered by `target` and scored by `judge`; the mean over scored ones."""
    items = await asyncio.gather(*(_grade(target, judge, q, ref, max_tokens) for q, ref in REFERENCE))
    scored = [i["score"] for i in items if i["score"] is not None]
    return {
        "judge": judge.id,
        "mean": sum(scored) / len(scored) if scored else None,
        "scored": len(scored),
        "items": list(items),
    }
