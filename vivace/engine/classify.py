"""Classification by scoring each label as a continuation of one shared prompt."""

from __future__ import annotations

import math

from vivace.engine.classify_prompt import (
    DEFAULT_INSTRUCTION,
    PLAIN_QUESTION_TEMPLATE,
    PLAIN_TEMPLATE,
    QUESTION_INSTRUCTION,
    check_labels,
    check_template,
    fill,
)
from vivace.engine.tokenizer import Tokenizer


def classify_requests(
    tokenizer: Tokenizer,
    text: str,
    labels: list[str],
    template: str | None,
    question: str | None = None,
    labels_param: str = "labels",
) -> list[tuple[list[int], int]]:
    """(prompt ids, index of the first label token) per label; every prompt shares the same prefix ids.

    `template` holds {text}, {labels} and {question} placeholders (filled literally, see
    classify_prompt.py); without one, the model's chat template wraps an instruction (asking
    `question` about the text when given), or a plain "Label:" prompt when the model has none.
    Label errors name `labels_param`, the field the client sent them in.
    """
    check_labels(labels, labels_param)
    values = {"text": text, "labels": ", ".join(labels), "question": question or ""}
    if template is not None:
        check_template(template)
        prefix_ids = tokenizer.encode(fill(template, values), add_special_tokens=True)
        sep = " "
    elif tokenizer.chat_template:
        instruction = QUESTION_INSTRUCTION if question is not None else DEFAULT_INSTRUCTION
        prefix_ids = tokenizer.encode_chat([{"role": "user", "content": fill(instruction, values)}])
        sep = ""
    else:
        plain = PLAIN_QUESTION_TEMPLATE if question is not None else PLAIN_TEMPLATE
        prefix_ids = tokenizer.encode(fill(plain, values), add_special_tokens=True)
        sep = " "
    # Labels are tokenized on their own so the shared prefix is byte-identical across requests.
    return [(prefix_ids + tokenizer.encode(sep + label, add_special_tokens=False), len(prefix_ids)) for label in labels]


def label_probabilities(labels: list[str], label_logprobs: list[list[float]]) -> dict[str, float]:
    """Normalise each label's total log-probability into a distribution over the labels."""
    totals = [sum(lp) for lp in label_logprobs]
    peak = max(totals)
    weights = [math.exp(t - peak) for t in totals]
    norm = sum(weights)
    return {label: w / norm for label, w in zip(labels, weights, strict=True)}
