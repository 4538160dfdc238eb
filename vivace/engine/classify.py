"""Classification by scoring each label as a continuation of one shared prompt."""

from __future__ import annotations

import math

from vivace.engine.config import InvalidParameterError
from vivace.engine.tokenizer import Tokenizer

DEFAULT_INSTRUCTION = (
    "Classify the text into exactly one of these labels: {labels}.\n\nText: {text}\n\nAnswer with the label only."
)
PLAIN_TEMPLATE = "Text: {text}\nLabels: {labels}\nLabel:"


def classify_requests(
    tokenizer: Tokenizer, text: str, labels: list[str], template: str | None
) -> list[tuple[list[int], int]]:
    """(prompt ids, index of the first label token) per label; every prompt shares the same prefix ids.

    `template` is a format string with {text} and {labels}; without one, the model's chat template
    wraps an instruction (or a plain "Label:" prompt when the model has no chat template).
    """
    if not labels:
        raise InvalidParameterError("labels", "must name at least one label")
    if len(set(labels)) != len(labels) or any(not label for label in labels):
        raise InvalidParameterError("labels", "must be distinct non-empty strings")
    joined = ", ".join(labels)
    if template is not None:
        prefix_ids = tokenizer.encode(template.format(text=text, labels=joined), add_special_tokens=True)
        sep = " "
    elif tokenizer.chat_template:
        message = {"role": "user", "content": DEFAULT_INSTRUCTION.format(text=text, labels=joined)}
        prefix_ids = tokenizer.encode_chat([message])
        sep = ""
    else:
        prefix_ids = tokenizer.encode(PLAIN_TEMPLATE.format(text=text, labels=joined), add_special_tokens=True)
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
